"""``/api/v1/conversations``: conversations, their messages, their active stream."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from runnel import transfer
from runnel.api.deps import PrincipalDep, ServicesDep, UserDep
from runnel.api.replies import (
    event_stream,
    finished_reply,
    last_event_id,
    started,
    wants_async,
    wants_stream,
)
from runnel.api.schemas import (
    ConversationChanges,
    NewConversation,
    Regenerate,
    UserMessage,
    conversation_json,
)
from runnel.errors import NotFound
from runnel.generation import Generation
from runnel.store.sql import now_ms

router = APIRouter(prefix="/api/v1/conversations")
SUGGESTIONS_WAIT = 20.0  # s, at most
# ``?suggestions=wait``: a JSON reply waits for its follow-up suggestions
SuggestionsQuery = Annotated[Literal["wait"] | None, Query()]


@router.post("", status_code=201)
async def create(body: NewConversation, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    conversation = await services.chat.create_conversation(
        user, body.title, body.model, body.system_prompt
    )
    return conversation_json(conversation, [])


@router.post("/import", status_code=201)
async def import_(
    body: transfer.ImportDocument, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    view = await services.chat.import_conversation(user, body)
    return conversation_json(view.conversation, view.messages)


@router.get("")
async def list_(
    services: ServicesDep,
    user: UserDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    q: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    if q is not None and q.strip():
        hits = await services.chat.search(user, q, limit)
        return {
            "data": [
                {**conversation_json(c), "snippet": hit.snippet, "messageId": hit.message_id}
                for c, hit in hits
            ],
            "nextCursor": None,
        }
    items, next_cursor = await services.chat.list_conversations(user, limit, cursor)
    return {"data": [conversation_json(c) for c in items], "nextCursor": next_cursor}


@router.get("/{conversation_id}")
async def get(conversation_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    view = await services.chat.get_conversation(user, conversation_id)
    return conversation_json(view.conversation, view.messages)


@router.get(
    "/{conversation_id}/export",
    response_model=None,
    responses={
        200: {
            "description": "a download: the JSON document or the Markdown text",
            "content": {"application/json": {}, "text/markdown": {"schema": {"type": "string"}}},
        }
    },
)
async def export(
    conversation_id: str,
    services: ServicesDep,
    user: UserDep,
    format: Literal["json", "markdown"] = "json",
) -> Response:
    view = await services.chat.get_conversation(user, conversation_id)
    title = view.conversation.title
    if format == "markdown":
        return Response(
            transfer.markdown(view.conversation, view.messages),
            media_type="text/markdown; charset=utf-8",
            headers={"content-disposition": transfer.download_name(title, "md")},
        )
    return JSONResponse(
        transfer.document(view.conversation, view.messages, now_ms()),
        headers={"content-disposition": transfer.download_name(title, "json")},
    )


@router.patch("/{conversation_id}")
async def update(
    conversation_id: str, body: ConversationChanges, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    conversation = await services.chat.update_conversation(user, conversation_id, changes)
    return conversation_json(conversation)


@router.delete("/{conversation_id}", status_code=204)
async def delete(conversation_id: str, services: ServicesDep, user: UserDep) -> Response:
    await services.chat.delete_conversation(user, conversation_id)
    return Response(status_code=204)


@router.post("/{conversation_id}/messages", response_model=None)
async def send(
    conversation_id: str,
    body: UserMessage,
    request: Request,
    services: ServicesDep,
    user: PrincipalDep,
    suggestions: SuggestionsQuery = None,
) -> Any:
    generation = await services.chat.send(
        user.id, conversation_id, body.content, body.model, user.limits
    )
    return await _deliver(generation, request, services, suggestions)


@router.patch("/{conversation_id}/messages/{message_id}", response_model=None)
async def edit(
    conversation_id: str,
    message_id: str,
    body: UserMessage,
    request: Request,
    services: ServicesDep,
    user: PrincipalDep,
    suggestions: SuggestionsQuery = None,
) -> Any:
    """Edit a user message and answer it again: the messages after it are dropped."""
    generation = await services.chat.edit(
        user.id, conversation_id, message_id, body.content, body.model, user.limits
    )
    return await _deliver(generation, request, services, suggestions)


@router.post("/{conversation_id}/regenerate", response_model=None)
async def regenerate(
    conversation_id: str,
    request: Request,
    services: ServicesDep,
    user: PrincipalDep,
    body: Regenerate | None = None,
    suggestions: SuggestionsQuery = None,
) -> Any:
    model = body.model if body else None
    generation = await services.chat.regenerate(user.id, conversation_id, model, user.limits)
    return await _deliver(generation, request, services, suggestions)


@router.get("/{conversation_id}/stream", response_model=None)
async def attach(
    conversation_id: str, request: Request, services: ServicesDep, user: UserDep
) -> Any:
    after = last_event_id(request)
    stream_id = await services.chat.conversation_stream(
        user, conversation_id, resuming=after is not None
    )
    if stream_id is None:
        return Response(status_code=204)
    return await event_stream(
        services.broker, stream_id, after or 0, services.settings, services.metrics
    )


async def _deliver(
    generation: Generation,
    request: Request,
    services: ServicesDep,
    suggestions: str | None = None,
) -> Any:
    if wants_async(request):
        return started(generation)
    if wants_stream(request, services.settings):
        return await event_stream(services.broker, generation.stream_id, 0, services.settings)
    reply: JSONResponse = await finished_reply(services.broker, generation.stream_id)
    if suggestions != "wait" or reply.status_code != 200 or services.followups is None:
        return reply
    body = orjson.loads(reply.body)
    body["suggestions"] = await services.followups.wait_for_suggestions(
        generation.request.user_id, generation.message_id, SUGGESTIONS_WAIT
    )
    return JSONResponse(body)


@router.get("/{conversation_id}/messages/{message_id}/suggestions")
async def suggestions_of(
    conversation_id: str,
    message_id: str,
    services: ServicesDep,
    user: UserDep,
    wait: Annotated[float, Query(ge=0, le=SUGGESTIONS_WAIT)] = 0,
) -> dict[str, Any]:
    """A reply's follow-up suggestions (``null``: not written yet), waiting up to ``wait``
    seconds for them."""
    view = await services.chat.get_conversation(user, conversation_id)
    message = next((m for m in view.messages if m.id == message_id), None)
    if message is None or message.role != "assistant":
        raise NotFound("no such reply in this conversation")
    found = None
    if services.followups is not None:
        found = await services.followups.wait_for_suggestions(user, message_id, wait)
    return {"messageId": message_id, "suggestions": found}
