"""Routing a reply to a model: retries before the first token, fallback chains, and the
non-streaming fallback.

A ``Route`` is what a requested model id resolves to: one ``Candidate`` for a plain
``provider/model`` id, several for an alias from ``[aliases]`` (tried in order). The
``Router`` opens a route and hands the generation a ``RoutedStream`` in two phases:

* ``head()`` — everything up to and including the first text delta (or a ``Finish`` that
  came first). Until then nothing has reached a reader, so a failure may be retried:
  the same candidate again after an exponential backoff with full jitter (at least the
  upstream's ``Retry-After``) while it has attempts left and the retry budget allows the
  wait, else the next candidate of the route at once. A failure that is not retryable
  (a rejected key, an unknown model) skips to the next candidate.
* ``tail()`` — the rest, straight from the provider's own iterator: no retry (text was
  sent), and no extra layer on the per-token path.

An upstream that refuses to stream (``StreamingUnsupported``) is asked again at once with
``stream=False`` and the model is remembered as non-streaming for the life of the process;
models configured as non-streaming are never asked to stream. ``RoutedStream.model_id`` is
the model that is answering, which the ``complete`` event names.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

from runnel.errors import RunnelError, StreamingUnsupported
from runnel.providers.base import ChatMessage, Delta, Finish, Provider, ProviderStream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: Provider
    model: str  # the name the provider knows
    model_id: str  # ``provider/model``
    streaming: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    model_id: str  # what was asked for: a model id or an alias
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3  # per candidate, the first one included
    base_delay: float = 0.5
    max_delay: float = 8.0
    budget: float = 20.0  # seconds a route may spend waiting between attempts

    def backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**(failures-1))]."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        return random.uniform(0, ceiling)


class Router:
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._unstreamed: set[tuple[str, str]] = set()

    async def open(
        self, route: Route, messages: Sequence[ChatMessage], *, max_tokens: int
    ) -> RoutedStream:
        """Return once a candidate's upstream accepted the request (retrying and falling
        back as ``head`` does); raise the last failure when none did."""
        routed = RoutedStream(self, route, messages, max_tokens)
        await routed.connect()
        return routed

    def streams(self, candidate: Candidate) -> bool:
        key = (candidate.provider.name, candidate.model)
        return candidate.streaming and key not in self._unstreamed

    def remember_unstreamed(self, candidate: Candidate) -> None:
        self._unstreamed.add((candidate.provider.name, candidate.model))


class RoutedStream:
    def __init__(
        self,
        router: Router,
        route: Route,
        messages: Sequence[ChatMessage],
        max_tokens: int,
    ) -> None:
        self._router = router
        self._route = route
        self._messages = messages
        self._max_tokens = max_tokens
        self._index = 0
        self._failures = 0  # of the current candidate
        self._started_at = time.monotonic()
        self._stream: ProviderStream | None = None
        self._deltas: AsyncIterator[Delta] | None = None
        self.model_id = route.candidates[0].model_id

    async def connect(self) -> None:
        """Open the current candidate, moving on through failures until one accepts."""
        while True:
            candidate = self._route.candidates[self._index]
            try:
                stream = await self._open(candidate)
            except RunnelError as exc:
                await self._next_attempt(exc)
                continue
            self._stream = stream
            self._deltas = aiter(stream)
            self.model_id = candidate.model_id
            return

    async def _open(self, candidate: Candidate) -> ProviderStream:
        router = self._router
        streaming = router.streams(candidate)
        try:
            return await candidate.provider.open(
                candidate.model, self._messages, max_tokens=self._max_tokens, stream=streaming
            )
        except StreamingUnsupported:
            if not streaming:
                raise
            router.remember_unstreamed(candidate)
            log.info(
                "the upstream cannot stream this model; asking for whole replies",
                extra={"fields": {"model": candidate.model_id}},
            )
            return await candidate.provider.open(
                candidate.model, self._messages, max_tokens=self._max_tokens, stream=False
            )

    async def _next_attempt(self, exc: RunnelError) -> None:
        """Wait and stay on the candidate, or move to the next one; raise ``exc`` when the
        route is exhausted."""
        policy = self._router.policy
        candidate = self._route.candidates[self._index]
        self._failures += 1
        remaining = policy.budget - (time.monotonic() - self._started_at)
        if exc.retryable and self._failures < policy.attempts:
            wait = max(policy.backoff(self._failures), exc.retry_after or 0.0)
            if wait <= remaining:
                log.warning(
                    "model failed before its first token (%s); retrying in %.2f s",
                    exc.code,
                    wait,
                    extra={"fields": {"model": candidate.model_id, "attempt": self._failures}},
                )
                await asyncio.sleep(wait)
                return
        if self._index + 1 < len(self._route.candidates):
            self._index += 1
            self._failures = 0
            log.warning(
                "model failed before its first token (%s); falling back to %s",
                exc.code,
                self._route.candidates[self._index].model_id,
                extra={"fields": {"model": candidate.model_id}},
            )
            return
        raise exc

    async def head(self) -> AsyncGenerator[Delta]:
        """Deltas up to and including the first text or ``Finish``, retrying failures."""
        while True:
            deltas = self._deltas
            assert deltas is not None, "connect() first"
            try:
                async for delta in deltas:
                    yield delta
                    if (type(delta) is str and delta) or isinstance(delta, Finish):
                        # no retry from here on: the prompt (the whole conversation) is
                        # not needed any more, so the stream does not keep it alive
                        self._messages = ()
                        return  # an empty string is no text: still retryable after it
                return  # ended without a finish: the generation reports it
            except RunnelError as exc:
                await self._drop_current()
                await self._next_attempt(exc)
                await self.connect()

    def tail(self) -> AsyncIterator[Delta]:
        """The rest of the answering provider's deltas, directly."""
        assert self._deltas is not None, "connect() first"
        return self._deltas

    async def _drop_current(self) -> None:
        stream, self._stream, self._deltas = self._stream, None, None
        if stream is not None:
            try:
                await stream.aclose()
            except Exception:
                log.warning("closing the provider stream failed", exc_info=True)

    async def aclose(self) -> None:
        """Abort the answering upstream request (idempotent)."""
        stream, deltas = self._stream, self._deltas
        if deltas is not None:
            close = getattr(deltas, "aclose", None)
            if close is not None:
                await close()
        if stream is not None:
            await stream.aclose()
