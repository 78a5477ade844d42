"""A first look at Runnel's relay cost: time to first token through Runnel against the
same fake OpenAI-compatible upstream reached directly, and N concurrent paced streams.

    .venv/bin/python -m bench.first_look [--streams 100] [--tokens 100] [--rate 50]

Runnel runs as its own process pinned to CPU 0; the upstream and this load generator share
the other CPU. Prints a table and writes bench/results/first_look.json. The full benchmark
(per-token latency, saturation search, idle connections) is yet to come; this one is kept
small on purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fakes.openai_server import FakeOpenAI, Script

ROOT = Path(__file__).resolve().parent.parent
TOKEN_MARKERS = (b'"type":"token"', b'"delta":{"content"', b'"delta":{"role":"assistant","content"')
END_MARKERS = (b'"type":"complete"', b"[DONE]", b'"type":"error"')


async def one_stream(port: int, path: str, body: dict[str, Any]) -> tuple[float, float, int]:
    """(time to first token, total time, token events seen) for one streamed request."""
    payload = json.dumps(body).encode()
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
        b"content-type: application/json\r\nauthorization: Bearer sk-bench\r\n"
        b"content-length: %d\r\n\r\n%s" % (path.encode(), len(payload), payload)
    )
    first = None
    tokens = 0
    tail = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        window = tail + chunk
        found = sum(window.count(m) for m in TOKEN_MARKERS) - sum(
            tail.count(m) for m in TOKEN_MARKERS
        )
        if found and first is None:
            first = time.perf_counter() - started
        tokens += found
        if any(m in window for m in END_MARKERS):
            break
        tail = window[-64:]
    writer.close()
    return first or float("nan"), time.perf_counter() - started, tokens


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def scenario(port: int, path: str, body: dict[str, Any], streams: int) -> dict[str, Any]:
    results = await asyncio.gather(*(one_stream(port, path, body) for _ in range(streams)))
    ttft = [r[0] * 1000 for r in results]
    return {
        "streams": streams,
        "ttft_ms_p50": statistics.median(ttft),
        "ttft_ms_p99": percentile(ttft, 0.99),
        "total_s_max": max(r[1] for r in results),
        "token_events": sum(r[2] for r in results),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    fake = FakeOpenAI().start()
    paced = Script(tokens=[f"t{i} " for i in range(args.tokens)], delay=1 / args.rate)
    fake.script("instant", Script(tokens=["hello", " world"]))
    fake.script("paced", paced)
    port = free_port()
    data = tempfile.mkdtemp(prefix="runnel-bench-")
    env = {
        **os.environ,
        "RUNNEL_DATA_DIR": data,
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": fake.url,
        "RUNNEL_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "runnel", "serve", "--port", str(port)]
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        command = ["taskset", "-c", "0", *command]
        os.sched_setaffinity(0, {1})
    server = subprocess.Popen(command, env=env, cwd=ROOT)  # noqa: ASYNC220 - started once
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        chat = "/v1/chat/completions"
        relay = "/api/v1/messages"
        direct_body = {
            "model": "instant",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        relay_body = {"message": "hi", "model": "openai/instant"}
        for _ in range(5):  # warm up both paths
            await one_stream(fake.port, chat, direct_body)
            await one_stream(port, relay, relay_body)
        single_direct = [
            (await one_stream(fake.port, chat, direct_body))[0] * 1000 for _ in range(args.samples)
        ]
        single_relay = [
            (await one_stream(port, relay, relay_body))[0] * 1000 for _ in range(args.samples)
        ]
        cpu_before = cpu_seconds(server.pid)
        paced_direct = await scenario(
            fake.port, chat, {**direct_body, "model": "paced"}, args.streams
        )
        paced_relay = await scenario(
            port, relay, {**relay_body, "model": "openai/paced"}, args.streams
        )
        cpu = cpu_seconds(server.pid) - cpu_before
        rss = rss_kb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        fake.stop()
    tokens = args.streams * args.tokens
    return {
        "single_stream_ttft_ms": {
            "direct_p50": statistics.median(single_direct),
            "runnel_p50": statistics.median(single_relay),
            "added_p50": statistics.median(single_relay) - statistics.median(single_direct),
            "runnel_p99": percentile(single_relay, 0.99),
        },
        "concurrent": {"direct": paced_direct, "runnel": paced_relay},
        "runnel_cpu_s": cpu,
        "runnel_cpu_us_per_token": cpu / tokens * 1e6,
        "runnel_rss_mb_after": rss / 1024,
        "config": vars(args),
    }


def report(result: dict[str, Any]) -> None:
    single = result["single_stream_ttft_ms"]
    print(f"{'single stream, time to first token':<44}{'p50 ms':>10}")
    print(f"{'  upstream direct':<44}{single['direct_p50']:>10.2f}")
    print(f"{'  through Runnel':<44}{single['runnel_p50']:>10.2f}")
    print(f"{'  added by Runnel':<44}{single['added_p50']:>10.2f}")
    print()
    cfg = result["config"]
    print(f"{cfg['streams']} concurrent streams x {cfg['tokens']} tokens at {cfg['rate']} tok/s")
    print(f"{'':<20}{'ttft p50':>10}{'ttft p99':>10}{'slowest s':>11}{'token events':>14}")
    for name in ("direct", "runnel"):
        row = result["concurrent"][name]
        print(
            f"{name:<20}{row['ttft_ms_p50']:>10.2f}{row['ttft_ms_p99']:>10.2f}"
            f"{row['total_s_max']:>11.2f}{row['token_events']:>14}"
        )
    cpu, per_token = result["runnel_cpu_s"], result["runnel_cpu_us_per_token"]
    print(f"Runnel CPU: {cpu:.2f} s = {per_token:.0f} µs/token all-in (HTTP, upstream request,")
    print(f"event log, SSE, checkpoints); RSS after: {result['runnel_rss_mb_after']:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--samples", type=int, default=50)
    outcome = asyncio.run(main(parser.parse_args()))
    report(outcome)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "first_look.json").write_text(json.dumps(outcome, indent=2))
