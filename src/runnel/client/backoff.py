"""How long a reply waits before it reconnects to its stream.

The first reconnect after a connection that was delivering events is immediate: a dropped
connection is usually one bad connection (a proxy's idle timeout, a network switch), and
the reader is waiting mid-sentence. Every further attempt in a row waits a random time up
to ``base · 2ⁿ⁻¹`` capped at ``cap`` — exponential, with full jitter, so that the readers
of a server that went away do not all come back at the same instant. ``base`` is the
server's ``retry:`` (it knows its load), else ``Backoff.base``; a ``Retry-After`` on a
refused reconnect is waited for too, up to ``cap``. After ``attempts`` attempts in a row
that brought nothing the reply gives up with ``StreamLost``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``base`` and ``cap`` in seconds; ``rng`` for a reproducible jitter."""

    base: float = 0.5
    cap: float = 5.0
    attempts: int = 8
    rng: random.Random = field(default_factory=random.Random)

    def delay(
        self, attempt: int, server_ms: int | None = None, retry_after: float | None = None
    ) -> float:
        """Seconds to wait before attempt ``attempt`` (0 is the first in a row)."""
        wait = 0.0
        if attempt > 0:
            base = self.base if server_ms is None else server_ms / 1000
            wait = self.rng.uniform(0, min(self.cap, base * 2 ** (attempt - 1)))
        if retry_after is not None:
            wait = max(wait, min(self.cap, retry_after))
        return wait
