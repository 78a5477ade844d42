"""Request bodies (validated by FastAPI) and the JSON shapes of responses."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from runnel.accounts.records import ApiKey, User
from runnel.store.records import Conversation, Message
from runnel.transfer import error_json, iso, usage_json


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


class Credentials(Body):
    username: str = Field(max_length=1000)
    password: str = Field(max_length=1000)


class NewUser(Credentials):
    role: Literal["admin", "user"] = "user"


class LimitChanges(Body):
    max_streams: int | None = Field(default=None, alias="maxStreams", ge=0, le=1_000_000)
    messages_per_minute: int | None = Field(
        default=None, alias="messagesPerMinute", ge=0, le=1_000_000
    )
    output_tokens_per_day: int | None = Field(
        default=None, alias="outputTokensPerDay", ge=0, le=10**12
    )


class UserChanges(Body):
    disabled: bool | None = None
    role: Literal["admin", "user"] | None = None
    password: str | None = Field(default=None, max_length=1000)
    limits: LimitChanges | None = None


class NewKey(Body):
    name: str = Field(max_length=1000)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """An error under ``/v1``, as OpenAI's clients parse it."""

    error: OpenAIErrorDetail


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
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "model": message.model,
        "streamId": message.stream_id,
        "finishReason": message.finish_reason,
        "usage": usage_json(message),
        "error": error_json(message),
        "suggestions": orjson.loads(message.suggestions) if message.suggestions else None,
        "createdAt": iso(message.created_at),
        "updatedAt": iso(message.updated_at),
    }


def user_json(user: User, *, limits: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "disabled": user.disabled,
        "pending": user.pending,
        "createdAt": iso(user.created_at),
        "lastSeenAt": iso(user.last_seen_at) if user.last_seen_at is not None else None,
    }
    if limits:
        body["limits"] = {
            "maxStreams": user.limits.max_streams,
            "messagesPerMinute": user.limits.messages_per_minute,
            "outputTokensPerDay": user.limits.output_tokens_per_day,
        }
    return body


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "createdAt": iso(key.created_at),
        "lastUsedAt": iso(key.last_used_at) if key.last_used_at is not None else None,
    }
