"""The Redis Streams broker: every process can read every stream, and cancel any of them.

One Redis stream per generation, ``runnel:s:<id>``, whose entry ids are ``0-<n>``: the SSE
id ``n`` is the entry id, so resuming is ``XREAD`` after ``0-<n>``. The stream's metadata
lives in the hash ``runnel:m:<id>`` (with ``last`` = the terminal event's id once it
ended). The generating process is the only writer: ``append`` numbers the event and
queues it, and one writer task sends everything queued in one pipeline — tokens that
arrive faster than Redis round trips go in batches. After the terminal event both keys
expire after the retention time.

A reader in the generating process that has everything written so far does not poll Redis
for the next event: it waits in this process, and once the writer's pipeline has stored a
token, the writer hands it to the reader's ``push`` (any other event wakes the reader,
which reads it from Redis). Readers never see an event before Redis has it.

Each user's notices (``broker.base``) are the Redis stream ``runnel:n:<user>`` (capped at
about ``NOTICES_KEPT`` entries; the cursor is the entry id), written in the same pipeline
as the stream's first metadata and its terminal event. An open live feed is the key
``runnel:f:<feed>`` (its user), renewed by the feed while it lives.

Across processes: cancel requests travel on the pub/sub channel ``runnel:cancel``; a
generating process renews a lease for each of its streams in the sorted set
``runnel:leases`` (score = expiry time), and any process may interrupt a stream whose
lease expired — its generator died.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
from runnel.errors import Overloaded
from runnel.events import TERMINAL, Error, Event, from_wire, to_wire

log = logging.getLogger(__name__)

LEASES = "runnel:leases"
CANCEL = "runnel:cancel"
# keys of a stream whose generator vanished without a terminal event still expire
ORPHAN_TTL = 24 * 3600
CancelHandler = Callable[[str, int | None], object]
# a generator renews its leases every LEASE_INTERVAL s; one that stops is presumed dead
# LEASE_TTL s after its last renewal
LEASE_TTL = 6.0
LEASE_INTERVAL = 2.0
READ_MARGIN = 10.0
CANCEL_TTL = 120
WRITE_RETRY_MIN = 0.05
WRITE_RETRY_MAX = 2.0
FEED_TTL = 60  # s: an open feed renews its key well within this


def _stream(stream_id: str) -> str:
    return f"runnel:s:{stream_id}"


def _meta(stream_id: str) -> str:
    return f"runnel:m:{stream_id}"


def _user(user_id: str) -> str:
    return f"runnel:u:{user_id}"


def _cancel(stream_id: str) -> str:
    return f"runnel:c:{stream_id}"


def _notices(user_id: str) -> str:
    return f"runnel:n:{user_id}"


def _feed(feed_id: str) -> str:
    return f"runnel:f:{feed_id}"


def _add_notice(pipe: Any, user_id: str, notice: Notice) -> None:
    key = _notices(user_id)
    pipe.xadd(key, {b"n": orjson.dumps(notice)}, maxlen=NOTICES_KEPT, approximate=True)
    pipe.expire(key, ORPHAN_TTL)


def _encode(event: Event) -> bytes:
    if type(event) is str:
        return b'{"type":"token","content":' + orjson.dumps(event) + b"}"
    return orjson.dumps(to_wire(event))


class RedisBroker:
    def __init__(
        self,
        url: str,
        retention: float,
        max_connections: int = 4096,
        longest_wait: float = 15.0,
    ) -> None:
        self.retention = max(1, round(retention))
        # redis-py's type hints cover bytes and str replies at once; this module reads bytes
        self._redis: Any = redis.Redis.from_url(
            url,
            socket_connect_timeout=2,
            # a Redis that hangs fails a command after this long instead of holding it forever
            socket_timeout=longest_wait + READ_MARGIN,
            health_check_interval=15,
            # every waiting reader holds one connection in XREAD BLOCK
            max_connections=max_connections,
            # a pooled connection that died with a Redis restart is retried on a new one
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            retry_on_error=[ConnectionError, RedisTimeoutError],
        )
        self._longest_wait = longest_wait
        self._next: dict[str, int] = {}
        self._owners: dict[str, StreamMeta] = {}  # the streams generated here
        # (stream, id, payload, terminal, the token's text or None)
        self._pending: list[tuple[str, int, bytes, bool, str | None]] = []
        # streams generated here: the last event id that Redis confirmed, and who waits
        self._written: dict[str, int] = {}
        self._waiters: dict[str, list[Waiter]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._on_cancel: CancelHandler | None = None

    async def start(self, on_cancel: CancelHandler) -> None:
        """Start the writer and the cancel listener."""
        self._on_cancel = on_cancel
        self._tasks = [
            asyncio.create_task(self._writer(), name="runnel-redis-writer"),
            asyncio.create_task(self._listen(), name="runnel-redis-cancel"),
        ]

    # the log

    async def create(self, meta: StreamMeta) -> None:
        key = _meta(meta.stream_id)
        fields = {
            "user": meta.user_id,
            "conversation": meta.conversation_id or "",
            "message": meta.message_id,
            "model": meta.model,
        }
        try:
            expiry = await self._now() + LEASE_TTL
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, ORPHAN_TTL)
                pipe.zadd(LEASES, {meta.stream_id: expiry})
                pipe.zadd(_user(meta.user_id), {meta.stream_id: expiry})
                pipe.expire(_user(meta.user_id), ORPHAN_TTL)
                _add_notice(pipe, meta.user_id, stream_notice("started", meta))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Overloaded("the event log (Redis) is unavailable; try again shortly") from exc
        self._next[meta.stream_id] = 0
        self._written[meta.stream_id] = 0
        self._owners[meta.stream_id] = meta

    def append(self, stream_id: str, event: Event) -> int:
        event_id = self._next[stream_id] + 1
        terminal = isinstance(event, TERMINAL)
        if terminal:
            del self._next[stream_id]
        else:
            self._next[stream_id] = event_id
        token = event if type(event) is str else None
        self._pending.append((stream_id, event_id, _encode(event), terminal, token))
        self._wake.set()
        return event_id

    async def _writer(self) -> None:
        delay = WRITE_RETRY_MIN
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            pipe = self._redis.pipeline(transaction=False)
            for stream_id, event_id, payload, terminal, _ in batch:
                pipe.xadd(_stream(stream_id), {b"e": payload}, id=f"0-{event_id}")
                if terminal:
                    pipe.hset(_meta(stream_id), "last", event_id)
                    pipe.expire(_stream(stream_id), self.retention)
                    pipe.expire(_meta(stream_id), self.retention)
                    pipe.zrem(LEASES, stream_id)
                    owner = self._owners.pop(stream_id, None)
                    if owner is not None:
                        pipe.zrem(_user(owner.user_id), stream_id)
                        _add_notice(pipe, owner.user_id, stream_notice("ended", owner))
                elif event_id == 1:
                    pipe.expire(_stream(stream_id), ORPHAN_TTL)
            try:
                results = await pipe.execute(raise_on_error=False)
                delay = WRITE_RETRY_MIN
                refused = False
                for result in results:
                    # on a retry, entries that did arrive the first time are refused: fine
                    if isinstance(result, ResponseError) and "equal or smaller" not in str(result):
                        log.error("Redis refused a write: %s", result)
                        refused = True
                self._written_to_redis(batch, push=not refused)
            except (RedisError, OSError) as exc:
                # keep the order and retry: readers must never see a gap
                log.error("writing %d events to Redis failed (%s); retrying", len(batch), exc)
                # readers waiting here go to Redis too, and fail as readers elsewhere do
                for waiters in self._waiters.values():
                    offer(waiters, 0, None)
                self._pending = batch + self._pending
                await asyncio.sleep(delay)
                delay = min(delay * 2, WRITE_RETRY_MAX)
                self._wake.set()

    def _written_to_redis(
        self, batch: list[tuple[str, int, bytes, bool, str | None]], *, push: bool
    ) -> None:
        """The writer stored ``batch``: hand its tokens to the waiting readers of this
        process (wake them for anything else, or for everything unless ``push``)."""
        for stream_id, event_id, _, terminal, token in batch:
            if terminal:
                self._written.pop(stream_id, None)
            elif stream_id in self._written:
                self._written[stream_id] = event_id
            waiters = self._waiters.get(stream_id)
            if waiters:
                offer(waiters, event_id, token if push else None)

    async def meta(self, stream_id: str) -> StreamMeta | None:
        try:
            fields = await self._redis.hgetall(_meta(stream_id))
        except (RedisError, OSError) as exc:
            raise Overloaded("the event log (Redis) is unavailable; try again shortly") from exc
        if b"user" not in fields:  # unknown, expired, or lost with a Redis restart
            return None
        return StreamMeta(
            stream_id,
            fields[b"user"].decode(),
            fields[b"conversation"].decode() or None,
            fields[b"message"].decode(),
            fields[b"model"].decode(),
        )

    async def read(
        self,
        stream_id: str,
        after: int,
        timeout: float,
        limit: int = 512,
        push: Push | None = None,
    ) -> Batch | None:
        try:
            if push is not None and timeout > 0 and self._written.get(stream_id) == after:
                # generated here, and the reader has all that Redis has: wait for the writer
                wait = min(timeout, self._longest_wait)
                after = await self._wait_here(stream_id, after, wait, push)
                timeout = 0  # what woke the reader is in Redis now (or nothing, at the timeout)
            return await self._read(stream_id, after, timeout, limit)
        except (RedisError, OSError) as exc:
            raise Overloaded("the event log (Redis) is unavailable; try again shortly") from exc

    async def _wait_here(self, stream_id: str, after: int, timeout: float, push: Push) -> int:
        """Wait in this process for the next event of ``stream_id`` to be written, taking
        the tokens ``push`` takes; returns the id the reader is at then."""
        waiters = self._waiters.setdefault(stream_id, [])
        try:
            return await wait(waiters, after, timeout, push)
        finally:
            if not waiters and self._waiters.get(stream_id) is waiters:
                del self._waiters[stream_id]

    async def _read(self, stream_id: str, after: int, timeout: float, limit: int) -> Batch | None:
        key = _stream(stream_id)
        entries: list[Any]
        if timeout <= 0:
            entries = await self._redis.xrange(key, min=f"0-{after + 1}", count=limit)
        else:
            wait = min(timeout, self._longest_wait)
            found = await self._redis.xread(
                {key: f"0-{after}"}, count=limit, block=max(1, int(wait * 1000))
            )
            entries = found[0][1] if found else []
        if entries:
            events = [from_wire(orjson.loads(fields[b"e"])) for _, fields in entries]
            first = int(entries[0][0].split(b"-")[1])
            return Batch(first, events, isinstance(events[-1], TERMINAL))
        user, last = await self._redis.hmget(_meta(stream_id), ["user", "last"])
        if user is None:
            return None
        return Batch(after + 1, [], last is not None and after >= int(last))

    async def discard(self, stream_id: str) -> None:
        self._next.pop(stream_id, None)
        self._written.pop(stream_id, None)
        owner = self._owners.pop(stream_id, None)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(_stream(stream_id), _meta(stream_id))
                pipe.zrem(LEASES, stream_id)
                if owner is not None:
                    pipe.zrem(_user(owner.user_id), stream_id)
                    _add_notice(pipe, owner.user_id, stream_notice("ended", owner))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("discarding a stream in Redis failed (%s)", exc)

    # across processes

    async def request_cancel(self, stream_id: str, kept_through: int | None) -> None:
        """Publish the request, and leave it in a key the generator also checks with its
        leases — so a listener that was reconnecting does not miss it."""
        payload = orjson.dumps([stream_id, kept_through])
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(_cancel(stream_id), payload, ex=CANCEL_TTL)
                pipe.publish(CANCEL, payload)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Overloaded("the event log (Redis) is unavailable; try again shortly") from exc

    async def pending_cancels(self, stream_ids: list[str]) -> list[tuple[str, int | None]]:
        """Cancel requests left for these streams (see ``request_cancel``)."""
        if not stream_ids:
            return []
        found = await self._redis.mget([_cancel(s) for s in stream_ids])
        requests = []
        for raw in found:
            if raw is not None:
                stream_id, kept_through = orjson.loads(raw)
                requests.append((str(stream_id), kept_through))
        return requests

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CANCEL)
                    async for message in pubsub.listen():
                        if message["type"] == "message" and self._on_cancel is not None:
                            self._dispatch_cancel(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("the cancel channel failed (%s); reconnecting", exc)
                await asyncio.sleep(1)

    async def _now(self) -> float:
        """Redis's clock: leases compare times written by different hosts."""
        seconds, micros = await self._redis.time()
        return float(seconds) + float(micros) / 1e6

    def _dispatch_cancel(self, data: bytes) -> None:
        try:
            stream_id, kept_through = orjson.loads(data)
            assert self._on_cancel is not None
            self._on_cancel(str(stream_id), kept_through if isinstance(kept_through, int) else None)
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            log.warning("ignored a malformed cancel request (%s)", exc)

    async def renew(self, stream_ids: list[str], ttl: float = LEASE_TTL) -> None:
        """Extend the leases of the streams this process generates."""
        if not stream_ids:
            return
        expiry = await self._now() + ttl
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(LEASES, dict.fromkeys(stream_ids, expiry))
        for stream_id in stream_ids:
            owner = self._owners.get(stream_id)
            if owner is not None:
                pipe.zadd(_user(owner.user_id), {stream_id: expiry})
        await pipe.execute()

    async def user_streams(self, user_id: str) -> int:
        """How many streams of ``user_id`` are generating, in any process."""
        try:
            count: int = await self._redis.zcount(_user(user_id), await self._now(), "+inf")
        except (RedisError, OSError) as exc:
            raise Overloaded("the event log (Redis) is unavailable; try again shortly") from exc
        return count

    async def user_stream_ids(self, user_id: str) -> list[str]:
        """The streams of ``user_id`` generating now, in any process."""
        try:
            found = await self._redis.zrangebyscore(_user(user_id), await self._now(), "+inf")
        except (RedisError, OSError) as exc:
            raise Overloaded("the event log (Redis) is unavailable; try again shortly") from exc
        return [item.decode() for item in found]

    # notices and feeds

    async def active(self, user_id: str) -> list[StreamMeta]:
        found = []
        for stream_id in await self.user_stream_ids(user_id):
            meta = await self.meta(stream_id)
            if meta is not None:
                found.append(meta)
        return found

    async def read_notices(
        self, user_id: str, after: str | None, timeout: float
    ) -> tuple[str, list[Notice]]:
        key = _notices(user_id)
        try:
            if after is None:
                newest = await self._redis.xrevrange(key, count=1)
                return (newest[0][0].decode() if newest else "0-0"), []
            block = max(1, int(min(timeout, self._longest_wait) * 1000)) if timeout > 0 else None
            found = await self._redis.xread({key: after}, block=block)
        except (RedisError, OSError) as exc:
            raise Overloaded("the event log (Redis) is unavailable; try again shortly") from exc
        entries = found[0][1] if found else []
        if not entries:
            return after, []
        return entries[-1][0].decode(), [orjson.loads(fields[b"n"]) for _, fields in entries]

    async def notify(self, user_id: str, notice: Notice) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                _add_notice(pipe, user_id, notice)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Overloaded("the event log (Redis) is unavailable; try again shortly") from exc

    async def open_feed(self, feed_id: str, user_id: str) -> None:
        try:
            await self._redis.set(_feed(feed_id), user_id, ex=FEED_TTL)
        except (RedisError, OSError) as exc:
            raise Overloaded("the event log (Redis) is unavailable; try again shortly") from exc

    async def feed_user(self, feed_id: str) -> str | None:
        try:
            found = await self._redis.get(_feed(feed_id))
        except (RedisError, OSError) as exc:
            raise Overloaded("the event log (Redis) is unavailable; try again shortly") from exc
        return found.decode() if found is not None else None

    async def close_feed(self, feed_id: str) -> None:
        try:
            await self._redis.delete(_feed(feed_id))
        except (RedisError, OSError) as exc:
            log.warning("closing a feed in Redis failed (%s)", exc)

    async def alive(self, stream_id: str) -> bool:
        try:
            score = await self._redis.zscore(LEASES, stream_id)
            return score is not None and score > await self._now()
        except (RedisError, OSError) as exc:
            raise Overloaded("the event log (Redis) is unavailable; try again shortly") from exc

    async def expired(self) -> list[str]:
        found = await self._redis.zrangebyscore(LEASES, "-inf", await self._now())
        return [item.decode() for item in found]

    async def interrupt(self, stream_id: str, error: Error) -> bool:
        """End a stream whose generator died: append ``error`` after its last event.

        Only one process wins (``SET NX``); returns whether this one did."""
        if not await self._redis.set(f"runnel:reap:{stream_id}", 1, nx=True, ex=60):
            return False
        newest = await self._redis.xrevrange(_stream(stream_id), count=1)
        last = int(newest[0][0].split(b"-")[1]) if newest else 0
        if newest and isinstance(from_wire(orjson.loads(newest[0][1][b"e"])), TERMINAL):
            await self._redis.zrem(LEASES, stream_id)
            return False
        meta = await self.meta(stream_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(_stream(stream_id), {b"e": _encode(error)}, id=f"0-{last + 1}")
            pipe.hset(_meta(stream_id), "last", last + 1)
            pipe.expire(_stream(stream_id), self.retention)
            pipe.expire(_meta(stream_id), self.retention)
            pipe.zrem(LEASES, stream_id)
            if meta is not None:
                pipe.zrem(_user(meta.user_id), stream_id)
                _add_notice(pipe, meta.user_id, stream_notice("ended", meta))
            await pipe.execute()
        return True

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        if self._pending:
            self._wake.set()
            await asyncio.sleep(0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()
