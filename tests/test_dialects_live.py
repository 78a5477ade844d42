"""The live feed's dialect as pure functions: envelopes, merging, and what it parses."""

from __future__ import annotations

import json
import random

import pytest

from runnel.broker.base import StreamMeta
from runnel.dialects import live
from runnel.errors import InvalidRequest
from runnel.events import Complete, Error, Event, Status, Usage

EVENTS: list[Event] = [
    Status("s_1", "c_1", "m_1", "demo"),
    *[f"tok{n} é🙂 " for n in range(30)],
    Complete("demo", "stop", "m_1", Usage(1, 30), 30),
]


def frames(raw: bytes) -> list[dict[str, object]]:
    assert raw.endswith(b"\n\n")
    parsed = []
    for frame in raw.split(b"\n\n")[:-1]:
        assert frame.startswith(b"data: ")
        assert b"\n" not in frame  # one data line, no id: line
        parsed.append(json.loads(frame[6:]))
    return parsed


def test_each_event_names_its_stream_and_id() -> None:
    envelope = live.StreamEnvelope("s_1", "c_1")
    out = frames(envelope.encode(EVENTS[:2], 1) + envelope.token("x", 3))
    assert out == [
        {"type": "status", "status": "started", "streamId": "s_1", "conversationId": "c_1",
         "messageId": "m_1", "model": "demo", "eventId": 1},
        {"type": "token", "content": EVENTS[1], "streamId": "s_1", "conversationId": "c_1",
         "eventId": 2},
        {"type": "token", "content": "x", "streamId": "s_1", "conversationId": "c_1",
         "eventId": 3},
    ]  # fmt: skip
    end = frames(live.StreamEnvelope("s_2", None).encode([Error("X", "m", False, True)], 9))
    assert end == [
        {"type": "error", "code": "X", "error": "m", "retryable": False, "partial": True,
         "messageId": None, "streamId": "s_2", "conversationId": None, "eventId": 9}
    ]  # fmt: skip


def test_any_batching_carries_the_same_stream() -> None:
    envelope = live.StreamEnvelope("s_1", "c_1")
    rng = random.Random(7)
    for _ in range(50):
        raw, i = b"", 0
        while i < len(EVENTS):
            n = rng.randint(1, 6)
            raw += envelope.encode(EVENTS[i : i + n], i + 1)
            i += n
        out = frames(raw)
        ids = [e["eventId"] for e in out]
        assert ids == sorted(set(ids))
        assert ids[-1] == len(EVENTS)
        assert "".join(str(e["content"]) for e in out if e["type"] == "token") == "".join(
            e for e in EVENTS if isinstance(e, str)
        )


def test_feed_level_events() -> None:
    meta = StreamMeta("s_1", "u_1", "c_1", "m_1", "demo")
    assert frames(live.opened("f_1", [meta])) == [
        {"type": "feed", "feedId": "f_1", "active": [
            {"streamId": "s_1", "conversationId": "c_1", "messageId": "m_1", "model": "demo"}]}
    ]  # fmt: skip
    assert frames(live.gone("s_9")) == [{"type": "gone", "streamId": "s_9"}]
    assert frames(live.notice({"type": "stream", "state": "ended", "streamId": "s_1"})) == [
        {"type": "stream", "state": "ended", "streamId": "s_1"}
    ]


def test_parse_streams() -> None:
    assert live.parse_streams(None) == {}
    assert live.parse_streams("s_a, s_b:17,s-c:0") == {"s_a": 0, "s_b": 17, "s-c": 0}
    for bad in ("s_a:", "s_a:x", "s_a:-1", ":3", "s a", "s_a:1:2", "s_é", "x" * 65):
        with pytest.raises(InvalidRequest):
            live.parse_streams(bad)
    with pytest.raises(InvalidRequest):
        live.parse_streams(",".join(f"s_{n}" for n in range(live.MAX_FOLLOWED + 1)))
