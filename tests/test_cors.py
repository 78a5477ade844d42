"""``cors_origins``: pages of the listed origins (and only those) may call the API from a
browser — preflights, the headers they may read, cookies treated as this site's own."""

from __future__ import annotations

import httpx2
import pytest

from runnel.settings import Settings
from tests.conftest import ServeFactory

APP = "http://app.example:5173"
EVIL = "https://evil.example"
USER = {"id": "1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}


def preflight(url: str, origin: str) -> httpx2.Response:
    return httpx2.options(
        f"{url}/api/v1/ui/chat",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,authorization",
        },
    )


def test_no_origins_no_cors(serve: ServeFactory) -> None:
    server = serve()
    answer = preflight(server.url, APP)
    assert "access-control-allow-origin" not in answer.headers
    plain = httpx2.get(f"{server.url}/api/v1/models", headers={"origin": APP})
    assert "access-control-allow-origin" not in plain.headers


def test_a_listed_origin_may_call(serve: ServeFactory) -> None:
    server = serve(cors_origins=f"{APP}, https://other.example")
    answer = preflight(server.url, APP)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    assert answer.headers["access-control-allow-credentials"] == "true"
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "content-type" in allowed
    assert "authorization" in allowed
    body = {"id": "cors", "messages": [USER]}
    with httpx2.stream(
        "POST", f"{server.url}/api/v1/ui/chat", json=body, headers={"origin": APP}
    ) as response:
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == APP
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "x-vercel-ai-ui-message-stream" in exposed
        assert list(response.iter_lines())[-2] == "data: [DONE]"


def test_another_origin_is_not_allowed(serve: ServeFactory) -> None:
    server = serve(cors_origins=APP)
    answer = preflight(server.url, EVIL)
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers
    plain = httpx2.get(f"{server.url}/api/v1/models", headers={"origin": EVIL})
    assert "access-control-allow-origin" not in plain.headers


def test_a_session_from_a_listed_origin_counts_as_this_site(serve: ServeFactory) -> None:
    server = serve(cors_origins=APP, signup="open")
    with httpx2.Client(base_url=server.url) as browser:
        signed = browser.post(
            "/api/v1/auth/signup", json={"username": "ann", "password": "a long enough password"}
        )
        assert signed.status_code == 201
        cross = {"origin": APP, "sec-fetch-site": "cross-site"}
        made = browser.post("/api/v1/conversations", json={"title": "from the app"}, headers=cross)
        assert made.status_code == 201
        refused = browser.post(
            "/api/v1/conversations",
            json={"title": "from evil"},
            headers={"origin": EVIL, "sec-fetch-site": "cross-site"},
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "FORBIDDEN"
        titles = [c["title"] for c in browser.get("/api/v1/conversations").json()["data"]]
    assert titles == ["from the app"]


@pytest.mark.parametrize(
    "value", ["*", "app.example", "http://app.example/path", "ftp://app.example", "http://"]
)
def test_bad_origins_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="cors_origins"):
        Settings(cors_origins=value)
