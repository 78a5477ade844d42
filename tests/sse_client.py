"""A small, strict SSE reader for tests (WHATWG rules: LF/CRLF/CR, comments, id, data)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2


@dataclass
class Event:
    id: int | None
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.data["type"])


@dataclass
class Transcript:
    status: int
    headers: httpx2.Headers
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    raw: bytes = b""

    @property
    def text(self) -> str:
        return "".join(e.data["content"] for e in self.events if e.type == "token")

    @property
    def ids(self) -> list[int | None]:
        return [e.id for e in self.events]

    @property
    def terminal(self) -> Event:
        assert self.events, "no events"
        last = self.events[-1]
        assert last.type in ("complete", "error"), last
        return last


def parse_lines(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """Yield ("event", Event), ("comment", text) and ("retry", int) items."""
    data: list[str] = []
    event_id: int | None = None
    for line in lines:
        if line == "":
            if data:
                yield "event", Event(event_id, json.loads("\n".join(data)))
            data, event_id = [], None
            continue
        if line.startswith(":"):
            yield "comment", line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "id":
            event_id = int(value)
        elif name == "retry":
            yield "retry", int(value)
        elif name == "event":
            raise AssertionError("Runnel never sends an event: field")


def _split_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while True:
            index = min((i for i in (buffer.find(b"\r"), buffer.find(b"\n")) if i >= 0), default=-1)
            if index < 0:
                break
            line, rest = buffer[:index], buffer[index + 1 :]
            if buffer[index : index + 1] == b"\r" and rest.startswith(b"\n"):
                rest = rest[1:]
            buffer = rest
            yield line.decode("utf-8")
    if buffer:
        yield buffer.decode("utf-8")


class LiveStream:
    """An open SSE response read in parts: ``take(n)`` events now, ``rest()`` later."""

    def __init__(self, context: Any, response: httpx2.Response) -> None:
        self._context = context
        self.response = response
        self._raw: list[bytes] = []
        self._items = parse_lines(_split_lines(self._chunks()))

    def _chunks(self) -> Iterator[bytes]:
        for chunk in self.response.iter_raw():
            self._raw.append(chunk)
            yield chunk

    def take(self, count: int | None = None) -> Transcript:
        transcript = Transcript(self.response.status_code, self.response.headers)
        for kind, value in self._items:
            if kind == "event":
                transcript.events.append(value)
                if count is not None and len(transcript.events) >= count:
                    break
            elif kind == "comment":
                transcript.comments.append(value)
            else:
                transcript.retry = value
        transcript.raw = b"".join(self._raw)
        self._raw.clear()
        return transcript

    def items(self) -> Iterator[tuple[str, Any]]:
        """What comes, one at a time: ("event", Event), ("comment", text), ("retry", ms)."""
        return self._items

    def rest(self) -> Transcript:
        return self.take(None)

    def close(self) -> None:
        self._context.__exit__(None, None, None)

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stream(
    client: httpx2.Client,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> LiveStream:
    all_headers = {"accept": "text/event-stream", **(headers or {})}
    context = client.stream(method, url, headers=all_headers, **kwargs)
    response = context.__enter__()
    return LiveStream(context, response)


def stream(
    client: httpx2.Client,
    method: str,
    url: str,
    *,
    stop_after: int | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Transcript:
    """Send a request and read its SSE reply to the end (or ``stop_after`` events)."""
    with open_stream(client, method, url, headers, **kwargs) as live:
        if live.response.status_code != 200:
            live.response.read()
            transcript = Transcript(live.response.status_code, live.response.headers)
            transcript.raw = live.response.content
            return transcript
        return live.take(stop_after)
