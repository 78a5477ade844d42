"""What the client raises. Every exception is a ``RunnelClientError`` carrying the server's
``code`` (DESIGN §4), ``message``, HTTP ``status`` and, for limits, ``retry_after`` seconds;
the class says the kind, so a caller can catch what it handles and let the rest go::

    RunnelClientError
    ├── InvalidRequest          INVALID_REQUEST (400, 422)
    │   ├── ModelNotFound       MODEL_NOT_FOUND (400)
    │   └── ContextTooLong      CONTEXT_LENGTH_EXCEEDED (400)
    ├── Unauthorized            UNAUTHORIZED (401)
    ├── Forbidden               FORBIDDEN (403)
    ├── NotFound                NOT_FOUND (404)
    ├── Conflict                CONFLICT (409)
    │   └── StreamInProgress    STREAM_IN_PROGRESS (409)
    ├── RateLimited             RATE_LIMIT (429), with retry_after
    ├── Overloaded              OVERLOADED (503), with retry_after when the server says
    ├── ProviderFailed          PROVIDER_AUTH, PROVIDER_ERROR (502), STREAM_TIMEOUT (504)
    ├── ServerError             INTERNAL (500), and any unknown code with a 5xx
    ├── Unreachable             UNREACHABLE: no answer at all (refused, reset, timed out)
    └── StreamLost              a reply's stream that could not be resumed (its code: the
                                last answer's, e.g. NOT_FOUND once expired, or INTERRUPTED)

A reply that fails *after* its stream started is not an exception: it ends with a
``Failed`` event (``events.py``), because the text before the failure is worth having.
``retryable`` says whether the same request may succeed later unchanged.
"""

from __future__ import annotations

from typing import ClassVar

import orjson

UNREACHABLE = "UNREACHABLE"


class RunnelClientError(Exception):
    """An error answer of the server (or none at all, ``Unreachable``)."""

    retryable: ClassVar[bool] = False

    def __init__(
        self, code: str, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


class InvalidRequest(RunnelClientError):
    """The request was refused as it is (empty or too long a message, a bad field)."""


class ModelNotFound(InvalidRequest):
    """No configured provider has the model asked for (``models()`` lists them)."""


class ContextTooLong(InvalidRequest):
    """The prompt (history included) does not fit the model."""


class Unauthorized(RunnelClientError):
    """No key, or one the server does not know (``key=`` or ``RUNNEL_API_KEY``)."""


class Forbidden(RunnelClientError):
    """The key is known but may not do this."""


class NotFound(RunnelClientError):
    """No such conversation or stream, or someone else's."""


class Conflict(RunnelClientError):
    """The request clashes with the state of the server."""


class StreamInProgress(Conflict):
    """The conversation is already replying: stop or wait for that reply first."""


class RateLimited(RunnelClientError):
    """A limit of the server or of its provider; ``retry_after`` says when to come back."""

    retryable = True


class Overloaded(RunnelClientError):
    """The server holds as many streams as it may."""

    retryable = True


class ProviderFailed(RunnelClientError):
    """The model's provider refused the server's key, failed, or did not answer in time."""

    retryable = True


class ServerError(RunnelClientError):
    """A bug on the server (logged there with its correlation id)."""


class Unreachable(RunnelClientError):
    """No answer: the connection was refused, reset or timed out before one came. After a
    request that starts a reply the reply may have started anyway (it is not retried)."""

    retryable = True


class StreamLost(RunnelClientError):
    """A reply's stream dropped and could not be resumed: it expired, the key was refused,
    or the server stayed unreachable through every reconnect attempt."""


_BY_CODE: dict[str, type[RunnelClientError]] = {
    "INVALID_REQUEST": InvalidRequest,
    "MODEL_NOT_FOUND": ModelNotFound,
    "CONTEXT_LENGTH_EXCEEDED": ContextTooLong,
    "UNAUTHORIZED": Unauthorized,
    "FORBIDDEN": Forbidden,
    "NOT_FOUND": NotFound,
    "CONFLICT": Conflict,
    "STREAM_IN_PROGRESS": StreamInProgress,
    "RATE_LIMIT": RateLimited,
    "OVERLOADED": Overloaded,
    "PROVIDER_AUTH": ProviderFailed,
    "PROVIDER_ERROR": ProviderFailed,
    "STREAM_TIMEOUT": ProviderFailed,
    "INTERNAL": ServerError,
}


# the code of an answer whose body is not the server's error shape (a proxy's page, say);
# a proxy's 502 or 504 is not the provider's failure, so any other 5xx is INTERNAL
_BY_STATUS = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT"}
_BY_STATUS |= {429: "RATE_LIMIT", 503: "OVERLOADED"}


def from_answer(status: int, body: bytes, retry_after: str | None) -> RunnelClientError:
    """The error of an answer with a non-2xx ``status``."""
    fallback = "INTERNAL" if status >= 500 else "INVALID_REQUEST"
    code, message = _BY_STATUS.get(status, fallback), f"HTTP {status}"
    try:
        error = orjson.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    kind = _BY_CODE.get(code, ServerError if status >= 500 else RunnelClientError)
    return kind(code, message, status, retry_after_seconds(retry_after))


def retry_after_seconds(retry_after: str | None) -> float | None:
    """``Retry-After`` in seconds (the server sends seconds, never an HTTP date)."""
    if retry_after is None:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        return None


def unreachable(url: str, exc: Exception) -> Unreachable:
    return Unreachable(UNREACHABLE, f"no answer from {url} ({type(exc).__name__}: {exc})")
