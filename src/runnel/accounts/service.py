"""Account policy: who is a request, who may sign up, sign in and manage whom.

Modes (docs/security.md):
- **local**: no account and no ``RUNNEL_API_TOKENS``. Every request is the local user;
  the server only listens on loopback.
- **tokens**: ``RUNNEL_API_TOKENS`` and no account: every request needs a token.
- **accounts**: once an account exists, every request needs a session, an API key or a
  token (a token acts as the account of the same name, if there is one).

Whether an account exists is cached: for good once one is seen, otherwise re-read at most
every ``ACCOUNTS_RECHECK`` seconds, so that a request with no credentials in local mode
costs no query; a first account made on another process is seen within that time. Every
credential that is presented is looked up in the store on every request, whatever the
cache says, so a logout, a revoked key or a disabled user stops working at once on every
process, and a session is never mistaken for the local user.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

from runnel.accounts.passwords import Passwords
from runnel.accounts.records import LOCAL, LOCAL_USER, ApiKey, Principal, Role, User
from runnel.accounts.store import AccountStore
from runnel.accounts.throttle import LoginThrottle
from runnel.accounts.tokens import (
    SHOWN_PREFIX,
    digest,
    looks_like_api_key,
    new_api_key,
    new_session_token,
)
from runnel.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from runnel.ids import new_id
from runnel.settings import Settings
from runnel.store.sql import Store

USERNAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # whole names only: fullmatch
PASSWORD_MIN, PASSWORD_MAX = 8, 256
KEY_NAME_MAX = 100
ACCOUNTS_RECHECK = 1.0
Signup = Literal["closed", "open", "approval"]


class AccountService:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = AccountStore(store)
        self.passwords = Passwords(
            settings.password_time_cost, settings.password_memory_kib, settings.password_parallelism
        )
        self.throttle = LoginThrottle(
            settings.login_limit_account, settings.login_limit_address, settings.redis_url
        )
        self._tokens = [(token.encode(), user) for token, user in settings.tokens.items()]
        self._accounts = False
        self._checked_at = -ACCOUNTS_RECHECK

    # modes

    @property
    def signup(self) -> Signup:
        return self.settings.signup

    @property
    def known_local(self) -> bool:
        """No token and no account seen yet (the cached answer; ``have_accounts`` refreshes
        it)."""
        return not self._tokens and not self._accounts

    async def have_accounts(self) -> bool:
        if self._accounts:
            return True
        now = time.monotonic()
        if now - self._checked_at >= ACCOUNTS_RECHECK:
            self._checked_at = now
            self._accounts = await self.store.has_users()
        return self._accounts

    # who is asking

    def token_user(self, presented: str) -> str | None:
        """The ``RUNNEL_API_TOKENS`` user of a token (compared in constant time)."""
        raw = presented.encode()
        found = None
        for known, owner in self._tokens:
            if hmac.compare_digest(known, raw):
                found = owner
        return found

    async def authenticate(self, authorization: str | None, cookie: str | None) -> Principal:
        """The principal of a request, from its ``Authorization`` header (a token or an API
        key) or else its session cookie. Raises ``Unauthorized``."""
        if authorization is not None:
            scheme, _, secret = authorization.partition(" ")
            secret = secret.strip()
            if scheme.lower() != "bearer" or not secret:
                raise Unauthorized("an Authorization: Bearer token is required")
            return await self._bearer(secret)
        if cookie:
            # looked up whatever the cache says: a session proves accounts exist, and a
            # first account made elsewhere a moment ago must not leave it treated as local
            user = await self.store.session_user(digest(cookie))
            if user is not None:
                self._accounts = True
                _check_usable(user)
                return _principal(user, "session")
            if await self.have_accounts():
                raise Unauthorized("your session has ended; sign in again")
        if self._tokens or await self.have_accounts():
            raise Unauthorized("sign in, or send an Authorization: Bearer token or API key")
        return LOCAL

    async def _bearer(self, secret: str) -> Principal:
        name = self.token_user(secret)
        if name is not None:
            found = await self.store.user_with_hash(name)
            if found is None:
                return Principal(name, name, "user", "token")
            self._accounts = True
            _check_usable(found[0])
            return _principal(found[0], "token")
        if looks_like_api_key(secret):
            user = await self.store.key_user(digest(secret))
            if user is not None:
                self._accounts = True
                _check_usable(user)
                return _principal(user, "key")
        if not self._tokens and not await self.have_accounts():
            # a server with nothing to check a credential against (the local user's): the
            # key an OpenAI client must send is taken like no header at all
            return LOCAL
        raise Unauthorized("the token is not valid")

    async def can_sign_up(self, trusted: bool) -> bool:
        """Whether a sign-up would be accepted: the first account only from a trusted
        client (loopback, or one holding a ``RUNNEL_API_TOKENS`` token), later ones while
        sign-up is open or needs approval."""
        if not await self.have_accounts():
            return trusted
        return self.signup != "closed"

    # signing up, in and out

    async def sign_up(self, username: str, password: str, *, trusted: bool) -> User:
        """A new account; the first one is an admin and takes over the local user's
        conversations. Raises ``Forbidden`` when sign-up is closed."""
        _check_username(username)
        _check_password(password)
        if not await self.have_accounts():
            if not trusted:
                raise Forbidden(
                    "the first account can only be created from the server's own machine "
                    "(or with runnel users add)"
                )
            first = await self._create(username, password, "admin", first=True)
            if first is not None:
                return first
        if self.signup == "closed":
            raise Forbidden("sign-up is closed: an administrator creates accounts")
        created = await self._create(username, password, "user", approved=self.signup == "open")
        assert created is not None
        return created

    async def log_in(self, username: str, password: str, address: str) -> tuple[User, str]:
        """``(user, session token)``. Wrong name or password: ``Unauthorized``, the same
        answer after the same work for both; a disabled or pending account: ``Forbidden``
        (only once the password was right)."""
        await self.throttle.check(username, address)
        found = None
        if USERNAME.fullmatch(username) and len(password) <= PASSWORD_MAX:
            found = await self.store.user_with_hash(username)
        matches, rehash = await self.passwords.verify(found[1] if found else None, password)
        if not matches or found is None:
            await self.throttle.failed(username, address)
            raise Unauthorized("wrong username or password")
        user = found[0]
        _check_usable(user)
        await self.throttle.succeeded(username)
        if rehash:
            await self.store.update_user(
                user.id, {"password_hash": await self.passwords.hash(password)}
            )
        return user, await self.new_session(user)

    async def new_session(self, user: User) -> str:
        token = new_session_token()
        lifetime = int(self.settings.session_lifetime * 1000)
        await self.store.create_session(digest(token), user.id, lifetime)
        return token

    async def log_out(self, cookie: str | None) -> None:
        if cookie:
            await self.store.end_session(digest(cookie))

    # API keys

    async def create_key(self, principal: Principal, name: str) -> tuple[ApiKey, str]:
        user = _account_of(principal)
        name = " ".join(name.split())
        if not name or len(name) > KEY_NAME_MAX:
            raise InvalidRequest(f"a key needs a name of 1 to {KEY_NAME_MAX} characters")
        _check_text(name, "the key's name")
        secret = new_api_key()
        key = await self.store.create_key(
            new_id("k"), user.id, name, secret[:SHOWN_PREFIX], digest(secret)
        )
        return key, secret

    async def list_keys(self, principal: Principal) -> list[ApiKey]:
        return await self.store.list_keys(_account_of(principal).id)

    async def revoke_key(self, principal: Principal, key_id: str) -> None:
        if not await self.store.delete_key(_account_of(principal).id, key_id):
            raise NotFound("API key not found")

    # administration

    async def list_users(self) -> list[User]:
        return await self.store.list_users()

    async def add_user(self, username: str, password: str, role: Role) -> User:
        _check_username(username)
        _check_password(password)
        created = await self._create(username, password, role, first=not await self.have_accounts())
        if created is None:  # another first account won the race: this one is not first
            created = await self._create(username, password, role)
        assert created is not None
        return created

    async def change_user(
        self, actor: Principal | None, user_id: str, changes: Mapping[str, Any]
    ) -> tuple[User, bool]:
        """Apply ``disabled``, ``role``, ``password`` and ``limits`` changes; ``actor`` is the
        admin doing it (None from the command line). Returns the user and whether it was
        just disabled (its sessions and keys are then gone; the caller stops its streams).
        """
        user = await self.store.user(user_id)
        if user is None:
            raise NotFound("user not found")
        values: dict[str, Any] = {}
        disabling = changes.get("disabled") is True and not user.disabled
        demoting = changes.get("role") == "user" and user.role == "admin"
        if actor is not None and actor.id == user.id and disabling:
            raise InvalidRequest("you cannot disable your own account")
        last_admin = user.role == "admin" and not user.disabled and (disabling or demoting)
        if last_admin and await self.store.active_admins() == [user.id]:
            raise Conflict("this is the last active administrator")
        if "disabled" in changes:
            values["disabled"] = bool(changes["disabled"])
            if not changes["disabled"]:
                values["approved"] = True  # enabling a pending account approves it
        if "role" in changes:
            values["role"] = changes["role"]
        if changes.get("password") is not None:
            _check_password(changes["password"])
            values["password_hash"] = await self.passwords.hash(changes["password"])
        for name, value in (changes.get("limits") or {}).items():
            values[name] = value
        await self.store.update_user(user.id, values)
        if disabling:
            await self.store.revoke_all(user.id)
        elif "password_hash" in values:  # signed-in browsers must use the new password
            await self.store.end_sessions_of(user.id)
        changed = await self.store.user(user.id)
        assert changed is not None
        return changed, disabling

    async def user_named(self, username: str) -> User:
        found = await self.store.user_with_hash(username)
        if found is None:
            raise NotFound(f"no user named {username!r}")
        return found[0]

    async def _create(
        self,
        username: str,
        password: str,
        role: Role,
        *,
        first: bool = False,
        approved: bool = True,
    ) -> User | None:
        take_over = [name for name in self._token_names() if name.lower() == username.lower()]
        if first:
            take_over.append(LOCAL_USER)
        created = await self.store.create_user(
            new_id("u"),
            username,
            role,
            await self.passwords.hash(password),
            approved=approved,
            only_if_first=first,
            take_over=take_over,
        )
        if created is not None:
            self._accounts = True
        return created

    def _token_names(self) -> set[str]:
        return {owner for _, owner in self._tokens}


def _principal(user: User, via: Literal["session", "key", "token"]) -> Principal:
    return Principal(user.id, user.username, user.role, via, limits=user.limits, user=user)


def _account_of(principal: Principal) -> User:
    if principal.user is None:
        raise Forbidden("API keys belong to accounts: sign in with an account first")
    return principal.user


def _check_usable(user: User) -> None:
    if user.pending:
        raise Forbidden("this account is waiting for an administrator's approval")
    if user.disabled:
        raise Forbidden("this account is disabled")


def _check_username(username: str) -> None:
    if not USERNAME.fullmatch(username):
        raise InvalidRequest("a username is 1 to 64 characters: letters, digits, '.', '_' and '-'")


def _check_password(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidRequest(f"a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters long")
    _check_text(password, "the password")


def _check_text(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{what} is not valid Unicode text") from exc
