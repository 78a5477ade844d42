"""Stop means stop: the upstream connection closes, the outcome is stored, cancel is idempotent."""

from __future__ import annotations

import threading
import time

import httpx2

from tests.fakes.openai_server import FakeOpenAI, Script
from tests.helpers import error_of, new_conversation, wait_until_idle
from tests.sse_client import LiveStream, Transcript, open_stream

SLOW = Script(tokens=[f"t{i} " for i in range(200)], delay=0.05)


def start_and_read(
    client: httpx2.Client, cid: str, model: str, count: int
) -> tuple[Transcript, LiveStream]:
    live = open_stream(
        client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "go", "model": model},
    )
    assert live.response.status_code == 200
    return live.take(count), live


def test_cancel_closes_upstream_and_stores_the_partial_text(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("slow", SLOW)
    cid = new_conversation(client)
    head, live = start_and_read(client, cid, "openai/slow", 5)
    stream_id = head.events[0].data["streamId"]
    upstream = fake_openai.requests[-1]
    assert not upstream.closed.is_set()

    cancelled_at = time.monotonic()
    answer = client.post(f"/api/v1/streams/{stream_id}/cancel")
    assert answer.status_code == 202
    assert answer.json() == {"streamId": stream_id, "status": "cancelling"}
    assert upstream.closed.wait(1.0), "the upstream connection was not closed within 1 s"
    assert upstream.closed_by_client
    assert upstream.closed_at is not None
    assert upstream.closed_at - cancelled_at < 1.0

    tail = live.rest()
    live.close()
    terminal = tail.terminal.data
    assert terminal["type"] == "complete"
    assert terminal["finishReason"] == "cancelled"
    assert "keptThrough" not in terminal
    text = head.text + tail.text
    message = wait_until_idle(client, cid)["messages"][-1]
    assert message["status"] == "cancelled"
    assert message["finishReason"] == "cancelled"
    assert message["content"] == text
    assert 0 < len(text) < len("".join(str(t) for t in SLOW.tokens))

    again = client.post(f"/api/v1/streams/{stream_id}/cancel")
    assert again.status_code == 202
    assert again.json()["status"] == "finished"
    assert wait_until_idle(client, cid)["messages"][-1] == message


def test_cancel_with_last_event_id_clamps_the_stored_text(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("slow", SLOW)
    cid = new_conversation(client)
    head, live = start_and_read(client, cid, "openai/slow", 8)
    seen = [e for e in head.events if e.type == "token"]
    kept = seen[2].id
    assert kept is not None
    expected = "".join(e.data["content"] for e in seen[:3])
    stream_id = head.events[0].data["streamId"]

    answer = client.post(f"/api/v1/streams/{stream_id}/cancel", json={"lastEventId": kept})
    assert answer.status_code == 202
    tail = live.rest()
    live.close()
    assert tail.terminal.data["finishReason"] == "cancelled"
    assert tail.terminal.data["keptThrough"] == kept
    message = wait_until_idle(client, cid)["messages"][-1]
    assert message["status"] == "cancelled"
    assert message["content"] == expected


def test_cancel_before_the_first_token(client: httpx2.Client, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("thinking", Script(tokens=["late"], first_delay=5))
    cid = new_conversation(client)
    head, live = start_and_read(client, cid, "openai/thinking", 1)
    stream_id = head.events[0].data["streamId"]
    assert client.post(f"/api/v1/streams/{stream_id}/cancel").status_code == 202
    assert fake_openai.requests[-1].closed.wait(1.0)
    tail = live.rest()
    live.close()
    assert tail.terminal.data["finishReason"] == "cancelled"
    message = wait_until_idle(client, cid)["messages"][-1]
    assert (message["status"], message["content"]) == ("cancelled", "")


def test_concurrent_cancels_are_harmless(client: httpx2.Client, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("slow", SLOW)
    cid = new_conversation(client)
    head, live = start_and_read(client, cid, "openai/slow", 3)
    stream_id = head.events[0].data["streamId"]
    statuses: list[int] = []

    def cancel() -> None:
        statuses.append(client.post(f"/api/v1/streams/{stream_id}/cancel").status_code)

    threads = [threading.Thread(target=cancel) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [202] * 5
    tail = live.rest()
    live.close()
    assert [e.type for e in tail.events].count("complete") == 1
    assert wait_until_idle(client, cid)["messages"][-1]["status"] == "cancelled"


def test_cancel_errors(client: httpx2.Client, fake_openai: FakeOpenAI) -> None:
    missing = client.post("/api/v1/streams/s_nope/cancel")
    assert missing.status_code == 404
    assert error_of(missing) == "NOT_FOUND"
    t = client.post("/api/v1/messages", json={"message": "hi"})
    stream_id = t.json()["streamId"]
    bad = client.post(f"/api/v1/streams/{stream_id}/cancel", json={"lastEventId": "x"})
    assert bad.status_code == 400
    assert error_of(bad) == "INVALID_REQUEST"


def test_deleting_a_conversation_cancels_its_stream(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("slow", SLOW)
    cid = new_conversation(client)
    _head, live = start_and_read(client, cid, "openai/slow", 3)
    assert client.delete(f"/api/v1/conversations/{cid}").status_code == 204
    assert fake_openai.requests[-1].closed.wait(1.0)
    tail = live.rest()
    live.close()
    assert tail.terminal.data["finishReason"] == "cancelled"
    assert client.get(f"/api/v1/conversations/{cid}").status_code == 404
