"""The Gemini provider: Gemini's wire format through a real Runnel and through the provider
itself, against ``FakeGemini`` over loopback. The error, cancel and retry behaviour every
provider shares is tested by the shared provider suite; what is here is Gemini's own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from runnel.errors import (
    ContextLengthExceeded,
    Interrupted,
    ModelNotFound,
    ProviderAuth,
    ProviderError,
    RateLimited,
    RunnelError,
    StreamTimeout,
)
from runnel.providers.base import ChatMessage, Delta, Finish
from runnel.providers.gemini import GeminiProvider, create
from runnel.settings import ProviderConfig, Settings
from tests.conftest import ServeFactory
from tests.fakes.gemini_server import FakeGemini, Script, signature_chunk, thought_chunk
from tests.fakes.httpserver import PROMPT_TOKENS
from tests.helpers import new_conversation, wait_until_idle
from tests.server import RunningServer
from tests.sse_client import Transcript, open_stream, stream

MODEL = "gemini-test"
KEY = "test-key"
MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
]


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake
    assert not fake._errors, fake._errors


@pytest.fixture
def gemini_server(serve: ServeFactory, fake_gemini: FakeGemini) -> RunningServer:
    return serve(
        gemini_api_key=KEY,
        gemini_base_url=fake_gemini.url,
        default_model=f"gemini/{MODEL}",
        retry_attempts=1,
    )


@pytest.fixture
def client(gemini_server: RunningServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=gemini_server.url, timeout=30) as http:
        yield http


def send(client: httpx2.Client, cid: str, content: str = "hi") -> Transcript:
    return stream(
        client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": content, "model": f"gemini/{MODEL}"},
    )


def generation_requests(fake: FakeGemini) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST"]


# -- through Runnel ------------------------------------------------------------------------


def test_streamed_reply_usage_system_instruction_and_key(
    client: httpx2.Client, fake_gemini: FakeGemini
) -> None:
    fake_gemini.script(
        MODEL,
        Script(
            tokens=["Bonjour", ", ", "monde ", "été"],
            usage={"promptTokenCount": 9, "candidatesTokenCount": 7, "totalTokenCount": 16},
        ),
    )
    cid = new_conversation(client, systemPrompt="be nice")
    t = send(client, cid)
    assert t.status == 200
    assert t.events[0].data["model"] == f"gemini/{MODEL}"
    complete = t.terminal.data
    assert complete["type"] == "complete"
    assert complete["finishReason"] == "stop"
    assert complete["usage"] == {"promptTokens": 9, "completionTokens": 7}
    assert complete["totalTokens"] == 16
    assert t.text == "Bonjour, monde été"
    stored = wait_until_idle(client, cid)["messages"][-1]
    assert (stored["status"], stored["content"]) == ("complete", t.text)
    assert stored["usage"] == {"promptTokens": 9, "completionTokens": 7}

    (request,) = generation_requests(fake_gemini)
    assert request.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert request.headers["x-goog-api-key"] == KEY
    assert "authorization" not in request.headers
    assert request.body["systemInstruction"] == {"parts": [{"text": "be nice"}]}
    assert request.body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert request.body["generationConfig"]["maxOutputTokens"] > 0

    # the next turn sends the reply back as the model's turn
    fake_gemini.script(MODEL, Script(tokens=["again"]))
    assert send(client, cid, "more").terminal.data["finishReason"] == "stop"
    contents = generation_requests(fake_gemini)[-1].body["contents"]
    assert [(c["role"], c["parts"][0]["text"]) for c in contents] == [
        ("user", "hi"),
        ("model", "Bonjour, monde été"),
        ("user", "more"),
    ]


def test_running_usage_counts_end_with_the_last_chunk(
    client: httpx2.Client, fake_gemini: FakeGemini
) -> None:
    fake_gemini.script(MODEL, Script(tokens=["a", "b", "c"]))
    t = send(client, new_conversation(client))
    assert t.terminal.data["usage"] == {"promptTokens": PROMPT_TOKENS, "completionTokens": 3}


def test_thought_parts_and_signature_only_parts_are_not_text(
    client: httpx2.Client, fake_gemini: FakeGemini
) -> None:
    fake_gemini.script(
        MODEL,
        Script(tokens=[thought_chunk("a secret plan"), "Visible", signature_chunk(), " answer"]),
    )
    cid = new_conversation(client)
    t = send(client, cid)
    assert t.terminal.data["finishReason"] == "stop"
    assert t.text == "Visible answer"
    assert all(e.data["content"] for e in t.events if e.type == "token")
    assert wait_until_idle(client, cid)["messages"][-1]["content"] == "Visible answer"


def test_safety_finish_is_content_filter(client: httpx2.Client, fake_gemini: FakeGemini) -> None:
    fake_gemini.script(MODEL, Script(tokens=["Here is how"], finish_reason="SAFETY"))
    cid = new_conversation(client)
    t = send(client, cid)
    assert t.terminal.data["type"] == "complete"
    assert t.terminal.data["finishReason"] == "content_filter"
    stored = wait_until_idle(client, cid)["messages"][-1]
    assert (stored["status"], stored["finishReason"], stored["content"]) == (
        "complete",
        "content_filter",
        "Here is how",
    )


def test_max_tokens_finish_is_length(client: httpx2.Client, fake_gemini: FakeGemini) -> None:
    fake_gemini.script(MODEL, Script(tokens=["cut"], finish_reason="MAX_TOKENS"))
    assert send(client, new_conversation(client)).terminal.data["finishReason"] == "length"


def test_a_blocked_prompt_is_a_clear_error_that_is_not_retried(
    client: httpx2.Client, fake_gemini: FakeGemini
) -> None:
    fake_gemini.block_prompt(MODEL, "SAFETY")
    cid = new_conversation(client)
    t = send(client, cid)
    # the API answers 200 and gives its verdict in the body: an error event, not a 502
    assert t.status == 200
    error = t.terminal.data
    assert (error["type"], error["code"]) == ("error", "PROVIDER_ERROR")
    assert error["error"] == "gemini blocked the prompt (SAFETY)"
    assert (error["retryable"], error["partial"]) == (False, False)
    stored = wait_until_idle(client, cid)["messages"]
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "error"),
    ]
    assert stored[-1]["error"]["code"] == "PROVIDER_ERROR"
    assert stored[-1]["content"] == ""
    assert len(generation_requests(fake_gemini)) == 1  # not retried

    answer = client.post("/api/v1/messages", json={"message": "x", "model": f"gemini/{MODEL}"})
    assert answer.status_code == 502
    assert answer.json()["error"] == {
        "code": "PROVIDER_ERROR",
        "message": "gemini blocked the prompt (SAFETY)",
    }


@pytest.mark.parametrize(
    ("script", "fake_key", "status", "code"),
    [
        (  # Gemini's own way of saying when to come back: a RetryInfo detail, no header
            Script(
                status=429,
                error_body={
                    "error": {
                        "code": 429,
                        "message": "You exceeded your current quota.",
                        "status": "RESOURCE_EXHAUSTED",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                                "retryDelay": "7s",
                            }
                        ],
                    }
                },
            ),
            None,
            429,
            "RATE_LIMIT",
        ),
        (Script(), "another-key", 502, "PROVIDER_AUTH"),  # 400 API_KEY_INVALID
        (
            Script(
                status=400,
                error_body={
                    "error": {
                        "code": 400,
                        "message": "The input token count (1200000) exceeds the maximum "
                        "number of tokens allowed (1048576).",
                        "status": "INVALID_ARGUMENT",
                    }
                },
            ),
            None,
            400,
            "CONTEXT_LENGTH_EXCEEDED",
        ),
    ],
)
def test_geminis_error_formats(
    client: httpx2.Client,
    fake_gemini: FakeGemini,
    script: Script,
    fake_key: str | None,
    status: int,
    code: str,
) -> None:
    fake_gemini.script(MODEL, script)
    fake_gemini.api_key = fake_key  # None: any key will do
    t = send(client, new_conversation(client))
    assert t.status == status
    body = httpx2.Response(status, content=t.raw).json()
    assert body["error"]["code"] == code
    assert KEY not in t.raw.decode()
    assert "quota" not in t.raw.decode()  # never the provider's body verbatim
    if code == "RATE_LIMIT":
        assert t.headers["retry-after"] == "7"


def test_cancel_closes_the_upstream_connection_within_a_second(
    client: httpx2.Client, fake_gemini: FakeGemini
) -> None:
    fake_gemini.script(MODEL, Script(tokens=[f"t{i} " for i in range(200)], delay=0.05))
    cid = new_conversation(client)
    with open_stream(
        client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "go", "model": f"gemini/{MODEL}"},
    ) as live:
        head = live.take(4)
        upstream = generation_requests(fake_gemini)[-1]
        assert not upstream.closed.is_set()
        cancelled_at = time.monotonic()
        answer = client.post(f"/api/v1/streams/{head.events[0].data['streamId']}/cancel")
        assert answer.status_code == 202
        assert upstream.closed.wait(1.0), "the upstream connection was not closed within 1 s"
        assert upstream.closed_by_client
        assert upstream.closed_at is not None
        assert upstream.closed_at - cancelled_at < 1.0
        tail = live.rest()
    assert tail.terminal.data["finishReason"] == "cancelled"
    stored = wait_until_idle(client, cid)["messages"][-1]
    assert stored["status"] == "cancelled"
    assert stored["content"] == head.text + tail.text
    assert upstream.chunks_sent < 200


def test_models_are_listed_without_the_prefix_and_only_generative(
    client: httpx2.Client, fake_gemini: FakeGemini
) -> None:
    ids = [m["id"] for m in client.get("/api/v1/models").json()["data"]]
    assert "gemini/gemini-2.5-flash" in ids
    assert "gemini/gemini-2.5-pro" in ids
    assert not [i for i in ids if "embedding" in i or i.startswith("gemini/models/")]


def test_a_providers_table_entry_that_does_not_stream(
    serve: ServeFactory, fake_gemini: FakeGemini
) -> None:
    fake_gemini.script(MODEL, Script(tokens=["whole ", "reply"]))
    config = ProviderConfig(
        type="gemini",
        base_url=fake_gemini.url,
        api_key="table-key",
        models=[MODEL],
        streaming=False,
        options={"api_version": "v1"},
    )
    server = serve(providers={"vertexish": config}, retry_attempts=1)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        models = client.get("/api/v1/models").json()["data"]
        assert f"vertexish/{MODEL}" in [m["id"] for m in models]
        t = stream(
            client,
            "POST",
            "/api/v1/messages",
            json={"message": "hi", "model": f"vertexish/{MODEL}"},
        )
    assert t.terminal.data["finishReason"] == "stop"
    assert t.text == "whole reply"
    (request,) = generation_requests(fake_gemini)
    assert request.path == f"/v1/models/{MODEL}:generateContent"
    assert request.headers["x-goog-api-key"] == "table-key"


# -- the provider itself ---------------------------------------------------------------------


async def collect(
    provider: GeminiProvider, model: str = MODEL, *, stream: bool = True
) -> list[Delta]:
    opened = await provider.open(model, MESSAGES, max_tokens=64, stream=stream)
    deltas: list[Delta] = []
    try:
        async for delta in opened:
            deltas.append(delta)
    finally:
        await opened.aclose()
        await opened.aclose()  # idempotent
    return deltas


def run_provider(fake: FakeGemini, go: Any) -> Any:
    async def main() -> Any:
        provider = GeminiProvider("gemini", api_key=KEY, base_url=fake.url)
        try:
            return await go(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def test_stream_false_uses_generate_content(fake_gemini: FakeGemini) -> None:
    fake_gemini.script(MODEL, Script(tokens=["One ", "two ", "three"], finish_reason="MAX_TOKENS"))
    deltas = run_provider(fake_gemini, lambda p: collect(p, stream=False))
    *texts, finish = deltas
    assert "".join(texts) == "One two three"
    assert isinstance(finish, Finish)
    assert finish.reason == "length"
    assert finish.usage is not None
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens) == (PROMPT_TOKENS, 3)
    (request,) = generation_requests(fake_gemini)
    assert request.path == f"/v1beta/models/{MODEL}:generateContent"
    assert request.headers["x-goog-api-key"] == KEY
    assert request.body["systemInstruction"]["parts"] == [{"text": "be brief"}]
    assert request.body["generationConfig"] == {"maxOutputTokens": 64}
    assert request.body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_stream_false_blocked_and_safety(fake_gemini: FakeGemini) -> None:
    fake_gemini.script("careful", Script(tokens=["no"], finish_reason="SAFETY"))
    (finish,) = run_provider(fake_gemini, lambda p: collect(p, "careful", stream=False))
    assert finish == Finish("content_filter", finish.usage)
    fake_gemini.block_prompt("strict", "PROHIBITED_CONTENT")
    with pytest.raises(ProviderError, match=r"blocked the prompt \(PROHIBITED_CONTENT\)") as raised:
        run_provider(fake_gemini, lambda p: collect(p, "strict", stream=False))
    assert raised.value.retryable is False


def test_characters_torn_across_reads_arrive_whole(fake_gemini: FakeGemini) -> None:
    fake_gemini.script(MODEL, Script(tokens=["é", "日本語", " 👋"], split_utf8=True))
    *texts, finish = run_provider(fake_gemini, collect)
    assert texts == ["é", "日本語", " 👋"]
    assert finish == Finish("stop", finish.usage)


@pytest.mark.parametrize(
    ("script", "error", "retryable", "text"),
    [
        (Script(tokens=["a", "b"], error_after=1), ProviderError, True, "a"),
        (Script(tokens=["a", "b"], drop_after=1), Interrupted, True, "a"),
        (Script(tokens=["a", "b"], done=False), Interrupted, True, "ab"),
        (Script(tokens=["a", b"data: {nope\r\n\r\n"]), ProviderError, True, "a"),
        (
            Script(tokens=["a", b'data: {"candidates": [{"content": 5}]}\r\n\r\n']),
            ProviderError,
            True,
            "a",
        ),
        (
            Script(
                tokens=[
                    "a",
                    b'data: {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}\r\n\r\n',
                ]
            ),
            RateLimited,
            True,
            "a",
        ),
        (
            Script(
                tokens=[
                    "a",
                    b'data: {"error": {"code": 400, "status": "INVALID_ARGUMENT"}}\r\n\r\n',
                ]
            ),
            ProviderError,
            False,
            "a",
        ),
    ],
)
def test_stream_failures(
    fake_gemini: FakeGemini,
    script: Script,
    error: type[RunnelError],
    retryable: bool,
    text: str,
) -> None:
    fake_gemini.script(MODEL, script)
    seen: list[str] = []

    async def go(provider: GeminiProvider) -> None:
        opened = await provider.open(MODEL, MESSAGES, max_tokens=64)
        try:
            async for delta in opened:
                assert isinstance(delta, str)
                seen.append(delta)
        finally:
            await opened.aclose()

    with pytest.raises(error) as raised:
        run_provider(fake_gemini, go)
    assert type(raised.value) is error
    assert raised.value.retryable is retryable
    assert "".join(seen) == text


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (Script(status=401), ProviderAuth),
        (Script(status=403), ProviderAuth),
        (Script(status=404), ModelNotFound),
        (Script(status=429, retry_after="3"), RateLimited),
        (Script(status=500), ProviderError),
        (Script(status=503), ProviderError),
        (Script(status=504), StreamTimeout),
        (Script(status=400), ProviderError),
        (
            Script(
                status=400,
                error_body={
                    "error": {
                        "code": 400,
                        "message": "Please reduce the length of the messages: context length "
                        "exceeded.",
                        "status": "INVALID_ARGUMENT",
                    }
                },
            ),
            ContextLengthExceeded,
        ),
    ],
)
def test_errors_before_the_stream_map_alike_for_both_paths(
    fake_gemini: FakeGemini, script: Script, error: type[RunnelError]
) -> None:
    fake_gemini.script(MODEL, script)
    for streaming in (True, False):
        with pytest.raises(error) as raised:
            run_provider(fake_gemini, lambda p, s=streaming: collect(p, stream=s))
        assert type(raised.value) is error
        assert raised.value.provider == "gemini"
        assert KEY not in raised.value.message
        if error is RateLimited:
            assert raised.value.retry_after == 3.0
        if script.status == 400 and error is ProviderError:
            assert raised.value.retryable is False


def test_no_response_in_time_and_no_server(fake_gemini: FakeGemini) -> None:
    fake_gemini.script(MODEL, Script(headers_delay=2))

    async def slow(provider: GeminiProvider) -> None:
        await collect(provider)

    async def main() -> None:
        provider = GeminiProvider("gemini", api_key=KEY, base_url=fake_gemini.url, timeout=0.3)
        try:
            with pytest.raises(StreamTimeout):
                await slow(provider)
        finally:
            await provider.aclose()
        nowhere = GeminiProvider("gemini", api_key=KEY, base_url="http://127.0.0.1:9")
        try:
            with pytest.raises(ProviderError, match="could not connect"):
                await collect(nowhere)
            with pytest.raises(ProviderError, match="could not connect"):
                await collect(nowhere, stream=False)
        finally:
            await nowhere.aclose()

    asyncio.run(main())


def test_model_listing_is_cached_and_configured_models_win(fake_gemini: FakeGemini) -> None:
    async def go(provider: GeminiProvider) -> tuple[list[str], list[str]]:
        return await provider.list_models(), await provider.list_models()

    first, second = run_provider(fake_gemini, go)
    assert first == second == ["gemini-2.5-flash", "gemini-2.5-pro"]
    assert len([r for r in fake_gemini.requests if r.method == "GET"]) == 1

    configured = GeminiProvider("g", api_key=KEY, base_url=fake_gemini.url, models=["only-me"])
    assert asyncio.run(configured.list_models()) == ["only-me"]
    asyncio.run(configured.aclose())
    assert len([r for r in fake_gemini.requests if r.method == "GET"]) == 1


def test_create_checks_its_configuration(fake_gemini: FakeGemini) -> None:
    settings = Settings(gemini_api_key=None)
    with pytest.raises(ValueError, match="unknown gemini option 'temperature'"):
        create(
            "g", ProviderConfig(type="gemini", api_key=KEY, options={"temperature": 1}), settings
        )
    with pytest.raises(ValueError, match="api_version"):
        create(
            "g",
            ProviderConfig(type="gemini", api_key=KEY, options={"api_version": "x/y"}),
            settings,
        )
    with pytest.raises(ValueError, match="needs an API key"):
        create("g", ProviderConfig(type="gemini"), settings)
    provider = create(
        "g", ProviderConfig(type="gemini", base_url=fake_gemini.url, api_key=KEY), settings
    )
    assert provider.kind == "gemini"
    asyncio.run(provider.aclose())


def test_without_the_sdk_create_says_what_to_install() -> None:
    script = (
        "import sys\n"
        "sys.modules['google.genai'] = None\n"  # as if the extra were not installed
        "from runnel.providers.gemini import create\n"
        "from runnel.settings import ProviderConfig, Settings\n"
        "try:\n"
        "    create('g', ProviderConfig(type='gemini', api_key='k'), Settings())\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'runnel[gemini]'" in done.stdout
