"""Lean readers of provider wire formats, shared by the HTTP providers' token paths.

The SDKs' typed per-chunk parsing costs more per token than the whole relay budget
(shared/PERFORMANCE.md), so providers read their streaming response as bytes and hand the
``data`` of each SSE event to orjson themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Mapping

import httpx2

from runnel.errors import ProviderError, RunnelError

MAX_LINE = 4 * 1024 * 1024
DRAIN_TIMEOUT = 0.05


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
