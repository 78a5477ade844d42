"""``/v1``: the OpenAI-compatible surface (models, chat completions, responses).

A thin dialect over the same chat and generation services as ``/api/v1``: requests are
parsed by ``runnel.dialects``, generations start through ``ChatService``, and replies are
read from the event log through a dialect's encoder. Errors take OpenAI's shape in
``api/errors.py`` (every path under ``/v1``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse

from runnel.accounts.records import Principal
from runnel.api.deps import PrincipalDep, ServicesDep, UserDep
from runnel.api.errors import DOCUMENTED_OPENAI
from runnel.api.replies import collect, encoded_stream
from runnel.chat import ChatService
from runnel.dialects import openai_chat, openai_responses
from runnel.dialects.openai_common import (
    InvalidParam,
    error_object,
    error_status,
    fold_system,
    ids_of,
    stream_of,
)
from runnel.dialects.openai_responses import (
    RESPONSE_PREFIX,
    Outcome,
    ResponseEncoder,
    ResponseInfo,
    ResponseRequest,
    ResponseStart,
)
from runnel.errors import BY_CODE, Internal, InvalidRequest, ModelNotFound, NotFound, RunnelError
from runnel.events import Error, Event
from runnel.generation import Generation
from runnel.providers.base import ChatMessage
from runnel.store.records import Conversation, Message

router = APIRouter(prefix="/v1", tags=["openai"], responses=DOCUMENTED_OPENAI)
CHAT_PREFIX = "chatcmpl-"
STREAM_HEADER = "X-Runnel-Stream-Id"


# models


@router.get("/models")
async def models(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return {"object": "list", "data": await _models(services)}


@router.get("/models/{model_id:path}")
async def model(model_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    for found in await _models(services):
        if found["id"] == model_id:
            return found
    raise ModelNotFound(f"The model '{model_id}' does not exist")


async def _models(services: ServicesDep) -> list[dict[str, Any]]:
    ids = [m.id for m in await services.registry.list_models()]
    default = services.registry.default_model
    if default not in ids:
        ids.insert(0, default)
    # ``created`` is when a model was made: Runnel does not know it
    return [{"id": i, "object": "model", "created": 0, "owned_by": i.split("/", 1)[0]} for i in ids]


def _check_model(services: ServicesDep, model_id: str | None) -> None:
    """An unknown model, however it is spelled, is OpenAI's 404 ``model_not_found``."""
    try:
        services.registry.resolve(model_id)
    except ModelNotFound:
        raise
    except InvalidRequest as exc:
        raise ModelNotFound(f"The model '{model_id}' does not exist ({exc.message})") from exc


# chat completions


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: openai_chat.ChatCompletionRequest, services: ServicesDep, user: PrincipalDep
) -> Response:
    start = openai_chat.parse(body)
    _check_model(services, start.model)
    generation = await services.chat.complete(
        user.id, start.prompt, start.model, user.limits, start.max_tokens
    )
    stream_id = generation.stream_id
    completion_id = CHAT_PREFIX + ids_of(stream_id)
    created = int(time.time())
    model_id = generation.model
    headers = {STREAM_HEADER: stream_id}
    if start.stream:
        first = await services.broker.read(stream_id, 0, timeout=0)
        if first is None:  # cannot happen: the stream was created before start returned
            raise NotFound("the stream is gone")
        encoder = openai_chat.ChunkEncoder(completion_id, created, model_id, start.include_usage)
        # nothing else can read an unstored reply: a client that leaves stops it
        return encoded_stream(
            services.broker,
            stream_id,
            first,
            services.settings,
            encoder,
            on_gone=_stopper(services, stream_id),
            headers=headers,
        )
    collected = await collect(services.broker, stream_id)
    terminal = collected.terminal
    if isinstance(terminal, Error):
        return _error_response(terminal.code, terminal.message, headers)
    model_id = collected.status.model if collected.status else model_id
    return JSONResponse(
        openai_chat.completion_object(
            completion_id, created, terminal.model or model_id, collected.content, terminal
        ),
        headers=headers,
    )


def _stopper(services: ServicesDep, stream_id: str) -> Callable[[], None]:
    def stop() -> None:
        services.generations.cancel(stream_id)

    return stop


def _error_response(code: str, message: str, headers: dict[str, str]) -> JSONResponse:
    """An error of a generation that started: never retried (a retry would start another)."""
    return JSONResponse(
        error_object(code, message),
        error_status(code, BY_CODE.get(code, Internal).status),
        headers={**headers, "x-should-retry": "false"},
    )


# responses


@router.post("/responses", response_model=None)
async def create_response(
    body: ResponseRequest, services: ServicesDep, user: PrincipalDep
) -> Response:
    start = openai_responses.parse(body)
    _check_model(services, start.model)
    chat = services.chat
    if start.store:
        generation = await _stored_reply(chat, user, start)
    else:
        generation = await chat.complete(
            user.id,
            await _unstored_prompt(chat, user.id, start),
            start.model,
            user.limits,
            start.max_output_tokens,
        )
    stream_id = generation.stream_id
    response_id = RESPONSE_PREFIX + ids_of(stream_id)
    info = openai_responses.info_of(body, response_id, int(time.time()), generation.model)
    headers = {STREAM_HEADER: stream_id}
    if start.stream:
        first = await services.broker.read(stream_id, 0, timeout=0)
        if first is None:
            raise NotFound("the stream is gone")
        unstored = not start.store
        return encoded_stream(
            services.broker,
            stream_id,
            first,
            services.settings,
            ResponseEncoder(info),
            # a stored response goes on without its reader (it can be retrieved); an
            # unstored one has no other reader
            on_gone=_stopper(services, stream_id) if unstored else None,
            headers=headers,
        )
    if start.background:
        started = Outcome("queued", "", None, generation.model)
        return JSONResponse(openai_responses.response_object(info, started), headers=headers)
    collected = await collect(services.broker, stream_id)
    events: list[Event] = [collected.content, collected.terminal]
    if collected.status is not None:
        events.insert(0, collected.status)
    outcome = openai_responses.outcome_of_events(events)
    return JSONResponse(openai_responses.response_object(info, outcome), headers=headers)


async def _stored_reply(chat: ChatService, user: Principal, start: ResponseStart) -> Generation:
    """Start the reply of a stored response: a new conversation, or the next turn of the
    previous response's."""
    if start.previous_response_id is None:
        conversation = await chat.create_conversation(user.id, None, start.model, start.system)
        try:
            return await chat.continue_with(
                user.id,
                conversation,
                start.turn,
                start.model,
                limits=user.limits,
                max_tokens=start.max_output_tokens,
            )
        except RunnelError:
            # the client never learns the conversation's id: leave nothing behind
            await chat.delete_conversation(user.id, conversation.id)
            raise
    previous, conversation = await _previous(chat, user.id, start.previous_response_id)
    try:
        return await chat.continue_with(
            user.id,
            conversation,
            start.turn,
            start.model,
            system_prompt=start.system,
            limits=user.limits,
            max_tokens=start.max_output_tokens,
        )
    except RunnelError:
        await _drop_failed_turn(chat, user.id, conversation.id, previous)
        raise


async def _previous(
    chat: ChatService, user_id: str, response_id: str
) -> tuple[Message, Conversation]:
    """The response a request continues, and its conversation; it must be the latest."""
    stream_id = stream_of(response_id, RESPONSE_PREFIX)
    try:
        if stream_id is None:
            raise NotFound("no such response")
        previous = await chat.reply_of_stream(user_id, stream_id)
    except NotFound as exc:
        raise NotFound(f"Previous response with id '{response_id}' not found.") from exc
    view = await chat.get_conversation(user_id, previous.conversation_id)
    latest = next((m for m in reversed(view.messages) if m.role == "assistant"), None)
    if latest is None or latest.id != previous.id:
        raise InvalidParam(
            "previous_response_id",
            "only the latest response of a conversation can be continued",
        )
    return previous, view.conversation


async def _drop_failed_turn(
    chat: ChatService, user_id: str, conversation_id: str, previous: Message
) -> None:
    """A reply that failed before its stream began answered the client with an error and
    no id: take its turn back out, so the previous response stays the latest."""
    view = await chat.get_conversation(user_id, conversation_id)
    last = view.messages[-1] if view.messages else None
    # only a reply that failed: another request's may be streaming there now
    if last is not None and last.id != previous.id and last.status == "error":
        await chat.delete_reply(user_id, last)


async def _unstored_prompt(
    chat: ChatService, user_id: str, start: ResponseStart
) -> list[ChatMessage]:
    prompt: list[ChatMessage] = []
    system = start.system
    if start.previous_response_id is not None:
        previous, conversation = await _previous(chat, user_id, start.previous_response_id)
        if system is None:
            system = conversation.system_prompt
        view = await chat.get_conversation(user_id, conversation.id)
        prompt = [
            {"role": m.role, "content": m.content}
            for m in view.messages
            if m.role != "system" and m.content and m.seq <= previous.seq
        ]
    if system:
        prompt.insert(0, {"role": "system", "content": system})
    return fold_system([*prompt, *start.turn])


@router.get("/responses/{response_id}", response_model=None)
async def retrieve_response(
    response_id: str,
    services: ServicesDep,
    user: UserDep,
    stream: bool = False,
    starting_after: int | None = Query(default=None, ge=0),
) -> Response:
    message, info = await _stored(services, user, response_id)
    stream_id = message.stream_id or ""
    if stream:
        first = await services.broker.read(stream_id, 0, timeout=0)
        encoder = ResponseEncoder(info, starting_after)
        if first is not None:
            return encoded_stream(services.broker, stream_id, first, services.settings, encoder)
        if starting_after is not None:
            raise InvalidParam(
                "starting_after",
                "this response's events are no longer kept: retrieve it without starting_after",
            )
        # the log expired: its stored reply, as one stream of events
        events = openai_responses.events_of_message(message, stream_id)
        return StreamingResponse(
            iter([encoder.encode(events, 1)]),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", STREAM_HEADER: stream_id},
        )
    return JSONResponse(
        openai_responses.response_object(info, await _outcome(services, message)),
        headers={STREAM_HEADER: stream_id},
    )


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    message, info = await _stored(services, user, response_id)
    if message.status == "streaming" and message.stream_id is not None:
        await services.chat.cancel(user, message.stream_id, None)
        await services.chat.wait_for_end(message.stream_id)
        message, info = await _stored(services, user, response_id)
    return openai_responses.response_object(info, await _outcome(services, message))


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, services: ServicesDep, user: UserDep) -> dict[str, Any]:
    message, _ = await _stored(services, user, response_id)
    await services.chat.delete_reply(user, message)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


async def _stored(
    services: ServicesDep, user_id: str, response_id: str
) -> tuple[Message, ResponseInfo]:
    """A stored response's message and what its response object says besides the output."""
    stream_id = stream_of(response_id, RESPONSE_PREFIX)
    try:
        if stream_id is None:
            raise NotFound("no such response")
        message = await services.chat.reply_of_stream(user_id, stream_id)
    except NotFound as exc:
        raise NotFound(f"Response with id '{response_id}' not found.") from exc
    view = await services.chat.get_conversation(user_id, message.conversation_id)
    earlier = [m for m in view.messages if m.role == "assistant" and m.seq < message.seq]
    previous = earlier[-1].stream_id if earlier else None
    info = ResponseInfo(
        response_id,
        message.created_at // 1000,
        message.model or view.conversation.model or services.registry.default_model,
        instructions=view.conversation.system_prompt,
        previous_response_id=RESPONSE_PREFIX + ids_of(previous) if previous else None,
    )
    return message, info


async def _outcome(services: ServicesDep, message: Message) -> Outcome:
    """Where a stored response stands: from the log while it streams (the store is only
    checkpointed), else from the store."""
    if message.status == "streaming" and message.stream_id is not None:
        events = await _logged(services, message.stream_id)
        if events is not None:
            return openai_responses.outcome_of_events(events)
    return openai_responses.outcome_of_message(message)


async def _logged(services: ServicesDep, stream_id: str) -> list[Event] | None:
    """Every event of a stream logged so far (None when it is not kept)."""
    events: list[Event] = []
    position = 0
    while True:
        batch = await services.broker.read(stream_id, position, timeout=0, limit=1 << 20)
        if batch is None:
            return None if position == 0 else events
        events.extend(batch.events)
        if batch.finished or not batch.events:
            return events
        position = batch.first_id + len(batch.events) - 1
