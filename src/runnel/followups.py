"""What a model writes after a reply: follow-up suggestions and a conversation's title.

When a stored reply completes, ``GenerationService`` calls ``Followups.reply_completed``,
which starts a task and returns: nothing here delays the reply's ``complete`` event. The
task asks ``suggestions_model`` (default: the reply's model) for up to three short
follow-up questions and stores them on the assistant message (an empty list when there are
none, suggestions are off, or the call failed or took longer than ``followup_timeout``);
after the first reply of a conversation it asks ``title_model`` for a title that replaces
the provisional one (made from the first message) unless the person renamed it meanwhile.
Each result is announced on the user's notices (``{"type": "suggestions", …}``,
``{"type": "conversation", …}``), which live feeds carry and ``wait_for_suggestions``
waits on, in any process.

The calls go through the same router as replies (retries, fallbacks), not through the
event log: they are not replies, nobody streams them. The demo provider answers offline
(``demo_suggestions``, ``demo_title``). A failure is logged and counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Sequence

import orjson

from runnel.broker import Broker
from runnel.errors import RunnelError
from runnel.metrics import Metrics
from runnel.providers.base import ChatMessage, Finish
from runnel.providers.demo import demo_suggestions, demo_title
from runnel.providers.registry import Registry
from runnel.providers.router import Route, RoutedStream, Router
from runnel.settings import Settings
from runnel.store.records import Message
from runnel.store.sql import Store

log = logging.getLogger(__name__)

MAX_SUGGESTIONS = 3
SUGGESTION_CHARS = 120
TITLE_CHARS = 80
CONTEXT_CHARS = 4000  # of the question and of the reply, in what the model is shown
OUTPUT_TOKENS = 200

SUGGEST = (
    "Suggest up to three short follow-up questions the user might ask next about this "
    "conversation. Write each on its own line, in the user's language, with no numbering "
    "and nothing else."
)
TITLE = (
    "Write a short title (at most six words) for this conversation, in the user's "
    "language. Answer with the title only, without quotes."
)


def parse_suggestions(text: str) -> list[str]:
    """The model's lines, without bullets or numbers, at most three."""
    found: list[str] = []
    for line in text.splitlines():
        item = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip('"“”')
        if item and item not in found:
            found.append(item[:SUGGESTION_CHARS])
        if len(found) == MAX_SUGGESTIONS:
            break
    return found


def parse_title(text: str) -> str | None:
    line = next((line for line in text.splitlines() if line.strip()), "")
    title = " ".join(line.strip().strip("\"'“”#*").split()).removeprefix("Title:").strip()
    return title[:TITLE_CHARS] or None


class Followups:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        broker: Broker,
        registry: Registry,
        router: Router,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.registry = registry
        self.router = router
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    def reply_completed(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        model: str,
        provisional_title: str | None,
    ) -> None:
        """A stored reply completed; ``provisional_title``: the title its conversation got
        from its first message (None after the first reply)."""
        task = asyncio.ensure_future(
            self._run(user_id, conversation_id, message_id, model, provisional_title)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        model: str,
        provisional_title: str | None,
    ) -> None:
        history = await self.store.list_messages(conversation_id)
        reply = next((m for m in history if m.id == message_id), None)
        if reply is None:  # deleted meanwhile
            return
        jobs = [self._suggest(user_id, conversation_id, history, reply, model)]
        if provisional_title is not None and self.settings.titles:
            jobs.append(self._title(user_id, conversation_id, history, model, provisional_title))
        await asyncio.gather(*jobs)

    async def _suggest(
        self,
        user_id: str,
        conversation_id: str,
        history: Sequence[Message],
        reply: Message,
        model: str,
    ) -> None:
        suggestions: list[str] = []
        if self.settings.suggestions:
            route = self._route(self.settings.suggestions_model or model)
            if route is not None:
                question = _question(history, reply)
                if _is_demo(route):
                    suggestions = demo_suggestions(question)
                else:
                    text = await self._ask(route, SUGGEST, question, reply.content, "suggestions")
                    suggestions = parse_suggestions(text or "")
        try:
            await self.store.set_suggestions(reply.id, suggestions)
            await self.broker.notify(
                user_id,
                {
                    "type": "suggestions",
                    "conversationId": conversation_id,
                    "messageId": reply.id,
                    "suggestions": suggestions,
                },
            )
        except Exception:
            log.warning("storing the suggestions of %s failed", reply.id, exc_info=True)

    async def _title(
        self,
        user_id: str,
        conversation_id: str,
        history: Sequence[Message],
        model: str,
        provisional: str,
    ) -> None:
        route = self._route(self.settings.title_model or model)
        if route is None or not history:
            return
        question = history[0].content
        answer = history[1].content if len(history) > 1 else ""
        if _is_demo(route):
            title: str | None = demo_title(question)
        else:
            title = parse_title(await self._ask(route, TITLE, question, answer, "title") or "")
        if title is None or title == provisional:
            return
        try:
            if await self.store.set_generated_title(conversation_id, provisional, title):
                await self.broker.notify(
                    user_id,
                    {"type": "conversation", "conversationId": conversation_id, "title": title},
                )
        except Exception:
            log.warning("storing the title of %s failed", conversation_id, exc_info=True)

    def _route(self, model: str) -> Route | None:
        try:
            return self.registry.resolve(model)
        except RunnelError as exc:
            log.warning("no follow-up model %r: %s", model, exc)
            return None

    async def _ask(
        self, route: Route, instruction: str, question: str, answer: str, kind: str
    ) -> str | None:
        """The model's whole answer, or None (logged and counted) when it failed or took
        longer than ``followup_timeout``."""
        prompt: list[ChatMessage] = [
            {"role": "system", "content": instruction},
            {
                "role": "user",
                "content": f"User: {question[:CONTEXT_CHARS]}\n\nAssistant: "
                f"{answer[:CONTEXT_CHARS]}",
            },
        ]
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.followup_timeout):
                stream = await self.router.open(route, prompt, max_tokens=OUTPUT_TOKENS)
                try:
                    text = await _collect(stream)
                finally:
                    with contextlib.suppress(Exception):
                        await stream.aclose()
        except TimeoutError:
            self.metrics.followup(kind, "timeout")
            log.warning("the %s call took longer than %.0f s", kind, time.monotonic() - began)
            return None
        except Exception as exc:  # noqa: BLE001 (whatever a provider raises: never the reply's)
            self.metrics.followup(kind, "error")
            log.warning("the %s call failed: %s", kind, exc)
            return None
        self.metrics.followup(kind, "ok")
        return text

    async def wait_for_suggestions(
        self, user_id: str, message_id: str, timeout: float
    ) -> list[str] | None:
        """The reply's suggestions, waiting up to ``timeout`` s for them (None: not yet)."""
        # the cursor first: suggestions stored after it are announced after it
        cursor, _ = await self.broker.read_notices(user_id, None, 0)
        deadline = time.monotonic() + timeout
        current = await self.store.get_message(message_id)
        while True:
            if current is None:
                return None
            if current.suggestions is not None:
                found: list[str] = orjson.loads(current.suggestions)
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            cursor, notices = await self.broker.read_notices(user_id, cursor, left)
            if any(n.get("messageId") == message_id for n in notices):
                current = await self.store.get_message(message_id)


async def _collect(stream: RoutedStream) -> str:
    """The text of a whole answer: the head (where the router may retry), then the tail."""
    pieces: list[str] = []
    head = stream.head()
    try:
        async for delta in head:
            if isinstance(delta, Finish):
                return "".join(pieces)
            pieces.append(delta)
    finally:
        await head.aclose()
    async for delta in stream.tail():
        if isinstance(delta, Finish):
            break
        pieces.append(delta)
    return "".join(pieces)


def _question(history: Sequence[Message], reply: Message) -> str:
    index = next(i for i, m in enumerate(history) if m.id == reply.id)
    return next((m.content for m in reversed(history[:index]) if m.role == "user"), "")


def _is_demo(route: Route) -> bool:
    return route.candidates[0].provider.kind == "demo"
