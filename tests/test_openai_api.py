"""``/v1`` driven by the real ``openai`` SDK and LangChain's ``ChatOpenAI`` against a real
server: models, chat completions, responses (stored, background, resumed, cancelled)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from langchain_openai import ChatOpenAI

from runnel.providers.demo import demo_reply
from tests.conftest import ServeFactory
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.server import RunningServer

SLOW = {"demo_tokens_per_second": 40.0, "demo_reply_tokens": 200}


def sdk(server: RunningServer, key: str = "local", **options: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, max_retries=options.pop("max_retries", 0)
    )


@pytest.fixture
def oai(server: RunningServer) -> Iterator[openai.OpenAI]:
    with sdk(server) as client:
        yield client


def expected_reply(server: RunningServer, prompt: str) -> str:
    return "".join(demo_reply(prompt, server.settings.demo_reply_tokens))


def stored_messages(server: RunningServer, conversation_id: str) -> list[dict[str, Any]]:
    response = httpx2.get(f"{server.url}/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def conversation_of(server: RunningServer, response_id: str) -> str:
    """The Runnel conversation a stored response is in (found through the native API)."""
    stream_id = "s_" + response_id.removeprefix("resp_")
    listed = httpx2.get(f"{server.url}/api/v1/conversations").json()["data"]
    for item in listed:
        if any(m["streamId"] == stream_id for m in stored_messages(server, item["id"])):
            return str(item["id"])
    raise AssertionError(f"no conversation holds {response_id}")


def streaming(server: RunningServer) -> int:
    """Replies generating now."""
    loop = server.server.servers[0].get_loop()
    work = server.services.generations.user_streams("local")
    return asyncio.run_coroutine_threadsafe(work, loop).result(timeout=10)


def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# models


def test_models_list_and_retrieve(oai: openai.OpenAI, server: RunningServer) -> None:
    models = oai.models.list()
    ids = [m.id for m in models.data]
    assert "demo/markdown" in ids
    assert "openai/gpt-4o-mini" in ids
    demo = oai.models.retrieve("demo/markdown")
    assert (demo.id, demo.object, demo.owned_by) == ("demo/markdown", "model", "demo")
    with pytest.raises(openai.NotFoundError) as raised:
        oai.models.retrieve("demo/nope")
    assert raised.value.code == "model_not_found"


# chat completions


def test_chat_completion_whole(oai: openai.OpenAI, server: RunningServer) -> None:
    completion = oai.chat.completions.create(
        model="demo/markdown", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected_reply(server, "Hello there")
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == server.settings.demo_reply_tokens
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_chat_completion_stream_with_usage(oai: openai.OpenAI, server: RunningServer) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="demo/markdown",
            messages=[
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Stream "},
                        {"type": "text", "text": "this"},
                    ],
                },
            ],
            stream=True,
            stream_options={"include_usage": True},
            temperature=0.2,
            top_p=0.9,
            stop=["\n\n\n"],
            user="someone",
            extra_body={"an_unknown_field": {"is": "ignored"}},
        )
    )
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")
    assert len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    content_chunks = chunks[:-1]
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in content_chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == expected_reply(server, "Stream this")
    assert usage_chunk.usage.completion_tokens == server.settings.demo_reply_tokens


def test_chat_completion_stream_ends_with_done(server: RunningServer) -> None:
    body = {
        "model": "demo/markdown",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    with httpx2.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert sum(line == "data: [DONE]" for line in lines) == 1


def test_max_tokens_stops_with_length(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="demo/markdown",
        messages=[{"role": "user", "content": "a long answer please"}],
        max_completion_tokens=5,
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5


def test_multi_turn_prompt_reaches_the_provider(
    serve: ServeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("gpt-4o-mini", Script(tokens=["Fine", ", thanks"]))
    server = serve()
    with sdk(server) as client:
        completion = client.chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "developer", "content": "No emoji."},
                {"role": "user", "content": "How are you?"},
            ],
        )
    assert completion.choices[0].message.content == "Fine, thanks"
    sent = fake_openai.requests[-1].body["messages"]
    assert sent == [
        {"role": "system", "content": "You are terse.\n\nNo emoji."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "How are you?"},
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
        ),
        ({"messages": []}, "messages"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_chat_completion_rejects_what_it_does_not_support(
    oai: openai.OpenAI, server: RunningServer, extra: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {
        "model": "demo/markdown",
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(extra)
    with pytest.raises(openai.BadRequestError) as raised:
        oai.chat.completions.create(**body)
    error = raised.value
    assert error.status_code == 400
    assert error.type == "invalid_request_error"
    assert error.param == param
    assert error.response.headers["x-should-retry"] == "false"
    assert streaming(server) == 0


def test_unknown_model_is_model_not_found(oai: openai.OpenAI) -> None:
    for model in ("demo/nope", "gpt-4o"):
        with pytest.raises(openai.NotFoundError) as raised:
            oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert raised.value.code == "model_not_found"
        assert model in raised.value.message


def test_bad_key_is_invalid_api_key(serve: ServeFactory) -> None:
    server = serve(api_tokens="good-key:alice")
    with sdk(server, "bad-key") as client, pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(
            model="demo/markdown", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.code == "invalid_api_key"
    with sdk(server, "good-key") as client:
        completion = client.chat.completions.create(
            model="demo/markdown", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content


def test_rate_limit_is_429_with_retry_after(serve: ServeFactory) -> None:
    server = serve(rate_limit="1/minute")
    with sdk(server) as client:
        client.chat.completions.create(
            model="demo/markdown", messages=[{"role": "user", "content": "one"}]
        )
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(
                model="demo/markdown", messages=[{"role": "user", "content": "two"}]
            )
    error = raised.value
    assert error.code == "rate_limit_exceeded"
    assert int(error.response.headers["retry-after"]) >= 1
    assert "x-should-retry" not in error.response.headers  # nothing started: a retry is safe


def test_a_failed_generation_is_not_retried_by_the_sdk(
    serve: ServeFactory, fake_openai: FakeOpenAI
) -> None:
    """The SDK retries 5xx with no idempotency key; Runnel says no, so one request started
    one generation (whose own provider retries the router did)."""
    fake_openai.script("gpt-4o", Script(status=500))
    server = serve(retry_attempts=1)
    requests: list[str] = []
    http = httpx2.Client(event_hooks={"request": [lambda r: requests.append(str(r.url))]})
    client = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key="k", max_retries=3, http_client=http
    )
    with client, pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(
            model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 502
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert len(requests) == 1
    assert len(fake_openai.requests) == 1


def test_error_inside_a_chat_stream(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("gpt-4o", Script(tokens=["one ", "two ", "three"], error_after=2))
    server = serve(retry_attempts=1)
    body = {
        "model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    with httpx2.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert '"error"' in data[-1]
    assert "[DONE]" not in data
    with sdk(server) as client, pytest.raises(openai.APIError) as raised:
        for _ in client.chat.completions.create(
            model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
    assert raised.value.code == "provider_error"


def test_leaving_a_chat_stream_stops_its_generation(serve: ServeFactory) -> None:
    server = serve(**SLOW)
    with sdk(server) as client:
        stream = client.chat.completions.create(
            model="demo/markdown", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        for seen, _ in enumerate(stream):
            if seen == 3:
                break
        stream.close()
    wait_for(lambda: streaming(server) == 0)


def test_langchain_chat_openai_streams(server: RunningServer) -> None:
    model = ChatOpenAI(
        base_url=f"{server.url}/v1", api_key="local", model="demo/markdown", max_retries=0
    )
    chunks = list(model.stream("Hello from LangChain"))
    text = "".join(str(chunk.content) for chunk in chunks)
    assert text == expected_reply(server, "Hello from LangChain")
    assert len(chunks) > 3
    whole = model.invoke("Hello from LangChain")
    assert whole.content == text


# responses


def test_response_stream_is_a_stored_conversation(
    oai: openai.OpenAI, server: RunningServer
) -> None:
    events = list(
        oai.responses.create(
            model="demo/markdown", input="Tell me", instructions="Be kind.", stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert final.status == "completed"
    assert final.output_text == text
    assert final.instructions == "Be kind."
    assert text == expected_reply(server, "Tell me")
    conversation_id = conversation_of(server, final.id)
    stored = stored_messages(server, conversation_id)
    assert [(m["role"], m["content"]) for m in stored] == [("user", "Tell me"), ("assistant", text)]
    again = oai.responses.retrieve(final.id)
    assert again.status == "completed"
    assert again.output_text == text
    assert again.instructions == "Be kind."


def test_previous_response_id_continues_the_conversation(
    oai: openai.OpenAI, server: RunningServer
) -> None:
    first = oai.responses.create(model="demo/markdown", input="First question")
    assert first.status == "completed"
    assert first.output_text
    second = oai.responses.create(
        model="demo/markdown", input="Second question", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert second.output_text == expected_reply(server, "Second question")
    conversation_id = conversation_of(server, first.id)
    assert conversation_of(server, second.id) == conversation_id
    stored = stored_messages(server, conversation_id)
    assert [m["content"] for m in stored] == [
        "First question",
        first.output_text,
        "Second question",
        second.output_text,
    ]
    assert oai.responses.retrieve(second.id).previous_response_id == first.id
    # a branch from an earlier response is not supported: nothing is added
    with pytest.raises(openai.BadRequestError) as raised:
        oai.responses.create(model="demo/markdown", input="Branch", previous_response_id=first.id)
    assert raised.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="demo/markdown", input="x", previous_response_id="resp_nope")
    assert len(stored_messages(server, conversation_id)) == 4


def test_unstored_response_leaves_nothing(oai: openai.OpenAI, server: RunningServer) -> None:
    response = oai.responses.create(
        model="demo/markdown",
        input=[
            {"role": "developer", "content": "Short."},
            {"role": "user", "content": "Ephemeral"},
        ],
        store=False,
    )
    assert response.status == "completed"
    assert response.output_text == expected_reply(server, "Ephemeral")
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(response.id)
    listed = httpx2.get(f"{server.url}/api/v1/conversations").json()["data"]
    assert listed == []


def test_background_response_resumes_after_a_cut(serve: ServeFactory) -> None:
    """A background response read as a stream, the connection cut mid-reply, then read again
    from the last sequence number seen: every delta once, the whole text at the end."""
    server = serve(**SLOW)
    client = sdk(server)
    started = client.responses.create(model="demo/markdown", input="Go on", background=True)
    assert started.status in ("queued", "in_progress")
    assert started.background is True
    seen: list[tuple[int, str]] = []
    last = -1
    with pytest.raises((openai.APIConnectionError, httpx2.HTTPError)):  # noqa: PT012
        for event in client.responses.retrieve(started.id, stream=True):
            last = event.sequence_number
            if event.type == "response.output_text.delta":
                seen.append((event.sequence_number, event.delta))
                if len(seen) == 10:
                    server.drop_connections()
    assert len(seen) >= 10
    resumed = list(client.responses.retrieve(started.id, stream=True, starting_after=last))
    assert resumed[0].sequence_number == last + 1
    numbers = [e.sequence_number for e in resumed]
    assert numbers == sorted(set(numbers))
    seen += [
        (e.sequence_number, e.delta) for e in resumed if e.type == "response.output_text.delta"
    ]
    final = resumed[-1]
    assert final.type == "response.completed"
    text = "".join(delta for _, delta in seen)
    assert text == final.response.output_text == expected_reply(server, "Go on")
    # the SDK's own helper: a full replay, filtered by the client
    with client.responses.stream(response_id=started.id, starting_after=last) as helper:
        after = list(helper)
        whole = helper.get_final_response()
    assert after[0].sequence_number == last + 1
    assert whole.output_text == text
    client.close()


def test_retrieve_follows_a_background_response_live(serve: ServeFactory) -> None:
    server = serve(**SLOW)
    with sdk(server) as client:
        started = client.responses.create(model="demo/markdown", input="Live", background=True)
        polled = client.responses.retrieve(started.id)
        assert polled.status in ("in_progress", "completed")
        with client.responses.stream(response_id=started.id) as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == expected_reply(server, "Live")


def test_cancel_a_background_response_twice(serve: ServeFactory) -> None:
    server = serve(**SLOW)
    with sdk(server) as client:
        started = client.responses.create(model="demo/markdown", input="Stop me", background=True)
        wait_for(lambda: client.responses.retrieve(started.id).output_text)
        cancelled = client.responses.cancel(started.id)
        assert cancelled.status == "cancelled"
        assert cancelled.output_text
        again = client.responses.cancel(started.id)
        assert again.status == "cancelled"
        assert again.output_text == cancelled.output_text
        events = list(client.responses.retrieve(started.id, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.status == "cancelled"
    assert (
        "".join(e.delta for e in events if e.type == "response.output_text.delta")
        == cancelled.output_text
    )
    stored = stored_messages(server, conversation_of(server, started.id))
    assert stored[-1]["status"] == "cancelled"
    assert stored[-1]["content"] == cancelled.output_text
    assert streaming(server) == 0


def test_cancel_a_finished_response_returns_it(oai: openai.OpenAI) -> None:
    done = oai.responses.create(model="demo/markdown", input="Quick")
    again = oai.responses.cancel(done.id)
    assert again.status == "completed"
    assert again.output_text == done.output_text


def test_delete_a_response(oai: openai.OpenAI, server: RunningServer) -> None:
    first = oai.responses.create(model="demo/markdown", input="Keep me")
    second = oai.responses.create(
        model="demo/markdown", input="Drop me", previous_response_id=first.id
    )
    conversation_id = conversation_of(server, first.id)
    oai.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(second.id)
    assert [m["content"] for m in stored_messages(server, conversation_id)] == [
        "Keep me",
        first.output_text,
    ]
    oai.responses.delete(first.id)
    gone = httpx2.get(f"{server.url}/api/v1/conversations/{conversation_id}")
    assert gone.status_code == 404
    with pytest.raises(openai.NotFoundError):
        oai.responses.delete(first.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"role": "assistant", "content": "no question"}]}, "input"),
        ({"input": [{"type": "function_call_output", "call_id": "1", "output": "x"}]}, "input[0]"),
        ({"input": "x", "background": True, "store": False}, "background"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools"),
        ({}, "input"),
    ],
)
def test_response_rejects_what_it_does_not_support(
    server: RunningServer, body: dict[str, Any], param: str
) -> None:
    response = httpx2.post(f"{server.url}/v1/responses", json={"model": "demo/markdown", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert response.headers["x-should-retry"] == "false"
    assert httpx2.get(f"{server.url}/api/v1/conversations").json()["data"] == []


def test_failed_start_leaves_no_conversation(serve: ServeFactory) -> None:
    server = serve(rate_limit="1/minute")
    with sdk(server) as client:
        client.responses.create(model="demo/markdown", input="one")
        with pytest.raises(openai.RateLimitError):
            client.responses.create(model="demo/markdown", input="two")
    listed = httpx2.get(f"{server.url}/api/v1/conversations").json()["data"]
    assert len(listed) == 1


def test_unknown_v1_endpoint_speaks_openai(server: RunningServer) -> None:
    response = httpx2.get(f"{server.url}/v1/embeddings")
    assert response.status_code in (404, 405)
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_reply_that_fails_before_it_starts_leaves_nothing(
    serve: ServeFactory, fake_openai: FakeOpenAI
) -> None:
    """A provider failure before the first token is an HTTP error: the client gets no id,
    so nothing of it is kept — not a new conversation, not a continued one's new turn."""
    fake_openai.script("gpt-4o", Script(status=500))
    server = serve(retry_attempts=1)
    with sdk(server) as client:
        with pytest.raises(openai.InternalServerError) as raised:
            client.responses.create(model="openai/gpt-4o", input="fails")
        assert raised.value.status_code == 502
        assert raised.value.code == "provider_error"
        assert httpx2.get(f"{server.url}/api/v1/conversations").json()["data"] == []
        first = client.responses.create(model="demo/markdown", input="works")
        with pytest.raises(openai.InternalServerError):
            client.responses.create(
                model="openai/gpt-4o", input="fails later", previous_response_id=first.id
            )
        conversation_id = conversation_of(server, first.id)
        stored = stored_messages(server, conversation_id)
        assert [m["content"] for m in stored] == ["works", first.output_text]
        # the previous response is still the latest: it can be continued
        second = client.responses.create(
            model="demo/markdown", input="again", previous_response_id=first.id
        )
    assert second.status == "completed"
    assert len(stored_messages(server, conversation_id)) == 4


def test_retrieve_while_it_streams_is_current(serve: ServeFactory) -> None:
    server = serve(**SLOW)
    with sdk(server) as client:
        started = client.responses.create(model="demo/markdown", input="Now", background=True)
        partial = wait_for(lambda: client.responses.retrieve(started.id).output_text)
        current = client.responses.retrieve(started.id)
        assert current.status == "in_progress"
        assert current.usage is None
        assert current.output_text.startswith(partial)
        assert expected_reply(server, "Now").startswith(current.output_text)
        client.responses.cancel(started.id)
