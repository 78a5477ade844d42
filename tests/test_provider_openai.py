"""What the OpenAI-compatible provider sends: the SDK's request, exactly the fields of the
chat completions API (the shared behaviour is in test_provider_conformance.py)."""

from __future__ import annotations

import httpx2

from runnel.settings import ProviderConfig
from tests.conftest import ServeFactory
from tests.fakes.httpserver import Script
from tests.fakes.openai_server import FakeOpenAI
from tests.sse_client import stream


def test_the_sdk_builds_the_streaming_and_the_whole_reply_requests(
    serve: ServeFactory, fake_openai: FakeOpenAI
) -> None:
    config = ProviderConfig(
        type="openai", base_url=fake_openai.url, api_key="sk-test", non_streaming_models=["whole"]
    )
    server = serve(providers={"openai": config})
    fake_openai.script("m", Script(tokens=["Hel", "lo"]))
    fake_openai.script("whole", Script(tokens=["Hel", "lo"]))
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        streamed = stream(
            client,
            "POST",
            "/api/v1/messages",
            json={"message": "hi", "model": "openai/m", "history": history},
        )
        whole = client.post(
            "/api/v1/messages", json={"message": "hi", "model": "openai/whole"}
        ).json()
    assert streamed.text == "Hello"
    assert whole["content"] == "Hello"
    first, second = fake_openai.requests[-2:]
    assert first.method == second.method == "POST"
    assert first.path == second.path == "/v1/chat/completions"
    assert first.body == {
        "model": "m",
        "messages": [*history, {"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert second.body == {
        "model": "whole",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }
    for request in (first, second):
        assert request.headers["authorization"] == "Bearer sk-test"
        assert request.headers["content-type"] == "application/json"
        # made by the SDK: its user agent and platform headers
        assert request.headers["user-agent"].startswith("AsyncOpenAI/Python")
        assert "x-stainless-lang" in request.headers
