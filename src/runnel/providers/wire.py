"""What the HTTP providers share about their upstreams' wire formats.

The SDKs' typed per-chunk parsing costs more per token than the whole relay budget
(shared/PERFORMANCE.md), so providers read their streaming response as bytes and hand the
``data`` of each SSE event to orjson themselves (``SSEDecoder``, ``json_object``). Also
shared: the stream object over an upstream body (``BodyStream``), ``Retry-After``, reading
a finished body to its end (``drain``), and what a rejected request (400/413/422) means
(``rejected_request``).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx2
import orjson

from runnel.errors import (
    ContextLengthExceeded,
    ProviderError,
    RunnelError,
    StreamingUnsupported,
)
from runnel.providers.base import Delta
from runnel.providers.transport import UpstreamBody

MAX_LINE = 4 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
DRAIN_TIMEOUT = 0.05


class BodyStream(ABC):
    """A provider's stream over an upstream response body: iterating it runs ``_run`` (the
    provider's reading of its wire format); ``aclose`` closes the body, once, which
    aborts the upstream request when the body was not read to its end."""

    def __init__(self, provider: str, body: UpstreamBody) -> None:
        self._provider = provider
        self._body = body
        self._closed = False

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._run()

    @abstractmethod
    def _run(self) -> AsyncIterator[Delta]:
        """The deltas of the body (an async generator)."""

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._body.aclose()


async def drain(read: Callable[[], Awaitable[bytes]]) -> None:
    """Read what is left of a response after its last event (normally just the end of
    the chunked body, already received), for at most ``DRAIN_TIMEOUT`` s. A body read to
    its end lets the HTTP client keep the connection for the next request; one closed
    early costs that request a new TCP (and TLS) handshake before its first token."""
    with contextlib.suppress(TimeoutError, httpx2.HTTPError, RunnelError):
        async with asyncio.timeout(DRAIN_TIMEOUT):
            while await read():
                pass


class SSEDecoder:
    """The ``data`` of each SSE event in a byte stream fed to it piece by piece (any of
    CRLF, LF, CR line ends; a leading BOM dropped; ``event:`` and comment lines ignored;
    lines longer than ``MAX_LINE`` refused). Synchronous, so the token path awaits only the
    socket: ``for payload in decoder.feed(await body.read())``."""

    __slots__ = ("_after_cr", "_buffer", "_data", "_first", "_provider")

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._buffer = b""
        self._data: list[bytes] = []
        self._first = True
        self._after_cr = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events completed by ``chunk``, in order."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if self._first:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer  # perhaps a BOM cut short
                return []
            buffer = buffer.removeprefix(_BOM)
            self._first = False
        if self._after_cr and buffer.startswith(b"\n"):
            buffer = buffer[1:]  # the LF of a CRLF whose CR ended the previous piece
        # a CR ends its line at once (a stream ending in CR alone must not wait for more);
        # a LF right after it, in the next piece, is then dropped above
        self._after_cr = buffer.endswith(b"\r")
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if len(buffer) > MAX_LINE and b"\n" not in buffer:
            raise ProviderError(f"{self._provider} sent an oversized line")
        *lines, self._buffer = buffer.split(b"\n")
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif not line and data:
                events.append(b"\n".join(data))
                data.clear()
        return events


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


def json_object(payload: bytes, provider: str) -> dict[str, Any]:
    """One event's JSON object; anything else is ``sent malformed data``."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(f"{provider} sent malformed data") from exc
    if not isinstance(obj, dict):
        raise ProviderError(f"{provider} sent malformed data")
    return obj


# how OpenAI, Anthropic and the OpenAI-compatible servers say the prompt is too long
_CONTEXT_PHRASES = (
    "context_length",
    "context length",
    "maximum context",
    "context limit",
    "context window",
    "prompt is too long",
    "prompt_too_long",
)


def rejected_request(status: int, text: str, provider: str) -> RunnelError:
    """A 400, 413 or 422 by what its error says (``text``: its code and message): the
    upstream cannot stream this model (vLLM, LM Studio and hosted clones word it
    differently, all naming streaming and a negation), the conversation is too long for
    the model, or any other rejection (not retryable)."""
    text = text.lower()
    if "stream" in text and any(w in text for w in ("not support", "unsupported", "disabled")):
        return StreamingUnsupported(f"{provider} cannot stream this model", provider=provider)
    if any(phrase in text for phrase in _CONTEXT_PHRASES):
        return ContextLengthExceeded(
            "the conversation is too long for this model", provider=provider
        )
    return ProviderError(
        f"{provider} rejected the request (HTTP {status})", retryable=False, provider=provider
    )
