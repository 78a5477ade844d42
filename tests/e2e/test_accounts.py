"""Accounts in a real browser: a team starts on a fresh server, and a session that ends
mid-reply loses nothing."""

from __future__ import annotations

import re

import httpx2
from playwright.sync_api import Page, expect

from tests.conftest import ServeFactory
from tests.e2e.test_webapp import last_assistant, send, slow_demo, status_bar


def sign_in(page: Page, username: str, password: str) -> None:
    page.get_by_test_id("signin-username").fill(username)
    page.get_by_test_id("signin-password").fill(password)
    page.get_by_test_id("signin-submit").click()


def test_a_team_starts_from_local_mode(serve: ServeFactory, page: Page) -> None:
    server = serve()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.goto(server.url)
    send(page, "written before any account")
    expect(status_bar(page)).to_contain_text("Complete")
    expect(page.get_by_test_id("conversation-item")).to_have_count(1)

    # local mode → the first account, which keeps the conversation
    expect(page.get_by_test_id("user-menu-button")).to_contain_text("Local mode")
    page.get_by_test_id("user-menu-button").click()
    page.get_by_test_id("create-first-account").click()
    page.get_by_test_id("signup-username").fill("alice")
    page.get_by_test_id("signup-password").fill("alice's password")
    page.get_by_test_id("signup-submit").click()
    expect(page.get_by_test_id("user-menu-button")).to_contain_text("alice")
    expect(page.get_by_test_id("conversation-item")).to_have_count(1)
    assert httpx2.get(f"{server.url}/api/v1/conversations", timeout=10).status_code == 401

    # the admin adds a colleague
    page.get_by_test_id("user-menu-button").click()
    page.get_by_test_id("open-users").click()
    expect(page).to_have_url(f"{server.url}/admin/users")
    page.get_by_test_id("user-add-username").fill("bob")
    page.get_by_test_id("user-add-password").fill("bob's password")
    page.get_by_test_id("user-add-submit").click()
    expect(page.locator("[data-testid=user-row][data-username=bob]")).to_have_attribute(
        "data-status", "active"
    )

    # and makes a key for a program
    page.get_by_test_id("user-menu-button").click()
    page.get_by_test_id("open-keys").click()
    page.get_by_test_id("key-name-input").fill("laptop script")
    page.get_by_test_id("key-create").click()
    key = page.get_by_test_id("key-secret").inner_text().strip()
    assert key.startswith("rk_")
    expect(page.get_by_test_id("key-item")).to_have_count(1)
    mine = httpx2.get(
        f"{server.url}/api/v1/conversations",
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert mine.status_code == 200
    assert len(mine.json()["data"]) == 1
    page.reload()
    expect(page.get_by_test_id("key-secret")).to_have_count(0)  # shown once only

    # sign out; bob signs in and sees none of alice's conversations
    page.get_by_test_id("user-menu-button").click()
    page.get_by_test_id("signout").click()
    expect(page.get_by_test_id("signin-form")).to_be_visible()
    sign_in(page, "bob", "wrong password")
    expect(page.get_by_test_id("signin-error")).to_contain_text("wrong username or password")
    sign_in(page, "bob", "bob's password")
    expect(page.get_by_test_id("user-menu-button")).to_contain_text("bob")
    expect(page.get_by_test_id("conversation-item")).to_have_count(0)
    send(page, "bob's first message")
    expect(status_bar(page)).to_contain_text("Complete")
    expect(page.get_by_test_id("conversation-item")).to_have_count(1)
    page.get_by_test_id("user-menu-button").click()
    expect(page.get_by_test_id("open-users")).to_have_count(0)  # not an admin
    assert violations == []


def test_a_session_that_ends_mid_reply_keeps_the_reply(serve: ServeFactory, page: Page) -> None:
    server = slow_demo(serve, demo_reply_tokens=150)
    with httpx2.Client(base_url=server.url, timeout=10) as setup:
        created = setup.post(
            "/api/v1/auth/signup", json={"username": "carol", "password": "carol's password"}
        )
        assert created.status_code == 201
    page.goto(server.url)
    sign_in(page, "carol", "carol's password")
    send(page, "a long answer please")
    expect(status_bar(page)).to_contain_text("Streaming")
    content = last_assistant(page).get_by_test_id("message-content")
    expect(content).to_have_text(re.compile(r"[\s\S]{40}"))  # some text is on screen

    # the session ends on the server (as an expiry or a sign-out elsewhere would) and the
    # connection drops: the reply keeps streaming on the server, the page asks to sign in
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "runnel_session"]
    ended = httpx2.post(
        f"{server.url}/api/v1/auth/logout",
        headers={"cookie": f"runnel_session={cookie['value']}"},
        timeout=10,
    )
    assert ended.status_code == 204
    shown_before = last_assistant(page).get_by_test_id("message-content").inner_text()
    server.drop_connections()
    dialog = page.get_by_test_id("signin-dialog")
    expect(dialog).to_be_visible()
    assert (
        last_assistant(page)
        .get_by_test_id("message-content")
        .inner_text()
        .startswith(shown_before[:40])
    )
    sign_in(page, "carol", "carol's password")
    expect(dialog).to_have_count(0)
    expect(status_bar(page)).to_contain_text("Complete", timeout=30_000)

    cid = page.url.rsplit("/c/", 1)[1]
    with httpx2.Client(base_url=server.url, timeout=10) as api:
        login = api.post(
            "/api/v1/auth/login", json={"username": "carol", "password": "carol's password"}
        )
        assert login.status_code == 200
        reply = api.get(f"/api/v1/conversations/{cid}").json()["messages"][-1]
    assert reply["status"] == "complete"
    assert reply["usage"]["completionTokens"] == 150  # every token of the demo's reply
    expect(last_assistant(page)).to_have_attribute("data-status", "complete")
    shown = last_assistant(page).get_by_test_id("message-content").inner_text()
    tail = reply["content"].split()[-3:]  # plain words at the end of the demo's text
    assert " ".join(tail).strip("*`_") in " ".join(shown.split())
