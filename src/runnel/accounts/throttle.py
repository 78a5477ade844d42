"""Login throttling: failed sign-ins counted per username and per client address.

Both are moving windows (the ``limits`` library; in Redis when the server has one, so
they hold across processes). While either window is full, sign-in answers 429 with the
time until it has room again — even with the right password, so guessing gains nothing.
The per-username window is short (``login_limit_account``, 10 per minute by default):
an attacker elsewhere can keep one account's sign-in refused only while they keep
failing at that rate, and for at most a minute after they stop. The per-address window
(``login_limit_address``) is longer and bounds how fast one client guesses across
accounts. A successful sign-in clears its username's window.
"""

from __future__ import annotations

import time

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string
from redis.exceptions import RedisError

from runnel.errors import Overloaded, RateLimited

NAMESPACE = "runnel-login"


class LoginThrottle:
    def __init__(self, per_account: str, per_address: str, redis_url: str | None) -> None:
        self._account = parse_window(per_account, "login_limit_account")
        self._address = parse_window(per_address, "login_limit_address")
        if redis_url:
            storage = storage_from_string(f"async+{redis_url}", implementation="redispy")
        else:
            storage = storage_from_string("async+memory://")
        self._limiter = MovingWindowRateLimiter(storage)

    async def check(self, username: str, address: str) -> None:
        """Raise ``RateLimited`` while either window is full."""
        try:
            for item, key, what in self._windows(username, address):
                if not await self._limiter.test(item, NAMESPACE, key):
                    stats = await self._limiter.get_window_stats(item, NAMESPACE, key)
                    raise RateLimited(
                        f"too many failed sign-ins {what}; try again later",
                        retry_after=max(1.0, stats.reset_time - time.time()),
                    )
        except (RedisError, OSError) as exc:
            raise Overloaded("the sign-in limiter (Redis) is unavailable") from exc

    async def failed(self, username: str, address: str) -> None:
        try:
            for item, key, _ in self._windows(username, address):
                await self._limiter.hit(item, NAMESPACE, key)
        except (RedisError, OSError) as exc:
            raise Overloaded("the sign-in limiter (Redis) is unavailable") from exc

    async def succeeded(self, username: str) -> None:
        try:
            await self._limiter.clear(self._account, NAMESPACE, _account_key(username))
        except (RedisError, OSError) as exc:
            raise Overloaded("the sign-in limiter (Redis) is unavailable") from exc

    def _windows(self, username: str, address: str) -> list[tuple[RateLimitItem, str, str]]:
        return [
            (self._account, _account_key(username), "for this account"),
            (self._address, f"address:{address}", "from this address"),
        ]


def _account_key(username: str) -> str:
    return f"account:{username.lower()}"


def parse_window(value: str, name: str) -> RateLimitItem:
    try:
        return parse(value)
    except (ValueError, ConfigurationError) as exc:
        raise ValueError(f"{name} must look like '10/minute', not {value!r}") from exc
