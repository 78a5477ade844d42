"""Every error leaves the HTTP layer as ``{"error": {"code", "message"}}`` (DESIGN §2, §4)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from runnel.api.schemas import ErrorBody
from runnel.errors import RunnelError

log = logging.getLogger(__name__)

# the error answers any endpoint may give, in the OpenAPI schema (DESIGN §4)
DOCUMENTED: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
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
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def from_runnel_error(exc: RunnelError) -> JSONResponse:
    headers = None
    if exc.retry_after is not None:
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    elif exc.code == "RATE_LIMIT":
        headers = {"Retry-After": "1"}
    return error_response(exc.status, exc.code, exc.message, headers)


async def _runnel_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RunnelError)
    return from_runnel_error(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "INVALID_REQUEST", "the request body is not valid JSON")
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = (
        f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
    )
    return error_response(422, "INVALID_REQUEST", message)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, "NOT_FOUND", "no such endpoint")
    if exc.status_code == 405:
        return error_response(405, "INVALID_REQUEST", "method not allowed")
    return error_response(exc.status_code, "INVALID_REQUEST", str(exc.detail))


async def _store_down(_: Request, exc: Exception) -> JSONResponse:
    log.warning("the database failed: %s", type(exc).__name__)
    return error_response(
        503, "OVERLOADED", "the database is unavailable; try again shortly", {"Retry-After": "2"}
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "INTERNAL", "something went wrong on the server")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RunnelError, _runnel_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(SQLAlchemyError, _store_down)
    app.add_exception_handler(Exception, _unexpected)
