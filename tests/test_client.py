"""``runnel.client`` against a real server: replies as typed events, errors as typed
exceptions, stop, and transparent resume through a proxy that cuts the connection at
random points — every token exactly once, sync and async. The SSE parser, the backoff and
the error mapping are also tested on their own, as the pure functions they are."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
from collections.abc import Iterator

import httpx2
import pytest

from runnel.client import (
    AsyncClient,
    Backoff,
    Client,
    Complete,
    Conflict,
    Event,
    Failed,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    ProviderFailed,
    RateLimited,
    RunnelClientError,
    ServerError,
    Status,
    StreamInProgress,
    StreamLost,
    Token,
    Unauthorized,
    Unreachable,
)
from runnel.client._sse import SSEReader
from runnel.client.errors import from_answer
from runnel.providers.demo import demo_reply
from tests.conftest import ServeFactory
from tests.proxy import CuttingProxy
from tests.server import RunningServer

FAST = Backoff(base=0.01, cap=0.05)
LONG = {"demo_tokens_per_second": 800.0, "demo_reply_tokens": 300}
SLOW = {"demo_tokens_per_second": 40.0, "demo_reply_tokens": 400}


def expected(server: RunningServer, prompt: str) -> str:
    return "".join(demo_reply(prompt, server.settings.demo_reply_tokens))


def stored_reply(server: RunningServer, conversation_id: str) -> dict[str, object]:
    body = httpx2.get(f"{server.url}/api/v1/conversations/{conversation_id}").json()
    message: dict[str, object] = body["messages"][-1]
    return message


def port_of(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def assert_once_in_order(events: list[Event]) -> str:
    """The events' ids strictly increase; the text their tokens make."""
    ids = [e.id for e in events]
    assert all(a < b for a, b in itertools.pairwise(ids)), ids
    return "".join(e.text for e in events if isinstance(e, Token))


@pytest.fixture
def client(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, backoff=FAST) as found:
        yield found


# the pure parts


def feed(reader: SSEReader, text: str) -> list[Event]:
    found = []
    for line in text.split("\n"):
        event = reader.line(line)
        if event is not None:
            found.append(event)
    return found


def test_the_parser_reads_events_at_their_blank_line() -> None:
    reader = SSEReader()
    events = feed(
        reader,
        "retry: 3000\n\n: ping\n\n"
        'id: 1\ndata: {"type":"status","status":"started","streamId":"s_1",'
        '"conversationId":null,"messageId":"m_1","model":"demo/markdown"}\n\n'
        'id: 2\ndata:{"type":"token","content":"He"}\n\n'
        'id: 3\ndata: {"type":"token",\ndata: "content":"llo"}\n\n'
        'id: 4\ndata: {"type":"something-new"}\n\n'
        'id: 5\ndata: {"type":"complete","model":"demo/markdown","finishReason":"stop",'
        '"totalTokens":2,"usage":null,"messageId":"m_1"}\n\n',
    )
    assert reader.retry_ms == 3000
    assert events[0] == Status(1, "s_1", None, "m_1", "demo/markdown")
    assert events[1:3] == [Token(2, "He"), Token(3, "llo")]
    assert events[3] == Complete(5, "stop", "demo/markdown", "m_1", 2, None, None)
    assert len(events) == 4  # the unknown type is skipped


def test_the_parser_drops_an_event_cut_off() -> None:
    reader = SSEReader()
    assert feed(reader, 'retry: 1500\nid: 7\ndata: {"type":"tok') == []
    reader.reset()  # a new connection
    assert feed(reader, 'id: 7\ndata: {"type":"token","content":"x"}\n\n') == [Token(7, "x")]
    assert reader.retry_ms == 1500  # outlives the connection
    with pytest.raises(ServerError):
        feed(reader, "id: 8\ndata: not json\n\n")


def test_backoff_waits_from_the_servers_retry_with_jitter_and_a_cap() -> None:
    backoff = Backoff(base=0.001, cap=3.0, rng=random.Random(5))
    assert backoff.delay(0, 2000) == 0.0  # the first reconnect after a flowing stream
    for attempt in range(1, 8):
        bound = min(3.0, 2.0 * 2 ** (attempt - 1))
        waits = [backoff.delay(attempt, 2000) for _ in range(200)]
        assert all(0 <= w <= bound for w in waits)
        assert max(waits) > bound / 2  # the server's 2 s is the base, not our 1 ms
    assert max(backoff.delay(1) for _ in range(200)) <= 0.001  # no retry: field: ours
    assert backoff.delay(0, 2000, retry_after=2.5) == 2.5
    assert backoff.delay(0, 2000, retry_after=60) == 3.0
    again = Backoff(rng=random.Random(9)), Backoff(rng=random.Random(9))
    assert [again[0].delay(3, 500) for _ in range(5)] == [again[1].delay(3, 500) for _ in range(5)]


def test_answers_map_to_the_error_classes() -> None:
    def answer(status: int, code: str, retry_after: str | None = None) -> RunnelClientError:
        body = f'{{"error":{{"code":"{code}","message":"m"}}}}'.encode()
        return from_answer(status, body, retry_after)

    assert type(answer(400, "MODEL_NOT_FOUND")) is ModelNotFound
    assert isinstance(answer(400, "MODEL_NOT_FOUND"), InvalidRequest)
    assert type(answer(409, "STREAM_IN_PROGRESS")) is StreamInProgress
    assert type(answer(502, "PROVIDER_AUTH")) is ProviderFailed
    limited = answer(429, "RATE_LIMIT", "7")
    assert isinstance(limited, RateLimited)
    assert (limited.code, limited.status, limited.retry_after) == ("RATE_LIMIT", 429, 7.0)
    assert limited.retryable
    assert type(answer(418, "SOMETHING_NEW")) is RunnelClientError
    proxy_page = from_answer(502, b"<html>Bad Gateway</html>", None)
    assert (type(proxy_page), proxy_page.code) == (ServerError, "INTERNAL")
    assert type(from_answer(404, b"", None)) is NotFound


# against a server


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
    assert reply.terminal == end
    assert reply.text == assert_once_in_order(events) == expected(server, "Hello client")
    assert reply.text == stored_reply(server, conversation["id"])["content"]
    assert reply.stream_id == events[0].stream_id
    assert reply.reconnects == 0
    history = client.conversation(conversation["id"])["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"]


def test_stateless_ask_and_models(client: Client, server: RunningServer) -> None:
    reply = client.ask("Just once", history=[{"role": "user", "content": "before"}])
    assert isinstance(reply.wait(), Complete)
    assert reply.text == expected(server, "Just once")
    assert reply.conversation_id is None
    assert "demo/markdown" in [m["id"] for m in client.models()["data"]]
    assert client.conversations() == []


def test_conversations_page_by_page(client: Client) -> None:
    made = [client.create_conversation(title=f"n{i}")["id"] for i in range(5)]
    assert [c["id"] for c in client.iter_conversations(page_size=2)] == made[::-1]
    assert [c["id"] for c in client.conversations(limit=3)] == made[:1:-1]
    renamed = client.update_conversation(made[0], title="renamed")
    assert renamed["title"] == "renamed"
    client.delete_conversation(made[0])
    with pytest.raises(NotFound):
        client.conversation(made[0])


def test_errors_are_typed(client: Client, serve: ServeFactory) -> None:
    conversation = client.create_conversation()
    with pytest.raises(ModelNotFound) as unknown:
        client.send(conversation["id"], "hi", model="demo/nope")
    assert (unknown.value.code, unknown.value.status) == ("MODEL_NOT_FOUND", 400)
    with pytest.raises(InvalidRequest) as empty:
        client.send(conversation["id"], "   ")
    assert empty.value.code == "INVALID_REQUEST"
    with pytest.raises(NotFound) as missing:
        client.conversation("c_nope")
    assert (missing.value.code, missing.value.status) == ("NOT_FOUND", 404)
    assert client.conversation(conversation["id"])["messages"] == []
    limited = serve(rate_limit="1/minute")
    with Client(limited.url) as other:
        other.ask("one").wait()
        with pytest.raises(RateLimited) as raised:
            other.ask("two")
    assert (raised.value.code, raised.value.status) == ("RATE_LIMIT", 429)
    assert raised.value.retry_after is not None
    assert raised.value.retry_after >= 1


def test_one_reply_at_a_time(serve: ServeFactory) -> None:
    server = serve(**SLOW)
    with Client(server.url, backoff=FAST) as client:
        conversation = client.create_conversation()
        first = client.send(conversation["id"], "first")
        assert isinstance(next(iter(first)), Status)
        with pytest.raises(StreamInProgress) as raised:
            client.send(conversation["id"], "second")
        assert isinstance(raised.value, Conflict)
        assert raised.value.status == 409
        first.stop()
        assert isinstance(first.wait(), Complete)
        assert first.reconnects == 1  # the first loop was left after the status


def test_a_server_that_is_not_there_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}") as client, pytest.raises(Unreachable) as raised:
        client.ask("anyone?")
    assert (raised.value.code, raised.value.status) == ("UNREACHABLE", None)
    assert raised.value.retryable


def test_a_bad_key_is_unauthorized(serve: ServeFactory) -> None:
    server = serve(api_tokens="good:alice")
    with Client(server.url, key="bad") as bad, pytest.raises(Unauthorized) as raised:
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
    server = serve(**SLOW)
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


def test_async_stop_keeps_the_partial_reply(serve: ServeFactory) -> None:
    server = serve(**SLOW)

    async def run() -> tuple[str, list[Event], str]:
        async with AsyncClient(server.url, backoff=FAST) as client:
            conversation = await client.create_conversation()
            reply = await client.send(conversation["id"], "stop me too")
            events: list[Event] = []
            async for event in reply:
                events.append(event)
                if len(events) == 5:
                    assert await reply.stop() == "cancelling"
            return conversation["id"], events, reply.text

    conversation_id, events, text = asyncio.run(run())
    end = events[-1]
    assert isinstance(end, Complete)
    assert end.finish_reason == "cancelled"
    stored = stored_reply(server, conversation_id)
    assert (stored["status"], stored["content"]) == ("cancelled", text)
    assert text


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_resume_across_random_cuts(serve: ServeFactory, seed: int) -> None:
    server = serve(**LONG)
    proxy = CuttingProxy(port_of(server), low=300, high=2500, seed=seed).start()
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
    text = assert_once_in_order(events)
    assert text == expected(server, f"cut {seed}")
    assert text == stored_reply(server, conversation["id"])["content"]


def test_async_resume_across_random_cuts(serve: ServeFactory) -> None:
    server = serve(**LONG)
    proxy = CuttingProxy(port_of(server), low=300, high=2500, seed=7).start()

    async def run() -> tuple[str, list[Event], int]:
        async with AsyncClient(proxy.url, backoff=FAST) as client:
            conversation = await client.create_conversation()
            reply = await client.send(conversation["id"], "async cut")
            events = [event async for event in reply]
            return conversation["id"], events, reply.reconnects

    try:
        conversation_id, events, reconnects = asyncio.run(run())
    finally:
        proxy.close()
    assert reconnects >= 2
    assert isinstance(events[-1], Complete)
    text = assert_once_in_order(events)
    assert text == expected(server, "async cut")
    assert text == stored_reply(server, conversation_id)["content"]


def test_async_resume_after_the_server_drops_every_connection(serve: ServeFactory) -> None:
    server = serve(demo_tokens_per_second=200.0, demo_reply_tokens=200)

    async def run() -> tuple[str, list[Event], int]:
        async with AsyncClient(server.url, backoff=FAST) as client:
            conversation = await client.create_conversation()
            reply = await client.send(conversation["id"], "dropped")
            events: list[Event] = []
            async for event in reply:
                events.append(event)
                if len(events) in (20, 60):
                    server.drop_connections()
            return conversation["id"], events, reply.reconnects

    conversation_id, events, reconnects = asyncio.run(run())
    assert reconnects >= 1
    text = assert_once_in_order(events)
    assert text == expected(server, "dropped")
    assert text == stored_reply(server, conversation_id)["content"]


def test_a_server_that_stays_away_ends_in_stream_lost(serve: ServeFactory) -> None:
    server = serve(**SLOW)
    proxy = CuttingProxy(port_of(server), low=1500, high=1500, seed=0).start()
    backoff = Backoff(base=0.01, cap=0.02, attempts=3)
    with Client(proxy.url, backoff=backoff) as client:
        conversation = client.create_conversation()
        reply = client.send(conversation["id"], "away")
        events: list[Event] = []

        def read() -> None:
            for event in reply:
                events.append(event)
                if len(events) == 3:
                    proxy.close()  # the connection in use runs out; no new one is let in

        with pytest.raises(StreamLost) as raised:
            read()
    with Client(server.url) as direct:
        direct.cancel(reply.stream_id or "")
    assert raised.value.code == "INTERRUPTED"
    assert proxy.cuts == 1
    text = assert_once_in_order(events)
    assert text
    assert expected(server, "away").startswith(text)


def test_async_client_basics(server: RunningServer) -> None:
    async def run() -> None:
        async with AsyncClient(server.url, backoff=FAST) as client:
            conversation = await client.create_conversation(title="async")
            reply = await client.send(conversation["id"], "async hello")
            end = await reply.wait()
            assert isinstance(end, Complete)
            assert reply.text == expected(server, "async hello")
            with pytest.raises(ModelNotFound):
                await client.send(conversation["id"], "x", model="demo/nope")
            assert [c["id"] for c in await client.conversations()] == [conversation["id"]]
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
    assert assert_once_in_order(first + rest) == expected(server, "interrupted")


def test_async_iterating_again_after_a_break_resumes(serve: ServeFactory) -> None:
    """The abandoned ``async for`` is closed later (by the event loop), and must not touch
    the connection of the next one."""
    server = serve(**LONG)

    async def run() -> list[Event]:
        async with AsyncClient(server.url, backoff=FAST) as client:
            reply = await client.ask("async interrupted")
            first: list[Event] = []
            async for event in reply:
                first.append(event)
                if len(first) == 20:
                    break
            return first + [event async for event in reply]

    assert assert_once_in_order(asyncio.run(run())) == expected(server, "async interrupted")


def test_attach_reads_a_stream_from_any_point(client: Client, server: RunningServer) -> None:
    conversation = client.create_conversation()
    reply = client.send(conversation["id"], "attach")
    reply.wait()
    assert reply.stream_id is not None
    later = client.attach(reply.stream_id, after=10)
    events = list(later)
    assert events[0].id > 10  # the tokens already in the log come merged
    assert isinstance(events[-1], Complete)
    assert later.reconnects == 0
    # the status is event 1, token n is event n + 1
    tokens = demo_reply("attach", server.settings.demo_reply_tokens)
    assert later.text == "".join(tokens[9:])


def test_closing_a_reply_ends_its_loop_not_the_reply(client: Client, server: RunningServer) -> None:
    conversation = client.create_conversation()
    with client.send(conversation["id"], "close me") as reply:
        seen = []
        for event in reply:
            seen.append(event)
            if len(seen) == 3:
                reply.close()
    assert len(seen) == 3
    assert list(reply) == []
    assert reply.stream_id is not None
    rest = client.attach(reply.stream_id, after=reply.last_event_id)
    assert isinstance(rest.wait(), Complete)
    assert reply.text + rest.text == expected(server, "close me")


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
