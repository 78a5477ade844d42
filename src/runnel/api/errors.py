"""Every error leaves the HTTP layer as ``{"error": {"code", "message"}}`` (DESIGN §2, §4);
under ``/v1`` as OpenAI's ``{"error": {"message", "type", "param", "code"}}``, with
OpenAI's statuses and ``x-should-retry`` (``runnel.dialects.openai_common``)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from runnel.api.schemas import ErrorBody, OpenAIErrorBody
from runnel.dialects import openai_common
from runnel.errors import RunnelError

log = logging.getLogger(__name__)

# the error answers any endpoint may give, in the OpenAPI schema (DESIGN §4)
ANSWERS: tuple[tuple[int, str], ...] = (
    (400, "invalid request, unknown model, prompt too long"),
    (401, "no or bad credentials"),
    (403, "not allowed (a role, a disabled account, a cross-site request)"),
    (404, "unknown, or someone else's"),
    (409, "a stream in progress, a name taken"),
    (422, "the body does not match the schema"),
    (429, "a limit of this server or of the provider"),
    (500, "a bug"),
    (502, "the provider failed"),
    (503, "overloaded or shutting down"),
    (504, "the provider timed out"),
)
DOCUMENTED: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": description} for status, description in ANSWERS
}
# under /v1: OpenAI's body; an unknown model is 404 there and a schema error 400
DOCUMENTED_OPENAI: dict[int | str, dict[str, object]] = {
    status: {"model": OpenAIErrorBody, "description": description}
    for status, description in ANSWERS
    if status != 422
}


OPENAI_PREFIX = "/v1/"


def _openai(request: Request) -> bool:
    path = request.url.path
    return path.startswith(OPENAI_PREFIX) or path == OPENAI_PREFIX[:-1]


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _answer(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    """The error in the dialect of the request's path."""
    if not _openai(request):
        return error_response(status, code, message, headers)
    return JSONResponse(
        openai_common.error_object(code, message, param),
        openai_common.error_status(code, status),
        headers={**(headers or {}), **openai_common.error_headers(code)},
    )


def retry_headers(exc: RunnelError) -> dict[str, str] | None:
    if exc.retry_after is not None:
        return {"Retry-After": str(max(1, round(exc.retry_after)))}
    if exc.code == "RATE_LIMIT":
        return {"Retry-After": "1"}
    return None


def from_runnel_error(exc: RunnelError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, retry_headers(exc))


async def _runnel_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RunnelError)
    param = getattr(exc, "param", None)
    return _answer(request, exc.status, exc.code, exc.message, retry_headers(exc), param)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _answer(request, 400, "INVALID_REQUEST", "the request body is not valid JSON")
    first = errors[0] if errors else {}
    location = [p for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    where = ".".join(str(p) for p in location)
    message = (
        f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
    )
    return _answer(request, 422, "INVALID_REQUEST", message, param=_param(location) or None)


def _param(location: list[object]) -> str:
    """OpenAI's spelling of where a value is: ``messages[0].role``."""
    out = ""
    for part in location:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _answer(request, 404, "NOT_FOUND", "no such endpoint")
    if exc.status_code == 405:
        return _answer(request, 405, "INVALID_REQUEST", "method not allowed")
    return _answer(request, exc.status_code, "INVALID_REQUEST", str(exc.detail))


async def _store_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("the database failed: %s", type(exc).__name__)
    return _answer(
        request,
        503,
        "OVERLOADED",
        "the database is unavailable; try again shortly",
        {"Retry-After": "2"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return _answer(request, 500, "INTERNAL", "something went wrong on the server")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RunnelError, _runnel_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(SQLAlchemyError, _store_down)
    app.add_exception_handler(Exception, _unexpected)
