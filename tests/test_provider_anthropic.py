"""The Anthropic provider: through a real Runnel over loopback, and directly, against the
fake Anthropic API driven by the real ``anthropic`` SDK.

The error, cancel and retry behaviour every provider shares is tested by the shared
provider suite; this file keeps to what is Anthropic's own: the system prompt, stop
reasons, usage fields, thinking blocks, ``x-api-key``, ``options.max_tokens`` and the
Anthropic-specific error kinds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from runnel.errors import (
    ContextLengthExceeded,
    Interrupted,
    ProviderError,
    RateLimited,
    RunnelError,
    StreamingUnsupported,
    StreamTimeout,
)
from runnel.events import Usage
from runnel.providers.anthropic import AnthropicProvider, create
from runnel.providers.base import ChatMessage, Delta, Finish
from runnel.settings import ProviderConfig, Settings
from tests.conftest import ServeFactory
from tests.fakes.anthropic_server import PING, FakeAnthropic, Script
from tests.helpers import conversation, last_message, new_conversation, wait_for_reply
from tests.server import RunningServer
from tests.sse_client import Transcript, stream

KEY = "sk-ant-test"
USER: list[ChatMessage] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server
    assert not server._errors, server._errors


@pytest.fixture
def runnel(serve: ServeFactory, fake: FakeAnthropic) -> Callable[..., RunningServer]:
    """Start a Runnel whose provider ``anthropic`` (from ``ANTHROPIC_API_KEY`` and
    ``ANTHROPIC_BASE_URL``) talks to the fake; keyword arguments override settings."""

    def start(**overrides: Any) -> RunningServer:
        return serve(anthropic_api_key=KEY, anthropic_base_url=fake.url, **overrides)

    return start


@pytest.fixture
def client(runnel: Callable[..., RunningServer]) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=runnel().url, timeout=30) as http:
        yield http


def send(client: httpx2.Client, cid: str, content: str, model: str) -> Transcript:
    return stream(
        client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": content, "model": model},
    )


def reply_json(client: httpx2.Client, cid: str, model: str) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": "go", "model": model}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def provider(fake: FakeAnthropic, **options: Any) -> AnthropicProvider:
    return AnthropicProvider("anthropic", api_key=KEY, base_url=fake.url, options=options)


async def read(provider: AnthropicProvider, model: str, **kw: Any) -> list[Delta]:
    messages: list[ChatMessage] = kw.pop("messages", USER)
    deltas = await provider.open(model, messages, max_tokens=kw.pop("max_tokens", 100), **kw)
    try:
        return [delta async for delta in deltas]
    finally:
        await deltas.aclose()


# -- through Runnel ---------------------------------------------------------------------------

TOKENS: list[str | bytes] = ["Hel", PING, "lo", ", ", "wörld", PING, " 🎉", "!\n```py\nx = 1\n```"]
TEXT = "".join(t for t in TOKENS if isinstance(t, str))


def test_a_streamed_reply_with_pings_is_relayed_and_stored(
    client: httpx2.Client, fake: FakeAnthropic
) -> None:
    fake.script(
        "claude-test",
        Script(tokens=list(TOKENS), delay=0.01, usage={"input_tokens": 9, "output_tokens": 7}),
    )
    cid = new_conversation(client, systemPrompt="be nice")
    t = send(client, cid, "hi", "anthropic/claude-test")

    assert t.status == 200
    assert t.text == TEXT
    assert t.events[0].type == "status"
    assert {e.type for e in t.events[1:-1]} == {"token"}
    assert t.events[0].data["model"] == "anthropic/claude-test"
    complete = t.terminal.data
    assert complete["type"] == "complete"
    assert complete["finishReason"] == "stop"
    assert complete["usage"] == {"promptTokens": 9, "completionTokens": 7}
    assert complete["totalTokens"] == 16

    stored = last_message(client, cid)
    assert stored["content"] == TEXT
    assert stored["status"] == "complete"
    assert stored["finishReason"] == "stop"
    assert stored["usage"] == {"promptTokens": 9, "completionTokens": 7}

    request = fake.requests[-1]
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert "authorization" not in request.headers  # the SDK's Bearer header is left out
    assert request.headers["anthropic-version"]
    body = request.body
    assert body["model"] == "claude-test"
    assert body["stream"] is True
    assert body["system"] == "be nice"
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["max_tokens"] == Settings().max_output_tokens

    # the next turn carries the stored reply as history, the system prompt still apart
    send(client, cid, "more", "anthropic/claude-test")
    body = fake.requests[-1].body
    assert body["system"] == "be nice"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == TEXT
    assert conversation(client, cid)["activeStreamId"] is None


def test_stop_reasons_map_to_finish_reasons(client: httpx2.Client, fake: FakeAnthropic) -> None:
    cases = {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "tool_use": "stop",
        "pause_turn": "stop",
        "max_tokens": "length",
        "model_context_window_exceeded": "length",
        "refusal": "content_filter",
        "a_reason_added_later": "stop",
    }
    cid = new_conversation(client)
    for stop_reason, finish in cases.items():
        fake.script("claude-test", Script(tokens=["a", "b"], finish_reason=stop_reason))
        body = reply_json(client, cid, "anthropic/claude-test")
        assert (stop_reason, body["finishReason"]) == (stop_reason, finish)
        assert body["content"] == "ab"
        stored = last_message(client, cid)
        assert (stored["finishReason"], stored["status"]) == (finish, "complete")


def test_thinking_is_left_out_of_the_reply(client: httpx2.Client, fake: FakeAnthropic) -> None:
    fake.thinking["claude-think"] = ["The user greets me. ", "I should greet back."]
    fake.script("claude-think", Script(tokens=["Hi", " there"]))
    cid = new_conversation(client)
    t = send(client, cid, "hello", "anthropic/claude-think")
    assert t.terminal.data["finishReason"] == "stop"
    assert t.text == "Hi there"
    assert last_message(client, cid)["content"] == "Hi there"


def test_options_max_tokens_caps_the_request(
    runnel: Callable[..., RunningServer], fake: FakeAnthropic
) -> None:
    capped = ProviderConfig(
        type="anthropic", api_key=KEY, base_url=fake.url, options={"max_tokens": 50}
    )
    server = runnel(providers={"claude": capped}, max_output_tokens=4000)
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        cid = new_conversation(http)
        assert reply_json(http, cid, "claude/claude-test")["content"] == "Hello, world!"
        assert fake.requests[-1].body["max_tokens"] == 50
        reply_json(http, cid, "anthropic/claude-test")  # no option: Runnel's limit
        assert fake.requests[-1].body["max_tokens"] == 4000


def test_a_smaller_runnel_limit_wins_over_the_option(
    runnel: Callable[..., RunningServer], fake: FakeAnthropic
) -> None:
    capped = ProviderConfig(
        type="anthropic", api_key=KEY, base_url=fake.url, options={"max_tokens": 50}
    )
    server = runnel(providers={"claude": capped}, max_output_tokens=20)
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        reply_json(http, new_conversation(http), "claude/claude-test")
    assert fake.requests[-1].body["max_tokens"] == 20


def test_an_in_stream_overloaded_error_keeps_the_partial_text(
    client: httpx2.Client, fake: FakeAnthropic
) -> None:
    fake.script("claude-test", Script(tokens=["one ", "two ", "three"], error_after=2))
    cid = new_conversation(client)
    t = send(client, cid, "hi", "anthropic/claude-test")
    error = t.terminal.data
    assert error["type"] == "error"
    assert error["code"] == "PROVIDER_ERROR"
    assert error["retryable"] is True
    assert error["partial"] is True
    assert "overloaded" in error["error"]
    assert t.text == "one two "
    stored = wait_for_reply(client, cid)
    assert stored["status"] == "error"
    assert stored["content"] == "one two "
    assert stored["error"]["code"] == "PROVIDER_ERROR"


def test_models_are_listed_from_the_api(client: httpx2.Client, fake: FakeAnthropic) -> None:
    fake.models = ["claude-b", "claude-a"]
    ids = [m["id"] for m in client.get("/api/v1/models").json()["data"]]
    assert "anthropic/claude-a" in ids
    assert "anthropic/claude-b" in ids
    listed = [r for r in fake.requests if r.path.startswith("/v1/models")]
    assert listed
    assert listed[-1].headers["x-api-key"] == KEY


# -- the provider directly --------------------------------------------------------------------


def test_system_messages_are_joined_into_system(fake: FakeAnthropic) -> None:
    messages: list[ChatMessage] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Answer in French."},
        {"role": "assistant", "content": "Salut"},
        {"role": "user", "content": "again"},
    ]

    async def go() -> list[Delta]:
        claude = provider(fake)
        try:
            return await read(claude, "claude-test", messages=messages, max_tokens=33)
        finally:
            await claude.aclose()

    assert asyncio.run(go())[-1] == Finish("stop", Usage(11, 4))
    body = fake.requests[-1].body
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == 33
    # no system message: no system field at all
    asyncio.run(read_once(fake, "claude-test"))
    assert "system" not in fake.requests[-1].body


async def read_once(fake: FakeAnthropic, model: str, **kw: Any) -> list[Delta]:
    claude = provider(fake, **kw.pop("options", {}))
    try:
        return await read(claude, model, **kw)
    finally:
        await claude.aclose()


def test_stream_false_returns_the_same_text(fake: FakeAnthropic) -> None:
    fake.thinking["claude-test"] = ["pondering"]
    fake.script(
        "claude-test",
        Script(
            tokens=list(TOKENS),
            finish_reason="max_tokens",
            usage={"input_tokens": 3, "output_tokens": 5},
        ),
    )
    streamed = asyncio.run(read_once(fake, "claude-test"))
    assert fake.requests[-1].body["stream"] is True
    whole = asyncio.run(read_once(fake, "claude-test", stream=False))
    assert fake.requests[-1].body.get("stream") in (None, False)
    text = "".join(d for d in whole if isinstance(d, str))
    assert text == "".join(d for d in streamed if isinstance(d, str)) == TEXT
    assert whole[-1] == streamed[-1] == Finish("length", Usage(3, 5))


def test_usage_takes_the_latest_values_and_counts_cached_prompt_tokens(
    fake: FakeAnthropic,
) -> None:
    usage = {
        "input_tokens": 5,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 100,
        "output_tokens": 3,
    }
    fake.script("claude-test", Script(tokens=["a", "b", "c"], usage=usage))
    assert asyncio.run(read_once(fake, "claude-test"))[-1] == Finish("stop", Usage(125, 3))
    # a message_delta may repeat the prompt counts: the latest non-null value of each wins
    later = (
        b"event: message_delta\n"
        b'data: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
        b'"usage":{"input_tokens":6,"cache_read_input_tokens":null,"output_tokens":2}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    fake.script("claude-test", Script(tokens=["a", later], usage=usage))
    assert asyncio.run(read_once(fake, "claude-test"))[-1] == Finish("length", Usage(126, 2))


def test_unknown_events_and_other_deltas_are_skipped(fake: FakeAnthropic) -> None:
    tool_input = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        b'"delta":{"type":"input_json_delta","partial_json":"{\\"a\\""}}\n\n'
    )
    novel = b'event: something_new\ndata: {"type":"something_new","x":1}\n\n'
    fake.script("claude-test", Script(tokens=["a", tool_input, novel, PING, "b"]))
    deltas = asyncio.run(read_once(fake, "claude-test"))
    assert deltas == ["a", "b", Finish("stop", Usage(11, 2))]


@pytest.mark.parametrize(
    "garbage",
    [
        b"data: {broken\n\n",
        b"data: [1, 2]\n\n",
        b'data: {"type":"content_block_delta","delta":{"type":"text_delta","text":7}}\n\n',
        b'data: {"type":"content_block_delta","index":0}\n\n',
        b'data: {"no_type":true}\n\n',
    ],
)
def test_malformed_events_are_a_provider_error(fake: FakeAnthropic, garbage: bytes) -> None:
    fake.script("claude-test", Script(tokens=["a", garbage, "b"]))
    with pytest.raises(ProviderError) as caught:
        asyncio.run(read_once(fake, "claude-test"))
    assert caught.value.message == "anthropic sent malformed data"


def test_a_stream_ending_without_its_stop_reason_is_interrupted(fake: FakeAnthropic) -> None:
    # the stop reason came (message_delta) but message_stop did not: the reply is whole,
    # as an OpenAI-compatible stream with a finish reason and no [DONE]
    fake.script(
        "claude-test",
        Script(tokens=["a"], done=False, usage={"input_tokens": 2, "output_tokens": 1}),
    )
    assert asyncio.run(read_once(fake, "claude-test")) == ["a", Finish("stop", Usage(2, 1))]
    # cut before the stop reason
    fake.script("claude-test", Script(tokens=["a", "b"], drop_after=1))
    with pytest.raises(Interrupted):
        asyncio.run(read_once(fake, "claude-test"))


@pytest.mark.parametrize(
    ("script", "error", "retryable", "words"),
    [
        (Script(status=529), ProviderError, True, "overloaded"),
        (
            Script(
                status=429,
                error_body={
                    "type": "error",
                    "error": {
                        "type": "rate_limit_error",
                        "message": "spend limit",
                        "details": {"error_code": "enforced_spend_limit_reached"},
                    },
                },
            ),
            ProviderError,
            False,
            "spend limit",
        ),
        (Script(status=429, retry_after="4"), RateLimited, True, "provider limit"),
        (Script(status=402), ProviderError, False, "billing"),
        (
            Script(
                status=400,
                error_body={
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "prompt is too long: 210000 tokens > 200000 maximum",
                    },
                },
            ),
            ContextLengthExceeded,
            False,
            "too long",
        ),
        (Script(status=413), ProviderError, False, "HTTP 413"),
        (Script(status=504), StreamTimeout, True, "timed out"),
        (Script(refuse_streaming=True), StreamingUnsupported, False, "cannot stream"),
        (Script(tokens=["a", "b"], error_after=1), ProviderError, True, "overloaded"),
    ],
)
def test_anthropic_errors_map_to_runnel_errors(
    fake: FakeAnthropic, script: Script, error: type[RunnelError], retryable: bool, words: str
) -> None:
    fake.script("claude-test", script)
    with pytest.raises(RunnelError) as caught:
        asyncio.run(read_once(fake, "claude-test"))
    assert type(caught.value) is error
    assert caught.value.retryable is retryable
    assert words in caught.value.message
    assert KEY not in caught.value.message
    if error is RateLimited:
        assert caught.value.retry_after == 4.0


def test_an_in_stream_rate_limit_error(fake: FakeAnthropic) -> None:
    event = (
        b"event: error\n"
        b'data: {"type":"error","error":{"type":"rate_limit_error","message":"slow"}}\n\n'
    )
    fake.script("claude-test", Script(tokens=["a", event]))
    with pytest.raises(RateLimited):
        asyncio.run(read_once(fake, "claude-test"))


def test_aclose_closes_the_upstream_connection_and_is_idempotent(fake: FakeAnthropic) -> None:
    fake.script("claude-test", Script(tokens=["x"] * 200, delay=0.02))

    async def go() -> None:
        claude = provider(fake)
        deltas = await claude.open("claude-test", USER, max_tokens=10)
        iterator = aiter(deltas)
        assert await anext(iterator) == "x"
        await deltas.aclose()
        await deltas.aclose()
        upstream = fake.requests[-1]
        assert await asyncio.to_thread(upstream.closed.wait, 1.0)
        assert upstream.closed_by_client
        assert upstream.chunks_sent < 200
        await claude.aclose()

    asyncio.run(go())


def test_configured_models_are_listed_without_asking(fake: FakeAnthropic) -> None:
    async def go() -> tuple[list[str], list[str]]:
        configured = AnthropicProvider(
            "anthropic", api_key=KEY, base_url=fake.url, models=["claude-x"]
        )
        asked = provider(fake)
        try:
            first = await asked.list_models()
            fake.models = ["changed"]
            assert await asked.list_models() == first  # cached
            return await configured.list_models(), first
        finally:
            await configured.aclose()
            await asked.aclose()

    fake.models = [f"claude-{n:04}" for n in range(1500)]  # more than one page of 1000
    configured, listed = asyncio.run(go())
    assert configured == ["claude-x"]
    assert listed == sorted(f"claude-{n:04}" for n in range(1500))
    assert [r.path.partition("?")[0] for r in fake.requests] == ["/v1/models", "/v1/models"]


def test_options_are_checked_at_start_up(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ValueError, match="temperature"):
        create("claude", ProviderConfig(type="anthropic", options={"temperature": 1}), settings)
    for bad in (0, -5, "100", True, 1.5):
        with pytest.raises(ValueError, match="max_tokens"):
            create(
                "claude", ProviderConfig(type="anthropic", options={"max_tokens": bad}), settings
            )


def test_no_key_sends_no_credentials(fake: FakeAnthropic) -> None:
    fake.require_api_key = False

    async def go() -> list[Delta]:
        keyless = AnthropicProvider("local", api_key=None, base_url=fake.url)
        try:
            return await read(keyless, "claude-test")
        finally:
            await keyless.aclose()

    assert asyncio.run(go())[0] == "Hello"
    headers = fake.requests[-1].headers
    assert "x-api-key" not in headers
    assert "authorization" not in headers
