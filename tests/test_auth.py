"""Bearer tokens: 401 without one; another user's things are 404, never visible."""

from __future__ import annotations

import subprocess
import sys

import httpx2

from tests.conftest import ServeFactory
from tests.helpers import error_of


def test_tokens_required_and_users_isolated(serve: ServeFactory) -> None:
    server = serve(api_tokens="tok-a:alice,tok-b:bob")
    alice = httpx2.Client(
        base_url=server.url, headers={"authorization": "Bearer tok-a"}, timeout=30
    )
    bob = httpx2.Client(base_url=server.url, headers={"authorization": "Bearer tok-b"}, timeout=30)
    anonymous = httpx2.Client(base_url=server.url, timeout=30)
    wrong = httpx2.Client(base_url=server.url, headers={"authorization": "Bearer nope"}, timeout=30)
    with alice, bob, anonymous, wrong:
        for client in (anonymous, wrong):
            for method, url in (
                ("GET", "/api/v1/conversations"),
                ("POST", "/api/v1/messages"),
                ("GET", "/api/v1/models"),
            ):
                response = client.request(method, url, json={"message": "hi"})
                assert response.status_code == 401, (method, url)
                assert error_of(response) == "UNAUTHORIZED"
        basic = anonymous.get("/api/v1/conversations", headers={"authorization": "Basic dG9rLWE="})
        assert basic.status_code == 401

        cid = alice.post("/api/v1/conversations", json={}).json()["id"]
        reply = alice.post(f"/api/v1/conversations/{cid}/messages", json={"content": "secret"})
        stream_id = reply.json()["streamId"]
        assert bob.get("/api/v1/conversations").json()["data"] == []
        for method, url in (
            ("GET", f"/api/v1/conversations/{cid}"),
            ("PATCH", f"/api/v1/conversations/{cid}"),
            ("DELETE", f"/api/v1/conversations/{cid}"),
            ("POST", f"/api/v1/conversations/{cid}/messages"),
            ("GET", f"/api/v1/conversations/{cid}/stream"),
            ("GET", f"/api/v1/streams/{stream_id}"),
            ("POST", f"/api/v1/streams/{stream_id}/cancel"),
        ):
            body = {"content": "x"} if url.endswith("messages") else {}
            response = bob.request(method, url, json=body)
            assert response.status_code == 404, (method, url)
            assert error_of(response) == "NOT_FOUND"
        mine = alice.get(f"/api/v1/conversations/{cid}").json()
        assert next(m["content"] for m in mine["messages"]) == "secret"
        assert anonymous.get("/healthz").status_code == 200


def test_refuses_a_public_bind_without_tokens(tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "runnel", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"RUNNEL_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 2
    assert "RUNNEL_API_TOKENS" in result.stderr
