"""A scriptable fake of the Gemini API (``generativelanguage``), for driving ``google-genai``.

Tests point ``google.genai.Client(http_options=HttpOptions(base_url=fake.url))`` (or Runnel's
``gemini`` provider) at a ``FakeGemini`` and script each model with ``Script`` exactly as for
``FakeOpenAI`` (``tests/fakes/httpserver.py`` documents every field). The Gemini specifics:

- ``POST /{v1,v1beta}/models/{model}:streamGenerateContent?alt=sse`` answers with SSE
  ``data: <GenerateContentResponse>`` events ended by CRLF CRLF, as Google's servers do, and
  no ``[DONE]``: the stream just ends after the chunk that carries ``finishReason``. Each
  ``str`` token is one chunk with one text part; every chunk carries ``usageMetadata`` with
  the running counts. ``Script.usage`` (Gemini's own ``usageMetadata`` object) replaces the
  counts of the last chunk only. ``Script.done = False`` sends that last chunk without a
  ``finishReason``. ``error_after`` sends ``{"error": {... 503 UNAVAILABLE ...}}`` as a data
  event and ends the stream, the way the API reports an overload mid-stream.
- ``POST /{v1,v1beta}/models/{model}:generateContent`` answers one JSON response.
- ``GET /{v1,v1beta}/models`` lists ``models`` (``models/NAME`` with
  ``supportedGenerationMethods``) plus ``embedding_models`` (which only embed), paged by
  ``pageSize`` / ``pageToken``.
- Errors use Google's body ``{"error": {"code", "message", "status", "details"?}}``; a 429
  with ``Script.retry_after`` carries both the ``Retry-After`` header and a
  ``google.rpc.RetryInfo`` detail. ``refuse_streaming`` answers a streaming request the way
  the API answers a method a model does not support: 404 NOT_FOUND, "... is not supported
  for streamGenerateContent".
- ``block_prompt(model, reason)`` makes the model refuse every prompt: a 200 reply whose only
  chunk has ``promptFeedback.blockReason`` and no candidates, as the API sends for a prompt
  its safety filters block.
- ``api_key``, when set, is checked like the real API checks it: a wrong key gets 400
  INVALID_ARGUMENT "API key not valid" (reason ``API_KEY_INVALID``), a missing one 403.

``signature_chunk`` and ``thought_chunk`` build ``bytes`` tokens for the parts a thinking
model sends: an empty text part that only carries a ``thoughtSignature``, and a thought
summary part (``"thought": true``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote

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

__all__ = ["FakeGemini", "RecordedRequest", "Script", "signature_chunk", "thought_chunk"]

API_VERSIONS = ("v1beta", "v1")
_RESPONSE_ID = "fake-gemini-response"
_EVENT_END = b"\r\n\r\n"
_SIGNATURE = base64.b64encode(b"fake thought signature").decode()

_DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
    ),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
_SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
]


class FakeGemini(FakeServer):
    """A fake Gemini API server (``generateContent``, ``streamGenerateContent``, ``models``)."""

    def __init__(self) -> None:
        super().__init__()
        self.models = ["gemini-2.5-flash", "gemini-2.5-pro"]
        self.embedding_models = ["text-embedding-004"]
        self.page_size = 50
        self.api_key: str | None = None
        self._blocked: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def block_prompt(self, model: str, reason: str = "SAFETY") -> None:
        """Every prompt sent to ``model`` is blocked with ``promptFeedback.blockReason``."""
        with self._lock:
            self._blocked[model] = reason

    async def _route(
        self, conn: Connection, request: HttpRequest, record: RecordedRequest
    ) -> Outcome:
        path, _, query = record.path.partition("?")
        version, _, rest = path.lstrip("/").partition("/")
        if version not in API_VERSIONS:
            return await _send_error(conn, 404, f"The requested URL {path} was not found.")
        denied = self._check_key(request, query)
        if denied is not None:
            return await send_json(conn, denied[0], denied[1])
        if record.method == "GET" and rest == "models":
            return await send_json(conn, 200, self._model_page(parse_qs(query)))
        model, colon, method = unquote(rest.removeprefix("models/")).rpartition(":")
        if record.method == "POST" and rest.startswith("models/") and colon and model:
            if method == "streamGenerateContent":
                if parse_qs(query).get("alt") != ["sse"]:
                    message = "This fake only streams with alt=sse."
                    return await _send_error(conn, 400, message)
                return await self._generate(conn, request, record, model, version, stream=True)
            if method == "generateContent":
                return await self._generate(conn, request, record, model, version, stream=False)
        return await _send_error(conn, 404, f"The requested URL {path} was not found.")

    def _check_key(self, request: HttpRequest, query: str) -> tuple[int, dict[str, Any]] | None:
        if self.api_key is None:
            return None
        given = request.headers.get("x-goog-api-key") or next(
            iter(parse_qs(query).get("key", ())), None
        )
        if given is None:
            message = (
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API."
            )
            return 403, _error_body(403, "PERMISSION_DENIED", message)
        if given != self.api_key:
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
            message = "API key not valid. Please pass a valid API key."
            return 400, _error_body(400, "INVALID_ARGUMENT", message, details)
        return None

    async def _generate(
        self,
        conn: Connection,
        request: HttpRequest,
        record: RecordedRequest,
        model: str,
        version: str,
        *,
        stream: bool,
    ) -> Outcome:
        if parse_json_object(request.body) is None:
            message = "Invalid JSON payload received. Unexpected token."
            return await _send_error(conn, 400, message)
        if not isinstance(record.body.get("contents"), list):
            return await _send_error(conn, 400, "* GenerateContentRequest.contents: required")
        script = self._pick_script(model)
        await pause(script.headers_delay)
        if script.status != 200:
            return await _send_script_error(conn, script)
        if stream and script.refuse_streaming:
            message = (
                f"models/{model} is not found for API version {version}, or is not supported "
                "for streamGenerateContent. Call ListModels to see the list of available "
                "models and their supported methods."
            )
            return await _send_error(conn, 404, message)
        with self._lock:
            blocked = self._blocked.get(model)
        if blocked is not None:
            return await _blocked(conn, model, blocked, stream)
        if stream:
            return await _stream(conn, script, model, record)
        return await _complete(conn, script, model)

    def _model_page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        entries = [_model_entry(name, embedding=False) for name in self.models]
        entries += [_model_entry(name, embedding=True) for name in self.embedding_models]
        size = int(next(iter(query.get("pageSize", ())), self.page_size))
        start = int(next(iter(query.get("pageToken", ())), "0") or "0")
        page: dict[str, Any] = {"models": entries[start : start + size]}
        if start + size < len(entries):
            page["nextPageToken"] = str(start + size)
        return page


# -- replies --------------------------------------------------------------------------------


async def _stream(conn: Connection, script: Script, model: str, record: RecordedRequest) -> Outcome:
    await conn.write(head(200, STREAM_HEADERS, conn.keep_alive))
    await pause(script.first_delay)
    cut = script.drop_after if script.error_after is None else script.error_after
    sent = len(script.tokens) if cut is None else min(cut, len(script.tokens))
    texts = 0
    for index, token in enumerate(script.tokens[:sent]):
        if index:
            await pause(script.delay)
        if isinstance(token, bytes):
            await send_chunk(conn, token, script.split_utf8)
        else:
            texts += 1
            candidate = {"content": _content([{"text": token}]), "index": 0}
            chunk = _response(model, [candidate], _running_usage(texts))
            await send_chunk(conn, _event(chunk), script.split_utf8)
        record.chunks_sent += 1
    if script.error_after is not None:
        error = _error_body(503, *_DEFAULT_ERRORS[503])
        await send_chunk(conn, _event(error), False)
        await conn.write(b"0\r\n\r\n")
        return Outcome.DONE
    if script.drop_after is not None:
        conn.close()
        return Outcome.SERVER_CLOSED
    last = _final_candidate(script) if script.done else _unfinished_candidate()
    await send_chunk(conn, _event(_response(model, [last], _usage(script))), script.split_utf8)
    await conn.write(b"0\r\n\r\n")
    return Outcome.DONE


async def _complete(conn: Connection, script: Script, model: str) -> Outcome:
    await pause(script.first_delay + script.delay * max(len(script.tokens) - 1, 0))
    if script.drop_after is not None:
        conn.close()
        return Outcome.SERVER_CLOSED
    text = "".join(token for token in script.tokens if isinstance(token, str))
    candidate = _final_candidate(script) if script.done else _unfinished_candidate()
    if "content" in candidate:
        candidate["content"] = _content([{"text": text}])
    return await send_json(conn, 200, _response(model, [candidate], _usage(script)))


async def _blocked(conn: Connection, model: str, block_reason: str, stream: bool) -> Outcome:
    reply: dict[str, Any] = {
        "promptFeedback": {"blockReason": block_reason, "safetyRatings": _SAFETY_RATINGS},
        "usageMetadata": {"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": PROMPT_TOKENS},
        "modelVersion": model,
        "responseId": _RESPONSE_ID,
    }
    if not stream:
        return await send_json(conn, 200, reply)
    await conn.write(head(200, STREAM_HEADERS, conn.keep_alive))
    await send_chunk(conn, _event(reply), False)
    await conn.write(b"0\r\n\r\n")
    return Outcome.DONE


async def _send_script_error(conn: Connection, script: Script) -> Outcome:
    extra: tuple[tuple[str, str], ...] = ()
    if script.retry_after is not None:
        extra = (("retry-after", script.retry_after),)
    if script.error_body is not None:
        return await send_json(conn, script.status, script.error_body, extra)
    status, message = _DEFAULT_ERRORS.get(script.status, ("UNKNOWN", reason(script.status)))
    details: list[dict[str, Any]] | None = None
    if script.status == 429 and script.retry_after is not None:
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{script.retry_after}s",
            }
        ]
    body = _error_body(script.status, status, message, details)
    return await send_json(conn, script.status, body, extra)


async def _send_error(conn: Connection, code: int, message: str) -> Outcome:
    status = _DEFAULT_ERRORS.get(code, ("UNKNOWN", ""))[0]
    return await send_json(conn, code, _error_body(code, status, message))


# -- wire shapes ------------------------------------------------------------------------------


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + _EVENT_END


def _content(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"parts": parts, "role": "model"}


def _response(
    model: str, candidates: list[dict[str, Any]], usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "candidates": candidates,
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": _RESPONSE_ID,
    }


def _final_candidate(script: Script) -> dict[str, Any]:
    finish = "STOP" if script.finish_reason is None else script.finish_reason
    if finish == "SAFETY":  # the API withholds the content and says which filter fired
        return {"finishReason": finish, "index": 0, "safetyRatings": _SAFETY_RATINGS}
    return {"content": _content([{"text": ""}]), "finishReason": finish, "index": 0}


def _unfinished_candidate() -> dict[str, Any]:
    return {"content": _content([{"text": ""}]), "index": 0}


def _running_usage(completion: int) -> dict[str, Any]:
    return {
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": completion,
        "totalTokenCount": PROMPT_TOKENS + completion,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}],
    }


def _usage(script: Script) -> dict[str, Any]:
    if script.usage is not None:
        return script.usage
    return _running_usage(sum(isinstance(token, str) for token in script.tokens))


def _error_body(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _model_entry(name: str, *, embedding: bool) -> dict[str, Any]:
    methods: Sequence[str] = (
        ("embedContent",)
        if embedding
        else ("generateContent", "countTokens", "createCachedContent", "batchGenerateContent")
    )
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name,
        "description": f"The fake {name}.",
        "inputTokenLimit": 2048 if embedding else 1_048_576,
        "outputTokenLimit": 1 if embedding else 65_536,
        "supportedGenerationMethods": list(methods),
    }


def signature_chunk(model: str = "gemini-2.5-flash") -> bytes:
    """A raw chunk whose only part is empty text carrying a ``thoughtSignature``."""
    part = {"text": "", "thoughtSignature": _SIGNATURE}
    candidate = {"content": _content([part]), "index": 0}
    return _event(_response(model, [candidate], _running_usage(0)))


def thought_chunk(text: str, model: str = "gemini-2.5-flash") -> bytes:
    """A raw chunk with a thought summary part (``"thought": true``), never shown."""
    candidate = {"content": _content([{"text": text, "thought": True}]), "index": 0}
    return _event(_response(model, [candidate], _running_usage(0)))
