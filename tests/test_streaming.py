"""The happy path and the SSE format, through the real openai SDK and a fake upstream."""

from __future__ import annotations

import time

import httpx2

from tests.fakes.openai_server import FakeOpenAI, Script
from tests.helpers import conversation, last_message, new_conversation
from tests.server import RunningServer
from tests.sse_client import stream

TOKENS = ["Hel", "lo", ", ", "wörld", " 🎉", "!\n", "```py\nx = 1\n```"]


def send(client: httpx2.Client, conversation_id: str, content: str, model: str, **kw: object):  # type: ignore[no-untyped-def]
    return stream(
        client,
        "POST",
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"content": content, "model": model},
        **kw,
    )


def test_happy_path_events_ids_usage_and_stored_text(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        "gpt-test",
        Script(
            tokens=list(TOKENS),
            usage={"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
        ),
    )
    cid = new_conversation(client, systemPrompt="be nice")
    t = send(client, cid, "hi", "openai/gpt-test")

    assert t.status == 200
    assert t.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert t.headers["cache-control"] == "no-cache"
    assert t.headers["x-accel-buffering"] == "no"
    assert "connection" not in t.headers
    assert t.retry == 3000
    # ids 1..n over the log: status 1, one per upstream token, complete n; a token event
    # that merged several tokens for a reader behind the stream carries the last one's id.
    assert t.ids[0] == 1
    assert t.ids[-1] == len(TOKENS) + 2
    assert t.ids == sorted(set(t.ids))
    types = [e.type for e in t.events]
    assert types[0] == "status"
    assert types[-1] == "complete"
    assert set(types[1:-1]) == {"token"}
    status = t.events[0].data
    assert status["conversationId"] == cid
    assert status["model"] == "openai/gpt-test"
    assert status["streamId"].startswith("s_")
    assert status["messageId"].startswith("m_")
    complete = t.terminal.data
    assert complete["finishReason"] == "stop"
    assert complete["usage"] == {"promptTokens": 9, "completionTokens": 7}
    assert complete["totalTokens"] == 16
    assert complete["messageId"] == status["messageId"]
    assert complete["firstTokenMs"] >= 0  # a sanity bound only: it is measured, not fixed
    assert t.text == "".join(TOKENS)

    stored = last_message(client, cid)
    assert stored["content"].encode() == t.text.encode()
    assert stored["status"] == "complete"
    assert stored["id"] == status["messageId"]
    assert stored["usage"] == {"promptTokens": 9, "completionTokens": 7}
    sent = fake_openai.requests[-1].body
    assert sent["stream"] is True
    assert sent["model"] == "gpt-test"
    assert sent["messages"] == [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
    ]
    assert conversation(client, cid)["title"] == "hi"


def test_json_fallback_returns_the_same_text(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("gpt-test", Script(tokens=list(TOKENS)))
    cid = new_conversation(client)
    streamed = send(client, cid, "one", "openai/gpt-test")
    response = client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "two", "model": "openai/gpt-test"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["content"] == streamed.text
    assert body["finishReason"] == "stop"
    assert body["conversationId"] == cid
    assert last_message(client, cid)["content"] == body["content"]
    history = fake_openai.requests[-1].body["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert history[1]["content"] == streamed.text


def test_stateless_endpoint_streams_and_answers_json(client: httpx2.Client) -> None:
    t = stream(client, "POST", "/api/v1/messages", json={"message": "hello"})
    assert t.terminal.type == "complete"
    assert t.events[0].data["conversationId"] is None
    assert "hello" in t.text
    response = client.post("/api/v1/messages", json={"message": "hello"})
    assert response.status_code == 200
    assert response.json()["content"] == t.text


def test_streaming_switched_off_server_wide(serve, fake_openai: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = serve(streaming_enabled=False)
    with httpx2.Client(base_url=server.url) as client:
        response = client.post(
            "/api/v1/messages",
            json={"message": "hi"},
            headers={"accept": "text/event-stream"},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["finishReason"] == "stop"


def test_first_token_arrives_before_the_upstream_finishes(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("slow", Script(tokens=["a", "b", "c", "d", "e"], delay=0.3))
    cid = new_conversation(client)
    with client.stream(
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "hi", "model": "openai/slow"},
        headers={"accept": "text/event-stream"},
    ) as response:
        lines = response.iter_lines()
        for line in lines:
            if '"type":"token"' in line:
                break
        request = fake_openai.requests[-1]
        assert request.chunks_sent < 5, "the first token was held back until the upstream finished"
        rest = list(lines)
    assert any('"type":"complete"' in line for line in rest)


def test_utf8_split_across_upstream_chunks_arrives_intact(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    tokens = ["é", "🎉", "日本語", "ß", "👩‍💻"]
    fake_openai.script("utf", Script(tokens=tokens, split_utf8=True))
    cid = new_conversation(client)
    t = send(client, cid, "hi", "openai/utf")
    assert t.text == "".join(tokens)
    assert [e.data["content"] for e in t.events if e.type == "token"] == tokens
    assert last_message(client, cid)["content"] == "".join(tokens)


def test_heartbeats_during_a_slow_upstream(serve, fake_openai: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = serve(heartbeat_interval=0.1)
    fake_openai.script("pause", Script(tokens=["a", "b"], first_delay=0.8))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        started = time.monotonic()
        t = stream(
            client, "POST", "/api/v1/messages", json={"message": "hi", "model": "openai/pause"}
        )
    assert t.terminal.type == "complete"
    assert time.monotonic() - started >= 0.8
    assert t.comments.count("ping") >= 2
    assert t.raw.count(b": ping\n\n") == t.comments.count("ping")
