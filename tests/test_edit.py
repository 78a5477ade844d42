"""Edit and resend: ``PATCH /api/v1/conversations/{id}/messages/{messageId}`` rewrites a
user message, drops what came after it and answers it again — stored only once the new
reply starts; refused while a reply streams, and for what is not a message of yours."""

from __future__ import annotations

from typing import Any

import httpx2

from tests.conftest import ServeFactory
from tests.helpers import conversation, error_of, new_conversation, wait_for_reply
from tests.sse_client import open_stream, stream


def two_turns(client: httpx2.Client) -> tuple[str, list[dict[str, Any]]]:
    cid = new_conversation(client)
    for text in ("first question", "second question"):
        done = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": text})
        assert done.status_code == 200, done.text
    return cid, conversation(client, cid)["messages"]


def test_edit_the_first_message_and_answer_again(client: httpx2.Client) -> None:
    cid, before = two_turns(client)
    assert conversation(client, cid)["title"] == "first question"
    first = before[0]
    read = stream(
        client,
        "PATCH",
        f"/api/v1/conversations/{cid}/messages/{first['id']}",
        json={"content": "a better question"},
    )
    assert read.status == 200
    assert read.terminal.type == "complete"
    after = conversation(client, cid)
    messages = after["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["id"] == first["id"]
    assert messages[0]["content"] == "a better question"
    assert messages[1]["content"] == read.text
    assert "a better question" in read.text  # the demo model echoes what it answers
    assert after["title"] == "a better question"  # it was made from the first message
    assert messages[1]["id"] not in {m["id"] for m in before}


def test_edit_a_later_message_in_json_and_async(client: httpx2.Client) -> None:
    cid, before = two_turns(client)
    client.patch(f"/api/v1/conversations/{cid}", json={"title": "mine"})
    second = before[2]
    reply = client.patch(
        f"/api/v1/conversations/{cid}/messages/{second['id']}", json={"content": "changed"}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["finishReason"] == "stop"
    messages = conversation(client, cid)["messages"]
    assert [m["content"] for m in messages[:3]] == [
        before[0]["content"],
        before[1]["content"],
        "changed",
    ]
    assert len(messages) == 4
    again = client.patch(
        f"/api/v1/conversations/{cid}/messages/{second['id']}",
        json={"content": "once more"},
        headers={"prefer": "respond-async"},
    )
    assert again.status_code == 202
    assert wait_for_reply(client, cid)["id"] == again.json()["messageId"]
    assert conversation(client, cid)["title"] == "mine"  # a title the person set stays


def test_refusals_change_nothing(serve: ServeFactory) -> None:
    server = serve(demo_tokens_per_second=20.0, demo_reply_tokens=400)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        first = client.post(
            f"/api/v1/conversations/{cid}/messages",
            json={"content": "hello"},
            headers={"prefer": "respond-async"},
        )
        assert first.status_code == 202
        user_message = conversation(client, cid)["messages"][0]
        url = f"/api/v1/conversations/{cid}/messages/{user_message['id']}"
        # while the reply streams
        busy = client.patch(url, json={"content": "changed"})
        assert busy.status_code == 409
        assert error_of(busy) == "STREAM_IN_PROGRESS"
        client.post(f"/api/v1/streams/{first.json()['streamId']}/cancel")
        reply = wait_for_reply(client, cid)
        stored = conversation(client, cid)["messages"]
        assert stored[0]["content"] == "hello"
        base = f"/api/v1/conversations/{cid}/messages"
        x = {"content": "x"}
        refused = [
            (client.patch(f"{base}/{reply['id']}", json=x), 400, "INVALID_REQUEST"),
            (client.patch(f"{base}/m_nope", json=x), 404, "NOT_FOUND"),
            (
                client.patch(f"/api/v1/conversations/c_nope/messages/{user_message['id']}", json=x),
                404,
                "NOT_FOUND",
            ),
            (client.patch(url, json={"content": ""}), 400, "INVALID_REQUEST"),
            (client.patch(url, json={**x, "model": "demo/nope"}), 400, "MODEL_NOT_FOUND"),
            (client.patch(url, json={"text": "x"}), 422, "INVALID_REQUEST"),
        ]
        for response, status, code in refused:
            assert (response.status_code, error_of(response)) == (status, code), response.text
        assert conversation(client, cid)["messages"] == stored


def test_a_stream_of_the_edit_can_be_resumed(client: httpx2.Client) -> None:
    cid, before = two_turns(client)
    with open_stream(
        client,
        "PATCH",
        f"/api/v1/conversations/{cid}/messages/{before[0]['id']}",
        json={"content": "again"},
    ) as live:
        head = live.take(3)
    stream_id = head.events[0].data["streamId"]
    last = head.events[-1].id
    assert last is not None
    rest = stream(
        client, "GET", f"/api/v1/streams/{stream_id}", headers={"last-event-id": str(last)}
    )
    assert head.text + rest.text == wait_for_reply(client, cid)["content"]


def test_edit_on_postgresql(serve: ServeFactory, postgres_url: str) -> None:
    server = serve(database_url=postgres_url)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        test_edit_the_first_message_and_answer_again(client)
        test_edit_a_later_message_in_json_and_async(client)
