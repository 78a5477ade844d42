from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis.asyncio as redis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from runnel.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.server import RunningServer, start

TEST_SETTINGS: dict[str, Any] = {
    "demo_first_token_delay": 0.0,
    "demo_tokens_per_second": 400.0,
    "demo_reply_tokens": 40,
    "shutdown_grace": 0.2,
    # follow-ups call the reply's model again after it ended: a title would replace the
    # provisional one and a suggestion request follow the one that many tests read
    # (tests/test_followups.py switches them on)
    "titles": False,
    "suggestions": False,
    "log_level": "WARNING",
    # retries stay on, fast: a Retry-After longer than the budget is not waited for
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
    "retry_budget": 2.0,
    # cheap Argon2id hashes (the defaults cost 64 MiB and ~0.1 s each)
    "password_time_cost": 1,
    "password_memory_kib": 1024,
    "password_parallelism": 1,
}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake
    assert not fake._errors, fake._errors


ServeFactory = Callable[..., RunningServer]


@pytest.fixture
def serve(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[ServeFactory]:
    """Start a Runnel on loopback; keyword arguments override settings."""
    servers: list[RunningServer] = []

    def factory(**overrides: Any) -> RunningServer:
        values = {
            **TEST_SETTINGS,
            "data_dir": tmp_path / f"data{len(servers)}",
            "openai_api_key": "sk-test",
            "openai_base_url": fake_openai.url,
            **overrides,
        }
        server = start(Settings(**values))
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def server(serve: ServeFactory) -> RunningServer:
    return serve()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped afterwards)."""
    base = make_url(require_service("RUNNEL_TEST_POSTGRES_URL"))
    name = f"runnel_test_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        engine = create_async_engine(base, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.exec_driver_sql(sql)
        await engine.dispose()

    asyncio.run(run(f"CREATE DATABASE {name}"))
    yield base.set(database=name).render_as_string(hide_password=False)
    asyncio.run(run(f"DROP DATABASE {name} WITH (FORCE)"))


@pytest.fixture
def redis_url() -> str:
    """The test Redis database, emptied first."""
    url = require_service("RUNNEL_TEST_REDIS_URL")

    async def flush() -> None:
        client = redis.Redis.from_url(url)
        await client.flushdb()
        await client.aclose()

    asyncio.run(flush())
    return url


def require_service(env: str) -> str:
    """The URL of a real service for a test; skip locally without it, fail under CI."""
    url = os.environ.get(env)
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail(f"{env} is not set, and CI must run this test")
    pytest.skip(f"{env} is not set")


SECURITY_CASES: list[tuple[str, int]] = []


@pytest.fixture
def security_report() -> Callable[[str, int], None]:
    """Record how many cases a security suite ran (shown at the end of the test report)."""

    def record(suite: str, cases: int) -> None:
        SECURITY_CASES.append((suite, cases))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for suite, cases in SECURITY_CASES:
        terminalreporter.write_line(f"security: {suite} — {cases} cases")
