"""Export and import of a conversation: pure functions between the store's records and
the two formats (docs/api.md).

JSON (``"runnel": "conversation", "version": 1``) holds everything a conversation needs to
be recreated — title, model, system prompt, and each message's role, text, status, model,
finish reason, usage, error and time — and nothing that names this server's objects (ids,
streams), so it round-trips through ``POST /api/v1/conversations/import`` into a new
conversation. Markdown is for people: the title, then each message under a heading.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from runnel.ids import new_id
from runnel.store.records import Conversation, Message, MessageStatus

FORMAT = "conversation"
VERSION = 1
MAX_MESSAGES = 10_000
MAX_CONTENT = 1_000_000  # characters of one imported message
NOTES: dict[str, str] = {
    "cancelled": "stopped",
    "interrupted": "interrupted",
    "streaming": "still being written when exported",
}


def iso(ms: int) -> str:
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def document(
    conversation: Conversation, messages: Sequence[Message], now_ms: int
) -> dict[str, Any]:
    """The JSON export."""
    return {
        "runnel": FORMAT,
        "version": VERSION,
        "exportedAt": iso(now_ms),
        "conversation": {
            "title": conversation.title,
            "model": conversation.model,
            "systemPrompt": conversation.system_prompt,
            "createdAt": iso(conversation.created_at),
            "updatedAt": iso(conversation.updated_at),
        },
        "messages": [_message(m) for m in messages],
    }


def usage_json(message: Message) -> dict[str, int | None] | None:
    """A message's ``usage`` as the API shows it (also in the message resource)."""
    if message.prompt_tokens is None and message.completion_tokens is None:
        return None
    return {"promptTokens": message.prompt_tokens, "completionTokens": message.completion_tokens}


def error_json(message: Message) -> dict[str, str | None] | None:
    """A message's ``error`` as the API shows it."""
    if not message.error_code:
        return None
    return {"code": message.error_code, "message": message.error_message}


def _message(message: Message) -> dict[str, Any]:
    return {
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "model": message.model,
        "finishReason": message.finish_reason,
        "usage": usage_json(message),
        "error": error_json(message),
        "createdAt": iso(message.created_at),
    }


def markdown(conversation: Conversation, messages: Sequence[Message]) -> str:
    """The Markdown export: the title, the system prompt as a quote, each message under a
    ``##`` heading (who wrote it), a note after a reply that did not simply complete."""
    parts = [f"# {_one_line(conversation.title)}"]
    if conversation.system_prompt:
        quoted = "\n".join(
            f"> {line}" if line else ">" for line in conversation.system_prompt.splitlines()
        )
        parts.append(f"**System prompt**\n\n{quoted}")
    for message in messages:
        if message.role == "user":
            heading = "## You"
        else:
            heading = f"## {'Assistant' if message.role == 'assistant' else 'System'}"
            if message.model:
                heading += f" · {message.model}"
        body = message.content.rstrip("\n")
        block = f"{heading}\n\n{body}" if body else heading
        note = NOTES.get(message.status)
        if message.status == "error":
            note = f"error: {message.error_message or message.error_code or 'failed'}"
        if note:
            block += f"\n\n*[{_one_line(note)}]*"
        parts.append(block)
    return "\n\n".join(parts) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def download_name(title: str, extension: str) -> str:
    """A ``Content-Disposition`` value: an ASCII ``filename`` and the title in
    ``filename*`` (RFC 6266)."""
    words = re.sub(r"[^\w\s-]", "", title.lower()).split()
    slug = "-".join(words)[:60].strip("-") or "conversation"
    ascii_slug = unicodedata.normalize("NFKD", slug).encode("ascii", "ignore").decode()
    ascii_slug = re.sub(r"[^a-z0-9_-]", "", ascii_slug).strip("-_")[:60] or "conversation"
    return (
        f'attachment; filename="{ascii_slug}.{extension}"; '
        f"filename*=UTF-8''{quote(slug)}.{extension}"
    )


# import


class _Usage(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    prompt_tokens: int | None = Field(default=None, alias="promptTokens", ge=0, le=10**9)
    completion_tokens: int | None = Field(default=None, alias="completionTokens", ge=0, le=10**9)


class _Error(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(max_length=40)
    message: str | None = Field(default=None, max_length=10_000)


class ImportedMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_CONTENT)
    status: MessageStatus = "complete"
    model: str | None = Field(default=None, max_length=300)
    finish_reason: Literal["stop", "length", "content_filter", "cancelled"] | None = Field(
        default=None, alias="finishReason"
    )
    usage: _Usage | None = None
    error: _Error | None = None
    created_at: datetime | None = Field(default=None, alias="createdAt")


class ImportedConversation(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    title: str = Field(min_length=1, max_length=300)
    model: str | None = Field(default=None, max_length=300)
    system_prompt: str | None = Field(default=None, alias="systemPrompt", max_length=MAX_CONTENT)
    created_at: datetime | None = Field(default=None, alias="createdAt")
    updated_at: datetime | None = Field(default=None, alias="updatedAt")


class ImportDocument(BaseModel):
    """The body of ``POST /api/v1/conversations/import``: a JSON export."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    runnel: Literal["conversation"]
    version: Literal[1]
    conversation: ImportedConversation
    messages: list[ImportedMessage] = Field(max_length=MAX_MESSAGES)


def _ms(value: datetime | None, default: int) -> int:
    if value is None:
        return default
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def records(doc: ImportDocument, user_id: str, now_ms: int) -> tuple[Conversation, list[Message]]:
    """A new conversation of ``user_id`` (new ids) with the document's messages. A message
    exported while it streamed is imported as interrupted: nothing will finish it."""
    source = doc.conversation
    conversation_id = new_id("c")
    created = _ms(source.created_at, now_ms)
    conversation = Conversation(
        conversation_id,
        user_id,
        _one_line(source.title) or "Imported conversation",
        source.model,
        source.system_prompt,
        None,
        created,
        max(_ms(source.updated_at, now_ms), created),
    )
    messages = []
    for seq, item in enumerate(doc.messages, start=1):
        status: MessageStatus = "interrupted" if item.status == "streaming" else item.status
        if item.role == "user":
            status = "complete"
        error = item.error
        if status == "interrupted" and error is None:
            error = _Error(code="INTERRUPTED", message="this reply was exported before it ended")
        stamp = _ms(item.created_at, created)
        messages.append(
            Message(
                new_id("m"),
                conversation_id,
                seq,
                item.role,
                item.content,
                status,
                item.model if item.role == "assistant" else None,
                None,
                item.finish_reason if item.role == "assistant" else None,
                error.code if error and status in ("error", "interrupted") else None,
                error.message if error and status in ("error", "interrupted") else None,
                item.usage.prompt_tokens if item.usage else None,
                item.usage.completion_tokens if item.usage else None,
                stamp,
                stamp,
            )
        )
    return conversation, messages
