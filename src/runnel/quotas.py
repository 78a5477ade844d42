"""Per-user limits on starting replies: replies streaming at once (``max_streams_per_user``),
a rate of messages (``rate_limit``, e.g. ``"60/minute"``) and output tokens per UTC day
(``output_tokens_per_day``). An account may carry its own values (``Limits``, set by an
admin), which replace the server's; 0 means no limit.

With Redis the first two hold across processes: the rate uses the ``limits`` library's
moving window in Redis, the concurrent count uses the leases of the Redis broker. Without
Redis they hold in this process, which is then the only one. Output tokens are counted in
the store (one upsert per finished reply, only while a daily limit applies to its user),
so they hold everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from limits import RateLimitItem, RateLimitItemPerMinute, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string
from redis.exceptions import RedisError

from runnel.accounts.records import Limits
from runnel.errors import Overloaded, RateLimited

NAMESPACE = "runnel-replies"
DAY = 86400


def today() -> int:
    """Days since 1970-01-01, UTC."""
    return int(time.time() // DAY)


class Quotas:
    def __init__(
        self,
        rate_limit: str | None,
        max_streams_per_user: int,
        output_tokens_per_day: int,
        streams_of: Callable[[str], Awaitable[int]],
        tokens_of: Callable[[str, int], Awaitable[int]],
        redis_url: str | None = None,
    ) -> None:
        self._rate: RateLimitItem | None = parse_rate(rate_limit) if rate_limit else None
        self._cap = max_streams_per_user
        self._daily = output_tokens_per_day
        self._streams_of = streams_of
        self._tokens_of = tokens_of
        if redis_url:
            storage = storage_from_string(f"async+{redis_url}", implementation="redispy")
        else:
            storage = storage_from_string("async+memory://")
        self._limiter = MovingWindowRateLimiter(storage)

    def daily_tokens(self, limits: Limits) -> int:
        """The output tokens per day allowed to a user with ``limits`` (0: no limit)."""
        return self._daily if limits.output_tokens_per_day is None else limits.output_tokens_per_day

    async def admit(self, user_id: str, limits: Limits | None = None) -> None:
        """Raise ``RateLimited`` (429, with Retry-After, naming the limit) when ``user_id``
        may not start a reply."""
        limits = limits or Limits()
        cap = self._cap if limits.max_streams is None else limits.max_streams
        if cap and await self._streams_of(user_id) >= cap:
            raise RateLimited(
                f"this server's limit: at most {cap} replies streaming at once per user",
                retry_after=1.0,
            )
        daily = self.daily_tokens(limits)
        if daily and await self._tokens_of(user_id, today()) >= daily:
            raise RateLimited(
                f"this server's limit: {daily} output tokens per day for your account",
                retry_after=max(1.0, DAY - time.time() % DAY),
            )
        rate = self._rate
        if limits.messages_per_minute is not None:
            rate = (
                RateLimitItemPerMinute(limits.messages_per_minute)
                if limits.messages_per_minute
                else None
            )
        if rate is None:
            return
        try:
            admitted = await self._limiter.hit(rate, NAMESPACE, user_id)
            stats = (
                None if admitted else await self._limiter.get_window_stats(rate, NAMESPACE, user_id)
            )
        except (RedisError, OSError) as exc:
            raise Overloaded("the rate limiter (Redis) is unavailable; try again shortly") from exc
        if stats is not None:
            raise RateLimited(
                f"this server's limit: {rate.amount} messages per "
                f"{rate.multiples} {rate.GRANULARITY.name}(s)",
                retry_after=max(1.0, stats.reset_time - time.time()),
            )


def parse_rate(text: str) -> RateLimitItem:
    try:
        return parse(text)
    except (ValueError, ConfigurationError) as exc:
        raise ValueError(f"rate_limit must look like '60/minute', not {text!r}") from exc
