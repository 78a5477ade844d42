"""Small HTTP helpers shared by the API tests."""

from __future__ import annotations

import time
from typing import Any

import httpx2


def new_conversation(client: httpx2.Client, **body: Any) -> str:
    response = client.post("/api/v1/conversations", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def conversation(client: httpx2.Client, conversation_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def last_message(client: httpx2.Client, conversation_id: str) -> dict[str, Any]:
    messages = conversation(client, conversation_id)["messages"]
    assert messages, "no messages"
    last: dict[str, Any] = messages[-1]
    return last


def wait_until_idle(
    client: httpx2.Client, conversation_id: str, timeout: float = 15
) -> dict[str, Any]:
    """Poll until the conversation has no active stream; returns the conversation."""
    deadline = time.monotonic() + timeout
    while True:
        body = conversation(client, conversation_id)
        if body["activeStreamId"] is None:
            return body
        assert time.monotonic() < deadline, "the stream did not finish"
        time.sleep(0.02)


def error_of(response: httpx2.Response) -> str:
    body = response.json()
    assert set(body) >= {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["code"])


def wait_for_reply(
    client: httpx2.Client, conversation_id: str, timeout: float = 30
) -> dict[str, Any]:
    """Poll until the conversation ends with a finished assistant message; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        messages = conversation(client, conversation_id)["messages"]
        if (
            messages
            and messages[-1]["role"] == "assistant"
            and messages[-1]["status"] != "streaming"
        ):
            last: dict[str, Any] = messages[-1]
            return last
        assert time.monotonic() < deadline, "no finished reply"
        time.sleep(0.02)
