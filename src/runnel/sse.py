"""The native SSE protocol (DESIGN §3), and what every event stream's encoder is.

An ``Encoder`` turns a stream's typed events into the bytes of one SSE dialect:
``NativeEncoder`` (here) writes Runnel's own protocol; ``runnel.dialects`` holds the others
(OpenAI chat completion chunks, Responses events). The response that sends a stream
(``api/streaming.py``) knows only this interface.

Events are encoded with orjson into pre-built byte strings; a batch of events that a reader
has not yet seen becomes one byte string, so a response does one ``send`` per flush.
Consecutive tokens in a batch are merged into one ``token`` event carrying the id of the
last token merged — that is how a reader that fell behind catches up cheaply.

With ``stream_padding`` on, every ``token`` event carries a ``p`` field of filler that
brings the event to a multiple of ``PAD_BLOCK`` bytes, plus one more block at random: the
size of an encrypted event then no longer tells the length of the token in it (tokens of
up to ~30 bytes all look alike). Readers ignore ``p``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Protocol

import orjson

from runnel.events import Event, to_wire

PING = b": ping\n\n"
_TOKEN = b'id: %d\ndata: {"type":"token","content":%s}\n\n'
_OTHER = b"id: %d\ndata: %s\n\n"
_PADDED = b'id: %d\ndata: {"type":"token","content":%s,"p":"%s"}\n\n'
PAD_BLOCK = 32
_FILLER = b"." * (2 * PAD_BLOCK)


def retry(milliseconds: int) -> bytes:
    return b"retry: %d\n\n" % milliseconds


def token(text: str, event_id: int) -> bytes:
    """One ``token`` event."""
    return _TOKEN % (event_id, orjson.dumps(text))


def padded_token(text: str, event_id: int) -> bytes:
    """One ``token`` event with its ``p`` filler."""
    content = orjson.dumps(text)
    bare = len(_PADDED) - 6 + len(str(event_id)) + len(content)  # the event with "p":""
    fill = -bare % PAD_BLOCK + PAD_BLOCK * random.getrandbits(1)
    return _PADDED % (event_id, content, _FILLER[:fill])


def merged(events: Sequence[Event], first_id: int) -> Iterator[tuple[int, Event]]:
    """``events`` (the first has id ``first_id``) with each run of consecutive tokens
    merged into one: ``(id, event)`` pairs, a merged token with the id of its last token.
    What every encoder's ``encode`` walks."""
    i, n = 0, len(events)
    while i < n:
        event = events[i]
        if type(event) is str:
            j = i + 1
            while j < n and type(events[j]) is str:
                j += 1
            text = event if j - i == 1 else "".join(events[i:j])  # type: ignore[arg-type]
            yield first_id + j - 1, text
            i = j
        else:
            yield first_id + i, event
            i += 1


def encode(events: Sequence[Event], first_id: int, padded: bool = False) -> bytes:
    """Encode ``events`` whose first has id ``first_id``, merging runs of tokens."""
    out: list[bytes] = []
    for event_id, event in merged(events, first_id):
        if type(event) is str:
            if padded:
                out.append(padded_token(event, event_id))
            else:
                out.append(_TOKEN % (event_id, orjson.dumps(event)))
        else:
            out.append(_OTHER % (event_id, orjson.dumps(to_wire(event))))
    return b"".join(out)


class Encoder(Protocol):
    """One response's writer of a stream's events (may keep state between calls)."""

    def preamble(self) -> bytes:
        """What goes out before the first event."""

    def encode(self, events: Sequence[Event], first_id: int) -> bytes:
        """The bytes of ``events``, the first of which has id ``first_id``."""

    def token(self, text: str, event_id: int) -> bytes:
        """The bytes of one token event (the path every live token takes)."""


class NativeEncoder:
    """Runnel's own protocol: ``retry:`` first, then ``id:``/``data:`` events."""

    __slots__ = ("padded", "retry_ms")

    def __init__(self, retry_ms: int, padded: bool = False) -> None:
        self.retry_ms = retry_ms
        self.padded = padded

    def preamble(self) -> bytes:
        return retry(self.retry_ms)

    def encode(self, events: Sequence[Event], first_id: int) -> bytes:
        return encode(events, first_id, self.padded)

    def token(self, text: str, event_id: int) -> bytes:
        return (
            padded_token(text, event_id) if self.padded else _TOKEN % (event_id, orjson.dumps(text))
        )
