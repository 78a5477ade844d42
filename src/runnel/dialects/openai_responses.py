"""The OpenAI Responses dialect: ``/v1/responses``.

A response is one Runnel stream: ``resp_X`` is the stream ``s_X`` (``openai_common``), and
a stored response is the reply of a Runnel conversation. Its events are the stream's
events, each given the ``sequence_number``s of a pure function of its event id:

    event id 1 (status)           0 response.created, 1 response.in_progress,
                                  2 response.output_item.added, 3 response.content_part.added
    event id k (a token, k ≥ 2)   k + 2 response.output_text.delta
    event id T (the end)          T + 2 response.output_text.done, T + 3 …content_part.done,
                                  T + 4 …output_item.done, T + 5 response.completed
                                  (or response.incomplete / response.failed)

so replaying the log from any position through a new encoder gives the same events with
the same numbers, and ``starting_after=N`` is that replay without the events numbered
``N`` or less. The replay always starts at the log's first event: the closing events
carry the whole text. A cancelled response ends with ``response.incomplete`` whose
response has ``status: "cancelled"`` (OpenAI has no event of its own for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from runnel.dialects.openai_common import InvalidParam, error_object, ids_of, text_of
from runnel.events import Complete, Error, Event, Status, Usage
from runnel.providers.base import ChatMessage
from runnel.store.records import Message

RESPONSE_PREFIX = "resp_"
ResponseStatus = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
OPENING = 4  # the events of the status event: created, in_progress, item and part added
CLOSING = 4  # the events of the terminal one: text, part, item done, then the end


def sequence_of(event_id: int) -> int:
    """The first sequence number of the events of event ``event_id``."""
    return 0 if event_id <= 1 else event_id + OPENING - 2


def event_of(sequence: int) -> int:
    """The id of the event whose events include ``sequence`` — or, past a token, the
    id it would have (the end's events are numbered from its id)."""
    return 1 if sequence < OPENING else sequence - OPENING + 2


class _Open(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InputItem(_Open):
    type: str | None = None
    role: str | None = None
    content: str | list[Any] | None = None


class ResponseRequest(_Open):
    """What Runnel reads of a Responses request; other fields are ignored."""

    model: str | None = None
    input: str | list[InputItem]
    instructions: str | None = None
    previous_response_id: str | None = None
    stream: bool = False
    background: bool = False
    store: bool = True
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    user: str | None = None
    metadata: dict[str, str] | None = None
    tools: list[Any] | None = None
    conversation: Any = None


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """What a response object says besides its output (echoed from the request)."""

    id: str
    created_at: int
    model: str
    instructions: str | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    store: bool = True
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResponseStart:
    turn: list[ChatMessage]  # user and assistant messages, a user message last
    system: str | None  # the instructions (and any system or developer input)
    model: str | None
    previous_response_id: str | None
    stream: bool
    background: bool
    store: bool
    max_output_tokens: int | None


ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def parse(body: ResponseRequest) -> ResponseStart:
    if body.tools:
        raise InvalidParam("tools", "tools are not supported yet")
    if body.conversation is not None:
        raise InvalidParam("conversation", "use previous_response_id to continue a response")
    if body.background and not body.store:
        raise InvalidParam("background", "a background response must be stored (store: true)")
    items = body.input
    turn: list[ChatMessage] = []
    system = [body.instructions] if body.instructions else []
    if isinstance(items, str):
        turn.append({"role": "user", "content": items})
    else:
        for index, item in enumerate(items):
            role = ROLES.get(item.role or "")
            if item.type not in (None, "message") or role is None:
                raise InvalidParam(
                    f"input[{index}]", "only messages (user, assistant, system) are supported"
                )
            text = text_of(item.content, f"input[{index}].content")
            if role == "system":
                system.append(text)
            else:
                turn.append({"role": role, "content": text})  # type: ignore[typeddict-item]
    if not turn or turn[-1]["role"] != "user":
        raise InvalidParam("input", "the input must end with a user message")
    return ResponseStart(
        turn,
        "\n\n".join(system) if system else None,
        body.model,
        body.previous_response_id,
        body.stream,
        body.background,
        body.store,
        body.max_output_tokens,
    )


def info_of(body: ResponseRequest, response_id: str, created_at: int, model: str) -> ResponseInfo:
    return ResponseInfo(
        response_id,
        created_at,
        model,
        instructions=body.instructions,
        previous_response_id=body.previous_response_id,
        background=body.background,
        store=body.store,
        max_output_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        user=body.user,
        metadata=body.metadata or {},
    )


@dataclass(slots=True)
class Outcome:
    """Where a response stands, from its events or its stored message."""

    status: ResponseStatus
    text: str
    item_id: str | None = None
    model: str | None = None
    usage: Usage | None = None
    output_tokens: int = 0
    incomplete: str | None = None
    error: dict[str, Any] | None = None


def outcome_of_events(events: Sequence[Event], status: ResponseStatus = "in_progress") -> Outcome:
    outcome = Outcome(status, "")
    pieces: list[str] = []
    for event in events:
        if type(event) is str:
            pieces.append(event)
        elif isinstance(event, Status):
            outcome.item_id = "msg_" + ids_of(event.message_id)
            outcome.model = event.model
        elif isinstance(event, Complete | Error):
            _end(outcome, event)
    outcome.text = "".join(pieces)
    return outcome


def _end(outcome: Outcome, event: Complete | Error) -> None:
    if isinstance(event, Complete):
        outcome.model = event.model
        outcome.usage = event.usage
        outcome.output_tokens = event.completion_tokens
        if event.finish_reason == "stop":
            outcome.status = "completed"
        elif event.finish_reason == "cancelled":
            outcome.status = "cancelled"
        else:
            outcome.status = "incomplete"
            outcome.incomplete = (
                "max_output_tokens" if event.finish_reason == "length" else "content_filter"
            )
    else:
        outcome.status = "failed"
        outcome.error = error_object(event.code, event.message)["error"]


STORED_STATUS: dict[str, ResponseStatus] = {
    "streaming": "in_progress",
    "cancelled": "cancelled",
    "error": "failed",
    "interrupted": "failed",
}


def outcome_of_message(message: Message) -> Outcome:
    status = STORED_STATUS.get(message.status, "completed")
    outcome = Outcome(status, message.content, "msg_" + ids_of(message.id), message.model)
    if message.prompt_tokens is not None and message.completion_tokens is not None:
        outcome.usage = Usage(message.prompt_tokens, message.completion_tokens)
    outcome.output_tokens = message.completion_tokens or 0
    if status == "completed" and message.finish_reason in ("length", "content_filter"):
        outcome.status = "incomplete"
        outcome.incomplete = (
            "max_output_tokens" if message.finish_reason == "length" else "content_filter"
        )
    if status == "failed":
        code = message.error_code or "INTERNAL"
        outcome.error = error_object(code, message.error_message or "the reply failed")["error"]
    return outcome


def events_of_message(message: Message, stream_id: str) -> list[Event]:
    """A stored reply as the events of a stream (its text in one token)."""
    events: list[Event] = [
        Status(stream_id, message.conversation_id, message.id, message.model or "")
    ]
    if message.content:
        events.append(message.content)
    outcome = outcome_of_message(message)
    if message.status in ("error", "interrupted"):
        error = outcome.error or {}
        events.append(
            Error(
                message.error_code or "INTERNAL",
                str(error.get("message", "")),
                False,
                True,
                message.id,
            )
        )
    elif message.status != "streaming":
        reason = (
            message.finish_reason
            if message.finish_reason in ("stop", "length", "content_filter")
            else "stop"
        )
        if message.status == "cancelled":
            reason = "cancelled"
        events.append(
            Complete(message.model or "", reason, message.id, outcome.usage, outcome.output_tokens)  # type: ignore[arg-type]
        )
    return events


def response_object(info: ResponseInfo, outcome: Outcome) -> dict[str, Any]:
    """A ``response`` object as OpenAI's API gives it."""
    output: list[dict[str, Any]] = []
    if outcome.item_id is not None and (outcome.text or outcome.status != "failed"):
        output.append(_item(outcome.item_id, outcome.text, _item_status(outcome.status)))
    usage = None
    if outcome.status not in ("queued", "in_progress"):
        prompt = outcome.usage.prompt_tokens if outcome.usage else 0
        completion = outcome.usage.completion_tokens if outcome.usage else outcome.output_tokens
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }
    return {
        "id": info.id,
        "object": "response",
        "created_at": info.created_at,
        "status": outcome.status,
        "background": info.background,
        "error": outcome.error,
        "incomplete_details": {"reason": outcome.incomplete} if outcome.incomplete else None,
        "instructions": info.instructions,
        "max_output_tokens": info.max_output_tokens,
        "metadata": info.metadata,
        "model": outcome.model or info.model,
        "output": output,
        "parallel_tool_calls": False,
        "previous_response_id": info.previous_response_id,
        "store": info.store,
        "temperature": info.temperature,
        "text": {"format": {"type": "text"}},
        "tool_choice": "none",
        "tools": [],
        "top_p": info.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": info.user,
    }


def _item_status(status: ResponseStatus) -> str:
    if status in ("queued", "in_progress"):
        return "in_progress"
    return "completed" if status == "completed" else "incomplete"


def _item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_part(text)],
    }


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _frame(kind: str, body: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **body}) + b"\n\n"


class ResponseEncoder:
    """One response stream's writer (``runnel.sse.Encoder``); ``starting_after`` leaves
    out the events numbered that or less."""

    __slots__ = ("_after", "_before", "_mid", "_pieces", "info", "item_id", "model", "skip")

    def __init__(self, info: ResponseInfo, starting_after: int | None = None) -> None:
        self.info = info
        self.skip = -1 if starting_after is None else starting_after
        self.item_id = ""
        self.model = info.model
        self._pieces: list[str] = []
        self._before = b""
        self._mid = b',"logprobs":[],"sequence_number":'
        self._after = b"}\n\n"

    def preamble(self) -> bytes:
        return b""

    def token(self, text: str, event_id: int) -> bytes:
        self._pieces.append(text)
        sequence = event_id + OPENING - 2
        return self._delta(text, sequence) if sequence > self.skip else b""

    def encode(self, events: Sequence[Event], first_id: int) -> bytes:
        """One delta per token, as OpenAI sends them: every sequence number is there, so a
        client that counts them sees no gap."""
        out: list[bytes] = []
        token = self.token
        for offset, event in enumerate(events):
            if type(event) is str:
                frame = token(event, first_id + offset)
                if frame:
                    out.append(frame)
            elif isinstance(event, Status):
                self._open(event, out)
            elif isinstance(event, Complete | Error):
                self._close(event, first_id + offset, out)
        return b"".join(out)

    def _delta(self, text: str, sequence: int) -> bytes:
        return self._before + orjson.dumps(text) + self._mid + b"%d" % sequence + self._after

    def _emit(self, out: list[bytes], sequence: int, kind: str, body: dict[str, Any]) -> None:
        if sequence > self.skip:
            out.append(_frame(kind, {**body, "sequence_number": sequence}))

    def _snapshot(self, outcome: Outcome) -> dict[str, Any]:
        return response_object(replace(self.info, model=self.model), outcome)

    def _open(self, event: Status, out: list[bytes]) -> None:
        self.item_id = "msg_" + ids_of(event.message_id)
        self.model = event.model
        self._before = (
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
            b'"item_id":"' + self.item_id.encode() + b'","output_index":0,"content_index":0,'
            b'"delta":'
        )
        start = Outcome("in_progress", "", None, event.model)
        self._emit(out, 0, "response.created", {"response": self._snapshot(start)})
        self._emit(out, 1, "response.in_progress", {"response": self._snapshot(start)})
        item = _item(self.item_id, "", "in_progress")
        item["content"] = []
        self._emit(out, 2, "response.output_item.added", {"output_index": 0, "item": item})
        self._emit(
            out,
            3,
            "response.content_part.added",
            {"item_id": self.item_id, "output_index": 0, "content_index": 0, "part": _part("")},
        )

    def _close(self, event: Complete | Error, event_id: int, out: list[bytes]) -> None:
        text = "".join(self._pieces)
        outcome = Outcome("in_progress", text, self.item_id or None, self.model)
        _end(outcome, event)
        if not self.item_id:  # it failed before it started: nothing was opened
            self._emit(
                out, 0, "response.created", {"response": self._snapshot(Outcome("in_progress", ""))}
            )
            self._emit(out, 1, "response.failed", {"response": self._snapshot(outcome)})
            return
        first = sequence_of(event_id)
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        self._emit(out, first, "response.output_text.done", {**where, "text": text, "logprobs": []})
        self._emit(out, first + 1, "response.content_part.done", {**where, "part": _part(text)})
        item = _item(self.item_id, text, _item_status(outcome.status))
        self._emit(out, first + 2, "response.output_item.done", {"output_index": 0, "item": item})
        kind = {
            "completed": "response.completed",
            "failed": "response.failed",
        }.get(outcome.status, "response.incomplete")
        self._emit(out, first + 3, kind, {"response": self._snapshot(outcome)})
