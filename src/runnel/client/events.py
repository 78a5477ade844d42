"""The events of a reply's stream, as the client hands them to its caller (DESIGN §3).

Small frozen records, one per SSE event, named after the wire's ``type`` (``type`` is a
class attribute: ``status`` → ``Status``, ``token`` → ``Token``, ``complete`` →
``Complete``, ``error`` → ``Failed``, which is not called ``Error`` so that it is not taken
for an exception). ``id`` is the event's id in its stream. A merged ``token`` event (a
reader that fell behind) is one ``Token`` with the id of its last token. They mirror the
server's ``runnel.events`` without importing it: the client stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import orjson


@dataclass(frozen=True, slots=True)
class Status:
    """The stream started: the ids to resume and stop it by, the model that accepted."""

    type: ClassVar[str] = "status"
    id: int
    stream_id: str
    conversation_id: str | None
    message_id: str
    model: str


@dataclass(frozen=True, slots=True)
class Token:
    """A piece of the reply's text (``Reply.text`` is all of them so far)."""

    type: ClassVar[str] = "token"
    id: int
    text: str


@dataclass(frozen=True, slots=True)
class Complete:
    """The reply ended: ``finish_reason`` is ``stop``, ``length``, ``content_filter`` or
    ``cancelled``; ``kept_through`` only after a cancel that named the last event shown."""

    type: ClassVar[str] = "complete"
    id: int
    finish_reason: str
    model: str
    message_id: str | None
    total_tokens: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    kept_through: int | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The reply failed; ``partial``: some text came before (in a conversation, stored).
    ``code`` is one of DESIGN §4's (``PROVIDER_ERROR``, ``INTERRUPTED``…)."""

    type: ClassVar[str] = "error"
    id: int
    code: str
    message: str
    retryable: bool
    partial: bool
    message_id: str | None


Event = Status | Token | Complete | Failed
Terminal = Complete | Failed


def decode(event_id: int, data: str) -> Event | None:
    """The event of one SSE ``data`` field (None for a type this client does not know).
    Raises ``ValueError``, ``KeyError`` or ``TypeError`` for one it cannot read."""
    body: dict[str, Any] = orjson.loads(data)
    kind = body.get("type")
    if kind == "token":
        return Token(event_id, body["content"])
    if kind == "status":
        return Status(
            event_id,
            body["streamId"],
            body.get("conversationId"),
            body["messageId"],
            body["model"],
        )
    if kind == "complete":
        usage = body.get("usage") or {}
        return Complete(
            event_id,
            body["finishReason"],
            body.get("model", ""),
            body.get("messageId"),
            body.get("totalTokens"),
            usage.get("promptTokens"),
            usage.get("completionTokens"),
            body.get("keptThrough"),
        )
    if kind == "error":
        return Failed(
            event_id,
            body["code"],
            body.get("error", ""),
            bool(body.get("retryable")),
            bool(body.get("partial")),
            body.get("messageId"),
        )
    return None
