"""Isolation: user B gets 404 for everything that names user A's conversation, message,
stream or key — with B's session cookie and with B's API key — and A's data is unchanged
afterwards. On SQLite, on PostgreSQL, and across two processes sharing PostgreSQL and
Redis (A on one, B on the other)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import ServeFactory
from tests.helpers import error_of, wait_for_reply
from tests.processes import runnel_process
from tests.sse_client import LiveStream, open_stream

SLOW = {"demo_tokens_per_second": 40.0, "demo_reply_tokens": 120, "demo_first_token_delay": 0.0}
PASSWORD = "isolation password"


@dataclass
class Alice:
    client: httpx2.Client
    key: str
    key_id: str
    done: str  # a conversation with a finished reply
    done_stream: str
    messages: list[str]
    live: str  # a conversation whose reply is still streaming
    live_stream: str
    reading: LiveStream


def account(url: str, username: str, admin: httpx2.Client | None = None) -> httpx2.Client:
    client = httpx2.Client(base_url=url, timeout=30)
    if admin is None:
        response = client.post(
            "/api/v1/auth/signup", json={"username": username, "password": PASSWORD}
        )
    else:
        made = admin.post("/api/v1/users", json={"username": username, "password": PASSWORD})
        assert made.status_code == 201, made.text
        response = client.post(
            "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
    assert response.status_code in (200, 201), response.text
    return client


def prepare_alice(client: httpx2.Client) -> Alice:
    made = client.post("/api/v1/auth/keys", json={"name": "alice's key"}).json()
    done = client.post("/api/v1/conversations", json={"title": "alice's secret"}).json()["id"]
    reply = client.post(f"/api/v1/conversations/{done}/messages", json={"content": "secret"})
    assert reply.status_code == 200, reply.text
    stored = client.get(f"/api/v1/conversations/{done}").json()["messages"]
    live = client.post("/api/v1/conversations", json={"title": "alice's live one"}).json()["id"]
    reading = open_stream(
        client, "POST", f"/api/v1/conversations/{live}/messages", json={"content": "go on"}
    )
    status = reading.take(2).events[0].data
    return Alice(
        client,
        made["key"],
        made["id"],
        done,
        reply.json()["streamId"],
        [m["id"] for m in stored],
        live,
        status["streamId"],
        reading,
    )


def cases(a: Alice) -> list[tuple[str, str, dict[str, Any] | None, dict[str, str]]]:
    """(method, path, JSON body, headers): every endpoint that names something of A's."""
    out: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = []
    for cid in (a.done, a.live):
        out += [
            ("GET", f"/api/v1/conversations/{cid}", None, {}),
            ("PATCH", f"/api/v1/conversations/{cid}", {"title": "mine now"}, {}),
            ("POST", f"/api/v1/conversations/{cid}/messages", {"content": "hijack"}, {}),
            ("POST", f"/api/v1/conversations/{cid}/regenerate", None, {}),
            ("GET", f"/api/v1/conversations/{cid}/stream", None, {}),
            ("GET", f"/api/v1/conversations/{cid}/stream", None, {"last-event-id": "1"}),
            ("DELETE", f"/api/v1/conversations/{cid}", None, {}),
        ]
    for sid in (a.done_stream, a.live_stream):
        out += [
            ("GET", f"/api/v1/streams/{sid}", None, {}),
            ("GET", f"/api/v1/streams/{sid}", None, {"last-event-id": "2"}),
            ("GET", f"/api/v1/streams/{sid}?lastEventId=0", None, {}),
            ("POST", f"/api/v1/streams/{sid}/cancel", None, {}),
            ("POST", f"/api/v1/streams/{sid}/cancel", {"lastEventId": 1}, {}),
        ]
    out.append(("DELETE", f"/api/v1/auth/keys/{a.key_id}", None, {}))
    # a message id in place of a conversation id finds nothing either
    out += [("GET", f"/api/v1/conversations/{mid}", None, {}) for mid in a.messages]
    return out


def probe(a: Alice, b_url: str, b_cookie: httpx2.Client) -> int:
    """B tries every case with the cookie and with a key; returns how many ran."""
    key = b_cookie.post("/api/v1/auth/keys", json={"name": "bob's key"}).json()["key"]
    b_key = httpx2.Client(base_url=b_url, timeout=30, headers={"authorization": f"Bearer {key}"})
    ran = 0
    with b_key:
        for b in (b_cookie, b_key):
            assert b.get("/api/v1/conversations").json()["data"] == []
            for method, path, body, headers in cases(a):
                response = b.request(
                    method, path, json=body, headers={"accept": "text/event-stream", **headers}
                )
                assert response.status_code == 404, (method, path, response.status_code)
                assert error_of(response) == "NOT_FOUND"
                ran += 1
    return ran


def check_untouched(a: Alice) -> None:
    rest = a.reading.rest()
    assert rest.terminal.data["finishReason"] == "stop"  # B's cancels did not stop it
    a.reading.close()
    listed = {c["id"]: c["title"] for c in a.client.get("/api/v1/conversations").json()["data"]}
    assert listed == {a.done: "alice's secret", a.live: "alice's live one"}
    done = a.client.get(f"/api/v1/conversations/{a.done}").json()["messages"]
    assert [m["id"] for m in done] == a.messages
    assert done[0]["content"] == "secret"
    assert wait_for_reply(a.client, a.live)["status"] == "complete"
    keyed = a.client.get("/api/v1/auth/me", headers={"authorization": f"Bearer {a.key}"})
    assert keyed.json()["via"] == "key"  # the key survived B's DELETE


def run_suite(a_url: str, b_url: str) -> int:
    with closing(account(a_url, "alice")) as alice_client:
        a = prepare_alice(alice_client)
        with closing(account(b_url, "bob", admin=alice_client)) as bob:
            ran = probe(a, b_url, bob)
        check_untouched(a)
    return ran


def test_isolation_on_sqlite(
    serve: ServeFactory, security_report: Callable[[str, int], None]
) -> None:
    server = serve(**SLOW)
    security_report("isolation (SQLite)", run_suite(server.url, server.url))


@pytest.mark.postgres
def test_isolation_on_postgresql(
    serve: ServeFactory, postgres_url: str, security_report: Callable[[str, int], None]
) -> None:
    server = serve(database_url=postgres_url, **SLOW)
    security_report("isolation (PostgreSQL)", run_suite(server.url, server.url))


@pytest.fixture
def two_processes(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[tuple[str, str]]:
    shared = {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "password_time_cost": "1",
        "password_memory_kib": "1024",
        "password_parallelism": "1",
        **{k: str(v) for k, v in SLOW.items()},
    }
    with ExitStack() as stack:
        _, first = stack.enter_context(runnel_process(tmp_path / "a", **shared))
        _, second = stack.enter_context(runnel_process(tmp_path / "b", **shared))
        yield first, second


@pytest.mark.postgres
def test_isolation_across_two_processes(
    two_processes: tuple[str, str], security_report: Callable[[str, int], None]
) -> None:
    first, second = two_processes
    security_report("isolation (two processes)", run_suite(first, second))
    # a sign-out on one process ends the session on the other at once
    with httpx2.Client(base_url=first, timeout=30) as carol:
        signed = carol.post("/api/v1/auth/login", json={"username": "bob", "password": PASSWORD})
        assert signed.status_code == 200
        cookie = {"cookie": f"runnel_session={carol.cookies['runnel_session']}"}
        assert httpx2.get(f"{second}/api/v1/auth/me", headers=cookie, timeout=30).status_code == 200
        assert carol.post("/api/v1/auth/logout").status_code == 204
        assert httpx2.get(f"{second}/api/v1/auth/me", headers=cookie, timeout=30).status_code == 401


@pytest.mark.postgres
def test_disabling_a_user_stops_their_reply_on_another_process(
    two_processes: tuple[str, str],
) -> None:
    first, second = two_processes
    with closing(account(first, "admin")) as admin, closing(account(second, "dora", admin)) as dora:
        cid = dora.post("/api/v1/conversations", json={}).json()["id"]
        with open_stream(
            dora, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "long"}
        ) as live:
            live.take(3)  # generating on the second process
            (user,) = [
                u for u in admin.get("/api/v1/users").json()["data"] if u["username"] == "dora"
            ]
            disabled = admin.patch(f"/api/v1/users/{user['id']}", json={"disabled": True})
            assert disabled.status_code == 200
            assert live.rest().terminal.data["finishReason"] == "cancelled"
        assert dora.get("/api/v1/conversations").status_code == 401
        stored = admin.patch(f"/api/v1/users/{user['id']}", json={"disabled": False})
        assert stored.status_code == 200
