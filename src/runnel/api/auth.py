"""The one door: every ``/api/v1`` request is resolved to a ``Principal`` here, before its
route runs — from a bearer token or API key (programs), a session cookie (people), or,
on a server without accounts and tokens, the single local user.

A cookie-authenticated request that changes something must come from this site's own
pages: one whose ``Sec-Fetch-Site`` says another site sent it, or whose ``Origin`` is not
the host it was sent to, is refused with 403 before anything runs. A bearer-authenticated
request is exempt (a browser never adds a bearer token by itself).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from fastapi import Request

from runnel.accounts.records import Principal
from runnel.accounts.service import AccountService
from runnel.errors import Forbidden

SESSION_COOKIE = "runnel_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PRINCIPAL = "runnel.principal"  # scope key: the principal, once resolved


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cross_site(request: Request) -> str | None:
    """Why a state-changing browser request is not from this site, or None. A page of an
    origin in ``cors_origins`` counts as this site's own."""
    origin = request.headers.get("origin")
    if origin is not None and origin.lower() in request.app.state.runnel.settings.origins:
        return None
    site = request.headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site is {site}"
    if origin is not None and not _same_origin(origin, request):
        return "its Origin is not this server"
    return None


def refuse_cross_site(request: Request) -> None:
    reason = cross_site(request)
    if reason is not None:
        raise Forbidden(f"cross-site request refused ({reason})")


async def same_site_only(request: Request) -> None:
    """A dependency for sign-up, sign-in and sign-out (no cookie needed, but a browser's
    all the same): refused before the body is even read."""
    refuse_cross_site(request)


def _same_origin(origin: str, request: Request) -> bool:
    host = request.headers.get("host", "")
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme != request.url.scheme or not parts.netloc:
        return False  # another scheme, "null" and the like
    default = "443" if parts.scheme == "https" else "80"
    return _with_port(parts.netloc.lower(), default) == _with_port(host.lower(), default)


def _with_port(netloc: str, default: str) -> str:
    if netloc.endswith("]") or ":" not in netloc.rsplit("]", 1)[-1]:
        return f"{netloc}:{default}"
    return netloc


def client_address(request: Request) -> str:
    """The client's address (the proxy's X-Forwarded-For when uvicorn trusts that proxy)."""
    return request.client.host if request.client else ""


def is_https(request: Request) -> bool:
    """Over TLS, directly or by a trusted proxy's X-Forwarded-Proto (uvicorn applies it)."""
    return request.url.scheme == "https"


async def current_principal(request: Request) -> Principal:
    """A FastAPI dependency; ``async`` so that it runs on the event loop (FastAPI sends a
    plain function to a worker thread, a hop that costs more than the check)."""
    scope = request.scope
    found: Principal | None = scope.get(PRINCIPAL)
    if found is not None:
        return found
    accounts: AccountService = request.app.state.runnel.accounts
    principal = await accounts.authenticate(
        request.headers.get("authorization"), request.cookies.get(SESSION_COOKIE)
    )
    if principal.via == "session" and request.method not in SAFE_METHODS:
        refuse_cross_site(request)
    scope[PRINCIPAL] = principal
    return principal


async def current_user(request: Request) -> str:
    """The id that scopes every query: the principal's."""
    return (await current_principal(request)).id


async def current_admin(request: Request) -> Principal:
    principal = await current_principal(request)
    if not principal.is_admin or principal.via == "local":
        raise Forbidden("only an administrator can do this")
    return principal
