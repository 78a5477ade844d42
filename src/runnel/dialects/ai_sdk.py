"""The Vercel AI SDK's dialect: what ``DefaultChatTransport`` sends, and the UI message
stream it reads (``ai`` 5, 6 and 7).

Parse: the request names a chat by the client's own id and carries the whole chat as
``UIMessage``s; Runnel answers the last user message with its stored history as the
context (or regenerates the last reply), so only that message's text parts are read.
Unknown keys and part types are ignored: new ones keep appearing.

Encode: ``data: <json>`` chunks — ``start {messageId}``, ``start-step``, ``text-start``,
``text-delta``…, ``text-end``, ``finish-step``, ``finish {finishReason,
messageMetadata}``, then ``data: [DONE]``; a failure is ``error {errorText}`` and the end.
Only documented fields, and none set to null (older clients reject both). The assistant
message's id is the stored message's, so a replay (a resume) replaces the message the
client has instead of adding one.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from runnel.errors import InvalidRequest
from runnel.events import Complete, Error, Event, FinishReason, Status
from runnel.sse import merged
from runnel.store.records import Message

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
DONE = b"data: [DONE]\n\n"
FINISH: dict[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "cancelled": "other",  # stopped on purpose; messageMetadata.finishReason says so
}
Trigger = Literal["submit-message", "regenerate-message"]


class UIChatRequest(BaseModel):
    """What Runnel reads of ``DefaultChatTransport``'s body; other keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    trigger: str = "submit-message"
    model: str | None = None  # an extra body key: DefaultChatTransport({ body: { model } })


@dataclass(frozen=True, slots=True)
class UIChatStart:
    chat_id: str
    trigger: Trigger
    text: str | None  # the message to answer (None to regenerate)
    model: str | None


def parse(body: UIChatRequest) -> UIChatStart:
    if body.trigger == "regenerate-message":
        return UIChatStart(body.id, "regenerate-message", None, body.model)
    if body.trigger != "submit-message":
        raise InvalidRequest(f"trigger {body.trigger!r} is not supported")
    last = body.messages[-1] if body.messages else None
    if last is None or last.get("role") != "user":
        raise InvalidRequest("the last message must be the user's")
    return UIChatStart(body.id, "submit-message", text_of(last), body.model)


def text_of(message: dict[str, Any]) -> str:
    """A UI message's text: its text parts (or an older client's ``content``)."""
    parts = message.get("parts")
    if isinstance(parts, list):
        texts = [
            p["text"]
            for p in parts
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
        if texts:
            return "".join(texts)
    content = message.get("content")
    if isinstance(content, str):
        return content
    raise InvalidRequest("the last message has no text part")


def conversation_of(user_id: str, chat_id: str) -> str:
    """The Runnel conversation of a client's chat id: a pure function of the user and the
    id, so one client id names one conversation per user and no table maps them."""
    digest = hashlib.sha256(f"{user_id}\0{chat_id}".encode()).digest()
    return "c_" + base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def ui_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """A stored conversation as ``UIMessage``s, for a page that loads its chat. A reply
    still streaming is left out: the resume replays it whole (kept, the replay's text part
    would be added to it)."""
    found: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system" or message.status == "streaming":
            continue
        if message.role == "assistant" and not message.content:
            continue
        item: dict[str, Any] = {
            "id": message.id,
            "role": message.role,
            "parts": [{"type": "text", "text": message.content}],
        }
        if message.role == "assistant":
            metadata: dict[str, Any] = {"finishReason": message.finish_reason or message.status}
            if message.stream_id:
                metadata["streamId"] = message.stream_id
            if message.model:
                metadata["model"] = message.model
            item["metadata"] = metadata
        found.append(item)
    return found


def _chunk(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


class UIMessageEncoder:
    """One UI message stream's writer (``runnel.sse.Encoder``). Runs of tokens become one
    ``text-delta`` (nothing numbers them)."""

    __slots__ = ("_before", "message_id", "model", "started", "stream_id", "text_id")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.message_id = ""
        self.model = ""
        self.text_id = ""
        self.started = False
        self._before = b""

    def preamble(self) -> bytes:
        return b""

    def token(self, text: str, event_id: int) -> bytes:
        return self._before + orjson.dumps(text) + b"}\n\n"

    def encode(self, events: Sequence[Event], first_id: int) -> bytes:
        out: list[bytes] = []
        for event_id, event in merged(events, first_id):
            if type(event) is str:
                out.append(self.token(event, event_id))
                continue
            if isinstance(event, Status):
                self._start(event.message_id, event.model, out)
            elif isinstance(event, Complete):
                self._finish(event, out)
            elif isinstance(event, Error):
                if not self.started and event.message_id:
                    self._start(event.message_id, "", out)
                out.append(_chunk({"type": "error", "errorText": event.message}))
                out.append(DONE)
        return b"".join(out)

    def _metadata(self, **extra: Any) -> dict[str, Any]:
        found = {"streamId": self.stream_id, **extra}
        if self.model:
            found["model"] = self.model
        return found

    def _start(self, message_id: str, model: str, out: list[bytes]) -> None:
        self.started = True
        self.message_id = message_id
        self.model = model
        self.text_id = "text-" + message_id
        self._before = (
            b'data: {"type":"text-delta","id":' + orjson.dumps(self.text_id) + b',"delta":'
        )
        out.append(
            _chunk({"type": "start", "messageId": message_id, "messageMetadata": self._metadata()})
        )
        out.append(_chunk({"type": "start-step"}))
        out.append(_chunk({"type": "text-start", "id": self.text_id}))

    def _finish(self, event: Complete, out: list[bytes]) -> None:
        if not self.started:  # stopped before the upstream accepted: an empty message
            self._start(event.message_id, event.model, out)
        self.model = event.model or self.model
        extra: dict[str, Any] = {"finishReason": event.finish_reason}
        if event.usage is not None:
            extra["usage"] = event.usage.to_wire()
        if event.first_token_ms is not None:
            extra["firstTokenMs"] = event.first_token_ms
        out.append(_chunk({"type": "text-end", "id": self.text_id}))
        out.append(_chunk({"type": "finish-step"}))
        out.append(
            _chunk(
                {
                    "type": "finish",
                    "finishReason": FINISH[event.finish_reason],
                    "messageMetadata": self._metadata(**extra),
                }
            )
        )
        out.append(DONE)
