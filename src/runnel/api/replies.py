"""Delivering a reply: as an SSE stream, or as one JSON body when it is finished."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from runnel.api.streaming import EventStreamResponse
from runnel.broker import Batch, Broker
from runnel.errors import BY_CODE, Internal, InvalidRequest, NotFound
from runnel.events import Complete, Error, Status, to_wire
from runnel.generation import Generation
from runnel.metrics import Metrics
from runnel.settings import Settings
from runnel.sse import Encoder, NativeEncoder


def wants_stream(request: Request, settings: Settings) -> bool:
    return settings.streaming_enabled and "text/event-stream" in request.headers.get("accept", "")


def wants_async(request: Request) -> bool:
    """``Prefer: respond-async`` (RFC 7240): answer 202 once the reply started, and let the
    client read it elsewhere (``GET /api/v1/streams/{id}``, a live feed)."""
    prefer = request.headers.get("prefer", "")
    return any(p.strip().lower() == "respond-async" for p in prefer.split(","))


def started(generation: Generation) -> JSONResponse:
    """The 202 of a reply started without a reader: where to read it."""
    stream_id = generation.stream_id
    return JSONResponse(
        {
            "streamId": stream_id,
            "conversationId": generation.request.conversation_id,
            "messageId": generation.message_id,
            "model": generation.model,
        },
        status_code=202,
        headers={
            "Location": f"/api/v1/streams/{stream_id}",
            "Preference-Applied": "respond-async",
        },
    )


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
    encoder = NativeEncoder(settings.sse_retry_ms, settings.stream_padding)
    return encoded_stream(broker, stream_id, first, settings, encoder)


def encoded_stream(
    broker: Broker,
    stream_id: str,
    first: Batch,
    settings: Settings,
    encoder: Encoder,
    *,
    on_gone: Callable[[], None] | None = None,
    headers: dict[str, str] | None = None,
) -> EventStreamResponse:
    """The SSE response of a stream from ``first`` on, in ``encoder``'s dialect."""
    return EventStreamResponse(
        broker,
        stream_id,
        first,
        heartbeat=settings.heartbeat_interval,
        send_timeout=settings.send_timeout,
        encoder=encoder,
        on_gone=on_gone,
        extra_headers=[(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    )


@dataclass(slots=True)
class Collected:
    status: Status | None
    content: str
    terminal: Complete | Error


async def collect(broker: Broker, stream_id: str) -> Collected:
    """Wait for the terminal event; the stream's status, text and end."""
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
    return Collected(status, "".join(pieces), terminal)


async def finished_reply(broker: Broker, stream_id: str) -> JSONResponse:
    """Wait for the terminal event and answer with the whole reply (or its error)."""
    collected = await collect(broker, stream_id)
    status, content, terminal = collected.status, collected.content, collected.terminal
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
