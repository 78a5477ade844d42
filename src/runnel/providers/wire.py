"""What the HTTP providers share about their upstreams' wire formats.

The SDKs' typed per-chunk parsing costs more per token than the whole relay budget
(shared/PERFORMANCE.md), so providers read their streaming response as bytes and hand the
``data`` of each SSE event to orjson themselves (``sse_data``, ``json_object``). Also
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
from collections.abc import AsyncIterator, Mapping
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


async def drain(rest: AsyncIterator[bytes]) -> None:
    """Read what is left of a response after its last event (normally just the end of
    the chunked body, already received), for at most ``DRAIN_TIMEOUT`` s. A body read to
    its end lets the HTTP client keep the connection for the next request; one closed
    early costs that request a new TCP (and TLS) handshake before its first token."""
    with contextlib.suppress(TimeoutError, httpx2.HTTPError, RunnelError):
        async with asyncio.timeout(DRAIN_TIMEOUT):
            async for _ in rest:
                pass


async def sse_data(chunks: AsyncIterator[bytes], provider: str) -> AsyncIterator[bytes]:
    """The ``data`` of each SSE event in a byte stream (any of CRLF, LF, CR line ends; a
    leading BOM dropped; ``event:`` and comment lines ignored; lines longer than
    ``MAX_LINE`` refused)."""
    data: list[bytes] = []
    buffer = b""
    first = True
    async for chunk in chunks:
        if first:
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
            first = False
        buffer += chunk
        if b"\r" in buffer:
            # keep a trailing CR: it may be the first half of a CRLF split across reads
            head, tail = (buffer[:-1], b"\r") if buffer.endswith(b"\r") else (buffer, b"")
            buffer = head.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        if len(buffer) > MAX_LINE and b"\n" not in buffer:
            raise ProviderError(f"{provider} sent an oversized line")
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif not line and data:
                yield b"\n".join(data)
                data.clear()


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
