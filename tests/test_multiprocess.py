"""Two Runnel processes sharing PostgreSQL and Redis: any process serves any stream."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.helpers import error_of, new_conversation
from tests.processes import free_port, runnel_process
from tests.sse_client import open_stream, stream

SLOW = {"demo_tokens_per_second": "25", "demo_reply_tokens": "400"}


@dataclass
class Pair:
    """Two Runnel processes on one PostgreSQL and one Redis, with a client for each."""

    process_a: subprocess.Popen[str]
    a: httpx2.Client
    b: httpx2.Client
    url_b: str


@pytest.fixture
def pair(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[Pair]:
    shared = {"database_url": postgres_url, "redis_url": redis_url, **SLOW}
    with ExitStack() as stack:
        process_a, url_a = stack.enter_context(runnel_process(tmp_path / "a", **shared))
        _, url_b = stack.enter_context(runnel_process(tmp_path / "b", **shared))
        a = stack.enter_context(httpx2.Client(base_url=url_a, timeout=30))
        b = stack.enter_context(httpx2.Client(base_url=url_b, timeout=30))
        yield Pair(process_a, a, b, url_b)


def wait_reply(url: str, cid: str, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        body = httpx2.get(f"{url}/api/v1/conversations/{cid}", timeout=10).json()
        last: dict[str, object] = body["messages"][-1]
        if body["activeStreamId"] is None and last["status"] != "streaming":
            return last
        assert time.monotonic() < deadline, "the reply did not finish"
        time.sleep(0.05)


def test_resume_cancel_and_busy_across_processes(pair: Pair) -> None:
    a, b, url_b = pair.a, pair.b, pair.url_b
    cid = new_conversation(a)
    with open_stream(
        a, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}
    ) as live:
        head = live.take(6)
        stream_id = head.events[0].data["streamId"]

        # B sees the conversation busy and refuses a second message
        assert b.get(f"/api/v1/conversations/{cid}").json()["activeStreamId"] == stream_id
        busy = b.post(f"/api/v1/conversations/{cid}/messages", json={"content": "again"})
        assert busy.status_code == 409
        assert error_of(busy) == "STREAM_IN_PROGRESS"

        # B resumes A's stream: no duplicate, no gap
        with open_stream(
            b,
            "GET",
            f"/api/v1/streams/{stream_id}",
            headers={"last-event-id": str(head.events[-1].id)},
        ) as resumed:
            more = resumed.take(4)
            assert more.events[0].id == (head.events[-1].id or 0) + 1
            # cancel on B stops the generation on A
            answer = b.post(f"/api/v1/streams/{stream_id}/cancel")
            assert answer.status_code == 202
            assert answer.json()["status"] == "cancelling"
            rest = resumed.rest()
        tail = live.rest()
    assert rest.terminal.data["finishReason"] == "cancelled"
    assert tail.terminal.data == rest.terminal.data
    whole = head.text + tail.text
    assert whole.startswith(head.text + more.text)
    reply = wait_reply(url_b, cid)
    assert reply["status"] == "cancelled"
    assert reply["content"] == whole
    assert len(whole) < 2000
    again = b.post(f"/api/v1/streams/{stream_id}/cancel")
    assert again.json()["status"] == "finished"
    # the conversation is free again, from either process
    done = stream(
        b,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "next"},
        stop_after=3,
    )
    assert done.status == 200


def test_a_killed_generator_is_interrupted_for_readers_elsewhere(pair: Pair) -> None:
    process_a, a, b, url_b = pair.process_a, pair.a, pair.b, pair.url_b
    cid = new_conversation(a)
    with open_stream(
        a, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}
    ) as live:
        head = live.take(40)
        stream_id = head.events[0].data["streamId"]
    time.sleep(1.2)  # at least one checkpoint
    with open_stream(
        b,
        "GET",
        f"/api/v1/streams/{stream_id}",
        headers={"last-event-id": str(head.events[-1].id)},
    ) as resumed:
        resumed.take(1)
        process_a.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        rest = resumed.rest()
        waited = time.monotonic() - killed_at
    error = rest.terminal.data
    assert error["type"] == "error"
    assert error["code"] == "INTERRUPTED"
    assert waited < 15, f"readers waited {waited:.1f} s"
    reply = wait_reply(url_b, cid)
    assert reply["status"] == "interrupted"
    assert reply["error"]["code"] == "INTERRUPTED"
    assert len(reply["content"]) >= len(head.text)
    assert reply["content"].startswith(head.text)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, Callable[[], None], Callable[[], None]]]:
    """A Redis of the test's own, with stop and start controls."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed, and CI must run this test")
        pytest.skip("redis-server is not installed")
    port = free_port()
    process: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        process.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp_path),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop() -> None:
        process[-1].kill()
        process[-1].wait(timeout=10)

    start()
    yield port, stop, start
    stop()


def test_a_redis_restart_mid_stream(
    tmp_path: Path,
    postgres_url: str,
    private_redis: tuple[int, Callable[[], None], Callable[[], None]],
) -> None:
    port, stop_redis, start_redis = private_redis
    settings = {
        "database_url": postgres_url,
        "redis_url": f"redis://127.0.0.1:{port}/0",
        "demo_tokens_per_second": "40",
        "demo_reply_tokens": "200",
    }
    with (
        runnel_process(tmp_path / "a", **settings) as (_, url),
        httpx2.Client(base_url=url, timeout=30) as client,
    ):
        cid = new_conversation(client)
        other = new_conversation(client)
        with open_stream(
            client, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}
        ) as live:
            live.take(5)
            stop_redis()
            started = time.monotonic()
            refused = client.post(f"/api/v1/conversations/{other}/messages", json={"content": "x"})
            assert refused.status_code == 503
            assert error_of(refused) == "OVERLOADED"
            assert "Redis" in refused.json()["error"]["message"]
            assert time.monotonic() - started < 10, "a new stream did not fail fast"
            assert client.get("/readyz").status_code == 503
            try:
                live.rest()  # ends (with or without a terminal event); never hangs
            except httpx2.TransportError:
                pass
        start_redis()
        reply = wait_reply(url, cid, timeout=30)
        assert reply["status"] == "complete"
        assert reply["content"].startswith("## Hello from Runnel")
        assert client.get("/readyz").status_code == 200
        fresh = stream(
            client, "POST", f"/api/v1/conversations/{other}/messages", json={"content": "y"}
        )
        assert fresh.terminal.data["finishReason"] == "stop"


def test_workers_share_every_stream(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    settings = {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "demo_tokens_per_second": "200",
    }
    with (
        runnel_process(tmp_path, workers=2, graceful=True, **settings) as (_, url),
        httpx2.Client(base_url=url, timeout=30) as client,
    ):
        for _ in range(6):  # new connections land on either worker
            cid = new_conversation(client)
            with httpx2.Client(base_url=url, timeout=30) as own:
                t = stream(
                    own, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}
                )
            assert t.terminal.data["finishReason"] == "stop"
            with httpx2.Client(base_url=url, timeout=30) as elsewhere:
                again = stream(elsewhere, "GET", f"/api/v1/streams/{t.events[0].data['streamId']}")
            assert again.text == t.text

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "RUNNEL_DATA_DIR": str(tmp_path),
        "RUNNEL_DATABASE_URL": "",
        "RUNNEL_REDIS_URL": redis_url,
    }
    refused = subprocess.run(
        [sys.executable, "-m", "runnel", "serve", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "PostgreSQL" in refused.stderr


def test_two_hundred_streams_over_two_processes(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    shared = {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "demo_tokens_per_second": "20",
        "demo_reply_tokens": "30",
    }
    with (
        runnel_process(tmp_path / "a", **shared) as (_, url_a),
        runnel_process(tmp_path / "b", **shared) as (_, url_b),
    ):
        urls = [url_a, url_b]
        with httpx2.Client(base_url=url_a, timeout=30) as client:
            cids = [new_conversation(client) for _ in range(200)]

        async def one(index: int, http: httpx2.AsyncClient) -> tuple[str, str, str]:
            url = f"{urls[index % 2]}/api/v1/conversations/{cids[index]}/messages"
            text, terminal = [], ""
            async with http.stream(
                "POST", url, json={"content": f"n{index}"}, headers={"accept": "text/event-stream"}
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                assert response.status_code == 200, response.text
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        if event["type"] == "token":
                            text.append(event["content"])
                        elif event["type"] in ("complete", "error"):
                            terminal = event.get("finishReason") or event["code"]
            return cids[index], "".join(text), terminal

        async def run_all() -> list[tuple[str, str, str]]:
            limits = httpx2.Limits(max_connections=250, max_keepalive_connections=0)
            async with httpx2.AsyncClient(timeout=60, limits=limits) as http:
                return await asyncio.gather(*(one(i, http) for i in range(200)))

        results = asyncio.run(run_all())
        assert [terminal for _, _, terminal in results] == ["stop"] * 200
        with httpx2.Client(base_url=url_b, timeout=30) as client:
            for cid, text, _ in results:
                reply = wait_reply(url_b, cid)
                assert reply["status"] == "complete"
                assert reply["content"] == text
                assert f"n{cids.index(cid)}" in text
