"""Conversations: CRUD, one active stream each, concurrency, regenerate, models, health."""

from __future__ import annotations

import threading

import httpx2

from tests.conftest import ServeFactory
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.helpers import conversation, error_of, new_conversation, wait_until_idle
from tests.server import RunningServer
from tests.sse_client import open_stream, stream


def test_create_get_rename_list_delete(client: httpx2.Client) -> None:
    created = client.post(
        "/api/v1/conversations",
        json={"title": "  Trip   plans ", "model": "demo/markdown", "systemPrompt": "be brief"},
    )
    assert created.status_code == 201
    body = created.json()
    assert body["title"] == "Trip plans"
    assert (body["model"], body["systemPrompt"], body["activeStreamId"]) == (
        "demo/markdown",
        "be brief",
        None,
    )
    assert body["messages"] == []
    cid = body["id"]

    renamed = client.patch(f"/api/v1/conversations/{cid}", json={"title": "Japan"})
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "Japan"
    assert client.patch(f"/api/v1/conversations/{cid}", json={"title": " "}).status_code == 400
    bad_model = client.patch(f"/api/v1/conversations/{cid}", json={"model": "nope/x"})
    assert bad_model.status_code == 400
    assert error_of(bad_model) == "MODEL_NOT_FOUND"
    assert conversation(client, cid)["title"] == "Japan"

    other = new_conversation(client)
    listed = client.get("/api/v1/conversations").json()
    assert [c["id"] for c in listed["data"]] == [other, cid]
    assert listed["nextCursor"] is None
    first = client.get("/api/v1/conversations", params={"limit": 1}).json()
    assert [c["id"] for c in first["data"]] == [other]
    second = client.get(
        "/api/v1/conversations", params={"limit": 1, "cursor": first["nextCursor"]}
    ).json()
    assert [c["id"] for c in second["data"]] == [cid]
    bad_cursor = client.get("/api/v1/conversations", params={"cursor": "%%%"})
    assert bad_cursor.status_code == 400

    assert client.delete(f"/api/v1/conversations/{cid}").status_code == 204
    assert client.get(f"/api/v1/conversations/{cid}").status_code == 404
    assert client.delete(f"/api/v1/conversations/{cid}").status_code == 404


def test_a_message_moves_the_conversation_to_the_top(client: httpx2.Client) -> None:
    older = new_conversation(client)
    newer = new_conversation(client)
    client.post(f"/api/v1/conversations/{older}/messages", json={"content": "hello there"})
    data = client.get("/api/v1/conversations").json()["data"]
    assert [c["id"] for c in data] == [older, newer]
    assert data[0]["title"] == "hello there"


def test_second_message_while_streaming_is_409(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("slow", Script(tokens=["a "] * 100, delay=0.03))
    cid = new_conversation(client)
    with open_stream(
        client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "one", "model": "openai/slow"},
    ) as live:
        head = live.take(2)
        busy = conversation(client, cid)
        assert busy["activeStreamId"] == head.events[0].data["streamId"]
        assert busy["messages"][-1]["status"] == "streaming"
        for url in (
            f"/api/v1/conversations/{cid}/messages",
            f"/api/v1/conversations/{cid}/regenerate",
        ):
            refused = client.post(url, json={"content": "two"} if "messages" in url else None)
            assert refused.status_code == 409
            assert error_of(refused) == "STREAM_IN_PROGRESS"
        client.post(f"/api/v1/streams/{head.events[0].data['streamId']}/cancel")
        live.rest()
    stored = wait_until_idle(client, cid)
    assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == ["one"]


def test_racing_sends_start_exactly_one_stream(
    server: RunningServer, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("slow", Script(tokens=["a "] * 20, delay=0.02))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
    statuses: list[int] = []

    def send() -> None:
        with httpx2.Client(base_url=server.url, timeout=30) as own:
            response = own.post(
                f"/api/v1/conversations/{cid}/messages",
                json={"content": "go", "model": "openai/slow"},
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [409] * 5
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        roles = [m["role"] for m in wait_until_idle(client, cid)["messages"]]
    assert roles == ["user", "assistant"]


def test_two_conversations_stream_concurrently(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("slow", Script(tokens=[f"{i} " for i in range(20)], delay=0.02))
    first, second = new_conversation(client), new_conversation(client)
    with (
        open_stream(
            client,
            "POST",
            f"/api/v1/conversations/{first}/messages",
            json={"content": "a", "model": "openai/slow"},
        ) as a,
        open_stream(
            client,
            "POST",
            f"/api/v1/conversations/{second}/messages",
            json={"content": "b", "model": "openai/slow"},
        ) as b,
    ):
        assert a.take(3).events[-1].type == "token"
        assert b.take(3).events[-1].type == "token"
        assert conversation(client, first)["activeStreamId"] is not None
        assert conversation(client, second)["activeStreamId"] is not None
        a.rest()
        b.rest()
    for cid in (first, second):
        assert wait_until_idle(client, cid)["messages"][-1]["content"] == "".join(
            f"{i} " for i in range(20)
        )


def test_regenerate_replaces_the_last_reply(client: httpx2.Client) -> None:
    cid = new_conversation(client)
    client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "first"})
    before = conversation(client, cid)["messages"]
    t = stream(client, "POST", f"/api/v1/conversations/{cid}/regenerate")
    assert t.terminal.data["finishReason"] == "stop"
    after = wait_until_idle(client, cid)["messages"]
    assert [m["role"] for m in after] == ["user", "assistant"]
    assert after[0] == before[0]
    assert after[1]["id"] != before[1]["id"]
    assert after[1]["content"] == t.text
    empty = new_conversation(client)
    nothing = client.post(f"/api/v1/conversations/{empty}/regenerate")
    assert nothing.status_code == 400
    assert error_of(nothing) == "INVALID_REQUEST"


def test_models_health_and_readiness(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    fake_openai.models = ["gpt-a", "gpt-b"]
    server = serve()
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        models = client.get("/api/v1/models").json()
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        unknown = client.get("/api/v1/nothing-here")
    ids = [m["id"] for m in models["data"]]
    assert ids == ["demo/markdown", "openai/gpt-a", "openai/gpt-b"]
    assert models["default"] == "demo/markdown"
    assert [m["default"] for m in models["data"]] == [True, False, False]
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"store": "ok", "broker": "ok"}
    assert unknown.status_code == 404
    assert error_of(unknown) == "NOT_FOUND"


def test_a_failing_provider_does_not_break_the_model_list(serve: ServeFactory) -> None:
    server = serve(openai_base_url="http://127.0.0.1:9/v1")
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        response = client.get("/api/v1/models")
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["demo/markdown"]


def test_a_provider_whose_listing_failed_is_not_asked_again_at_once(
    serve: ServeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.models_status = 500
    server = serve()
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        first = client.get("/api/v1/models").json()["data"]
        fake_openai.models_status = 200
        second = client.get("/api/v1/models").json()["data"]
    assert [m["id"] for m in first] == [m["id"] for m in second] == ["demo/markdown"]
    assert [r.path for r in fake_openai.requests] == ["/v1/models"]


def test_request_id_is_echoed(client: httpx2.Client) -> None:
    mine = client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    made = client.get("/healthz", headers={"x-request-id": "bad id with spaces"})
    assert made.headers["x-request-id"] != "bad id with spaces"
    assert len(made.headers["x-request-id"]) == 16


def test_a_long_conversation_sends_its_most_recent_turns(
    serve: ServeFactory, fake_openai: FakeOpenAI
) -> None:
    server = serve(max_history_messages=3)
    fake_openai.script("m", Script(tokens=["ok"]))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client, systemPrompt="sys", model="openai/m")
        for word in ("one", "two", "three"):
            response = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": word})
            assert response.status_code == 200
    assert fake_openai.requests[-1].body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "three"},
    ]
    # the second request's window would start with an assistant message: it is dropped
    assert fake_openai.requests[-2].body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "two"},
    ]
