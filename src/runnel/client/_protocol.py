"""What the sync and async clients share: the SSE reader, the backoff, the requests.

No I/O here (httpx2 only for its ``Timeout``). ``SSEReader`` takes the lines of a body
(as httpx2's ``iter_lines`` gives them) and yields each event's decoded record;
``Backoff`` says how long to wait before the next reconnect; ``ReplyState`` is what a
reply remembers so that a new connection picks up after the last event its caller saw;
``Calls`` are the API's requests.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx2

from runnel.client.errors import RunnelClientError, StreamLost, from_answer
from runnel.client.events import Complete, Event, Failed, Status, Terminal, Token, decode

DEFAULT_URL = "http://127.0.0.1:8000"
EVENT_STREAM = "text/event-stream"
TIMEOUT = httpx2.Timeout(30.0, read=60.0)  # a live stream sends a ping every 15 s


def auth_headers(key: str | None) -> dict[str, str]:
    key = key if key is not None else os.environ.get("RUNNEL_API_KEY") or None
    return {"authorization": f"Bearer {key}"} if key else {}


class SSEReader:
    """Events from SSE lines (``id``, ``data``, ``retry``; comments and other fields
    ignored). ``retry_ms`` is the server's reconnection delay, once it said one."""

    __slots__ = ("_data", "_id", "retry_ms")

    def __init__(self) -> None:
        self._id: int | None = None
        self._data: list[str] = []
        self.retry_ms: int | None = None

    def line(self, line: str) -> Event | None:
        """Feed one line; the event it completes, if any."""
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            event_id, self._id = self._id, None
            return decode(event_id or 0, data)
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "id" and value.isdigit():
            self._id = int(value)
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


@dataclass
class Backoff:
    """Exponential, with full jitter: attempt *n* waits a random time up to
    ``min(cap, base · 2ⁿ)``; ``base`` is the server's ``retry:`` when it sent one."""

    base: float = 0.25
    cap: float = 5.0
    attempts: int = 8
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, server_ms: int | None = None) -> float:
        base = self.base if server_ms is None else min(self.base, server_ms / 1000)
        return self.rng.uniform(0, min(self.cap, base * 2**attempt))


@dataclass
class ReplyState:
    """Where a reply's reading stands; the next connection resumes after ``last_id``."""

    stream_id: str | None = None
    conversation_id: str | None = None
    last_id: int = 0
    terminal: Terminal | None = None
    status: Status | None = None
    reconnects: int = 0
    pieces: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def accept(self, event: Event) -> bool:
        """Record an event; False for one already seen (never handed out twice)."""
        if event.id and event.id <= self.last_id:
            return False
        if event.id:
            self.last_id = event.id
        if isinstance(event, Status):
            self.status = event
            self.stream_id = event.stream_id
            self.conversation_id = event.conversation_id or self.conversation_id
        elif isinstance(event, Token):
            self.pieces.append(event.text)
        elif isinstance(event, Complete | Failed):
            self.terminal = event
        return True

    def resume_path(self) -> str | None:
        """Where to read the rest: the stream, or (not known yet) the conversation's."""
        if self.stream_id is not None:
            return f"/api/v1/streams/{self.stream_id}"
        if self.conversation_id is not None:
            return f"/api/v1/conversations/{self.conversation_id}/stream"
        return None

    def resume_headers(self) -> dict[str, str]:
        return {"accept": EVENT_STREAM, "last-event-id": str(self.last_id)}


# answers to a reconnect: retry later, or give up with this error code
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class Call(NamedTuple):
    """One request of the API: what both clients send for a call."""

    method: str
    path: str
    body: Any = None


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


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
    def conversations(limit: int) -> Call:
        return Call("GET", f"/api/v1/conversations?limit={limit}")

    @staticmethod
    def conversation(conversation_id: str) -> Call:
        return Call("GET", f"/api/v1/conversations/{conversation_id}")

    @staticmethod
    def delete_conversation(conversation_id: str) -> Call:
        return Call("DELETE", f"/api/v1/conversations/{conversation_id}")

    @staticmethod
    def cancel(stream_id: str, last_event_id: int | None) -> Call:
        body = None if last_event_id is None else {"lastEventId": last_event_id}
        return Call("POST", f"/api/v1/streams/{stream_id}/cancel", body)

    @staticmethod
    def send(conversation_id: str, content: str, model: str | None) -> Call:
        path = f"/api/v1/conversations/{conversation_id}/messages"
        return Call("POST", path, _given(content=content, model=model))

    @staticmethod
    def ask(message: str, history: Sequence[dict[str, str]], model: str | None) -> Call:
        body = _given(message=message, history=list(history), model=model)
        return Call("POST", "/api/v1/messages", body)


def resumed(status: int, body: bytes) -> bool | None:
    """What a reconnect's answer means: True, read it; None, the stream is over and the
    reader has it all; False, try again. Raises ``StreamLost`` when trying again cannot
    help (the stream expired, the key is refused)."""
    if status == 200:
        return True
    if status == 204:
        return None
    if status in RETRY_STATUSES:
        return False
    error = from_answer(status, body, None)
    raise StreamLost(error.code, error.message, error.status)


def no_way_back(state: ReplyState) -> StreamLost:
    where = state.resume_path() or "a stateless reply that had not started"
    return StreamLost("INTERRUPTED", f"the stream could not be resumed ({where})")


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
        return self._state.reconnects

    def _cancel_call(self, keep_shown: bool) -> Call:
        if self._state.stream_id is None:
            raise RunnelClientError("INVALID_REQUEST", "the reply has not started yet")
        last = self._state.last_id if keep_shown else None
        return Calls.cancel(self._state.stream_id, last)
