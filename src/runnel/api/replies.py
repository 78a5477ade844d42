"""Delivering a reply: as an SSE stream, or as one JSON body when it is finished."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from runnel.api.streaming import EventStreamResponse
from runnel.broker import StreamLog
from runnel.errors import BY_CODE, Internal, InvalidRequest
from runnel.events import Complete, Error, Status, to_wire
from runnel.settings import Settings


def wants_stream(request: Request, settings: Settings) -> bool:
    return settings.streaming_enabled and "text/event-stream" in request.headers.get("accept", "")


def last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None:
        raw = request.query_params.get("lastEventId")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise InvalidRequest("Last-Event-ID must be a non-negative integer")
    return int(raw)


def event_stream(log: StreamLog, after: int, settings: Settings) -> Response:
    """The SSE response reading ``log`` after event ``after``; 204 when the stream is over
    and the reader has it all (so an EventSource stops reconnecting)."""
    if log.finished and after >= len(log.events):
        return Response(status_code=204)
    return EventStreamResponse(
        log,
        after,
        heartbeat=settings.heartbeat_interval,
        retry_ms=settings.sse_retry_ms,
        send_timeout=settings.send_timeout,
    )


async def finished_reply(log: StreamLog) -> JSONResponse:
    """Wait for the terminal event and answer with the whole reply (or its error)."""
    position = 0
    while not log.finished or position < len(log.events):
        position += len(await log.read(position, 3600.0))
    pieces: list[str] = []
    status: Status | None = None
    body: dict[str, Any] = {}
    for event in log.events:
        if type(event) is str:
            pieces.append(event)
        elif isinstance(event, Status):
            status = event
        elif isinstance(event, Complete):
            body = to_wire(event)
        elif isinstance(event, Error):
            error = BY_CODE.get(event.code, Internal)
            return JSONResponse(
                {
                    "error": {"code": event.code, "message": event.message},
                    "content": "".join(pieces),
                    "messageId": event.message_id,
                    "streamId": log.meta.stream_id,
                },
                error.status,
            )
    body.pop("type", None)
    body.update(
        content="".join(pieces),
        streamId=log.meta.stream_id,
        conversationId=status.conversation_id if status else log.meta.conversation_id,
    )
    return JSONResponse(body)
