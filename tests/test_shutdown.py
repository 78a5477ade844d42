"""SIGTERM: streams finish within the grace period, or are stored ``interrupted``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from tests.helpers import new_conversation
from tests.processes import runnel_process
from tests.sse_client import Transcript, open_stream


def sigterm_mid_stream(
    process: subprocess.Popen[str], url: str, after: int
) -> tuple[str, Transcript, Transcript]:
    """Start a reply, read ``after`` events, send SIGTERM, read the rest; wait for the exit."""
    with httpx2.Client(base_url=url, timeout=30) as client:
        cid = new_conversation(client)
        with open_stream(
            client, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}
        ) as live:
            head = live.take(after)
            process.send_signal(signal.SIGTERM)
            tail = live.rest()
    # uvicorn re-raises the signal after its graceful shutdown
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    return cid, head, tail


def test_sigterm_lets_a_short_stream_finish(tmp_path: Path) -> None:
    output: list[str] = []
    with runnel_process(
        tmp_path, output, demo_tokens_per_second="20", demo_reply_tokens="30", shutdown_grace="10"
    ) as (process, url):
        cid, head, tail = sigterm_mid_stream(process, url, 3)
    assert tail.terminal.data["finishReason"] == "stop"
    text = head.text + tail.text
    stream_id = head.events[0].data["streamId"]
    lines = [json.loads(line) for line in output if line.startswith("{")]
    mine = {line["message"]: line for line in lines if line.get("streamId") == stream_id}
    assert set(mine) >= {"stream started", "first token", "stream ended"}
    assert all(line["conversationId"] == cid for line in mine.values())
    assert all(line.get("requestId") for line in mine.values())
    assert mine["first token"]["ttftMs"] >= 0
    ended = mine["stream ended"]
    assert (ended["outcome"], ended["tokens"]) == ("stop", 30)
    assert ended["durationMs"] > 0
    with runnel_process(tmp_path) as (_, url), httpx2.Client(base_url=url) as client:
        message = client.get(f"/api/v1/conversations/{cid}").json()["messages"][-1]
    assert message["status"] == "complete"
    assert message["content"] == text


def test_sigterm_interrupts_a_long_stream_after_the_grace_period(tmp_path: Path) -> None:
    with runnel_process(
        tmp_path, demo_tokens_per_second="20", demo_reply_tokens="2000", shutdown_grace="0.5"
    ) as (process, url):
        cid, head, tail = sigterm_mid_stream(process, url, 4)
    error = tail.terminal.data
    assert error["type"] == "error"
    assert error["code"] == "INTERRUPTED"
    assert error["partial"] is True
    text = head.text + tail.text
    with runnel_process(tmp_path) as (_, url), httpx2.Client(base_url=url) as client:
        stored = client.get(f"/api/v1/conversations/{cid}").json()
    message = stored["messages"][-1]
    assert message["status"] == "interrupted"
    assert message["error"]["code"] == "INTERRUPTED"
    assert message["content"] == text
    assert stored["activeStreamId"] is None


def test_a_killed_process_leaves_the_last_checkpoint(tmp_path: Path) -> None:
    with (
        runnel_process(
            tmp_path,
            demo_tokens_per_second="40",
            demo_reply_tokens="2000",
            checkpoint_interval="0.2",
        ) as (process, url),
        httpx2.Client(base_url=url, timeout=30) as client,
    ):
        cid = new_conversation(client)
        with open_stream(
            client, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}
        ) as live:
            head = live.take(30)
            time.sleep(0.5)
            process.kill()
            process.wait(timeout=30)
    with runnel_process(tmp_path) as (_, url), httpx2.Client(base_url=url) as client:
        stored = client.get(f"/api/v1/conversations/{cid}").json()
    message = stored["messages"][-1]
    assert message["status"] == "interrupted"
    assert message["error"]["code"] == "INTERRUPTED"
    assert message["content"].startswith(head.text)
    assert stored["activeStreamId"] is None


def test_sigterm_drains_the_workers_of_runnel_serve_workers(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """Each worker drains like a single process: a reply still running when the grace
    period ends is interrupted, and its reader gets the ``INTERRUPTED`` event (without the
    drain, uvicorn would cut the connection after its own timeout, with no terminal event)."""
    shared = {"database_url": postgres_url, "redis_url": redis_url}
    with runnel_process(
        tmp_path,
        workers=2,
        demo_tokens_per_second="20",
        demo_reply_tokens="2000",
        shutdown_grace="1",
        **shared,
    ) as (process, url):
        cid, head, tail = sigterm_mid_stream(process, url, 4)
    error = tail.terminal.data
    assert (error["type"], error["code"], error["partial"]) == ("error", "INTERRUPTED", True)
    with runnel_process(tmp_path, **shared) as (_, url), httpx2.Client(base_url=url) as client:
        stored = client.get(f"/api/v1/conversations/{cid}").json()
    message = stored["messages"][-1]
    assert message["status"] == "interrupted"
    assert message["content"] == head.text + tail.text


DRAIN_PROBE = """
import asyncio, os, signal, sys
from runnel.api.signals import drain_on_signals

async def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    called = []
    restore = drain_on_signals(lambda: called.append(1))
    os.kill(os.getpid(), signal.SIGINT)  # ignored before: still ignored, drain started
    await asyncio.sleep(0.1)
    print("after SIGINT", called, flush=True)
    restore()
    print("restored", signal.getsignal(signal.SIGINT) == signal.SIG_IGN, flush=True)
    drain_on_signals(lambda: None)
    os.kill(os.getpid(), signal.SIGTERM)  # the default action: the process ends
    await asyncio.sleep(5)
    print("still alive", flush=True)

asyncio.run(main())
"""


def test_the_drain_hook_keeps_the_signals_previous_actions() -> None:
    done = subprocess.run(
        [sys.executable, "-c", DRAIN_PROBE], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.splitlines() == ["after SIGINT [1]", "restored True"]
    assert done.returncode == -signal.SIGTERM
