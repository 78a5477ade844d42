"""``/api/v1/ui/chat`` driven by the real ``ai`` package (5, 6 and 7) from Node
(``tests/node/``): its
``DefaultChatTransport`` (every chunk checked by the SDK's own schema),
``readUIMessageStream`` and a ``Chat`` on ``AbstractChat``, against a real server; what
they rebuild is compared with what the server stored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx2
import pytest

from runnel.dialects.ai_sdk import conversation_of
from runnel.providers.demo import demo_reply
from tests.conftest import ServeFactory
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.server import RunningServer

NODE_DIR = Path(__file__).parent / "node"
SLOW = {"demo_tokens_per_second": 40.0, "demo_reply_tokens": 200}


def node_ready() -> str:
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "ai").is_dir():
        missing = "tests/node has no node_modules (scripts/test installs them)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the AI SDK tests must run under CI: {missing}")
        pytest.skip(missing)
    assert node is not None
    return node


SDKS = ["ai5", "ai", "ai7"]  # ai 5, 6 and 7 (tests/node/package.json)


def drive(server: RunningServer, scenario: str, sdk: str = "ai", **options: Any) -> dict[str, Any]:
    done = subprocess.run(
        [node_ready(), "ui_chat.mjs", scenario, server.url, json.dumps(options)],
        cwd=NODE_DIR,
        env={**os.environ, "AI_PACKAGE": sdk, "NODE_NO_WARNINGS": "1"},
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    assert "thrown" not in result, result["thrown"]
    return result


def messages_of(server: RunningServer, chat_id: str) -> list[dict[str, Any]]:
    conversation_id = conversation_of("local", chat_id)
    response = httpx2.get(f"{server.url}/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["messages"]
    return found


def reply_text(server: RunningServer, prompt: str) -> str:
    return "".join(demo_reply(prompt, server.settings.demo_reply_tokens))


@pytest.mark.parametrize("sdk", SDKS)
def test_a_reply_through_the_transport(server: RunningServer, sdk: str) -> None:
    seen = drive(server, "send", sdk, chatId="chat-1", text="Hello SDK")
    types = seen["types"]
    assert types[:3] == ["start", "start-step", "text-start"]
    assert types[-3:] == ["text-end", "finish-step", "finish"]
    assert set(types[3:-3]) == {"text-delta"}
    stored = messages_of(server, "chat-1")
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "Hello SDK"),
        ("assistant", reply_text(server, "Hello SDK")),
    ]
    message = seen["message"]
    assert message["id"] == stored[-1]["id"]
    assert message["text"] == stored[-1]["content"]
    finish = seen["chunks"][-1]
    assert finish["finishReason"] == "stop"
    assert finish["messageMetadata"]["streamId"] == stored[-1]["streamId"]
    assert finish["messageMetadata"]["model"] == "demo/markdown"
    assert finish["messageMetadata"]["firstTokenMs"] >= 0
    # only documented fields, none of them null
    for chunk in seen["chunks"]:
        assert None not in chunk.values(), chunk


@pytest.mark.parametrize("sdk", SDKS)
def test_a_chat_sends_and_regenerates(server: RunningServer, sdk: str) -> None:
    seen = drive(server, "chat", sdk, chatId="chat-2", text="Once more", regenerate=True)
    assert seen["errors"] == []
    assert seen["status"] == "ready"
    first, final = seen["first"], seen["messages"]
    assert [m["role"] for m in final] == ["user", "assistant"]
    assert final[1]["text"] == reply_text(server, "Once more")
    assert final[1]["id"] != first[1]["id"]  # the regenerated reply is a new message
    stored = messages_of(server, "chat-2")
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[-1]["id"] == final[1]["id"]
    # what a page loads the chat with
    loaded = httpx2.get(f"{server.url}/api/v1/ui/chat/chat-2/messages").json()
    assert [(m["id"], m["role"], m["parts"]) for m in loaded] == [
        (m["id"], m["role"], [{"type": "text", "text": m["content"]}]) for m in stored
    ]
    assert loaded[1]["metadata"]["finishReason"] == "stop"
    assert httpx2.get(f"{server.url}/api/v1/ui/chat/never-used/messages").json() == []


def test_the_same_chat_id_of_two_users_is_two_conversations(serve: ServeFactory) -> None:
    server = serve(api_tokens="tok-a:alice,tok-b:bob")
    body = {
        "id": "shared",
        "messages": [{"id": "1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
    }
    for token in ("tok-a", "tok-b"):
        headers = {"authorization": f"Bearer {token}"}
        with httpx2.stream(
            "POST", f"{server.url}/api/v1/ui/chat", json=body, headers=headers
        ) as response:
            assert response.status_code == 200
            assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            assert list(response.iter_lines())[-2] == "data: [DONE]"
    for token in ("tok-a", "tok-b"):
        listed = httpx2.get(
            f"{server.url}/api/v1/conversations", headers={"authorization": f"Bearer {token}"}
        ).json()["data"]
        assert len(listed) == 1
        assert listed[0]["id"] == conversation_of("alice" if token == "tok-a" else "bob", "shared")


@pytest.mark.parametrize("sdk", SDKS)
def test_resume_mid_reply_replaces_the_message(serve: ServeFactory, sdk: str) -> None:
    server = serve(**SLOW)
    seen = drive(server, "resume", sdk, chatId="chat-3", text="Resume me")
    assert seen["errors"] == []
    roles = [m["role"] for m in seen["messages"]]
    assert roles == ["user", "assistant"], roles
    assistant = seen["messages"][1]
    assert assistant["id"] == seen["messageId"]
    stored = messages_of(server, "chat-3")
    assert stored[-1]["status"] == "complete"
    assert assistant["text"] == stored[-1]["content"] == reply_text(server, "Resume me")


def test_resume_with_nothing_in_flight_is_204(server: RunningServer) -> None:
    assert drive(server, "idle", chatId="never-used") == {"stream": None}
    drive(server, "send", chatId="chat-4", text="done already")
    assert drive(server, "idle", chatId="chat-4") == {"stream": None}
    response = httpx2.get(f"{server.url}/api/v1/ui/chat/never-used/stream")
    assert response.status_code == 204
    assert httpx2.get(f"{server.url}/api/v1/conversations").json()["data"][0]["id"] == (
        conversation_of("local", "chat-4")
    )


@pytest.mark.parametrize("sdk", SDKS)
def test_stop_ends_every_stream_with_finish(serve: ServeFactory, sdk: str) -> None:
    server = serve(**SLOW)
    seen = drive(server, "stop", sdk, chatId="chat-5", text="Stop me")
    assert seen["stopStatus"] == 202
    assert seen["types"][-1] == "finish"
    finish = seen["chunks"][-1]
    assert finish["finishReason"] == "other"
    assert finish["messageMetadata"]["finishReason"] == "cancelled"
    stored = messages_of(server, "chat-5")
    assert stored[-1]["status"] == "cancelled"
    assert seen["message"]["text"] == stored[-1]["content"]
    assert 0 < len(stored[-1]["content"]) < len(reply_text(server, "Stop me"))
    idle = httpx2.post(f"{server.url}/api/v1/ui/chat/chat-5/stop")
    assert (idle.status_code, idle.json()) == (200, {"status": "idle"})


def test_an_upstream_error_reaches_on_error(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("gpt-4o", Script(tokens=["one ", "two ", "three"], error_after=2))
    server = serve(retry_attempts=1)
    seen = drive(server, "chat", "ai", chatId="chat-6", text="fail", model="openai/gpt-4o")
    assert len(seen["errors"]) == 1
    assert seen["status"] == "error"
    stored = messages_of(server, "chat-6")
    assert stored[-1]["status"] == "error"
    assert seen["messages"][-1]["text"] == stored[-1]["content"] == "one two "


def test_errors_before_the_stream(server: RunningServer) -> None:
    url = f"{server.url}/api/v1/ui/chat"
    user = {"id": "1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    cases = [
        ({"id": "e1", "messages": [user], "model": "demo/nope"}, 400, "MODEL_NOT_FOUND"),
        ({"id": "e2", "messages": []}, 400, "INVALID_REQUEST"),
        ({"id": "e3", "messages": [{**user, "parts": [{"type": "file"}]}]}, 400, "INVALID_REQUEST"),
        ({"id": "e4", "messages": [user], "trigger": "other"}, 400, "INVALID_REQUEST"),
        ({"messages": [user]}, 422, "INVALID_REQUEST"),
    ]
    for body, status, code in cases:
        response = httpx2.post(url, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code
    # a request refused before its reply leaves no message; its chat may exist, empty
    for item in httpx2.get(f"{server.url}/api/v1/conversations").json()["data"]:
        detail = httpx2.get(f"{server.url}/api/v1/conversations/{item['id']}").json()
        assert detail["messages"] == []
