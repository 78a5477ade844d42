"""Export (``GET …/export?format=json|markdown``, a download) and import (``POST
/api/v1/conversations/import``): the JSON export round-trips into a new conversation, on
SQLite and PostgreSQL; a refused import stores nothing."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import httpx2

from tests.conftest import ServeFactory
from tests.helpers import conversation, error_of, new_conversation, wait_for_reply


def filled(client: httpx2.Client) -> str:
    """A conversation with a system prompt, two turns (the second stopped early)."""
    cid = new_conversation(client, title="Ramen in Kyōto", systemPrompt="Answer briefly.\nBe kind.")
    assert (
        client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hello"}).status_code
        == 200
    )
    started = client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "tell me more"},
        headers={"prefer": "respond-async"},
    )
    client.post(f"/api/v1/streams/{started.json()['streamId']}/cancel", json={"lastEventId": 3})
    assert wait_for_reply(client, cid)["status"] == "cancelled"
    return cid


def exported(client: httpx2.Client, cid: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/conversations/{cid}/export", params={"format": "json"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def without_export_time(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "exportedAt"}


def round_trip(client: httpx2.Client) -> None:
    cid = filled(client)
    doc = exported(client, cid)
    assert doc["runnel"] == "conversation"
    assert doc["version"] == 1
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant", "user", "assistant"]
    assert doc["messages"][3]["status"] == "cancelled"
    keys = {"role", "content", "status", "model", "finishReason", "usage", "error", "createdAt"}
    assert all(set(m) == keys for m in doc["messages"])  # no ids of this server
    made = client.post("/api/v1/conversations/import", json=doc)
    assert made.status_code == 201, made.text
    copy = made.json()
    assert copy["id"] != cid
    assert copy["title"] == "Ramen in Kyōto"
    assert copy["systemPrompt"] == "Answer briefly.\nBe kind."
    original = conversation(client, cid)["messages"]
    assert [m["content"] for m in copy["messages"]] == [m["content"] for m in original]
    assert {m["id"] for m in copy["messages"]}.isdisjoint(m["id"] for m in original)
    assert without_export_time(exported(client, copy["id"])) == without_export_time(doc)
    assert copy["id"] in [c["id"] for c in client.get("/api/v1/conversations").json()["data"]]
    # the copy goes on like any conversation
    reply = client.post(f"/api/v1/conversations/{copy['id']}/messages", json={"content": "and?"})
    assert reply.status_code == 200


def test_json_round_trip(client: httpx2.Client) -> None:
    round_trip(client)


def test_json_round_trip_on_postgresql(serve: ServeFactory, postgres_url: str) -> None:
    server = serve(database_url=postgres_url)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        round_trip(client)


def test_markdown_download(client: httpx2.Client) -> None:
    cid = filled(client)
    response = client.get(f"/api/v1/conversations/{cid}/export", params={"format": "markdown"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="ramen-in-kyoto.md"; ')
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == "ramen-in-kyōto.md"
    text = response.text
    messages = conversation(client, cid)["messages"]
    assert text.startswith(
        "# Ramen in Kyōto\n\n**System prompt**\n\n> Answer briefly.\n> Be kind.\n"
    )
    assert text.count("\n## You\n") == 2
    assert text.count("\n## Assistant · demo/markdown\n") == 2
    for message in messages:
        assert message["content"].rstrip("\n") in text
    assert text.rstrip().endswith("*[stopped]*")


def test_export_of_what_is_not_yours_or_unknown(client: httpx2.Client) -> None:
    for cid in ("c_nope",):
        response = client.get(f"/api/v1/conversations/{cid}/export")
        assert response.status_code == 404
        assert error_of(response) == "NOT_FOUND"
    cid = new_conversation(client)
    bad = client.get(f"/api/v1/conversations/{cid}/export", params={"format": "pdf"})
    assert bad.status_code == 422
    assert error_of(bad) == "INVALID_REQUEST"


def test_a_reply_exported_while_it_streamed_is_imported_interrupted(client: httpx2.Client) -> None:
    doc = {
        "runnel": "conversation",
        "version": 1,
        "conversation": {"title": "half"},
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "Once upon", "status": "streaming", "model": "m"},
        ],
    }
    made = client.post("/api/v1/conversations/import", json=doc)
    assert made.status_code == 201, made.text
    reply = made.json()["messages"][1]
    assert reply["status"] == "interrupted"
    assert reply["error"]["code"] == "INTERRUPTED"
    assert made.json()["activeStreamId"] is None


def test_a_refused_import_stores_nothing(client: httpx2.Client) -> None:
    good: dict[str, Any] = {
        "runnel": "conversation",
        "version": 1,
        "conversation": {"title": "t"},
        "messages": [{"role": "user", "content": "hi"}],
    }
    refused = [
        ({**good, "version": 2}, 422),
        ({**good, "runnel": "something"}, 422),
        ({**good, "conversation": {"title": ""}}, 422),
        ({**good, "messages": [{"role": "system", "content": "x"}]}, 422),
        ({**good, "messages": [{"role": "user", "content": "x", "status": "weird"}]}, 422),
        ({**good, "messages": [{"role": "user", "content": "x"}] * 10_001}, 422),
        ({k: v for k, v in good.items() if k != "messages"}, 422),
    ]
    for body, status in refused:
        response = client.post("/api/v1/conversations/import", json=body)
        assert response.status_code == status, response.text[:200]
        assert error_of(response) == "INVALID_REQUEST"
    surrogate = json.dumps(good).replace('"hi"', '"\\ud800"')
    response = client.post(
        "/api/v1/conversations/import",
        content=surrogate,
        headers={"content-type": "application/json"},
    )
    assert response.status_code in (400, 422)
    assert error_of(response) == "INVALID_REQUEST"
    assert client.get("/api/v1/conversations").json()["data"] == []
