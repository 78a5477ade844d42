"""Settings: environment variables (DESIGN §8 names, ``RUNNEL_*``) over an optional TOML file.

Precedence, highest first: keyword arguments, environment, the TOML file named by
``RUNNEL_CONFIG``, defaults. The TOML file uses the same names as the settings in lower
case (``first_token_timeout = 10``) plus ``[providers.NAME]`` tables for extra providers and
an ``[aliases]`` table of fallback chains.
Every field here is documented in ``docs/configuration.md`` (a test checks it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class ProviderConfig(BaseModel):
    """One named provider from the TOML file (``[providers.ollama]``).

    ``type`` names a provider type registered in the ``runnel.providers`` entry point group
    (``openai``, ``anthropic``, ``gemini``, ``langchain``, ``demo`` or a plug-in's);
    ``options`` holds settings only that type understands. ``streaming = false`` (or a
    model listed in ``non_streaming_models``) asks the upstream for whole replies, which
    are still delivered as token events."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(default="openai", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    models: list[str] = Field(default_factory=list)
    timeout: float = Field(default=600.0, gt=0)
    streaming: bool = True
    non_streaming_models: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key
        if self.api_key_env is not None:
            return os.environ.get(self.api_key_env)
        return None


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RUNNEL_",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("runnel")))
    database_url: str | None = None
    database_pool_size: int = Field(default=10, gt=0)
    redis_url: str | None = None
    redis_max_connections: int = Field(default=4096, gt=0)
    default_model: str | None = None
    api_tokens: str | None = None
    allowed_hosts: str = ""
    cors_origins: str = ""
    signup: Literal["closed", "open", "approval"] = "closed"
    session_lifetime: float = Field(default=30 * 86400.0, gt=0)
    password_time_cost: int = Field(default=3, ge=1, le=20)
    password_memory_kib: int = Field(default=65536, ge=8, le=4 * 1024 * 1024)
    password_parallelism: int = Field(default=4, ge=1, le=64)
    login_limit_account: str = "10/minute"
    login_limit_address: str = "30/10 minutes"
    forwarded_allow_ips: str = "127.0.0.1"
    config: Path | None = None

    openai_api_key: str | None = Field(
        default=None, validation_alias=_env("OPENAI_API_KEY", "openai_api_key")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=_env("OPENAI_BASE_URL", "openai_base_url")
    )
    anthropic_api_key: str | None = Field(
        default=None, validation_alias=_env("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=_env("ANTHROPIC_BASE_URL", "anthropic_base_url")
    )
    gemini_api_key: str | None = Field(
        default=None, validation_alias=_env("GEMINI_API_KEY", "gemini_api_key")
    )
    gemini_base_url: str | None = Field(
        default=None, validation_alias=_env("GEMINI_BASE_URL", "gemini_base_url")
    )
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    retry_attempts: int = Field(default=3, ge=1, le=10)
    retry_base_delay: float = Field(default=0.5, ge=0)
    retry_max_delay: float = Field(default=8.0, ge=0)
    retry_budget: float = Field(default=20.0, ge=0)

    streaming_enabled: bool = True
    heartbeat_interval: float = Field(default=15.0, gt=0)
    sse_retry_ms: int = Field(default=3000, ge=0)
    first_token_timeout: float = Field(default=30.0, gt=0)
    stall_timeout: float = Field(default=60.0, gt=0)
    max_stream_duration: float = Field(default=900.0, gt=0)
    max_output_tokens: int = Field(default=8192, gt=0)
    max_message_chars: int = Field(default=32_000, gt=0)
    max_history_messages: int = Field(default=200, gt=0)
    max_history_chars: int = Field(default=400_000, gt=0)
    max_active_streams: int = Field(default=2000, gt=0)
    max_streams_per_user: int = Field(default=0, ge=0)
    rate_limit: str | None = None
    output_tokens_per_day: int = Field(default=0, ge=0)
    stream_padding: bool = False
    stream_retention: float = Field(default=300.0, ge=0)
    checkpoint_interval: float = Field(default=1.0, gt=0, le=1.0)
    send_timeout: float = Field(default=30.0, gt=0)
    shutdown_grace: float = Field(default=20.0, ge=0)

    # written by a model after a reply (runnel/followups.py); None: the reply's model
    suggestions: bool = True
    suggestions_model: str | None = None
    titles: bool = True
    title_model: str | None = None
    followup_timeout: float = Field(default=20.0, gt=0)

    demo_tokens_per_second: float = Field(default=40.0, gt=0)
    demo_first_token_delay: float = Field(default=0.15, ge=0)
    demo_reply_tokens: int = Field(default=160, gt=0)

    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: str) -> str:
        parse_origins(value)
        return value

    @field_validator("api_tokens")
    @classmethod
    def _check_tokens(cls, value: str | None) -> str | None:
        if value is not None:
            parse_api_tokens(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path(init_settings)
        if path is not None:
            if not path.is_file():
                raise ValueError(f"RUNNEL_CONFIG names a file that does not exist: {path}")
            toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
            unknown = sorted(set(toml.toml_data) - set(settings_cls.model_fields))
            if unknown:
                raise ValueError(f"unknown settings in {path}: {', '.join(unknown)}")
            sources.append(toml)
        return tuple(sources)

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'runnel.db'}"

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip())

    @property
    def origins(self) -> frozenset[str]:
        return parse_origins(self.cors_origins)

    @property
    def tokens(self) -> dict[str, str]:
        return parse_api_tokens(self.api_tokens) if self.api_tokens else {}


def _config_path(init_settings: PydanticBaseSettingsSource) -> Path | None:
    init = init_settings()
    value: Any = init.get("config") or os.environ.get("RUNNEL_CONFIG")
    return Path(value).expanduser() if value else None


def parse_origins(raw: str) -> frozenset[str]:
    """``"http://localhost:5173, https://chat.example"`` → the exact origins (scheme, host,
    port; never ``*``, no path)."""
    origins = set()
    for item in raw.split(","):
        origin = item.strip().lower().rstrip("/")
        if not origin:
            continue
        scheme, sep, rest = origin.partition("://")
        if (
            scheme not in ("http", "https")
            or not sep
            or not rest
            or any(c in rest for c in "/?#*@ ")
        ):
            raise ValueError(
                f"cors_origins: {item.strip()!r} is not an origin like https://chat.example"
            )
        origins.add(origin)
    return frozenset(origins)


def parse_api_tokens(raw: str) -> dict[str, str]:
    """``"tok1:alice,tok2:bob"`` → ``{"tok1": "alice", "tok2": "bob"}``."""
    tokens: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        token, sep, user = item.rpartition(":")
        if not sep or not token or not user:
            raise ValueError("RUNNEL_API_TOKENS must be comma-separated token:user pairs")
        tokens[token] = user
    if not tokens:
        raise ValueError("RUNNEL_API_TOKENS is set but names no token:user pair")
    return tokens
