"""What the sync and async clients share, so that each of them only does its I/O.

``Calls`` are the native API's requests; ``ReplyState`` is what a reply remembers so that
a new connection picks up after the last event its caller saw; ``answer_to_reconnect``
says what the answer to a reconnect means; ``ReplyView`` is what a reply shows of its
state. No I/O here (httpx2 only for its ``Timeout``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import httpx2

from runnel.client.errors import InvalidRequest, StreamLost, from_answer
from runnel.client.events import Complete, Event, Failed, Status, Terminal, Token

DEFAULT_URL = "http://127.0.0.1:8000"
EVENT_STREAM = "text/event-stream"
# a live stream sends a ping every 15 s, so 60 s without a byte is a dead connection
TIMEOUT = httpx2.Timeout(30.0, read=60.0)


def auth_headers(key: str | None) -> dict[str, str]:
    key = key if key is not None else os.environ.get("RUNNEL_API_KEY") or None
    return {"authorization": f"Bearer {key}"} if key else {}


@dataclass
class ReplyState:
    """Where a reply's reading stands; the next connection resumes after ``last_id``."""

    stream_id: str | None = None
    conversation_id: str | None = None
    last_id: int = 0
    terminal: Terminal | None = None
    status: Status | None = None
    connections: int = 0
    pieces: list[str] = field(default_factory=list)

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)

    @property
    def text(self) -> str:
        if len(self.pieces) > 1:
            self.pieces[:] = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""

    def accept(self, event: Event) -> bool:
        """Record an event; False for one already seen (never handed out twice)."""
        if event.id:
            if event.id <= self.last_id:
                return False
            self.last_id = event.id
        if type(event) is Token:
            self.pieces.append(event.text)
        elif isinstance(event, Status):
            self.status = event
            self.stream_id = event.stream_id
            self.conversation_id = event.conversation_id or self.conversation_id
        elif isinstance(event, Complete | Failed):
            self.terminal = event
        return True

    def resume_path(self) -> str | None:
        """Where to read the rest: the stream, or (not known yet) the conversation's."""
        if self.stream_id is not None:
            return f"/api/v1/streams/{quote(self.stream_id, safe='')}"
        if self.conversation_id is not None:
            return f"/api/v1/conversations/{quote(self.conversation_id, safe='')}/stream"
        return None

    def resume_headers(self) -> dict[str, str]:
        return {"accept": EVENT_STREAM, "last-event-id": str(self.last_id)}

    def lost(self) -> StreamLost:
        where = self.resume_path() or "a stateless reply that had not started"
        return StreamLost("INTERRUPTED", f"the stream could not be resumed ({where})")


class Reconnect(Enum):
    """What the answer to a reconnect means."""

    READ = "read"  # 200: the rest of the stream
    OVER = "over"  # 204: the conversation has no active stream any more
    AGAIN = "again"  # a passing refusal: try again after a backoff


# answers to a reconnect that may change by themselves: a later attempt may be let in
_PASSING = frozenset({408, 425, 429, 500, 502, 503, 504})


def answer_to_reconnect(status: int, body: bytes) -> Reconnect:
    """Raises ``StreamLost`` for an answer that trying again cannot change (404: the
    stream expired or is someone else's; 401, 403: the key)."""
    if status == 200:
        return Reconnect.READ
    if status == 204:
        return Reconnect.OVER
    if status in _PASSING:
        return Reconnect.AGAIN
    error = from_answer(status, body, None)
    raise StreamLost(error.code, error.message, error.status)


class Call(NamedTuple):
    """One request of the API: what both clients send for a call."""

    method: str
    path: str
    body: Any = None


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _id(value: str) -> str:
    return quote(value, safe="")


class Calls:
    """The requests of the native API (the clients only send them)."""

    @staticmethod
    def models() -> Call:
        return Call("GET", "/api/v1/models")

    @staticmethod
    def create_conversation(title: str | None, model: str | None, system: str | None) -> Call:
        body = _given(title=title, model=model, systemPrompt=system)
        return Call("POST", "/api/v1/conversations", body)

    @staticmethod
    def conversations(limit: int, cursor: str | None) -> Call:
        query = urlencode(_given(limit=limit, cursor=cursor))
        return Call("GET", f"/api/v1/conversations?{query}")

    @staticmethod
    def conversation(conversation_id: str) -> Call:
        return Call("GET", f"/api/v1/conversations/{_id(conversation_id)}")

    @staticmethod
    def update_conversation(conversation_id: str, title: str | None, model: str | None) -> Call:
        path = f"/api/v1/conversations/{_id(conversation_id)}"
        return Call("PATCH", path, _given(title=title, model=model))

    @staticmethod
    def delete_conversation(conversation_id: str) -> Call:
        return Call("DELETE", f"/api/v1/conversations/{_id(conversation_id)}")

    @staticmethod
    def cancel(stream_id: str, last_event_id: int | None) -> Call:
        body = None if last_event_id is None else {"lastEventId": last_event_id}
        return Call("POST", f"/api/v1/streams/{_id(stream_id)}/cancel", body)

    @staticmethod
    def send(conversation_id: str, content: str, model: str | None) -> Call:
        path = f"/api/v1/conversations/{_id(conversation_id)}/messages"
        return Call("POST", path, _given(content=content, model=model))

    @staticmethod
    def ask(message: str, history: Sequence[dict[str, str]], model: str | None) -> Call:
        body = _given(message=message, history=list(history), model=model)
        return Call("POST", "/api/v1/messages", body)


class ReplyView:
    """What a reply shows of its state, the same for both clients' replies."""

    _state: ReplyState

    @property
    def stream_id(self) -> str | None:
        return self._state.stream_id

    @property
    def conversation_id(self) -> str | None:
        return self._state.conversation_id

    @property
    def status(self) -> Status | None:
        """The ``Status`` that started the stream, once seen."""
        return self._state.status

    @property
    def last_event_id(self) -> int:
        return self._state.last_id

    @property
    def text(self) -> str:
        """Every token's text so far."""
        return self._state.text

    @property
    def terminal(self) -> Terminal | None:
        """The ``Complete`` or ``Failed`` that ended it, once seen."""
        return self._state.terminal

    @property
    def reconnects(self) -> int:
        """How many times the stream was read again after its connection dropped."""
        return self._state.reconnects

    def _cancel_call(self, keep_shown: bool) -> Call:
        if self._state.stream_id is None:
            raise InvalidRequest("INVALID_REQUEST", "the reply has not started yet")
        last = self._state.last_id if keep_shown else None
        return Calls.cancel(self._state.stream_id, last)
