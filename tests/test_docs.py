"""Docs kept honest: every setting is documented; the README's commands exist."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices

from runnel.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def env_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.append(str(alias.choices[0]))
        else:
            names.append(f"RUNNEL_{name.upper()}")
    return names


def test_every_setting_is_in_the_configuration_doc() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in env_names() if f"`{name}`" not in doc]
    assert not missing, f"undocumented settings: {missing}"
    for name in Settings.model_fields:
        assert f"`{name}`" in doc, f"TOML key {name} is not documented"


def test_the_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in ("scripts/serve", "scripts/test"):
        assert command in readme
        assert (ROOT / command).is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci
