"""The provider interface: open a stream of text deltas, then iterate it.

A provider's ``open`` returns once the upstream has accepted the request (for HTTP
providers: the response status is known), so failures before that point become ordinary
HTTP errors. Iterating yields ``str`` deltas and finally one ``Finish``; ``aclose`` aborts
the upstream request (closing its connection) and is safe to call at any time, repeatedly.
Providers raise only ``runnel.errors.RunnelError`` subclasses.

``open(..., stream=False)`` asks the upstream for the whole reply at once (for models that
cannot stream) and returns it as a stream all the same (``replay``). A provider whose
upstream refuses a streaming request raises ``StreamingUnsupported``; the router
(``providers/router.py``) then asks again without streaming and remembers the model.

Provider types are found through the ``runnel.providers`` entry point group: each entry
point names a ``ProviderFactory``, called once per configured provider at start-up.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, TypedDict

from runnel.events import FinishReason, Usage

if TYPE_CHECKING:
    from runnel.settings import ProviderConfig, Settings


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
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        stream: bool = True,
    ) -> ProviderStream:
        """Start generating; return when the upstream accepted the request (with
        ``stream=False``: when the whole reply arrived)."""

    def check_model(self, model: str) -> None:  # noqa: B027 - optional hook
        """Raise ``ModelNotFound`` for a name this provider certainly does not serve.

        Called before anything is stored; providers that can only learn it from the upstream
        leave it to ``open``."""

    @abstractmethod
    async def list_models(self) -> list[str]:
        """Model names (without the provider prefix)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release clients and connections."""


MODELS_TTL = 60.0


class ModelList:
    """A provider's model names: the configured ones when there are any, else the names
    ``fetch`` gets from the upstream's model list, sorted and kept ``MODELS_TTL`` s."""

    def __init__(
        self, configured: Sequence[str], fetch: Callable[[], Awaitable[list[str]]]
    ) -> None:
        self._configured = list(configured)
        self._fetch = fetch
        self._cached: tuple[float, list[str]] | None = None

    async def get(self) -> list[str]:
        if self._configured:
            return list(self._configured)
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < MODELS_TTL:
            return cached[1]
        names = sorted(await self._fetch())
        self._cached = (time.monotonic(), names)
        return names


ProviderFactory = Callable[[str, "ProviderConfig", "Settings"], Provider]
"""What a ``runnel.providers`` entry point names: ``(name, config, settings) -> Provider``."""

_PIECE = re.compile(r"\s*\S+|\s+")


class ReplayStream:
    """A whole reply delivered as a stream: its text in word-sized pieces, then ``finish``."""

    def __init__(self, text: str, finish: Finish) -> None:
        self._pieces = _PIECE.findall(text)
        self._finish = finish

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._run()

    async def _run(self) -> AsyncIterator[Delta]:
        for piece in self._pieces:
            yield piece
        yield self._finish

    async def aclose(self) -> None:
        return None
