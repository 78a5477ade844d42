"""The OpenAI chat completions dialect: ``POST /v1/chat/completions``.

Parse: the request's messages become one prompt (system and developer messages folded
into one system message). Encode: ``chat.completion.chunk`` objects with one ``id`` and
``created`` for the stream — the first delta carries ``role``, each token run a
``content`` delta, the end a chunk with ``finish_reason`` and an empty delta, then (with
``stream_options.include_usage``) a chunk with ``choices: []`` and ``usage``, then
``data: [DONE]``. An error inside the stream is ``data: {"error": {…}}`` and ends it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from runnel.dialects.openai_common import InvalidParam, error_object, fold_system, text_of
from runnel.events import Complete, Error, Event, FinishReason, Status
from runnel.providers.base import ChatMessage
from runnel.sse import merged

DONE = b"data: [DONE]\n\n"
FINISH: dict[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "cancelled": "stop",  # stopped on purpose: OpenAI has no reason for it
}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class _Open(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MessageIn(_Open):
    role: str
    content: str | list[Any] | None = None
    tool_calls: list[Any] | None = None


class StreamOptions(_Open):
    include_usage: bool = False


class ChatCompletionRequest(_Open):
    """What Runnel reads of a chat completion request; other fields are ignored."""

    model: str | None = None
    messages: list[MessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class ChatStart:
    prompt: list[ChatMessage]
    model: str | None
    max_tokens: int | None
    stream: bool
    include_usage: bool


def parse(body: ChatCompletionRequest) -> ChatStart:
    if body.n is not None and body.n > 1:
        raise InvalidParam("n", "n > 1 is not supported: ask for one choice")
    if body.tools or body.functions:
        raise InvalidParam("tools", "tools are not supported yet")
    prompt: list[ChatMessage] = []
    for index, message in enumerate(body.messages):
        role = ROLES.get(message.role)
        if role is None:
            raise InvalidParam(
                f"messages[{index}].role",
                f"role {message.role!r} is not supported (tools are not supported yet)",
            )
        if message.tool_calls:
            raise InvalidParam(f"messages[{index}].tool_calls", "tools are not supported yet")
        text = text_of(message.content, f"messages[{index}].content")
        prompt.append({"role": role, "content": text})  # type: ignore[typeddict-item]
    limits = [n for n in (body.max_tokens, body.max_completion_tokens) if n is not None]
    return ChatStart(
        fold_system(prompt),
        body.model,
        min(limits) if limits else None,
        body.stream,
        bool(body.stream_options and body.stream_options.include_usage),
    )


def usage_object(complete: Complete) -> dict[str, int]:
    usage = complete.usage
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else complete.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class ChunkEncoder:
    """One chat completion stream's writer (``runnel.sse.Encoder``)."""

    __slots__ = ("_after", "_before", "created", "id", "include_usage", "model")

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.id = completion_id
        self.created = created
        self.include_usage = include_usage
        self.model = model
        self._before = b""
        self._after = b""
        self._frame(model)

    def _frame(self, model: str) -> None:
        """The bytes around a content delta, for the model that answers."""
        self.model = model
        head = orjson.dumps(
            {"id": self.id, "object": "chat.completion.chunk", "created": self.created}
        )[:-1]
        self._before = (
            b"data: "
            + head
            + b',"model":'
            + orjson.dumps(model)
            + b',"system_fingerprint":null,"choices":[{"index":0,"delta":{"content":'
        )
        self._after = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def preamble(self) -> bytes:
        return b""

    def token(self, text: str, event_id: int) -> bytes:
        return self._before + orjson.dumps(text) + self._after

    def encode(self, events: Sequence[Event], first_id: int) -> bytes:
        out: list[bytes] = []
        for event_id, event in merged(events, first_id):
            if type(event) is str:
                out.append(self.token(event, event_id))
                continue
            if isinstance(event, Status):
                self._frame(event.model)
                delta = {"role": "assistant", "content": ""}
                out.append(self._chunk([_choice(delta, None)]))
            elif isinstance(event, Complete):
                reason = FINISH[event.finish_reason]
                out.append(self._chunk([_choice({}, reason)]))
                if self.include_usage:
                    out.append(self._chunk([], usage=usage_object(event)))
                out.append(DONE)
            elif isinstance(event, Error):
                out.append(
                    b"data: " + orjson.dumps(error_object(event.code, event.message)) + b"\n\n"
                )
        return b"".join(out)


def _choice(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def completion_object(
    completion_id: str, created: int, model: str, text: str, complete: Complete
) -> dict[str, Any]:
    """The whole reply as one ``chat.completion``."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": FINISH[complete.finish_reason],
            }
        ],
        "usage": usage_object(complete),
    }
