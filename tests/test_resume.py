"""Resume with Last-Event-ID: no duplicate, no gap — live, after the end, via both endpoints."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ServeFactory
from tests.helpers import last_message, new_conversation, wait_until_idle
from tests.sse_client import Transcript, stream


def resume(client: httpx2.Client, via: str, ids: dict[str, str], after: int) -> Transcript:
    url = (
        f"/api/v1/streams/{ids['stream']}"
        if via == "stream"
        else f"/api/v1/conversations/{ids['conversation']}/stream"
    )
    return stream(client, "GET", url, headers={"last-event-id": str(after)})


def check_continuation(first: Transcript, cut: int, rest: Transcript, full_text: str) -> None:
    """``rest`` continues ``first`` after its ``cut`` events: no duplicate, no gap."""
    after = first.events[cut - 1].id if cut else 0
    if cut == len(first.events):
        assert rest.status == 204, "a finished stream read to its end answers 204"
        return
    assert rest.status == 200
    ids = [e.id for e in rest.events]
    assert all(i is not None and i > (after or 0) for i in ids)
    assert ids == sorted(set(ids))
    seen = "".join(e.data["content"] for e in first.events[:cut] if e.type == "token")
    assert seen + rest.text == full_text
    assert rest.events[-1].id == first.events[-1].id
    assert rest.events[-1].data == first.events[-1].data


@pytest.fixture
def finished(serve: ServeFactory) -> Iterator[tuple[httpx2.Client, Transcript, dict[str, str]]]:
    server = serve(demo_reply_tokens=30)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        first = stream(
            client, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}
        )
        wait_until_idle(client, cid)
        yield client, first, {"stream": first.events[0].data["streamId"], "conversation": cid}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_resume_after_the_terminal_event_from_any_cut(
    finished: tuple[httpx2.Client, Transcript, dict[str, str]], data: st.DataObject
) -> None:
    client, first, ids = finished
    cut = data.draw(st.integers(min_value=0, max_value=len(first.events)), label="cut")
    via = data.draw(st.sampled_from(["stream", "conversation"]), label="via")
    after = first.events[cut - 1].id if cut else 0
    rest = resume(client, via, ids, after or 0)
    check_continuation(first, cut, rest, first.text)
    assert first.text == last_message(client, ids["conversation"])["content"]


@pytest.mark.parametrize("via", ["stream", "conversation"])
@pytest.mark.parametrize("cut", [1, 2, 7, 19])
def test_resume_a_live_stream_after_a_drop(serve: ServeFactory, via: str, cut: int) -> None:
    server = serve(demo_tokens_per_second=60, demo_reply_tokens=30)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        first = stream(
            client,
            "POST",
            f"/api/v1/conversations/{cid}/messages",
            json={"content": "hi"},
            stop_after=cut,
        )
        assert len(first.events) == cut
        ids = {"stream": first.events[0].data["streamId"], "conversation": cid}
        rest = resume(client, via, ids, first.events[-1].id or 0)
        assert rest.terminal.type == "complete"
        stored = wait_until_idle(client, cid)["messages"][-1]
        whole = Transcript(200, first.headers, first.events + rest.events)
        check_continuation(whole, cut, rest, stored["content"])
        assert stored["status"] == "complete"


def test_resume_without_last_event_id_replays_everything(serve: ServeFactory) -> None:
    server = serve(demo_tokens_per_second=100, demo_reply_tokens=20)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        first = stream(
            client,
            "POST",
            f"/api/v1/conversations/{cid}/messages",
            json={"content": "x"},
            stop_after=3,
        )
        again = stream(client, "GET", f"/api/v1/conversations/{cid}/stream")
        assert again.events[0].type == "status"
        assert again.events[0].id == 1
        assert again.text == wait_until_idle(client, cid)["messages"][-1]["content"]
        assert first.events[0].data == again.events[0].data
        assert client.get(f"/api/v1/conversations/{cid}/stream").status_code == 204


def test_query_parameter_works_like_the_header(
    finished: tuple[httpx2.Client, Transcript, dict[str, str]],
) -> None:
    client, first, ids = finished
    rest = stream(client, "GET", f"/api/v1/streams/{ids['stream']}?lastEventId=3")
    check_continuation(first, 3, rest, first.text) if first.events[2].id == 3 else None
    assert all((e.id or 0) > 3 for e in rest.events)


def test_a_reader_that_leaves_does_not_stop_the_generation(serve: ServeFactory) -> None:
    server = serve(demo_tokens_per_second=80, demo_reply_tokens=40)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        first = stream(
            client,
            "POST",
            f"/api/v1/conversations/{cid}/messages",
            json={"content": "x"},
            stop_after=3,
        )
        assert first.events[-1].type == "token"
        message = wait_until_idle(client, cid)["messages"][-1]
    assert message["status"] == "complete"
    assert message["finishReason"] == "stop"
    assert len(message["content"]) > len(first.text)
