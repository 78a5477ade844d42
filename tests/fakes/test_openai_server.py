"""Tests of the fake OpenAI server, through the real ``openai`` SDK and through plain sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageParam,
)

from .openai_server import FakeOpenAI, RecordedRequest, Script

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server
    assert server._errors == []  # the fake's own failures are kept quiet, so check them here


def sdk(fake: FakeOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.url, api_key="sk-test", max_retries=0)


def last_chat_request(fake: FakeOpenAI) -> RecordedRequest:
    return [r for r in fake.requests if r.path == "/v1/chat/completions"][-1]


def raw_exchange(fake: FakeOpenAI, data: bytes) -> list[bytes]:
    """Send ``data`` on a plain socket and return every recv() until the server closes."""
    pieces: list[bytes] = []
    with socket.create_connection(("127.0.0.1", fake.port), timeout=2) as sock:
        sock.sendall(data)
        while piece := sock.recv(65536):
            pieces.append(piece)
    return pieces


def dechunk(body: bytes) -> list[bytes]:
    """The payloads of a chunked HTTP body, which must end with its terminating chunk."""
    payloads: list[bytes] = []
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n"
            return payloads
        payloads.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        body = rest[size + 2 :]


def post(body: dict[str, Any], *, close: bool = True) -> bytes:
    payload = orjson.dumps(body)
    connection = b"connection: close\r\n" if close else b""
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: fake\r\ncontent-type: application/json\r\n"
        + connection
        + b"content-length: %d\r\n\r\n" % len(payload)
        + payload
    )


def test_stream_deltas_concatenate_and_usage_arrives(fake: FakeOpenAI) -> None:
    async def go() -> list[ChatCompletionChunk]:
        async with sdk(fake) as client:
            stream = await client.chat.completions.create(
                model="gpt-x",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(go())
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Hello, world!"
    assert deltas[0].role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (11, 4)
    assert all(c.usage is None for c in chunks[:-1])
    request = last_chat_request(fake)
    assert request.body["model"] == "gpt-x"
    assert request.body["stream"] is True
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.closed.wait(1)  # the client was closed when its context exited
    assert request.closed_by_client is False
    assert request.closed_at is not None


def test_stream_wire_format(fake: FakeOpenAI) -> None:
    fake.script("m", Script(tokens=["a", "b"], finish_reason="length"))
    reply = b"".join(raw_exchange(fake, post({"model": "m", "stream": True})))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: text/event-stream; charset=utf-8" in head
    assert b"transfer-encoding: chunked" in head
    events = dechunk(body)
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    events = [e.removeprefix(b"data: ").removesuffix(b"\n\n") for e in events]
    assert events[-1] == b"[DONE]"
    first, second, finish = (orjson.loads(e) for e in events[:-1])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": "a"}, "finish_reason": None}
    ]
    assert second["choices"][0]["delta"] == {"content": "b"}
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "length"}]
    assert all("usage" not in chunk for chunk in (first, second, finish))


def test_non_streaming_completion(fake: FakeOpenAI) -> None:
    fake.script("m", Script(tokens=["Hi", " there"]))

    async def go() -> ChatCompletion:
        async with sdk(fake) as client:
            return await client.chat.completions.create(model="m", messages=MESSAGES)

    completion = asyncio.run(go())
    assert completion.choices[0].message.content == "Hi there"
    assert completion.usage is not None
    assert completion.usage.total_tokens == 13


def test_401_raises_authentication_error(fake: FakeOpenAI) -> None:
    fake.script("m", Script(status=401))

    async def go() -> None:
        async with sdk(fake) as client:
            await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)

    with pytest.raises(openai.AuthenticationError) as caught:
        asyncio.run(go())
    assert caught.value.code == "invalid_api_key"


def test_429_with_retry_after_raises_rate_limit_error(fake: FakeOpenAI) -> None:
    fake.script("m", Script(status=429, retry_after="7"))

    async def go() -> None:
        async with sdk(fake) as client:
            await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)

    with pytest.raises(openai.RateLimitError) as caught:
        asyncio.run(go())
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"


def test_error_body_override_and_keep_alive_after_error(fake: FakeOpenAI) -> None:
    body = {
        "error": {
            "message": "too long",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    fake.queue("m", Script(status=400, error_body=body))

    async def go() -> str:
        async with sdk(fake) as client:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(model="m", messages=MESSAGES)
            assert caught.value.code == "context_length_exceeded"
            completion = await client.chat.completions.create(model="m", messages=MESSAGES)
            assert not fake.requests[0].closed.is_set()  # the error reply kept the connection
            return completion.choices[0].message.content or ""

    assert asyncio.run(go()) == "Hello, world!"


def test_drop_after_makes_the_sdk_stream_raise(fake: FakeOpenAI) -> None:
    fake.script("m", Script(tokens=["a", "b", "c", "d"], drop_after=2))
    received: list[str] = []

    async def go() -> None:
        async with sdk(fake) as client:
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIConnectionError) as caught:
        asyncio.run(go())
    assert received == ["a", "b"]
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)
    request = fake.requests[-1]
    assert request.closed.wait(1)
    assert request.closed_by_client is False
    assert request.closed_at is None


def test_client_closing_mid_stream_is_seen(fake: FakeOpenAI) -> None:
    fake.script("m", Script(tokens=["x"] * 100, delay=0.02))

    async def go() -> tuple[float, bool]:
        async with sdk(fake) as client:
            create = client.chat.completions.with_streaming_response.create
            async with create(model="m", messages=MESSAGES, stream=True) as response:
                lines = 0
                async for line in response.iter_lines():
                    lines += bool(line)
                    if lines == 2:
                        break
            left_at = time.monotonic()
            request = fake.requests[-1]
            seen = await asyncio.to_thread(request.closed.wait, 1.0)
            return left_at, seen

    left_at, seen = asyncio.run(go())
    request = fake.requests[-1]
    assert seen
    assert request.closed_by_client is True
    assert request.closed_at is not None
    assert request.closed_at - left_at < 1.0


def test_client_vanishing_before_headers_is_seen(fake: FakeOpenAI) -> None:
    fake.script("m", Script(headers_delay=5))
    with socket.create_connection(("127.0.0.1", fake.port), timeout=2) as sock:
        sock.sendall(post({"model": "m", "stream": True}, close=False))
        deadline = time.monotonic() + 1
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.005)
    request = fake.requests[0]
    assert request.closed.wait(1)
    assert request.closed_by_client is True


def test_split_utf8_arrives_intact_through_the_sdk(fake: FakeOpenAI) -> None:
    text = "héllo wörld 🎉"
    fake.script("m", Script(tokens=[text[:7], text[7:]], split_utf8=True))

    async def go() -> str:
        async with sdk(fake) as client:
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream])

    assert asyncio.run(go()) == text


def test_split_utf8_tears_a_character_across_reads(fake: FakeOpenAI) -> None:
    fake.script("m", Script(tokens=["é"], split_utf8=True))
    pieces = raw_exchange(fake, post({"model": "m", "stream": True}))
    torn = [piece for piece in pieces if piece.endswith(b"\xc3")]
    assert torn, pieces


def test_bytes_tokens_are_written_as_is(fake: FakeOpenAI) -> None:
    fake.script("m", Script(tokens=["a", b": keep-alive\n\n", b"data: {broken\n\n"], done=False))
    body = b"".join(raw_exchange(fake, post({"model": "m", "stream": True})))
    assert b"\r\n: keep-alive\n\n\r\n" in body
    assert b"\r\ndata: {broken\n\n\r\n" in body
    assert b"[DONE]" not in body


def test_queue_pops_in_order_then_falls_back(fake: FakeOpenAI) -> None:
    fake.script("m", Script(tokens=["fallback"]))
    fake.queue("m", Script(tokens=["one"]), Script(tokens=["two"]))
    fake.default = Script(tokens=["default"])

    async def go() -> list[str]:
        async with sdk(fake) as client:
            texts = []
            for model in ("m", "m", "m", "other"):
                reply = await client.chat.completions.create(model=model, messages=MESSAGES)
                texts.append(reply.choices[0].message.content or "")
            return texts

    assert asyncio.run(go()) == ["one", "two", "fallback", "default"]


def test_keep_alive_and_chunked_request_body(fake: FakeOpenAI) -> None:
    payload = orjson.dumps({"model": "m", "stream": True})
    chunked = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: fake\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (5, payload[:5])
        + b"%x;ext=1\r\n%s\r\n" % (len(payload) - 5, payload[5:])
        + b"0\r\n\r\n"
    )
    reply = b"".join(raw_exchange(fake, chunked + post({"model": "m"})))
    assert reply.count(b"HTTP/1.1 200 OK") == 2
    assert [r.body for r in fake.requests] == [{"model": "m", "stream": True}, {"model": "m"}]
    for request in fake.requests:
        assert request.closed.wait(1)
        assert not request.closed_by_client


def test_delays_pace_the_stream(fake: FakeOpenAI) -> None:
    fake.script("m", Script(tokens=["a", "b", "c"], first_delay=0.05, delay=0.05))
    started = time.monotonic()
    pieces = raw_exchange(fake, post({"model": "m", "stream": True}))
    assert time.monotonic() - started >= 0.15
    assert b"".join(pieces).count(b"chat.completion.chunk") == 4


def test_stop_closes_open_connections(fake: FakeOpenAI) -> None:
    fake.script("m", Script(tokens=["x"] * 100, delay=0.05))
    with socket.create_connection(("127.0.0.1", fake.port), timeout=2) as sock:
        sock.sendall(post({"model": "m", "stream": True}, close=False))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 0.5
        while sock.recv(65536):
            pass  # the server closed the connection: recv() returned b""
    request = fake.requests[0]
    assert request.closed.is_set()
    assert request.closed_by_client is False
    assert request.closed_at is None


def test_models_endpoint_lists_models(fake: FakeOpenAI) -> None:
    fake.models = ["alpha", "beta"]

    async def go() -> list[str]:
        async with sdk(fake) as client:
            page = await client.models.list()
            return [model.id for model in page.data]

    assert asyncio.run(go()) == ["alpha", "beta"]


def test_unknown_path_is_404(fake: FakeOpenAI) -> None:
    request = b"GET /v1/nope HTTP/1.1\r\nhost: fake\r\nconnection: close\r\n\r\n"
    reply = b"".join(raw_exchange(fake, request))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found")
    assert orjson.loads(body)["error"]["code"] == "unknown_url"
