"""A scriptable fake of Anthropic's Messages API, for driving the real ``anthropic`` SDK.

Tests point ``anthropic.AsyncAnthropic(base_url=fake.url)`` (no ``/v1``: the SDK adds it) at a
``FakeAnthropic`` and script what each model answers with the shared ``Script`` of
``tests/fakes/httpserver.py``, in the same meaning as for ``FakeOpenAI``. The wire format is
the documented one: a streamed reply is ``message_start``, ``content_block_start``, a
``ping``, one ``content_block_delta`` (``text_delta``) per ``str`` token, ``content_block_stop``,
``message_delta`` (``stop_reason`` and the cumulative ``output_tokens``) and ``message_stop``,
each event with an ``event:`` and a ``data:`` line; errors are
``{"type": "error", "error": {"type": ..., "message": ...}}``.

Like the real API, the fake checks what the SDK cannot do for the caller: a JSON body with
``model``, ``messages`` (roles ``user`` and ``assistant`` only: a system prompt goes in the
top-level ``system``) and a positive ``max_tokens``, the ``anthropic-version`` header, and
(while ``require_api_key`` is true) an ``x-api-key`` header. ``thinking[model]`` makes a
reply start with a thinking block of those pieces, as a model with extended thinking does;
``PING`` is a hand-made ``ping`` frame to put between tokens.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any

import orjson

from tests.fakes.httpserver import (
    PROMPT_TOKENS,
    STREAM_HEADERS,
    Connection,
    FakeServer,
    HttpRequest,
    Outcome,
    RecordedRequest,
    Script,
    head,
    parse_json_object,
    pause,
    reason,
    send_chunk,
    send_json,
)

__all__ = ["PING", "FakeAnthropic", "RecordedRequest", "Script"]

_MESSAGE_ID = "msg_fake01"
_REQUEST_ID = "req_fake01"
_CREATED_AT = "2025-01-01T00:00:00Z"
_SIGNATURE = "c2lnbmF0dXJl"
PING = b'event: ping\ndata: {"type": "ping"}\n\n'

_DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "There was an issue with the format of your request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "There is a problem with your billing."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    504: ("timeout_error", "Request timed out while processing."),
    529: ("overloaded_error", "Overloaded"),
}


class FakeAnthropic(FakeServer):
    """A fake Anthropic API server (``/v1/messages``, ``/v1/models``)."""

    def __init__(self) -> None:
        super().__init__()
        self.models = ["claude-test", "claude-test-large"]
        self.thinking: dict[str, list[str]] = {}
        self.require_api_key = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _route(
        self, conn: Connection, request: HttpRequest, record: RecordedRequest
    ) -> Outcome:
        path, _, query = record.path.partition("?")
        if record.method == "POST" and path == "/v1/messages":
            return await self._messages(conn, request, record)
        if record.method == "GET" and path == "/v1/models":
            if (refusal := self._refuse_headers(record)) is not None:
                return await send_json(conn, *refusal)
            return await send_json(conn, 200, _model_page(self.models, query))
        return await send_json(conn, 404, error_body("not_found_error", "Not Found"))

    def _refuse_headers(self, record: RecordedRequest) -> tuple[int, dict[str, Any]] | None:
        if self.require_api_key and not record.headers.get("x-api-key"):
            return 401, error_body("authentication_error", "x-api-key header is required")
        if not record.headers.get("anthropic-version"):
            return 400, error_body("invalid_request_error", "anthropic-version: header is required")
        return None

    async def _messages(
        self, conn: Connection, request: HttpRequest, record: RecordedRequest
    ) -> Outcome:
        if (refusal := self._refuse_headers(record)) is not None:
            return await send_json(conn, *refusal)
        body = parse_json_object(request.body)
        if body is None:
            return await send_json(
                conn,
                400,
                error_body("invalid_request_error", "The request body is not valid JSON."),
            )
        if (problem := _invalid(body)) is not None:
            return await send_json(conn, 400, error_body("invalid_request_error", problem))
        model = str(body["model"])
        script = self._pick_script(model)
        await pause(script.headers_delay)
        if script.status != 200:
            return await _send_error(conn, script)
        streaming = bool(body.get("stream"))
        if script.refuse_streaming and streaming:
            message = "stream: streaming is not supported for this model."
            return await send_json(conn, 400, error_body("invalid_request_error", message))
        thinking = list(self.thinking.get(model, ()))
        if streaming:
            return await _stream(conn, script, model, thinking, record)
        return await _complete(conn, script, model, thinking)


def _invalid(body: dict[str, Any]) -> str | None:
    """What the real API would reject in a request body, worded like it; None if fine."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return "max_tokens: Field required"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string or list"
    return None


# -- replies --------------------------------------------------------------------------------


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


async def _stream(
    conn: Connection, script: Script, model: str, thinking: list[str], record: RecordedRequest
) -> Outcome:
    usage = _usage(script)
    start_usage = {key: value for key, value in usage.items() if key != "output_tokens"}
    start_usage["output_tokens"] = 1
    message = _message(model, [], None, start_usage)
    preamble = _event("message_start", {"type": "message_start", "message": message})
    text_index = 0
    if thinking:
        preamble += _thinking_block(thinking)
        text_index = 1
    preamble += _event(
        "content_block_start",
        {"type": "content_block_start", "index": text_index, "content_block": _text_block("")},
    )
    preamble += PING
    await conn.write(head(200, _stream_headers(), conn.keep_alive))
    await send_chunk(conn, preamble, False)
    await pause(script.first_delay)
    cut = script.drop_after if script.error_after is None else script.error_after
    sent = len(script.tokens) if cut is None else min(cut, len(script.tokens))
    for index, token in enumerate(script.tokens[:sent]):
        if index:
            await pause(script.delay)
        if isinstance(token, bytes):
            await send_chunk(conn, token, script.split_utf8)
        else:
            delta = {
                "type": "content_block_delta",
                "index": text_index,
                "delta": {"type": "text_delta", "text": token},
            }
            await send_chunk(conn, _event("content_block_delta", delta), script.split_utf8)
        record.chunks_sent += 1
    if script.error_after is not None:
        error = error_body("overloaded_error", "Overloaded")
        await send_chunk(conn, _event("error", error), False)
        await conn.write(b"0\r\n\r\n")
        return Outcome.DONE
    if script.drop_after is not None:
        conn.close()
        return Outcome.SERVER_CLOSED
    ending = _event("content_block_stop", {"type": "content_block_stop", "index": text_index})
    end_usage = (
        dict(usage) if script.usage is not None else {"output_tokens": usage["output_tokens"]}
    )
    ending += _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(script), "stop_sequence": None},
            "usage": end_usage,
        },
    )
    if script.done:
        ending += _event("message_stop", {"type": "message_stop"})
    await send_chunk(conn, ending, script.split_utf8)
    await conn.write(b"0\r\n\r\n")
    return Outcome.DONE


def _thinking_block(pieces: Sequence[str]) -> bytes:
    frames = _event(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
    )
    for piece in pieces:
        frames += _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": piece},
            },
        )
    frames += _event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": _SIGNATURE},
        },
    )
    return frames + _event("content_block_stop", {"type": "content_block_stop", "index": 0})


async def _complete(conn: Connection, script: Script, model: str, thinking: list[str]) -> Outcome:
    await pause(script.first_delay + script.delay * max(len(script.tokens) - 1, 0))
    if script.drop_after is not None:
        conn.close()
        return Outcome.SERVER_CLOSED
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": "".join(thinking), "signature": _SIGNATURE})
    content.append(_text_block("".join(t for t in script.tokens if isinstance(t, str))))
    message = _message(model, content, _stop_reason(script), _usage(script))
    return await send_json(conn, 200, message, (("request-id", _REQUEST_ID),))


async def _send_error(conn: Connection, script: Script) -> Outcome:
    body = script.error_body if script.error_body is not None else default_error(script.status)
    extra = [("request-id", _REQUEST_ID)]
    if script.retry_after is not None:
        extra.append(("retry-after", script.retry_after))
    return await send_json(conn, script.status, body, extra)


def _stream_headers() -> tuple[tuple[str, str], ...]:
    return (*STREAM_HEADERS, ("request-id", _REQUEST_ID))


def _message(
    model: str, content: list[dict[str, Any]], stop_reason: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": _MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _stop_reason(script: Script) -> str:
    return "end_turn" if script.finish_reason is None else script.finish_reason


def _usage(script: Script) -> dict[str, Any]:
    if script.usage is not None:
        return dict(script.usage)
    completion = sum(1 for token in script.tokens if isinstance(token, str))
    return {"input_tokens": PROMPT_TOKENS, "output_tokens": completion}


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": _REQUEST_ID}


def default_error(status: int) -> dict[str, Any]:
    if status in _DEFAULT_ERRORS:
        return error_body(*_DEFAULT_ERRORS[status])
    kind = "api_error" if status >= 500 else "invalid_request_error"
    return error_body(kind, reason(status))


def _model_page(models: Sequence[str], query: str) -> dict[str, Any]:
    """One page of the Models API: ``limit`` (default 20), ``after_id`` or ``before_id``."""
    params = urllib.parse.parse_qs(query)
    try:
        limit = int(params.get("limit", ["20"])[0])
    except ValueError:
        limit = 20
    limit = min(max(limit, 1), 1000)
    names = list(models)
    if "after_id" in params and params["after_id"][0] in names:
        start = names.index(params["after_id"][0]) + 1
        window = names[start : start + limit]
        has_more = start + limit < len(names)
    elif "before_id" in params and params["before_id"][0] in names:
        end = names.index(params["before_id"][0])
        window = names[max(end - limit, 0) : end]
        has_more = end - limit > 0
    else:
        window = names[:limit]
        has_more = limit < len(names)
    data = [
        {
            "type": "model",
            "id": name,
            "display_name": _display_name(name),
            "created_at": _CREATED_AT,
        }
        for name in window
    ]
    return {
        "data": data,
        "has_more": has_more,
        "first_id": window[0] if window else None,
        "last_id": window[-1] if window else None,
    }


def _display_name(model: str) -> str:
    return " ".join(part.capitalize() for part in model.split("-"))
