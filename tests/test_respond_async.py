"""``Prefer: respond-async``: a reply started without holding a connection — 202 with its
stream, the reply generated with no reader, read later from its stream."""

from __future__ import annotations

from typing import Any

import httpx2

from tests.conftest import ServeFactory
from tests.helpers import error_of, new_conversation, wait_for_reply
from tests.server import RunningServer
from tests.sse_client import stream

ASYNC = {"prefer": "respond-async"}


def started(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"streamId", "conversationId", "messageId", "model"}
    assert response.headers["location"] == f"/api/v1/streams/{body['streamId']}"
    assert response.headers["preference-applied"] == "respond-async"
    return body


def test_a_message_answered_at_once(client: httpx2.Client) -> None:
    cid = new_conversation(client)
    body = started(
        client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}, headers=ASYNC)
    )
    assert body["conversationId"] == cid
    assert body["model"] == "demo/markdown"
    reply = wait_for_reply(client, cid)  # generated with no one reading
    assert reply["status"] == "complete"
    assert reply["id"] == body["messageId"]
    assert reply["streamId"] == body["streamId"]
    read = stream(client, "GET", f"/api/v1/streams/{body['streamId']}")
    assert read.text == reply["content"]
    assert read.terminal.data["finishReason"] == "stop"


def test_regenerate_and_stateless_answer_at_once(
    client: httpx2.Client, server: RunningServer
) -> None:
    cid = new_conversation(client)
    client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    body = started(client.post(f"/api/v1/conversations/{cid}/regenerate", headers=ASYNC))
    assert wait_for_reply(client, cid)["id"] == body["messageId"]
    stateless = started(client.post("/api/v1/messages", json={"message": "hi"}, headers=ASYNC))
    assert stateless["conversationId"] is None
    read = stream(client, "GET", f"/api/v1/streams/{stateless['streamId']}")
    assert read.terminal.type == "complete"
    assert read.text


def test_errors_come_before_the_202(serve: ServeFactory) -> None:
    server = serve(demo_tokens_per_second=20.0, demo_reply_tokens=200)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        refused = client.post(
            f"/api/v1/conversations/{cid}/messages",
            json={"content": "hi", "model": "demo/nope"},
            headers=ASYNC,
        )
        assert refused.status_code == 400
        assert error_of(refused) == "MODEL_NOT_FOUND"
        assert client.get(f"/api/v1/conversations/{cid}").json()["messages"] == []
        first = started(
            client.post(
                f"/api/v1/conversations/{cid}/messages", json={"content": "a"}, headers=ASYNC
            )
        )
        busy = client.post(
            f"/api/v1/conversations/{cid}/messages", json={"content": "b"}, headers=ASYNC
        )
        assert busy.status_code == 409
        assert error_of(busy) == "STREAM_IN_PROGRESS"
        stored = client.get(f"/api/v1/conversations/{cid}").json()["messages"]
        assert [m["content"] for m in stored if m["role"] == "user"] == ["a"]
        client.post(f"/api/v1/streams/{first['streamId']}/cancel")


def test_other_preferences_change_nothing(client: httpx2.Client) -> None:
    cid = new_conversation(client)
    whole = client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "hi"},
        headers={"prefer": "return=minimal, wait=5"},
    )
    assert whole.status_code == 200
    assert whole.json()["content"]
