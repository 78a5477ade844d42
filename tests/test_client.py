"""``runnel.client`` against a real server: replies as typed events, errors as typed
exceptions, stop, and transparent resume through a proxy that cuts the connection at
random points — every token exactly once, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx2
import pytest

from runnel.client import (
    AsyncClient,
    Backoff,
    Client,
    Complete,
    Failed,
    RunnelClientError,
    Status,
    StreamLost,
    Token,
)
from runnel.providers.demo import demo_reply
from tests.conftest import ServeFactory
from tests.proxy import CuttingProxy
from tests.server import RunningServer

FAST = Backoff(base=0.01, cap=0.05)
LONG = {"demo_tokens_per_second": 800.0, "demo_reply_tokens": 300}


def expected(server: RunningServer, prompt: str) -> str:
    return "".join(demo_reply(prompt, server.settings.demo_reply_tokens))


def stored_reply(server: RunningServer, conversation_id: str) -> dict[str, object]:
    body = httpx2.get(f"{server.url}/api/v1/conversations/{conversation_id}").json()
    message: dict[str, object] = body["messages"][-1]
    return message


@pytest.fixture
def client(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, backoff=FAST) as found:
        yield found


def test_a_reply_as_typed_events(client: Client, server: RunningServer) -> None:
    conversation = client.create_conversation(title="client")
    reply = client.send(conversation["id"], "Hello client")
    events = list(reply)
    assert isinstance(events[0], Status)
    assert events[0].conversation_id == conversation["id"]
    assert all(isinstance(e, Token) for e in events[1:-1])
    end = events[-1]
    assert isinstance(end, Complete)
    assert end.finish_reason == "stop"
    assert reply.text == expected(server, "Hello client")
    assert reply.text == stored_reply(server, conversation["id"])["content"]
    assert reply.stream_id == events[0].stream_id
    assert reply.reconnects == 0
    ids = [e.id for e in events]
    assert ids == sorted(set(ids))
    history = client.conversation(conversation["id"])["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"]


def test_stateless_ask_and_models(client: Client, server: RunningServer) -> None:
    reply = client.ask("Just once", history=[{"role": "user", "content": "before"}])
    assert isinstance(reply.wait(), Complete)
    assert reply.text == expected(server, "Just once")
    assert reply.conversation_id is None
    assert "demo/markdown" in [m["id"] for m in client.models()["data"]]
    assert client.conversations() == []


def test_errors_are_typed(client: Client, serve: ServeFactory) -> None:
    conversation = client.create_conversation()
    with pytest.raises(RunnelClientError) as raised:
        client.send(conversation["id"], "hi", model="demo/nope")
    assert (raised.value.code, raised.value.status) == ("MODEL_NOT_FOUND", 400)
    with pytest.raises(RunnelClientError) as raised:
        client.send(conversation["id"], "   ")
    assert raised.value.code == "INVALID_REQUEST"
    with pytest.raises(RunnelClientError) as raised:
        client.conversation("c_nope")
    assert (raised.value.code, raised.value.status) == ("NOT_FOUND", 404)
    assert client.conversation(conversation["id"])["messages"] == []
    limited = serve(rate_limit="1/minute")
    with Client(limited.url) as other:
        other.ask("one").wait()
        with pytest.raises(RunnelClientError) as raised:
            other.ask("two")
    assert raised.value.code == "RATE_LIMIT"
    assert raised.value.retry_after is not None
    assert raised.value.retry_after >= 1


def test_a_bad_key_is_unauthorized(serve: ServeFactory) -> None:
    server = serve(api_tokens="good:alice")
    with Client(server.url, key="bad") as bad, pytest.raises(RunnelClientError) as raised:
        bad.conversations()
    assert (raised.value.code, raised.value.status) == ("UNAUTHORIZED", 401)
    with Client(server.url, key="good") as good:
        assert good.conversations() == []


def test_the_key_comes_from_the_environment(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(api_tokens="from-env:alice")
    monkeypatch.setenv("RUNNEL_API_KEY", "from-env")
    with Client(server.url) as client:
        assert client.conversations() == []


def test_stop_keeps_the_partial_reply(serve: ServeFactory) -> None:
    server = serve(demo_tokens_per_second=40.0, demo_reply_tokens=400)
    with Client(server.url, backoff=FAST) as client:
        conversation = client.create_conversation()
        reply = client.send(conversation["id"], "stop me")
        events = []
        for event in reply:
            events.append(event)
            if len(events) == 5:
                assert reply.stop() == "cancelling"
        end = events[-1]
    assert isinstance(end, Complete)
    assert end.finish_reason == "cancelled"
    stored = stored_reply(server, conversation["id"])
    assert stored["status"] == "cancelled"
    assert stored["content"] == reply.text
    assert 0 < len(reply.text) < len(expected(server, "stop me"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_resume_across_random_cuts(serve: ServeFactory, seed: int) -> None:
    server = serve(**LONG)
    port = int(server.url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, low=300, high=2500, seed=seed).start()
    try:
        with Client(proxy.url, backoff=FAST) as client:
            conversation = client.create_conversation()
            reply = client.send(conversation["id"], f"cut {seed}")
            events = list(reply)
    finally:
        proxy.close()
    assert proxy.cuts >= 2, "the proxy cut nothing"
    assert reply.reconnects >= 2
    assert isinstance(events[-1], Complete)
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), "an event came twice or out of order"
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert text == expected(server, f"cut {seed}")
    assert text == stored_reply(server, conversation["id"])["content"]


def test_async_resume_across_random_cuts(serve: ServeFactory) -> None:
    server = serve(**LONG)
    port = int(server.url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, low=300, high=2500, seed=7).start()

    async def run() -> tuple[list[object], int]:
        async with AsyncClient(proxy.url, backoff=FAST) as client:
            reply = await client.ask("async cut")
            events = [event async for event in reply]
            return events, reply.reconnects

    try:
        events, reconnects = asyncio.run(run())
    finally:
        proxy.close()
    assert reconnects >= 2
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert text == expected(server, "async cut")
    assert isinstance(events[-1], Complete)


def test_async_client_basics(server: RunningServer) -> None:
    async def run() -> None:
        async with AsyncClient(server.url, backoff=FAST) as client:
            conversation = await client.create_conversation(title="async")
            reply = await client.send(conversation["id"], "async hello")
            end = await reply.wait()
            assert isinstance(end, Complete)
            assert reply.text == expected(server, "async hello")
            with pytest.raises(RunnelClientError) as raised:
                await client.send(conversation["id"], "x", model="demo/nope")
            assert raised.value.code == "MODEL_NOT_FOUND"
            await client.delete_conversation(conversation["id"])
            assert await client.conversations() == []

    asyncio.run(run())


def test_iterating_again_after_an_interruption_resumes(serve: ServeFactory) -> None:
    """A caller that leaves the loop (Ctrl-C, a break) and iterates again gets the rest:
    nothing twice, nothing missing."""
    server = serve(**LONG)
    with Client(server.url, backoff=FAST) as client:
        reply = client.ask("interrupted")
        first = []
        for event in reply:
            first.append(event)
            if len(first) == 20:
                break
        rest = list(reply)
    events = first + rest
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert text == expected(server, "interrupted")
    ids = [e.id for e in events]
    assert ids == sorted(set(ids))


def test_a_stream_that_expired_is_lost(serve: ServeFactory) -> None:
    server = serve(stream_retention=0.0)
    with Client(server.url, backoff=FAST) as client:
        reply = client.attach("s_nope")
        with pytest.raises(StreamLost) as raised:
            list(reply)
    assert raised.value.code == "NOT_FOUND"


def test_a_failed_reply_ends_with_failed(serve: ServeFactory, fake_openai: object) -> None:
    from tests.fakes.openai_server import FakeOpenAI, Script

    assert isinstance(fake_openai, FakeOpenAI)
    fake_openai.script("gpt-4o", Script(tokens=["one ", "two ", "three"], error_after=2))
    server = serve(retry_attempts=1)
    with Client(server.url) as client:
        conversation = client.create_conversation()
        reply = client.send(conversation["id"], "fail", model="openai/gpt-4o")
        end = reply.wait()
    assert isinstance(end, Failed)
    assert end.partial
    assert reply.text == "one two "
    assert stored_reply(server, conversation["id"])["status"] == "error"
