"""Per-user limits: a rate of new replies and a cap on replies streaming at once."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from tests.conftest import ServeFactory
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.helpers import conversation, error_of, new_conversation
from tests.processes import runnel_process
from tests.sse_client import open_stream


def test_the_rate_limit_answers_429_with_retry_after(serve: ServeFactory) -> None:
    server = serve(rate_limit="3/minute", api_tokens="a:alice,b:bob")
    alice = httpx2.Client(base_url=server.url, headers={"authorization": "Bearer a"}, timeout=30)
    bob = httpx2.Client(base_url=server.url, headers={"authorization": "Bearer b"}, timeout=30)
    with alice, bob:
        cid = new_conversation(alice)
        for _ in range(3):
            assert alice.post("/api/v1/messages", json={"message": "hi"}).status_code == 200
        limited = alice.post(f"/api/v1/conversations/{cid}/messages", json={"content": "one more"})
        assert limited.status_code == 429
        assert error_of(limited) == "RATE_LIMIT"
        assert "this server's limit" in limited.json()["error"]["message"]
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert conversation(alice, cid)["messages"] == []
        assert bob.post("/api/v1/messages", json={"message": "hi"}).status_code == 200


def test_the_per_user_stream_cap(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    server = serve(max_streams_per_user=1)
    fake_openai.script("slow", Script(tokens=["a "] * 40, delay=0.03))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        with open_stream(
            client, "POST", "/api/v1/messages", json={"message": "x", "model": "openai/slow"}
        ) as live:
            live.take(2)
            second = client.post("/api/v1/messages", json={"message": "y"})
            assert second.status_code == 429
            assert error_of(second) == "RATE_LIMIT"
            live.rest()
        assert client.post("/api/v1/messages", json={"message": "z"}).status_code == 200


def test_a_bad_rate_limit_is_refused_at_start(tmp_path: Path) -> None:
    from runnel.api.app import create_app
    from runnel.settings import Settings

    with pytest.raises(ValueError, match="60/minute"):
        create_app(Settings(data_dir=tmp_path, rate_limit="lots"))


def test_limits_hold_across_processes(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    shared = {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "max_streams_per_user": "1",
        "rate_limit": "4/minute",
        "demo_tokens_per_second": "20",
        "demo_reply_tokens": "200",
    }
    with (
        runnel_process(tmp_path / "a", **shared) as (_, url_a),
        runnel_process(tmp_path / "b", **shared) as (_, url_b),
        httpx2.Client(base_url=url_a, timeout=30) as a,
        httpx2.Client(base_url=url_b, timeout=30) as b,
    ):
        with open_stream(a, "POST", "/api/v1/messages", json={"message": "x"}) as live:
            head = live.take(2)
            capped = b.post("/api/v1/messages", json={"message": "y"})
            assert capped.status_code == 429
            assert "at once" in capped.json()["error"]["message"]
            b.post(f"/api/v1/streams/{head.events[0].data['streamId']}/cancel")
            live.rest()
        statuses = []
        for client in (a, b, a, b):
            statuses.append(client.post("/api/v1/messages", json={"message": "z"}).status_code)
        # 1 + 3 replies fit in 4/minute across both processes; the fifth does not
        assert statuses == [200, 200, 200, 429]
