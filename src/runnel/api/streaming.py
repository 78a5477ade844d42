"""The SSE response: one reader following one stream's log from an event id.

The response is started where FastAPI calls it, inside the middleware stack (so the
middlewares see and decorate ``http.response.start``), then handed to ``HandOff``, the
app's outermost layer, which sends the body. Everything between — the middlewares' and
exception handlers' frames, FastAPI's request handling, the endpoint's request and
dependencies — is released when the stream starts instead of living as long as it, and
every event goes straight to the server's ``send`` instead of through one wrapper per
layer. Outside a ``HandOff`` the response sends its body in place.

Tokens usually do not wait for the reader's task at all: while the reader waits for the
next event of an in-process log, the log hands each new token to ``_push``, which writes it
to the connection right away from the generation's task (``direct_writer``) — one task
wake-up per token instead of two. Anything else (status, the terminal event, a token the
connection cannot take without waiting) wakes the reader, which sends it as before.

A small race per response: the reader loop (read the log, send one chunk per flush) and a
watcher of ``http.disconnect``; whichever ends first ends the other. A send that blocks
longer than ``send_timeout`` (a reader that stopped reading) ends the response. Heartbeat
comments go out when nothing was sent for ``heartbeat`` seconds. The bytes come from the
response's encoder (``runnel.sse.Encoder``: the native protocol or a dialect's); this module
only sends them. ``on_gone`` is called when the client leaves before the stream's end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from starlette.responses import Response

from runnel import sse
from runnel.broker import Batch, Broker
from runnel.errors import RunnelError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HANDOFF = "runnel.handoff"  # scope key: where an EventStreamResponse leaves itself

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamedBody(Protocol):
    """A response whose body ``HandOff`` sends: a stream's, or a live feed's."""

    kind: str  # "reply" or "feed", the label of ``runnel_open_event_streams``

    async def send_body(self, receive: Receive, send: Send) -> None: ...


class EventStreamResponse(Response):
    """Bypasses ``Response``'s body handling; subclassed so FastAPI passes it through."""

    kind = "reply"

    def __init__(
        self,
        broker: Broker,
        stream_id: str,
        first: Batch,
        *,
        heartbeat: float,
        send_timeout: float,
        encoder: sse.Encoder,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        on_gone: Callable[[], None] | None = None,
    ) -> None:
        self.broker = broker
        self.stream_id = stream_id
        self.first: Batch | None = first
        self.heartbeat = heartbeat
        self.send_timeout = send_timeout
        self.encoder = encoder
        self.on_gone = on_gone
        self.raw_headers = HEADERS + (extra_headers or [])
        self.status_code = 200
        self.background = None
        self._gone = False
        self._write: Callable[[bytes], bool] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        slot: list[EventStreamResponse] | None = scope.get(HANDOFF)
        if slot is not None:
            slot.append(self)  # HandOff sends the body once the stack has returned
        else:
            await self.send_body(receive, send)

    async def send_body(self, receive: Receive, send: Send) -> None:
        self._write = direct_writer(send)
        reader = asyncio.current_task()
        assert reader is not None
        watcher = asyncio.ensure_future(self._watch(receive, reader))
        finished = False
        try:
            finished = await self._stream(send, reader)
        except asyncio.CancelledError:
            if not self._gone:
                raise
            reader.uncancel()
        finally:
            watcher.cancel()
            if not finished and self.on_gone is not None:
                self.on_gone()

    async def _stream(self, send: Send, reader: asyncio.Task[Any]) -> bool:
        """Send the stream; True when its terminal event went out."""
        loop = asyncio.get_running_loop()
        batch, self.first = self.first, None  # held only until sent, like every batch
        assert batch is not None
        encoder = self.encoder
        chunk = encoder.preamble()
        if batch.events:
            chunk += encoder.encode(batch.events, batch.first_id)
        push = self._push if self._write is not None else None
        finished = False
        while True:
            timer = loop.call_later(self.send_timeout, self._give_up, reader)
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finally:
                timer.cancel()
            if batch is None or batch.finished:
                finished = batch is not None
                break
            position = batch.first_id + len(batch.events) - 1
            try:
                batch = await self.broker.read(self.stream_id, position, self.heartbeat, push=push)
            except RunnelError:  # the broker is unreachable: end here; the client resumes
                break
            if batch is None or (batch.finished and not batch.events):
                finished = batch is not None
                break  # expired while we waited, or over: nothing more will come
            chunk = encoder.encode(batch.events, batch.first_id) if batch.events else sse.PING
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return finished

    def _push(self, text: str, event_id: int) -> bool:
        """Write a token now, from the writer's task; False when it must wait for the
        reader (the connection cannot take it without waiting)."""
        assert self._write is not None
        try:
            data = self.encoder.token(text, event_id)
            # an encoder may have nothing to send for a token (a resume past it); an empty
            # chunk would end the chunked body
            return self._write(data) if data else True
        except (OSError, RuntimeError):  # the connection is going away: the reader sees it
            return False

    async def _watch(self, receive: Receive, reader: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._give_up(reader)
                return

    def _give_up(self, reader: asyncio.Task[Any]) -> None:
        if not self._gone:
            self._gone = True
            reader.cancel()


def direct_writer(send: Send) -> Callable[[bytes], bool] | None:
    """Write body bytes to the connection now, without awaiting, when ``send`` is uvicorn's
    httptools connection (the server ``runnel serve`` runs; under ``HandOff`` the body gets
    its ``send`` unwrapped); None for any other server, whose events then go through
    ``send``. The writer does what that ``send`` does with a chunk of a chunked body, and
    refuses (returns False, writes nothing) wherever ``send`` would wait or do nothing:
    writing paused by flow control, the client gone, the response over."""
    cycle: Any = getattr(send, "__self__", None)
    kind = type(cycle)
    if (kind.__module__, kind.__qualname__) != _HTTPTOOLS_CYCLE:
        return None
    transport: Any = getattr(cycle, "transport", None)
    flow: Any = getattr(cycle, "flow", None)
    if (
        transport is None
        or not hasattr(flow, "write_paused")
        or not all(hasattr(cycle, name) for name in ("disconnected", "response_complete"))
        or getattr(cycle, "chunked_encoding", None) is not True
        or getattr(cycle, "response_started", None) is not True
    ):
        return None  # not the connection this was written for: use send

    def write(data: bytes) -> bool:
        if (
            flow.write_paused
            or cycle.disconnected
            or cycle.response_complete
            or transport.is_closing()
        ):
            return False
        transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        return True

    return write


_HTTPTOOLS_CYCLE = ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle")


class HandOff:
    """The app's outermost ASGI layer: sends the body of an ``EventStreamResponse`` (or a
    live feed, ``api/feed.py``) that was started deeper in the stack, after the stack
    returned (see the module docstring), counted in ``runnel_open_event_streams``. The body
    gets the server's own ``receive`` and ``send``."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        slot: list[StreamedBody] = []
        # a copy: what the stack leaves in the scope (FastAPI's exit stacks, the route…) is
        # released with it, not kept by the server's scope for the stream's life
        inner = {**scope, HANDOFF: slot}
        if scope["method"] == "HEAD":
            # HEAD works wherever GET does: the server (whose scope still says HEAD) sends
            # the headers and drops the body; a stream is not followed
            inner["method"] = "GET"
        await self.app(inner, receive, send)
        del inner
        if slot:
            response = slot.pop()
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            services = getattr(getattr(scope.get("app"), "state", None), "runnel", None)
            gauge = services.metrics.open_event_streams.labels(response.kind) if services else None
            if gauge is not None:
                gauge.inc()
            try:
                await response.send_body(receive, send)
            finally:
                if gauge is not None:
                    gauge.dec()
