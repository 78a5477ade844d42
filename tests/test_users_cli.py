"""``runnel users …`` against the store a server uses, and the off-loopback rule."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from tests.conftest import ServeFactory
from tests.processes import free_port

CHEAP = {
    "RUNNEL_PASSWORD_TIME_COST": "1",
    "RUNNEL_PASSWORD_MEMORY_KIB": "1024",
    "RUNNEL_PASSWORD_PARALLELISM": "1",
}


def runnel(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runnel", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "RUNNEL_DATA_DIR": str(data),
            **CHEAP,
        },
        check=False,
    )


def test_users_commands_administer_a_running_server(serve: ServeFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = runnel(
        data, "users", "add", "root", "--admin", "--password-stdin", stdin="first password\n"
    )
    assert added.returncode == 0, added.stderr
    assert "created admin root" in added.stdout
    short = runnel(data, "users", "add", "eve", "--password-stdin", stdin="short\n")
    assert short.returncode == 1
    assert "8 to 256" in short.stderr
    taken = runnel(data, "users", "add", "ROOT", "--password-stdin", stdin="another password\n")
    assert taken.returncode == 1
    assert "taken" in taken.stderr
    assert (
        runnel(data, "users", "add", "bob", "--password-stdin", stdin="bob password\n").returncode
        == 0
    )

    server = serve(data_dir=data)
    with httpx2.Client(base_url=server.url, timeout=30) as bob:
        login = {"username": "bob", "password": "bob password"}
        assert bob.post("/api/v1/auth/login", json=login).status_code == 200
        assert bob.get("/api/v1/conversations").status_code == 200

        listed = runnel(data, "users", "list")
        assert listed.returncode == 0
        lines = [line.split("\t")[:3] for line in listed.stdout.strip().splitlines()]
        assert lines == [
            ["username", "role", "status"],
            ["root", "admin", "active"],
            ["bob", "user", "active"],
        ]

        assert runnel(data, "users", "disable", "bob").returncode == 0
        # the running server sees it on the next request
        assert bob.get("/api/v1/conversations").status_code == 401
        assert bob.post("/api/v1/auth/login", json=login).status_code == 403
        assert "disabled" in runnel(data, "users", "list").stdout.splitlines()[2]
        assert runnel(data, "users", "enable", "bob").returncode == 0
        assert bob.post("/api/v1/auth/login", json=login).status_code == 200

        reset = runnel(
            data, "users", "set-password", "bob", "--password-stdin", stdin="new password!\n"
        )
        assert reset.returncode == 0, reset.stderr
        assert bob.get("/api/v1/conversations").status_code == 401  # signed out
        assert bob.post("/api/v1/auth/login", json=login).status_code == 401
        new = {"username": "bob", "password": "new password!"}
        assert bob.post("/api/v1/auth/login", json=new).status_code == 200

    missing = runnel(data, "users", "disable", "nobody")
    assert missing.returncode == 1
    assert "no user named" in missing.stderr


def test_an_admin_account_allows_listening_off_loopback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = str(free_port())
    refused = runnel(data, "serve", "--host", "0.0.0.0", "--port", port)
    assert refused.returncode == 2
    assert "administrator account" in refused.stderr
    assert (
        runnel(data, "users", "add", "user1", "--password-stdin", stdin="password one\n").returncode
        == 0
    )
    assert runnel(data, "serve", "--host", "0.0.0.0", "--port", port).returncode == 2
    assert (
        runnel(
            data, "users", "add", "root", "--admin", "--password-stdin", stdin="password two\n"
        ).returncode
        == 0
    )
    # with an admin it starts (and is asked only over loopback)
    process = subprocess.Popen(
        [sys.executable, "-m", "runnel", "serve", "--host", "0.0.0.0", "--port", port],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUNNEL_DATA_DIR": str(data)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "runnel refused to start"
            try:
                answer = httpx2.get(f"http://127.0.0.1:{port}/api/v1/conversations", timeout=1)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "runnel did not start"
                time.sleep(0.05)
        assert answer.status_code == 401
    finally:
        process.kill()
        process.wait(timeout=30)
