"""The typed event vocabulary of a stream (DESIGN §3).

Providers yield text deltas and one ``Finish``; the generation runner turns them into these
events (a token is logged as its bare ``str``), the broker logs them, and ``sse.py`` is the
only place that writes them as SSE text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FinishReason = Literal["stop", "length", "content_filter", "cancelled"]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_wire(self) -> dict[str, int]:
        return {"promptTokens": self.prompt_tokens, "completionTokens": self.completion_tokens}


@dataclass(frozen=True, slots=True)
class Status:
    stream_id: str
    conversation_id: str | None
    message_id: str
    model: str
    status: str = "started"


@dataclass(frozen=True, slots=True)
class Complete:
    model: str
    finish_reason: FinishReason
    message_id: str
    usage: Usage | None = None
    completion_tokens: int = 0
    kept_through: int | None = None
    first_token_ms: float | None = None  # from the reply's start to its first token


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str
    retryable: bool
    partial: bool
    message_id: str | None = None


# A token event is its bare text: the log holds one per token, so it stays small.
Event = str | Status | Complete | Error
TERMINAL = (Complete, Error)


def to_wire(event: Event) -> dict[str, Any]:
    """The JSON object of an event, as clients see it."""
    if isinstance(event, str):
        return {"type": "token", "content": event}
    if isinstance(event, Status):
        return {
            "type": "status",
            "status": event.status,
            "streamId": event.stream_id,
            "conversationId": event.conversation_id,
            "messageId": event.message_id,
            "model": event.model,
        }
    if isinstance(event, Complete):
        usage = event.usage
        wire: dict[str, Any] = {
            "type": "complete",
            "model": event.model,
            "finishReason": event.finish_reason,
            "totalTokens": usage.total_tokens if usage else event.completion_tokens,
            "usage": usage.to_wire() if usage else None,
            "messageId": event.message_id,
        }
        if event.kept_through is not None:
            wire["keptThrough"] = event.kept_through
        if event.first_token_ms is not None:
            wire["firstTokenMs"] = event.first_token_ms
        return wire
    return {
        "type": "error",
        "code": event.code,
        "error": event.message,
        "retryable": event.retryable,
        "partial": event.partial,
        "messageId": event.message_id,
    }


def from_wire(data: dict[str, Any]) -> Event:
    """Inverse of ``to_wire``, for brokers that keep events as JSON."""
    kind = data["type"]
    if kind == "token":
        content: str = data["content"]
        return content
    if kind == "status":
        return Status(
            data["streamId"],
            data["conversationId"],
            data["messageId"],
            data["model"],
            data["status"],
        )
    if kind == "complete":
        raw = data.get("usage")
        usage = Usage(raw["promptTokens"], raw["completionTokens"]) if raw else None
        return Complete(
            data["model"],
            data["finishReason"],
            data["messageId"],
            usage,
            usage.completion_tokens if usage else data.get("totalTokens", 0),
            data.get("keptThrough"),
            data.get("firstTokenMs"),
        )
    return Error(
        data["code"], data["error"], data["retryable"], data["partial"], data.get("messageId")
    )
