"""Request bodies (validated by FastAPI) and the JSON shapes of responses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runnel.store.records import Conversation, Message


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class HistoryItem(Body):
    role: Literal["system", "user", "assistant"]
    content: str


class StatelessMessage(Body):
    message: str
    history: list[HistoryItem] = Field(default_factory=list)
    model: str | None = None


class NewConversation(Body):
    title: str | None = None
    model: str | None = None
    system_prompt: str | None = Field(default=None, alias="systemPrompt")


class ConversationChanges(Body):
    title: str | None = None
    model: str | None = None
    system_prompt: str | None = Field(default=None, alias="systemPrompt")


class UserMessage(Body):
    content: str
    model: str | None = None


class Regenerate(Body):
    model: str | None = None


class CancelBody(Body):
    last_event_id: int | None = Field(default=None, alias="lastEventId", ge=0)


def iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def conversation_json(
    conversation: Conversation, messages: list[Message] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "systemPrompt": conversation.system_prompt,
        "activeStreamId": conversation.active_stream_id,
        "createdAt": iso(conversation.created_at),
        "updatedAt": iso(conversation.updated_at),
    }
    if messages is not None:
        body["messages"] = [message_json(m) for m in messages]
    return body


def message_json(message: Message) -> dict[str, Any]:
    usage = None
    if message.prompt_tokens is not None or message.completion_tokens is not None:
        usage = {
            "promptTokens": message.prompt_tokens,
            "completionTokens": message.completion_tokens,
        }
    error = None
    if message.error_code:
        error = {"code": message.error_code, "message": message.error_message}
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "model": message.model,
        "streamId": message.stream_id,
        "finishReason": message.finish_reason,
        "usage": usage,
        "error": error,
        "createdAt": iso(message.created_at),
        "updatedAt": iso(message.updated_at),
    }
