"""Provider conformance: every provider type, through its real SDK and a fake server speaking
its wire format, must stream, report usage and finish reasons, map each class of failure to
the codes of DESIGN §4 with the partial text stored, stop when Stop is pressed, retry only
before the first token, fall back along an alias, and answer without streaming when told to.

The same test bodies run for OpenAI, a keyless local OpenAI-compatible server (``ollama``),
Anthropic and Gemini (tests/upstreams.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.conftest import ServeFactory
from tests.fakes.httpserver import PROMPT_TOKENS, Script
from tests.helpers import conversation, new_conversation, wait_until_idle
from tests.sse_client import Transcript, open_stream, stream
from tests.upstreams import UPSTREAMS, Upstream, make_upstream

TOKENS = ["Hel", "lo", ", ", "wörld", " 🎉", "!\n", "```py\nx = 1\n```"]
SLOW = Script(tokens=[f"t{i} " for i in range(200)], delay=0.05)


@pytest.fixture(params=UPSTREAMS)
def upstream(request: pytest.FixtureRequest) -> Iterator[Upstream]:
    yield from make_upstream(request.param)


@pytest.fixture
def client(serve: ServeFactory, upstream: Upstream) -> Iterator[httpx2.Client]:
    server = serve(providers=upstream.config(), aliases={})
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        yield http


def send(client: httpx2.Client, cid: str, model: str, content: str = "hi") -> Transcript:
    return stream(
        client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": content, "model": model},
    )


def error_body(t: Transcript) -> dict[str, Any]:
    body: dict[str, Any] = httpx2.Response(t.status, content=t.raw).json()["error"]
    return body


# -- a streamed reply -----------------------------------------------------------------------


def test_a_streamed_reply_with_usage_and_finish_reason(
    client: httpx2.Client, upstream: Upstream
) -> None:
    upstream.fake.script("m", Script(tokens=list(TOKENS)))
    cid = new_conversation(client, systemPrompt="be brief")
    t = send(client, cid, upstream.model("m"))
    assert t.status == 200
    assert t.events[0].data["model"] == upstream.model("m")
    complete = t.terminal.data
    assert complete["type"] == "complete"
    assert complete["model"] == upstream.model("m")
    assert complete["finishReason"] == "stop"
    assert complete["usage"] == {"promptTokens": PROMPT_TOKENS, "completionTokens": len(TOKENS)}
    assert t.text == "".join(TOKENS)
    stored = wait_until_idle(client, cid)["messages"][-1]
    assert stored["content"] == t.text
    assert (stored["status"], stored["finishReason"]) == ("complete", "stop")
    assert stored["usage"] == {"promptTokens": PROMPT_TOKENS, "completionTokens": len(TOKENS)}
    assert stored["model"] == upstream.model("m")
    (request,) = upstream.generations()
    assert upstream.streamed(request)


def test_consecutive_replies_reuse_the_upstream_connection(
    client: httpx2.Client, upstream: Upstream
) -> None:
    """A finished reply leaves its connection in the pool: against a hosted API, a new
    connection would cost the next reply a TCP and TLS handshake before its first token."""
    upstream.fake.script("m", Script(tokens=["a", "b"]))
    cid = new_conversation(client)
    for content in ("one", "two", "three"):
        assert send(client, cid, upstream.model("m"), content).text == "ab"
    assert len({r.connection for r in upstream.generations()}) == 1


@pytest.mark.parametrize(
    ("which", "expected"), [("length", "length"), ("filter", "content_filter")]
)
def test_finish_reasons_map(
    client: httpx2.Client, upstream: Upstream, which: str, expected: str
) -> None:
    reason = upstream.length_reason if which == "length" else upstream.filter_reason
    upstream.fake.script("m", Script(tokens=["cut"], finish_reason=reason))
    cid = new_conversation(client)
    t = send(client, cid, upstream.model("m"))
    assert t.terminal.data["finishReason"] == expected
    stored = wait_until_idle(client, cid)["messages"][-1]
    assert (stored["status"], stored["finishReason"], stored["content"]) == (
        "complete",
        expected,
        "cut",
    )


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "http", "code", "attempts"),
    [
        (401, None, 502, "PROVIDER_AUTH", 1),
        (429, "30", 429, "RATE_LIMIT", 1),  # longer than the retry budget: not waited for
        (500, None, 502, "PROVIDER_ERROR", 3),  # retried, then reported
    ],
)
def test_errors_before_the_stream(
    client: httpx2.Client,
    upstream: Upstream,
    status: int,
    retry_after: str | None,
    http: int,
    code: str,
    attempts: int,
) -> None:
    upstream.fake.script("m", Script(status=status, retry_after=retry_after))
    cid = new_conversation(client)
    t = send(client, cid, upstream.model("m"))
    assert t.status == http
    error = error_body(t)
    assert error["code"] == code
    assert str(upstream.api_key) not in t.raw.decode()
    if code == "RATE_LIMIT":
        assert t.headers["retry-after"] == "30"
        assert "provider" in error["message"]
    assert len(upstream.generations()) == attempts
    stored = wait_until_idle(client, cid)
    user, assistant = stored["messages"]
    assert (user["content"], user["status"]) == ("hi", "complete")
    assert (assistant["status"], assistant["error"]["code"], assistant["content"]) == (
        "error",
        code,
        "",
    )


@pytest.mark.parametrize(
    ("script", "code", "status"),
    [
        (Script(tokens=["par", "tial", "x", "y"], error_after=2), "PROVIDER_ERROR", "error"),
        (Script(tokens=["par", "tial", "x", "y"], drop_after=2), "INTERRUPTED", "interrupted"),
        (
            Script(tokens=["par", "tial", b"data: {not json\n\n", "y"]),
            "PROVIDER_ERROR",
            "error",
        ),
    ],
    ids=["error-event-in-200", "connection-dropped", "malformed"],
)
def test_failures_mid_stream_keep_the_partial_text(
    client: httpx2.Client, upstream: Upstream, script: Script, code: str, status: str
) -> None:
    upstream.fake.script("m", script)
    cid = new_conversation(client)
    t = send(client, cid, upstream.model("m"))
    assert t.status == 200
    error = t.terminal.data
    assert (error["type"], error["code"], error["partial"]) == ("error", code, True)
    assert t.text == "partial"
    stored = wait_until_idle(client, cid)["messages"][-1]
    assert (stored["status"], stored["error"]["code"], stored["content"]) == (
        status,
        code,
        "partial",
    )
    assert len(upstream.generations()) == 1, "text was sent: no retry"


# -- Stop -----------------------------------------------------------------------------------


def test_stop_closes_the_upstream_connection_within_a_second(
    client: httpx2.Client, upstream: Upstream
) -> None:
    upstream.fake.script("slow", SLOW)
    cid = new_conversation(client)
    live = open_stream(
        client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "go", "model": upstream.model("slow")},
    )
    assert live.response.status_code == 200
    head = live.take(4)
    (request,) = upstream.generations()
    assert not request.closed.is_set()
    cancelled_at = time.monotonic()
    answer = client.post(f"/api/v1/streams/{head.events[0].data['streamId']}/cancel")
    assert answer.status_code == 202
    assert request.closed.wait(1.0), "the upstream connection was not closed within 1 s"
    assert request.closed_by_client
    assert request.closed_at is not None
    assert request.closed_at - cancelled_at < 1.0
    sent = request.chunks_sent
    tail = live.rest()
    live.close()
    assert tail.terminal.data["finishReason"] == "cancelled"
    stored = wait_until_idle(client, cid)["messages"][-1]
    assert stored["status"] == "cancelled"
    assert stored["content"] == head.text + tail.text
    assert 0 < len(stored["content"]) < len("".join(str(t) for t in SLOW.tokens))
    time.sleep(0.3)
    assert request.chunks_sent == sent, "the upstream kept generating after Stop"


# -- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [Script(status=503), Script(status=429, retry_after="0"), Script(error_after=0)],
    ids=["503", "429-retry-after", "error-event-before-text"],
)
def test_a_failure_before_the_first_token_is_retried(
    client: httpx2.Client, upstream: Upstream, failure: Script
) -> None:
    upstream.fake.queue("m", failure, Script(tokens=["second ", "try"]))
    cid = new_conversation(client)
    t = send(client, cid, upstream.model("m"))
    assert t.status == 200
    assert t.terminal.data["type"] == "complete", t.terminal.data
    assert t.text == "second try"
    assert len(upstream.generations()) == 2
    stored = wait_until_idle(client, cid)["messages"][-1]
    assert (stored["status"], stored["content"]) == ("complete", "second try")


def test_a_retry_waits_for_retry_after(client: httpx2.Client, upstream: Upstream) -> None:
    upstream.fake.queue("m", Script(status=429, retry_after="1"), Script(tokens=["ok"]))
    cid = new_conversation(client)
    assert send(client, cid, upstream.model("m")).text == "ok"
    first, second = upstream.generations()
    assert second.received_at - first.received_at >= 0.95


def test_no_retry_after_the_first_token(client: httpx2.Client, upstream: Upstream) -> None:
    upstream.fake.queue("m", Script(tokens=["one", "two"], drop_after=1), Script(tokens=["no"]))
    cid = new_conversation(client)
    t = send(client, cid, upstream.model("m"))
    assert t.terminal.data["code"] == "INTERRUPTED"
    assert t.text == "one"
    assert len(upstream.generations()) == 1
    assert wait_until_idle(client, cid)["messages"][-1]["content"] == "one"


def test_a_fallback_chain_moves_to_the_next_model(serve: ServeFactory, upstream: Upstream) -> None:
    server = serve(
        providers=upstream.config(),
        aliases={"auto/best": [upstream.model("broken"), upstream.model("backup")]},
    )
    upstream.fake.script("broken", Script(status=401))
    upstream.fake.script("backup", Script(tokens=["from ", "backup"]))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        models = client.get("/api/v1/models").json()["data"]
        assert {"id": "auto/best", "provider": "auto", "default": False} in models
        cid = new_conversation(client, model="auto/best")
        t = stream(client, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "x"})
        assert t.status == 200
        assert t.text == "from backup"
        assert t.terminal.data["model"] == upstream.model("backup")
        stored = wait_until_idle(client, cid)
    assert stored["model"] == "auto/best"
    assert stored["messages"][-1]["model"] == upstream.model("backup")
    assert len(upstream.generations()) == 2


# -- without streaming ----------------------------------------------------------------------


def test_a_provider_configured_not_to_stream_still_sends_token_events(
    serve: ServeFactory, upstream: Upstream
) -> None:
    server = serve(providers=upstream.config(streaming=False))
    upstream.fake.script("m", Script(tokens=["whole ", "reply ", "at once"]))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        t = send(client, cid, upstream.model("m"))
        assert t.status == 200
        # one log entry per piece (a reader behind the stream may get them merged)
        assert t.terminal.id is not None
        assert t.events[0].id == 1
        assert t.terminal.id - 2 >= 2
        assert {e.type for e in t.events[1:-1]} == {"token"}
        assert t.text == "whole reply at once"
        assert t.terminal.data["usage"]["promptTokens"] == PROMPT_TOKENS
        stored = wait_until_idle(client, cid)["messages"][-1]
    assert (stored["status"], stored["content"]) == ("complete", "whole reply at once")
    (request,) = upstream.generations()
    assert not upstream.streamed(request)


def test_a_model_listed_as_non_streaming(serve: ServeFactory, upstream: Upstream) -> None:
    server = serve(providers=upstream.config(non_streaming_models=["batch"]))
    upstream.fake.script("batch", Script(tokens=["a ", "b"]))
    upstream.fake.script("live", Script(tokens=["c ", "d"]))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        assert send(client, cid, upstream.model("batch")).text == "a b"
        assert send(client, cid, upstream.model("live")).text == "c d"
    assert [upstream.streamed(r) for r in upstream.generations()] == [False, True]


@pytest.mark.parametrize("upstream", ["openai", "ollama"], indirect=True)
def test_an_upstream_that_cannot_stream_is_asked_again_without(
    client: httpx2.Client, upstream: Upstream
) -> None:
    """Only OpenAI-compatible servers (vLLM, LM Studio, hosted clones) refuse to stream."""
    upstream.fake.script("m", Script(tokens=["no ", "stream"], refuse_streaming=True))
    cid = new_conversation(client)
    first = send(client, cid, upstream.model("m"))
    assert (first.status, first.text) == (200, "no stream")
    second = send(client, cid, upstream.model("m"), "again")
    assert second.text == "no stream"
    # the first reply asked twice (refused, then whole); the second asked once, unstreamed
    assert [upstream.streamed(r) for r in upstream.generations()] == [True, False, False]
    assert [m["content"] for m in conversation(client, cid)["messages"]] == [
        "hi",
        "no stream",
        "again",
        "no stream",
    ]
