"""``/api/v1/messages`` (stateless chat) and ``/api/v1/streams/{id}`` (attach, resume, cancel)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from runnel.api.deps import PrincipalDep, ServicesDep, UserDep
from runnel.api.replies import (
    event_stream,
    finished_reply,
    last_event_id,
    started,
    wants_async,
    wants_stream,
)
from runnel.api.schemas import CancelBody, StatelessMessage
from runnel.errors import InvalidRequest
from runnel.providers.base import ChatMessage

router = APIRouter(prefix="/api/v1")


@router.post("/messages", response_model=None)
async def stateless(
    body: StatelessMessage, request: Request, services: ServicesDep, user: PrincipalDep
) -> Any:
    history: list[ChatMessage] = [{"role": h.role, "content": h.content} for h in body.history]
    generation = await services.chat.send_stateless(
        user.id, body.message, history, body.model, user.limits
    )
    if wants_async(request):
        return started(generation)
    if wants_stream(request, services.settings):
        return await event_stream(services.broker, generation.stream_id, 0, services.settings)
    return await finished_reply(services.broker, generation.stream_id)


@router.get("/streams/{stream_id}", response_model=None)
async def attach(stream_id: str, request: Request, services: ServicesDep, user: UserDep) -> Any:
    after = last_event_id(request)
    await services.chat.stream_meta(user, stream_id)
    return await event_stream(
        services.broker, stream_id, after or 0, services.settings, services.metrics
    )


@router.post("/streams/{stream_id}/cancel", status_code=202)
async def cancel(
    stream_id: str, request: Request, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    body = CancelBody()
    raw = await request.body()
    if raw.strip():
        try:
            body = CancelBody.model_validate_json(raw)
        except ValueError as exc:
            raise InvalidRequest('the cancel body must be {"lastEventId": <integer>}') from exc
    running = await services.chat.cancel(user, stream_id, body.last_event_id)
    return {"streamId": stream_id, "status": "cancelling" if running else "finished"}
