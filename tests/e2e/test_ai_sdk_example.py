"""The AI SDK example (``examples/ai-sdk-vue``, @ai-sdk/vue's ``Chat`` on Runnel) in
Chromium, served from another origin than Runnel's (so through CORS): a reply streams, a
reload mid-reply resumes it, Stop stops it on the server."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.sync_api import Page, expect

from runnel.dialects.ai_sdk import conversation_of
from tests.conftest import ServeFactory
from tests.e2e.conftest import _require
from tests.server import RunningServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ai-sdk-vue" / "dist"


@pytest.fixture
def example_url() -> Iterator[str]:
    """The example's build on a port of its own (another origin than the server's)."""
    _require((EXAMPLE / "index.html").is_file(), "the example is not built (scripts/build-example)")
    handler = functools.partial(QuietHandler, directory=str(EXAMPLE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def chat_messages(server: RunningServer, chat_id: str) -> list[dict[str, Any]]:
    conversation_id = conversation_of("local", chat_id)
    response = httpx2.get(f"{server.url}/api/v1/conversations/{conversation_id}")
    if response.status_code == 404:
        return []
    found: list[dict[str, Any]] = response.json()["messages"]
    return found


def wait_for_stored(server: RunningServer, chat_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        found = chat_messages(server, chat_id)
        if len(found) >= count and found[-1]["status"] != "streaming":
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def open_example(page: Page, example_url: str, server: RunningServer) -> str:
    page.goto(f"{example_url}/?server={server.url}")
    expect(page.get_by_test_id("status")).to_have_text("ready")
    chat_id: str = page.evaluate("localStorage.getItem('runnel-chat-id')")
    return chat_id


def ask(page: Page, text: str) -> None:
    page.get_by_test_id("input").fill(text)
    page.get_by_test_id("send").click()


def test_a_reply_streams_and_survives_a_reload(
    page: Page, serve: ServeFactory, example_url: str
) -> None:
    server = serve(cors_origins=example_url, demo_tokens_per_second=30.0, demo_reply_tokens=150)
    chat_id = open_example(page, example_url, server)
    ask(page, "Tell me about Runnel")
    assistant = page.get_by_test_id("message-assistant")
    expect(assistant).to_contain_text("Hello from Runnel")
    expect(page.get_by_test_id("status")).to_have_text("streaming")
    page.reload()  # mid-reply: the page loads the chat, then resumes the reply
    expect(page.get_by_test_id("message-user")).to_have_text("Tell me about Runnel")
    expect(assistant).to_have_count(1)
    expect(assistant).to_contain_text("Hello from Runnel")
    stored = wait_for_stored(server, chat_id, 2)
    assert stored[-1]["status"] == "complete"
    expect(page.get_by_test_id("status")).to_have_text("ready", timeout=30_000)
    expect(assistant).to_have_count(1)
    expect(assistant).to_have_attribute("data-message-id", stored[-1]["id"])
    shown = assistant.inner_text()
    last_words = stored[-1]["content"].split()[-3:]
    for word in last_words:
        assert word.strip("*_`#") in shown
    assert page.get_by_test_id("error").count() == 0


def test_stop_stops_the_reply_on_the_server(
    page: Page, serve: ServeFactory, example_url: str
) -> None:
    server = serve(cors_origins=example_url, demo_tokens_per_second=20.0, demo_reply_tokens=400)
    chat_id = open_example(page, example_url, server)
    ask(page, "Stop me soon")
    expect(page.get_by_test_id("message-assistant")).to_contain_text("Hello from Runnel")
    page.get_by_test_id("stop").click()
    expect(page.get_by_test_id("status")).to_have_text("ready")
    stored = wait_for_stored(server, chat_id, 2)
    assert stored[-1]["status"] == "cancelled"
    assert stored[-1]["finishReason"] == "cancelled"
    words = len(stored[-1]["content"].split())
    assert 0 < words < 300
    expect(page.get_by_test_id("send")).to_be_visible()
