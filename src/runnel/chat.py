"""Chat operations: conversations, sending a message, regenerating, attaching to streams.

This is what the HTTP handlers call. It validates input against the configured limits,
builds the prompt from the stored conversation, and hands a ``StartRequest`` to the
generation service. Ownership is checked here: another user's conversation or stream is
``NotFound``, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runnel import transfer
from runnel.accounts.records import Limits
from runnel.broker import Broker, StreamMeta
from runnel.errors import InvalidRequest, NotFound, StreamInProgress
from runnel.generation import Generation, GenerationService, StartRequest
from runnel.ids import new_id
from runnel.metrics import Metrics
from runnel.providers.base import ChatMessage
from runnel.providers.registry import Registry
from runnel.providers.router import Route
from runnel.quotas import Quotas
from runnel.settings import Settings
from runnel.store import search
from runnel.store.records import Conversation, Message, NewMessage
from runnel.store.sql import Store, now_ms

DEFAULT_TITLE = "New conversation"
TITLE_LENGTH = 80


@dataclass(frozen=True, slots=True)
class ConversationView:
    conversation: Conversation
    messages: list[Message]


class ChatService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        broker: Broker,
        generations: GenerationService,
        registry: Registry,
        quotas: Quotas,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.generations = generations
        self.registry = registry
        self.quotas = quotas
        self.metrics = metrics

    # conversations

    async def create_conversation(
        self, user_id: str, title: str | None, model: str | None, system_prompt: str | None
    ) -> Conversation:
        if model is not None:
            self.registry.resolve(model)
        if system_prompt is not None:
            self._check_length(system_prompt, "system prompt")
        return await self.store.create_conversation(
            new_id("c"), user_id, _title(title) or DEFAULT_TITLE, model, system_prompt
        )

    async def conversation_of_client(
        self, user_id: str, conversation_id: str, model: str | None
    ) -> tuple[Conversation, bool]:
        """The conversation a client names by an id of its own (``conversation_id`` is
        derived from it), created on first use; True when this call created it."""
        try:
            return await self.store.get_conversation(user_id, conversation_id), False
        except NotFound:
            pass
        if model is not None:
            self.registry.resolve(model)
        return await self.store.create_conversation_once(
            conversation_id, user_id, DEFAULT_TITLE, model
        )

    async def list_conversations(
        self, user_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Conversation], str | None]:
        return await self.store.list_conversations(user_id, limit, cursor)

    async def get_conversation(self, user_id: str, conversation_id: str) -> ConversationView:
        conversation = await self.store.get_conversation(user_id, conversation_id)
        return ConversationView(conversation, await self.store.list_messages(conversation_id))

    async def search(
        self, user_id: str, query: str, limit: int
    ) -> list[tuple[Conversation, search.Hit]]:
        return await self.store.search_conversations(user_id, query, limit)

    async def import_conversation(
        self, user_id: str, doc: transfer.ImportDocument
    ) -> ConversationView:
        """A new conversation of ``user_id`` from a JSON export."""
        conversation, messages = transfer.records(doc, user_id, now_ms())
        for text in (conversation.title, conversation.system_prompt or ""):
            _check_unicode(text, "the conversation")
        for message in messages:
            _check_unicode(message.content, "a message")
            _check_unicode(message.model or "", "a message's model")
            _check_unicode(message.error_message or "", "a message's error")
        await self.store.import_conversation(conversation, messages)
        return ConversationView(conversation, messages)

    async def update_conversation(
        self, user_id: str, conversation_id: str, changes: dict[str, Any]
    ) -> Conversation:
        if "title" in changes:
            title = _title(changes["title"])
            if not title:
                raise InvalidRequest("title must not be empty")
            changes["title"] = title
        if changes.get("model") is not None:
            self.registry.resolve(changes["model"])
        if changes.get("system_prompt") is not None:
            self._check_length(changes["system_prompt"], "system prompt")
        return await self.store.update_conversation(user_id, conversation_id, changes)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> None:
        active = await self.store.delete_conversation(user_id, conversation_id)
        if active is not None and not self.generations.cancel(active):
            await self.broker.request_cancel(active, None)

    # replies

    async def send_stateless(
        self,
        user_id: str,
        message: str,
        history: Sequence[ChatMessage],
        model: str | None,
        limits: Limits | None = None,
    ) -> Generation:
        self._check_message(message)
        return await self.complete(
            user_id, [*history, {"role": "user", "content": message}], model, limits
        )

    async def complete(
        self,
        user_id: str,
        prompt: Sequence[ChatMessage],
        model: str | None,
        limits: Limits | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        """A reply to ``prompt`` (the whole conversation, newest message last), stored
        nowhere: the stateless endpoints and the dialects' unstored requests."""
        limit = self.settings.max_history_messages + 1
        if len(prompt) > limit:
            raise InvalidRequest(f"the prompt has {len(prompt)} messages; the limit is {limit}")
        if not any(item["role"] == "user" for item in prompt):
            raise InvalidRequest("the prompt has no user message")
        for item in prompt:
            self._check_length(item["content"], "a message")
        self._check_history_size(prompt)
        route = self.registry.resolve(model)
        limits = limits or Limits()
        await self.quotas.admit(user_id, limits)
        return await self.generations.start(
            StartRequest(
                user_id,
                route,
                list(prompt),
                count_usage=self.quotas.daily_tokens(limits) > 0,
                max_tokens=max_tokens,
            )
        )

    async def continue_with(
        self,
        user_id: str,
        conversation: Conversation,
        turn: Sequence[ChatMessage],
        model: str | None,
        *,
        system_prompt: str | None = None,
        limits: Limits | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        """Append ``turn`` (user and assistant messages, a user message last) to a stored
        conversation and reply to it; ``system_prompt`` replaces the conversation's for
        this reply only."""
        if not turn or turn[-1]["role"] != "user":
            raise InvalidRequest("the input must end with a user message")
        for item in turn:
            if item["role"] == "system":
                raise InvalidRequest("system messages go in the instructions")
            self._check_length(item["content"], "a message")
        self._check_message(turn[-1]["content"])
        if system_prompt is not None:
            self._check_length(system_prompt, "instructions")
        conversation = await self._idle_conversation(user_id, conversation.id)
        route = self.registry.resolve(model or conversation.model)
        history = await self.store.list_messages(conversation.id)
        title = None
        if not history and conversation.title == DEFAULT_TITLE:
            title = _title(turn[-1]["content"])
        prompt = _prompt(conversation, history, system_prompt=system_prompt)
        return await self._reply(
            user_id,
            conversation,
            route,
            self._window([*prompt, *turn]),
            turn=turn,
            title=title,
            limits=limits,
            max_tokens=max_tokens,
        )

    async def reply_of_stream(self, user_id: str, stream_id: str) -> Message:
        """The stored reply a stream wrote, if the user's (else ``NotFound``)."""
        message = await self.store.reply_of_stream(user_id, stream_id)
        if message is None:
            raise NotFound("no such reply")
        return message

    async def delete_reply(self, user_id: str, message: Message) -> None:
        """Stop the reply if it is streaming, then delete its turn (user messages and
        reply), and its conversation when nothing else is left in it."""
        if message.status == "streaming" and message.stream_id is not None:
            await self.cancel(user_id, message.stream_id, None)
            await self.wait_for_end(message.stream_id)
        await self.store.delete_turn(user_id, message.conversation_id, message.id)

    async def wait_for_end(self, stream_id: str, timeout: float = 10.0) -> None:
        """Wait (up to ``timeout`` s) until the stream's terminal event is logged."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        position = 0
        while (left := deadline - loop.time()) > 0:
            batch = await self.broker.read(stream_id, position, timeout=left, limit=1 << 20)
            if batch is None or batch.finished:
                return
            position = batch.first_id + len(batch.events) - 1

    async def send(
        self,
        user_id: str,
        conversation_id: str,
        content: str,
        model: str | None,
        limits: Limits | None = None,
    ) -> Generation:
        self._check_message(content)
        conversation = await self._idle_conversation(user_id, conversation_id)
        route = self.registry.resolve(model or conversation.model)
        history = await self.store.list_messages(conversation_id)
        title = _title(content) if not history and conversation.title == DEFAULT_TITLE else None
        return await self._reply(
            user_id,
            conversation,
            route,
            self._window(_prompt(conversation, history, content)),
            turn=[{"role": "user", "content": content}],
            title=title,
            remember_model=route.model_id if model else None,
            limits=limits,
        )

    async def regenerate(
        self,
        user_id: str,
        conversation_id: str,
        model: str | None,
        limits: Limits | None = None,
    ) -> Generation:
        """Replace the last assistant reply (or answer a trailing user message), by default
        with the model that wrote the reply being replaced."""
        conversation = await self._idle_conversation(user_id, conversation_id)
        history = await self.store.list_messages(conversation_id)
        replace = None
        previous_model = None
        if history and history[-1].role == "assistant":
            replace = history[-1].id
            previous_model = history[-1].model
            history = history[:-1]
        if not history or history[-1].role != "user":
            raise InvalidRequest("there is no message to reply to")
        route = self.registry.resolve(model or previous_model or conversation.model)
        return await self._reply(
            user_id,
            conversation,
            route,
            self._window(_prompt(conversation, history)),
            replace=replace,
            limits=limits,
        )

    async def edit(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        content: str,
        model: str | None,
        limits: Limits | None = None,
    ) -> Generation:
        """Replace the text of a user message, drop the messages after it and answer it
        again (all stored only once the new reply starts)."""
        self._check_message(content)
        conversation = await self._idle_conversation(user_id, conversation_id)
        history = await self.store.list_messages(conversation_id)
        index = next((i for i, m in enumerate(history) if m.id == message_id), None)
        if index is None:
            raise NotFound("message not found")
        if history[index].role != "user":
            raise InvalidRequest("only a message of yours can be edited")
        route = self.registry.resolve(model or conversation.model)
        # a title made from the first message follows its edit; one the person set stays
        retitle = index == 0 and conversation.title == _title(history[0].content)
        return await self._reply(
            user_id,
            conversation,
            route,
            self._window(_prompt(conversation, history[:index], content)),
            edit=(message_id, content),
            title=_title(content) if retitle else None,
            remember_model=route.model_id if model else None,
            limits=limits,
        )

    async def _idle_conversation(self, user_id: str, conversation_id: str) -> Conversation:
        """The conversation, if it has no reply streaming (a fast check; the store's claim
        in ``begin_reply`` is what really guarantees one stream per conversation)."""
        conversation = await self.store.get_conversation(user_id, conversation_id)
        active = conversation.active_stream_id
        if active is not None and await self.generations.is_running(active):
            raise StreamInProgress("this conversation already has a reply streaming")
        return conversation

    async def _reply(
        self,
        user_id: str,
        conversation: Conversation,
        route: Route,
        prompt: list[ChatMessage],
        *,
        turn: Sequence[ChatMessage] = (),
        replace: str | None = None,
        edit: tuple[str, str] | None = None,
        title: str | None = None,
        remember_model: str | None = None,
        limits: Limits | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        limits = limits or Limits()
        await self.quotas.admit(user_id, limits)
        stream_id, message_id = new_id("s"), new_id("m")
        new = [NewMessage(new_id("m"), m["role"], m["content"], "complete") for m in turn]
        new.append(NewMessage(message_id, "assistant", "", "streaming", route.model_id, stream_id))
        return await self.generations.start(
            StartRequest(
                user_id,
                route,
                prompt,
                conversation_id=conversation.id,
                new_messages=new,
                replace=replace,
                edit=edit,
                title=title,
                remember_model=remember_model,
                stale_claim=conversation.active_stream_id,
                stream_id=stream_id,
                message_id=message_id,
                count_usage=self.quotas.daily_tokens(limits) > 0,
                max_tokens=max_tokens,
            )
        )

    # streams

    async def stream_meta(self, user_id: str, stream_id: str) -> StreamMeta:
        """The stream, if it exists, is kept and is the user's (else ``NotFound``)."""
        meta = await self.broker.meta(stream_id)
        if meta is None or meta.user_id != user_id:
            raise NotFound("stream not found or expired")
        return meta

    async def conversation_stream(
        self, user_id: str, conversation_id: str, resuming: bool
    ) -> str | None:
        """The stream to attach to: the active one; when resuming, also the last one if kept."""
        conversation = await self.store.get_conversation(user_id, conversation_id)
        stream_id = conversation.active_stream_id
        if stream_id is None and resuming:
            messages = await self.store.list_messages(conversation_id)
            stream_id = next(
                (m.stream_id for m in reversed(messages) if m.role == "assistant"), None
            )
        if stream_id is None:
            return None
        meta = await self.broker.meta(stream_id)
        return stream_id if meta is not None and meta.user_id == user_id else None

    async def cancel(self, user_id: str, stream_id: str, kept_through: int | None) -> bool:
        """Stop a stream, wherever it runs; True when it was still running. Idempotent."""
        await self.stream_meta(user_id, stream_id)
        if self.generations.cancel(stream_id, kept_through):
            self.metrics.cancel_accepted()
            return True
        end = await self.broker.read(stream_id, 1 << 62, timeout=0)
        if end is None or end.finished:
            return False
        await self.broker.request_cancel(stream_id, kept_through)
        self.metrics.cancel_accepted()
        return True

    async def stop_streams_of(self, user_id: str) -> int:
        """Stop every reply of a user, wherever it runs (a disabled account); how many."""
        stream_ids = await self.generations.streams_of(user_id)
        for stream_id in stream_ids:
            if not self.generations.cancel(stream_id):
                await self.broker.request_cancel(stream_id, None)
        return len(stream_ids)

    # validation

    def _check_message(self, content: str) -> None:
        if not content.strip():
            raise InvalidRequest("message is empty")
        self._check_length(content, "message")

    def _check_length(self, text: str, what: str) -> None:
        _check_unicode(text, what)
        limit = self.settings.max_message_chars
        if len(text) > limit:
            raise InvalidRequest(
                f"{what} is too long ({len(text)} characters; the limit is {limit})"
            )

    def _window(self, prompt: list[ChatMessage]) -> list[ChatMessage]:
        """The most recent part of a stored conversation that fits the history limits.

        The system prompt is always kept; older turns are dropped first, and the window never
        starts with an assistant message. The newest message must fit on its own."""
        system = prompt[:1] if prompt and prompt[0]["role"] == "system" else []
        turns = prompt[len(system) :]
        budget = self.settings.max_history_chars - sum(len(m["content"]) for m in system)
        kept = 0
        for message in reversed(turns):
            size = len(message["content"])
            if kept == self.settings.max_history_messages or size > budget:
                break
            budget -= size
            kept += 1
        window = turns[len(turns) - kept :]
        while window and window[0]["role"] == "assistant":
            window = window[1:]
        if not window:
            raise InvalidRequest("the message does not fit in the history limits")
        return system + window

    def _check_history_size(self, prompt: Sequence[ChatMessage]) -> None:
        total = sum(len(m["content"]) for m in prompt)
        if total > self.settings.max_history_chars:
            raise InvalidRequest(
                f"the conversation is too long ({total} characters; the limit is "
                f"{self.settings.max_history_chars})"
            )


def _prompt(
    conversation: Conversation,
    history: Sequence[Message],
    new: str | None = None,
    system_prompt: str | None = None,
) -> list[ChatMessage]:
    prompt: list[ChatMessage] = []
    system = conversation.system_prompt if system_prompt is None else system_prompt
    if system:
        prompt.append({"role": "system", "content": system})
    for message in history:
        if message.role == "assistant" and not message.content:
            continue
        prompt.append({"role": message.role, "content": message.content})
    if new is not None:
        prompt.append({"role": "user", "content": new})
    return prompt


def _check_unicode(text: str, what: str) -> None:
    """Lone UTF-16 surrogates (``"\\ud800"`` in JSON) are not text; refuse them at the door."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{what} is not valid Unicode text") from exc


def _title(text: str | None) -> str | None:
    if text is None:
        return None
    _check_unicode(text, "title")
    line = " ".join(text.split())
    return line[: TITLE_LENGTH - 1] + "…" if len(line) > TITLE_LENGTH else line
