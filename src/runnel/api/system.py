"""Models, liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from runnel.api.deps import ServicesDep, UserDep

router = APIRouter()
READY_TIMEOUT = 3.0


@router.get("/api/v1/models")
async def models(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    default = services.registry.default_model
    found = await services.registry.list_models()
    ids = [m.id for m in found]
    data = [{"id": m.id, "provider": m.provider, "default": m.id == default} for m in found]
    if default not in ids:
        provider = default.split("/", 1)[0]
        data.insert(0, {"id": default, "provider": provider, "default": True})
    return {"data": data, "default": default}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


METRICS_TYPES = {
    "text/plain": {"schema": {"type": "string"}},
    "application/openmetrics-text": {"schema": {"type": "string"}},
}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus metrics", "content": METRICS_TYPES}},
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus metrics; like ``/healthz``, no token needed (no user data in it)."""
    body, content_type = services.metrics.render(request.headers.get("accept", ""))
    return Response(body, headers={"content-type": content_type})


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    checks: dict[str, str] = {}
    for name, probe in (("store", services.store.ping), ("broker", services.broker.ping)):
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                healthy = await probe()
        except TimeoutError:
            healthy = False
        checks[name] = "ok" if healthy else "unavailable"
    ready = all(v == "ok" for v in checks.values())
    status = 200 if ready else 503
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks}, status)
