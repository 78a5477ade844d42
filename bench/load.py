"""The load generator: raw asyncio connections that stream SSE and time every token.

No HTTP client library on purpose: one read through a client library's stack costs more
than the relay under test spends per token. Each stream is one ``asyncio.Protocol``: it
sends its request, reads the status line and headers, undoes chunked transfer encoding,
splits the body into SSE events (ids, data lines, comments, events split across reads)
and reads the ``"<seq>:<ns>|"`` records that the fake upstream puts in each token's text.
A relay may merge consecutive tokens into one event, so one event may carry several
records; each record is timed on its own.

Three readings of the body: ``openai`` (the upstream reached directly, or Runnel's
``/v1/chat/completions``: ``chat.completion.chunk`` deltas, ended by ``[DONE]``),
``responses`` (Runnel's ``/v1/responses``: ``response.output_text.delta`` events, ended by
``response.completed``), ``ui`` (Runnel's ``/api/v1/ui/chat``: the AI SDK's
``text-delta`` chunks, ended by ``finish``) and ``events`` (Runnel and the simple relay:
``{"type": "token", "content": …}``, ended by ``complete`` or ``error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

try:
    from orjson import loads
except ImportError:  # pragma: no cover - orjson comes with Runnel
    loads = json.loads

MAX_HEAD = 64 * 1024
MAX_ERROR_BODY = 64 * 1024


def http_request(
    method: str,
    path: str,
    port: int,
    body: Any = None,
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    payload = b""
    if body is not None:
        payload = json.dumps(body).encode()
        lines += ["content-type: application/json", f"content-length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@dataclass
class Request:
    """One stream to open: the bytes to send, how to read the reply, tokens expected."""

    data: bytes
    kind: str  # "openai", "responses", "ui" or "events"
    expected: int


class SSEStream(asyncio.Protocol):
    """One streamed request on its own connection; every token record is timed."""

    def __init__(self, request: Request, latencies: list[float], gap_ns: int) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.latencies = latencies
        self.gap_ns = gap_ns
        self.done: asyncio.Future[None] = loop.create_future()
        self.attached: asyncio.Future[None] = loop.create_future()  # first token or end
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.error: str | None = None
        self.finish_reason: str | None = None
        self.stream_id: str | None = None
        self.seen = bytearray(request.expected)
        self.received = 0
        self.duplicates = 0
        self.malformed = 0
        self.token_events = 0
        self.pings = 0
        self.last_id = 0
        self.id_errors = 0
        self.t_connect = time.time_ns()
        self.t_sent = 0
        self.t_first = 0
        self.t_last = 0
        self.t_end = 0
        self.max_gap = 0
        self.gaps_over = 0
        self.upstream_gaps = 0
        self.last_sent = 0
        self.max_send_gap = 0  # the upstream's own spacing: shows when it ran late
        self._head: bytes | None = b""
        self._chunked = False
        self._length = -1
        self._body_error = b""
        self._cbuf = b""
        self._cleft = 0
        self._cskip = 0
        self._sbuf = b""
        self._carry = ""
        self._on_data = {"openai": self._openai, "responses": self._response, "ui": self._ui}.get(
            request.kind, self._event
        )

    # -- connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.write(self.request.data)
        self.t_sent = time.time_ns()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if self._head is not None or self.status != 200:
            if self.status:
                self._http_error()
            else:
                self.fail(f"closed before the response ({exc or 'EOF'})")
        else:
            self.fail("connection reset" if exc else "ended before a terminal event")

    def eof_received(self) -> bool | None:
        return None

    def finish(self, error: str | None = None) -> None:
        if self.done.done():
            return
        self.error = error
        self.t_end = time.time_ns()
        self.done.set_result(None)
        if not self.attached.done():
            self.attached.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def fail(self, error: str) -> None:
        self.finish(error)

    def abort(self, error: str) -> None:
        if not self.done.done():
            self.finish(error)
        if self.transport is not None:
            self.transport.abort()

    # -- bytes -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if self._head is not None:
            head = self._head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                if len(head) > MAX_HEAD:
                    self.fail("response headers too large")
                self._head = head
                return
            self._head = None
            if not self._headers(head[:end]):
                return
            data = head[end + 4 :]
        if self.status != 200:
            self._body_error += data
            if 0 <= self._length <= len(self._body_error) or len(self._body_error) > MAX_ERROR_BODY:
                self._http_error()
            return
        if self._chunked:
            data = self._dechunk(data)
        if data:
            self._feed(data, now)

    def _headers(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        try:
            self.status = int(parts[1])
        except (IndexError, ValueError):
            self.fail("malformed status line")
            return False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            elif name == b"content-length":
                with contextlib.suppress(ValueError):
                    self._length = int(value)
        if self.status != 200 and self._length == 0:
            self._http_error()
            return False
        return True

    def _http_error(self) -> None:
        code = ""
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            body = self._body_error
            if self._chunked:
                body = self._dechunk(body)
            code = loads(body)["error"]["code"]
        self.fail(f"HTTP {self.status} {code}".strip())

    def _dechunk(self, data: bytes) -> bytes:
        if not (self._cbuf or self._cleft or self._cskip):
            # the common case: a read holding exactly one whole chunk
            size_line, sep, rest = data.partition(b"\r\n")
            if sep and len(size_line) <= 8:
                try:
                    size = int(size_line, 16)
                except ValueError:
                    size = -1
                if size > 0 and len(rest) == size + 2 and rest.endswith(b"\r\n"):
                    return rest[:size]
        buf = self._cbuf + data if self._cbuf else data
        out: list[bytes] = []
        pos, n = 0, len(buf)
        while pos < n:
            if self._cleft:
                take = min(self._cleft, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._cleft -= take
                if not self._cleft:
                    self._cskip = 2
                continue
            if self._cskip:
                skip = min(self._cskip, n - pos)
                pos += skip
                self._cskip -= skip
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            try:
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
            except ValueError:
                self.fail("malformed chunked encoding")
                return b""
            pos = eol + 2
            if size == 0:
                pos = n  # the end of the body (trailers ignored)
                break
            self._cleft = size
        self._cbuf = buf[pos:]
        return out[0] if len(out) == 1 else b"".join(out)

    def _feed(self, data: bytes, now: int) -> None:
        if (
            not self._sbuf
            and len(data) >= 2
            and data.find(b"\n\n") == len(data) - 2
            and b"\r" not in data  # the common case: one whole event
        ):
            self._block(data[:-2], now)
            return
        buf = self._sbuf + data if self._sbuf else data
        if b"\r" in buf:
            keep = buf.endswith(b"\r")
            buf = (buf[:-1] if keep else buf).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep:
                buf += b"\r"
        if b"\n\n" not in buf:
            self._sbuf = buf
            return
        blocks = buf.split(b"\n\n")
        self._sbuf = blocks.pop()
        for block in blocks:
            if block:
                self._block(block, now)
            if self.done.done():
                return

    def _block(self, block: bytes, now: int) -> None:
        data: bytes | None = None
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
                data = value if data is None else data + b"\n" + value
            elif line.startswith(b"id:"):
                try:
                    event_id = int(line[3:])
                except ValueError:
                    self.id_errors += 1
                    continue
                if event_id <= self.last_id:
                    self.id_errors += 1
                self.last_id = event_id
            elif line.startswith(b":"):
                self.pings += 1
        if data is not None:
            self._on_data(data, now)

    # -- events ------------------------------------------------------------------------

    def _openai(self, data: bytes, now: int) -> None:
        if data == b"[DONE]":
            self.finish_reason = self.finish_reason or "stop"
            self.finish()
            return
        try:
            chunk = loads(data)
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    self._tokens(content, now)
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
        except (ValueError, AttributeError, TypeError):
            self.fail("malformed chunk")
            return
        if chunk.get("error"):
            self.fail("error chunk")

    def _event(self, data: bytes, now: int) -> None:
        try:
            event = loads(data)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            self.fail("malformed event")
            return
        if kind == "token":
            self._tokens(event["content"], now)
        elif kind == "status":
            self.stream_id = event.get("streamId")
        elif kind == "complete":
            self.finish_reason = event.get("finishReason", "stop")
            self.finish(None if self.finish_reason == "stop" else f"finish {self.finish_reason}")
        elif kind == "error":
            self.fail(f"error event {event.get('code')}")

    def _response(self, data: bytes, now: int) -> None:
        try:
            event = loads(data)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            self.fail("malformed event")
            return
        if kind == "response.output_text.delta":
            self._tokens(event["delta"], now)
        elif kind == "response.completed":
            self.finish_reason = "stop"
            self.finish()
        elif kind in ("response.incomplete", "response.failed"):
            self.fail(kind)

    def _ui(self, data: bytes, now: int) -> None:
        if data == b"[DONE]":
            if not self.finish_reason:
                self.fail("ended without finish")
            return
        try:
            chunk = loads(data)
            kind = chunk["type"]
        except (ValueError, KeyError, TypeError):
            self.fail("malformed chunk")
            return
        if kind == "text-delta":
            self._tokens(chunk["delta"], now)
        elif kind == "finish":
            self.finish_reason = chunk.get("finishReason", "stop")
            self.finish(None if self.finish_reason == "stop" else f"finish {self.finish_reason}")
        elif kind == "error":
            self.fail("error chunk")

    def _tokens(self, content: str, now: int) -> None:
        """Time every ``seq:ns|`` record of one token event received at ``now``.

        A reader gap (time since the previous token event) over ``gap_ns`` counts in
        ``gaps_over`` unless the upstream itself paused that long between the two tokens
        (its send times say so): those count in ``upstream_gaps`` and are not the relay's.
        """
        text = self._carry + content if self._carry else content
        records = text.split("|")
        self._carry = records.pop()
        previous_sent = self.last_sent
        latencies, seen, expected = self.latencies, self.seen, self.request.expected
        first_sent = 0
        for record in records:
            seq, _, sent = record.partition(":")
            try:
                i = int(seq)
                at = int(sent)
            except ValueError:
                self.malformed += 1
                continue
            if not first_sent:
                first_sent = at
            latencies.append((now - at) / 1e6)
            if self.last_sent and at - self.last_sent > self.max_send_gap:
                self.max_send_gap = at - self.last_sent
            self.last_sent = at
            if 0 <= i < expected:
                if seen[i]:
                    self.duplicates += 1
                else:
                    seen[i] = 1
                    self.received += 1
            else:
                self.malformed += 1
        if not self.t_first:
            self.t_first = now
            if not self.attached.done():
                self.attached.set_result(None)
        else:
            gap = now - self.t_last
            if gap > self.max_gap:
                self.max_gap = gap
            if gap > self.gap_ns:
                if previous_sent and first_sent and first_sent - previous_sent > self.gap_ns:
                    self.upstream_gaps += 1
                else:
                    self.gaps_over += 1
        self.t_last = now
        self.token_events += 1


# -- running many streams ----------------------------------------------------------------


@dataclass
class Run:
    """The streams of one load run and every token latency they measured (ms)."""

    streams: list[SSEStream] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    started_ns: int = 0
    ended_ns: int = 0
    connect_errors: int = 0


async def open_stream(
    port: int, request: Request, run: Run, gap_ns: int, connect_timeout: float = 10.0
) -> SSEStream:
    loop = asyncio.get_running_loop()
    stream = SSEStream(request, run.latencies, gap_ns)
    run.streams.append(stream)
    try:
        async with asyncio.timeout(connect_timeout):
            await loop.create_connection(lambda: stream, "127.0.0.1", port)
    except (OSError, TimeoutError) as exc:
        run.connect_errors += 1
        stream.fail(f"connect: {type(exc).__name__}")
    return stream


async def run_streams(
    port: int,
    requests: Sequence[Request],
    offsets: Sequence[float],
    *,
    deadline: float,
    gap_ms: float = 40.0,
    run: Run | None = None,
) -> Run:
    """Open ``requests[i]`` at ``offsets[i]`` seconds from now; wait until every stream
    ended or ``deadline`` seconds passed (then the rest are aborted as timed out). The
    streams are added to ``run`` (a new one by default) as they open."""
    loop = asyncio.get_running_loop()
    if run is None:
        run = Run()
    run.started_ns = time.time_ns()
    gap_ns = int(gap_ms * 1e6)
    start = loop.time()
    tasks: list[asyncio.Task[SSEStream]] = []

    async def launch(request: Request, at: float) -> SSEStream:
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return await open_stream(port, request, run, gap_ns)

    for request, offset in zip(requests, offsets, strict=True):
        tasks.append(asyncio.ensure_future(launch(request, start + offset)))
    try:
        async with asyncio.timeout(deadline):
            streams = await asyncio.gather(*tasks)
            await asyncio.gather(*(s.done for s in streams))
    except TimeoutError:
        for task in tasks:
            task.cancel()
        for stream in run.streams:
            stream.abort("timeout")
    run.ended_ns = time.time_ns()
    return run


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return None
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def spread(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else None,
    }


def summarize(run: Run, requests: Sequence[Request]) -> dict[str, Any]:
    """Everything the tables report about one run of ``requests``."""
    streams = run.streams
    errors = Counter(s.error for s in streams if s.error)
    if len(streams) < len(requests):
        errors["never started"] += len(requests) - len(streams)
    ttft = [(s.t_first - s.t_sent) / 1e6 for s in streams if s.t_first and s.t_sent]
    received = sum(s.received for s in streams)
    expected = sum(r.expected for r in requests)
    firsts = [s.t_sent for s in streams if s.t_sent]
    lasts = [s.t_last for s in streams if s.t_last]
    wall = (max(lasts) - min(firsts)) / 1e9 if firsts and lasts else 0.0
    events = sum(s.token_events for s in streams)
    return {
        "streams": len(requests),
        "completed": sum(1 for s in streams if s.done.done() and s.error is None),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(5)),
        "tokens_expected": expected,
        "tokens_received": received,
        "lost": expected - received,
        "streams_with_loss": sum(1 for s in streams if s.received < s.request.expected)
        + len(requests)
        - len(streams),
        "duplicates": sum(s.duplicates for s in streams),
        "malformed": sum(s.malformed for s in streams),
        "id_errors": sum(s.id_errors for s in streams),
        "token_events": events,
        "records_per_event": len(run.latencies) / events if events else None,
        "ttft_ms": spread(ttft),
        "token_latency_ms": spread(run.latencies),
        "max_gap_ms": max((s.max_gap for s in streams), default=0) / 1e6,
        "upstream_max_gap_ms": max((s.max_send_gap for s in streams), default=0) / 1e6,
        "gaps_over": sum(s.gaps_over for s in streams),
        "upstream_gaps": sum(s.upstream_gaps for s in streams),
        "streams_with_gaps": sum(1 for s in streams if s.gaps_over),
        "tokens_per_s": received / wall if wall > 0 else None,
        "wall_s": wall,
    }


async def simple_get(
    port: int, path: str, timeout: float = 5.0, method: str = "GET"
) -> tuple[int, bytes]:
    """A one-off request on a fresh connection (readiness checks, control calls)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(http_request(method, path, port, headers=[("connection", "close")]))
            raw = await reader.read(-1)
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        out = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            body = rest[size + 2 :]
        body = out
    return status, body
