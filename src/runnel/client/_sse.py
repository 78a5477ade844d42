"""The SSE parser of the client: lines in, typed events out.

It is fed the lines of a body as httpx2's ``iter_lines``/``aiter_lines`` gives them (line
endings already split off) and keeps only what an event needs: its ``id`` and ``data``,
plus the server's ``retry:``. Comments (``: ping``) and unknown fields are skipped, and an
event is dispatched only at its blank line, so an event cut off by a dropped connection is
never half-delivered: it is read again, whole, after the resume. This is the per-token
path, so it is plain string work and one ``orjson.loads`` per event.
"""

from __future__ import annotations

from runnel.client.errors import ServerError
from runnel.client.events import Event, decode


class SSEReader:
    """Events from SSE lines. ``retry_ms`` is the server's reconnection delay, once it sent
    one; it outlives ``reset`` (a new connection), as an ``EventSource``'s does."""

    __slots__ = ("_data", "_id", "retry_ms")

    def __init__(self) -> None:
        self._id = 0
        self._data: list[str] = []
        self.retry_ms: int | None = None

    def reset(self) -> None:
        """Forget a half-read event (its connection dropped)."""
        self._id = 0
        self._data = []

    def line(self, line: str) -> Event | None:
        """Feed one line; the event it completes, if any (None too for a type this client
        does not know). Raises ``ServerError`` for an event that is not what DESIGN §3
        says."""
        if not line:
            if not self._data:
                return None
            data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
            event_id = self._id
            self.reset()
            try:
                return decode(event_id, data)
            except (ValueError, KeyError, TypeError) as exc:
                raise ServerError("INTERNAL", f"an unreadable event (id {event_id})") from exc
        if line[0] == ":":
            return None
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "id" and value.isdigit():
            self._id = int(value)
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None
