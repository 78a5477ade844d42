"""Runnel's benchmark: the same streaming load against the fake upstream reached directly,
a deliberately simple relay, and Runnel; prints a table per scenario and writes JSON.

    scripts/bench                       # everything (3–5 minutes on 2 cores)
    scripts/bench --quick               # a smoke run with small numbers
    scripts/bench --scenario single --scenario hundred --targets direct,runnel

The server under test runs alone on CPU 0 (``taskset``); the fake upstream and the load
generator (this process) share CPU 1. See docs/performance.md for the method and results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import HARNESS_CPU, ROOT, Child, clean_env, free_port, python, wait_ready
from bench.scenarios import DEFAULT_TARGETS, SCENARIOS, TARGETS, Bench, Config
from bench.upstream import new_event_loop


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke run")
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated subset of direct,relay,runnel,runnel-redis (default: the "
        "first three; runnel-redis is Runnel with its event logs in Redis, see --redis-url)",
    )
    parser.add_argument(
        "--redis-url",
        help="the Redis of the runnel-redis target (default redis://127.0.0.1:6379/14)",
    )
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument(
        "--levels", help="saturation levels, comma-separated (default 50,100,150,…,2000)"
    )
    parser.add_argument("--idle-readers", type=int, help="idle connections (default 10000)")
    parser.add_argument("--idle-hold", type=float, help="seconds the idle readers wait")
    parser.add_argument("--samples", type=int, help="sequential requests of `single`")
    parser.add_argument("--gap-ms", type=float, help="the gap threshold (default 40 ms)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for other processes to leave both CPUs idle",
    )
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        parser.error(f"--targets: unknown {', '.join(unknown) or '(none)'}")
    args.target_list = [t for t in TARGETS if t in targets]
    return args


def make_config(args: argparse.Namespace) -> Config:
    config = Config.quick_config() if args.quick else Config()
    if args.levels:
        config.levels = tuple(int(x) for x in args.levels.split(",") if x.strip())
    if args.idle_readers is not None:
        config.idle_readers = args.idle_readers
    if args.idle_hold is not None:
        config.idle_hold_s = args.idle_hold
    if args.samples is not None:
        config.single_samples = args.samples
    if args.gap_ms is not None:
        config.gap_ms = args.gap_ms
    if args.redis_url:
        config.redis_url = args.redis_url
    return config


async def run_all(
    args: argparse.Namespace, config: Config, scratch: Path, results: dict[str, Any]
) -> None:
    """Every scenario asked for, its results added to ``results`` as it ends."""
    if args.wait_quiet > 0:
        log(f"waiting up to {args.wait_quiet:g} s for the CPUs to be quiet")
        load = await harness.wait_quiet(args.wait_quiet)
    else:
        load = await harness.background_load(1.0)
    shares = ", ".join(f"CPU {cpu} {share * 100:.0f}%" for cpu, share in sorted(load.items()))
    log(f"background load from other processes: {shares}")
    if any(share > 0.10 for share in load.values()):
        log("warning: other processes are busy; the numbers will be noisy")
    results["background_load"] = load
    port = free_port()
    upstream = Child(
        "upstream",
        [python(), "-m", "bench.upstream", "--port", str(port)],
        clean_env(),
        scratch / "upstream.log",
    ).start(HARNESS_CPU)
    await wait_ready(upstream, port, "/v1/models", timeout=30)
    bench = Bench(config, upstream, port, scratch, log=log)
    for name in args.scenario or list(SCENARIOS):
        log(f"scenario {name}")
        started = time.perf_counter()
        try:
            result = await SCENARIOS[name](bench, args.target_list)
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not end the run
            result = {"failed": f"{type(exc).__name__}: {exc}", "rows": []}
        result["duration_s"] = time.perf_counter() - started
        results[name] = result
        print_scenario(name, result, config)
        if not upstream.alive():
            raise RuntimeError(f"the fake upstream died:\n{upstream.log_tail()}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- tables ------------------------------------------------------------------------------

COLUMNS = [
    ("target", 12, "<"),
    ("streams", 7, ">"),
    ("ttft p50", 8, ">"),
    ("ttft p99", 8, ">"),
    ("lat p50", 7, ">"),
    ("lat p99", 7, ">"),
    ("lat max", 7, ">"),
    ("max gap", 7, ">"),
    ("gaps>", 5, ">"),
    ("lost", 6, ">"),
    ("errors", 6, ">"),
    ("tok/s", 7, ">"),
    ("µs/tok", 6, ">"),
    ("RSS MB", 6, ">"),
]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def cells(row: dict[str, Any]) -> list[str]:
    label = row["target"]
    if "level" in row:
        label = f"{row['target']}"
    streams = row.get("level", row.get("streams"))
    if "failed" in row:
        return [label, fmt(streams), f"FAILED: {row['failed']}"]
    ttft, lat = row["ttft_ms"], row["token_latency_ms"]
    rss = row.get("server_rss_peak_kb")
    return [
        label,
        fmt(streams),
        ms(ttft["p50"]),
        ms(ttft["p99"]),
        ms(lat["p50"]),
        ms(lat["p99"]),
        ms(lat["max"]),
        ms(row["max_gap_ms"]),
        fmt(row["gaps_over"]),
        fmt(row["lost"]),
        fmt(row["errors"]),
        fmt(row["tokens_per_s"], 0),
        fmt(row.get("server_cpu_us_per_token"), 0),
        fmt(rss / 1024 if rss else None, 0),
    ]


def table(rows: Sequence[dict[str, Any]], extra: Sequence[tuple[str, Any]] = ()) -> str:
    header = [c[0] for c in COLUMNS] + [name for name, _ in extra]
    widths = [c[1] for c in COLUMNS] + [max(len(name), 5) for name, _ in extra]
    aligns = [c[2] for c in COLUMNS] + [">" for _ in extra]
    lines = ["  ".join(f"{h:{a}{w}}" for h, w, a in zip(header, widths, aligns, strict=True))]
    for row in rows:
        values = cells(row)
        if "failed" in row:
            lines.append(f"{values[0]:<{widths[0]}}  {values[1]:>7}  {values[2]}")
            continue
        values += [fn(row) for _, fn in extra]
        lines.append(
            "  ".join(f"{v:{a}{w}}" for v, w, a in zip(values, widths, aligns, strict=True))
        )
    return "\n".join(lines)


def print_scenario(name: str, result: dict[str, Any], config: Config) -> None:
    print()
    cfg = result.get("config", {})
    titles = {
        "single": "single — {requests} sequential requests × {tokens} tokens at {rate:g} tok/s",
        "hundred": "hundred — {streams} concurrent streams × {tokens} tokens at {rate:g} tok/s",
        "saturation": "saturation — rising concurrency at {rate:g} tok/s until a level is not held",
        "burst": "burst — {streams} streams × {tokens} tokens, upstream sending without pause",
        "idle": "idle — {readers} SSE readers on {streams} live streams that send nothing",
    }
    try:
        print(titles[name].format(**cfg))
    except (KeyError, ValueError):
        print(name)
    if "failed" in result:
        print(f"  FAILED: {result['failed']}")
        return
    if "skipped" in result:
        print(f"  skipped: {result['skipped']}")
        return
    if name != "idle":
        print(
            "  (times in ms; lat = per-token latency; gaps> = reader gaps over "
            f"{config.gap_ms:g} ms not caused by the upstream;\n"
            "   µs/tok = server CPU per token; RSS = server peak)"
        )
    rows = result["rows"]
    if name == "saturation":
        print(
            table(
                rows,
                [
                    ("held", lambda r: "yes" if r.get("held") else "NO"),
                    ("p99 held", lambda r: "yes" if r.get("held_p99") else "NO"),
                ],
            )
        )
        summary = result["summary"]
        for target, level in summary["held"].items():
            fail = summary["first_failing_level"].get(target)
            p99 = summary["held_p99"].get(target)
            p99_fail = summary["first_failing_level_p99"].get(target)
            print(
                f"  {target}: held {level} streams (first not held: {fail or '-'}); "
                f"by p99 alone {p99} (first not held: {p99_fail or '-'})"
            )
        for key, what in (("held", "held"), ("held_p99", "held by p99 alone")):
            ratio = summary.get(f"runnel_over_relay_{key}")
            if ratio is not None:
                print(f"  runnel / relay, {what}: {ratio:.1f}×")
    elif name == "idle":
        print_idle(rows, result["config"])
    else:
        print(table(rows))
    for row in rows:
        if "failed" in row or row.get("error_kinds") in (None, {}):
            continue
        print(f"  {row['target']}: errors {row['error_kinds']}")
    added = result.get("added") or {}
    for target, entry in added.items():
        if entry:
            parts = [
                f"TTFT p50 {entry.get('ttft_ms_p50', 0):+.2f} ms",
                f"p99 {entry.get('ttft_ms_p99', 0):+.2f} ms",
                f"token latency p50 {entry.get('token_latency_ms_p50', 0):+.2f} ms",
                f"p99 {entry.get('token_latency_ms_p99', 0):+.2f} ms",
            ]
            print(f"  added by {target} (vs direct): " + ", ".join(parts))
    for row in rows:
        if "server_kb_per_stream" in row and name in ("hundred",):
            print(f"  {row['target']}: {row['server_kb_per_stream']:.1f} KB of RSS per stream")
    paused = [r for r in rows if r.get("upstream_gaps") and name != "idle"]
    if paused:
        counts = ", ".join(f"{label(r)} {r['upstream_gaps']}" for r in paused)
        print(
            f"  reader gaps over {config.gap_ms:g} ms the upstream caused (not counted): {counts}"
        )
    noisy = [r for r in rows if r.get("cpu0_other_share", 0) > 0.02]
    if noisy:
        share = ", ".join(f"{label(r)} {r['cpu0_other_share'] * 100:.0f}%" for r in noisy)
        print(f"  note: other processes used CPU 0 during: {share}")
    harness_rows = [r for r in rows if "harness_cpu_share" in r]
    if harness_rows:
        share = ", ".join(f"{label(r)} {r['harness_cpu_share'] * 100:.0f}%" for r in harness_rows)
        print(f"  CPU 1 busy (upstream + load generator): {share}")


def label(row: dict[str, Any]) -> str:
    return f"{row['target']}@{row['level']}" if "level" in row else str(row["target"])


def print_idle(rows: Sequence[dict[str, Any]], cfg: dict[str, Any]) -> None:
    for row in rows:
        if "failed" in row:
            print(f"  runnel FAILED: {row['failed']}")
            continue
        lat = row["token_latency_ms"]
        print(
            f"  readers: {row['streams']} asked, {row['readers_opened']} opened, "
            f"{row['readers_attached']} attached (replayed the first token), "
            f"{row['readers_open_after_hold']} still open after {cfg['hold_s']:g} s idle, "
            f"{row['readers_with_ping']} got a heartbeat, {row['completed']} completed; "
            f"errors {row['errors']}, tokens lost {row['lost']}"
        )
        print(
            f"  server RSS: {row['server_rss_start_kb'] / 1024:.0f} MB at start, "
            f"{row['server_rss_streams_kb'] / 1024:.0f} MB with the {row['writers']} streams, "
            f"{row['server_rss_held_kb'] / 1024:.0f} MB with the readers → "
            f"{row['server_kb_per_connection']:.1f} KB per idle connection; "
            f"{row['server_kb_per_quiet_stream']:.1f} KB per (quiet) stream"
        )
        print(
            f"  server CPU while idle: {row['hold_server_cpu_s']:.2f} s over {cfg['hold_s']:g} s; "
            f"opening the readers took {row['open_s']:.1f} s"
        )
        print(
            f"  after the release: last token to every reader p50 {ms(lat['p50'])} ms, "
            f"p99 {ms(lat['p99'])} ms, max {ms(lat['max'])} ms; all done in "
            f"{row['fanout_s'] * 1000:.0f} ms"
        )


# -- entry -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pinned": harness.pinning(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import uvloop

        info["uvloop"] = uvloop.__version__
    except ImportError:
        info["uvloop"] = None
    return info


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = make_config(args)
    harness.install_cleanup()
    harness.pin_self()
    fds = harness.raise_fd_limit(65536)
    if fds < config.idle_readers + 1000:
        log(f"open files limited to {fds}: fewer idle readers")
        config.idle_readers = max(100, fds - 1000)
    scratch = Path(tempfile.mkdtemp(prefix="runnel-bench-"))
    started = datetime.now(UTC)
    results: dict[str, Any] = {}
    status = 0
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(run_all(args, config, scratch, results))
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    except Exception as exc:  # noqa: BLE001 - report, clean up, exit non-zero
        log(f"benchmark failed: {type(exc).__name__}: {exc}")
        status = 1
    finally:
        harness.stop_all()
    background = results.pop("background_load", None)
    broken = [
        f"{name}/{row.get('target')}"
        for name, result in results.items()
        for row in [result, *result.get("rows", [])]
        if "failed" in row
    ]
    if broken and status == 0:
        log(f"failed: {', '.join(broken)}")
        status = 2
    output = {
        "status": {0: "complete", 130: "interrupted"}.get(status, "failed"),
        "failed": broken,
        "started": started.isoformat(timespec="seconds"),
        "background_load_before": background,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": harness.git_commit(),
        "machine": machine(),
        "config": asdict(config),
        "targets": args.target_list,
        "scenarios": results,
    }
    if results:
        write_json(output, args.json, started)
    if status == 0:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        log(f"server logs kept in {scratch}")
    return status


def write_json(output: dict[str, Any], path: Path | None, started: datetime) -> None:
    text = json.dumps(output, indent=2, default=str)
    if path is None:
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        (out / "latest.json").write_text(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    log(f"results written to {path}")


if __name__ == "__main__":
    sys.exit(main())
