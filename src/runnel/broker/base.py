"""The broker interface: one append-only event log per stream, readable from any id.

Event ids are log positions: the first event of a stream has id 1. The generating process
is the only writer of a stream; ``append`` never blocks (an implementation that talks to
a server batches the writes). Readers call ``read`` in a loop at their own pace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from runnel.events import Event


@dataclass(frozen=True, slots=True)
class StreamMeta:
    stream_id: str
    user_id: str
    conversation_id: str | None
    message_id: str
    model: str


@dataclass(frozen=True, slots=True)
class Batch:
    """Events ``first_id``, ``first_id + 1``, … of a stream; ``finished`` when the stream has
    ended and these events reach its end (the reader has everything)."""

    first_id: int
    events: Sequence[Event]
    finished: bool


Push = Callable[[str, int], bool]
"""Offered each token (its text and id) appended while a reader waits in ``read``; True
when the reader took it (wrote it out) and goes on waiting."""


class Broker(Protocol):
    async def create(self, meta: StreamMeta) -> None:
        """Start the log of a new stream."""

    def append(self, stream_id: str, event: Event) -> int:
        """Append an event; returns its id. After a terminal event the log is closed and
        kept for the retention time."""

    async def meta(self, stream_id: str) -> StreamMeta | None:
        """The stream's metadata, or None when it is unknown or expired."""

    async def read(
        self,
        stream_id: str,
        after: int,
        timeout: float,
        limit: int = 512,
        push: Push | None = None,
    ) -> Batch | None:
        """Up to ``limit`` events with id > ``after``, waiting up to ``timeout`` s for one
        (an empty batch then). None when the stream is unknown or expired.

        With ``push``, a broker may hand the tokens appended while the reader waits to
        ``push`` instead of returning them (the in-process broker does, to readers in the
        generating process): each one ``push`` takes moves the reader on, and the batch
        returned starts after the last of them (``first_id`` says where)."""

    async def discard(self, stream_id: str) -> None:
        """Forget a stream that never started."""

    async def request_cancel(self, stream_id: str, kept_through: int | None) -> None:
        """Ask the process generating ``stream_id`` (wherever it runs) to stop it."""

    async def ping(self) -> bool:
        """Whether the broker is reachable."""

    async def aclose(self) -> None:
        """Release connections and tasks."""
