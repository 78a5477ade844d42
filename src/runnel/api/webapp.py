"""Serving the built web app: hashed assets cached forever, every other page path answered
with ``index.html`` (the app routes on the client), API paths never shadowed."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from runnel.errors import NotFound

WEBAPP = Path(__file__).resolve().parent.parent / "webapp"
RESERVED = ("api/", "v1/", "healthz", "readyz", "metrics")
NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>Runnel</title>
<p>The web app is not built. Run <code>scripts/serve</code> (it builds it), or
<code>scripts/build-web</code>. The API is up at <code>/api/v1</code>.</p>"""


class ImmutableFiles(StaticFiles):
    """Vite names assets by content hash, so a cached copy never goes stale."""

    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def mount(app: FastAPI, root: Path | None = None) -> None:
    """Add the app's routes; call after every API route (the page route catches the rest)."""
    root = root or WEBAPP
    index = root / "index.html"
    built = index.is_file()
    top_level = {p.name: p for p in root.iterdir() if p.is_file()} if built else {}
    if (root / "assets").is_dir():
        app.mount("/assets", ImmutableFiles(directory=root / "assets"), name="assets")

    @app.get("/{path:path}", include_in_schema=False, response_model=None)
    async def page(path: str) -> Response:
        if path.startswith(RESERVED) or path == "v1":
            raise NotFound("no such endpoint")
        if not built:
            return HTMLResponse(NOT_BUILT, status_code=503)
        return FileResponse(top_level.get(path, index), headers={"Cache-Control": "no-cache"})
