"""The yardstick: the relay a straightforward app would write (Starlette + httpx2).

    BENCH_UPSTREAM=http://127.0.0.1:8001/v1 uvicorn bench.simple_relay:app --port 8002

``POST /api/v1/messages`` takes Runnel's stateless body (``{"message", "model"}``), streams
the upstream's chat completion with ``httpx2`` and re-emits each delta as
``data: {"type":"token","content":…}``, then ``data: {"type":"complete"}``. Nothing is
stored, nothing can be resumed: it is what Runnel's extra work is compared against.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8001/v1")
client = httpx2.AsyncClient(
    base_url=UPSTREAM,
    timeout=httpx2.Timeout(60.0, connect=10.0),
    limits=httpx2.Limits(max_connections=None, max_keepalive_connections=2000),
)


async def messages(request: Request) -> Response:
    body = await request.json()
    upstream_body = {
        "model": str(body.get("model", "")).partition("/")[2],
        "stream": True,
        "messages": [{"role": "user", "content": body["message"]}],
    }

    async def events() -> AsyncIterator[str]:
        async with client.stream("POST", "/chat/completions", json=upstream_body) as upstream:
            if upstream.status_code != 200:
                yield 'data: {"type": "error", "code": "PROVIDER_ERROR"}\n\n'
                return
            async for line in upstream.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                for choice in json.loads(data).get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        yield f"data: {json.dumps({'type': 'token', 'content': content})}\n\n"
        yield 'data: {"type": "complete", "finishReason": "stop"}\n\n'

    return StreamingResponse(events(), media_type="text/event-stream")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await client.aclose()


app = Starlette(
    routes=[
        Route("/api/v1/messages", messages, methods=["POST"]),
        Route("/healthz", healthz),
    ],
    lifespan=lifespan,
)
