"""Package build hook: build the web app into ``src/runnel/webapp`` when it is missing or
stale (``scripts/build-web`` decides), so every wheel and editable install serves it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class WebAppBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        if (root / "web" / "package.json").is_file():
            subprocess.run(["bash", str(root / "scripts" / "build-web")], check=True, cwd=root)
