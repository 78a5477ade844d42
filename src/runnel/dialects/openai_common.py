"""What the OpenAI dialects share: ids, message text, and the error shape.

Ids are pure functions of Runnel's: a response ``resp_X`` is the stream ``s_X``, its
output message ``msg_X`` the message ``m_X``, a chat completion ``chatcmpl-X`` the stream
``s_X``; nothing maps them in a table.
"""

from __future__ import annotations

from typing import Any

from runnel.errors import InvalidRequest, RunnelError
from runnel.providers.base import ChatMessage

# Runnel code → (OpenAI error type, OpenAI error code); the status is Runnel's but for
# the two in ``error_status``
ERRORS: dict[str, tuple[str, str | None]] = {
    "INVALID_REQUEST": ("invalid_request_error", None),
    "UNAUTHORIZED": ("invalid_request_error", "invalid_api_key"),
    "FORBIDDEN": ("permission_error", "forbidden"),
    "NOT_FOUND": ("invalid_request_error", "not_found"),
    "MODEL_NOT_FOUND": ("invalid_request_error", "model_not_found"),
    "STREAM_IN_PROGRESS": ("invalid_request_error", "conflict"),
    "CONFLICT": ("invalid_request_error", "conflict"),
    "RATE_LIMIT": ("rate_limit_error", "rate_limit_exceeded"),
    "OVERLOADED": ("server_error", "overloaded"),
    "CONTEXT_LENGTH_EXCEEDED": ("invalid_request_error", "context_length_exceeded"),
    "PROVIDER_AUTH": ("server_error", "provider_auth"),
    "PROVIDER_ERROR": ("server_error", "provider_error"),
    "STREAM_TIMEOUT": ("server_error", "timeout"),
    "INTERRUPTED": ("server_error", "interrupted"),
    "INTERNAL": ("server_error", None),
}
RETRYABLE = frozenset({"RATE_LIMIT", "OVERLOADED"})
"""The only codes an OpenAI client may retry: nothing started. Every other error answer
says ``x-should-retry: false`` (the SDKs retry 409 and 5xx with no idempotency key, and a
retry there would start a second generation, or fail the same way)."""


class InvalidParam(InvalidRequest):
    """An invalid request that names the parameter at fault (OpenAI's ``param``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def error_object(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind, openai_code = ERRORS.get(code, ERRORS["INTERNAL"])
    return {"error": {"message": message, "type": kind, "param": param, "code": openai_code}}


def error_status(code: str, status: int) -> int:
    """OpenAI's HTTP status for an error Runnel answers with ``status``: an unknown model is
    404 (Runnel: 400), a body that does not match the schema 400 (Runnel: 422)."""
    if code == "MODEL_NOT_FOUND":
        return 404
    return 400 if status == 422 else status


def error_headers(code: str) -> dict[str, str]:
    return {} if code in RETRYABLE else {"x-should-retry": "false"}


def error_of(exc: RunnelError) -> dict[str, Any]:
    return error_object(exc.code, exc.message, getattr(exc, "param", None))


def ids_of(stream_id: str) -> str:
    """The random part of a Runnel id (``s_X`` → ``X``)."""
    return stream_id.partition("_")[2]


def stream_of(public_id: str, prefix: str) -> str | None:
    """The stream a public id names (``resp_X`` → ``s_X``), or None for another shape."""
    if not public_id.startswith(prefix) or len(public_id) == len(prefix):
        return None
    return "s_" + public_id[len(prefix) :]


def text_of(content: Any, param: str) -> str:
    """The text of a message's content: a string, or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for index, part in enumerate(content):
            if not isinstance(part, dict):
                raise InvalidParam(f"{param}[{index}]", "a content part must be an object")
            kind = part.get("type")
            text = part.get("text")
            if kind not in ("text", "input_text", "output_text") or not isinstance(text, str):
                raise InvalidParam(
                    f"{param}[{index}]", f"only text content is supported (got {kind!r})"
                )
            texts.append(text)
        return "".join(texts)
    raise InvalidParam(param, "content must be a string or a list of text parts")


def fold_system(messages: list[ChatMessage]) -> list[ChatMessage]:
    """One leading system message for all system and developer ones (the providers take
    one), in their order, then the rest."""
    system = [m["content"] for m in messages if m["role"] == "system" and m["content"]]
    rest = [m for m in messages if m["role"] != "system"]
    if not system:
        return rest
    return [{"role": "system", "content": "\n\n".join(system)}, *rest]
