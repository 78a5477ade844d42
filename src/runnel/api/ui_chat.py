"""``/api/v1/ui/chat``: the Vercel AI SDK's chat endpoints (``DefaultChatTransport``), a
dialect over the same chat service (``runnel.dialects.ai_sdk``).

``POST`` answers a chat's last user message (or regenerates its last reply) as a UI
message stream; ``GET …/{chatId}/messages`` is the chat so far, for a page to load;
``GET …/{chatId}/stream`` is the SDK's resume (204 when nothing is in
flight); ``POST …/{chatId}/stop`` stops the reply in flight — the SDK's own ``stop()`` only
closes its connection, and a disconnect never stops a Runnel reply.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from runnel.api.deps import PrincipalDep, ServicesDep, UserDep
from runnel.api.replies import encoded_stream
from runnel.dialects import ai_sdk
from runnel.errors import NotFound, RunnelError

router = APIRouter(prefix="/api/v1/ui/chat", tags=["ai-sdk"])


@router.post("", response_model=None)
async def chat(body: ai_sdk.UIChatRequest, services: ServicesDep, user: PrincipalDep) -> Response:
    start = ai_sdk.parse(body)
    chat = services.chat
    conversation, created = await chat.conversation_of_client(
        user.id, ai_sdk.conversation_of(user.id, start.chat_id), start.model
    )
    try:
        if start.text is None:
            generation = await chat.regenerate(user.id, conversation.id, start.model, user.limits)
        else:
            generation = await chat.send(
                user.id, conversation.id, start.text, start.model, user.limits
            )
    except RunnelError:
        if created:  # a chat whose first request was refused leaves nothing behind
            await chat.delete_conversation(user.id, conversation.id)
        raise
    return await _stream(services, generation.stream_id)


@router.get("/{chat_id}/messages")
async def messages(chat_id: str, services: ServicesDep, user: UserDep) -> list[dict[str, Any]]:
    """The chat's stored messages as ``UIMessage``s (``[]`` for a chat never used), to
    load a page with; a reply in flight comes from the resume instead."""
    try:
        view = await services.chat.get_conversation(user, ai_sdk.conversation_of(user, chat_id))
    except NotFound:
        return []
    return ai_sdk.ui_messages(view.messages)


@router.get(
    "/{chat_id}/stream",
    response_model=None,
    responses={204: {"description": "nothing in flight (a chat never used too)"}},
)
async def resume(chat_id: str, services: ServicesDep, user: UserDep) -> Response:
    stream_id = await _in_flight(services, user, chat_id)
    if stream_id is None:
        return Response(status_code=204)
    try:
        return await _stream(services, stream_id)
    except NotFound:  # it ended and expired between the two reads
        return Response(status_code=204)


@router.post(
    "/{chat_id}/stop",
    response_model=None,
    responses={202: {"description": "stopping the reply in flight"}},
)
async def stop(chat_id: str, services: ServicesDep, user: UserDep) -> JSONResponse:
    stream_id = await _in_flight(services, user, chat_id)
    running = stream_id is not None and await services.chat.cancel(user, stream_id, None)
    return JSONResponse(
        {"status": "cancelling" if running else "idle"}, status_code=202 if running else 200
    )


async def _in_flight(services: ServicesDep, user_id: str, chat_id: str) -> str | None:
    """The chat's reply in flight, if any (a chat never used has none)."""
    try:
        conversation = await services.chat.get_conversation(
            user_id, ai_sdk.conversation_of(user_id, chat_id)
        )
    except NotFound:
        return None
    return conversation.conversation.active_stream_id


async def _stream(services: ServicesDep, stream_id: str) -> Response:
    """The reply's stream from its start (a resume replays it: the client replaces the
    message it has, by its id)."""
    first = await services.broker.read(stream_id, 0, timeout=0)
    if first is None:
        raise NotFound("stream not found or expired")
    encoder = ai_sdk.UIMessageEncoder(stream_id)
    return encoded_stream(
        services.broker, stream_id, first, services.settings, encoder, headers=ai_sdk.HEADERS
    )
