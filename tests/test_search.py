"""Search, ``GET /api/v1/conversations?q=…``: titles and message text, ranked, a highlighted
snippet per hit, per user; a deleted conversation and edited text leave the index; the
migration indexes what was stored before it. On SQLite (FTS5) and PostgreSQL."""

from __future__ import annotations

from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import httpx2
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from runnel.store.search import snippet
from runnel.store.sql import MIGRATIONS
from tests.conftest import ServeFactory
from tests.test_isolation import account


def imported(client: httpx2.Client, title: str, *texts: str) -> str:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)
    ]
    doc = {
        "runnel": "conversation",
        "version": 1,
        "conversation": {"title": title},
        "messages": messages,
    }
    made = client.post("/api/v1/conversations/import", json=doc)
    assert made.status_code == 201, made.text
    cid: str = made.json()["id"]
    return cid


def found(client: httpx2.Client, query: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/conversations", params={"q": query})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    assert response.json()["nextCursor"] is None
    return data


def ids(hits: list[dict[str, Any]]) -> list[str]:
    return [h["id"] for h in hits]


def search_suite(url: str) -> None:
    with ExitStack() as stack:
        alice = stack.enter_context(closing(account(url, "alice")))
        bob = stack.enter_context(closing(account(url, "bob", admin=alice)))
        best = imported(
            alice, "Ramen in Kyoto", "Where is good ramen?", "Try the ramen near the station."
        )
        once = imported(
            alice,
            "Travel notes",
            "Plan a day in Osaka.",
            "Morning: the castle. Lunch: okonomiyaki or <b>ramen</b> & gyoza. Evening: Dotonbori.",
        )
        imported(alice, "Unrelated", "How do I bake bread?", "Flour, water, salt, time.")
        theirs = imported(bob, "Bob's ramen", "ramen ramen ramen")

        hits = found(alice, "ramen")
        assert ids(hits) == [best, once]  # title and two messages above one mention
        assert "<mark>" in hits[0]["snippet"]
        assert hits[0]["title"] == "Ramen in Kyoto"
        snippet = hits[1]["snippet"]
        assert "&lt;b&gt;<mark>ramen</mark>&lt;/b&gt; &amp; gyoza" in snippet  # escaped text
        assert hits[1]["messageId"] is not None
        # prefixes as you type, every word required, case and punctuation ignored
        assert ids(found(alice, "RAM")) == [best, once]
        assert ids(found(alice, "ramen kyoto")) == [best]
        assert ids(found(alice, "travel")) == [once]
        assert found(alice, "travel")[0]["messageId"] is None  # a title hit
        assert ids(found(alice, '"ramen" OR bread*')) == []  # no query syntax: all words
        assert ids(found(bob, "ramen")) == [theirs]
        assert ids(found(bob, "kyoto")) == []
        # a deleted conversation leaves the index; edited text too
        assert alice.delete(f"/api/v1/conversations/{once}").status_code == 204
        assert ids(found(alice, "okonomiyaki")) == []
        first = alice.get(f"/api/v1/conversations/{best}").json()["messages"][0]
        edited = alice.patch(
            f"/api/v1/conversations/{best}/messages/{first['id']}", json={"content": "soba?"}
        )
        assert edited.status_code == 200
        assert ids(found(alice, "station")) == []  # the reply it had is gone
        assert ids(found(alice, "soba")) == [best]
        renamed = alice.patch(f"/api/v1/conversations/{best}", json={"title": "Noodles"})
        assert renamed.status_code == 200
        assert ids(found(alice, "noodles")) == [best]


def test_search_on_sqlite(serve: ServeFactory) -> None:
    search_suite(serve().url)


def test_search_on_postgresql(serve: ServeFactory, postgres_url: str) -> None:
    search_suite(serve(database_url=postgres_url).url)


def test_an_empty_query_lists_as_before(client: httpx2.Client) -> None:
    cid = imported(client, "something", "hello")
    listed = client.get("/api/v1/conversations", params={"q": " "}).json()
    assert ids(listed["data"]) == [cid]
    assert "snippet" not in listed["data"][0]
    too_long = client.get("/api/v1/conversations", params={"q": "x" * 501})
    assert too_long.status_code == 422


@pytest.fixture
def database_at_0003(tmp_path: Path) -> Path:
    """A SQLite database at migration 0003 holding a conversation, as an older Runnel
    left it."""
    data = tmp_path / "data"
    data.mkdir()
    path = data / "runnel.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.execute(
            text(
                "INSERT INTO conversations (id, user_id, title, model, system_prompt,"
                " active_stream_id, created_at, updated_at)"
                " VALUES ('c_old', 'local', 'Old times', NULL, NULL, NULL, 1, 1)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO messages (id, conversation_id, seq, role, content, status,"
                " created_at, updated_at)"
                " VALUES ('m_old', 'c_old', 1, 'user', 'a forgotten zeppelin', 'complete', 1, 1)"
            )
        )
    engine.dispose()
    return data


def test_the_migration_indexes_what_was_there(serve: ServeFactory, database_at_0003: Path) -> None:
    server = serve(data_dir=database_at_0003)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        assert ids(found(client, "zeppelin")) == ["c_old"]
        assert ids(found(client, "old")) == ["c_old"]


def test_snippets() -> None:
    text = "word " * 60 + "the Kyōto <ramen> list " + "more " * 60
    shown = snippet(text, ["kyoto", "ram"])
    assert shown.startswith("… ") or shown.startswith("…")
    assert shown.endswith("…")
    assert "the <mark>Kyōto</mark> &lt;<mark>ramen</mark>&gt; list" in shown
    assert len(shown) < 260
    assert snippet("short <b>", ["zzz"]) == "short &lt;b&gt;"  # no match: the start
    assert snippet("Ramen", ["ramen"]) == "<mark>Ramen</mark>"
