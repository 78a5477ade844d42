"""Tests of the fake Anthropic server, through the real ``anthropic`` SDK's own typed parsing
(so the fake provably speaks the documented format) and through plain sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import orjson
import pytest

from .anthropic_server import PING, FakeAnthropic, Script

KEY = "sk-ant-test"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
REQUEST: dict[str, Any] = {"model": "m", "max_tokens": 5, "messages": MESSAGES}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server
    assert server._errors == []  # the fake's own failures are kept quiet, so check them here


def sdk(fake: FakeAnthropic) -> anthropic.AsyncAnthropic:
    """The SDK as the documented API wants it called: the key in ``x-api-key`` (the installed
    SDK would send it as ``Authorization: Bearer``, see the last tests)."""
    return anthropic.AsyncAnthropic(
        base_url=fake.url,
        api_key=KEY,
        max_retries=0,
        default_headers={"X-Api-Key": KEY, "Authorization": anthropic.omit},  # type: ignore[dict-item]
    )


def raw_post(fake: FakeAnthropic, body: dict[str, Any]) -> bytes:
    """POST /v1/messages on a plain socket; the whole reply, as received."""
    payload = orjson.dumps(body)
    request = (
        b"POST /v1/messages HTTP/1.1\r\nhost: fake\r\ncontent-type: application/json\r\n"
        b"x-api-key: k\r\nanthropic-version: 2023-06-01\r\nconnection: close\r\n"
        + b"content-length: %d\r\n\r\n" % len(payload)
        + payload
    )
    pieces: list[bytes] = []
    with socket.create_connection(("127.0.0.1", fake.port), timeout=2) as sock:
        sock.sendall(request)
        while piece := sock.recv(65536):
            pieces.append(piece)
    return b"".join(pieces)


def events_of(reply: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a chunked SSE reply."""
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    payload = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        payload += body[:size]
        body = body[size + 2 :]
    pairs = []
    for frame in payload.split(b"\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split(b"\n")
        assert event_line.startswith(b"event: ")
        assert data_line.startswith(b"data: ")
        data = orjson.loads(data_line[6:])
        assert data["type"] == event_line[7:].decode()
        pairs.append((data["type"], data))
    return pairs


def test_a_streamed_reply_parses_with_the_sdk(fake: FakeAnthropic) -> None:
    fake.script(
        "claude-test", Script(tokens=["Hel", "lo ", "wörld 🎉"], finish_reason="max_tokens")
    )

    async def go() -> tuple[list[str], Any]:
        async with (
            sdk(fake) as client,
            client.messages.stream(
                model="claude-test", max_tokens=64, system="be brief", messages=MESSAGES
            ) as stream,
        ):
            texts = [text async for text in stream.text_stream]
            return texts, await stream.get_final_message()

    texts, message = asyncio.run(go())
    assert texts == ["Hel", "lo ", "wörld 🎉"]
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello wörld 🎉"
    assert message.stop_reason == "max_tokens"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 3)
    request = fake.requests[-1]
    assert request.headers["x-api-key"] == KEY
    assert "authorization" not in request.headers
    assert request.headers["anthropic-version"]
    assert request.body["stream"] is True
    assert request.body["system"] == "be brief"
    assert request.body["max_tokens"] == 64


def test_stream_events_in_the_documented_order(fake: FakeAnthropic) -> None:
    fake.script("m", Script(tokens=["a", PING, "b"]))
    pairs = events_of(raw_post(fake, {**REQUEST, "stream": True}))
    assert [kind for kind, _ in pairs] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = pairs[0][1]["message"]
    assert start["usage"] == {"input_tokens": 11, "output_tokens": 1}
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert pairs[1][1]["content_block"] == {"type": "text", "text": ""}
    assert pairs[3][1]["delta"] == {"type": "text_delta", "text": "a"}
    assert pairs[7][1]["delta"]["stop_reason"] == "end_turn"
    assert pairs[7][1]["usage"] == {"output_tokens": 2}


def test_typed_events_through_create_stream_true(fake: FakeAnthropic) -> None:
    fake.thinking["m"] = ["let me ", "think"]
    fake.script("m", Script(tokens=["x", "y"], usage={"input_tokens": 7, "output_tokens": 9}))

    async def go() -> list[Any]:
        async with sdk(fake) as client:
            stream = await client.messages.create(
                model="m", max_tokens=5, messages=MESSAGES, stream=True
            )
            return [event async for event in stream]

    events = asyncio.run(go())
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "ping" not in kinds  # the SDK drops pings
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    thinking = ["thinking_delta", "thinking_delta", "signature_delta"]
    assert [d.type for d in deltas] == [*thinking, "text_delta", "text_delta"]
    assert "".join(d.text for d in deltas if d.type == "text_delta") == "xy"
    message_delta = next(e for e in events if e.type == "message_delta")
    assert message_delta.usage.output_tokens == 9
    assert message_delta.usage.input_tokens == 7


def test_non_streaming_message(fake: FakeAnthropic) -> None:
    fake.thinking["m"] = ["hmm"]
    fake.script("m", Script(tokens=["Hi", " there"], finish_reason="refusal"))

    async def go() -> Any:
        async with sdk(fake) as client:
            return await client.messages.create(model="m", max_tokens=5, messages=MESSAGES)

    message = asyncio.run(go())
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[1].text == "Hi there"
    assert message.stop_reason == "refusal"
    assert message.usage.output_tokens == 2
    assert "stream" not in fake.requests[-1].body


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.ContentTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_error_statuses_raise_the_sdk_error_classes(
    fake: FakeAnthropic, status: int, error: type[anthropic.APIStatusError], kind: str
) -> None:
    fake.script("m", Script(status=status, retry_after="3"))

    async def go() -> None:
        async with sdk(fake) as client, client.messages.stream(**REQUEST) as s:
            await s.get_final_message()

    with pytest.raises(error) as caught:
        asyncio.run(go())
    assert caught.value.status_code == status
    assert caught.value.type == kind
    assert caught.value.request_id == "req_fake01"
    assert caught.value.response.headers["retry-after"] == "3"


def test_an_in_stream_error_raises_in_the_sdk(fake: FakeAnthropic) -> None:
    fake.script("m", Script(tokens=["a", "b", "c"], error_after=1))
    received: list[str] = []

    async def go() -> None:
        async with sdk(fake) as client, client.messages.stream(**REQUEST) as s:
            async for text in s.text_stream:
                received.append(text)

    with pytest.raises(anthropic.APIStatusError) as caught:
        asyncio.run(go())
    assert received == ["a"]
    assert caught.value.type == "overloaded_error"
    assert fake.requests[-1].chunks_sent == 1


def test_drop_after_makes_the_sdk_stream_raise(fake: FakeAnthropic) -> None:
    fake.script("m", Script(tokens=["a", "b", "c"], drop_after=2))
    received: list[str] = []

    async def go() -> None:
        async with sdk(fake) as client, client.messages.stream(**REQUEST) as s:
            async for text in s.text_stream:
                received.append(text)

    # the SDK's typed stream lets httpx2's error through as it is (no APIConnectionError)
    with pytest.raises(httpx2.RemoteProtocolError):
        asyncio.run(go())
    assert received == ["a", "b"]
    request = fake.requests[-1]
    assert request.closed.wait(1)
    assert request.closed_by_client is False


def test_split_utf8_and_done_false(fake: FakeAnthropic) -> None:
    text = "héllo wörld 🎉"
    fake.script("m", Script(tokens=[text[:7], text[7:]], split_utf8=True, done=False))

    async def go() -> list[str]:
        async with sdk(fake) as client:
            stream = await client.messages.create(
                model="m", max_tokens=5, messages=MESSAGES, stream=True
            )
            return [event.type async for event in stream]

    kinds = asyncio.run(go())
    assert kinds[-1] == "message_delta"  # no message_stop
    body = raw_post(fake, {**REQUEST, "stream": True})
    assert (
        "".join(d["delta"]["text"] for kind, d in events_of(body) if kind == "content_block_delta")
        == text
    )


def test_the_models_list_parses_and_pages(fake: FakeAnthropic) -> None:
    fake.models = [f"claude-{n}" for n in range(5)]

    async def go() -> tuple[list[str], Any]:
        async with sdk(fake) as client:
            ids = [model.id async for model in client.models.list(limit=2)]
            return ids, await client.models.list()

    ids, page = asyncio.run(go())
    assert ids == fake.models
    assert [r.path for r in fake.requests] == [
        "/v1/models?limit=2",
        "/v1/models?limit=2&after_id=claude-1",
        "/v1/models?limit=2&after_id=claude-3",
        "/v1/models",
    ]
    first = page.data[0]
    assert (first.type, first.id, first.display_name) == ("model", "claude-0", "Claude 0")
    assert first.created_at.year == 2025
    assert page.has_more is False
    assert (page.first_id, page.last_id) == ("claude-0", "claude-4")


def test_the_api_rules_the_sdk_leaves_to_the_caller(fake: FakeAnthropic) -> None:
    async def go(messages: list[Any]) -> None:
        async with sdk(fake) as client:
            await client.messages.create(model="m", max_tokens=5, messages=messages)

    with pytest.raises(anthropic.BadRequestError) as caught:
        asyncio.run(go([{"role": "system", "content": "x"}, *MESSAGES]))
    assert caught.value.api_message == "messages.0.role: Input should be 'user' or 'assistant'"


def test_the_installed_sdk_sends_an_api_key_as_a_bearer_token(fake: FakeAnthropic) -> None:
    """anthropic 2.14's ``api_key`` becomes ``Authorization: Bearer``, not the ``x-api-key``
    the API documents; the fake answers like the API (401) unless told not to."""

    async def go() -> str:
        async with anthropic.AsyncAnthropic(base_url=fake.url, api_key=KEY, max_retries=0) as c:
            message = await c.messages.create(model="m", max_tokens=5, messages=MESSAGES)
            return message.content[0].text  # type: ignore[union-attr]

    with pytest.raises(anthropic.AuthenticationError) as caught:
        asyncio.run(go())
    assert caught.value.api_message == "x-api-key header is required"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    assert "x-api-key" not in fake.requests[-1].headers
    fake.require_api_key = False
    assert asyncio.run(go()) == "Hello, world!"


def test_unknown_path_is_a_404_in_anthropics_format(fake: FakeAnthropic) -> None:
    request = b"GET /v1/nope HTTP/1.1\r\nhost: fake\r\nconnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", fake.port), timeout=2) as sock:
        sock.sendall(request)
        reply = b""
        while piece := sock.recv(65536):
            reply += piece
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found")
    assert orjson.loads(body)["error"]["type"] == "not_found_error"
    assert orjson.loads(body)["type"] == "error"
