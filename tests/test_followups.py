"""Follow-up suggestions and model-written titles: written after a reply completes (the
demo model offline, another model through its provider), stored, announced on the live
feed, waited for by ``?suggestions=wait`` and ``GET …/suggestions?wait=``; a model that
fails or hangs leaves the reply as it was, and a title the person set stays."""

from __future__ import annotations

import time
from contextlib import closing
from typing import Any

import httpx2

from runnel.followups import parse_suggestions, parse_title
from runnel.providers.demo import demo_suggestions, demo_title
from tests.conftest import ServeFactory
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.helpers import conversation, new_conversation
from tests.test_live import Feed


def ask(client: httpx2.Client, cid: str, text: str, **params: str) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": text}, params=params
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def suggestions(client: httpx2.Client, cid: str, message_id: str, wait: float = 10) -> Any:
    response = client.get(
        f"/api/v1/conversations/{cid}/messages/{message_id}/suggestions", params={"wait": wait}
    )
    assert response.status_code == 200, response.text
    return response.json()["suggestions"]


def followups_counted(client: httpx2.Client, kind: str, outcome: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'runnel_followups_total{{kind="{kind}",outcome="{outcome}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_demo_model_suggests_and_titles(serve: ServeFactory) -> None:
    with httpx2.Client(base_url=serve(titles=True, suggestions=True).url, timeout=30) as client:
        demo_suggests_and_titles(client)


def demo_suggests_and_titles(client: httpx2.Client) -> None:
    cid = new_conversation(client)
    with closing(Feed(client)) as feed:
        reply = ask(client, cid, "What is SSE, really?", suggestions="wait")
        assert reply["finishReason"] == "stop"
        assert reply["suggestions"] == demo_suggestions("What is SSE, really?")
        events: list[dict[str, Any]] = []
        while not {"conversation", "suggestions"} <= {e["type"] for e in events}:
            events.append(feed.next())
    told = next(e for e in events if e["type"] == "suggestions")
    assert told == {
        "type": "suggestions",
        "conversationId": cid,
        "messageId": reply["messageId"],
        "suggestions": reply["suggestions"],
    }
    titled = next(e for e in events if e["type"] == "conversation")
    assert titled == {
        "type": "conversation",
        "conversationId": cid,
        "title": demo_title("What is SSE, really?"),
    }
    stored = conversation(client, cid)
    assert stored["title"] == "Demo chat: What is SSE really"
    assert stored["messages"][1]["suggestions"] == reply["suggestions"]
    assert stored["messages"][0]["suggestions"] is None
    assert suggestions(client, cid, reply["messageId"], wait=0) == reply["suggestions"]
    # a second reply gets suggestions too, and the title stays
    second = ask(client, cid, "and then?", suggestions="wait")
    assert second["suggestions"] == demo_suggestions("and then?")
    assert conversation(client, cid)["title"] == "Demo chat: What is SSE really"


def test_a_title_the_person_set_stays(serve: ServeFactory) -> None:
    with httpx2.Client(base_url=serve(titles=True, suggestions=True).url, timeout=30) as client:
        cid = new_conversation(client, title="Mine")
        reply = ask(client, cid, "hello", suggestions="wait")
        assert reply["suggestions"]
        time.sleep(0.2)
        assert conversation(client, cid)["title"] == "Mine"


def test_another_model_through_its_provider(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(
        "helper", Script(tokens=['1. "How fast', ' is it?"\n', "- And Y?\n", "Z?\nW?"])
    )
    fake_openai.script("titler", Script(tokens=["Title: ", "Streaming ", "answers"]))
    server = serve(
        suggestions_model="openai/helper",
        title_model="openai/titler",
        titles=True,
        suggestions=True,
    )
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        reply = ask(client, cid, "explain SSE", suggestions="wait")
        assert reply["suggestions"] == ["How fast is it?", "And Y?", "Z?"]
        deadline = time.monotonic() + 10
        while conversation(client, cid)["title"] != "Streaming answers":
            assert time.monotonic() < deadline, conversation(client, cid)["title"]
            time.sleep(0.05)
        asked = [r for r in fake_openai.requests if r.body.get("model") == "helper"]
        assert asked
        prompt = asked[-1].body["messages"]
        assert prompt[0]["role"] == "system"
        assert "explain SSE" in prompt[1]["content"]
        assert followups_counted(client, "suggestions", "ok") == 1


def test_a_failing_or_hanging_model_leaves_the_reply_alone(
    serve: ServeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("broken", Script(status=400))
    fake_openai.script("stuck", Script(headers_delay=30))
    for model, outcome in (("broken", "error"), ("stuck", "timeout")):
        server = serve(
            suggestions_model=f"openai/{model}",
            title_model=f"openai/{model}",
            titles=True,
            suggestions=True,
            followup_timeout=0.5,
        )
        with httpx2.Client(base_url=server.url, timeout=30) as client:
            cid = new_conversation(client)
            reply = ask(client, cid, "hello there", suggestions="wait")
            assert reply["finishReason"] == "stop"
            assert reply["suggestions"] == []  # none: it failed
            stored = conversation(client, cid)
            assert stored["messages"][1]["status"] == "complete"
            assert stored["messages"][1]["content"] == reply["content"]
            assert stored["title"] == "hello there"  # the provisional title stays
            deadline = time.monotonic() + 10
            while followups_counted(client, "title", outcome) < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert followups_counted(client, "suggestions", outcome) == 1


def test_switched_off(serve: ServeFactory) -> None:
    server = serve(suggestions=False, titles=False)  # (the suite's default, said here)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        cid = new_conversation(client)
        reply = ask(client, cid, "hello there", suggestions="wait")
        assert reply["suggestions"] == []
        time.sleep(0.2)
        assert conversation(client, cid)["title"] == "hello there"


def test_suggestions_endpoint_refusals(client: httpx2.Client) -> None:
    cid = new_conversation(client)
    reply = ask(client, cid, "hello")
    user_message = conversation(client, cid)["messages"][0]["id"]
    base = f"/api/v1/conversations/{cid}/messages"
    for url in (f"{base}/{user_message}/suggestions", f"{base}/m_nope/suggestions"):
        response = client.get(url)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"
    too_long = client.get(f"{base}/{reply['messageId']}/suggestions", params={"wait": 21})
    assert too_long.status_code == 422
    other = client.get(f"/api/v1/conversations/c_nope/messages/{reply['messageId']}/suggestions")
    assert other.status_code == 404


def test_parsing() -> None:
    assert parse_suggestions("1) One?\n\n2. Two?\n* Three?\n- Four?") == ["One?", "Two?", "Three?"]
    assert parse_suggestions("") == []
    assert parse_suggestions("Same\nSame\n") == ["Same"]
    assert parse_title('"A Title"\nmore') == "A Title"
    assert parse_title("## Title: Streams") == "Streams"
    assert parse_title("  \n") is None


def test_on_postgresql(serve: ServeFactory, postgres_url: str) -> None:
    with httpx2.Client(
        base_url=serve(titles=True, suggestions=True, database_url=postgres_url).url, timeout=30
    ) as client:
        demo_suggests_and_titles(client)
