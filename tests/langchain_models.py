"""LangChain's own fake chat models, as importable attributes for the ``langchain`` provider
tests (``options.models = {fast = "tests.langchain_models:fast"}``).

Most are zero-argument factories (called once when the provider is created); ``pong`` is
a model instance. ``Watch`` is a LangChain callback handler that sees every chunk a model
produces and how its run ended, so a test can tell that a cancelled model stopped.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import openai
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, BaseMessage

REPLY = "Hello, wörld 🎉 from a LangChain model!\n```py\nx = 1\n```"
SLOW_REPLY = "".join(f"t{i} " for i in range(300))
BLOCKS_TEXT = "Block one. raw Block two."
PARTIAL_AT = 4  # ``midway`` fails on its fifth chunk (one character each)


class Watch(AsyncCallbackHandler):
    """Counts a model's runs and chunks; records how each run ended."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.starts = 0
        self.chunks = 0
        self.chunk_times: list[float] = []
        self.errors: list[BaseException] = []
        self.error_times: list[float] = []
        self.ends = 0

    async def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.starts += 1

    async def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        self.chunks += 1
        self.chunk_times.append(time.monotonic())

    async def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self.errors.append(error)
        self.error_times.append(time.monotonic())

    async def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.ends += 1


SLOW_WATCH = Watch()
BROKEN_WATCH = Watch()


def fast() -> GenericFakeChatModel:
    """Streams ``REPLY`` word by word (LangChain runs its sync ``_stream`` in a thread)."""
    return GenericFakeChatModel(messages=itertools.cycle([REPLY]))


pong = FakeListChatModel(responses=["pong"])
"""A model instance rather than a factory; streams natively, one character per chunk."""


def slow() -> FakeListChatModel:
    """Streams ``SLOW_REPLY`` one character every 20 ms from a native async generator."""
    return FakeListChatModel(responses=[SLOW_REPLY], sleep=0.02, callbacks=[SLOW_WATCH])


def blocks() -> FakeMessagesListChatModel:
    """Cannot stream: LangChain's ``astream`` yields the whole ``AIMessage`` (not a chunk),
    whose content is a list of blocks, with usage and an Anthropic-style stop reason."""
    message = AIMessage(
        content=[
            {"type": "reasoning", "reasoning": "The user wants blocks."},
            {"type": "text", "text": "Block one. "},
            {"type": "tool_call", "id": "call_1", "name": "search", "args": {}},
            "raw ",
            {"type": "text", "text": "Block two."},
        ],
        usage_metadata={"input_tokens": 11, "output_tokens": 5, "total_tokens": 16},
        response_metadata={"stop_reason": "max_tokens"},
    )
    return FakeMessagesListChatModel(responses=[message])


def broken() -> FakeListChatModel:
    """Raises LangChain's ``FakeListChatModelError`` before its first chunk."""
    return FakeListChatModel(responses=["never"], error_on_chunk_number=0, callbacks=[BROKEN_WATCH])


def midway() -> FakeListChatModel:
    """Sends ``PARTIAL_AT`` characters of "abcdefgh", then raises."""
    return FakeListChatModel(responses=["abcdefgh"], error_on_chunk_number=PARTIAL_AT)


class _Raising:
    """An endless iterator whose every item is an exception: ``GenericFakeChatModel`` takes
    one item per call, so each call of the model raises ``make()``."""

    def __init__(self, make: Callable[[], Exception]) -> None:
        self._make = make

    def __iter__(self) -> Iterator[AIMessage]:
        return self

    def __next__(self) -> AIMessage:
        raise self._make()


def _raises(make: Callable[[], Exception]) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=_Raising(make))


def _response(status: int, **headers: str) -> httpx2.Response:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/messages")
    return httpx2.Response(status, headers=headers, request=request)


def openai_auth() -> GenericFakeChatModel:
    """What langchain-openai raises for a rejected key."""
    return _raises(
        lambda: openai.AuthenticationError("Incorrect API key", response=_response(401), body=None)
    )


def openai_rate_limited() -> GenericFakeChatModel:
    return _raises(
        lambda: openai.RateLimitError(
            "slow down", response=_response(429, **{"retry-after": "7"}), body=None
        )
    )


def anthropic_auth() -> GenericFakeChatModel:
    """What langchain-anthropic raises for a rejected key."""
    return _raises(
        lambda: anthropic.AuthenticationError(
            "invalid x-api-key", response=_response(401), body=None
        )
    )


def timeout() -> GenericFakeChatModel:
    return _raises(lambda: TimeoutError("read timed out"))


NOT_A_MODEL = "a string"


def not_a_model() -> str:
    return "not a model"


def exploding() -> GenericFakeChatModel:
    raise RuntimeError("no credentials configured")
