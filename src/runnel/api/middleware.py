"""Raw ASGI middlewares (streaming bodies pass straight through): request ids, the
security headers of every response, and the Host check of a server without accounts."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

import orjson

from runnel import logs
from runnel.api.streaming import Message, Receive, Scope, Send

_VALID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Request ids: taken from a well-formed ``X-Request-ID`` or made; set in the log
    context and echoed on the response."""

    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[operator]
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _VALID.match(incoming) else secrets.token_hex(8)
        logs.request_id.set(request_id)
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)  # type: ignore[operator]


# the web app needs nothing else: no inline script, no other origin (docs/security.md)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
WITH_POLICY = [*SECURITY_HEADERS, (b"content-security-policy", CONTENT_SECURITY_POLICY.encode())]
# FastAPI's interactive API page loads its script from a CDN and runs inline code
NO_POLICY_PATHS = frozenset({"/api/docs", "/api/docs/oauth2-redirect"})


class SecurityHeadersMiddleware:
    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[operator]
            return
        added = SECURITY_HEADERS if scope["path"] in NO_POLICY_PATHS else WITH_POLICY

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)  # type: ignore[operator]


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_FORBIDDEN = orjson.dumps(
    {
        "error": {
            "code": "FORBIDDEN",
            "message": "without accounts or API tokens this server only answers requests "
            "addressed to localhost (see RUNNEL_ALLOWED_HOSTS)",
        }
    }
)


class LocalHostOnlyMiddleware:
    """While the server has no account and no API token (``local()``), refuse requests
    whose Host is not a loopback name (or one listed in ``allowed_hosts``): a web page on
    another origin must not reach a server that asks no credentials through DNS
    rebinding."""

    def __init__(self, app: object, allowed: frozenset[str], local: Callable[[], bool]) -> None:
        self.app = app
        self.allowed = LOOPBACK_NAMES | allowed
        self.local = local

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.local() and _hostname(scope) not in self.allowed:
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": _FORBIDDEN})
            return
        await self.app(scope, receive, send)  # type: ignore[operator]


def _hostname(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"host":
            host: str = value.decode("latin-1").strip().lower()
            if host.startswith("["):
                return host[1 : host.find("]")] if "]" in host else host
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return ""
