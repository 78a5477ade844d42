"""Per-user limits on starting replies: a rate (``rate_limit``, e.g. ``"60/minute"``) and a
cap on replies streaming at once (``max_streams_per_user``).

With Redis both hold across processes: the rate uses the ``limits`` library's moving
window in Redis, the concurrent count uses the leases of the Redis broker. Without Redis
they hold in this process, which is then the only one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string
from redis.exceptions import RedisError

from runnel.errors import Overloaded, RateLimited

NAMESPACE = "runnel-replies"


class Quotas:
    def __init__(
        self,
        rate_limit: str | None,
        max_streams_per_user: int,
        streams_of: Callable[[str], Awaitable[int]],
        redis_url: str | None = None,
    ) -> None:
        self._rate: RateLimitItem | None = parse_rate(rate_limit) if rate_limit else None
        self._cap = max_streams_per_user
        self._streams_of = streams_of
        if redis_url:
            storage = storage_from_string(f"async+{redis_url}", implementation="redispy")
        else:
            storage = storage_from_string("async+memory://")
        self._limiter = MovingWindowRateLimiter(storage)

    async def admit(self, user_id: str) -> None:
        """Raise ``RateLimited`` (429, with Retry-After) when ``user_id`` may not start a reply."""
        if self._cap and await self._streams_of(user_id) >= self._cap:
            raise RateLimited(
                f"this server's limit: at most {self._cap} replies streaming at once per user",
                retry_after=1.0,
            )
        if self._rate is None:
            return
        try:
            admitted = await self._limiter.hit(self._rate, NAMESPACE, user_id)
            stats = (
                None
                if admitted
                else await self._limiter.get_window_stats(self._rate, NAMESPACE, user_id)
            )
        except (RedisError, OSError) as exc:
            raise Overloaded("the rate limiter (Redis) is unavailable; try again shortly") from exc
        if stats is not None:
            raise RateLimited(
                f"this server's limit: {self._rate.amount} replies per "
                f"{self._rate.multiples} {self._rate.GRANULARITY.name}(s)",
                retry_after=max(1.0, stats.reset_time - time.time()),
            )


def parse_rate(text: str) -> RateLimitItem:
    try:
        return parse(text)
    except (ValueError, ConfigurationError) as exc:
        raise ValueError(f"rate_limit must look like '60/minute', not {text!r}") from exc
