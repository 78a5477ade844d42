"""The OpenAI dialects' encoders as pure functions of a stream's events: however the log is
cut into batches (or tokens pushed one by one), the bytes mean the same events with the
same sequence numbers, and ``starting_after`` is exactly a suffix."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from runnel.dialects import openai_chat, openai_responses
from runnel.dialects.openai_common import InvalidParam, fold_system, stream_of, text_of
from runnel.events import Complete, Error, Event, Status, Usage

TOKENS = ["Hel", "lo", ", ", "wörld", " 🚀", "\n\n", '"quoted"']


def log(end: Event | None = None) -> list[Event]:
    status = Status("s_abc", "c_1", "m_xyz", "demo/markdown")
    final = end or Complete("demo/markdown", "stop", "m_xyz", Usage(3, len(TOKENS)), len(TOKENS))
    return [status, *TOKENS, final]


def frames(raw: bytes) -> list[dict[str, Any]]:
    """The JSON data of every SSE event in ``raw`` (``[DONE]`` as a string)."""
    out: list[dict[str, Any]] = []
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                data = line[6:]
                out.append({"done": True} if data == "[DONE]" else orjson.loads(data))
    return out


def encoded_in_pieces(encoder: Any, events: list[Event], rng: random.Random) -> bytes:
    """The log sent as a reader would: random batches, some tokens pushed alone."""
    out = b""
    i = 0
    while i < len(events):
        if type(events[i]) is str and rng.random() < 0.5:
            out += encoder.token(events[i], i + 1)
            i += 1
            continue
        size = rng.randint(1, 4)
        out += encoder.encode(events[i : i + size], i + 1)
        i += size
    return out


def responses_encoder(after: int | None = None) -> openai_responses.ResponseEncoder:
    info = openai_responses.ResponseInfo("resp_abc", 1_700_000_000, "demo/markdown")
    return openai_responses.ResponseEncoder(info, after)


@pytest.mark.parametrize("seed", range(20))
def test_responses_events_do_not_depend_on_batching(seed: int) -> None:
    whole = frames(responses_encoder().encode(log(), 1))
    pieces = frames(encoded_in_pieces(responses_encoder(), log(), random.Random(seed)))
    assert pieces == whole
    numbers = [f["sequence_number"] for f in whole]
    assert numbers == list(range(len(whole)))


@pytest.mark.parametrize("after", [-1, 0, 2, 3, 4, 6, 10, 11, 12, 13, 50])
def test_starting_after_is_a_suffix(after: int) -> None:
    whole = frames(responses_encoder().encode(log(), 1))
    rng = random.Random(after)
    resumed = frames(encoded_in_pieces(responses_encoder(after), log(), rng))
    assert resumed == [f for f in whole if f["sequence_number"] > after]


def test_responses_event_order_and_text() -> None:
    events = frames(responses_encoder().encode(log(), 1))
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[4 : 4 + len(TOKENS)] == ["response.output_text.delta"] * len(TOKENS)
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["delta"] for e in events[4:-4]] == TOKENS
    assert events[-4]["text"] == "".join(TOKENS)
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["id"] == "msg_xyz"
    assert final["output"][0]["content"][0]["text"] == "".join(TOKENS)
    assert final["usage"]["output_tokens"] == len(TOKENS)
    # the numbers are a function of event ids: token id k is k + 2
    assert openai_responses.sequence_of(2) == events[4]["sequence_number"] == 4
    assert openai_responses.event_of(4) == 2


@pytest.mark.parametrize(
    ("end", "kind", "status"),
    [
        (Complete("demo/markdown", "cancelled", "m_xyz"), "response.incomplete", "cancelled"),
        (Complete("demo/markdown", "length", "m_xyz"), "response.incomplete", "incomplete"),
        (Error("PROVIDER_ERROR", "it broke", True, True, "m_xyz"), "response.failed", "failed"),
    ],
)
def test_responses_ends(end: Event, kind: str, status: str) -> None:
    last = frames(responses_encoder().encode(log(end), 1))[-1]
    assert last["type"] == kind
    assert last["response"]["status"] == status
    if status == "failed":
        assert last["response"]["error"]["code"] == "provider_error"
    if status == "incomplete":
        assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize("seed", range(10))
def test_chat_chunks_do_not_depend_on_batching(seed: int) -> None:
    def encoder() -> openai_chat.ChunkEncoder:
        return openai_chat.ChunkEncoder("chatcmpl-abc", 1_700_000_000, "demo/markdown", True)

    whole = frames(encoder().encode(log(), 1))
    pieces = frames(encoded_in_pieces(encoder(), log(), random.Random(seed)))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in pieces if c.get("choices"))
    assert text == "".join(TOKENS)
    assert pieces[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert pieces[-1] == {"done": True}
    assert pieces[-2]["choices"] == []
    assert pieces[-2]["usage"] == {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    assert pieces[-3]["choices"][0]["finish_reason"] == "stop"
    assert whole[-3:] == pieces[-3:]
    assert {c["id"] for c in pieces if "id" in c} == {"chatcmpl-abc"}


def test_chat_error_in_stream() -> None:
    encoder = openai_chat.ChunkEncoder("chatcmpl-abc", 1, "demo/markdown", False)
    out = frames(encoder.encode(log(Error("RATE_LIMIT", "slow down", True, True)), 1))
    assert out[-1] == {
        "error": {
            "message": "slow down",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


def test_ids_and_text() -> None:
    assert stream_of("resp_abc", "resp_") == "s_abc"
    assert stream_of("resp_", "resp_") is None
    assert stream_of("chatcmpl-abc", "resp_") is None
    assert (
        text_of([{"type": "text", "text": "a"}, {"type": "input_text", "text": "b"}], "c") == "ab"
    )
    with pytest.raises(InvalidParam) as raised:
        text_of([{"type": "image_url", "image_url": {}}], "messages[0].content")
    assert raised.value.param == "messages[0].content[0]"
    assert fold_system(
        [
            {"role": "system", "content": "A"},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "B"},
        ]
    ) == [{"role": "system", "content": "A\n\nB"}, {"role": "user", "content": "hi"}]
