"""What the client raises: the server's errors (DESIGN §4) and a stream it could not get back."""

from __future__ import annotations

import orjson


class RunnelClientError(Exception):
    """An error answer of the server: its ``code`` (``MODEL_NOT_FOUND``…), ``status`` and,
    for limits, ``retry_after`` seconds."""

    def __init__(
        self, code: str, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


class StreamLost(RunnelClientError):
    """A reply's stream dropped and could not be resumed (expired, or the server stayed
    unreachable through every reconnect attempt)."""


def from_answer(status: int, body: bytes, retry_after: str | None) -> RunnelClientError:
    """The error of an answer with a non-2xx ``status``."""
    code, message = "INTERNAL", f"HTTP {status}"
    try:
        error = orjson.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    seconds = None
    if retry_after is not None:
        try:
            seconds = float(retry_after)
        except ValueError:
            seconds = None
    return RunnelClientError(code, message, status, seconds)
