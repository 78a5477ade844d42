"""Bearer-token auth. With no ``RUNNEL_API_TOKENS`` (allowed on a loopback bind only) every
request is the single local user."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from runnel.errors import Unauthorized

LOCAL_USER = "local"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Authenticator:
    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = [(token.encode(), user) for token, user in tokens.items()]

    def user_for(self, authorization: str | None) -> str:
        if not self._tokens:
            return LOCAL_USER
        if not authorization:
            raise Unauthorized("an Authorization: Bearer token is required")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("an Authorization: Bearer token is required")
        presented = token.strip().encode()
        user = None
        for known, owner in self._tokens:
            if hmac.compare_digest(known, presented):
                user = owner
        if user is None:
            raise Unauthorized("the token is not valid")
        return user


async def current_user(request: Request) -> str:
    """A FastAPI dependency; ``async`` so that it runs on the event loop (FastAPI sends a
    plain function to a worker thread, a hop that costs more than the check)."""
    authenticator: Authenticator = request.app.state.runnel.auth
    return authenticator.user_for(request.headers.get("authorization"))
