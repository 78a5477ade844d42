"""``/api/v1/auth/*`` (sign-up, sign-in, the current user, API keys) and ``/api/v1/users``
(administration)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from runnel.accounts.records import Principal
from runnel.api.auth import (
    SESSION_COOKIE,
    client_address,
    is_https,
    is_loopback,
    same_site_only,
)
from runnel.api.deps import AdminDep, PrincipalDep, ServicesDep
from runnel.api.schemas import (
    Credentials,
    NewKey,
    NewUser,
    UserChanges,
    key_json,
    user_json,
)
from runnel.errors import Unauthorized

router = APIRouter(prefix="/api/v1")
SameSite = Depends(same_site_only)


@router.get("/auth/state")
async def state(request: Request, services: ServicesDep) -> dict[str, Any]:
    """Open: what the sign-in page needs to know."""
    return {
        "accounts": await services.accounts.have_accounts(),
        "signup": services.accounts.signup,
        "canSignUp": await services.accounts.can_sign_up(_trusted(request, services)),
    }


@router.post("/auth/signup", status_code=201, dependencies=[SameSite])
async def signup(body: Credentials, request: Request, services: ServicesDep) -> JSONResponse:
    user = await services.accounts.sign_up(
        body.username, body.password, trusted=_trusted(request, services)
    )
    response = JSONResponse({"user": user_json(user)}, status_code=201)
    if not user.pending:
        _set_session(response, request, await services.accounts.new_session(user), services)
    return response


@router.post("/auth/login", dependencies=[SameSite])
async def login(body: Credentials, request: Request, services: ServicesDep) -> JSONResponse:
    user, token = await services.accounts.log_in(
        body.username, body.password, client_address(request)
    )
    response = JSONResponse({"user": user_json(user)})
    _set_session(response, request, token, services)
    return response


@router.post("/auth/logout", status_code=204, dependencies=[SameSite])
async def logout(request: Request, services: ServicesDep) -> Response:
    await services.accounts.log_out(request.cookies.get(SESSION_COOKIE))
    response = Response(status_code=204)
    response.headers.append("set-cookie", _cookie("", 0, is_https(request)))
    return response


@router.get("/auth/me")
async def me(principal: PrincipalDep) -> dict[str, Any]:
    return {"user": principal_json(principal), "via": principal.via}


@router.get("/auth/keys")
async def list_keys(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    keys = await services.accounts.list_keys(principal)
    return {"data": [key_json(k) for k in keys]}


@router.post("/auth/keys", status_code=201)
async def create_key(
    body: NewKey, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    key, secret = await services.accounts.create_key(principal, body.name)
    return {**key_json(key), "key": secret}


@router.delete("/auth/keys/{key_id}", status_code=204)
async def revoke_key(key_id: str, principal: PrincipalDep, services: ServicesDep) -> Response:
    await services.accounts.revoke_key(principal, key_id)
    return Response(status_code=204)


@router.get("/users")
async def list_users(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    users = await services.accounts.list_users()
    return {"data": [user_json(u, limits=True) for u in users]}


@router.post("/users", status_code=201)
async def add_user(body: NewUser, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    user = await services.accounts.add_user(body.username, body.password, body.role)
    return {"user": user_json(user, limits=True)}


@router.patch("/users/{user_id}")
async def change_user(
    user_id: str, body: UserChanges, admin: AdminDep, services: ServicesDep
) -> dict[str, Any]:
    # null for disabled, role or password means "unchanged"; inside limits, "the default"
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    if body.limits is not None:
        changes["limits"] = body.limits.model_dump(exclude_unset=True)
    user, disabled = await services.accounts.change_user(admin, user_id, changes)
    if disabled:
        await services.chat.stop_streams_of(user.id)
    return {"user": user_json(user, limits=True)}


def principal_json(principal: Principal) -> dict[str, Any]:
    if principal.user is not None:
        return user_json(principal.user)
    return {
        "id": principal.id,
        "username": principal.username,
        "role": principal.role,
        "disabled": False,
        "pending": False,
        "createdAt": None,
        "lastSeenAt": None,
    }


def _trusted(request: Request, services: ServicesDep) -> bool:
    """May this request create the first account: from this machine, or holding a
    ``RUNNEL_API_TOKENS`` token."""
    if is_loopback(client_address(request)):
        return True
    authorization = request.headers.get("authorization", "")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return False
    if services.accounts.token_user(secret.strip()) is None:
        raise Unauthorized("the token is not valid")
    return True


def _set_session(response: Response, request: Request, token: str, services: ServicesDep) -> None:
    lifetime = int(services.settings.session_lifetime)
    response.headers.append("set-cookie", _cookie(token, lifetime, is_https(request)))


def _cookie(token: str, max_age: int, secure: bool) -> str:
    """The session cookie (a token is URL-safe base64: nothing to quote); an empty one with
    ``Max-Age=0`` removes it."""
    flags = "; Secure" if secure else ""
    return f"{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{flags}"
