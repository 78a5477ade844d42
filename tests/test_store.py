"""The store contract, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runnel.errors import InvalidRequest, NotFound, StreamInProgress
from runnel.store.records import NewMessage, ReplyOutcome
from runnel.store.sql import Store


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def run_with_store(url: str, body) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        store = Store(url)
        await store.open()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def reply(mid: str, sid: str) -> list[NewMessage]:
    return [
        NewMessage(f"{mid}u", "user", "question ü", "complete"),
        NewMessage(mid, "assistant", "", "streaming", "demo/markdown", sid),
    ]


def test_reply_lifecycle(store_url: str) -> None:
    async def body(store: Store) -> None:
        await store.create_conversation("c_1", "alice", "t", None, "be brief")
        await store.begin_reply("alice", "c_1", "s_1", reply("m_1", "s_1"))
        assert (await store.get_conversation("alice", "c_1")).active_stream_id == "s_1"
        await store.checkpoint([("m_1", "par")])
        assert (await store.get_message("m_1")).content == "par"  # type: ignore[union-attr]
        await store.finish_reply(
            "m_1", "c_1", "s_1", ReplyOutcome("partial 🎉", "complete", "stop", None, None, 3, 4)
        )
        await store.checkpoint([("m_1", "stale")])
        message = await store.get_message("m_1")
        assert message is not None
        assert (message.content, message.status, message.prompt_tokens) == (
            "partial 🎉",
            "complete",
            3,
        )
        assert (await store.get_conversation("alice", "c_1")).active_stream_id is None
        roles = [m.role for m in await store.list_messages("c_1")]
        assert roles == ["user", "assistant"]

    run_with_store(store_url, body)


def test_one_active_stream_per_conversation(store_url: str) -> None:
    async def body(store: Store) -> None:
        await store.create_conversation("c_1", "alice", "t", None, None)
        await store.begin_reply("alice", "c_1", "s_1", reply("m_1", "s_1"))
        with pytest.raises(StreamInProgress):
            await store.begin_reply("alice", "c_1", "s_2", reply("m_2", "s_2"))
        assert [m.id for m in await store.list_messages("c_1")] == ["m_1u", "m_1"]
        with pytest.raises(NotFound):
            await store.begin_reply("bob", "c_1", "s_3", reply("m_3", "s_3"))

    run_with_store(store_url, body)


def test_regenerate_replaces_only_the_last_message(store_url: str) -> None:
    async def body(store: Store) -> None:
        await store.create_conversation("c_1", "alice", "t", None, None)
        await store.begin_reply("alice", "c_1", "s_1", reply("m_1", "s_1"))
        await store.finish_reply(
            "m_1", "c_1", "s_1", ReplyOutcome("x", "error", error_code="PROVIDER_ERROR")
        )
        with pytest.raises(InvalidRequest):
            await store.begin_reply("alice", "c_1", "s_2", [], replace="m_1u")
        assert (await store.get_conversation("alice", "c_1")).active_stream_id is None
        new = [NewMessage("m_2", "assistant", "", "streaming", None, "s_3")]
        await store.begin_reply("alice", "c_1", "s_3", new, replace="m_1")
        assert [m.id for m in await store.list_messages("c_1")] == ["m_1u", "m_2"]
        assert (await store.get_conversation("alice", "c_1")).active_stream_id == "s_3"

    run_with_store(store_url, body)


def test_list_is_newest_first_with_a_cursor(store_url: str) -> None:
    async def body(store: Store) -> None:
        for i in range(5):
            await store.create_conversation(f"c_{i}", "alice", f"t{i}", None, None)
            await asyncio.sleep(0.002)
        await store.create_conversation("c_bob", "bob", "b", None, None)
        page, cursor = await store.list_conversations("alice", 2, None)
        seen = [c.id for c in page]
        while cursor:
            page, cursor = await store.list_conversations("alice", 2, cursor)
            seen += [c.id for c in page]
        assert seen == ["c_4", "c_3", "c_2", "c_1", "c_0"]

    run_with_store(store_url, body)


def test_crash_recovery_marks_streaming_replies_interrupted(store_url: str) -> None:
    async def body(store: Store) -> None:
        await store.create_conversation("c_1", "alice", "t", None, None)
        await store.begin_reply("alice", "c_1", "s_1", reply("m_1", "s_1"))
        await store.checkpoint([("m_1", "saved so far")])
        assert await store.interrupt_all_streaming() == 1
        message = await store.get_message("m_1")
        assert message is not None
        assert (message.status, message.error_code, message.content) == (
            "interrupted",
            "INTERRUPTED",
            "saved so far",
        )
        assert (await store.get_conversation("alice", "c_1")).active_stream_id is None

    run_with_store(store_url, body)


def test_delete_returns_the_active_stream(store_url: str) -> None:
    async def body(store: Store) -> None:
        await store.create_conversation("c_1", "alice", "t", None, None)
        await store.begin_reply("alice", "c_1", "s_1", reply("m_1", "s_1"))
        with pytest.raises(NotFound):
            await store.delete_conversation("bob", "c_1")
        assert await store.delete_conversation("alice", "c_1") == "s_1"
        assert await store.list_messages("c_1") == []

    run_with_store(store_url, body)


def test_a_reply_declared_interrupted_elsewhere_stays_interrupted(store_url: str) -> None:
    async def body(store: Store) -> None:
        await store.create_conversation("c_1", "alice", "t", None, None)
        await store.begin_reply("alice", "c_1", "s_1", reply("m_1", "s_1"))
        await store.checkpoint([("m_1", "so far")])
        assert await store.streaming_since(-1) == ["s_1"]
        await store.interrupt_stream("s_1")
        await store.finish_reply("m_1", "c_1", "s_1", ReplyOutcome("so far and more", "complete"))
        message = await store.get_message("m_1")
        assert message is not None
        assert (message.status, message.content) == ("interrupted", "so far")
        assert await store.streaming_since(-1) == []
        assert (await store.get_conversation("alice", "c_1")).active_stream_id is None

    run_with_store(store_url, body)


def test_processes_starting_together_migrate_once(postgres_url: str) -> None:
    """Regression: the workers of ``--workers N`` open the store at the same moment; on a new
    database their migrations raced (``CREATE TABLE alembic_version`` twice) and one worker
    failed to start, which stopped the whole server."""

    async def main() -> None:
        stores = [Store(postgres_url) for _ in range(4)]
        try:
            opened = await asyncio.gather(
                *(store.open() for store in stores), return_exceptions=True
            )
            assert opened == [None] * 4
            await stores[0].create_conversation("c_1", "alice", "t", None, None)
            assert (await stores[3].get_conversation("alice", "c_1")).title == "t"
        finally:
            for store in stores:
                await store.close()

    asyncio.run(main())
