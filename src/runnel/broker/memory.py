"""The in-process broker (the embedded default): each stream's log is a list in memory.

One ``StreamLog`` per stream holds every event in order; an event's SSE id is its position
plus one. Writers append; any number of readers read from any id at their own pace, so a
slow reader costs no memory beyond the shared log, and resuming is slicing. The log is
bounded because the generation is (``max_output_tokens``, ``max_stream_duration``), and it is
dropped ``stream_retention`` seconds after its terminal event.

Each user's notices (``broker.base``) are a bounded deque numbered from 1; the cursor is
that number as text.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from runnel.broker.base import (
    NOTICES_KEPT,
    Batch,
    Notice,
    Push,
    StreamMeta,
    Waiter,
    offer,
    stream_notice,
    wait,
)
from runnel.events import TERMINAL, Event


class StreamLog:
    __slots__ = ("_waiters", "events", "finished", "meta")

    def __init__(self, meta: StreamMeta) -> None:
        self.meta = meta
        self.events: list[Event] = []
        self.finished = False
        self._waiters: list[Waiter] = []

    def append(self, event: Event) -> int:
        """Append ``event``; returns its id. A waiting reader with a ``push`` is handed a
        token right here, in the writer's task (no wake-up of the reader's); any other
        waiting reader, or one whose push refuses, is woken."""
        if self.finished:
            raise RuntimeError("append after the terminal event")
        self.events.append(event)
        event_id = len(self.events)
        if isinstance(event, TERMINAL):
            self.finished = True
        if self._waiters:
            offer(self._waiters, event_id, event if type(event) is str else None)
        return event_id

    async def read(
        self, after: int, timeout: float, limit: int = 512, push: Push | None = None
    ) -> tuple[int, Sequence[Event]]:
        """Up to ``limit`` events with id > ``after``, waiting up to ``timeout`` s for one
        (then none); with ``push``, tokens appended meanwhile may be pushed instead.
        Returns the id after which the events returned start, and the events."""
        events = self.events
        if len(events) > after or self.finished:
            return after, events[after : after + limit]
        after = await wait(self._waiters, after, timeout, push)
        return after, self.events[after : after + limit]


class NoticeLog:
    """One user's newest notices, numbered from 1, and the feeds waiting for the next."""

    __slots__ = ("last", "notices", "waiters")

    def __init__(self) -> None:
        self.last = 0
        self.notices: deque[tuple[int, Notice]] = deque(maxlen=NOTICES_KEPT)
        self.waiters: list[asyncio.Future[None]] = []

    def add(self, notice: Notice) -> None:
        self.last += 1
        self.notices.append((self.last, notice))
        waiters, self.waiters = self.waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def after(self, cursor: int) -> list[Notice]:
        return [notice for number, notice in self.notices if number > cursor]


class MemoryBroker:
    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._logs: dict[str, StreamLog] = {}
        self._notices: dict[str, NoticeLog] = {}
        self._active: dict[str, dict[str, StreamMeta]] = {}
        self._feeds: dict[str, str] = {}

    async def create(self, meta: StreamMeta) -> None:
        self._logs[meta.stream_id] = StreamLog(meta)
        self._active.setdefault(meta.user_id, {})[meta.stream_id] = meta
        self._notice_log(meta.user_id).add(stream_notice("started", meta))

    def append(self, stream_id: str, event: Event) -> int:
        log = self._logs[stream_id]
        event_id = log.append(event)
        if log.finished:
            asyncio.get_running_loop().call_later(self.retention, self._expire, log)
            self._ended(log.meta)
        return event_id

    def _ended(self, meta: StreamMeta) -> None:
        active = self._active.get(meta.user_id)
        if active is None or active.pop(meta.stream_id, None) is None:
            return
        if not active:
            del self._active[meta.user_id]
        self._notice_log(meta.user_id).add(stream_notice("ended", meta))

    def _notice_log(self, user_id: str) -> NoticeLog:
        found = self._notices.get(user_id)
        if found is None:
            found = self._notices[user_id] = NoticeLog()
        return found

    async def active(self, user_id: str) -> list[StreamMeta]:
        return list(self._active.get(user_id, {}).values())

    async def read_notices(
        self, user_id: str, after: str | None, timeout: float
    ) -> tuple[str, list[Notice]]:
        log = self._notice_log(user_id)
        if after is None:
            return str(log.last), []
        cursor = int(after)
        if log.last <= cursor and timeout > 0:
            future = asyncio.get_running_loop().create_future()
            log.waiters.append(future)
            try:
                await asyncio.wait_for(future, timeout)
            except TimeoutError:
                pass
            finally:
                if future in log.waiters:
                    log.waiters.remove(future)
        return str(log.last), log.after(cursor)

    async def notify(self, user_id: str, notice: Notice) -> None:
        self._notice_log(user_id).add(notice)

    async def open_feed(self, feed_id: str, user_id: str) -> None:
        self._feeds[feed_id] = user_id

    async def feed_user(self, feed_id: str) -> str | None:
        return self._feeds.get(feed_id)

    async def close_feed(self, feed_id: str) -> None:
        self._feeds.pop(feed_id, None)

    async def meta(self, stream_id: str) -> StreamMeta | None:
        log = self._logs.get(stream_id)
        return log.meta if log is not None else None

    async def read(
        self,
        stream_id: str,
        after: int,
        timeout: float,
        limit: int = 512,
        push: Push | None = None,
    ) -> Batch | None:
        log = self._logs.get(stream_id)
        if log is None:
            return None
        after, events = await log.read(after, timeout, limit, push)
        first = after + 1
        return Batch(first, events, log.finished and first + len(events) > len(log.events))

    async def discard(self, stream_id: str) -> None:
        log = self._logs.pop(stream_id, None)
        if log is not None:
            self._ended(log.meta)

    async def request_cancel(self, stream_id: str, kept_through: int | None) -> None:
        """Only this process generates; a stream it does not run has already ended."""

    def _expire(self, log: StreamLog) -> None:
        if self._logs.get(log.meta.stream_id) is log:
            del self._logs[log.meta.stream_id]

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._logs.clear()
        self._active.clear()
