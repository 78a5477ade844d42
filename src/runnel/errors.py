"""The one error hierarchy of Runnel; codes and statuses are those of DESIGN §4.

    RunnelError                      code             HTTP (before a stream)
    ├── InvalidRequest               INVALID_REQUEST  400 (422 for schema errors)
    ├── Unauthorized                 UNAUTHORIZED     401
    ├── Forbidden                    FORBIDDEN        403
    ├── NotFound                     NOT_FOUND        404
    ├── StreamInProgress             STREAM_IN_PROGRESS 409
    ├── Conflict                     CONFLICT         409  (a name taken, the last admin)
    ├── RateLimited                  RATE_LIMIT       429  (retryable, Retry-After)
    ├── Overloaded                   OVERLOADED       503  (retryable)
    ├── ModelNotFound                MODEL_NOT_FOUND  400
    ├── ProviderAuth                 PROVIDER_AUTH    502
    ├── ProviderError                PROVIDER_ERROR   502  (retryable)
    │   └── StreamingUnsupported     PROVIDER_ERROR   502  (the router retries unstreamed)
    ├── ContextLengthExceeded        CONTEXT_LENGTH_EXCEEDED 400
    ├── StreamTimeout                STREAM_TIMEOUT   504  (retryable)
    ├── Interrupted                  INTERRUPTED      502 in a JSON reply (retryable)
    └── Internal                     INTERNAL         500

Foreign exceptions (provider SDKs, HTTP clients, the database) are turned into these at
one boundary each (``providers/openai.py`` ``map_openai_error``); the HTTP layer turns
them into responses in ``api/errors.py``. Messages are written for people and never carry
keys, provider bodies or paths.
"""

from __future__ import annotations

from typing import ClassVar


class RunnelError(Exception):
    code: ClassVar[str] = "INTERNAL"
    status: ClassVar[int] = 500
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after = retry_after
        self.provider = provider


class InvalidRequest(RunnelError):
    code = "INVALID_REQUEST"
    status = 400


class Unauthorized(RunnelError):
    code = "UNAUTHORIZED"
    status = 401


class Forbidden(RunnelError):
    code = "FORBIDDEN"
    status = 403


class NotFound(RunnelError):
    code = "NOT_FOUND"
    status = 404


class StreamInProgress(RunnelError):
    code = "STREAM_IN_PROGRESS"
    status = 409


class Conflict(RunnelError):
    code = "CONFLICT"
    status = 409


class RateLimited(RunnelError):
    code = "RATE_LIMIT"
    status = 429
    default_retryable = True


class Overloaded(RunnelError):
    code = "OVERLOADED"
    status = 503
    default_retryable = True


class ModelNotFound(RunnelError):
    code = "MODEL_NOT_FOUND"
    status = 400


class ProviderAuth(RunnelError):
    code = "PROVIDER_AUTH"
    status = 502


class ProviderError(RunnelError):
    code = "PROVIDER_ERROR"
    status = 502
    default_retryable = True


class StreamingUnsupported(ProviderError):
    """The upstream refused a streaming request for this model; asking again without
    streaming may work. Never sent to a client as such: the router retries or it surfaces as
    ``PROVIDER_ERROR``."""

    default_retryable = False


class ContextLengthExceeded(RunnelError):
    code = "CONTEXT_LENGTH_EXCEEDED"
    status = 400


class StreamTimeout(RunnelError):
    code = "STREAM_TIMEOUT"
    status = 504
    default_retryable = True


class Interrupted(RunnelError):
    code = "INTERRUPTED"
    status = 502
    default_retryable = True


class Internal(RunnelError):
    code = "INTERNAL"
    status = 500


BY_CODE: dict[str, type[RunnelError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        StreamInProgress,
        Conflict,
        RateLimited,
        Overloaded,
        ModelNotFound,
        ProviderAuth,
        ProviderError,
        ContextLengthExceeded,
        StreamTimeout,
        Interrupted,
        Internal,
    )
}
