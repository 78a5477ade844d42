"""Plain records the store returns; the HTTP layer renders them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MessageStatus = Literal["streaming", "complete", "cancelled", "error", "interrupted"]
Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    user_id: str
    title: str
    model: str | None
    system_prompt: str | None
    active_stream_id: str | None
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    conversation_id: str
    seq: int
    role: Role
    content: str
    status: MessageStatus
    model: str | None
    stream_id: str | None
    finish_reason: str | None
    error_code: str | None
    error_message: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: int
    updated_at: int
    suggestions: str | None = None  # a JSON list: follow-up questions; None: not (yet) any


@dataclass(frozen=True, slots=True)
class NewMessage:
    id: str
    role: Role
    content: str
    status: MessageStatus
    model: str | None = None
    stream_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """The terminal state of an assistant message."""

    content: str
    status: MessageStatus
    finish_reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None  # the model that answered, when known
