"""``Client``: Runnel's native API from synchronous code, on httpx2.

A ``Reply`` is a reply's stream. Iterating it yields its events; when the connection
drops mid-reply (a transport error, a read timeout, a body that ends before the terminal
event) it reconnects with ``Last-Event-ID`` after a backoff, so the caller sees every event
once, in order. Iterating again after an interruption (Ctrl-C) picks up where it stopped.
``aio.py`` is this module's asyncio twin; what they share is in ``_protocol.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
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


class Client:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: httpx2.Timeout | float = TIMEOUT,
        backoff: Backoff | None = None,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        """``key``: an API key or token (default: ``RUNNEL_API_KEY``; none in local mode)."""
        self.url = url.rstrip("/")
        self.backoff = backoff or Backoff()
        self._http = httpx2.Client(
            base_url=self.url, headers=auth_headers(key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _json(self, call: Call) -> Any:
        response = self._http.request(call.method, call.path, json=call.body)
        if response.status_code >= 400:
            raise from_answer(
                response.status_code, response.content, response.headers.get("retry-after")
            )
        return response.json() if response.content else None

    def models(self) -> dict[str, Any]:
        """``{"data": [{"id", "provider", "default"}], "default"}``."""
        return dict(self._json(Calls.models()))

    def create_conversation(
        self, title: str | None = None, model: str | None = None, system_prompt: str | None = None
    ) -> dict[str, Any]:
        return dict(self._json(Calls.create_conversation(title, model, system_prompt)))

    def conversations(self, limit: int = 50) -> list[dict[str, Any]]:
        return list(self._json(Calls.conversations(limit))["data"])

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        """The conversation with its ``messages``."""
        return dict(self._json(Calls.conversation(conversation_id)))

    def delete_conversation(self, conversation_id: str) -> None:
        self._json(Calls.delete_conversation(conversation_id))

    def cancel(self, stream_id: str, last_event_id: int | None = None) -> str:
        """Stop a reply on the server; ``"cancelling"`` or ``"finished"``. With
        ``last_event_id`` only the text through that event is kept."""
        return str(self._json(Calls.cancel(stream_id, last_event_id))["status"])

    def send(self, conversation_id: str, content: str, model: str | None = None) -> Reply:
        """Send a message to a conversation; its reply's stream."""
        call = Calls.send(conversation_id, content, model)
        return self._open(call, ReplyState(conversation_id=conversation_id))

    def ask(
        self, message: str, history: Sequence[dict[str, str]] = (), model: str | None = None
    ) -> Reply:
        """A stateless reply (nothing stored): ``POST /api/v1/messages``."""
        return self._open(Calls.ask(message, history, model), ReplyState())

    def attach(self, stream_id: str, after: int = 0) -> Reply:
        """Read a stream (someone's reply, from another client too) after event ``after``."""
        return Reply(self, ReplyState(stream_id=stream_id, last_id=after), None)

    def _open(self, call: Call, state: ReplyState) -> Reply:
        """Start a reply. Never retried: a second POST would be a second message."""
        request = self._http.build_request(
            call.method, call.path, json=call.body, headers={"accept": EVENT_STREAM}
        )
        response = self._http.send(request, stream=True)
        if response.status_code != 200:
            response.read()
            response.close()
            raise from_answer(
                response.status_code, response.content, response.headers.get("retry-after")
            )
        return Reply(self, state, response)

    def _reconnect(
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
                time.sleep(self.backoff.delay(attempt, reader.retry_ms))
            try:
                request = self._http.build_request("GET", path, headers=state.resume_headers())
                response = self._http.send(request, stream=True)
            except httpx2.TransportError:
                continue
            if response.status_code != 200:
                response.read()
                response.close()
            body = b"" if response.status_code == 200 else response.content
            answer = resumed(response.status_code, body)
            if answer is None:
                return None
            if answer:
                state.reconnects += 1
                return response
        raise no_way_back(state)


class Reply(ReplyView):
    """One reply's stream: iterate it for its events (``Status``, ``Token``…, then
    ``Complete`` or ``Failed``). ``text`` is the text so far, ``stream_id`` its stream."""

    def __init__(self, client: Client, state: ReplyState, response: httpx2.Response | None) -> None:
        self._client = client
        self._state = state
        self._response = response
        self._reader = SSEReader()
        self._stalled = 0  # connections in a row that brought nothing new

    def __iter__(self) -> Iterator[Event]:
        state = self._state
        while state.terminal is None:
            if self._response is None:
                self._response = self._client._reconnect(state, self._reader, self._stalled)
                if self._response is None:
                    return
            response, before = self._response, state.last_id
            self._reader = reader = SSEReader()
            try:
                for line in response.iter_lines():
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
                response.close()
                self._response = None
            self._stalled = 0 if state.last_id > before else self._stalled + 1

    def wait(self) -> Terminal | None:
        """Read to the end; the terminal event."""
        for _ in self:
            pass
        return self._state.terminal

    def stop(self, keep_shown: bool = False) -> str:
        """Stop the reply on the server; iterate on to read its end (``Complete`` with
        ``finish_reason="cancelled"``). ``keep_shown``: keep only the events seen so far."""
        return str(self._client._json(self._cancel_call(keep_shown))["status"])

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
