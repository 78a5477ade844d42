"""The upstreams the provider conformance suite runs against: each a real provider type of
Runnel, driven through its real SDK, pointed at the fake server that speaks that provider's
wire format. Every fake honours the same ``Script`` (tests/fakes/httpserver.py), so one
test body checks every provider."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from runnel.settings import ProviderConfig
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.httpserver import FakeServer, RecordedRequest
from tests.fakes.openai_server import FakeOpenAI


@dataclass
class Upstream:
    """A provider named ``name`` of type ``kind`` in front of ``fake``."""

    name: str
    kind: str
    fake: FakeServer
    url: str
    api_key: str | None
    # the provider's own finish reasons for a reply cut by the token limit and by a filter
    length_reason: str
    filter_reason: str
    settings: dict[str, Any] = field(default_factory=dict)

    def model(self, name: str) -> str:
        return f"{self.name}/{name}"

    def config(self, **options: Any) -> dict[str, ProviderConfig]:
        """``providers`` settings that register this upstream under ``name``."""
        config = ProviderConfig(type=self.kind, base_url=self.url, api_key=self.api_key, **options)
        return {self.name: config}

    def generations(self) -> list[RecordedRequest]:
        """The generation requests the fake received, oldest first."""
        return [r for r in self.fake.requests if _is_generation(self.kind, r)]

    def streamed(self, request: RecordedRequest) -> bool:
        if self.kind == "gemini":
            return ":streamGenerateContent" in request.path
        return bool(request.body.get("stream"))


def _is_generation(kind: str, request: RecordedRequest) -> bool:
    path = request.path.partition("?")[0]
    if kind == "gemini":
        return path.endswith(":streamGenerateContent") or path.endswith(":generateContent")
    if kind == "anthropic":
        return path == "/v1/messages"
    return path == "/v1/chat/completions"


UPSTREAMS = ("openai", "ollama", "anthropic", "gemini")


def make_upstream(which: str) -> Iterator[Upstream]:
    """Start the fake for ``which`` and describe it; stops the fake afterwards."""
    if which in ("openai", "ollama"):
        with FakeOpenAI() as openai_fake:
            # ``ollama``: a local OpenAI-compatible server configured in the TOML, no key
            key = "sk-test" if which == "openai" else None
            yield Upstream(
                which, "openai", openai_fake, openai_fake.url, key, "length", "content_filter"
            )
        assert not openai_fake._errors, openai_fake._errors
    elif which == "anthropic":
        with FakeAnthropic() as anthropic_fake:
            yield Upstream(
                which, "anthropic", anthropic_fake, anthropic_fake.url, "sk-ant-test",
                "max_tokens", "refusal",
            )  # fmt: skip
        assert not anthropic_fake._errors, anthropic_fake._errors
    elif which == "gemini":
        with FakeGemini() as gemini_fake:
            yield Upstream(
                which, "gemini", gemini_fake, gemini_fake.url, "gm-test", "MAX_TOKENS", "SAFETY"
            )
        assert not gemini_fake._errors, gemini_fake._errors
    else:
        raise ValueError(which)
