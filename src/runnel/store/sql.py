"""The SQL store: SQLite (default, WAL) or PostgreSQL through SQLAlchemy's async engine.

SQLite runs in aiosqlite's worker threads, so writes never block the event loop. The
generation path writes three times per reply at most — begin (one transaction claiming the
conversation and inserting both messages), batched checkpoints, finish — and never per token.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import ColumnElement, Update

from runnel.errors import InvalidRequest, NotFound, StreamInProgress
from runnel.store import search
from runnel.store.records import Conversation, Message, NewMessage, ReplyOutcome
from runnel.store.schema import conversations, messages, usage

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x72756E6E656C  # pg_advisory_xact_lock key held while migrating ("runnel")
# what a failing database raises through SQLAlchemy and its drivers
STORE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, OSError)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Store:
    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("store is not open")
        return self._engine

    async def open(self) -> None:
        url = make_url(self.url)
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=self.pool_size, max_overflow=self.pool_size, pool_pre_ping=True)
        engine = create_async_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        self._engine = engine
        async with engine.begin() as conn:
            if url.get_backend_name() == "postgresql":
                # processes starting together (--workers) migrate one after the other
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError):
            return False
        return True

    # conversations

    async def create_conversation(
        self,
        conversation_id: str,
        user_id: str,
        title: str,
        model: str | None,
        system_prompt: str | None,
    ) -> Conversation:
        stamp = now_ms()
        row: dict[str, Any] = {
            "id": conversation_id,
            "user_id": user_id,
            "title": title,
            "model": model,
            "system_prompt": system_prompt,
            "active_stream_id": None,
            "created_at": stamp,
            "updated_at": stamp,
        }
        async with self.engine.begin() as conn:
            await conn.execute(insert(conversations).values(row))
        return Conversation(**row)

    async def import_conversation(
        self, conversation: Conversation, rows: Sequence[Message]
    ) -> None:
        """Insert a whole conversation (an import), atomically."""
        async with self.engine.begin() as conn:
            await conn.execute(insert(conversations).values(asdict(conversation)))
            if rows:
                await conn.execute(insert(messages), [asdict(m) for m in rows])

    async def create_conversation_once(
        self, conversation_id: str, user_id: str, title: str, model: str | None
    ) -> tuple[Conversation, bool]:
        """Create the conversation unless another request just did (same id); either way,
        the conversation, and True when this call created it."""
        try:
            return await self.create_conversation(
                conversation_id, user_id, title, model, None
            ), True
        except IntegrityError:
            return await self.get_conversation(user_id, conversation_id), False

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation:
        async with self.engine.connect() as conn:
            return await _conversation(conn, user_id, conversation_id)

    async def list_conversations(
        self, user_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Conversation], str | None]:
        query = select(conversations).where(conversations.c.user_id == user_id)
        if cursor:
            updated_at, last_id = _decode_cursor(cursor)
            query = query.where(
                or_(
                    conversations.c.updated_at < updated_at,
                    and_(conversations.c.updated_at == updated_at, conversations.c.id < last_id),
                )
            )
        query = query.order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit + 1))).mappings().all()
        items = [Conversation(**row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = _encode_cursor(last.updated_at, last.id)
        return items, next_cursor

    async def search_conversations(
        self, user_id: str, query: str, limit: int
    ) -> list[tuple[Conversation, search.Hit]]:
        """The user's conversations that match ``query`` (``store/search.py``), best first."""
        async with self.engine.connect() as conn:
            hits = await search.search(conn, user_id, query, limit)
            if not hits:
                return []
            found = select(conversations).where(
                conversations.c.id.in_([h.conversation_id for h in hits])
            )
            rows = (await conn.execute(found)).mappings().all()
        by_id = {row["id"]: Conversation(**row) for row in rows}
        return [(by_id[h.conversation_id], h) for h in hits if h.conversation_id in by_id]

    async def set_suggestions(self, message_id: str, suggestions: Sequence[str]) -> None:
        """Store the follow-up questions of a reply (an empty list: there are none)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(suggestions=orjson.dumps(list(suggestions)).decode())
            )

    async def set_generated_title(self, conversation_id: str, provisional: str, title: str) -> bool:
        """Replace the provisional title with a model's, unless it changed meanwhile (the
        person renamed the conversation); whether it was replaced."""
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id, conversations.c.title == provisional)
                .values(title=title)
            )
        return bool(done.rowcount == 1)

    async def update_conversation(
        self, user_id: str, conversation_id: str, changes: dict[str, Any]
    ) -> Conversation:
        async with self.engine.begin() as conn:
            if changes:
                await conn.execute(
                    update(conversations)
                    .where(
                        conversations.c.id == conversation_id, conversations.c.user_id == user_id
                    )
                    .values(**changes, updated_at=now_ms())
                )
            return await _conversation(conn, user_id, conversation_id)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> str | None:
        """Delete; returns the stream that was active (the caller cancels it)."""
        async with self.engine.begin() as conn:
            found = await _conversation(conn, user_id, conversation_id)
            await conn.execute(
                delete(messages).where(messages.c.conversation_id == conversation_id)
            )
            await conn.execute(delete(conversations).where(conversations.c.id == conversation_id))
        return found.active_stream_id

    async def list_messages(self, conversation_id: str) -> list[Message]:
        query = (
            select(messages)
            .where(messages.c.conversation_id == conversation_id)
            .order_by(messages.c.seq)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Message(**row) for row in rows]

    async def get_message(self, message_id: str) -> Message | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(messages).where(messages.c.id == message_id)))
                .mappings()
                .first()
            )
        return Message(**row) if row else None

    async def reply_of_stream(self, user_id: str, stream_id: str) -> Message | None:
        """The assistant message a stream wrote, in one of ``user_id``'s conversations."""
        query = (
            select(messages)
            .join(conversations, conversations.c.id == messages.c.conversation_id)
            .where(
                messages.c.stream_id == stream_id,
                messages.c.role == "assistant",
                conversations.c.user_id == user_id,
            )
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return Message(**row) if row else None

    async def delete_turn(self, user_id: str, conversation_id: str, message_id: str) -> bool:
        """Delete an assistant message and the user messages just before it (its turn); the
        conversation too when nothing is left. True when the conversation went with it."""
        async with self.engine.begin() as conn:
            await _conversation(conn, user_id, conversation_id)
            rows = (
                await conn.execute(
                    select(messages.c.id, messages.c.role)
                    .where(messages.c.conversation_id == conversation_id)
                    .order_by(messages.c.seq)
                )
            ).all()
            ids = [row.id for row in rows]
            if message_id not in ids:
                return False
            end = ids.index(message_id)
            start = end
            while start > 0 and rows[start - 1].role != "assistant":
                start -= 1
            doomed = ids[start : end + 1]
            await conn.execute(delete(messages).where(messages.c.id.in_(doomed)))
            if len(doomed) < len(ids):
                return False
            await conn.execute(delete(conversations).where(conversations.c.id == conversation_id))
            return True

    # the life of a reply

    async def begin_reply(
        self,
        user_id: str,
        conversation_id: str,
        stream_id: str,
        new: Sequence[NewMessage],
        replace: str | None = None,
        title: str | None = None,
        model: str | None = None,
        stale: str | None = None,
        edit: tuple[str, str] | None = None,
    ) -> None:
        """Claim the conversation for ``stream_id`` and insert ``new`` messages, atomically.

        Raises ``StreamInProgress`` when another stream holds the conversation, ``NotFound``
        when it is not the user's. ``replace`` names a message deleted in the same
        transaction (regenerate); ``edit`` = (a user message, its new text) rewrites that
        message and deletes the messages after it (edit and resend); ``title`` renames a
        conversation still titled by default; ``model`` becomes the conversation's model (the
        person picked it for this message); ``stale`` names a claim known to be dead, which
        may be taken over.
        """
        stamp = now_ms()
        async with self.engine.begin() as conn:
            claimed = await conn.execute(
                update(conversations)
                .where(
                    conversations.c.id == conversation_id,
                    conversations.c.user_id == user_id,
                    or_(
                        conversations.c.active_stream_id.is_(None),
                        conversations.c.active_stream_id == stale,
                    ),
                )
                .values(active_stream_id=stream_id, updated_at=stamp)
            )
            if claimed.rowcount != 1:
                await _conversation(conn, user_id, conversation_id)
                raise StreamInProgress("this conversation already has a reply streaming")
            if stale is not None:
                await conn.execute(
                    _interrupt(
                        messages.c.stream_id == stale,
                        "the outcome of this reply could not be saved",
                        stamp,
                    )
                )
            if replace is not None:
                last = await _last_message(conn, conversation_id)
                if last is None or last["id"] != replace:
                    raise InvalidRequest("the conversation changed; reload and try again")
                await conn.execute(delete(messages).where(messages.c.id == replace))
            if edit is not None:
                edited, content = edit
                row = (
                    await conn.execute(
                        select(messages.c.seq, messages.c.role).where(
                            messages.c.id == edited, messages.c.conversation_id == conversation_id
                        )
                    )
                ).first()
                if row is None or row.role != "user":
                    raise InvalidRequest("the conversation changed; reload and try again")
                await conn.execute(
                    update(messages)
                    .where(messages.c.id == edited)
                    .values(content=content, updated_at=stamp)
                )
                await conn.execute(
                    delete(messages).where(
                        messages.c.conversation_id == conversation_id, messages.c.seq > row.seq
                    )
                )
            seq = await conn.scalar(
                select(func.coalesce(func.max(messages.c.seq), 0)).where(
                    messages.c.conversation_id == conversation_id
                )
            )
            rows = []
            for offset, message in enumerate(new, start=1):
                rows.append(
                    {
                        "id": message.id,
                        "conversation_id": conversation_id,
                        "seq": int(seq or 0) + offset,
                        "role": message.role,
                        "content": message.content,
                        "status": message.status,
                        "model": message.model,
                        "stream_id": message.stream_id,
                        "created_at": stamp,
                        "updated_at": stamp,
                    }
                )
            await conn.execute(insert(messages), rows)
            changes = {"title": title, "model": model}
            changes = {k: v for k, v in changes.items() if v is not None}
            if changes:
                await conn.execute(
                    update(conversations)
                    .where(conversations.c.id == conversation_id)
                    .values(**changes)
                )

    async def checkpoint(self, contents: Sequence[tuple[str, str]]) -> None:
        """Save the partial content of streaming messages: ``[(message_id, content), …]``."""
        if not contents:
            return
        statement = (
            update(messages)
            .where(messages.c.id == bindparam("mid"), messages.c.status == "streaming")
            .values(content=bindparam("body"), updated_at=bindparam("stamp"))
        )
        stamp = now_ms()
        params = [{"mid": mid, "body": body, "stamp": stamp} for mid, body in contents]
        async with self.engine.begin() as conn:
            await conn.execute(statement.execution_options(synchronize_session=False), params)

    async def finish_reply(
        self, message_id: str, conversation_id: str, stream_id: str, outcome: ReplyOutcome
    ) -> None:
        """Store the terminal state and release the conversation."""
        stamp = now_ms()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(messages)
                # a reply another process already declared interrupted stays so
                .where(messages.c.id == message_id, messages.c.status == "streaming")
                .values(
                    content=outcome.content,
                    status=outcome.status,
                    **({"model": outcome.model} if outcome.model else {}),
                    finish_reason=outcome.finish_reason,
                    error_code=outcome.error_code,
                    error_message=outcome.error_message,
                    prompt_tokens=outcome.prompt_tokens,
                    completion_tokens=outcome.completion_tokens,
                    updated_at=stamp,
                )
            )
            await conn.execute(
                update(conversations)
                .where(
                    conversations.c.id == conversation_id,
                    conversations.c.active_stream_id == stream_id,
                )
                .values(active_stream_id=None, updated_at=stamp)
            )

    async def streaming_since(self, seconds: float) -> list[str]:
        """Streams whose reply is ``streaming`` but was not checkpointed for ``seconds``."""
        cutoff = now_ms() - int(seconds * 1000)
        query = select(messages.c.stream_id).where(
            messages.c.status == "streaming",
            messages.c.updated_at < cutoff,
            messages.c.stream_id.is_not(None),
        )
        async with self.engine.connect() as conn:
            return [row[0] for row in (await conn.execute(query)).all()]

    async def interrupt_stream(self, stream_id: str) -> None:
        """Mark the reply of a stream whose generator died ``interrupted`` (its content is the
        last checkpoint) and release its conversation."""
        stamp = now_ms()
        async with self.engine.begin() as conn:
            await conn.execute(
                _interrupt(
                    messages.c.stream_id == stream_id,
                    "the server generating this reply stopped",
                    stamp,
                )
            )
            await conn.execute(
                update(conversations)
                .where(conversations.c.active_stream_id == stream_id)
                .values(active_stream_id=None, updated_at=stamp)
            )

    async def interrupt_all_streaming(self) -> int:
        """Mark every ``streaming`` message ``interrupted`` and release every conversation.

        Only correct when this process is the only one that generates (the embedded,
        single-process set-up): it is run at start-up to recover from a crash.
        """
        stamp = now_ms()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                _interrupt(true(), "the server stopped while this reply was streaming", stamp)
            )
            await conn.execute(
                update(conversations)
                .where(conversations.c.active_stream_id.is_not(None))
                .values(active_stream_id=None)
            )
        return int(result.rowcount or 0)

    # daily usage (for the per-user limit of output tokens per day)

    async def add_usage(self, user_id: str, day: int, output_tokens: int) -> None:
        values = {"user_id": user_id, "day": day, "output_tokens": output_tokens}
        async with self.engine.begin() as conn:
            make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            statement = make(usage).values(values)
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[usage.c.user_id, usage.c.day],
                    set_={
                        "output_tokens": usage.c.output_tokens + statement.excluded.output_tokens
                    },
                )
            )

    async def usage_of(self, user_id: str, day: int) -> int:
        query = select(usage.c.output_tokens).where(usage.c.user_id == user_id, usage.c.day == day)
        async with self.engine.connect() as conn:
            return int(await conn.scalar(query) or 0)


def _interrupt(which: ColumnElement[bool], reason: str, stamp: int) -> Update:
    """The statement marking the ``streaming`` messages ``which`` as interrupted."""
    return (
        update(messages)
        .where(which, messages.c.status == "streaming")
        .values(
            status="interrupted",
            error_code="INTERRUPTED",
            error_message=reason,
            updated_at=stamp,
        )
    )


async def _conversation(conn: AsyncConnection, user_id: str, conversation_id: str) -> Conversation:
    row = (
        (
            await conn.execute(
                select(conversations).where(
                    conversations.c.id == conversation_id, conversations.c.user_id == user_id
                )
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("conversation not found")
    return Conversation(**row)


async def _last_message(conn: AsyncConnection, conversation_id: str) -> Any:
    query = (
        select(messages.c.id, messages.c.role)
        .where(messages.c.conversation_id == conversation_id)
        .order_by(messages.c.seq.desc())
        .limit(1)
    )
    return (await conn.execute(query)).mappings().first()


def _encode_cursor(updated_at: int, conversation_id: str) -> str:
    raw = orjson.dumps([updated_at, conversation_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated_at, conversation_id = orjson.loads(raw)
        return int(updated_at), str(conversation_id)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise InvalidRequest("invalid cursor") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
