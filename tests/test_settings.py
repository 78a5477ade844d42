"""Settings: environment over the TOML file over defaults; named providers from TOML."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from pydantic import ValidationError

from runnel.api.app import create_app
from runnel.settings import Settings, parse_api_tokens
from tests.conftest import TEST_SETTINGS
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.server import start
from tests.sse_client import stream


def write_config(path: Path, fake_url: str) -> Path:
    path.write_text(
        f"""
first_token_timeout = 12
stall_timeout = 7

[providers.local]
type = "openai"
base_url = "{fake_url}"
api_key_env = "LOCAL_TEST_KEY"
models = ["m1", "m2"]
"""
    )
    return path


def test_environment_overrides_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path / "runnel.toml", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("RUNNEL_CONFIG", str(config))
    monkeypatch.setenv("RUNNEL_STALL_TIMEOUT", "3")
    monkeypatch.setenv("LOCAL_TEST_KEY", "secret")
    settings = Settings()
    assert settings.first_token_timeout == 12
    assert settings.stall_timeout == 3
    assert settings.max_output_tokens == 8192
    assert settings.providers["local"].models == ["m1", "m2"]
    assert settings.providers["local"].resolved_api_key() == "secret"


def test_bad_configuration_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNEL_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="does not exist"):
        Settings()
    monkeypatch.delenv("RUNNEL_CONFIG")
    monkeypatch.setenv("RUNNEL_FIRST_TOKEN_TIMEOUT", "-1")
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(ValueError, match="token:user"):
        parse_api_tokens("just-a-token")
    assert parse_api_tokens("a:alice, b:bob") == {"a": "alice", "b": "bob"}


def test_a_named_provider_from_toml_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI
) -> None:
    monkeypatch.setenv("LOCAL_TEST_KEY", "sk-local")
    config = write_config(tmp_path / "runnel.toml", fake_openai.url)
    fake_openai.script("m2", Script(tokens=["from ", "local"]))
    server = start(Settings(**TEST_SETTINGS, data_dir=tmp_path / "data", config=config))
    try:
        with httpx2.Client(base_url=server.url, timeout=30) as client:
            models = client.get("/api/v1/models").json()
            t = stream(
                client, "POST", "/api/v1/messages", json={"message": "hi", "model": "local/m2"}
            )
    finally:
        server.stop()
    assert models["default"] == "local/m1"
    assert [m["id"] for m in models["data"]] == ["demo/markdown", "local/m1", "local/m2"]
    assert t.text == "from local"
    assert fake_openai.requests[-1].headers["authorization"] == "Bearer sk-local"


def test_unknown_toml_keys_and_a_bad_default_model_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "runnel.toml"
    config.write_text("first_token_timout = 5\n")
    monkeypatch.setenv("RUNNEL_CONFIG", str(config))
    with pytest.raises(ValueError, match="first_token_timout"):
        Settings()
    config.write_text('[providers.x]\ntype = "openai"\nbase_ur = "http://x"\n')
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("RUNNEL_CONFIG")
    with pytest.raises(ValueError, match="invalid default model"):
        create_app(Settings(data_dir=tmp_path, default_model="nowhere/model"))
