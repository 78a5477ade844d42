"""``AsyncClient``: Runnel's native API from asyncio code, on httpx2 — the twin of
``sync.py``'s ``Client`` (the same calls awaited, replies read with ``async for``, the same
resume); what they share is in ``_protocol.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

import httpx2

from runnel.client._protocol import (
    DEFAULT_URL,
    EVENT_STREAM,
    TIMEOUT,
    Backoff,
    Call,
    Calls,
    ReplyState,
    ReplyView,
    SSEReader,
    auth_headers,
    no_way_back,
    resumed,
)
from runnel.client.errors import from_answer
from runnel.client.events import Complete, Event, Failed, Terminal


class AsyncClient:
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
        response = await self._http.request(call.method, call.path, json=call.body)
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

    async def conversations(self, limit: int = 50) -> list[dict[str, Any]]:
        return list((await self._json(Calls.conversations(limit)))["data"])

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        """The conversation with its ``messages``."""
        return dict(await self._json(Calls.conversation(conversation_id)))

    async def delete_conversation(self, conversation_id: str) -> None:
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
        """Read a stream (someone's reply, from another client too) after event ``after``."""
        return AsyncReply(self, ReplyState(stream_id=stream_id, last_id=after), None)

    async def _open(self, call: Call, state: ReplyState) -> AsyncReply:
        """Start a reply. Never retried: a second POST would be a second message."""
        request = self._http.build_request(
            call.method, call.path, json=call.body, headers={"accept": EVENT_STREAM}
        )
        response = await self._http.send(request, stream=True)
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            raise from_answer(
                response.status_code, response.content, response.headers.get("retry-after")
            )
        return AsyncReply(self, state, response)

    async def _reconnect(
        self, state: ReplyState, reader: SSEReader, stalled: int
    ) -> httpx2.Response | None:
        """A new response reading ``state``'s stream after its last event; None when the
        stream is over. Raises ``StreamLost`` after ``backoff.attempts`` tries (counting
        the ``stalled`` connections in a row that brought nothing)."""
        path = state.resume_path()
        if path is None:
            raise no_way_back(state)
        for attempt in range(stalled, self.backoff.attempts):
            if attempt:
                await asyncio.sleep(self.backoff.delay(attempt, reader.retry_ms))
            try:
                request = self._http.build_request("GET", path, headers=state.resume_headers())
                response = await self._http.send(request, stream=True)
            except httpx2.TransportError:
                continue
            if response.status_code != 200:
                await response.aread()
                await response.aclose()
            body = b"" if response.status_code == 200 else response.content
            answer = resumed(response.status_code, body)
            if answer is None:
                return None
            if answer:
                state.reconnects += 1
                return response
        raise no_way_back(state)


class AsyncReply(ReplyView):
    """One reply's stream: ``async for`` its events (``Status``, ``Token``…, then
    ``Complete`` or ``Failed``). ``text`` is the text so far, ``stream_id`` its stream."""

    def __init__(
        self, client: AsyncClient, state: ReplyState, response: httpx2.Response | None
    ) -> None:
        self._client = client
        self._state = state
        self._response = response
        self._reader = SSEReader()
        self._stalled = 0  # connections in a row that brought nothing new

    async def __aiter__(self) -> AsyncIterator[Event]:
        state = self._state
        while state.terminal is None:
            if self._response is None:
                self._response = await self._client._reconnect(state, self._reader, self._stalled)
                if self._response is None:
                    return
            response, before = self._response, state.last_id
            self._reader = reader = SSEReader()
            try:
                async for line in response.aiter_lines():
                    event = reader.line(line)
                    if event is not None and state.accept(event):
                        yield event
                        if isinstance(event, Complete | Failed):
                            return
            except httpx2.TransportError:
                pass  # dropped: the rest comes from a new connection
            finally:
                # ended, dropped, or left by the caller (break, Ctrl-C): iterating again
                # resumes after the last event handed out
                await response.aclose()
                self._response = None
            self._stalled = 0 if state.last_id > before else self._stalled + 1

    async def wait(self) -> Terminal | None:
        """Read to the end; the terminal event."""
        async for _ in self:
            pass
        return self._state.terminal

    async def stop(self, keep_shown: bool = False) -> str:
        """Stop the reply on the server; iterate on to read its end (``Complete`` with
        ``finish_reason="cancelled"``). ``keep_shown``: keep only the events seen so far."""
        return str((await self._client._json(self._cancel_call(keep_shown)))["status"])

    async def close(self) -> None:
        if self._response is not None:
            await self._response.aclose()
            self._response = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
