"""How the built web app is served: SPA fallback, cache headers, API paths never shadowed."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from runnel.api import webapp
from tests.conftest import ServeFactory


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "webapp"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>Runnel</title><div id=app></div>")
    (root / "assets" / "index-3f2a1b.js").write_text("console.log('app')")
    (root / "favicon.svg").write_text("<svg/>")
    monkeypatch.setattr(webapp, "WEBAPP", root)
    return root


def test_pages_assets_and_api_paths(built: Path, serve: ServeFactory) -> None:
    server = serve()
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        for path in ("/", "/c/c_123", "/some/deep/link"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert "<div id=app>" in page.text
            assert page.headers["cache-control"] == "no-cache"
        asset = client.get("/assets/index-3f2a1b.js")
        assert asset.status_code == 200
        assert "immutable" in asset.headers["cache-control"]
        assert client.get("/favicon.svg").text == "<svg/>"
        assert client.get("/assets/missing.js").status_code == 404
        api = client.get("/api/v1/nope")
        assert api.status_code == 404
        assert api.json()["error"]["code"] == "NOT_FOUND"
        assert client.get("/api/v1/models").status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}
        escape = client.get("/../pyproject.toml")
        assert "hatchling" not in escape.text


def test_an_unbuilt_app_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: ServeFactory
) -> None:
    monkeypatch.setattr(webapp, "WEBAPP", tmp_path / "missing")
    server = serve()
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 503
        assert "scripts/build-web" in page.text
        assert client.get("/api/v1/models").status_code == 200
