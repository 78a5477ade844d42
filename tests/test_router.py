"""The router's rule at its edges, with scripted in-process providers: only text ends the
retryable head of a reply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from runnel.errors import ProviderError
from runnel.providers.base import ChatMessage, Delta, Finish, Provider, ProviderStream
from runnel.providers.router import Candidate, RetryPolicy, Route, Router


class Scripted(Provider):
    """Each ``open`` plays the next script: deltas, then an optional error."""

    kind = "scripted"

    def __init__(self, scripts: list[tuple[list[Delta], Exception | None]]) -> None:
        super().__init__("scripted")
        self.scripts = scripts
        self.opened = 0

    async def open(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        stream: bool = True,
    ) -> ProviderStream:
        deltas, error = self.scripts[self.opened]
        self.opened += 1
        return _Stream(deltas, error)

    async def list_models(self) -> list[str]:
        return ["m"]


class _Stream:
    def __init__(self, deltas: list[Delta], error: Exception | None) -> None:
        self.deltas = deltas
        self.error = error

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._run()

    async def _run(self) -> AsyncIterator[Delta]:
        for delta in self.deltas:
            yield delta
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        return None


async def relay(router: Router, provider: Scripted) -> list[Delta]:
    route = Route("scripted/m", (Candidate(provider, "m", "scripted/m"),))
    routed = await router.open(route, [{"role": "user", "content": "hi"}], max_tokens=10)
    got = [delta async for delta in routed.head()]
    got += [delta async for delta in routed.tail()]
    await routed.aclose()
    return got


def test_an_empty_delta_is_not_text_a_failure_after_it_is_retried() -> None:
    provider = Scripted([([""], ProviderError("overloaded")), (["fine", Finish("stop")], None)])
    got = asyncio.run(relay(Router(RetryPolicy(base_delay=0.0)), provider))
    assert [d for d in got if d] == ["fine", Finish("stop")]
    assert provider.opened == 2


def test_a_failure_after_text_is_not_retried() -> None:
    provider = Scripted([(["some"], ProviderError("overloaded")), (["never"], None)])
    router = Router(RetryPolicy(base_delay=0.0))

    async def run() -> BaseException | None:
        try:
            await relay(router, provider)
        except ProviderError as exc:
            return exc
        return None

    assert isinstance(asyncio.run(run()), ProviderError)
    assert provider.opened == 1


class _Messages(list[ChatMessage]):
    """A prompt that can be watched with a weak reference."""


def test_the_prompt_is_let_go_once_text_arrived() -> None:
    import gc
    import weakref

    provider = Scripted([(["text", "more", Finish("stop")], None)])
    router = Router(RetryPolicy(base_delay=0.0))

    async def run() -> None:
        prompt = _Messages([{"role": "user", "content": "a long conversation"}])
        watch = weakref.ref(prompt)
        route = Route("scripted/m", (Candidate(provider, "m", "scripted/m"),))
        routed = await router.open(route, prompt, max_tokens=10)
        del prompt
        head = [delta async for delta in routed.head()]
        assert head == ["text"]
        gc.collect()
        assert watch() is None, "the routed stream still holds the prompt"
        assert [delta async for delta in routed.tail()] == ["more", Finish("stop")]
        await routed.aclose()

    asyncio.run(run())
