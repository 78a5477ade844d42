"""The provider registry: provider types, the providers configured, model id resolution.

Provider types are found through the ``runnel.providers`` entry point group, the built-in
ones exactly as a third-party package's would be (pyproject.toml); a type's module is
imported only when a provider of that type is configured, so optional SDKs stay optional.
``Registry.from_settings`` instantiates the configured providers once, at start-up, and
resolves a model id — ``provider/model`` or an alias from ``[aliases]`` — to a ``Route``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from importlib.metadata import entry_points

from runnel.errors import InvalidRequest, ModelNotFound, RunnelError
from runnel.providers.base import Provider, ProviderFactory
from runnel.providers.openai import OPENAI_API
from runnel.providers.router import Candidate, Route
from runnel.settings import ProviderConfig, Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "runnel.providers"
MODEL_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})/(\S{1,200})$")
DEMO_MODEL = "demo/markdown"
# the model used when a hosted provider is configured by its key alone
HOSTED_DEFAULTS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-6",
    "gemini": "gemini-2.5-flash",
}
LIST_TIMEOUT = 5.0
LIST_RETRY_AFTER = 30.0  # a provider whose listing failed is asked again after this


def provider_type(name: str) -> ProviderFactory:
    """The factory of provider type ``name``; ``ValueError`` when none is installed."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise ValueError(f"unknown provider type {name!r} (installed: {', '.join(known)})")
    entry = next(iter(found))
    try:
        factory = entry.load()
    except ImportError as exc:
        raise ValueError(f"provider type {name!r} could not be loaded: {exc}") from exc
    if not callable(factory):
        raise ValueError(f"provider type {name!r} names {entry.value}, which is not callable")
    return factory  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    provider: str


class Registry:
    def __init__(
        self,
        providers: dict[str, Provider],
        default_model: str,
        configs: dict[str, ProviderConfig] | None = None,
        aliases: dict[str, list[str]] | None = None,
    ) -> None:
        self.providers = providers
        self.default_model = default_model
        self._configs = configs or {}
        self._list_failed: dict[str, float] = {}
        self._aliases: dict[str, Route] = {}
        for alias, targets in (aliases or {}).items():
            self._aliases[alias] = self._alias_route(alias, targets)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """Raises ``ValueError`` for a configuration that cannot work."""
        configs = configured_providers(settings)
        providers: dict[str, Provider] = {}
        for name, config in configs.items():
            try:
                providers[name] = provider_type(config.type)(name, config, settings)
            except ValueError as exc:
                raise ValueError(f"provider {name!r}: {exc}") from exc
        registry = cls(providers, _default_model(settings, configs), configs, settings.aliases)
        try:
            registry.resolve(registry.default_model)
        except RunnelError as exc:
            raise ValueError(f"invalid default model: {exc.message}") from exc
        return registry

    def _alias_route(self, alias: str, targets: list[str]) -> Route:
        match = MODEL_ID.match(alias)
        if match is None:
            raise ValueError(f"alias {alias!r} must be written prefix/name, e.g. auto/best")
        if match.group(1) in self.providers:
            raise ValueError(f"alias {alias!r} uses the name of provider {match.group(1)!r}")
        if not targets:
            raise ValueError(f"alias {alias!r} names no model")
        candidates: list[Candidate] = []
        for target in targets:
            try:
                candidates.extend(self._model_route(target).candidates)
            except RunnelError as exc:
                raise ValueError(f"alias {alias!r}: {exc.message}") from exc
        return Route(alias, tuple(candidates))

    def resolve(self, model_id: str | None) -> Route:
        """The route for a requested model id (the default model when None)."""
        model_id = model_id or self.default_model
        alias = self._aliases.get(model_id)
        if alias is not None:
            return alias
        return self._model_route(model_id)

    def _model_route(self, model_id: str) -> Route:
        match = MODEL_ID.match(model_id)
        if match is None:
            raise InvalidRequest("model must be written provider/model, e.g. demo/markdown")
        provider = self.providers.get(match.group(1))
        if provider is None:
            raise ModelNotFound(f"unknown model: {model_id}")
        name = match.group(2)
        provider.check_model(name)
        config = self._configs.get(provider.name)
        streaming = config is None or (config.streaming and name not in config.non_streaming_models)
        return Route(model_id, (Candidate(provider, name, model_id, streaming),))

    async def list_models(self) -> list[ModelInfo]:
        """Every provider's models, then the aliases. A provider that fails or takes longer
        than ``LIST_TIMEOUT`` is left out (and logged), and not asked again for
        ``LIST_RETRY_AFTER`` s, so one unreachable server never slows every listing."""

        async def one(provider: Provider) -> list[ModelInfo]:
            failed_at = self._list_failed.get(provider.name)
            if failed_at is not None and time.monotonic() - failed_at < LIST_RETRY_AFTER:
                return []
            try:
                async with asyncio.timeout(LIST_TIMEOUT):
                    names = await provider.list_models()
            except (RunnelError, TimeoutError) as exc:
                log.warning("listing models of %s failed: %s", provider.name, exc)
                self._list_failed[provider.name] = time.monotonic()
                return []
            self._list_failed.pop(provider.name, None)
            return [ModelInfo(f"{provider.name}/{n}", provider.name) for n in names]

        lists = await asyncio.gather(*(one(p) for p in self.providers.values()))
        found = [model for models in lists for model in models]
        found += [ModelInfo(alias, alias.split("/", 1)[0]) for alias in self._aliases]
        return found

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()


def configured_providers(settings: Settings) -> dict[str, ProviderConfig]:
    """``demo``, the providers the standard environment variables name, then the TOML's."""
    configs: dict[str, ProviderConfig] = {"demo": ProviderConfig(type="demo")}
    from_env = (
        ("openai", settings.openai_api_key, settings.openai_base_url),
        ("anthropic", settings.anthropic_api_key, settings.anthropic_base_url),
        ("gemini", settings.gemini_api_key, settings.gemini_base_url),
    )
    for name, key, base_url in from_env:
        if key or base_url:
            configs[name] = ProviderConfig(type=name, api_key=key, base_url=base_url)
    configs.update(settings.providers)
    return configs


def _default_model(settings: Settings, configs: dict[str, ProviderConfig]) -> str:
    if settings.default_model:
        return settings.default_model
    for name, config in configs.items():
        if config.type != "demo" and config.models:
            return f"{name}/{config.models[0]}"
    for name, config in configs.items():
        hosted = HOSTED_DEFAULTS.get(config.type)
        if hosted is None or name != config.type:
            continue
        # an OpenAI base URL of its own is usually another server (Ollama, vLLM...)
        if config.type != "openai" or config.base_url in (None, OPENAI_API):
            return f"{name}/{hosted}"
    return DEMO_MODEL
