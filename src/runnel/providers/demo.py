"""The built-in ``demo`` provider: a deterministic, markdown-rich reply at a set pace.

It needs no network and no key, so a fresh install works, and tests and demos get a
reply whose text, length and timing are known in advance.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from runnel.errors import ModelNotFound
from runnel.events import Usage
from runnel.providers.base import ChatMessage, Delta, Finish, Provider

if TYPE_CHECKING:
    from runnel.settings import ProviderConfig, Settings

MODELS = ("markdown",)
_PIECE = re.compile(r"\s*\S+\s*?(?=\s|$)|\s+$", re.DOTALL)

_TEMPLATE = """\
## Hello from Runnel

You said: *{quote}* — and this reply is streaming to you **token by token** from the \
built-in demo model, with no API key and no network. Ünïcödé and emoji 🚀✨ arrive intact.

What makes the stream sturdy:

1. Every event has an id, so a dropped connection **resumes** where it stopped.
2. The reply is saved while it streams, so a refresh loses nothing.
3. *Stop* really stops the model.

```python
async def relay(stream):
    async for token in stream:
        yield token  # one event per token
```

Read about the protocol in the [Server-Sent Events spec](https://html.spec.whatwg.org/multipage/server-sent-events.html).
"""

_FILLER = (
    "\n\nParagraph {n}: the demo model keeps talking so you can watch a long reply "
    "stream, scroll and resume. Each word is its own token; the pace is set by "
    "`demo_tokens_per_second`."
)


def demo_reply(prompt: str, length: int) -> list[str]:
    """The reply to ``prompt`` as exactly ``length`` tokens (their concatenation is the text)."""
    quote = " ".join(prompt.split())[:80] or "nothing"
    pieces = tokenize(_TEMPLATE.format(quote=quote))
    n = 2
    while len(pieces) < length:
        pieces.extend(tokenize(_FILLER.format(n=n)))
        n += 1
    return pieces[:length]


def tokenize(text: str) -> list[str]:
    pieces = _PIECE.findall(text)
    assert "".join(pieces) == text
    return pieces


def create(name: str, config: ProviderConfig, settings: Settings) -> Provider:
    """The ``demo`` provider type (entry point ``runnel.providers:demo``)."""
    return DemoProvider(
        name,
        tokens_per_second=settings.demo_tokens_per_second,
        first_token_delay=settings.demo_first_token_delay,
        reply_tokens=settings.demo_reply_tokens,
    )


class DemoProvider(Provider):
    kind = "demo"

    def __init__(
        self,
        name: str = "demo",
        *,
        tokens_per_second: float = 40.0,
        first_token_delay: float = 0.15,
        reply_tokens: int = 160,
    ) -> None:
        super().__init__(name)
        self.interval = 1.0 / tokens_per_second
        self.first_token_delay = first_token_delay
        self.reply_tokens = reply_tokens

    def check_model(self, model: str) -> None:
        if model not in MODELS:
            raise ModelNotFound(f"unknown model: {self.name}/{model}")

    async def open(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        stream: bool = True,
    ) -> _DemoStream:
        self.check_model(model)
        prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        pieces = demo_reply(prompt, self.reply_tokens)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        return _DemoStream(self, pieces, max_tokens, prompt_tokens)

    async def list_models(self) -> list[str]:
        return list(MODELS)


class _DemoStream:
    def __init__(
        self, provider: DemoProvider, pieces: list[str], max_tokens: int, prompt_tokens: int
    ) -> None:
        self._provider = provider
        self._pieces = pieces
        self._max_tokens = max_tokens
        self._prompt_tokens = prompt_tokens

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._run()

    async def _run(self) -> AsyncIterator[Delta]:
        provider = self._provider
        await asyncio.sleep(provider.first_token_delay)
        sent = 0
        for piece in self._pieces:
            if sent == self._max_tokens:
                yield Finish("length", Usage(self._prompt_tokens, sent))
                return
            if sent:
                await asyncio.sleep(provider.interval)
            yield piece
            sent += 1
        yield Finish("stop", Usage(self._prompt_tokens, sent))

    async def aclose(self) -> None:
        return None


def _topic(question: str) -> str:
    words = re.findall(r"[\w'’-]+", question)[:6]
    return " ".join(words) or "this"


def demo_suggestions(question: str) -> list[str]:
    """The follow-up questions the demo model offers (offline, the same every time)."""
    topic = _topic(question)
    return [f"Tell me more about {topic}", f"Give me an example of {topic}", "Summarize that"]


def demo_title(question: str) -> str:
    """The title the demo model gives a conversation."""
    return f"Demo chat: {_topic(question)}"
