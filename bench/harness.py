"""Processes of a benchmark run: start, pin, measure (/proc) and always stop them.

Every child runs in its own session (process group), is registered in ``CHILDREN`` and is
killed with its group by ``stop_all`` — called from the runner's ``finally``, on SIGTERM
and at exit — so an interrupted or failed run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.load import simple_get

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
CHILDREN: list[Child] = []
SERVER_CPU = 0
HARNESS_CPU = 1


def _can_pin() -> bool:
    try:
        return {SERVER_CPU, HARNESS_CPU} <= os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return False


CAN_PIN = _can_pin()  # decided before this process pins itself to CPU 1


def pinning() -> bool:
    """Whether there are two CPUs to split: the server on CPU 0, the rest on CPU 1."""
    return CAN_PIN


def pin_self() -> None:
    if pinning():
        os.sched_setaffinity(0, {HARNESS_CPU})


def raise_fd_limit(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE for this process and its children; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(want, soft), hard):
        try:
            new_hard = max(hard, target) if hard != resource.RLIM_INFINITY else hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without settings that would change what is measured (Runnel's and
    the providers' variables, proxies), plus ``extra``."""
    dropped = ("RUNNEL_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "BENCH_")
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(dropped) and k.lower() not in proxies
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Child:
    """One process of the run (in its own process group), with its log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cpu: int | None) -> Child:
        argv = self.argv
        cpus = {cpu} if cpu is not None and pinning() else os.sched_getaffinity(0)
        if cpu is not None and pinning() and shutil.which("taskset"):
            argv = ["taskset", "-c", str(cpu), *argv]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        CHILDREN.append(self)
        if pinning():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.proc.pid, cpus)  # in case taskset is missing
        return self

    def affinity(self) -> list[int]:
        try:
            return sorted(os.sched_getaffinity(self.pid))
        except OSError:
            return []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 8.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # also whatever it left in its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if self in CHILDREN:
            CHILDREN.remove(self)

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process (all its threads)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK

    def status_kb(self, key: str) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def rss_kb(self) -> int:
        return self.status_kb("VmRSS")

    def hwm_kb(self) -> int:
        return self.status_kb("VmHWM")

    def reset_hwm(self) -> None:
        """Reset the peak RSS to the current RSS (Linux ``clear_refs`` 5)."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def cpu_busy_s() -> dict[int, float]:
    """Busy seconds of each CPU since boot (/proc/stat: everything but idle and iowait)."""
    busy: dict[int, float] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return busy
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(v) for v in values[:8]]
            busy[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICK
    return busy


async def background_load(seconds: float = 1.0) -> dict[int, float]:
    """The share of each CPU that other processes keep busy (measured over ``seconds``,
    while this benchmark runs nothing)."""
    before, t0 = cpu_busy_s(), time.perf_counter()
    await asyncio.sleep(seconds)
    after, wall = cpu_busy_s(), time.perf_counter() - t0
    return {cpu: max(0.0, (after[cpu] - before.get(cpu, 0.0)) / wall) for cpu in after}


async def wait_quiet(limit: float, threshold: float = 0.10) -> dict[int, float]:
    """Wait up to ``limit`` seconds until other processes use under ``threshold`` of each
    of the two CPUs the benchmark uses; returns the last measurement."""
    deadline = time.monotonic() + limit
    while True:
        load = await background_load(2.0)
        mine = {cpu: load.get(cpu, 0.0) for cpu in (SERVER_CPU, HARNESS_CPU)}
        if all(v < threshold for v in mine.values()) or time.monotonic() >= deadline:
            return load


def stop_all() -> None:
    for child in list(reversed(CHILDREN)):
        child.stop(grace=3.0)


def install_cleanup() -> None:
    """Children are stopped at exit; SIGTERM and SIGHUP end the run like Ctrl-C, which
    works even when the shell started us with SIGINT ignored (a background job)."""
    atexit.register(stop_all)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGHUP, on_term)


async def wait_ready(child: Child | None, port: int, path: str, timeout: float = 60.0) -> None:
    """Until ``GET path`` answers 200 (or the child died, or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited at start-up:\n{child.log_tail()}")
        try:
            status, _ = await simple_get(port, path, timeout=2.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except (OSError, TimeoutError, ValueError, IndexError) as exc:
            last = type(exc).__name__
        await asyncio.sleep(0.05)
    tail = child.log_tail() if child is not None else ""
    raise RuntimeError(f"not ready after {timeout:.0f} s on port {port} ({last})\n{tail}")


def python() -> str:
    return sys.executable


def git_commit() -> dict[str, object]:
    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "src")
    return {"commit": git("rev-parse", "HEAD"), "src_modified": bool(changed)}
