"""The live feed's dialect (``GET /api/v1/live``, docs/api.md): many streams in one SSE body.

Parse: which streams a feed follows and from where — the ``streams`` query parameter
(``s_a,s_b:17``) and the body of ``PATCH /api/v1/live/{feedId}``.

Encode: each event of a followed stream is its native JSON object with the stream, its
conversation and the event's id added (``streamId``, ``conversationId``, ``eventId``), as a
``data:`` line with no ``id:`` line (a feed's position is one event id per stream, kept by
the client). Consecutive tokens merge as in the native encoder. Feed-level events: ``feed``
(first: the feed's id and the user's active streams), ``stream`` notices (started/ended),
``gone`` (a followed stream that is unknown, expired or someone else's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from runnel.broker.base import Notice, StreamMeta
from runnel.errors import InvalidRequest
from runnel.events import Event, Status, to_wire
from runnel.sse import merged

MAX_FOLLOWED = 100  # streams named by one request
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def parse_streams(raw: str | None) -> dict[str, int]:
    """``s_a,s_b:17`` → ``{"s_a": 0, "s_b": 17}`` (the last event id already seen)."""
    if not raw:
        return {}
    follows: dict[str, int] = {}
    for item in raw.split(","):
        stream_id, colon, after = item.strip().partition(":")
        follows[_stream_id(stream_id)] = _position(after) if colon else 0
    if len(follows) > MAX_FOLLOWED:
        raise InvalidRequest(f"a feed follows at most {MAX_FOLLOWED} streams per request")
    return follows


def _stream_id(raw: str) -> str:
    if not raw or len(raw) > 64 or not set(raw) <= _ID_CHARS:
        raise InvalidRequest(f"not a stream id: {raw[:64]!r}")
    return raw


def _position(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise InvalidRequest(f"not an event id: {raw[:20]!r}")
    return int(raw)


class FeedChange(BaseModel):
    """The body of ``PATCH /api/v1/live/{feedId}``."""

    model_config = ConfigDict(extra="forbid")

    follow: dict[str, int] = Field(default_factory=dict)
    unfollow: list[str] = Field(default_factory=list)

    def checked(self) -> FeedChange:
        if len(self.follow) + len(self.unfollow) > MAX_FOLLOWED:
            raise InvalidRequest(f"at most {MAX_FOLLOWED} streams per request")
        for stream_id, after in self.follow.items():
            _stream_id(stream_id)
            if after < 0:
                raise InvalidRequest("an event id is a non-negative integer")
        for stream_id in self.unfollow:
            _stream_id(stream_id)
        return self


def control(feed_id: str, change: FeedChange) -> Notice:
    """The notice that carries ``change`` to the feed, wherever it is open."""
    return {"control": feed_id, "follow": change.follow, "unfollow": change.unfollow}


def _frame(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _described(meta: StreamMeta) -> dict[str, Any]:
    return {
        "streamId": meta.stream_id,
        "conversationId": meta.conversation_id,
        "messageId": meta.message_id,
        "model": meta.model,
    }


def opened(feed_id: str, active: Sequence[StreamMeta]) -> bytes:
    """The feed's first event."""
    return _frame({"type": "feed", "feedId": feed_id, "active": [_described(m) for m in active]})


def notice(announced: Notice) -> bytes:
    """A notice of the user's: a stream started or ended, a reply's suggestions came, a
    conversation got its title."""
    return _frame(announced)


def gone(stream_id: str) -> bytes:
    return _frame({"type": "gone", "streamId": stream_id})


class StreamEnvelope:
    """The encoder of one followed stream's events inside the feed."""

    __slots__ = ("_tail", "_token")

    def __init__(self, stream_id: str, conversation_id: str | None) -> None:
        names = orjson.dumps({"streamId": stream_id, "conversationId": conversation_id})
        # ``,"streamId":…,"conversationId":…,"eventId":`` — what follows an event's fields
        self._tail = b"," + names[1:-1] + b',"eventId":'
        self._token = b'data: {"type":"token","content":%s' + self._tail + b"%d}\n\n"

    def token(self, text: str, event_id: int) -> bytes:
        return self._token % (orjson.dumps(text), event_id)

    def encode(self, events: Sequence[Event], first_id: int) -> bytes:
        """``events``, the first of which has id ``first_id``, runs of tokens merged."""
        out: list[bytes] = []
        for event_id, event in merged(events, first_id):
            if type(event) is str:
                out.append(self._token % (orjson.dumps(event), event_id))
            else:
                wire = orjson.dumps(to_wire(event))[:-1]
                # a status event names its stream and conversation already
                tail = b',"eventId":' if type(event) is Status else self._tail
                out.append(b"data: " + wire + tail + b"%d}\n\n" % event_id)
        return b"".join(out)
