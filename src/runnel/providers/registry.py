"""The provider registry: provider types, the providers configured, model id resolution.

Built-in provider types register in ``PROVIDER_TYPES`` exactly as another type would;
``Registry.from_settings`` instantiates the configured providers once, at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from runnel.errors import InvalidRequest, ModelNotFound, RunnelError
from runnel.providers.base import Provider
from runnel.providers.demo import DemoProvider
from runnel.providers.openai import OpenAIProvider
from runnel.settings import ProviderConfig, Settings

log = logging.getLogger(__name__)

ProviderFactory = Callable[[str, ProviderConfig, Settings], Provider]
MODEL_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})/(\S{1,200})$")
DEMO_MODEL = "demo/markdown"
OPENAI_API = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL = "gpt-4o-mini"
LIST_TIMEOUT = 5.0


def _demo(name: str, config: ProviderConfig, settings: Settings) -> Provider:
    return DemoProvider(
        name,
        tokens_per_second=settings.demo_tokens_per_second,
        first_token_delay=settings.demo_first_token_delay,
        reply_tokens=settings.demo_reply_tokens,
    )


def _openai(name: str, config: ProviderConfig, settings: Settings) -> Provider:
    return OpenAIProvider(
        name,
        api_key=config.resolved_api_key(),
        base_url=config.base_url or OPENAI_API,
        models=config.models,
        timeout=config.timeout,
    )


PROVIDER_TYPES: dict[str, ProviderFactory] = {"demo": _demo, "openai": _openai}


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    provider: str


class Registry:
    def __init__(self, providers: dict[str, Provider], default_model: str) -> None:
        self.providers = providers
        self.default_model = default_model

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        configs: dict[str, ProviderConfig] = {"demo": ProviderConfig(type="demo")}
        if settings.openai_api_key or settings.openai_base_url:
            configs["openai"] = ProviderConfig(
                type="openai", api_key=settings.openai_api_key, base_url=settings.openai_base_url
            )
        configs.update(settings.providers)
        providers = {
            name: PROVIDER_TYPES[config.type](name, config, settings)
            for name, config in configs.items()
        }
        registry = cls(providers, _default_model(settings, configs))
        registry.resolve(registry.default_model)
        return registry

    def resolve(self, model_id: str | None) -> tuple[Provider, str, str]:
        """``(provider, model name, full model id)`` for a requested model id."""
        model_id = model_id or self.default_model
        match = MODEL_ID.match(model_id)
        if match is None:
            raise InvalidRequest("model must be written provider/model, e.g. demo/markdown")
        provider = self.providers.get(match.group(1))
        if provider is None:
            raise ModelNotFound(f"unknown model: {model_id}")
        provider.check_model(match.group(2))
        return provider, match.group(2), model_id

    async def list_models(self) -> list[ModelInfo]:
        """Every provider's models; a provider that fails or is slow is left out."""

        async def one(provider: Provider) -> list[ModelInfo]:
            try:
                async with asyncio.timeout(LIST_TIMEOUT):
                    names = await provider.list_models()
            except (RunnelError, TimeoutError) as exc:
                log.warning("listing models of %s failed: %s", provider.name, exc)
                return []
            return [ModelInfo(f"{provider.name}/{n}", provider.name) for n in names]

        lists = await asyncio.gather(*(one(p) for p in self.providers.values()))
        return [model for models in lists for model in models]

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()


def _default_model(settings: Settings, configs: dict[str, ProviderConfig]) -> str:
    if settings.default_model:
        return settings.default_model
    for name, config in configs.items():
        if config.type != "demo" and config.models:
            return f"{name}/{config.models[0]}"
    for name, config in configs.items():
        if config.type == "openai" and config.base_url in (None, OPENAI_API):
            return f"{name}/{OPENAI_DEFAULT_MODEL}"
    return DEMO_MODEL
