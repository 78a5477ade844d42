"""The upstream SSE decoder (``providers.wire.SSEDecoder``): events however the bytes are
cut, every line ending, and what it refuses."""

from __future__ import annotations

import pytest

from runnel.errors import ProviderError
from runnel.providers.wire import MAX_LINE, SSEDecoder

STREAM = (
    b": a comment\n"
    b"event: message\n"
    b'data: {"a": 1}\n'
    b"\n"
    b"data:no space\n"
    b"data:  two spaces\n"
    b"\n"
    b"id: 7\n"
    b"data: [DONE]\n"
    b"\n"
)
EVENTS = [b'{"a": 1}', b"no space\n two spaces", b"[DONE]"]


def decode(pieces: list[bytes]) -> list[bytes]:
    decoder = SSEDecoder("upstream")
    return [event for piece in pieces for event in decoder.feed(piece)]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_events_are_the_same_however_the_bytes_are_cut(ending: bytes) -> None:
    stream = STREAM.replace(b"\n", ending)
    assert decode([stream]) == EVENTS
    assert decode([stream[i : i + 1] for i in range(len(stream))]) == EVENTS
    for cut in range(1, len(stream)):
        assert decode([stream[:cut], stream[cut:]]) == EVENTS, cut


def test_a_leading_byte_order_mark_is_dropped() -> None:
    assert decode([b"\xef\xbb", b"\xbfdata: x\n\n"]) == [b"x"]
    assert decode([b"\xef\xbb\xbfdata: x\n\n"]) == [b"x"]


def test_an_event_without_its_blank_line_is_not_delivered() -> None:
    assert decode([b"data: whole\n\ndata: cut off\n"]) == [b"whole"]


def test_an_oversized_line_is_refused() -> None:
    decoder = SSEDecoder("upstream")
    decoder.feed(b"data: " + b"x" * (MAX_LINE // 2))
    with pytest.raises(ProviderError, match="upstream sent an oversized line"):
        decoder.feed(b"x" * (MAX_LINE // 2 + 10))
