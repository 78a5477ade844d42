"""SSE bodies are sent from the app's outermost layer (``api.streaming.HandOff``): the
middleware stack, FastAPI's request handling and the endpoint are released once the
response has started, tokens are written straight to uvicorn's connection from the
generation's task, and the response still works where neither is possible."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from runnel.api.streaming import EventStreamResponse, Message, Receive, Scope, Send, direct_writer
from runnel.broker import StreamMeta
from runnel.broker.memory import MemoryBroker
from runnel.events import Complete
from runnel.settings import Settings
from runnel.sse import NativeEncoder
from tests.conftest import TEST_SETTINGS
from tests.server import start
from tests.sse_client import open_stream, stream


class Probe:
    """An object only the request's scope refers to."""


class ScopeProbe:
    """A middleware inside the stack: leaves a ``Probe`` in the scope it is given."""

    def __init__(self, app: Any, refs: list[weakref.ref[Probe]]) -> None:
        self.app = app
        self.refs = refs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            probe = Probe()
            scope["test.probe"] = probe
            self.refs.append(weakref.ref(probe))
            del probe
        await self.app(scope, receive, send)


def test_the_stack_is_released_while_the_body_streams(tmp_path: Path) -> None:
    refs: list[weakref.ref[Probe]] = []
    settings = Settings(
        **{**TEST_SETTINGS, "demo_tokens_per_second": 20.0, "demo_reply_tokens": 30},
        data_dir=tmp_path,
    )
    server = start(settings, prepare=lambda app: app.add_middleware(ScopeProbe, refs=refs))
    try:
        with (
            httpx2.Client(base_url=server.url, timeout=30) as client,
            open_stream(
                client,
                "POST",
                "/api/v1/messages",
                headers={"x-request-id": "handoff-1"},
                json={"message": "hi"},
            ) as live,
        ):
            head = live.take(2)  # status and the first token: the body is streaming
            gc.collect()
            assert len(refs) == 1
            assert refs[0]() is None, "the stack's scope outlived the start of the stream"
            rest = live.rest()
    finally:
        server.stop()
    assert head.status == 200
    assert head.headers["x-request-id"] == "handoff-1"  # the middlewares saw the start
    assert [e.type for e in head.events] == ["status", "token"]
    assert rest.terminal.type == "complete"
    assert rest.terminal.data["finishReason"] == "stop"


def test_without_a_handoff_the_response_sends_its_body_itself() -> None:
    broker = MemoryBroker(retention=60)

    async def endpoint(request: Request) -> EventStreamResponse:
        meta = StreamMeta("s1", "u", None, "m1", "demo/x")
        await broker.create(meta)
        broker.append("s1", "Hello")
        broker.append("s1", " world")
        broker.append("s1", Complete("demo/x", "stop", "m1", None, 2, None))
        first = await broker.read("s1", 0, timeout=0)
        assert first is not None
        return EventStreamResponse(
            broker, "s1", first, heartbeat=5.0, send_timeout=5.0, encoder=NativeEncoder(1000)
        )

    app = Starlette(routes=[Route("/events", endpoint)])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "server failed to start"
        assert time.monotonic() < deadline, "server failed to start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            t = stream(client, "GET", "/events")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert t.status == 200
    assert t.retry == 1000
    assert t.text == "Hello world"
    assert t.terminal.type == "complete"
    assert t.ids == [2, 3]  # the two tokens merged into one event carrying the last id


def test_tokens_are_written_straight_to_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed: list[int] = []
    original = EventStreamResponse._push

    def counting_push(self: EventStreamResponse, text: str, event_id: int) -> bool:
        taken = original(self, text, event_id)
        if taken:
            pushed.append(event_id)
        return taken

    monkeypatch.setattr(EventStreamResponse, "_push", counting_push)
    settings = Settings(
        **{**TEST_SETTINGS, "demo_tokens_per_second": 100.0, "demo_reply_tokens": 20},
        data_dir=tmp_path,
    )
    server = start(settings)
    try:
        with httpx2.Client(base_url=server.url, timeout=30) as client:
            t = stream(client, "POST", "/api/v1/messages", json={"message": "hi"})
            whole = client.post("/api/v1/messages", json={"message": "hi"}).json()
    finally:
        server.stop()
    assert t.terminal.data["finishReason"] == "stop"
    assert t.text == whole["content"]
    ids = [e.id for e in t.events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # paced tokens reach a waiting reader one at a time: most of them by a push
    assert len(pushed) >= 10
    assert set(pushed) <= set(ids)


def test_a_direct_writer_only_for_uvicorns_httptools_connection() -> None:
    async def plain_send(message: Message) -> None:
        return None

    assert direct_writer(plain_send) is None
