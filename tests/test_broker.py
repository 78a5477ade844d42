"""The broker contract, on the in-process broker and on Redis Streams."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from runnel.broker.base import Batch, Broker, StreamMeta
from runnel.broker.memory import MemoryBroker
from runnel.broker.redis import RedisBroker
from runnel.events import Complete, Error, Status, Usage
from tests.conftest import require_service

BrokerBody = Callable[[Broker], Awaitable[None]]


def run(kind: str, body: BrokerBody, retention: float = 60.0) -> None:
    url = require_service("RUNNEL_TEST_REDIS_URL") if kind == "redis" else ""

    async def main() -> None:
        broker: Broker
        if kind == "redis":
            redis_broker = RedisBroker(url, retention)
            await redis_broker.start(lambda *_: None)
            broker = redis_broker
        else:
            broker = MemoryBroker(retention)
        try:
            await body(broker)
        finally:
            await broker.aclose()

    asyncio.run(main())


def meta() -> StreamMeta:
    sid = f"s_{uuid.uuid4().hex}"
    return StreamMeta(sid, "alice", "c_1", "m_1", "demo/markdown")


async def drain(broker: Broker, stream_id: str, after: int = 0) -> list[tuple[int, object]]:
    seen: list[tuple[int, object]] = []
    while True:
        batch = await broker.read(stream_id, after, timeout=2, limit=3)
        assert batch is not None
        seen += [(batch.first_id + i, e) for i, e in enumerate(batch.events)]
        after = batch.first_id + len(batch.events) - 1
        if batch.finished:
            return seen


KINDS = pytest.mark.parametrize("kind", ["memory", "redis"])
COMPLETE = Complete("demo/markdown", "stop", "m_1", Usage(3, 2), 2)


@KINDS
def test_append_then_read_from_any_id(kind: str) -> None:
    async def body(broker: Broker) -> None:
        m = meta()
        await broker.create(m)
        assert await broker.meta(m.stream_id) == m
        ids = [
            broker.append(m.stream_id, Status(m.stream_id, "c_1", "m_1", "demo/markdown")),
            broker.append(m.stream_id, "Hé"),
            broker.append(m.stream_id, "llo 🎉"),
            broker.append(m.stream_id, COMPLETE),
        ]
        assert ids == [1, 2, 3, 4]
        everything = await drain(broker, m.stream_id)
        assert [i for i, _ in everything] == [1, 2, 3, 4]
        assert everything[1:] == [(2, "Hé"), (3, "llo 🎉"), (4, COMPLETE)]
        for after in range(5):
            assert await drain(broker, m.stream_id, after) == everything[after:]
        end = await broker.read(m.stream_id, 4, timeout=0.1)
        assert end == Batch(5, [], True)

    run(kind, body)


@KINDS
def test_a_waiting_reader_wakes_on_append(kind: str) -> None:
    async def body(broker: Broker) -> None:
        m = meta()
        await broker.create(m)
        idle = await broker.read(m.stream_id, 0, timeout=0.05)
        assert idle == Batch(1, [], False)
        reader = asyncio.ensure_future(broker.read(m.stream_id, 0, timeout=5))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        broker.append(m.stream_id, "x")
        batch = await reader
        assert batch is not None
        assert list(batch.events) == ["x"]
        assert time.monotonic() - started < 2
        broker.append(m.stream_id, Error("INTERRUPTED", "gone", True, True, "m_1"))
        tail = await drain(broker, m.stream_id, 1)
        assert tail == [(2, Error("INTERRUPTED", "gone", True, True, "m_1"))]

    run(kind, body)


@KINDS
def test_unknown_discarded_and_expired_streams(kind: str) -> None:
    async def body(broker: Broker) -> None:
        assert await broker.read("s_unknown", 0, timeout=0) is None
        assert await broker.meta("s_unknown") is None
        m = meta()
        await broker.create(m)
        await broker.discard(m.stream_id)
        assert await broker.meta(m.stream_id) is None
        done = meta()
        await broker.create(done)
        broker.append(done.stream_id, COMPLETE)
        assert await drain(broker, done.stream_id) == [(1, COMPLETE)]
        await asyncio.sleep(1.3)
        assert await broker.read(done.stream_id, 0, timeout=0) is None

    run(kind, body, retention=1.0)


def test_redis_cancel_requests_reach_every_process() -> None:
    url = require_service("RUNNEL_TEST_REDIS_URL")

    async def main() -> None:
        seen: list[tuple[str, int | None]] = []
        listener, sender = RedisBroker(url, 60), RedisBroker(url, 60)
        await listener.start(lambda sid, kept: seen.append((sid, kept)))
        await sender.start(lambda *_: None)
        try:
            await asyncio.sleep(0.2)
            await sender.request_cancel("s_far", 7)
            for _ in range(50):
                if seen:
                    break
                await asyncio.sleep(0.02)
            assert seen == [("s_far", 7)]
        finally:
            await listener.aclose()
            await sender.aclose()

    asyncio.run(main())


def test_redis_leases_and_interrupting_a_dead_stream() -> None:
    url = require_service("RUNNEL_TEST_REDIS_URL")

    async def main() -> None:
        a, b = RedisBroker(url, 60), RedisBroker(url, 60)
        await a.start(lambda *_: None)
        await b.start(lambda *_: None)
        try:
            m = meta()
            await a.create(m)
            a.append(m.stream_id, "partial")
            await a.renew([m.stream_id], ttl=0.3)
            assert await b.alive(m.stream_id)
            await asyncio.sleep(0.4)
            assert not await b.alive(m.stream_id)
            assert m.stream_id in await b.expired()
            error = Error("INTERRUPTED", "the server generating it stopped", True, True, "m_1")
            assert await b.interrupt(m.stream_id, error)
            assert not await a.interrupt(m.stream_id, error)
            assert await drain(b, m.stream_id) == [(1, "partial"), (2, error)]
            assert m.stream_id not in await b.expired()
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(main())


def test_redis_cancel_requests_wait_for_a_listener_that_missed_them(redis_url: str) -> None:
    async def main() -> None:
        broker = RedisBroker(redis_url, 60)
        try:
            await broker.request_cancel("s_missed", 3)
            await broker.request_cancel("s_other", None)
            assert await broker.pending_cancels(["s_missed", "s_none"]) == [("s_missed", 3)]
            # a stream whose keys were lost (a Redis restart) is unknown, not an error
            await broker._redis.hset("runnel:m:s_lost", "last", 4)
            assert await broker.meta("s_lost") is None
            assert await broker.read("s_lost", 0, timeout=0) is None
        finally:
            await broker.aclose()

    asyncio.run(main())


class Pusher:
    """A reader's ``push``: takes tokens while ``accept``, and records them."""

    def __init__(self) -> None:
        self.accept = True
        self.taken: list[tuple[int, str]] = []

    def __call__(self, text: str, event_id: int) -> bool:
        if self.accept:
            self.taken.append((event_id, text))
        return self.accept

    async def until_taken(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.taken) < count:
                await asyncio.sleep(0.01)


@KINDS
def test_tokens_are_pushed_to_a_waiting_reader_until_it_refuses(kind: str) -> None:
    """A reader waiting in the generating process is handed tokens by ``push`` (with Redis,
    once they are written there) without waking; a refused token, or any other event,
    wakes it, and its batch starts after the tokens it took."""
    pusher = Pusher()

    async def body(broker: Broker) -> None:
        m = meta()
        await broker.create(m)
        broker.append(m.stream_id, Status(m.stream_id, "c_1", "m_1", "demo/markdown"))
        assert (await broker.read(m.stream_id, 0, timeout=2)) == Batch(
            1, [Status(m.stream_id, "c_1", "m_1", "demo/markdown")], False
        )
        await asyncio.sleep(0.1)  # Redis: the writer has recorded the status as written
        reader = asyncio.ensure_future(broker.read(m.stream_id, 1, timeout=5, push=pusher))
        await asyncio.sleep(0.01)  # the reader waits now
        broker.append(m.stream_id, "a")
        broker.append(m.stream_id, "b")
        await pusher.until_taken(2)
        await asyncio.sleep(0.05)
        assert not reader.done(), "a pushed token must not wake the reader"
        pusher.accept = False
        broker.append(m.stream_id, "c")  # refused: wakes the reader, which reads it
        assert await reader == Batch(4, ["c"], False)

        # a terminal event is never pushed
        pusher.accept = True
        await asyncio.sleep(0.1)
        reader = asyncio.ensure_future(broker.read(m.stream_id, 4, timeout=5, push=pusher))
        await asyncio.sleep(0.01)
        broker.append(m.stream_id, "d")
        broker.append(m.stream_id, COMPLETE)
        assert await reader == Batch(6, [COMPLETE], True)
        # a reader that is behind is not pushed to: it reads what it missed
        assert await broker.read(m.stream_id, 2, timeout=5, push=pusher) == Batch(
            3, ["b", "c", "d", COMPLETE], True
        )

    run(kind, body)
    assert pusher.taken == [(2, "a"), (3, "b"), (5, "d")]


def test_redis_readers_in_other_processes_read_from_redis(redis_url: str) -> None:
    pusher = Pusher()

    async def main() -> None:
        generating, elsewhere = RedisBroker(redis_url, 60), RedisBroker(redis_url, 60)
        await generating.start(lambda *_: None)
        await elsewhere.start(lambda *_: None)
        try:
            m = meta()
            await generating.create(m)
            reader = asyncio.ensure_future(elsewhere.read(m.stream_id, 0, timeout=5, push=pusher))
            await asyncio.sleep(0.05)
            generating.append(m.stream_id, "a")
            assert await reader == Batch(1, ["a"], False)
        finally:
            await generating.aclose()
            await elsewhere.aclose()

    asyncio.run(main())
    assert pusher.taken == []


def test_memory_a_reader_without_push_is_woken_for_every_token() -> None:
    broker = MemoryBroker(60.0)

    async def main() -> None:
        m = meta()
        await broker.create(m)
        reader = asyncio.ensure_future(broker.read(m.stream_id, 0, timeout=5))
        await asyncio.sleep(0)
        broker.append(m.stream_id, "a")
        assert await reader == Batch(1, ["a"], False)

    asyncio.run(main())


@KINDS
def test_notices_of_a_user_and_their_active_streams(kind: str) -> None:
    user = f"u_{uuid.uuid4().hex}"

    async def body(broker: Broker) -> None:
        cursor, none = await broker.read_notices(user, None, 0)
        assert none == []
        assert await broker.active(user) == []
        first = StreamMeta(f"s_{uuid.uuid4().hex}", user, "c_1", "m_1", "demo/markdown")
        second = StreamMeta(f"s_{uuid.uuid4().hex}", user, None, "m_2", "demo/markdown")
        other = StreamMeta(f"s_{uuid.uuid4().hex}", "someone else", "c_9", "m_9", "demo")
        waiting = asyncio.ensure_future(broker.read_notices(user, cursor, 5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        for m in (first, second, other):
            await broker.create(m)
        cursor, notices = await waiting  # woken by the first start
        while len(notices) < 2:
            cursor, more = await broker.read_notices(user, cursor, 2)
            notices += more
        assert notices == [
            {
                "type": "stream",
                "state": "started",
                "streamId": m.stream_id,
                "conversationId": m.conversation_id,
                "messageId": m.message_id,
                "model": m.model,
            }
            for m in (first, second)
        ]
        assert sorted(a.stream_id for a in await broker.active(user)) == sorted(
            [first.stream_id, second.stream_id]
        )
        broker.append(first.stream_id, "hi")
        broker.append(first.stream_id, COMPLETE)
        await broker.discard(second.stream_id)
        ends: list[dict[str, object]] = []
        while len(ends) < 2:
            cursor, more = await broker.read_notices(user, cursor, 2)
            ends += more
        # (in no particular order across streams: Redis writes a terminal event later)
        assert sorted((n["state"], n["streamId"]) for n in ends) == sorted(
            [("ended", first.stream_id), ("ended", second.stream_id)]
        )
        assert await broker.active(user) == []
        # notify adds to the same log; nothing waits past the timeout
        await broker.notify(user, {"control": "f_1", "follow": {}, "unfollow": []})
        cursor, more = await broker.read_notices(user, cursor, 2)
        assert more == [{"control": "f_1", "follow": {}, "unfollow": []}]
        started = time.monotonic()
        assert await broker.read_notices(user, cursor, 0.2) == (cursor, [])
        assert time.monotonic() - started >= 0.15

    run(kind, body)


@KINDS
def test_open_feeds_are_known_by_their_user(kind: str) -> None:
    async def body(broker: Broker) -> None:
        feed = f"f_{uuid.uuid4().hex}"
        assert await broker.feed_user(feed) is None
        await broker.open_feed(feed, "alice")
        assert await broker.feed_user(feed) == "alice"
        await broker.close_feed(feed)
        assert await broker.feed_user(feed) is None

    run(kind, body)
