"""The live feed, ``GET /api/v1/live``: many streams of one user on one SSE response, the
start and end of each announced, followed and unfollowed without reconnecting, resumed from
per-stream positions — nothing lost, nothing repeated — per user, and across processes
with Redis."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import ServeFactory
from tests.helpers import error_of, new_conversation, wait_for_reply
from tests.processes import runnel_process
from tests.sse_client import LiveStream, open_stream
from tests.test_isolation import account

ASYNC = {"prefer": "respond-async"}
SLOW = {"demo_tokens_per_second": 40.0, "demo_reply_tokens": 120}
TERMINAL = ("complete", "error")


class Feed:
    """An open live feed, read one event at a time."""

    def __init__(self, client: httpx2.Client, query: str = "") -> None:
        self.live: LiveStream = open_stream(client, "GET", f"/api/v1/live{query}")
        assert self.live.response.status_code == 200, self.live.response.read()
        self.pings = 0
        self.retry: int | None = None
        first = self.next()
        assert first["type"] == "feed", first
        self.id: str = first["feedId"]
        self.active: list[dict[str, Any]] = first["active"]

    def next(self) -> dict[str, Any]:
        for kind, value in self.live.items():
            if kind == "event":
                assert value.id is None  # positions are per stream, in the envelope
                data: dict[str, Any] = value.data
                return data
            if kind == "comment":
                self.pings += 1
            else:
                self.retry = value
        raise AssertionError("the feed ended")

    def until(
        self, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Events up to and with the first for which ``done`` holds."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while True:
            assert time.monotonic() < deadline, seen[-5:]
            event = self.next()
            seen.append(event)
            if done(event):
                return seen

    def to_the_end(self, into: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Read the events into ``into`` until the response ends (a connection that is cut
        raises)."""
        for kind, value in self.live.items():
            if kind == "event":
                into.append(value.data)
        return into

    def close(self) -> None:
        self.live.close()


def until_ended(feed: Feed, stream_ids: set[str]) -> list[dict[str, Any]]:
    """Events until each of these streams' terminal event came."""
    left = set(stream_ids)
    events: list[dict[str, Any]] = []
    while left:
        event = feed.next()
        events.append(event)
        if event["type"] in TERMINAL:
            left.discard(event["streamId"])
    return events


def ended(stream_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("streamId") == stream_id and e["type"] in TERMINAL


def of(events: list[dict[str, Any]], stream_id: str) -> list[dict[str, Any]]:
    """The events of one stream (the notices about it aside)."""
    return [e for e in events if e.get("streamId") == stream_id and "eventId" in e]


def text(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "token")


def check_reply(events: list[dict[str, Any]], stream_id: str, stored: dict[str, Any]) -> None:
    """The feed carried this stream whole: ids strictly increasing, the text as stored."""
    mine = of(events, stream_id)
    ids = [e["eventId"] for e in mine]
    assert ids == sorted(set(ids)), ids
    assert mine[0]["type"] == "status"
    assert mine[0]["eventId"] == 1
    assert mine[-1]["type"] == "complete"
    assert all(e["conversationId"] == stored["conversationId"] for e in mine)
    assert text(mine) == stored["content"]


def start(client: httpx2.Client, content: str = "hi") -> dict[str, Any]:
    cid = new_conversation(client)
    response = client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": content}, headers=ASYNC
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def stored_reply(client: httpx2.Client, started: dict[str, Any]) -> dict[str, Any]:
    reply = wait_for_reply(client, started["conversationId"])
    assert reply["streamId"] == started["streamId"]
    return {**reply, "conversationId": started["conversationId"]}


@pytest.fixture
def slow(serve: ServeFactory) -> Iterator[httpx2.Client]:
    server = serve(heartbeat_interval=0.5, **SLOW)
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        yield http


def test_one_feed_carries_every_reply(slow: httpx2.Client) -> None:
    feed = Feed(slow, "?auto=true")
    assert feed.active == []
    assert feed.retry is not None
    replies = [start(slow, f"question {n}") for n in range(4)]
    streams = {r["streamId"] for r in replies}
    events = until_ended(feed, streams)
    # every start is announced with its conversation, and the replies interleaved
    started = [e for e in events if e["type"] == "stream" and e["state"] == "started"]
    assert {e["streamId"] for e in started} == streams
    for r in replies:
        notice = next(e for e in started if e["streamId"] == r["streamId"])
        assert notice == {"type": "stream", "state": "started", **r}
    order = [e["streamId"] for e in events if e["type"] == "token"]
    # interleaved: one after the other would switch streams only len(streams) - 1 times
    assert sum(a != b for a, b in itertools.pairwise(order)) > len(streams)
    for r in replies:
        check_reply(events, r["streamId"], stored_reply(slow, r))
    # and each end too (its notice may come just before or after the terminal event)
    while sum(e["type"] == "stream" and e["state"] == "ended" for e in events) < len(streams):
        events.append(feed.next())
    assert {e["streamId"] for e in events if e.get("state") == "ended"} == streams
    # the feed stays open, with heartbeats; what else comes is the replies' follow-ups
    for kind, value in feed.live.items():
        if kind == "comment":
            break
        assert value.data["type"] in ("suggestions", "conversation"), value.data
    feed.close()


def test_active_streams_and_resume_from_positions(slow: httpx2.Client) -> None:
    first = start(slow, "first")
    with closing(Feed(slow, "?auto=true")) as feed:
        # a reply generating when the feed opens is listed, and followed from its start
        assert [a["streamId"] for a in feed.active] == [first["streamId"]]
        assert feed.active[0] == first
        head = feed.until(lambda e: e.get("eventId", 0) >= 20)
    position = head[-1]["eventId"]
    # the connection goes away; meanwhile a second reply starts
    second = start(slow, "second")
    time.sleep(0.3)
    with closing(Feed(slow, f"?auto=true&streams={first['streamId']}:{position}")) as feed:
        assert {a["streamId"] for a in feed.active} >= {second["streamId"]}
        tail = until_ended(feed, {first["streamId"], second["streamId"]})
    mine = of(tail, first["streamId"])
    assert mine[0]["eventId"] > position  # nothing repeated
    check_reply(head + tail, first["streamId"], stored_reply(slow, first))
    check_reply(tail, second["streamId"], stored_reply(slow, second))


def test_resume_after_a_server_side_drop(serve: ServeFactory) -> None:
    server = serve(**SLOW)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        reply = start(client)
        seen: list[dict[str, Any]] = []
        feed = Feed(client, f"?streams={reply['streamId']}")
        seen += feed.until(lambda e: e.get("eventId", 0) >= 10)
        server.drop_connections()
        with pytest.raises(httpx2.HTTPError):
            feed.to_the_end(seen)
        feed.close()
        position = max(e["eventId"] for e in of(seen, reply["streamId"]))
        with closing(Feed(client, f"?streams={reply['streamId']}:{position}")) as again:
            seen += again.until(ended(reply["streamId"]))
        check_reply(seen, reply["streamId"], stored_reply(client, reply))


def test_follow_and_unfollow_without_reconnecting(serve: ServeFactory) -> None:
    server = serve(demo_tokens_per_second=20.0, demo_reply_tokens=400)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        feed = Feed(client)  # follows nothing: notices only
        reply = start(client)
        stream_id = reply["streamId"]
        notice = feed.next()
        assert (notice["type"], notice["state"], notice["streamId"]) == (
            "stream",
            "started",
            stream_id,
        )
        time.sleep(0.5)
        followed = client.patch(f"/api/v1/live/{feed.id}", json={"follow": {stream_id: 0}})
        assert followed.status_code == 202
        assert followed.json() == {"feedId": feed.id}
        head = feed.until(lambda e: e.get("eventId", 0) >= 5)
        # from its first event: what was logged already comes merged, then token by token
        assert head[0]["type"] == "status"
        assert head[0]["eventId"] == 1
        assert all(e["type"] == "token" for e in head[1:])
        # following it again keeps its position
        assert (
            client.patch(f"/api/v1/live/{feed.id}", json={"follow": {stream_id: 0}}).status_code
            == 202
        )
        assert (
            client.patch(f"/api/v1/live/{feed.id}", json={"unfollow": [stream_id]}).status_code
            == 202
        )
        # stop the reply: its end is announced, but no more of its events come
        assert client.post(f"/api/v1/streams/{stream_id}/cancel").status_code == 202
        rest = feed.until(lambda e: e.get("state") == "ended")
        feed.close()
        ids = [e["eventId"] for e in of(head + rest, stream_id)]
        assert ids == sorted(set(ids))
        assert not any(e["type"] in TERMINAL for e in rest)
        stored = stored_reply(client, reply)
        assert stored["status"] == "cancelled"
        assert stored["content"].startswith(text(head))


def test_a_stream_unknown_or_finished(client: httpx2.Client) -> None:
    reply = start(client)
    stored = stored_reply(client, reply)
    query = f"?streams=s_unknown,{reply['streamId']}"
    with closing(Feed(client, query)) as feed:
        events = feed.until(ended(reply["streamId"]))
        assert {"type": "gone", "streamId": "s_unknown"} in events
        check_reply(events, reply["streamId"], stored)  # a finished stream is replayed
    # at its end: nothing more of it comes
    last = of(events, reply["streamId"])[-1]["eventId"]
    with closing(Feed(client, f"?streams={reply['streamId']}:{last}")) as feed:
        client.patch(f"/api/v1/live/{feed.id}", json={"follow": {"s_other": 3}})
        assert feed.next() == {"type": "gone", "streamId": "s_other"}


def test_bad_requests_change_nothing(client: httpx2.Client) -> None:
    for query in (
        "?streams=s_a:x",
        "?streams=s_a:-1",
        "?streams=s%20a",
        "?streams=" + ",".join(f"s_{n}" for n in range(101)),
    ):
        response = client.get(f"/api/v1/live{query}")
        assert response.status_code == 400, query
        assert error_of(response) == "INVALID_REQUEST"
    with closing(Feed(client)) as feed:
        for body in (
            {"follow": {"s_a": -1}},
            {"follow": ["s_a"]},
            {"stop": []},
            {"unfollow": ["no way"]},
        ):
            response = client.patch(f"/api/v1/live/{feed.id}", json=body)
            assert response.status_code in (400, 422), body
            assert error_of(response) == "INVALID_REQUEST"
    closed = client.patch(f"/api/v1/live/{feed.id}", json={"follow": {}})  # it closed
    deadline = time.monotonic() + 10
    while closed.status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        closed = client.patch(f"/api/v1/live/{feed.id}", json={"follow": {}})
    assert closed.status_code == 404
    assert error_of(closed) == "NOT_FOUND"
    assert client.get("/api/v1/conversations").json()["data"] == []


def test_a_feed_sees_only_its_user(serve: ServeFactory) -> None:
    server = serve(**SLOW)
    with ExitStack() as stack:
        alice = stack.enter_context(closing(account(server.url, "alice")))
        bob = stack.enter_context(closing(account(server.url, "bob", admin=alice)))
        bobs = stack.enter_context(closing(Feed(bob, "?auto=true")))
        reply = start(alice)
        alices = stack.enter_context(closing(Feed(alice, "?auto=true")))
        assert [a["streamId"] for a in alices.active] == [reply["streamId"]]
        events = alices.until(ended(reply["streamId"]))
        check_reply(events, reply["streamId"], stored_reply(alice, reply))
        # Bob's feed: no notice, no event of Alice's; her stream named is "gone"
        response = bob.patch(f"/api/v1/live/{bobs.id}", json={"follow": {reply["streamId"]: 0}})
        assert response.status_code == 202
        assert bobs.next() == {"type": "gone", "streamId": reply["streamId"]}
        # nor may he change her feed
        refused = bob.patch(f"/api/v1/live/{alices.id}", json={"unfollow": [reply["streamId"]]})
        assert refused.status_code == 404
        assert error_of(refused) == "NOT_FOUND"
        with closing(Feed(bob, f"?streams={reply['streamId']}")) as other:
            assert other.next() == {"type": "gone", "streamId": reply["streamId"]}


def test_the_open_streams_gauge(serve: ServeFactory) -> None:
    server = serve(**SLOW)
    with httpx2.Client(base_url=server.url, timeout=30) as client:

        def gauge() -> dict[str, float]:
            found = {}
            for line in client.get("/metrics").text.splitlines():
                if line.startswith("runnel_open_event_streams{"):
                    kind = line.split('kind="')[1].split('"')[0]
                    found[kind] = float(line.rsplit(" ", 1)[1])
            return found

        with closing(Feed(client, "?auto=true")) as feed:
            reply = start(client)
            feed.until(lambda e: e.get("eventId", 0) >= 2)
            assert gauge().get("feed") == 1
            assert gauge().get("reply", 0) == 0
            with open_stream(client, "GET", f"/api/v1/streams/{reply['streamId']}") as live:
                live.take(2)
                assert gauge().get("reply") == 1
        deadline = time.monotonic() + 10
        while gauge() != {"feed": 0, "reply": 0}:
            assert time.monotonic() < deadline, gauge()
            time.sleep(0.05)


def test_sigterm_ends_the_feed_after_its_replies(tmp_path: Path) -> None:
    with (
        runnel_process(
            tmp_path, demo_tokens_per_second="40", demo_reply_tokens="40", shutdown_grace="10"
        ) as (process, url),
        httpx2.Client(base_url=url, timeout=30) as client,
    ):
        reply = start(client)
        feed = Feed(client, "?auto=true")
        feed.until(lambda e: e.get("eventId", 0) >= 3)
        process.send_signal(signal.SIGTERM)
        events = feed.until(ended(reply["streamId"]))
        assert events[-1]["type"] == "complete"
        # then at most the notice of its end, and the feed ends
        after = [e["type"] for e in feed.to_the_end([]) if e.get("streamId") == reply["streamId"]]
        assert after in ([], ["stream"])
        feed.close()
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)


def test_across_processes_with_redis(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    shared = {"database_url": postgres_url, "redis_url": redis_url}
    slow = {"demo_tokens_per_second": "40", "demo_reply_tokens": "120"}
    with ExitStack() as stack:
        _, url_a = stack.enter_context(runnel_process(tmp_path / "a", **shared, **slow))
        _, url_b = stack.enter_context(runnel_process(tmp_path / "b", **shared, **slow))
        a = stack.enter_context(httpx2.Client(base_url=url_a, timeout=30))
        b = stack.enter_context(httpx2.Client(base_url=url_b, timeout=30))
        running = start(a, "already running")
        feed = stack.enter_context(closing(Feed(b, "?auto=true")))  # on B
        assert [s["streamId"] for s in feed.active] == [running["streamId"]]
        replies = [running, start(a, "one"), start(a, "two")]  # generated on A
        events = until_ended(feed, {r["streamId"] for r in replies})
        for r in replies:
            check_reply(events, r["streamId"], stored_reply(a, r))
        assert {e["streamId"] for e in events if e.get("state") == "started"} >= {
            r["streamId"] for r in replies[1:]
        }
        # a change sent to A reaches the feed on B; resume on A from B's positions
        quiet = stack.enter_context(closing(Feed(b)))
        late = start(a, "late")
        quiet.until(lambda e: e.get("state") == "started")
        assert (
            a.patch(f"/api/v1/live/{quiet.id}", json={"follow": {late["streamId"]: 0}}).status_code
            == 202
        )
        head = quiet.until(lambda e: e.get("eventId", 0) >= 10)
        quiet.close()
        position = head[-1]["eventId"]
        with closing(Feed(a, f"?streams={late['streamId']}:{position}")) as on_a:
            tail = on_a.until(ended(late["streamId"]))
        check_reply(head + tail, late["streamId"], stored_reply(a, late))
