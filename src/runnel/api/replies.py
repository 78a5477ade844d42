"""Delivering a reply: as an SSE stream, or as one JSON body when it is finished."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from runnel.api.streaming import EventStreamResponse
from runnel.broker import Broker
from runnel.errors import BY_CODE, Internal, InvalidRequest, NotFound
from runnel.events import Complete, Error, Status, to_wire
from runnel.metrics import Metrics
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


async def event_stream(
    broker: Broker,
    stream_id: str,
    after: int,
    settings: Settings,
    metrics: Metrics | None = None,
) -> Response:
    """The SSE response reading the stream after event ``after``; 204 when the stream is
    over and the reader has it all (so an EventSource stops reconnecting). A reader that
    resumes (``after`` > 0) and gets a stream is counted in ``metrics``."""
    first = await broker.read(stream_id, after, timeout=0)
    if first is None:
        raise NotFound("stream not found or expired")
    if first.finished and not first.events:
        return Response(status_code=204)
    if after and metrics is not None:
        metrics.resumed()
    return EventStreamResponse(
        broker,
        stream_id,
        first,
        heartbeat=settings.heartbeat_interval,
        retry_ms=settings.sse_retry_ms,
        send_timeout=settings.send_timeout,
        padded=settings.stream_padding,
    )


async def finished_reply(broker: Broker, stream_id: str) -> JSONResponse:
    """Wait for the terminal event and answer with the whole reply (or its error)."""
    pieces: list[str] = []
    status: Status | None = None
    terminal: Complete | Error | None = None
    position = 0
    while terminal is None:
        batch = await broker.read(stream_id, position, timeout=3600.0)
        if batch is None:
            raise Internal("the stream expired before it finished")
        position += len(batch.events)
        for event in batch.events:
            if type(event) is str:
                pieces.append(event)
            elif isinstance(event, Status):
                status = event
            elif isinstance(event, Complete | Error):
                terminal = event
    content = "".join(pieces)
    if isinstance(terminal, Error):
        error = BY_CODE.get(terminal.code, Internal)
        return JSONResponse(
            {
                "error": {"code": terminal.code, "message": terminal.message},
                "content": content,
                "messageId": terminal.message_id,
                "streamId": stream_id,
            },
            error.status,
        )
    body: dict[str, Any] = to_wire(terminal)
    body.pop("type", None)
    body.update(
        content=content,
        streamId=stream_id,
        conversationId=status.conversation_id if status else None,
    )
    return JSONResponse(body)
