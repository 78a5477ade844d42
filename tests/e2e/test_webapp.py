"""The web app in a real browser against a real Runnel (demo model and a fake upstream)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx2
from playwright.sync_api import Locator, Page, expect

from tests.conftest import ServeFactory
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.server import RunningServer

RENDERS = """
window.__renders = [];
const target = document.querySelector('[data-testid=messages]');
new MutationObserver(() => {
  const all = target.querySelectorAll(
    '[data-testid=message][data-role=assistant] [data-testid=message-content]');
  const last = all[all.length - 1];
  if (last) window.__renders.push(last.innerText.length);
}).observe(target, { subtree: true, childList: true, characterData: true });
"""
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({ type: 'longtask', buffered: true });
"""


def slow_demo(serve: ServeFactory, **overrides: object) -> RunningServer:
    settings: dict[str, object] = {
        "demo_tokens_per_second": 30.0,
        "demo_reply_tokens": 60,
        "demo_first_token_delay": 0.05,
    }
    return serve(**{**settings, **overrides})


def status_bar(page: Page) -> Locator:
    return page.get_by_test_id("status-bar")


def last_assistant(page: Page) -> Locator:
    return page.locator("[data-testid=message][data-role=assistant]").last


def send(page: Page, text: str) -> None:
    box = page.get_by_test_id("composer-input")
    expect(box).to_be_enabled()
    box.fill(text)
    box.press("Enter")


def conversation_id(page: Page) -> str:
    page.wait_for_url("**/c/*")
    return page.url.rsplit("/c/", 1)[1].split("?")[0]


def stored(server: RunningServer, cid: str) -> dict[str, object]:
    response = httpx2.get(f"{server.url}/api/v1/conversations/{cid}", timeout=10)
    body: dict[str, object] = response.json()
    return body


def stored_reply(server: RunningServer, cid: str) -> dict[str, str]:
    messages = stored(server, cid)["messages"]
    assert isinstance(messages, list)
    reply: dict[str, str] = messages[-1]
    return reply


def wait_idle(server: RunningServer, cid: str) -> None:
    deadline = time.monotonic() + 20
    while stored(server, cid)["activeStreamId"] is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def rendered_after_reload(page: Page) -> str:
    page.reload()
    expect(status_bar(page)).to_contain_text("Ready")
    return last_assistant(page).get_by_test_id("message-content").inner_text()


def test_a_reply_streams_progressively_and_matches_the_stored_text(
    serve: ServeFactory, page: Page
) -> None:
    server = slow_demo(serve)
    page.goto(server.url)
    expect(page.get_by_test_id("model-picker")).to_have_value("demo/markdown")
    send(page, "Hello there")
    cid = conversation_id(page)
    page.evaluate(RENDERS)
    expect(status_bar(page)).to_contain_text("Streaming")
    expect(page.get_by_test_id("streaming-cursor")).to_be_visible()
    expect(page.get_by_test_id("composer-input")).to_be_disabled()
    expect(page.get_by_test_id("stop-button")).to_be_visible()
    expect(page.get_by_test_id("send-button")).to_have_count(0)
    expect(status_bar(page)).to_contain_text("Complete", timeout=20_000)
    expect(page.get_by_test_id("streaming-cursor")).to_have_count(0)
    renders = page.evaluate("window.__renders")
    assert len(set(renders)) >= 5, f"too few distinct renders: {sorted(set(renders))}"
    live = last_assistant(page).get_by_test_id("message-content").inner_text()
    wait_idle(server, cid)
    assert stored_reply(server, cid)["status"] == "complete"
    assert rendered_after_reload(page) == live
    assert "Hello from Runnel" in live
    expect(page.get_by_test_id("send-button")).to_be_visible()
    item = page.locator(f"[data-testid=conversation-item][data-id='{cid}']")
    expect(item).to_have_attribute("aria-current", "page")


def test_stop_keeps_the_text_shown(serve: ServeFactory, page: Page) -> None:
    server = slow_demo(serve, demo_reply_tokens=400)
    page.goto(server.url)
    send(page, "tell me a lot")
    cid = conversation_id(page)
    content = last_assistant(page).get_by_test_id("message-content")
    expect(content).to_contain_text("Hello from Runnel")
    page.get_by_test_id("stop-button").click()
    expect(status_bar(page)).to_contain_text("Stopped")
    shown = content.inner_text()
    assert shown
    wait_idle(server, cid)
    reply = stored_reply(server, cid)
    assert reply["status"] == "cancelled"
    assert len(reply["content"]) < 2000
    assert rendered_after_reload(page) == shown
    expect(page.get_by_test_id("composer-input")).to_be_enabled()


def test_escape_stops_a_reply(serve: ServeFactory, page: Page) -> None:
    server = slow_demo(serve, demo_reply_tokens=400)
    page.goto(server.url)
    send(page, "go on")
    cid = conversation_id(page)
    expect(last_assistant(page).get_by_test_id("message-content")).to_contain_text("Hello")
    page.keyboard.press("Escape")
    expect(status_bar(page)).to_contain_text("Stopped")
    wait_idle(server, cid)
    assert stored_reply(server, cid)["status"] == "cancelled"


def test_reload_mid_stream_resumes_to_the_stored_text(serve: ServeFactory, page: Page) -> None:
    server = slow_demo(serve, demo_reply_tokens=120)
    page.goto(server.url)
    send(page, "reload me")
    cid = conversation_id(page)
    expect(last_assistant(page).get_by_test_id("message-content")).to_contain_text("Hello")
    page.reload()
    expect(status_bar(page)).to_contain_text("Streaming")
    expect(page.locator(f"[data-testid=conversation-item][data-id='{cid}']")).to_have_attribute(
        "data-streaming", "true"
    )
    expect(status_bar(page)).to_contain_text("Complete", timeout=20_000)
    live = last_assistant(page).get_by_test_id("message-content").inner_text()
    wait_idle(server, cid)
    assert stored_reply(server, cid)["status"] == "complete"
    assert rendered_after_reload(page) == live


def test_a_dropped_connection_resumes_without_loss(serve: ServeFactory, page: Page) -> None:
    server = slow_demo(serve, demo_reply_tokens=120)
    page.goto(server.url)
    send(page, "survive this")
    cid = conversation_id(page)
    expect(last_assistant(page).get_by_test_id("message-content")).to_contain_text("Hello")
    server.drop_connections()
    expect(status_bar(page)).to_contain_text("Complete", timeout=30_000)
    live = last_assistant(page).get_by_test_id("message-content").inner_text()
    wait_idle(server, cid)
    assert rendered_after_reload(page) == live


def test_an_upstream_error_keeps_the_partial_text_and_retry_works(
    serve: ServeFactory, fake_openai: FakeOpenAI, page: Page
) -> None:
    fake_openai.queue(
        "flaky",
        Script(tokens=["Partial ", "answer ", "before ", "the ", "drop"], delay=0.05, drop_after=3),
        Script(tokens=["A ", "complete ", "answer."], delay=0.02),
    )
    server = serve(default_model="openai/flaky")
    page.goto(server.url)
    send(page, "try")
    cid = conversation_id(page)
    error = page.get_by_test_id("message-error")
    expect(error).to_contain_text("INTERRUPTED")
    expect(last_assistant(page).get_by_test_id("message-content")).to_contain_text(
        "Partial answer before"
    )
    expect(status_bar(page)).to_contain_text("Error")
    page.get_by_test_id("retry-button").click()
    expect(status_bar(page)).to_contain_text("Complete")
    expect(last_assistant(page).get_by_test_id("message-content")).to_have_text(
        "A complete answer."
    )
    expect(page.get_by_test_id("message-error")).to_have_count(0)
    wait_idle(server, cid)
    assert stored_reply(server, cid)["content"] == "A complete answer."


def settled_scroll_top(page: Page, element: Locator) -> float:
    """``scrollTop`` once it stopped moving (unchanged over three reads 100 ms apart)."""
    seen = [element.evaluate("(m) => m.scrollTop")]
    for _ in range(50):
        page.wait_for_timeout(100)
        seen.append(element.evaluate("(m) => m.scrollTop"))
        if len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]:
            return float(seen[-1])
    raise AssertionError(f"the view kept scrolling: {seen[-5:]}")


def test_auto_scroll_yields_when_the_reader_scrolls_up(serve: ServeFactory, page: Page) -> None:
    server = slow_demo(serve, demo_tokens_per_second=80.0, demo_reply_tokens=900)
    page.goto(server.url)
    send(page, "a long one")
    messages = page.get_by_test_id("messages")
    page.wait_for_function(
        "() => { const m = document.querySelector('[data-testid=messages]');"
        " return m.scrollHeight > m.clientHeight + 400; }"
    )
    at_bottom = "(m) => m.scrollHeight - m.scrollTop - m.clientHeight < 4"
    page.wait_for_timeout(300)
    assert messages.evaluate(at_bottom), "the view did not follow the stream"
    messages.hover()
    page.mouse.wheel(0, -600)
    expect(page.get_by_test_id("jump-to-latest")).to_be_visible()
    held = settled_scroll_top(page, messages)  # Chromium animates a wheel scroll
    page.wait_for_timeout(800)
    assert messages.evaluate("(m) => m.scrollTop") == held
    assert not messages.evaluate(at_bottom)
    page.get_by_test_id("jump-to-latest").click()
    page.wait_for_timeout(300)
    assert messages.evaluate(at_bottom)
    page.get_by_test_id("stop-button").click()


def test_a_ten_thousand_token_reply_stays_responsive(
    serve: ServeFactory, page: Page, artifacts: Path
) -> None:
    server = serve(demo_tokens_per_second=2500.0, demo_reply_tokens=10_000)
    page.add_init_script(LONG_TASKS)
    page.goto(server.url)
    send(page, "everything at once")
    cid = conversation_id(page)
    expect(status_bar(page)).to_contain_text("Complete", timeout=60_000)
    longest = max(page.evaluate("window.__longTasks"), default=0.0)
    report = {"tokens": 10_000, "max_long_task_ms": longest}
    (artifacts / "long-tasks.json").write_text(json.dumps(report))
    print(f"10,000-token reply: longest task {longest:.0f} ms")
    # a sanity bound: typical runs take 130-190 ms here, one CI run under load 202 ms
    assert longest < 400, f"a long task of {longest:.0f} ms"
    wait_idle(server, cid)
    assert stored_reply(server, cid)["status"] == "complete"


def test_json_replies_are_shown_when_streaming_is_off(serve: ServeFactory, page: Page) -> None:
    server = slow_demo(serve, streaming_enabled=False, demo_tokens_per_second=400.0)
    page.goto(server.url)
    send(page, "no streaming")
    expect(status_bar(page)).to_contain_text("Complete")
    expect(last_assistant(page).get_by_test_id("message-content")).to_contain_text(
        "Hello from Runnel"
    )


def test_a_token_server_without_accounts_offers_the_first_account(
    serve: ServeFactory, page: Page
) -> None:
    """Tokens are for programs: a browser on the server's machine is offered the first
    account instead of a token prompt, and chats once it exists."""
    server = serve(api_tokens="tok-e2e:alice")
    page.goto(server.url)
    expect(page.get_by_test_id("signup-form")).to_contain_text("Create the first account")
    page.get_by_test_id("signup-username").fill("alice")
    page.get_by_test_id("signup-password").fill("a long password")
    page.get_by_test_id("signup-submit").click()
    send(page, "hi after signing up")
    expect(status_bar(page)).to_contain_text("Complete")
    assert "password" not in page.url


def test_conversations_rename_and_delete(serve: ServeFactory, page: Page) -> None:
    server = serve()
    page.goto(server.url)
    send(page, "first topic")
    expect(status_bar(page)).to_contain_text("Complete")
    cid = conversation_id(page)
    page.get_by_test_id("new-conversation").click()
    send(page, "second topic")
    expect(status_bar(page)).to_contain_text("Complete")
    items = page.get_by_test_id("conversation-item")
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text("second topic")
    first = page.locator(f"[data-testid=conversation-item][data-id='{cid}']")
    first.hover()
    first.get_by_test_id("rename-conversation").click()
    page.get_by_test_id("rename-input").fill("Renamed")
    page.get_by_test_id("rename-input").press("Enter")
    expect(first).to_contain_text("Renamed")
    assert stored(server, cid)["title"] == "Renamed"
    first.hover()
    first.get_by_test_id("delete-conversation").click()
    page.get_by_test_id("confirm-delete").click()
    expect(items).to_have_count(1)


def test_screenshots_in_both_themes(serve: ServeFactory, page: Page, artifacts: Path) -> None:
    server = serve(demo_reply_tokens=160)
    page.goto(server.url)
    send(page, "Show me what you can do")
    expect(status_bar(page)).to_contain_text("Complete")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.wait_for_timeout(100)
        page.screenshot(path=str(artifacts / f"runnel-{scheme}.png"))
        assert (artifacts / f"runnel-{scheme}.png").stat().st_size > 10_000
    page.set_viewport_size({"width": 390, "height": 800})
    page.wait_for_timeout(500)  # let the sidebar finish sliding away
    page.screenshot(path=str(artifacts / "runnel-phone.png"))
    expect(page.get_by_test_id("composer-input")).to_be_visible()


def test_keyboard_and_live_region(serve: ServeFactory, page: Page) -> None:
    server = serve()
    page.goto(server.url)
    bar = status_bar(page)
    expect(bar).to_have_attribute("role", "status")
    expect(bar).to_have_attribute("aria-live", "polite")
    # the picker is disabled, so not focusable, until the model list has arrived
    expect(page.get_by_test_id("model-picker")).to_be_enabled()
    reached = set()
    indicators = {}
    for _ in range(12):
        page.keyboard.press("Tab")
        testid, indicator = page.evaluate(
            "() => { const el = document.activeElement; const css = getComputedStyle(el);"
            " return [el.dataset.testid ?? '', css.outlineStyle + ' ' + css.boxShadow]; }"
        )
        reached.add(testid)
        indicators[testid] = indicator
    assert {"new-conversation", "model-picker", "composer-input"} <= reached, reached
    for testid in ("new-conversation", "model-picker"):
        assert indicators[testid].replace("none", "").strip(), f"no focus ring on {testid}"
    page.get_by_test_id("composer-input").focus()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    assert page.get_by_test_id("composer-input").input_value() == "line one\nline two"
    page.keyboard.press("Enter")
    expect(bar).to_contain_text("Complete")
    user = page.locator("[data-testid=message][data-role=user]").last
    expect(user).to_contain_text("line two")
