"""A scriptable fake of OpenAI's Chat Completions HTTP API, for driving the real ``openai`` SDK.

Tests point ``openai.AsyncOpenAI(base_url=fake.url)`` at a ``FakeOpenAI`` and script what each
model answers: the tokens and their pacing, HTTP errors, a connection dropped mid-stream, UTF-8
characters torn across socket writes. Every request is recorded, including when its connection
closed and whether the client was the one that hung up (``tests/fakes/httpserver.py``).
"""

from __future__ import annotations

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

__all__ = ["FakeOpenAI", "RecordedRequest", "Script"]

_COMPLETION_ID = "chatcmpl-fake"
_CREATED = 1_700_000_000

_DEFAULT_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: ("Rate limit reached", "requests", "rate_limit_exceeded"),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


class FakeOpenAI(FakeServer):
    """A fake OpenAI-compatible server (``/v1/chat/completions``, ``/v1/models``)."""

    def __init__(self) -> None:
        super().__init__()
        self.models = ["gpt-4o", "gpt-4o-mini"]
        self.models_status = 200  # another status fails the model list with that error

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _route(
        self, conn: Connection, request: HttpRequest, record: RecordedRequest
    ) -> Outcome:
        path = record.path.partition("?")[0]
        if record.method == "POST" and path == "/v1/chat/completions":
            return await self._chat(conn, request, record)
        if record.method == "GET" and path == "/v1/models":
            if self.models_status != 200:
                body = _default_error(self.models_status)
                return await send_json(conn, self.models_status, body)
            return await send_json(conn, 200, _model_list(self.models))
        message = f"Unknown request URL: {record.method} {path}."
        return await send_json(
            conn, 404, _error_body(message, "invalid_request_error", "unknown_url")
        )

    async def _chat(
        self, conn: Connection, request: HttpRequest, record: RecordedRequest
    ) -> Outcome:
        if parse_json_object(request.body) is None:
            message = "We could not parse the JSON body of your request."
            return await send_json(conn, 400, _error_body(message, "invalid_request_error", None))
        model = str(record.body.get("model", ""))
        script = self._pick_script(model)
        await pause(script.headers_delay)
        if script.status != 200:
            return await _send_error(conn, script)
        if script.refuse_streaming and record.body.get("stream"):
            message = "Streaming is not supported for this model."
            return await send_json(conn, 400, _error_body(message, "invalid_request_error", None))
        if record.body.get("stream"):
            return await _stream(conn, script, model, _wants_usage(record.body), record)
        return await _complete(conn, script, model)


# -- replies --------------------------------------------------------------------------------


async def _stream(
    conn: Connection, script: Script, model: str, include_usage: bool, record: RecordedRequest
) -> Outcome:
    await conn.write(head(200, STREAM_HEADERS, conn.keep_alive))
    await pause(script.first_delay)
    cut = script.drop_after if script.error_after is None else script.error_after
    sent = len(script.tokens) if cut is None else min(cut, len(script.tokens))
    role_sent = False
    for index, token in enumerate(script.tokens[:sent]):
        if index:
            await pause(script.delay)
        if isinstance(token, bytes):
            await send_chunk(conn, token, script.split_utf8)
            record.chunks_sent += 1
            continue
        delta = {"content": token} if role_sent else {"role": "assistant", "content": token}
        role_sent = True
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        await send_chunk(conn, _sse_chunk(model, [choice], include_usage), script.split_utf8)
        record.chunks_sent += 1
    if script.error_after is not None:
        error = _error_body("The server is overloaded.", "server_error", "overloaded")
        await send_chunk(conn, b"data: " + orjson.dumps(error) + b"\n\n", False)
        await conn.write(b"0\r\n\r\n")
        return Outcome.DONE
    if script.drop_after is not None:
        conn.close()
        return Outcome.SERVER_CLOSED
    finish = {"index": 0, "delta": {}, "finish_reason": _finish_reason(script)}
    await send_chunk(conn, _sse_chunk(model, [finish], include_usage), script.split_utf8)
    if include_usage:
        usage_event = _sse_chunk(model, [], include_usage, _usage(script))
        await send_chunk(conn, usage_event, script.split_utf8)
    if script.done:
        await send_chunk(conn, b"data: [DONE]\n\n", script.split_utf8)
    await conn.write(b"0\r\n\r\n")
    return Outcome.DONE


async def _complete(conn: Connection, script: Script, model: str) -> Outcome:
    await pause(script.first_delay + script.delay * max(len(script.tokens) - 1, 0))
    if script.drop_after is not None:
        conn.close()
        return Outcome.SERVER_CLOSED
    text = "".join(token for token in script.tokens if isinstance(token, str))
    completion = {
        "id": _COMPLETION_ID,
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": _finish_reason(script),
                "logprobs": None,
            }
        ],
        "usage": _usage(script),
    }
    return await send_json(conn, 200, completion)


async def _send_error(conn: Connection, script: Script) -> Outcome:
    body = script.error_body if script.error_body is not None else _default_error(script.status)
    extra = () if script.retry_after is None else (("retry-after", script.retry_after),)
    return await send_json(conn, script.status, body, extra)


def _finish_reason(script: Script) -> str:
    return "stop" if script.finish_reason is None else script.finish_reason


def _sse_chunk(
    model: str,
    choices: list[dict[str, Any]],
    include_usage: bool,
    usage: dict[str, Any] | None = None,
) -> bytes:
    chunk: dict[str, Any] = {
        "id": _COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": model,
        "choices": choices,
    }
    if include_usage:
        chunk["usage"] = usage
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _usage(script: Script) -> dict[str, Any]:
    if script.usage is not None:
        return script.usage
    completion = len(script.tokens)
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
    }


def _error_body(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _default_error(status: int) -> dict[str, Any]:
    if status in _DEFAULT_ERRORS:
        return _error_body(*_DEFAULT_ERRORS[status])
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return _error_body(reason(status), kind, None)


def _model_list(models: Sequence[str]) -> dict[str, Any]:
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in models]
    return {"object": "list", "data": data}


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))
