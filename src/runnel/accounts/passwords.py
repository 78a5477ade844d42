"""Argon2id password hashes (argon2-cffi), computed in worker threads.

A hash takes tens of milliseconds and ``memory_kib`` of memory, so at most
``CONCURRENT_HASHES`` run at once: a burst of logins waits instead of exhausting memory,
and never blocks the event loop. A hash whose parameters differ from the configured ones
is reported by ``verify`` so the caller can store a new one (the parameters can be raised
later without a reset).
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

CONCURRENT_HASHES = 2


class Passwords:
    def __init__(self, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._slots = asyncio.Semaphore(CONCURRENT_HASHES)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> tuple[bool, bool]:
        """``(matches, needs_rehash)``. With no stored hash (an unknown user) a dummy one is
        checked, so that the answer takes as long as for a known user."""
        if stored is None:
            if self._dummy is None:
                self._dummy = await self.hash("a password nobody has")
            stored = self._dummy
            known = False
        else:
            known = True
        async with self._slots:
            matches = await asyncio.to_thread(self._check, stored, password)
        if not (matches and known):
            return False, False
        return True, self._hasher.check_needs_rehash(stored)

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
