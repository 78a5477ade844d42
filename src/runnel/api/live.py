"""``/api/v1/live``: the live feed (one SSE response carrying many streams of one user) and
the change of what an open feed follows. The protocol is ``runnel.dialects.live``; the
response is ``runnel.api.feed``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from runnel.api.deps import ServicesDep, UserDep
from runnel.api.feed import LiveFeed
from runnel.dialects import live
from runnel.errors import NotFound, Overloaded
from runnel.ids import new_id

router = APIRouter(prefix="/api/v1/live", tags=["live"])


@router.get(
    "",
    response_model=None,
    responses={
        200: {
            "description": "the feed: SSE, open until the client leaves (docs/api.md)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def feed(
    services: ServicesDep, user: UserDep, streams: str | None = None, auto: bool = False
) -> Any:
    follows = live.parse_streams(streams)
    if services.feeds.closing:
        raise Overloaded("the server is shutting down; connect again")
    broker = services.broker
    feed_id = new_id("f")
    await broker.open_feed(feed_id, user)
    # the cursor before the active streams: a stream that starts in between is announced
    cursor, _ = await broker.read_notices(user, None, 0)
    active = await broker.active(user)
    settings = services.settings
    return LiveFeed(
        broker,
        services.feeds,
        user_id=user,
        feed_id=feed_id,
        cursor=cursor,
        active=active,
        follows=follows,
        auto=auto,
        heartbeat=settings.heartbeat_interval,
        send_timeout=settings.send_timeout,
        retry_ms=settings.sse_retry_ms,
    )


@router.patch("/{feed_id}", status_code=202)
async def change(
    feed_id: str, body: live.FeedChange, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    body.checked()
    broker = services.broker
    if await broker.feed_user(feed_id) != user:
        raise NotFound("no such live feed is open")
    await broker.notify(user, live.control(feed_id, body))
    return {"feedId": feed_id}
