"""The ``langchain`` provider type, driven by LangChain's own fake chat models
(``tests/langchain_models.py``) through a real Runnel on loopback, and directly."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from runnel.errors import (
    ModelNotFound,
    ProviderAuth,
    ProviderError,
    RateLimited,
    StreamTimeout,
)
from runnel.events import Usage
from runnel.providers.base import ChatMessage, Delta, Finish, ReplayStream
from runnel.providers.langchain import (
    LangChainProvider,
    Summary,
    call_options,
    create,
    finish_reason,
    map_langchain_error,
    text_of,
)
from runnel.settings import ProviderConfig, Settings
from tests import langchain_models as lm
from tests.conftest import ServeFactory
from tests.helpers import conversation, error_of, last_message, new_conversation, wait_until_idle
from tests.sse_client import open_stream, stream

NAMES = (
    "fast",
    "pong",
    "slow",
    "blocks",
    "broken",
    "midway",
    "openai_auth",
    "openai_rate_limited",
    "anthropic_auth",
    "timeout",
)
MODELS = {name: f"tests.langchain_models:{name}" for name in NAMES}
LC = ProviderConfig(type="langchain", options={"models": MODELS})
PROMPT: list[ChatMessage] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "again"},
]


@pytest.fixture
def lc_client(serve: ServeFactory) -> Iterator[httpx2.Client]:
    # one retry without delay for retryable failures; a Retry-After beyond the 1 s budget
    # ends the route at once
    server = serve(
        providers={"lc": LC},
        default_model="lc/fast",
        retry_attempts=2,
        retry_base_delay=0.0,
        retry_budget=1.0,
    )
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        yield http


def post(client: httpx2.Client, cid: str, model: str | None = None) -> Any:
    body: dict[str, Any] = {"content": "hi"}
    if model is not None:
        body["model"] = model
    return stream(client, "POST", f"/api/v1/conversations/{cid}/messages", json=body)


# through the server


def test_streamed_reply_is_stored_exactly(lc_client: httpx2.Client) -> None:
    cid = new_conversation(lc_client, systemPrompt="be brief")
    t = post(lc_client, cid)
    assert t.status == 200
    assert t.events[0].data["model"] == "lc/fast"
    tokens = [e.data["content"] for e in t.events if e.type == "token"]
    assert len(tokens) > 5  # word by word, not one block
    assert t.text == lm.REPLY
    complete = t.terminal.data
    assert complete["type"] == "complete"
    assert complete["finishReason"] == "stop"
    assert complete.get("usage") is None  # GenericFakeChatModel reports none
    stored = last_message(lc_client, cid)
    assert stored["status"] == "complete"
    assert stored["content"].encode() == t.text.encode()

    # a second turn sends the history (system, user, assistant, user) and works alike
    again = post(lc_client, cid)
    assert again.text == lm.REPLY
    messages = conversation(lc_client, cid)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


def test_model_instance_and_json_reply(lc_client: httpx2.Client) -> None:
    response = lc_client.post("/api/v1/messages", json={"message": "ping", "model": "lc/pong"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"] == "pong"
    assert body["finishReason"] == "stop"


def test_content_blocks_usage_and_finish_reason(lc_client: httpx2.Client) -> None:
    cid = new_conversation(lc_client)
    t = post(lc_client, cid, "lc/blocks")
    assert t.text == lm.BLOCKS_TEXT  # text blocks and bare strings; reasoning/tool skipped
    complete = t.terminal.data
    assert complete["finishReason"] == "length"  # stop_reason "max_tokens"
    assert complete["usage"] == {"promptTokens": 11, "completionTokens": 5}
    assert complete["totalTokens"] == 16
    stored = last_message(lc_client, cid)
    assert stored["content"] == lm.BLOCKS_TEXT
    assert stored["usage"] == {"promptTokens": 11, "completionTokens": 5}
    assert stored["finishReason"] == "length"


def test_models_lists_the_table(lc_client: httpx2.Client) -> None:
    body = lc_client.get("/api/v1/models").json()
    ids = [m["id"] for m in body["data"]]
    assert [i for i in ids if i.startswith("lc/")] == [f"lc/{name}" for name in NAMES]
    assert body["default"] == "lc/fast"


def test_a_provider_configured_not_to_stream(serve: ServeFactory) -> None:
    # streaming = false: the router asks for whole replies (ainvoke), still sent as tokens
    config = ProviderConfig(type="langchain", streaming=False, options={"models": MODELS})
    server = serve(providers={"lc": config})
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        t = stream(client, "POST", "/api/v1/messages", json={"message": "hi", "model": "lc/fast"})
        blocks = stream(
            client, "POST", "/api/v1/messages", json={"message": "hi", "model": "lc/blocks"}
        )
    assert t.text == lm.REPLY
    assert t.terminal.data["finishReason"] == "stop"
    assert blocks.text == lm.BLOCKS_TEXT
    assert blocks.terminal.data["usage"] == {"promptTokens": 11, "completionTokens": 5}
    assert blocks.terminal.data["finishReason"] == "length"


def test_unknown_model_is_refused_and_nothing_stored(lc_client: httpx2.Client) -> None:
    cid = new_conversation(lc_client)
    t = post(lc_client, cid, "lc/nope")
    assert t.status == 400
    response = httpx2.Response(t.status, content=t.raw)
    assert error_of(response) == "MODEL_NOT_FOUND"
    assert conversation(lc_client, cid)["messages"] == []


def _raised(model: Any) -> Exception:
    """The exception one of the raising fakes of ``tests/langchain_models.py`` raises."""
    try:
        next(model.messages)
    except Exception as exc:
        return exc
    raise AssertionError("the fake did not raise")


def _expected_anthropic_code() -> str:
    """What the anthropic provider maps a rejected key to, or the generic failure while
    ``runnel.providers.anthropic`` does not exist."""
    try:
        from runnel.providers.anthropic import map_anthropic_error
    except ImportError:
        return "PROVIDER_ERROR"
    return map_anthropic_error(_raised(lm.anthropic_auth()), "lc").code  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "code", "status", "message"),
    [
        ("broken", "PROVIDER_ERROR", 502, "lc failed"),
        ("openai_auth", "PROVIDER_AUTH", 502, "lc rejected the API key"),
        ("openai_rate_limited", "RATE_LIMIT", 429, "lc rate limit reached (provider limit)"),
        ("timeout", "STREAM_TIMEOUT", 504, "lc did not answer in time"),
        ("anthropic_auth", None, 502, None),
    ],
)
def test_a_model_that_raises_before_any_output(
    lc_client: httpx2.Client, model: str, code: str | None, status: int, message: str | None
) -> None:
    code = code or _expected_anthropic_code()
    lm.BROKEN_WATCH.reset()
    cid = new_conversation(lc_client)
    t = post(lc_client, cid, f"lc/{model}")
    # nothing had been sent: an ordinary HTTP error, whose message names no exception,
    # key, upstream text or path
    assert t.status == status
    error = json.loads(t.raw)["error"]
    assert error["code"] == code
    if message is not None:
        assert error["message"] == message
    for secret in ("FakeListChatModelError", "Incorrect API key", "invalid x-api-key", "tests"):
        assert secret not in t.raw.decode()
    if model == "openai_rate_limited":
        assert t.headers["retry-after"] == "7"
    user, reply = wait_until_idle(lc_client, cid)["messages"]
    assert (user["role"], user["content"]) == ("user", "hi")
    assert (reply["role"], reply["status"], reply["content"]) == ("assistant", "error", "")
    assert reply["error"] == error
    if model == "broken":
        assert lm.BROKEN_WATCH.starts == 2  # retried once: the failure was retryable
        assert len(lm.BROKEN_WATCH.errors) == 2


def test_a_model_that_raises_midway_keeps_the_partial_text(lc_client: httpx2.Client) -> None:
    cid = new_conversation(lc_client)
    t = post(lc_client, cid, "lc/midway")
    assert t.status == 200
    assert t.text == "abcdefgh"[: lm.PARTIAL_AT]
    error = t.terminal.data
    assert (error["type"], error["code"], error["partial"]) == ("error", "PROVIDER_ERROR", True)
    assert error["error"] == "lc failed"
    stored = last_message(lc_client, cid)
    assert stored["status"] == "error"
    assert stored["content"] == t.text


def test_stop_stops_the_wrapped_model(lc_client: httpx2.Client) -> None:
    watch = lm.SLOW_WATCH
    watch.reset()
    cid = new_conversation(lc_client)
    with open_stream(
        lc_client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "go", "model": "lc/slow"},
    ) as live:
        assert live.response.status_code == 200
        head = live.take(6)
        stream_id = head.events[0].data["streamId"]
        assert watch.chunks >= 5
        assert not watch.errors

        cancelled_at = time.monotonic()
        assert lc_client.post(f"/api/v1/streams/{stream_id}/cancel").status_code == 202
        deadline = cancelled_at + 1.0
        while not watch.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        # LangChain's astream saw its run end by cancellation, within 1 s
        assert watch.errors, "the model's generator was still running 1 s after cancel"
        assert isinstance(watch.errors[0], asyncio.CancelledError | GeneratorExit)
        assert watch.error_times[0] - cancelled_at < 1.0
        produced = watch.chunks
        time.sleep(1.0)
        assert watch.chunks == produced, "the model kept producing chunks after Stop"
        assert all(at < cancelled_at + 1.0 for at in watch.chunk_times)
        assert watch.ends == 0
        assert watch.starts == 1
        tail = live.rest()

    assert tail.terminal.data["finishReason"] == "cancelled"
    text = head.text + tail.text
    assert 0 < len(text) < len(lm.SLOW_REPLY)
    assert lm.SLOW_REPLY.startswith(text)
    stored = wait_until_idle(lc_client, cid)["messages"][-1]
    assert stored["status"] == "cancelled"
    assert stored["content"] == text


def test_the_output_limit_closes_the_wrapped_model(serve: ServeFactory) -> None:
    # Runnel stops reading at max_output_tokens and closes the stream: LangChain's
    # generator is closed (GeneratorExit), not left running. (In CPython the event loop
    # would also close an abandoned generator once it is garbage; the direct tests below
    # hold a reference, so they show that aclose() itself closes it.)
    watch = lm.SLOW_WATCH
    watch.reset()
    server = serve(providers={"lc": LC}, max_output_tokens=5)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        t = stream(client, "POST", "/api/v1/messages", json={"message": "hi", "model": "lc/slow"})
    assert t.terminal.data["finishReason"] == "length"
    assert t.text == lm.SLOW_REPLY[:5]
    deadline = time.monotonic() + 1.0
    while not watch.errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [type(e) for e in watch.errors] == [GeneratorExit]
    produced = watch.chunks
    time.sleep(0.3)
    assert watch.chunks == produced <= 6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "options.models must be a table"),
        ({"models": {}}, "options.models must be a table"),
        (
            {"models": {"x": "tests.langchain_models:fast"}, "kwargs": {}},
            "unknown option.*'kwargs'",
        ),
        ({"models": {"x": "tests.langchain_models"}}, "'tests.langchain_models' is not an import"),
        ({"models": {"x": "tests.nowhere:fast"}}, "cannot import module 'tests.nowhere'"),
        ({"models": {"x": "tests.langchain_models:nope"}}, "has no attribute 'nope'"),
        ({"models": {"x": "tests.langchain_models:NOT_A_MODEL"}}, "neither a LangChain chat"),
        ({"models": {"x": "tests.langchain_models:not_a_model"}}, "returned a str, not a"),
        (
            {"models": {"x": "tests.langchain_models:exploding"}},
            r"calling it failed \(RuntimeError: no credentials configured\)",
        ),
        ({"models": {"x": 3}}, "must name an import path"),
        ({"models": {"two words": "tests.langchain_models:fast"}}, "not a usable model name"),
    ],
)
def test_bad_configuration_stops_start_up(
    serve: ServeFactory, options: dict[str, Any], message: str
) -> None:
    config = ProviderConfig(type="langchain", options=options)
    with pytest.raises(ValueError, match=message) as raised:
        serve(providers={"lc": config})
    assert "provider 'lc'" in str(raised.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"api_key": "sk-x"}, "'api_key' has no meaning"),
        ({"base_url": "http://127.0.0.1:9"}, "'base_url' has no meaning"),
        ({"models": ["fast", "other"]}, "models lists 'other'"),
    ],
)
def test_fields_a_langchain_provider_does_not_use(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    config = ProviderConfig(type="langchain", options={"models": MODELS}, **fields)
    with pytest.raises(ValueError, match=message):
        create("lc", config, Settings(data_dir=tmp_path))


def test_without_langchain_core_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    with pytest.raises(ValueError, match=r"pip install 'runnel\[langchain\]'"):
        create("lc", LC, Settings(data_dir=tmp_path))


# the provider object directly


def provider(tmp_path: Path) -> LangChainProvider:
    made = create("lc", LC, Settings(data_dir=tmp_path))
    assert isinstance(made, LangChainProvider)
    return made


async def collect(deltas: AsyncIterator[Delta]) -> tuple[str, Finish | None]:
    text: list[str] = []
    async for delta in deltas:
        if isinstance(delta, Finish):
            return "".join(text), delta
        text.append(delta)
    return "".join(text), None


def test_non_streaming_replies(tmp_path: Path) -> None:
    lc = provider(tmp_path)

    async def run() -> None:
        blocks = await lc.open("blocks", PROMPT, max_tokens=100, stream=False)
        assert isinstance(blocks, ReplayStream)
        assert await collect(aiter(blocks)) == (lm.BLOCKS_TEXT, Finish("length", Usage(11, 5)))
        fast = await lc.open("fast", PROMPT, max_tokens=100, stream=False)
        assert await collect(aiter(fast)) == (lm.REPLY, Finish("stop", None))
        with pytest.raises(ProviderAuth):
            await lc.open("openai_auth", PROMPT, max_tokens=100, stream=False)
        with pytest.raises(ModelNotFound):
            await lc.open("nope", PROMPT, max_tokens=100, stream=False)

    asyncio.run(run())


def test_check_and_list_models(tmp_path: Path) -> None:
    lc = provider(tmp_path)
    lc.check_model("fast")
    with pytest.raises(ModelNotFound, match="lc/nope"):
        lc.check_model("nope")
    assert asyncio.run(lc.list_models()) == list(NAMES)


def test_open_fails_for_a_model_that_fails_before_output(tmp_path: Path) -> None:
    lc = provider(tmp_path)

    async def run() -> None:
        with pytest.raises(ProviderError, match=r"^lc failed$"):
            await lc.open("broken", PROMPT, max_tokens=100)
        with pytest.raises(StreamTimeout):
            await lc.open("timeout", PROMPT, max_tokens=100)
        with pytest.raises(RateLimited) as raised:
            await lc.open("openai_rate_limited", PROMPT, max_tokens=100)
        assert raised.value.retry_after == 7

    asyncio.run(run())


def test_aclose_before_iterating_stops_the_model(tmp_path: Path) -> None:
    lc = provider(tmp_path)
    watch = lm.SLOW_WATCH

    async def run() -> None:
        watch.reset()
        opened = await lc.open("slow", PROMPT, max_tokens=100)
        assert watch.chunks == 1  # open pulled the first chunk
        await opened.aclose()
        await opened.aclose()  # idempotent
        assert [type(e) for e in watch.errors] == [GeneratorExit]
        await asyncio.sleep(0.2)
        assert watch.chunks == 1
        assert await collect(aiter(opened)) == ("", None)  # nothing after close

    asyncio.run(run())


def test_leaving_the_iteration_stops_the_model(tmp_path: Path) -> None:
    lc = provider(tmp_path)
    watch = lm.SLOW_WATCH

    async def run() -> None:
        watch.reset()
        opened = await lc.open("slow", PROMPT, max_tokens=100)
        deltas = aiter(opened)
        assert [await anext(deltas) for _ in range(3)] == ["t", "0", " "]
        await deltas.aclose()  # type: ignore[attr-defined]
        assert [type(e) for e in watch.errors] == [GeneratorExit]
        produced = watch.chunks
        await asyncio.sleep(0.2)
        assert watch.chunks == produced
        await opened.aclose()

    asyncio.run(run())


def test_a_whole_streamed_reply_directly(tmp_path: Path) -> None:
    lc = provider(tmp_path)

    async def run() -> None:
        opened = await lc.open("pong", PROMPT, max_tokens=100)
        assert await collect(aiter(opened)) == ("pong", Finish("stop", None))
        await opened.aclose()
        midway = await lc.open("midway", PROMPT, max_tokens=100)
        seen: list[Delta] = []

        async def consume() -> None:
            async for delta in midway:
                seen.append(delta)

        with pytest.raises(ProviderError, match=r"^lc failed$"):
            await consume()
        assert seen == list("abcd")

    asyncio.run(run())


# the parts


def _chunk(content: Any, **fields: Any) -> AIMessageChunk:
    return AIMessageChunk(content=content, **fields)


def test_usage_adds_up_over_chunks_and_the_last_finish_reason_wins() -> None:
    # Anthropic-style: input tokens on the first chunk, output tokens in increments,
    # text as content blocks with an index, the stop reason at the end
    chunks = [
        _chunk(
            [],
            usage_metadata={"input_tokens": 12, "output_tokens": 1, "total_tokens": 13},
        ),
        _chunk([{"type": "text", "text": "Hel", "index": 0}]),
        _chunk([{"type": "thinking", "thinking": "hmm", "index": 1}]),
        _chunk(
            [{"type": "text", "text": "lo", "index": 0}],
            usage_metadata={"input_tokens": 0, "output_tokens": 4, "total_tokens": 4},
        ),
        _chunk("", response_metadata={"stop_reason": "end_turn"}),
    ]
    summary = Summary("lc")
    assert "".join(summary.take(c) for c in chunks) == "Hello"
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.usage_metadata is not None
    expected = Usage(merged.usage_metadata["input_tokens"], merged.usage_metadata["output_tokens"])
    assert summary.finish() == Finish("stop", expected) == Finish("stop", Usage(12, 5))
    assert Summary("lc").finish() == Finish("stop", None)


class _GeminiFinish(enum.Enum):
    STOP = 1
    MAX_TOKENS = 2
    SAFETY = 3


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"finish_reason": "stop"}, "stop"),
        ({"finish_reason": "length"}, "length"),
        ({"finish_reason": "content_filter"}, "content_filter"),
        ({"finish_reason": "tool_calls"}, "stop"),
        ({"stop_reason": "end_turn"}, "stop"),
        ({"stop_reason": "max_tokens"}, "length"),
        ({"stop_reason": "refusal"}, "content_filter"),
        ({"done_reason": "stop"}, "stop"),
        ({"done_reason": "length"}, "length"),
        ({"finish_reason": "MAX_TOKENS"}, "length"),
        ({"finish_reason": "SAFETY"}, "content_filter"),
        ({"finish_reason": _GeminiFinish.MAX_TOKENS}, "length"),
        ({"finish_reason": _GeminiFinish.SAFETY}, "content_filter"),
        ({"finish_reason": "something_new"}, "stop"),
        ({"model_name": "x"}, None),
        ({"finish_reason": None}, None),
    ],
)
def test_finish_reasons(metadata: dict[str, Any], reason: str | None) -> None:
    assert finish_reason(metadata) == reason


def test_text_of_content() -> None:
    assert text_of("plain", "lc") == "plain"
    assert text_of([], "lc") == ""
    assert (
        text_of([{"type": "text", "text": "a"}, "b", {"type": "image", "url": "x"}], "lc") == "ab"
    )
    assert text_of([{"type": "reasoning", "reasoning": "r"}, {"type": "text"}], "lc") == ""
    with pytest.raises(ProviderError, match="malformed"):
        text_of(42, "lc")


class _Capped(FakeListChatModel):
    """LangChain's fake with the ``max_tokens`` field real integrations have; it records
    the keyword arguments each call of ``_astream`` gets."""

    max_tokens: int | None = None
    seen: list[dict[str, Any]] = Field(default_factory=list)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        self.seen.append(dict(kwargs))
        async for chunk in super()._astream(*args, **kwargs):
            yield chunk


def test_max_tokens_is_passed_only_to_models_that_take_it() -> None:
    assert call_options(FakeListChatModel(responses=["x"]), 100) == {}
    assert call_options(_Capped(responses=["x"]), 100) == {"max_tokens": 100}
    assert call_options(_Capped(responses=["x"], max_tokens=50), 100) == {"max_tokens": 50}
    assert call_options(_Capped(responses=["x"], max_tokens=500), 100) == {"max_tokens": 100}

    capped = _Capped(responses=["ok"])
    lc = LangChainProvider("lc", {"capped": capped})

    async def run() -> None:
        opened = await lc.open("capped", PROMPT, max_tokens=64)
        assert await collect(aiter(opened)) == ("ok", Finish("stop", None))

    asyncio.run(run())
    assert capped.seen
    assert capped.seen[0].get("max_tokens") == 64


def _openai_error(status: int) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx2.Response(status, request=request)
    return openai.APIStatusError("failed", response=response, body=None)


def test_error_mapping(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(map_langchain_error(_openai_error(401), "lc"), ProviderAuth)
    assert isinstance(map_langchain_error(_openai_error(404), "lc"), ModelNotFound)
    assert isinstance(map_langchain_error(TimeoutError(), "lc"), StreamTimeout)
    own = RateLimited("limit")
    assert map_langchain_error(own, "lc") is own

    with caplog.at_level(logging.WARNING, logger="runnel.providers.langchain"):
        mapped = map_langchain_error(KeyError("secret detail"), "lc")
    assert type(mapped) is ProviderError
    assert (mapped.message, mapped.retryable, mapped.provider) == ("lc failed", True, "lc")
    assert "secret detail" not in mapped.message
    assert any(r.exc_info and r.exc_info[1] is not None for r in caplog.records)

    # an anthropic error without runnel.providers.anthropic: a generic provider failure
    anthropic_error = _raised(lm.anthropic_auth())
    monkeypatch.setitem(sys.modules, "runnel.providers.anthropic", None)
    assert type(map_langchain_error(anthropic_error, "lc")) is ProviderError
