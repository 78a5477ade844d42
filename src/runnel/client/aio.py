"""``AsyncClient``: Runnel's native API from asyncio code, on httpx2 — the twin of
``sync.py``'s ``Client``: the same calls awaited, replies read with ``async for``, the same
resume. What they share is in ``_protocol.py``; the two are kept line for line alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, Self

import httpx2

from runnel.client._protocol import (
    DEFAULT_URL,
    EVENT_STREAM,
    TIMEOUT,
    Call,
    Calls,
    Reconnect,
    ReplyState,
    ReplyView,
    answer_to_reconnect,
    auth_headers,
)
from runnel.client._sse import SSEReader
from runnel.client.backoff import Backoff
from runnel.client.errors import from_answer, retry_after_seconds, unreachable
from runnel.client.events import Complete, Event, Failed, Terminal


class AsyncClient:
    """A connection pool to one server; close it (or use ``async with``) when done."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: httpx2.Timeout | float = TIMEOUT,
        backoff: Backoff | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        """``key``: an API key or token (default: ``RUNNEL_API_KEY``; none in local mode)."""
        self.url = url.rstrip("/")
        self.backoff = backoff or Backoff()
        self._http = httpx2.AsyncClient(
            base_url=self.url, headers=auth_headers(key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _json(self, call: Call) -> Any:
        try:
            response = await self._http.request(call.method, call.path, json=call.body)
        except httpx2.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        if response.status_code >= 400:
            raise from_answer(
                response.status_code, response.content, response.headers.get("retry-after")
            )
        return response.json() if response.content else None

    async def models(self) -> dict[str, Any]:
        """``{"data": [{"id", "provider", "default"}], "default"}``."""
        return dict(await self._json(Calls.models()))

    async def create_conversation(
        self, title: str | None = None, model: str | None = None, system_prompt: str | None = None
    ) -> dict[str, Any]:
        return dict(await self._json(Calls.create_conversation(title, model, system_prompt)))

    async def iter_conversations(self, page_size: int = 50) -> AsyncGenerator[dict[str, Any], None]:
        """Every conversation, newest first, a page at a time."""
        cursor: str | None = None
        while True:
            page = await self._json(Calls.conversations(page_size, cursor))
            for conversation in page["data"]:
                yield conversation
            cursor = page.get("nextCursor")
            if not cursor:
                return

    async def conversations(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` conversations (without their messages)."""
        found: list[dict[str, Any]] = []
        pages = self.iter_conversations(min(limit, 200))
        async for conversation in pages:
            found.append(conversation)
            if len(found) == limit:
                break
        await pages.aclose()
        return found

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        """The conversation with its ``messages`` and ``activeStreamId``."""
        return dict(await self._json(Calls.conversation(conversation_id)))

    async def update_conversation(
        self, conversation_id: str, title: str | None = None, model: str | None = None
    ) -> dict[str, Any]:
        """Rename it or change its model."""
        return dict(await self._json(Calls.update_conversation(conversation_id, title, model)))

    async def delete_conversation(self, conversation_id: str) -> None:
        """Delete it (its active reply, if any, is stopped)."""
        await self._json(Calls.delete_conversation(conversation_id))

    async def cancel(self, stream_id: str, last_event_id: int | None = None) -> str:
        """Stop a reply on the server; ``"cancelling"`` or ``"finished"``. With
        ``last_event_id`` only the text through that event is kept."""
        return str((await self._json(Calls.cancel(stream_id, last_event_id)))["status"])

    async def send(
        self, conversation_id: str, content: str, model: str | None = None
    ) -> AsyncReply:
        """Send a message to a conversation; its reply's stream."""
        call = Calls.send(conversation_id, content, model)
        return await self._open(call, ReplyState(conversation_id=conversation_id))

    async def ask(
        self, message: str, history: Sequence[dict[str, str]] = (), model: str | None = None
    ) -> AsyncReply:
        """A stateless reply (nothing stored): ``POST /api/v1/messages``."""
        return await self._open(Calls.ask(message, history, model), ReplyState())

    def attach(self, stream_id: str, after: int = 0) -> AsyncReply:
        """Read a stream (someone's reply, from another client too) after event ``after``;
        it connects when iterated."""
        return AsyncReply(self, ReplyState(stream_id=stream_id, last_id=after), None)

    async def _open(self, call: Call, state: ReplyState) -> AsyncReply:
        """Start a reply. Never retried: a second POST would be a second message."""
        request = self._http.build_request(
            call.method, call.path, json=call.body, headers={"accept": EVENT_STREAM}
        )
        try:
            response = await self._http.send(request, stream=True)
            if response.status_code != 200:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except httpx2.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        if response.status_code != 200:
            raise from_answer(
                response.status_code, response.content, response.headers.get("retry-after")
            )
        return AsyncReply(self, state, response)

    async def _reconnect(
        self, state: ReplyState, reader: SSEReader, stalled: int
    ) -> httpx2.Response | None:
        """A response reading ``state``'s stream after its last event; None when there is
        no more to read. Raises ``StreamLost`` after ``backoff.attempts`` attempts in a
        row, counting the ``stalled`` connections that brought nothing."""
        path = state.resume_path()
        if path is None:
            raise state.lost()
        retry_after: float | None = None
        for attempt in range(stalled, self.backoff.attempts):
            wait = self.backoff.delay(attempt, reader.retry_ms, retry_after)
            if wait:
                await asyncio.sleep(wait)
            request = self._http.build_request("GET", path, headers=state.resume_headers())
            try:
                response = await self._http.send(request, stream=True)
                if response.status_code == 200:
                    return response
                try:
                    await response.aread()
                finally:
                    await response.aclose()
            except httpx2.TransportError:
                retry_after = None
                continue
            if answer_to_reconnect(response.status_code, response.content) is Reconnect.OVER:
                return None
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
        raise state.lost()


class AsyncReply(ReplyView):
    """One reply's stream: ``async for`` its events (``Status``, ``Token``…, then
    ``Complete`` or ``Failed``). ``text`` is the text so far, ``stream_id`` its stream."""

    def __init__(
        self, client: AsyncClient, state: ReplyState, response: httpx2.Response | None
    ) -> None:
        self._client = client
        self._state = state
        self._response = response  # the answer that started it, not read yet
        self._reading: httpx2.Response | None = None
        self._reader = SSEReader()
        self._stalled = 0  # connections in a row that brought nothing new
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[Event]:
        state, reader = self._state, self._reader
        while state.terminal is None:
            # this loop owns the response it reads (an abandoned loop closes only its own)
            response, self._response = self._response, None
            if response is None:
                if self._closed:
                    return
                response = await self._client._reconnect(state, reader, self._stalled)
                if response is None:
                    return
            self._reading, before = response, state.last_id
            state.connections += 1
            reader.reset()
            try:
                async for line in response.aiter_lines():
                    event = reader.line(line)
                    if event is not None and state.accept(event):
                        yield event
                        if isinstance(event, Complete | Failed) or self._closed:
                            return
            except httpx2.TransportError:
                pass  # dropped: the rest comes from a new connection
            except httpx2.StreamClosed:
                if not self._closed:
                    raise
                return  # closed by the caller, from its loop
            finally:
                # ended, dropped, or left by the caller (break, cancelled): iterating again
                # resumes after the last event handed out
                await response.aclose()
                if self._reading is response:
                    self._reading = None
            self._stalled = 0 if state.last_id > before else self._stalled + 1

    async def wait(self) -> Terminal | None:
        """Read to the end; the terminal event (None if the stream ended without one)."""
        async for _ in self:
            pass
        return self._state.terminal

    async def stop(self, keep_shown: bool = False) -> str:
        """Stop the reply on the server; iterate on to read its end (``Complete`` with
        ``finish_reason="cancelled"``). ``keep_shown``: keep only the events seen so far
        (the server drops what it generated after them)."""
        return str((await self._client._json(self._cancel_call(keep_shown)))["status"])

    async def close(self) -> None:
        """Close its connection and end its iteration (the reply goes on on the server:
        ``stop`` stops it; ``attach(stream_id, after=last_event_id)`` reads on)."""
        self._closed = True
        for response in (self._response, self._reading):
            if response is not None:
                await response.aclose()
        self._response = self._reading = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
