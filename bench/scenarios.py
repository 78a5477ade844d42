"""The scenarios: the same load against each target, measured the same way.

Targets: ``direct`` (the load generator talks to the fake upstream itself — the floor, and
the proof that the load generator keeps up), ``relay`` (bench/simple_relay.py, the
straightforward app) and ``runnel`` (``python -m runnel serve``, stateless endpoint
``POST /api/v1/messages``); ``runnel-redis``, only when asked for, is Runnel with its event
logs in Redis; ``runnel-openai`` and ``runnel-responses`` are Runnel through its OpenAI
dialects (``POST /v1/chat/completions``, ``POST /v1/responses`` with ``store: false``: both
unstored, like the stateless endpoint); ``runnel-ui`` is the AI SDK's ``POST
/api/v1/ui/chat``, a new chat per stream (stored: a conversation and its messages are
written, unlike the other targets). Each scenario starts a fresh server process per
target, pinned to CPU 0, and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    HARNESS_CPU,
    SERVER_CPU,
    Child,
    clean_env,
    cpu_busy_s,
    free_port,
    pinning,
    python,
    wait_ready,
)
from bench.load import (
    Request,
    Run,
    http_request,
    open_stream,
    run_streams,
    simple_get,
    summarize,
)
from bench.upstream import model_name

TARGETS = (
    "direct",
    "relay",
    "runnel",
    "runnel-redis",
    "runnel-openai",
    "runnel-responses",
    "runnel-ui",
)
DEFAULT_TARGETS = ("direct", "relay", "runnel")  # the others only when asked for
RUNNEL_TARGETS = TARGETS[2:]
IDLE_BATCH = 500  # readers connecting at once (under the listen backlog)


@dataclass
class Config:
    quick: bool = False
    gap_ms: float = 40.0
    held_p99_ms: float = 40.0
    # single
    single_samples: int = 100
    single_tokens: int = 10
    single_rate: float = 100.0
    # hundred
    hundred_streams: int = 100
    hundred_tokens: int = 200
    hundred_ramp_s: float = 1.0
    # saturation
    levels: tuple[int, ...] = (50, 100, 150, 200, 300, 400, 500, 700, 1000, 1500, 2000)
    start_rate: float = 100.0  # streams started per second while ramping up
    all_in_s: float = 3.0  # seconds during which every stream of a level is open
    # burst
    burst_streams: int = 20
    burst_tokens: int = 2000
    # idle
    idle_readers: int = 10_000
    idle_streams: int = 1000
    idle_hold_s: float = 20.0
    rate: float = 50.0
    # runnel-redis: Runnel with the Redis broker (the event logs in Redis, as with --workers)
    redis_url: str = "redis://127.0.0.1:6379/14"

    @classmethod
    def quick_config(cls) -> Config:
        return cls(
            quick=True,
            single_samples=10,
            single_tokens=10,
            hundred_streams=20,
            hundred_tokens=50,
            hundred_ramp_s=0.2,
            levels=(20, 50),
            all_in_s=1.0,
            burst_streams=4,
            burst_tokens=300,
            idle_readers=300,
            idle_streams=10,
            idle_hold_s=2.0,
        )


@dataclass
class Target:
    name: str
    port: int
    child: Child | None

    def request(self, model: str, expected: int) -> Request:
        if self.name == "direct":
            body: dict[str, Any] = {
                "model": model,
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "hi"}],
            }
            path = "/v1/chat/completions"
            kind = "openai"
            headers = [("accept", "text/event-stream"), ("authorization", "Bearer sk-bench")]
        elif self.name == "runnel-openai":
            body = {
                "model": f"openai/{model}",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
            path = "/v1/chat/completions"
            kind = "openai"
            headers = [("accept", "text/event-stream")]
        elif self.name == "runnel-responses":
            body = {"model": f"openai/{model}", "stream": True, "store": False, "input": "hi"}
            path = "/v1/responses"
            kind = "responses"
            headers = [("accept", "text/event-stream")]
        elif self.name == "runnel-ui":
            user = {"id": "u", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
            body = {"id": uuid.uuid4().hex, "messages": [user], "model": f"openai/{model}"}
            path = "/api/v1/ui/chat"
            kind = "ui"
            headers = [("accept", "text/event-stream")]
        else:
            body = {"message": "hi", "model": f"openai/{model}"}
            path = "/api/v1/messages"
            kind = "events"
            headers = [("accept", "text/event-stream")]
        return Request(http_request("POST", path, self.port, body, headers), kind, expected)


@dataclass
class Bench:
    """What every scenario needs: the upstream, a scratch directory, the configuration."""

    config: Config
    upstream: Child
    upstream_port: int
    scratch: Path
    log: Callable[[str], None] = print

    @asynccontextmanager
    async def target(self, name: str, label: str) -> AsyncIterator[Target]:
        if name == "direct":
            yield Target("direct", self.upstream_port, None)
            return
        port = free_port()
        base = f"http://127.0.0.1:{self.upstream_port}/v1"
        workdir = self.scratch / f"{label}-{name}"
        workdir.mkdir(parents=True, exist_ok=True)
        if name in RUNNEL_TARGETS:
            redis = {"RUNNEL_REDIS_URL": self.config.redis_url} if name == "runnel-redis" else {}
            env = clean_env(
                RUNNEL_DATA_DIR=str(workdir / "data"),
                OPENAI_BASE_URL=base,
                OPENAI_API_KEY="sk-bench",
                RUNNEL_LOG_LEVEL="WARNING",
                RUNNEL_LOG_FORMAT="text",
                RUNNEL_MAX_ACTIVE_STREAMS="1000000",
                RUNNEL_SHUTDOWN_GRACE="1",
                **redis,
            )
            argv = [python(), "-m", "runnel", "serve", "--port", str(port)]
        else:
            env = clean_env(BENCH_UPSTREAM=base)
            argv = [
                python(),
                "-m",
                "uvicorn",
                "bench.simple_relay:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--backlog",
                "4096",
            ]
        child = Child(name, argv, env, workdir / "server.log").start(SERVER_CPU)
        try:
            await wait_ready(child, port, "/healthz")
            if pinning() and child.affinity() != [SERVER_CPU]:
                raise RuntimeError(f"{name} is not pinned to CPU {SERVER_CPU}: {child.affinity()}")
            target = Target(name, port, child)
            await warm_up(target)
            yield target
            if not child.alive():
                raise RuntimeError(f"{name} died during the scenario:\n{child.log_tail()}")
        finally:
            child.stop()


async def warm_up(target: Target) -> None:
    """A few streams first: imports, connection pools and caches are not what we measure."""
    model = model_name(500, 10)
    for _ in range(5):
        request = [target.request(model, 10)]
        run = await run_streams(target.port, request, [0.0], deadline=20)
        summary = summarize(run, request)
        if summary["errors"]:
            raise RuntimeError(f"warm-up failed: {summary['error_kinds']}")
    requests = [target.request(model, 10) for _ in range(20)]
    await run_streams(target.port, requests, [0.0] * 20, deadline=30)


class Meter:
    """CPU and memory over one load run: the server's, the upstream's and our own."""

    def __init__(self, server: Child | None, upstream: Child) -> None:
        self.server = server
        self.upstream = upstream
        self.peak_rss = 0
        self._sampler: asyncio.Task[None] | None = None

    def __enter__(self) -> Meter:
        if self.server is not None:
            self.rss_before = self.server.rss_kb()
            self.server.reset_hwm()
            self.cpu_before = self.server.cpu_s()
            self._sampler = asyncio.ensure_future(self._sample())
        self.up_before = self.upstream.cpu_s()
        self.own_before = time.process_time()
        self.busy_before = cpu_busy_s()
        self.wall_before = time.perf_counter()
        return self

    async def _sample(self) -> None:
        assert self.server is not None
        while True:
            self.peak_rss = max(self.peak_rss, self.server.rss_kb())
            await asyncio.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.wall_before
        self.result: dict[str, Any] = {
            "wall_s": wall,
            "upstream_cpu_s": self.upstream.cpu_s() - self.up_before,
            "loadgen_cpu_s": time.process_time() - self.own_before,
        }
        harness_cpu = self.result["upstream_cpu_s"] + self.result["loadgen_cpu_s"]
        self.result["harness_cpu_share"] = harness_cpu / wall
        busy = cpu_busy_s()
        if pinning() and busy:
            # what else ran on the two CPUs (other people's processes on a shared machine)
            own = {SERVER_CPU: 0.0, HARNESS_CPU: harness_cpu}
            if self.server is not None:
                own[SERVER_CPU] = self.server.cpu_s() - self.cpu_before
            for cpu, mine in own.items():
                used = busy.get(cpu, 0.0) - self.busy_before.get(cpu, 0.0)
                self.result[f"cpu{cpu}_other_share"] = max(0.0, used - mine) / wall
        if self.server is not None:
            if self._sampler is not None:
                self._sampler.cancel()
            hwm = max(self.server.hwm_kb(), self.peak_rss, self.server.rss_kb())
            self.result.update(
                server_cpu_s=self.server.cpu_s() - self.cpu_before,
                server_rss_before_kb=self.rss_before,
                server_rss_peak_kb=hwm,
                server_rss_after_kb=self.server.rss_kb(),
            )


async def measured_run(
    bench: Bench,
    target: Target,
    requests: Sequence[Request],
    offsets: Sequence[float],
    deadline: float,
) -> tuple[Run, dict[str, Any]]:
    """One load run with its summary and resource use (the window ends 0.5 s after the
    last stream, so work a server defers past the end — a last checkpoint — is counted)."""
    await upstream_stats(bench)  # resets its worst lag
    with Meter(target.child, bench.upstream) as meter:
        run = await run_streams(
            target.port, requests, offsets, deadline=deadline, gap_ms=bench.config.gap_ms
        )
        await asyncio.sleep(0.5)
    row = summarize(run, requests)
    row.update(meter.result)
    stats = await upstream_stats(bench)
    row["upstream_max_lag_ms"] = stats.get("max_lag_ms")
    row["upstream_max_gc_ms"] = stats.get("max_gc_ms")
    cpu = row.get("server_cpu_s")
    if cpu is not None and row["tokens_received"]:
        row["server_cpu_us_per_token"] = cpu / row["tokens_received"] * 1e6
    row["loadgen_cpu_us_per_token"] = (
        row["loadgen_cpu_s"] / row["tokens_received"] * 1e6 if row["tokens_received"] else None
    )
    return run, row


async def upstream_stats(bench: Bench) -> dict[str, Any]:
    """The fake upstream's counters; its worst lag and GC pause restart from zero."""
    try:
        _, body = await simple_get(bench.upstream_port, "/bench/stats")
        stats: dict[str, Any] = json.loads(body)
    except (OSError, TimeoutError, ValueError, IndexError):
        return {}
    return stats


def error_row(target: str, exc: BaseException, **extra: Any) -> dict[str, Any]:
    message = f"{type(exc).__name__}: {exc}".strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    short = lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1]}"
    return {"target": target, "failed": short[:240], "detail": message, **extra}


# -- scenarios ---------------------------------------------------------------------------


async def steady(
    bench: Bench, what: str, measure: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """``measure()``, and once more if other processes took CPU time from it; the less
    disturbed of the two is kept (the other's disturbance is recorded)."""
    first = await measure()
    if not disturbed(first) or bench.config.quick:
        return first
    bench.log(f"  (other load on the CPUs during {what}: again)")
    await asyncio.sleep(2.0)
    second = await measure()
    keep, other = (second, first) if disturbance(second) < disturbance(first) else (first, second)
    keep["disturbed_attempt"] = {k: other[k] for k in DISTURBANCE_KEYS if k in other}
    return keep


async def single(bench: Bench, targets: Sequence[str]) -> dict[str, Any]:
    """One stream at a time: time to first token and per-token latency, no contention."""
    cfg = bench.config
    model = model_name(cfg.single_rate, cfg.single_tokens)
    rows: list[dict[str, Any]] = []
    for name in targets:
        bench.log(f"  single: {name}")
        try:
            async with bench.target(name, "single") as target:

                async def measure(target: Target = target) -> dict[str, Any]:
                    runs: list[Run] = []
                    with Meter(target.child, bench.upstream) as meter:
                        for _ in range(cfg.single_samples):
                            request = target.request(model, cfg.single_tokens)
                            runs.append(
                                await run_streams(
                                    target.port, [request], [0.0], deadline=30, gap_ms=cfg.gap_ms
                                )
                            )
                    merged = Run(
                        streams=[s for r in runs for s in r.streams],
                        latencies=[x for r in runs for x in r.latencies],
                    )
                    row = summarize(merged, [s.request for s in merged.streams])
                    row.update(meter.result)
                    if target.child is not None and row["tokens_received"]:
                        cpu = row["server_cpu_s"]
                        row["server_cpu_us_per_token"] = cpu / row["tokens_received"] * 1e6
                    row["tokens_per_s"] = None  # sequential requests: not a throughput
                    return row

                rows.append({"target": name, **await steady(bench, f"single {name}", measure)})
        except Exception as exc:  # noqa: BLE001 - a broken target is an error row
            rows.append(error_row(name, exc, streams=cfg.single_samples))
    result: dict[str, Any] = {
        "config": {
            "requests": cfg.single_samples,
            "tokens": cfg.single_tokens,
            "rate": cfg.single_rate,
        },
        "rows": rows,
    }
    result["added"] = added_vs_direct(rows)
    return result


def added_vs_direct(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What each relay adds to the direct run's TTFT and token latency (same run)."""
    by = {r["target"]: r for r in rows if "failed" not in r}
    direct = by.get("direct")
    added: dict[str, Any] = {}
    if direct is None:
        return added
    for name, row in by.items():
        if name == "direct":
            continue
        entry: dict[str, Any] = {}
        for metric in ("ttft_ms", "token_latency_ms"):
            for q in ("p50", "p99"):
                mine, base = row[metric][q], direct[metric][q]
                if mine is not None and base is not None:
                    entry[f"{metric}_{q}"] = mine - base
        added[name] = entry
    return added


def paced(
    target: Target, streams: int, tokens: int, rate: float, ramp: float
) -> tuple[list[Request], list[float]]:
    model = model_name(rate, tokens)
    requests = [target.request(model, tokens) for _ in range(streams)]
    offsets = [ramp * i / streams for i in range(streams)]
    return requests, offsets


async def hundred(bench: Bench, targets: Sequence[str]) -> dict[str, Any]:
    """100 concurrent streams at 50 tokens/s."""
    cfg = bench.config
    n, tokens = cfg.hundred_streams, cfg.hundred_tokens
    rows: list[dict[str, Any]] = []
    for name in targets:
        bench.log(f"  hundred: {name}")
        try:
            async with bench.target(name, "hundred") as target:

                async def measure(target: Target = target) -> dict[str, Any]:
                    requests, offsets = paced(target, n, tokens, cfg.rate, cfg.hundred_ramp_s)
                    deadline = cfg.hundred_ramp_s + tokens / cfg.rate + 30
                    _, row = await measured_run(bench, target, requests, offsets, deadline)
                    per_stream(row, n)
                    return row

                rows.append({"target": name, **await steady(bench, f"hundred {name}", measure)})
        except Exception as exc:  # noqa: BLE001 - a broken target is an error row
            rows.append(error_row(name, exc, streams=n))
    return {
        "config": {
            "streams": n,
            "tokens": tokens,
            "rate": cfg.rate,
            "ramp_s": cfg.hundred_ramp_s,
        },
        "rows": rows,
        "added": added_vs_direct(rows),
    }


def per_stream(row: dict[str, Any], streams: int) -> None:
    if "server_rss_peak_kb" in row and streams:
        growth = row["server_rss_peak_kb"] - row["server_rss_before_kb"]
        row["server_kb_per_stream"] = growth / streams


DISTURBANCE_KEYS = ("cpu0_other_share", "cpu1_other_share")


def disturbed(row: dict[str, Any]) -> bool:
    """Whether other processes used more than 5% of CPU 0 or 10% of CPU 1 in the run."""
    return row.get("cpu0_other_share", 0.0) > 0.05 or row.get("cpu1_other_share", 0.0) > 0.10


def disturbance(row: dict[str, Any]) -> float:
    return float(row.get("cpu0_other_share", 0.0)) + float(row.get("cpu1_other_share", 0.0)) / 2


def held(row: dict[str, Any], cfg: Config, *, gaps: bool = True) -> bool:
    """Every stream complete with every token, the per-token latency p99 within
    ``held_p99_ms``, and (``gaps``) no reader gap over ``gap_ms``."""
    p99 = row["token_latency_ms"]["p99"]
    return (
        row["errors"] == 0
        and row["lost"] == 0
        and (row["gaps_over"] == 0 or not gaps)
        and p99 is not None
        and p99 <= cfg.held_p99_ms
    )


@dataclass
class Climb:
    """One target's way up the saturation levels, under both readings of "held"."""

    held: int = 0  # highest level held (strict) before the first strict failure
    failed: int | None = None  # first level not held (strict); -1: the target broke
    held_p99: int = 0  # the same for the p99-only reading
    failed_p99: int | None = None


async def saturation(bench: Bench, targets: Sequence[str]) -> dict[str, Any]:
    """Rising concurrency at 50 tokens/s, per target, until a level is not held even by
    the p99 reading (so both readings of "held" get their answer)."""
    cfg = bench.config
    rows: list[dict[str, Any]] = []
    climbs: dict[str, Climb] = {}
    # the relays first; then the direct run up to the highest level a relay failed at, to
    # show whether that level was within the load generator's reach
    order = [t for t in targets if t != "direct"] + [t for t in targets if t == "direct"]
    for name in order:
        levels = list(cfg.levels)
        failed_at = [c.failed_p99 for c in climbs.values() if c.failed_p99 and c.failed_p99 > 0]
        if name == "direct" and failed_at:
            levels = [lvl for lvl in levels if lvl <= max(failed_at)]
        climbs[name] = await _climb(bench, name, levels, rows)
    rows.sort(key=lambda r: targets.index(r["target"]))
    summary: dict[str, Any] = {
        "held": {t: climbs[t].held for t in targets},
        "first_failing_level": {t: climbs[t].failed for t in targets},
        "held_p99": {t: climbs[t].held_p99 for t in targets},
        "first_failing_level_p99": {t: climbs[t].failed_p99 for t in targets},
    }
    for key in ("held", "held_p99"):
        relay, runnel = summary[key].get("relay"), summary[key].get("runnel")
        if relay and runnel is not None:
            summary[f"runnel_over_relay_{key}"] = runnel / relay
    return {
        "config": {
            "levels": list(cfg.levels),
            "rate": cfg.rate,
            "start_rate": cfg.start_rate,
            "all_in_s": cfg.all_in_s,
            "gap_ms": cfg.gap_ms,
            "held_p99_ms": cfg.held_p99_ms,
        },
        "rows": rows,
        "summary": summary,
    }


async def _climb(
    bench: Bench, name: str, levels: Sequence[int], rows: list[dict[str, Any]]
) -> Climb:
    """Run ``levels`` in order on one server until one is not held even by p99."""
    cfg = bench.config
    climb = Climb()
    try:
        async with bench.target(name, "saturation") as target:
            baseline = target.child.rss_kb() if target.child is not None else 0
            for level in levels:
                ramp = max(0.2 if cfg.quick else 1.0, level / cfg.start_rate)
                tokens = math.ceil(cfg.rate * (ramp + cfg.all_in_s))
                deadline = ramp + tokens / cfg.rate + 30
                earlier: dict[str, Any] | None = None
                for attempt in (1, 2):
                    bench.log(f"  saturation: {name} {level} streams × {tokens} tokens")
                    requests, offsets = paced(target, level, tokens, cfg.rate, ramp)
                    _, row = await measured_run(bench, target, requests, offsets, deadline)
                    if target.child is not None:
                        growth = row["server_rss_peak_kb"] - baseline
                        row["server_kb_per_stream"] = growth / level
                    row.update(
                        held=held(row, cfg),
                        held_p99=held(row, cfg, gaps=False),
                        tokens=tokens,
                        ramp_s=ramp,
                    )
                    if earlier is not None:
                        row["disturbed_attempt"] = earlier
                    if row["held"] or attempt == 2 or not disturbed(row) or cfg.quick:
                        break
                    # other processes took CPU time from this run: measure the level again
                    bench.log(f"  (other load on the CPUs during {name}@{level}: again)")
                    earlier = {k: row[k] for k in DISTURBANCE_KEYS if k in row}
                    earlier["token_latency_p99_ms"] = row["token_latency_ms"]["p99"]
                    earlier["gaps_over"] = row["gaps_over"]
                    await asyncio.sleep(2.0)
                rows.append({"target": name, "level": level, **row})
                if climb.failed is None:
                    if row["held"]:
                        climb.held = level
                    else:
                        climb.failed = level
                if not row["held_p99"]:
                    climb.failed_p99 = level
                    return climb
                climb.held_p99 = level
                await asyncio.sleep(1.0)
    except Exception as exc:  # noqa: BLE001 - a broken target is an error row
        rows.append(error_row(name, exc))
        if climb.failed is None:
            climb.failed = -1
        if climb.failed_p99 is None:
            climb.failed_p99 = -1
    return climb


async def burst(bench: Bench, targets: Sequence[str]) -> dict[str, Any]:
    """Streams whose upstream sends as fast as it is read: raw throughput and CPU/token."""
    cfg = bench.config
    n, tokens = cfg.burst_streams, cfg.burst_tokens
    rows: list[dict[str, Any]] = []
    for name in targets:
        bench.log(f"  burst: {name}")
        try:
            async with bench.target(name, "burst") as target:

                async def measure(target: Target = target) -> dict[str, Any]:
                    requests, offsets = paced(target, n, tokens, 0, 0.0)
                    _, row = await measured_run(bench, target, requests, offsets, 120.0)
                    return row

                rows.append({"target": name, **await steady(bench, f"burst {name}", measure)})
        except Exception as exc:  # noqa: BLE001 - a broken target is an error row
            rows.append(error_row(name, exc, streams=n))
    return {"config": {"streams": n, "tokens": tokens}, "rows": rows}


async def idle(bench: Bench, targets: Sequence[str]) -> dict[str, Any]:
    """Many SSE readers attached to live streams that are not sending (Runnel only).

    ``idle_streams`` streams start; their upstream sends one token and then holds. Then
    ``idle_readers`` readers attach to them (``GET /api/v1/streams/{id}``, spread evenly),
    each replays the first token, and all wait ``idle_hold_s`` seconds (past a heartbeat
    round). Then the upstream is released: two more tokens and ``complete`` must reach
    every reader, which proves each connection was still open and served."""
    cfg = bench.config
    if "runnel" not in targets:
        return {"skipped": "needs the runnel target", "rows": []}
    bench.log(f"  idle: {cfg.idle_readers} readers on {cfg.idle_streams} streams")
    tokens = 3
    try:
        async with bench.target("runnel", "idle") as target:
            assert target.child is not None
            row = await _idle(bench, target, tokens)
    except Exception as exc:  # noqa: BLE001 - a broken target is an error row
        row = error_row("runnel", exc, streams=cfg.idle_readers)
    return {
        "config": {
            "readers": cfg.idle_readers,
            "streams": cfg.idle_streams,
            "hold_s": cfg.idle_hold_s,
        },
        "rows": [row],
    }


async def _idle(bench: Bench, target: Target, tokens: int) -> dict[str, Any]:
    cfg = bench.config
    server = target.child
    assert server is not None
    gap_ns = int(cfg.gap_ms * 1e6)
    model = model_name(cfg.rate, tokens, hold=True)
    rss_start, cpu_start = server.rss_kb(), server.cpu_s()
    writers = [target.request(model, tokens) for _ in range(cfg.idle_streams)]
    writer_run = Run()
    readers_run = Run()
    try:
        for request in writers:
            await open_stream(target.port, request, writer_run, gap_ns)
        async with asyncio.timeout(60):
            await asyncio.gather(*(s.attached for s in writer_run.streams))
        stream_ids = [s.stream_id for s in writer_run.streams if s.stream_id and s.t_first]
        if not stream_ids:
            raise RuntimeError(f"no stream started: {summarize(writer_run, writers)}")
        rss_streams = server.rss_kb()
        headers = [("accept", "text/event-stream")]
        t_open = time.perf_counter()
        for first in range(0, cfg.idle_readers, IDLE_BATCH):
            attach: list[asyncio.Future[None]] = []
            for i in range(first, min(first + IDLE_BATCH, cfg.idle_readers)):
                path = f"/api/v1/streams/{stream_ids[i % len(stream_ids)]}"
                data = http_request("GET", path, target.port, None, headers)
                stream = await open_stream(
                    target.port, Request(data, "events", tokens), readers_run, gap_ns
                )
                attach.append(stream.attached)
            try:
                async with asyncio.timeout(60):
                    await asyncio.gather(*attach)
            except TimeoutError:
                break
        open_s = time.perf_counter() - t_open
        attached = sum(1 for s in readers_run.streams if s.t_first and not s.done.done())
        rss_attached = server.rss_kb()
        cpu_hold = server.cpu_s()
        await asyncio.sleep(cfg.idle_hold_s)
        hold_cpu = server.cpu_s() - cpu_hold
        still_open = sum(1 for s in readers_run.streams if s.t_first and not s.done.done())
        with_ping = sum(1 for s in readers_run.streams if s.pings)
        rss_held = server.rss_kb()
        readers_run.latencies.clear()  # from here on: the released tokens only
        t_release = time.perf_counter()
        await simple_get(bench.upstream_port, "/bench/release", method="POST")
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(s.done for s in readers_run.streams))
        except TimeoutError:
            pass
        fanout_s = time.perf_counter() - t_release
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(*(s.done for s in writer_run.streams))
    finally:
        for s in readers_run.streams + writer_run.streams:
            s.abort("timeout")
    summary = summarize(readers_run, [s.request for s in readers_run.streams])
    summary["lost"] += (cfg.idle_readers - len(readers_run.streams)) * tokens
    return {
        "target": "runnel",
        **summary,
        "streams": cfg.idle_readers,
        "readers_opened": len(readers_run.streams),
        "readers_attached": attached,
        "readers_open_after_hold": still_open,
        "readers_with_ping": with_ping,
        "writers": len(writers),
        "writers_completed": summarize(writer_run, writers)["completed"],
        "open_s": open_s,
        "hold_server_cpu_s": hold_cpu,
        "fanout_s": fanout_s,
        "server_rss_start_kb": rss_start,
        "server_rss_streams_kb": rss_streams,
        "server_rss_attached_kb": rss_attached,
        "server_rss_held_kb": rss_held,
        "server_rss_peak_kb": server.hwm_kb(),
        "server_kb_per_connection": (rss_held - rss_streams) / max(1, still_open),
        "server_kb_per_quiet_stream": (rss_streams - rss_start) / max(1, len(stream_ids)),
        "server_cpu_s": server.cpu_s() - cpu_start,
    }


SCENARIOS: dict[str, Callable[[Bench, Sequence[str]], Any]] = {
    "single": single,
    "hundred": hundred,
    "saturation": saturation,
    "burst": burst,
    "idle": idle,
}
