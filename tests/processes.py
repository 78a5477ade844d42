"""Runnel as a separate OS process (``python -m runnel serve``), for tests that signal,
kill or run several of them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def runnel_process(
    data_dir: Path,
    output: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
    *,
    workers: int = 1,
    graceful: bool = False,
    **settings: str,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``runnel serve`` (with ``--workers`` when ``workers`` > 1) on a free port with
    ``RUNNEL_<NAME>`` settings; yields the process and its URL once it is ready; on exit
    kills it, or with ``graceful`` stops it with SIGTERM and waits (its output into
    ``output``)."""
    extra_env = extra_env or {}
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **extra_env,
        "RUNNEL_DATA_DIR": str(data_dir),
        "RUNNEL_LOG_FORMAT": "json",
        **{f"RUNNEL_{k.upper()}": v for k, v in settings.items()},
    }
    command = [sys.executable, "-m", "runnel", "serve", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    lines: list[str] = []
    # read the output all along: a full pipe would block the server on its next log line
    reader = threading.Thread(target=_collect, args=(process, lines), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "\n".join(lines)
            try:
                if httpx2.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "runnel did not start"
            time.sleep(0.05)
        yield process, url
    finally:
        if process.poll() is None:
            if graceful:
                process.send_signal(signal.SIGTERM)
            else:
                process.kill()
        process.wait(timeout=30)
        reader.join(timeout=30)
        if output is not None:
            output.extend(lines)


def _collect(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    with process.stdout:
        lines.extend(line.rstrip("\n") for line in process.stdout)
