"""The provider interface: open a stream of text deltas, then iterate it.

A provider's ``open`` returns once the upstream has accepted the request (for HTTP
providers: the response status is known), so failures before that point become ordinary
HTTP errors. Iterating yields ``str`` deltas and finally one ``Finish``; ``aclose`` aborts
the upstream request (closing its connection) and is safe to call at any time, repeatedly.
Providers raise only ``runnel.errors.RunnelError`` subclasses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, TypedDict

from runnel.events import FinishReason, Usage


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    usage: Usage | None = None


Delta = str | Finish


class ProviderStream(Protocol):
    def __aiter__(self) -> AsyncIterator[Delta]: ...

    async def aclose(self) -> None: ...


class Provider(ABC):
    """A source of models. ``name`` is the prefix of its model ids (``name/model``)."""

    kind: ClassVar[str]

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def open(
        self, model: str, messages: Sequence[ChatMessage], *, max_tokens: int
    ) -> ProviderStream:
        """Start generating; return when the upstream accepted the request."""

    def check_model(self, model: str) -> None:  # noqa: B027 - optional hook
        """Raise ``ModelNotFound`` for a name this provider certainly does not serve.

        Called before anything is stored; providers that can only learn it from the upstream
        leave it to ``open``."""

    @abstractmethod
    async def list_models(self) -> list[str]:
        """Model names (without the provider prefix)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release clients and connections."""
