"""Docs kept honest: every setting is documented; the README's commands exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import AliasChoices

from runnel.providers.registry import provider_type
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


def test_the_provider_examples_are_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every TOML example of docs/providers.md and docs/configuration.md is accepted by the
    settings, and its OpenAI, Anthropic and Gemini providers can be built from it."""
    for env in ("GEMINI_API_KEY", "ANTHROPIC_API_KEY", "VLLM_API_KEY", "HOSTED_API_KEY"):
        monkeypatch.setenv(env, "key-from-the-environment")
    checked = 0
    for doc in ("providers.md", "configuration.md"):
        text = (ROOT / "docs" / doc).read_text()
        for block in re.findall(r"```toml\n(.*?)```", text, re.DOTALL):
            data = tomllib.loads(block)
            if "project" in data:
                continue  # a plug-in's pyproject.toml
            settings = Settings(**data)
            for name, config in settings.providers.items():
                if config.type in ("openai", "anthropic", "gemini"):
                    provider_type(config.type)(name, config, settings)
                    checked += 1
    assert checked >= 9
