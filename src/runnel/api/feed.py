"""The live feed's response: one SSE body that follows many streams of one user.

A ``LiveFeed`` runs, inside its response, one task per followed stream (reading its log
with ``Broker.read``, as a stream's own response does, tokens handed over by ``push``
while it waits), one task reading the user's notices (streams that start and end, and the
follow/unfollow requests that ``PATCH /api/v1/live/{id}`` sends through the broker from
any process), and the writer: the response's own task, which sends whatever the others
queued as one chunk, or a heartbeat after ``heartbeat`` seconds of silence. The frames
come from ``runnel.dialects.live``.

Flow control: the queue holds at most ``QUEUE_LIMIT`` bytes; past that, the stream tasks
stop reading (pushes are refused) until the writer took it. A send that blocks longer than
``send_timeout`` (a reader that stopped reading) ends the feed, as a disconnect does. The
client resumes from its per-stream positions.

A feed ends on its own only when the broker fails (the client reconnects) or the server
drains: ``Feeds.close_all`` lets each feed send what its streams still log for a moment
(their terminal events, once the generations ended), then ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.responses import Response

from runnel import sse
from runnel.api.streaming import HANDOFF, HEADERS, Receive, Scope, Send
from runnel.broker import Broker, StreamMeta
from runnel.broker.base import Notice
from runnel.dialects import live
from runnel.errors import RunnelError

log = logging.getLogger(__name__)

QUEUE_LIMIT = 256 * 1024  # bytes queued for the writer before the readers wait
RENEW_EVERY = 20.0  # s between renewals of the feed's record in the broker
CLOSE_WAIT = 2.0  # s a closing feed waits for its streams to end


class LiveFeed(Response):
    """``GET /api/v1/live``. Built by the route (which opened the feed in the broker and
    took the notice cursor before ``active``, so no start is missed); sent by ``HandOff``."""

    kind = "feed"

    def __init__(
        self,
        broker: Broker,
        feeds: Feeds,
        *,
        user_id: str,
        feed_id: str,
        cursor: str,
        active: list[StreamMeta],
        follows: dict[str, int],
        auto: bool,
        heartbeat: float,
        send_timeout: float,
        retry_ms: int,
    ) -> None:
        self.broker = broker
        self.feeds = feeds
        self.user_id = user_id
        self.feed_id = feed_id
        self.cursor = cursor
        self.active = active
        self.follows = follows
        self.auto = auto
        self.heartbeat = heartbeat
        self.send_timeout = send_timeout
        self.retry_ms = retry_ms
        self.raw_headers = list(HEADERS)
        self.status_code = 200
        self.background = None
        self._out: list[bytes] = []
        self._size = 0
        self._room = asyncio.Event()
        self._room.set()
        self._waiting: asyncio.Future[None] | None = None
        self._following: dict[str, asyncio.Task[None]] = {}
        self._done: set[str] = set()  # followed to their end here: not followed again by auto
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended = False
        self._gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        slot: list[Any] | None = scope.get(HANDOFF)
        if slot is not None:
            slot.append(self)
        else:
            await self.send_body(receive, send)

    async def send_body(self, receive: Receive, send: Send) -> None:
        writer = asyncio.current_task()
        assert writer is not None
        self._emit(sse.retry(self.retry_ms) + live.opened(self.feed_id, self.active))
        self.feeds.add(self)
        watcher = asyncio.ensure_future(self._watch(receive, writer))
        self._spawn(self._read_notices())
        for stream_id, after in self.follows.items():
            self._follow(stream_id, after, explicit=True)
        if self.auto:
            for meta in self.active:
                self._follow(meta.stream_id, 0, explicit=False)
        self.active = []
        try:
            await self._write(send, writer)
        except asyncio.CancelledError:
            if not self._gone:
                raise
            writer.uncancel()
        finally:
            watcher.cancel()
            self._ended = True
            for task in [*self._tasks, *self._following.values()]:
                task.cancel()
            self.feeds.discard(self)
            with contextlib.suppress(Exception):
                await self.broker.close_feed(self.feed_id)

    # the writer

    async def _write(self, send: Send, writer: asyncio.Task[Any]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._out:
                if self._ended:
                    break
                waiting = self._waiting = loop.create_future()
                timer = loop.call_later(self.heartbeat, _wake, waiting)
                try:
                    await waiting
                finally:
                    timer.cancel()
                    self._waiting = None
            if self._out:
                chunk = b"".join(self._out)
                self._out.clear()
                self._size = 0
                self._room.set()
            elif self._ended:
                break
            else:
                chunk = sse.PING
            timer = loop.call_later(self.send_timeout, self._give_up, writer)
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finally:
                timer.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _emit(self, data: bytes) -> None:
        self._out.append(data)
        self._size += len(data)
        if self._size > QUEUE_LIMIT:
            self._room.clear()
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def _end(self) -> None:
        """End the feed once what is queued went out."""
        self._ended = True
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def _watch(self, receive: Receive, writer: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._give_up(writer)
                return

    def _give_up(self, writer: asyncio.Task[Any]) -> None:
        if not self._gone:
            self._gone = True
            writer.cancel()

    def close(self) -> None:
        """The server drains: send what the streams still log for a moment, then end."""
        if not self._ended:
            self._spawn(self._close())

    async def _close(self) -> None:
        following = list(self._following.values())
        if following:
            await asyncio.wait(following, timeout=CLOSE_WAIT)
        self._end()

    # the readers

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _follow(self, stream_id: str, after: int, *, explicit: bool) -> None:
        if self._ended or stream_id in self._following:
            return
        if not explicit and stream_id in self._done:
            return
        task = asyncio.ensure_future(self._read_stream(stream_id, after))
        self._following[stream_id] = task
        task.add_done_callback(lambda done: self._followed(stream_id, done))

    def _followed(self, stream_id: str, task: asyncio.Task[None]) -> None:
        if self._following.get(stream_id) is task:
            del self._following[stream_id]
        if not task.cancelled():
            self._done.add(stream_id)

    def _unfollow(self, stream_id: str) -> None:
        task = self._following.pop(stream_id, None)
        if task is not None:
            task.cancel()

    async def _read_stream(self, stream_id: str, after: int) -> None:
        broker = self.broker
        try:
            meta = await broker.meta(stream_id)
            if meta is None or meta.user_id != self.user_id:
                self._emit(live.gone(stream_id))
                return
            envelope = live.StreamEnvelope(stream_id, meta.conversation_id)

            def push(text: str, event_id: int) -> bool:
                if self._size > QUEUE_LIMIT or self._ended:
                    return False
                self._emit(envelope.token(text, event_id))
                return True

            while True:
                if not self._room.is_set():
                    await self._room.wait()
                batch = await broker.read(stream_id, after, self.heartbeat, push=push)
                if batch is None:
                    self._emit(live.gone(stream_id))
                    return
                if batch.events:
                    self._emit(envelope.encode(batch.events, batch.first_id))
                after = batch.first_id + len(batch.events) - 1
                if batch.finished:
                    return
        except RunnelError as exc:  # the broker is unreachable: end; the client resumes
            log.warning("live feed %s: reading %s failed (%s)", self.feed_id, stream_id, exc)
            self._end()

    async def _read_notices(self) -> None:
        loop = asyncio.get_running_loop()
        cursor = self.cursor
        renewed = loop.time()
        try:
            while not self._ended:
                cursor, notices = await self.broker.read_notices(
                    self.user_id, cursor, self.heartbeat
                )
                for notice in notices:
                    self._noticed(notice)
                if loop.time() - renewed > RENEW_EVERY:
                    await self.broker.open_feed(self.feed_id, self.user_id)
                    renewed = loop.time()
        except RunnelError as exc:
            log.warning("live feed %s: reading notices failed (%s)", self.feed_id, exc)
            self._end()

    def _noticed(self, notice: Notice) -> None:
        target = notice.get("control")
        if target is not None:
            if target == self.feed_id:
                for stream_id, after in dict(notice.get("follow") or {}).items():
                    self._follow(str(stream_id), int(after), explicit=True)
                for stream_id in notice.get("unfollow") or []:
                    self._unfollow(str(stream_id))
            return
        self._emit(live.notice(notice))
        if self.auto and notice.get("state") == "started":
            self._follow(str(notice["streamId"]), 0, explicit=False)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Feeds:
    """The live feeds open in this process, for the drain."""

    def __init__(self) -> None:
        self._open: set[LiveFeed] = set()
        self.closing = False

    def add(self, feed: LiveFeed) -> None:
        self._open.add(feed)

    def discard(self, feed: LiveFeed) -> None:
        self._open.discard(feed)

    def close_all(self) -> None:
        """The server drains: close every feed, and refuse new ones."""
        self.closing = True
        for feed in list(self._open):
            feed.close()
