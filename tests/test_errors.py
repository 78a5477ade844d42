"""Every error path: the status, the code of DESIGN §4, and what is stored afterwards."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import text

from runnel.store.sql import Store
from tests.conftest import ServeFactory
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.helpers import conversation, error_of, new_conversation, wait_until_idle
from tests.server import RunningServer
from tests.sse_client import open_stream, stream


def post_sse(client: httpx2.Client, cid: str, model: str, content: str = "hi"):  # type: ignore[no-untyped-def]
    return stream(
        client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": content, "model": model},
    )


# -- upstream failures before the stream starts: ordinary HTTP errors ------------------------


@pytest.mark.parametrize(
    ("script", "status", "code", "retryable"),
    [
        (Script(status=429, retry_after="7"), 429, "RATE_LIMIT", True),
        (Script(status=401), 502, "PROVIDER_AUTH", False),
        (Script(status=403), 502, "PROVIDER_AUTH", False),
        (Script(status=500), 502, "PROVIDER_ERROR", True),
        (Script(status=503), 502, "PROVIDER_ERROR", True),
        (
            Script(
                status=400,
                error_body={
                    "error": {
                        "message": "This model's maximum context length is 8192 tokens",
                        "type": "invalid_request_error",
                        "code": "context_length_exceeded",
                    }
                },
            ),
            400,
            "CONTEXT_LENGTH_EXCEEDED",
            False,
        ),
        (Script(status=404), 400, "MODEL_NOT_FOUND", False),
        (
            Script(
                status=429,
                error_body={
                    "error": {
                        "message": "You exceeded your current quota",
                        "type": "insufficient_quota",
                        "code": "insufficient_quota",
                    }
                },
            ),
            502,
            "PROVIDER_ERROR",
            False,
        ),
    ],
)
def test_upstream_http_errors_before_the_stream(
    client: httpx2.Client,
    fake_openai: FakeOpenAI,
    script: Script,
    status: int,
    code: str,
    retryable: bool,
) -> None:
    fake_openai.script("m", script)
    cid = new_conversation(client)
    t = post_sse(client, cid, "openai/m")
    assert t.status == status
    body = httpx2.Response(status, content=t.raw).json()
    assert body["error"]["code"] == code
    assert "sk-test" not in t.raw.decode()
    if code == "RATE_LIMIT":
        assert t.headers["retry-after"] == "7"
        assert "provider" in body["error"]["message"]
    stored = wait_until_idle(client, cid)
    user, assistant = stored["messages"]
    assert (user["role"], user["content"], user["status"]) == ("user", "hi", "complete")
    assert assistant["status"] == "error"
    assert assistant["error"]["code"] == code
    assert assistant["content"] == ""
    assert stored["activeStreamId"] is None
    # the conversation is usable again: a retry goes through
    fake_openai.script("m", Script(tokens=["fine"]))
    retry = client.post(f"/api/v1/conversations/{cid}/regenerate")
    assert retry.status_code == 200
    assert retry.json()["content"] == "fine"
    assert [m["status"] for m in conversation(client, cid)["messages"]] == ["complete", "complete"]


def test_unreachable_upstream(serve: ServeFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve(openai_base_url=f"http://127.0.0.1:{port}/v1")
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/api/v1/messages", json={"message": "hi", "model": "openai/x"})
    assert response.status_code == 502
    assert error_of(response) == "PROVIDER_ERROR"


def test_no_response_headers_in_time_is_a_504(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    server = serve(first_token_timeout=0.5)
    fake_openai.script("mute", Script(headers_delay=3))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        t = post_sse(client, cid, "openai/mute")
        assert t.status == 504
        assert httpx2.Response(504, content=t.raw).json()["error"]["code"] == "STREAM_TIMEOUT"
        assistant = wait_until_idle(client, cid)["messages"][-1]
    assert (assistant["status"], assistant["error"]["code"]) == ("error", "STREAM_TIMEOUT")
    assert fake_openai.requests[-1].closed.wait(2)


# -- failures after the stream started: error events ----------------------------------------


@pytest.mark.parametrize(
    ("script", "code", "status", "retryable", "partial"),
    [
        (
            Script(tokens=["par", "tial", b"data: {not json\n\n"]),
            "PROVIDER_ERROR",
            "error",
            True,
            "partial",
        ),
        (
            Script(
                tokens=[
                    "par",
                    b'data: {"error": {"message": "Overloaded", "type": "server_error"}}\n\n',
                ]
            ),
            "PROVIDER_ERROR",
            "error",
            True,
            "par",
        ),
        (
            Script(tokens=["a", "b", "c", "d"], drop_after=2),
            "INTERRUPTED",
            "interrupted",
            True,
            "ab",
        ),
        (
            Script(tokens=["a", "b"], done=False, finish_reason="", drop_after=2),
            "INTERRUPTED",
            "interrupted",
            True,
            "ab",
        ),
    ],
)
def test_upstream_failures_mid_stream(
    client: httpx2.Client,
    fake_openai: FakeOpenAI,
    script: Script,
    code: str,
    status: str,
    retryable: bool,
    partial: str,
) -> None:
    fake_openai.script("m", script)
    cid = new_conversation(client)
    t = post_sse(client, cid, "openai/m")
    assert t.status == 200
    assert t.events[0].type == "status"
    error = t.terminal.data
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["retryable"] is retryable
    assert error["partial"] is True
    assert t.text == partial
    assistant = wait_until_idle(client, cid)["messages"][-1]
    assert assistant["status"] == status
    assert assistant["error"]["code"] == code
    assert assistant["content"] == partial


def test_no_first_token_in_time(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    server = serve(first_token_timeout=0.4)
    fake_openai.script("slow", Script(tokens=["late"], first_delay=3))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        t = post_sse(client, cid, "openai/slow")
        assert t.status == 200
        assert t.terminal.data["code"] == "STREAM_TIMEOUT"
        assert t.terminal.data["partial"] is False
        assistant = wait_until_idle(client, cid)["messages"][-1]
    assert (assistant["status"], assistant["error"]["code"]) == ("error", "STREAM_TIMEOUT")
    assert fake_openai.requests[-1].closed.wait(2), "the upstream call was not aborted"


def test_stalled_stream(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    server = serve(stall_timeout=0.4)
    fake_openai.script("stall", Script(tokens=["a", "b", "c"], delay=3))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        t = post_sse(client, cid, "openai/stall")
        assert t.terminal.data["code"] == "STREAM_TIMEOUT"
        assert t.text == "a"
        assistant = wait_until_idle(client, cid)["messages"][-1]
    assert (assistant["status"], assistant["content"]) == ("error", "a")


def test_output_token_limit_ends_with_length(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    server = serve(max_output_tokens=3)
    fake_openai.script("long", Script(tokens=list("abcdefgh"), delay=0.01))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        t = stream(
            client, "POST", "/api/v1/messages", json={"message": "hi", "model": "openai/long"}
        )
    assert t.terminal.data["finishReason"] == "length"
    assert t.text == "abc"


def test_json_reply_of_a_failed_stream(client: httpx2.Client, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("drop", Script(tokens=["a", "b", "c"], drop_after=2))
    cid = new_conversation(client)
    response = client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": "x", "model": "openai/drop"}
    )
    assert response.status_code == 502
    body = response.json()
    assert body["error"]["code"] == "INTERRUPTED"
    assert body["content"] == "ab"
    assert wait_until_idle(client, cid)["messages"][-1]["content"] == "ab"


# -- bad input: 4xx, nothing stored ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"content": ""}, 400, "INVALID_REQUEST"),
        ({"content": "   \n"}, 400, "INVALID_REQUEST"),
        ({"content": "x" * 201}, 400, "INVALID_REQUEST"),
        ({"content": "hi", "model": "nope/model"}, 400, "MODEL_NOT_FOUND"),
        ({"content": "hi", "model": "no-slash"}, 400, "INVALID_REQUEST"),
        ({"content": "hi", "model": "demo/unknown"}, 400, "MODEL_NOT_FOUND"),
        ({}, 422, "INVALID_REQUEST"),
        ({"content": 5}, 422, "INVALID_REQUEST"),
        ({"content": "hi", "extra": 1}, 422, "INVALID_REQUEST"),
    ],
)
def test_bad_message_input_stores_nothing(
    serve: ServeFactory, body: dict[str, object], status: int, code: str
) -> None:
    server = serve(max_message_chars=200)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        for accept in ("text/event-stream", "application/json"):
            response = client.post(
                f"/api/v1/conversations/{cid}/messages", json=body, headers={"accept": accept}
            )
            assert response.status_code == status, response.text
            assert error_of(response) == code
        stored = conversation(client, cid)
    assert stored["messages"] == []
    assert stored["activeStreamId"] is None


def test_malformed_json(client: httpx2.Client) -> None:
    cid = new_conversation(client)
    for url in (
        f"/api/v1/conversations/{cid}/messages",
        "/api/v1/messages",
        "/api/v1/conversations",
    ):
        response = client.post(
            url, content=b'{"content": ', headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, url
        assert error_of(response) == "INVALID_REQUEST"
    assert conversation(client, cid)["messages"] == []
    assert len(client.get("/api/v1/conversations").json()["data"]) == 1


def test_oversized_history(serve: ServeFactory) -> None:
    server = serve(max_history_messages=3, max_history_chars=50)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}] * 2
        too_many = client.post("/api/v1/messages", json={"message": "hi", "history": turns})
        assert too_many.status_code == 400
        assert error_of(too_many) == "INVALID_REQUEST"
        too_long = client.post(
            "/api/v1/messages",
            json={"message": "hi", "history": [{"role": "user", "content": "x" * 60}]},
        )
        assert too_long.status_code == 400
        bad_role = client.post(
            "/api/v1/messages",
            json={"message": "hi", "history": [{"role": "tool", "content": "x"}]},
        )
        assert bad_role.status_code == 422
        assert error_of(bad_role) == "INVALID_REQUEST"


def test_bad_last_event_id_and_unknown_streams(client: httpx2.Client) -> None:
    reply = client.post("/api/v1/messages", json={"message": "hi"}).json()
    cid = new_conversation(client)
    for value in ("abc", "-1", "1.5", "１"):
        for url in (f"/api/v1/streams/{reply['streamId']}", f"/api/v1/conversations/{cid}/stream"):
            response = client.get(url, headers={"last-event-id": value.encode()})
            assert response.status_code == 400, (url, value)
            assert error_of(response) == "INVALID_REQUEST"
        query = client.get(f"/api/v1/streams/{reply['streamId']}", params={"lastEventId": value})
        assert query.status_code == 400
    unknown = client.get("/api/v1/streams/s_unknown")
    assert unknown.status_code == 404
    assert error_of(unknown) == "NOT_FOUND"
    for method, url in (
        ("GET", "/api/v1/conversations/c_nope"),
        ("PATCH", "/api/v1/conversations/c_nope"),
        ("DELETE", "/api/v1/conversations/c_nope"),
        ("POST", "/api/v1/conversations/c_nope/messages"),
        ("POST", "/api/v1/conversations/c_nope/regenerate"),
        ("GET", "/api/v1/conversations/c_nope/stream"),
    ):
        body = {"content": "hi"} if url.endswith("messages") else {}
        response = client.request(method, url, json=body)
        assert response.status_code == 404, (method, url)
        assert error_of(response) == "NOT_FOUND"


def test_expired_stream_is_404(serve: ServeFactory) -> None:
    server = serve(stream_retention=0.0)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        reply = client.post("/api/v1/messages", json={"message": "hi"}).json()
        response = client.get(f"/api/v1/streams/{reply['streamId']}")
    assert response.status_code == 404
    assert error_of(response) == "NOT_FOUND"


def test_overloaded(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    server = serve(max_active_streams=1)
    fake_openai.script("slow", Script(tokens=["a"] * 50, delay=0.05))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        first = stream(
            client,
            "POST",
            "/api/v1/messages",
            json={"message": "x", "model": "openai/slow"},
            stop_after=2,
        )
        second = client.post("/api/v1/messages", json={"message": "y"})
        assert second.status_code == 503
        assert error_of(second) == "OVERLOADED"
        client.post(f"/api/v1/streams/{first.events[0].data['streamId']}/cancel")


def test_maximum_duration_ends_with_length(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    server = serve(max_stream_duration=0.6)
    fake_openai.script("endless", Script(tokens=["a"] * 200, delay=0.05))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        t = post_sse(client, cid, "openai/endless")
        message = wait_until_idle(client, cid)["messages"][-1]
    assert t.terminal.data["finishReason"] == "length"
    assert 0 < len(t.text) < 200
    assert (message["status"], message["finishReason"], message["content"]) == (
        "complete",
        "length",
        t.text,
    )
    assert fake_openai.requests[-1].closed.wait(2)


def test_text_that_is_not_unicode_is_refused(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    cid = new_conversation(client)
    raw = b'{"content": "x \\ud800 y", "model": "openai/m"}'
    response = client.post(
        f"/api/v1/conversations/{cid}/messages",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert error_of(response) == "INVALID_REQUEST"
    stateless = client.post(
        "/api/v1/messages",
        content=b'{"message": "\\udfff"}',
        headers={"content-type": "application/json"},
    )
    assert stateless.status_code == 400
    assert conversation(client, cid)["messages"] == []
    assert not fake_openai.requests


def test_a_request_that_cannot_be_built_harms_no_other_stream(
    serve: ServeFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    config = tmp_path / "runnel.toml"
    config.write_text(
        f'[providers.bad]\ntype = "openai"\nbase_url = "{fake_openai.url}"\napi_key = "sk-\u00fc"\n'
    )
    server = serve(config=config)
    fake_openai.script("slow", Script(tokens=["x"] * 30, delay=0.03))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        bystander = new_conversation(client)
        with open_stream(
            client,
            "POST",
            f"/api/v1/conversations/{bystander}/messages",
            json={"content": "hi", "model": "openai/slow"},
        ) as live:
            live.take(2)
            cid = new_conversation(client)
            broken = client.post(
                f"/api/v1/conversations/{cid}/messages", json={"content": "hi", "model": "bad/m"}
            )
            assert broken.status_code == 502
            assert error_of(broken) == "PROVIDER_ERROR"
            rest = live.rest()
        assert rest.terminal.data["finishReason"] == "stop"
        assert wait_until_idle(client, cid)["messages"][-1]["error"]["code"] == "PROVIDER_ERROR"
        assert client.post("/api/v1/messages", json={"message": "still up"}).status_code == 200


def test_garbage_shapes_in_chunks_are_provider_errors(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    for garbage in (
        b'data: {"choices": ["x"]}\n\n',
        b'data: {"choices": [{"delta": {"content": 5}}]}\n\n',
        b'data: {"choices": [], "usage": {"prompt_tokens": "many"}}\n\n',
        b"data: [1, 2]\n\n",
    ):
        fake_openai.script("junk", Script(tokens=["ok", garbage]))
        cid = new_conversation(client)
        t = post_sse(client, cid, "openai/junk")
        assert t.terminal.data["code"] == "PROVIDER_ERROR", garbage
        assert wait_until_idle(client, cid)["messages"][-1]["content"] == "ok"


def test_a_stale_claim_is_taken_over(server: RunningServer, client: httpx2.Client) -> None:
    """A conversation left claimed by a stream that no longer runs (its outcome could not
    be stored) accepts a new message; the dead reply is marked interrupted."""
    cid = new_conversation(client)
    client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "first"})
    dead = conversation(client, cid)["messages"][-1]

    async def break_it() -> None:
        store = Store(server.settings.database)
        await store.open()
        async with store.engine.begin() as conn:
            await conn.execute(
                text("UPDATE conversations SET active_stream_id = :s WHERE id = :c"),
                {"s": dead["streamId"], "c": cid},
            )
            await conn.execute(
                text("UPDATE messages SET status = 'streaming' WHERE id = :m"), {"m": dead["id"]}
            )
        await store.close()

    asyncio.run(break_it())
    assert conversation(client, cid)["activeStreamId"] == dead["streamId"]
    response = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "again"})
    assert response.status_code == 200
    messages = wait_until_idle(client, cid)["messages"]
    assert [m["status"] for m in messages] == ["complete", "interrupted", "complete", "complete"]


def test_foreign_host_headers_are_refused_without_tokens(serve: ServeFactory) -> None:
    open_server = serve()
    with httpx2.Client(base_url=open_server.url, timeout=30) as client:
        evil = client.get("/api/v1/conversations", headers={"host": "rebound.example"})
        assert evil.status_code == 403
        assert error_of(evil) == "FORBIDDEN"
        assert (
            client.get("/api/v1/conversations", headers={"host": "localhost:8000"}).status_code
            == 200
        )
        assert client.get("/healthz", headers={"host": "[::1]:8000"}).status_code == 200
    listed = serve(allowed_hosts="chat.internal")
    with httpx2.Client(base_url=listed.url, timeout=30) as client:
        assert client.get("/healthz", headers={"host": "chat.internal"}).status_code == 200
    guarded = serve(api_tokens="t:alice")
    with httpx2.Client(base_url=guarded.url, timeout=30) as client:
        named = client.get(
            "/api/v1/conversations", headers={"host": "chat.example", "authorization": "Bearer t"}
        )
        assert named.status_code == 200
