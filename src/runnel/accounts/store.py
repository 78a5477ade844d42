"""The SQL of accounts: users, sessions and API keys, on the store's engine.

Every lookup of a credential is one indexed read joined with its user. ``last_seen_at``
of sessions, keys and users is written at most once per ``SEEN_EVERY_MS`` per credential,
so a busy client does not turn every request into a write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Row, delete, exists, insert, literal, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from runnel.accounts.records import ApiKey, Limits, User
from runnel.errors import Conflict
from runnel.store.schema import api_keys, conversations, sessions, users
from runnel.store.sql import Store, now_ms

SEEN_EVERY_MS = 60_000
FIRST_ACCOUNT_LOCK = 0x72756E6E0001  # pg_advisory_xact_lock key while creating the first account

_USER_COLUMNS = (
    users.c.id,
    users.c.username,
    users.c.role,
    users.c.disabled,
    users.c.approved,
    users.c.max_streams,
    users.c.messages_per_minute,
    users.c.output_tokens_per_day,
    users.c.created_at,
    users.c.last_seen_at,
)


class AccountStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    # users

    async def has_users(self) -> bool:
        async with self._store.engine.connect() as conn:
            return (await conn.scalar(select(exists().select_from(users)))) is True

    async def create_user(
        self,
        user_id: str,
        username: str,
        role: str,
        password_hash: str,
        *,
        approved: bool,
        only_if_first: bool = False,
        take_over: Sequence[str] = (),
    ) -> User | None:
        """Insert a user, and give it the conversations of the users named in
        ``take_over`` (the local user, a token user of the same name). With
        ``only_if_first``, only while there is no user at all (None otherwise): two
        first sign-ups at once make one account. Raises ``Conflict`` for a taken name."""
        stamp = now_ms()
        row: dict[str, Any] = {
            "id": user_id,
            "username": username,
            "username_key": username.lower(),
            "role": role,
            "password_hash": password_hash,
            "disabled": False,
            "approved": approved,
            "created_at": stamp,
            "updated_at": stamp,
        }
        try:
            async with self._store.engine.begin() as conn:
                if only_if_first:
                    if conn.dialect.name == "postgresql":
                        await conn.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_ACCOUNT_LOCK}
                        )
                    # one statement: SQLite takes its write lock before it reads
                    statement = insert(users).from_select(
                        list(row),
                        select(*(literal(v, users.c[k].type) for k, v in row.items())).where(
                            ~exists().select_from(users)
                        ),
                    )
                    if (await conn.execute(statement)).rowcount != 1:
                        return None
                else:
                    await conn.execute(insert(users).values(row))
                if take_over:
                    await conn.execute(
                        update(conversations)
                        .where(conversations.c.user_id.in_(list(take_over)))
                        .values(user_id=user_id)
                    )
        except IntegrityError as exc:
            raise Conflict(f"the username {username!r} is taken") from exc
        return _user(row)

    async def user(self, user_id: str) -> User | None:
        async with self._store.engine.connect() as conn:
            found = (
                await conn.execute(select(*_USER_COLUMNS).where(users.c.id == user_id))
            ).first()
        return _user(found._mapping) if found else None

    async def user_with_hash(self, username: str) -> tuple[User, str] | None:
        query = select(*_USER_COLUMNS, users.c.password_hash).where(
            users.c.username_key == username.lower()
        )
        async with self._store.engine.connect() as conn:
            found = (await conn.execute(query)).first()
        return (_user(found._mapping), found.password_hash) if found else None

    async def list_users(self) -> list[User]:
        query = select(*_USER_COLUMNS).order_by(users.c.created_at, users.c.id)
        async with self._store.engine.connect() as conn:
            return [_user(row._mapping) for row in (await conn.execute(query)).all()]

    async def update_user(self, user_id: str, changes: Mapping[str, Any]) -> None:
        if not changes:
            return
        async with self._store.engine.begin() as conn:
            await conn.execute(
                update(users).where(users.c.id == user_id).values(**changes, updated_at=now_ms())
            )

    async def active_admins(self) -> list[str]:
        query = select(users.c.id).where(users.c.role == "admin", users.c.disabled.is_(False))
        async with self._store.engine.connect() as conn:
            return [row[0] for row in (await conn.execute(query)).all()]

    async def revoke_all(self, user_id: str) -> None:
        """End every session and API key of a user."""
        async with self._store.engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
            await conn.execute(delete(api_keys).where(api_keys.c.user_id == user_id))

    # sessions

    async def create_session(self, token_hash: str, user_id: str, lifetime_ms: int) -> None:
        stamp = now_ms()
        async with self._store.engine.begin() as conn:
            await conn.execute(
                insert(sessions).values(
                    token_hash=token_hash,
                    user_id=user_id,
                    created_at=stamp,
                    last_seen_at=stamp,
                    expires_at=stamp + lifetime_ms,
                )
            )
            await _seen(conn, user_id, stamp)

    async def session_user(self, token_hash: str) -> User | None:
        """The user of a live session (expired ones are deleted when found)."""
        stamp = now_ms()
        query = (
            select(*_USER_COLUMNS, sessions.c.expires_at, sessions.c.last_seen_at.label("seen"))
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.token_hash == token_hash)
        )
        async with self._store.engine.connect() as conn:
            found = (await conn.execute(query)).first()
        if found is None:
            return None
        if found.expires_at <= stamp:
            await self.end_session(token_hash)
            return None
        if stamp - found.seen >= SEEN_EVERY_MS:
            async with self._store.engine.begin() as conn:
                await conn.execute(
                    update(sessions)
                    .where(sessions.c.token_hash == token_hash)
                    .values(last_seen_at=stamp)
                )
                await _seen(conn, found.id, stamp)
        return _user(found._mapping)

    async def end_sessions_of(self, user_id: str) -> None:
        async with self._store.engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))

    async def end_session(self, token_hash: str) -> None:
        async with self._store.engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.token_hash == token_hash))

    # API keys

    async def create_key(
        self, key_id: str, user_id: str, name: str, prefix: str, key_hash: str
    ) -> ApiKey:
        stamp = now_ms()
        async with self._store.engine.begin() as conn:
            await conn.execute(
                insert(api_keys).values(
                    id=key_id,
                    user_id=user_id,
                    name=name,
                    prefix=prefix,
                    key_hash=key_hash,
                    created_at=stamp,
                )
            )
        return ApiKey(key_id, user_id, name, prefix, stamp, None)

    async def list_keys(self, user_id: str) -> list[ApiKey]:
        query = (
            select(api_keys)
            .where(api_keys.c.user_id == user_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        async with self._store.engine.connect() as conn:
            return [_key(row) for row in (await conn.execute(query)).all()]

    async def delete_key(self, user_id: str, key_id: str) -> bool:
        async with self._store.engine.begin() as conn:
            result = await conn.execute(
                delete(api_keys).where(api_keys.c.id == key_id, api_keys.c.user_id == user_id)
            )
        return bool(result.rowcount)

    async def key_user(self, key_hash: str) -> User | None:
        stamp = now_ms()
        query = (
            select(
                *_USER_COLUMNS, api_keys.c.id.label("key_id"), api_keys.c.last_used_at.label("used")
            )
            .join(users, users.c.id == api_keys.c.user_id)
            .where(api_keys.c.key_hash == key_hash)
        )
        async with self._store.engine.connect() as conn:
            found = (await conn.execute(query)).first()
        if found is None:
            return None
        if found.used is None or stamp - found.used >= SEEN_EVERY_MS:
            async with self._store.engine.begin() as conn:
                await conn.execute(
                    update(api_keys).where(api_keys.c.id == found.key_id).values(last_used_at=stamp)
                )
                await _seen(conn, found.id, stamp)
        return _user(found._mapping)


async def _seen(conn: AsyncConnection, user_id: str, stamp: int) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(last_seen_at=stamp))


def _user(row: Any) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        role=row["role"],
        disabled=bool(row["disabled"]),
        approved=bool(row["approved"]),
        limits=Limits(
            row.get("max_streams"), row.get("messages_per_minute"), row.get("output_tokens_per_day")
        ),
        created_at=row["created_at"],
        last_seen_at=row.get("last_seen_at"),
    )


def _key(row: Row[Any]) -> ApiKey:
    return ApiKey(row.id, row.user_id, row.name, row.prefix, row.created_at, row.last_used_at)
