"""The broker interface: one append-only event log per stream, readable from any id.

Event ids are log positions: the first event of a stream has id 1. The generating process
is the only writer of a stream; ``append`` never blocks (an implementation that talks to
a server batches the writes). Readers call ``read`` in a loop at their own pace.

Beside the stream logs, each user has a short log of *notices* (``read_notices``): the
broker writes one when a stream of the user is created and one when it ends (its
terminal event, or discarded), and ``notify`` adds others (the live feed's follow
requests). Live feeds (``api/live.py``) read them; they are derived from the stream logs,
not a record of their own, and only the newest ``NOTICES_KEPT`` are kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


Notice = dict[str, Any]
"""A JSON object: ``{"type": "stream", "state": "started"|"ended", "streamId",
"conversationId", "messageId", "model"}`` from the broker, or whatever ``notify`` was given
(a feed's follow request, a reply's suggestions, a conversation's new title)."""

NOTICES_KEPT = 1000  # per user; a feed reads them as they come, so few are ever behind


def stream_notice(state: str, meta: StreamMeta) -> Notice:
    return {
        "type": "stream",
        "state": state,
        "streamId": meta.stream_id,
        "conversationId": meta.conversation_id,
        "messageId": meta.message_id,
        "model": meta.model,
    }


Push = Callable[[str, int], bool]
"""Offered each token (its text and id) appended while a reader waits in ``read``; True
when the reader took it (wrote it out) and goes on waiting."""


class Waiter:
    """A reader waiting for the next event of a stream (``wait``): woken by ``future``, or
    handed tokens by ``push`` while it has everything up to ``after`` (``offer``)."""

    __slots__ = ("after", "future", "push")

    def __init__(self, after: int, future: asyncio.Future[None], push: Push | None) -> None:
        self.after = after
        self.future = future
        self.push = push


def offer(waiters: list[Waiter], event_id: int, token: str | None) -> None:
    """Event ``event_id`` (``token``: its text, when it is one) is available: hand it to the
    waiters whose push takes it, wake the others. ``waiters`` keeps those still waiting."""
    kept: list[Waiter] = []
    for waiter in waiters:
        if waiter.future.done():
            continue
        if (
            token is not None
            and waiter.push is not None
            and waiter.after == event_id - 1
            and waiter.push(token, event_id)
        ):
            waiter.after = event_id
            kept.append(waiter)
        else:
            waiter.future.set_result(None)
    waiters[:] = kept


async def wait(waiters: list[Waiter], after: int, timeout: float, push: Push | None) -> int:
    """Wait among ``waiters``, having everything up to ``after``, until ``offer`` wakes
    this reader or ``timeout`` s pass. Returns the id it is at then: ``after``, moved on
    by each token its ``push`` took."""
    waiter = Waiter(after, asyncio.get_running_loop().create_future(), push)
    waiters.append(waiter)
    timer = asyncio.get_running_loop().call_later(timeout, _wake, waiter.future)
    try:
        await waiter.future
    finally:
        timer.cancel()
        if waiter in waiters:
            waiters.remove(waiter)
    return waiter.after


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
        ``push`` instead of returning them (both do, to readers in the generating process;
        Redis once the token is written there): each one ``push`` takes moves the reader
        on, and the batch returned starts after the last of them (``first_id`` says
        where)."""

    async def discard(self, stream_id: str) -> None:
        """Forget a stream that never started."""

    async def request_cancel(self, stream_id: str, kept_through: int | None) -> None:
        """Ask the process generating ``stream_id`` (wherever it runs) to stop it."""

    async def active(self, user_id: str) -> list[StreamMeta]:
        """The user's streams generating now (in every process)."""

    async def read_notices(
        self, user_id: str, after: str | None, timeout: float
    ) -> tuple[str, list[Notice]]:
        """The user's notices after the cursor ``after``, waiting up to ``timeout`` s for one;
        with the cursor of the last one returned. ``after=None`` asks for none: the cursor
        of the newest notice, to read from there on."""

    async def notify(self, user_id: str, notice: Notice) -> None:
        """Add a notice to the user's log."""

    async def open_feed(self, feed_id: str, user_id: str) -> None:
        """Record (or keep recording: call it again within a minute) that a live feed of
        ``user_id`` is open."""

    async def feed_user(self, feed_id: str) -> str | None:
        """The user of an open live feed, or None."""

    async def close_feed(self, feed_id: str) -> None:
        """The feed closed."""

    async def ping(self) -> bool:
        """Whether the broker is reachable."""

    async def aclose(self) -> None:
        """Release connections and tasks."""
