import json

from runnel import sse
from runnel.events import Complete, Error, Status, Usage
from tests.sse_client import parse_lines


def decode(raw: bytes) -> list[tuple[int, dict[str, object]]]:
    items = parse_lines(iter(raw.decode().split("\n")))
    return [(e.id, e.data) for kind, e in items if kind == "event"]


def test_each_event_is_one_id_and_one_data_line() -> None:
    raw = sse.encode([Status("s_1", "c_1", "m_1", "demo/markdown"), "Hel"], 1)
    assert raw.count(b"\nid: ") + raw.startswith(b"id: ") == 2
    assert b"event:" not in raw
    assert decode(raw) == [
        (
            1,
            {
                "type": "status",
                "status": "started",
                "streamId": "s_1",
                "conversationId": "c_1",
                "messageId": "m_1",
                "model": "demo/markdown",
            },
        ),
        (2, {"type": "token", "content": "Hel"}),
    ]


def test_consecutive_tokens_merge_under_the_last_id() -> None:
    complete = Complete("demo/markdown", "stop", "m_1", Usage(3, 4), 4)
    raw = sse.encode(["a", "b", "c", complete, "never"], 7)
    events = decode(raw)
    assert events[0] == (9, {"type": "token", "content": "abc"})
    assert events[1][0] == 10
    assert events[1][1]["usage"] == {"promptTokens": 3, "completionTokens": 4}
    assert events[1][1]["totalTokens"] == 7


def test_text_is_json_escaped_and_stays_utf8() -> None:
    text = 'line\nbreak "quoted" 🎉 é\u2028'
    raw = sse.encode([text], 1)
    assert raw.count(b"\n\n") == 1
    assert "🎉".encode() in raw
    assert decode(raw)[0][1]["content"] == text


def test_error_event_fields() -> None:
    raw = sse.encode([Error("RATE_LIMIT", "slow down", True, False, "m_1")], 3)
    data = json.loads(raw.split(b"data: ")[1])
    assert data == {
        "type": "error",
        "code": "RATE_LIMIT",
        "error": "slow down",
        "retryable": True,
        "partial": False,
        "messageId": "m_1",
    }
