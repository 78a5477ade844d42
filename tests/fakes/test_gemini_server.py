"""Tests of the fake Gemini server through the real ``google-genai`` SDK's typed API: what the
fake sends must be what the SDK understands the real API to send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from google import genai
from google.genai import errors, types

from .gemini_server import FakeGemini, RecordedRequest, Script, signature_chunk, thought_chunk
from .httpserver import PROMPT_TOKENS


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server
    assert server._errors == []  # the fake's own failures are kept quiet, so check them here


@asynccontextmanager
async def sdk(
    fake: FakeGemini, api_key: str = "test-key"
) -> AsyncIterator[genai.client.AsyncClient]:
    # the SDK's own httpx2 transport (with aiohttp installed it would pick aiohttp instead)
    http = httpx2.AsyncClient()
    client = genai.Client(
        api_key=api_key,
        http_options=types.HttpOptions(
            base_url=fake.url, api_version="v1beta", httpx_async_client=http
        ),
    )
    try:
        yield client.aio
    finally:
        await client.aio.aclose()
        client.close()
        await http.aclose()


def stream(fake: FakeGemini, model: str) -> list[types.GenerateContentResponse]:
    async def go() -> list[types.GenerateContentResponse]:
        async with sdk(fake) as client:
            chunks = await client.models.generate_content_stream(
                model=model,
                contents="hi",
                config=types.GenerateContentConfig(system_instruction="be brief"),
            )
            return [chunk async for chunk in chunks]

    return asyncio.run(go())


async def read_stream(client: genai.client.AsyncClient, model: str, seen: list[str]) -> None:
    """Read a stream to its end, noting each chunk's text in ``seen``."""
    async for chunk in await client.models.generate_content_stream(model=model, contents="hi"):
        seen.append(chunk.text or "")


def last_generation(fake: FakeGemini) -> RecordedRequest:
    return [r for r in fake.requests if r.method == "POST"][-1]


def test_stream_parses_with_running_usage_and_a_final_finish(fake: FakeGemini) -> None:
    chunks = stream(fake, "gemini-test")
    assert "".join(c.text or "" for c in chunks) == "Hello, world!"
    counts = [c.usage_metadata.candidates_token_count for c in chunks if c.usage_metadata]
    assert counts == [1, 2, 3, 4, 4]
    assert all(
        c.usage_metadata.prompt_token_count == PROMPT_TOKENS for c in chunks if c.usage_metadata
    )
    finishes = [c.candidates[0].finish_reason for c in chunks if c.candidates]
    assert finishes == [None, None, None, None, types.FinishReason.STOP]
    request = last_generation(fake)
    assert request.path == "/v1beta/models/gemini-test:streamGenerateContent?alt=sse"
    assert request.headers["x-goog-api-key"] == "test-key"
    assert request.body["systemInstruction"]["parts"] == [{"text": "be brief"}]
    assert request.body["contents"] == [{"parts": [{"text": "hi"}], "role": "user"}]
    assert request.chunks_sent == 4


def test_thinking_parts_and_script_details_parse(fake: FakeGemini) -> None:
    fake.script(
        "thinker",
        Script(
            tokens=[thought_chunk("pondering"), "Yes", signature_chunk()],
            finish_reason="MAX_TOKENS",
            usage={"promptTokenCount": 3, "candidatesTokenCount": 9, "totalTokenCount": 12},
        ),
    )
    chunks = stream(fake, "thinker")
    first_part = chunks[0].candidates[0].content.parts[0]
    assert (first_part.thought, first_part.text) == (True, "pondering")
    signed = chunks[2].candidates[0].content.parts[0]
    assert signed.thought_signature
    assert not signed.text
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert chunks[-1].usage_metadata.candidates_token_count == 9


def test_blocked_prompt_and_safety_finish(fake: FakeGemini) -> None:
    fake.block_prompt("strict", "PROHIBITED_CONTENT")
    (blocked,) = stream(fake, "strict")
    assert not blocked.candidates
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    fake.script("careful", Script(tokens=["Sure"], finish_reason="SAFETY"))
    last = stream(fake, "careful")[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert last.candidates[0].safety_ratings


def test_non_streaming_reply(fake: FakeGemini) -> None:
    async def go() -> types.GenerateContentResponse:
        async with sdk(fake) as client:
            return await client.models.generate_content(model="gemini-test", contents="hi")

    reply = asyncio.run(go())
    assert reply.text == "Hello, world!"
    assert reply.candidates[0].finish_reason == types.FinishReason.STOP
    assert reply.usage_metadata.candidates_token_count == 4
    assert last_generation(fake).path == "/v1beta/models/gemini-test:generateContent"


@pytest.mark.parametrize(
    ("status", "error_class", "google_status"),
    [
        (400, errors.ClientError, "INVALID_ARGUMENT"),
        (401, errors.ClientError, "UNAUTHENTICATED"),
        (403, errors.ClientError, "PERMISSION_DENIED"),
        (404, errors.ClientError, "NOT_FOUND"),
        (429, errors.ClientError, "RESOURCE_EXHAUSTED"),
        (500, errors.ServerError, "INTERNAL"),
        (503, errors.ServerError, "UNAVAILABLE"),
    ],
)
def test_error_statuses_raise_the_sdk_errors(
    fake: FakeGemini, status: int, error_class: type[errors.APIError], google_status: str
) -> None:
    fake.script("broken", Script(status=status, retry_after="7" if status == 429 else None))

    async def go() -> errors.APIError:
        async with sdk(fake) as client:
            with pytest.raises(errors.APIError) as streamed:
                await read_stream(client, "broken", [])
            with pytest.raises(errors.APIError) as whole:
                await client.models.generate_content(model="broken", contents="hi")
            assert type(whole.value) is type(streamed.value)
            return streamed.value

    error = asyncio.run(go())
    assert type(error) is error_class
    assert (error.code, error.status) == (status, google_status)
    if status == 429:
        assert error.response.headers["retry-after"] == "7"
        assert error.details["error"]["details"][0]["retryDelay"] == "7s"


def test_error_inside_the_stream_raises_mid_way(fake: FakeGemini) -> None:
    fake.script("flaky", Script(tokens=["a", "b", "c"], error_after=2))

    async def go() -> list[str]:
        seen: list[str] = []
        async with sdk(fake) as client:
            with pytest.raises(errors.ServerError) as raised:
                await read_stream(client, "flaky", seen)
            assert (raised.value.code, raised.value.status) == (503, "UNAVAILABLE")
        return seen

    assert asyncio.run(go()) == ["a", "b"]


def test_a_wrong_key_is_refused_like_the_real_api(fake: FakeGemini) -> None:
    fake.api_key = "right"

    async def go(key: str) -> types.GenerateContentResponse:
        async with sdk(fake, api_key=key) as client:
            return await client.models.generate_content(model="m", contents="hi")

    with pytest.raises(errors.ClientError) as raised:
        asyncio.run(go("wrong"))
    assert (raised.value.code, raised.value.status) == (400, "INVALID_ARGUMENT")
    assert raised.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert asyncio.run(go("right")).text == "Hello, world!"


def test_models_list_parses_and_pages(fake: FakeGemini) -> None:
    fake.page_size = 2

    async def go() -> list[types.Model]:
        async with sdk(fake) as client:
            return [model async for model in await client.models.list()]

    models = asyncio.run(go())
    assert [m.name for m in models] == [
        "models/gemini-2.5-flash",
        "models/gemini-2.5-pro",
        "models/text-embedding-004",
    ]
    assert models[0].supported_actions is not None
    assert "generateContent" in models[0].supported_actions
    assert models[2].supported_actions == ["embedContent"]
    pages = [r.path for r in fake.requests if r.method == "GET"]
    assert len(pages) == 2
    assert "pageToken=2" in pages[1]


def test_unknown_routes_answer_in_googles_error_format(fake: FakeGemini) -> None:
    async def go() -> errors.APIError:
        async with sdk(fake) as client:
            with pytest.raises(errors.ClientError) as raised:
                await client.models.get(model="gemini-2.5-flash")
            return raised.value

    error = asyncio.run(go())
    assert (error.code, error.status) == (404, "NOT_FOUND")


def test_refuse_streaming_answers_like_an_unsupported_method(fake: FakeGemini) -> None:
    fake.script("whole-only", Script(tokens=["ok"], refuse_streaming=True))

    async def go() -> str | None:
        async with sdk(fake) as client:
            with pytest.raises(errors.ClientError) as raised:
                await read_stream(client, "whole-only", [])
            assert (raised.value.code, raised.value.status) == (404, "NOT_FOUND")
            assert "not supported for streamGenerateContent" in str(raised.value.message)
            reply = await client.models.generate_content(model="whole-only", contents="hi")
            return reply.text

    assert asyncio.run(go()) == "ok"
