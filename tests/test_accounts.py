"""Accounts over real HTTP: sign-up and its modes, sign-in, sessions, API keys,
administration, CSRF, login throttling, limits, and what the database keeps."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import ServeFactory
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.helpers import error_of, new_conversation, wait_for_reply
from tests.server import RunningServer
from tests.sse_client import open_stream, stream

PASSWORD = "correct horse battery"


def client_of(server: RunningServer, **headers: str) -> httpx2.Client:
    return httpx2.Client(base_url=server.url, headers=headers, timeout=30)


def sign_up(client: httpx2.Client, username: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/api/v1/auth/signup", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()["user"]
    return user


def log_in(client: httpx2.Client, username: str, password: str = PASSWORD) -> httpx2.Response:
    return client.post("/api/v1/auth/login", json={"username": username, "password": password})


def add_user(admin: httpx2.Client, username: str, role: str = "user") -> dict[str, Any]:
    response = admin.post(
        "/api/v1/users", json={"username": username, "password": PASSWORD, "role": role}
    )
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()["user"]
    return user


def rows(server: RunningServer, table: str) -> list[tuple[Any, ...]]:
    path = server.settings.data_dir / "runnel.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute(f"SELECT * FROM {table}").fetchall()


def test_the_first_account_is_an_admin_and_takes_over_the_local_conversations(
    serve: ServeFactory,
) -> None:
    server = serve()
    with client_of(server) as browser, client_of(server) as stranger:
        assert browser.get("/api/v1/auth/state").json() == {
            "accounts": False,
            "signup": "closed",
            "canSignUp": True,
        }
        me = browser.get("/api/v1/auth/me").json()
        assert me["via"] == "local"
        assert me["user"]["id"] == "local"
        cid = new_conversation(browser, title="before accounts")

        response = browser.post(
            "/api/v1/auth/signup", json={"username": "Alice", "password": PASSWORD}
        )
        assert response.status_code == 201
        user = response.json()["user"]
        assert {user["username"], user["role"]} == {"Alice", "admin"}
        assert user["id"].startswith("u_")
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("runnel_session=")
        for flag in ("HttpOnly", "SameSite=Lax", "Path=/"):
            assert flag in cookie
        assert "Secure" not in cookie  # plain HTTP, no proxy said otherwise

        me = browser.get("/api/v1/auth/me").json()
        assert (me["via"], me["user"]["username"]) == ("session", "Alice")
        assert [c["id"] for c in browser.get("/api/v1/conversations").json()["data"]] == [cid]

        # from now on nothing answers without credentials
        for method, url in (
            ("GET", "/api/v1/conversations"),
            ("GET", f"/api/v1/conversations/{cid}"),
            ("POST", "/api/v1/messages"),
            ("GET", "/api/v1/models"),
            ("GET", "/api/v1/auth/me"),
        ):
            refused = stranger.request(method, url, json={"message": "hi"})
            assert refused.status_code == 401, (method, url)
            assert error_of(refused) == "UNAUTHORIZED"
        for open_url in ("/healthz", "/readyz", "/metrics", "/api/v1/auth/state", "/"):
            assert stranger.get(open_url).status_code == 200, open_url

        # sign-up is closed by default: the second person is refused and nothing is stored
        closed = stranger.post(
            "/api/v1/auth/signup", json={"username": "bob", "password": PASSWORD}
        )
        assert closed.status_code == 403
        assert error_of(closed) == "FORBIDDEN"
        assert "set-cookie" not in closed.headers
        assert [u["username"] for u in browser.get("/api/v1/users").json()["data"]] == ["Alice"]
        assert stranger.get("/api/v1/auth/state").json()["canSignUp"] is False


def test_sign_up_validation_and_taken_names_store_nothing(serve: ServeFactory) -> None:
    server = serve(signup="open")
    with client_of(server) as client:
        sign_up(client, "first")
        for body in (
            {"username": "bob", "password": "short"},
            {"username": "bob", "password": "x" * 257},
            {"username": "", "password": PASSWORD},
            {"username": "bob smith", "password": PASSWORD},
            {"username": "b" * 65, "password": PASSWORD},
            {"username": "bøb", "password": PASSWORD},
            {"username": "bob\n", "password": PASSWORD},
        ):
            response = client.post("/api/v1/auth/signup", json=body)
            assert response.status_code == 400, body
            assert error_of(response) == "INVALID_REQUEST"
        lone_surrogates = '{"username": "bob", "password": "' + "\\ud800" * 10 + '"}'
        response = client.post(
            "/api/v1/auth/signup",
            content=lone_surrogates,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422  # not text: refused by the JSON parser
        assert error_of(response) == "INVALID_REQUEST"
        for body in ({"username": "bob"}, {"password": PASSWORD}, {"username": 1, "password": 2}):
            assert client.post("/api/v1/auth/signup", json=body).status_code == 422
        taken = client.post("/api/v1/auth/signup", json={"username": "FIRST", "password": PASSWORD})
        assert taken.status_code == 409
        assert error_of(taken) == "CONFLICT"
        assert len(rows(server, "users")) == 1
        sign_up(client, "b.o-b_2")
        assert len(rows(server, "users")) == 2
        assert {r[1] for r in rows(server, "users")} == {"first", "b.o-b_2"}


def test_approval_mode_keeps_new_accounts_waiting(serve: ServeFactory) -> None:
    server = serve(signup="approval")
    with client_of(server) as admin, client_of(server) as newcomer:
        sign_up(admin, "admin")
        waiting = newcomer.post(
            "/api/v1/auth/signup", json={"username": "carol", "password": PASSWORD}
        )
        assert waiting.status_code == 201
        assert waiting.json()["user"]["pending"] is True
        assert "set-cookie" not in waiting.headers
        refused = log_in(newcomer, "carol")
        assert refused.status_code == 403
        assert error_of(refused) == "FORBIDDEN"
        assert "approval" in refused.json()["error"]["message"]
        assert newcomer.get("/api/v1/conversations").status_code == 401

        listed = {u["username"]: u for u in admin.get("/api/v1/users").json()["data"]}
        assert listed["carol"]["pending"] is True
        # a null is "unchanged", never an approval
        untouched = admin.patch(
            f"/api/v1/users/{listed['carol']['id']}", json={"disabled": None, "role": None}
        )
        assert untouched.json()["user"]["pending"] is True
        assert log_in(newcomer, "carol").status_code == 403
        approved = admin.patch(f"/api/v1/users/{listed['carol']['id']}", json={"disabled": False})
        assert approved.json()["user"]["pending"] is False
        assert log_in(newcomer, "carol").status_code == 200
        assert newcomer.get("/api/v1/conversations").status_code == 200


def test_login_logout_and_the_secure_flag_behind_a_proxy(serve: ServeFactory) -> None:
    server = serve()
    with client_of(server) as first, client_of(server) as second:
        sign_up(first, "alice")
        wrong = log_in(second, "alice", "not the password")
        unknown = log_in(second, "nobody", PASSWORD)
        for response in (wrong, unknown):
            assert response.status_code == 401
            assert error_of(response) == "UNAUTHORIZED"
        assert wrong.json() == unknown.json()

        # over HTTPS, as a trusted proxy on loopback reports it, the cookie is Secure
        proxied = second.post(
            "/api/v1/auth/login",
            json={"username": "ALICE", "password": PASSWORD},
            headers={"x-forwarded-proto": "https"},
        )
        assert proxied.status_code == 200
        assert "Secure" in proxied.headers["set-cookie"]
        token = proxied.cookies["runnel_session"]

        plain = log_in(second, "alice")
        assert plain.status_code == 200
        assert plain.json()["user"]["username"] == "alice"
        assert second.get("/api/v1/auth/me").json()["via"] == "session"
        out = second.post("/api/v1/auth/logout")
        assert out.status_code == 204
        assert "Max-Age=0" in out.headers["set-cookie"]
        # the logged-out session stops working at once, even sent again by hand
        replay = second.get(
            "/api/v1/conversations",
            headers={"cookie": f"runnel_session={plain.cookies['runnel_session']}"},
        )
        assert replay.status_code == 401
        # another session of the same user is unaffected
        other = second.get("/api/v1/auth/me", headers={"cookie": f"runnel_session={token}"})
        assert other.status_code == 200
        garbage = second.get("/api/v1/auth/me", headers={"cookie": "runnel_session=forged"})
        assert garbage.status_code == 401


def test_failed_logins_are_throttled_per_account_and_per_address(serve: ServeFactory) -> None:
    server = serve(login_limit_account="3/minute", login_limit_address="5/minute")
    with client_of(server) as client:
        sign_up(client, "alice")
        add_user(client, "bob")
        for _ in range(3):
            assert log_in(client, "alice", "wrong password").status_code == 401
        # the right password does not help while the account's window is full, from anywhere
        for address in ("203.0.113.7", "198.51.100.9"):
            limited = client.post(
                "/api/v1/auth/login",
                json={"username": "alice", "password": PASSWORD},
                headers={"x-forwarded-for": address},
            )
            assert limited.status_code == 429
            assert error_of(limited) == "RATE_LIMIT"
            assert 1 <= int(limited.headers["retry-after"]) <= 60
            assert "this account" in limited.json()["error"]["message"]
        # another account is not locked by alice's attacker …
        assert log_in(client, "bob").status_code == 200
        # … but one address that keeps failing is, across accounts
        for name in ("bob", "carol"):
            assert log_in(client, name, "wrong password").status_code == 401
        limited = log_in(client, "bob")
        assert limited.status_code == 429
        assert "this address" in limited.json()["error"]["message"]
        elsewhere = client.post(
            "/api/v1/auth/login",
            json={"username": "bob", "password": PASSWORD},
            headers={"x-forwarded-for": "192.0.2.44"},
        )
        assert elsewhere.status_code == 200


def test_api_keys_work_as_bearer_tokens_until_revoked(serve: ServeFactory) -> None:
    server = serve()
    with client_of(server) as browser, client_of(server) as program:
        sign_up(browser, "alice")
        created = browser.post("/api/v1/auth/keys", json={"name": "  laptop   script "})
        assert created.status_code == 201
        key = created.json()
        assert key["name"] == "laptop script"
        assert key["key"].startswith("rk_")
        assert len(key["key"]) >= 40
        assert key["key"].startswith(key["prefix"])
        listed = browser.get("/api/v1/auth/keys").json()["data"]
        assert [k["id"] for k in listed] == [key["id"]]
        assert "key" not in listed[0]

        bearer = {"authorization": f"Bearer {key['key']}"}
        assert program.get("/api/v1/auth/me", headers=bearer).json()["via"] == "key"
        cid = new_conversation(browser)
        reply = program.post(
            f"/api/v1/conversations/{cid}/messages", json={"content": "hi"}, headers=bearer
        )
        assert reply.status_code == 200
        # a key is not a session: it makes no key of its own without an account check
        assert browser.post("/api/v1/auth/keys", json={"name": ""}).status_code == 400
        assert len(browser.get("/api/v1/auth/keys").json()["data"]) == 1

        assert browser.delete(f"/api/v1/auth/keys/{key['id']}").status_code == 204
        revoked = program.get("/api/v1/conversations", headers=bearer)
        assert revoked.status_code == 401
        assert error_of(revoked) == "UNAUTHORIZED"
        again = browser.delete(f"/api/v1/auth/keys/{key['id']}")
        assert again.status_code == 404
        assert error_of(again) == "NOT_FOUND"
        bad = program.get("/api/v1/conversations", headers={"authorization": "Bearer rk_forged"})
        assert bad.status_code == 401


def test_admin_endpoints_and_disabling_a_user(serve: ServeFactory, fake_openai: FakeOpenAI) -> None:
    server = serve()
    fake_openai.script("slow", Script(tokens=["word "] * 200, delay=0.05))
    with client_of(server) as admin, client_of(server) as bob:
        me = sign_up(admin, "admin")
        created = add_user(admin, "bob")
        assert created["role"] == "user"
        assert log_in(bob, "bob").status_code == 200
        for method, url in (
            ("GET", "/api/v1/users"),
            ("POST", "/api/v1/users"),
            ("PATCH", f"/api/v1/users/{me['id']}"),
        ):
            denied = bob.request(method, url, json={"username": "x", "password": PASSWORD})
            assert denied.status_code == 403, (method, url)
            assert error_of(denied) == "FORBIDDEN"
        assert admin.patch("/api/v1/users/u_nobody", json={"disabled": True}).status_code == 404
        own = admin.patch(f"/api/v1/users/{me['id']}", json={"disabled": True})
        assert own.status_code == 400
        last = admin.patch(f"/api/v1/users/{me['id']}", json={"role": "user"})
        assert last.status_code == 409
        assert error_of(last) == "CONFLICT"
        assert admin.get("/api/v1/auth/me").json()["user"]["role"] == "admin"

        key = bob.post("/api/v1/auth/keys", json={"name": "k"}).json()["key"]
        cid = new_conversation(bob, model="openai/slow")
        with open_stream(
            bob, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "go"}
        ) as live:
            live.take(3)
            disabled = admin.patch(f"/api/v1/users/{created['id']}", json={"disabled": True})
            assert disabled.status_code == 200
            assert disabled.json()["user"]["disabled"] is True
            rest = live.rest()
        # the running reply was stopped, and stored as such
        assert rest.terminal.data["finishReason"] == "cancelled"
        assert bob.get("/api/v1/conversations").status_code == 401
        keyed = bob.get("/api/v1/conversations", headers={"authorization": f"Bearer {key}"})
        assert keyed.status_code == 401
        refused = log_in(bob, "bob")
        assert refused.status_code == 403
        assert "disabled" in refused.json()["error"]["message"]
        assert rows(server, "api_keys") == []

        enabled = admin.patch(f"/api/v1/users/{created['id']}", json={"disabled": False})
        assert enabled.json()["user"]["disabled"] is False
        assert log_in(bob, "bob").status_code == 200
        assert wait_for_reply(bob, cid)["status"] == "cancelled"

        # a new password signs the old sessions out
        reset = admin.patch(f"/api/v1/users/{created['id']}", json={"password": "a new password"})
        assert reset.status_code == 200
        assert bob.get("/api/v1/conversations").status_code == 401
        assert log_in(bob, "bob").status_code == 401
        assert log_in(bob, "bob", "a new password").status_code == 200

        promoted = admin.patch(f"/api/v1/users/{created['id']}", json={"role": "admin"})
        assert promoted.json()["user"]["role"] == "admin"
        assert bob.get("/api/v1/users").status_code == 200


def test_cross_site_requests_with_the_cookie_are_refused(serve: ServeFactory) -> None:
    server = serve()
    with client_of(server) as browser:
        sign_up(browser, "alice")
        key = browser.post("/api/v1/auth/keys", json={"name": "k"}).json()["key"]
        host = server.url.removeprefix("http://")
        before = len(rows(server, "conversations"))
        for headers in (
            {"sec-fetch-site": "cross-site"},
            {"sec-fetch-site": "same-site"},
            {"origin": "http://evil.example"},
            {"origin": "null"},
            {"origin": f"https://{host}"},  # another scheme is another origin
            {"origin": "http://127.0.0.1:1"},
        ):
            for method, url in (
                ("POST", "/api/v1/conversations"),
                ("POST", "/api/v1/messages"),
                ("POST", "/api/v1/auth/keys"),
                ("POST", "/api/v1/auth/logout"),
                ("POST", "/api/v1/auth/login"),
            ):
                body = {"message": "hi", "name": "x", "username": "alice", "password": PASSWORD}
                refused = browser.request(method, url, json=body, headers=headers)
                assert refused.status_code == 403, (headers, url)
                assert error_of(refused) == "FORBIDDEN"
        assert len(rows(server, "conversations")) == before
        assert len(rows(server, "api_keys")) == 1
        assert browser.get("/api/v1/auth/me").status_code == 200  # not logged out
        # reads, same-origin pages and bearer requests pass
        assert (
            browser.get(
                "/api/v1/conversations", headers={"sec-fetch-site": "cross-site"}
            ).status_code
            == 200
        )
        same = browser.post(
            "/api/v1/conversations",
            json={},
            headers={"origin": server.url, "sec-fetch-site": "same-origin"},
        )
        assert same.status_code == 201
        with client_of(server) as program:
            keyed = program.post(
                "/api/v1/conversations",
                json={},
                headers={"authorization": f"Bearer {key}", "origin": "http://evil.example"},
            )
            assert keyed.status_code == 201


def test_tokens_keep_working_and_act_as_the_account_of_their_name(serve: ServeFactory) -> None:
    server = serve(api_tokens="tok-a:alice,tok-c:carol")
    with client_of(server, authorization="Bearer tok-a") as token, client_of(server) as browser:
        cid = new_conversation(token, title="from the token")
        assert token.get("/api/v1/auth/me").json()["user"]["id"] == "alice"
        # with tokens and no account, the first account comes from this machine only
        assert browser.get("/api/v1/auth/state").json()["canSignUp"] is True
        far = browser.post(
            "/api/v1/auth/signup",
            json={"username": "alice", "password": PASSWORD},
            headers={"x-forwarded-for": "203.0.113.5"},
        )
        assert far.status_code == 403
        assert rows(server, "users") == []
        sign_up(browser, "alice")
        # the account took over the token user's conversations, and the token acts as it
        assert [c["id"] for c in browser.get("/api/v1/conversations").json()["data"]] == [cid]
        me = token.get("/api/v1/auth/me").json()
        assert (me["via"], me["user"]["username"]) == ("token", "alice")
        assert me["user"]["id"].startswith("u_")
        carol = token.get("/api/v1/auth/me", headers={"authorization": "Bearer tok-c"}).json()
        assert carol["user"]["id"] == "carol"


def test_per_user_limits_set_by_an_admin(serve: ServeFactory) -> None:
    server = serve(output_tokens_per_day=0)
    with client_of(server) as admin, client_of(server) as bob:
        sign_up(admin, "admin")
        user = add_user(admin, "bob")
        log_in(bob, "bob")
        limits = {"messagesPerMinute": 2}
        changed = admin.patch(f"/api/v1/users/{user['id']}", json={"limits": limits})
        assert changed.json()["user"]["limits"] == {
            "maxStreams": None,
            "messagesPerMinute": 2,
            "outputTokensPerDay": None,
        }
        cid = new_conversation(bob)
        for _ in range(2):
            assert (
                bob.post(f"/api/v1/conversations/{cid}/messages", json={"content": "x"}).status_code
                == 200
            )
        limited = bob.post(f"/api/v1/conversations/{cid}/messages", json={"content": "x"})
        assert limited.status_code == 429
        assert "2 messages per 1 minute" in limited.json()["error"]["message"]
        assert len(bob.get(f"/api/v1/conversations/{cid}").json()["messages"]) == 4
        assert (
            admin.post("/api/v1/messages", json={"message": "the admin is not limited"}).status_code
            == 200
        )

        admin.patch(
            f"/api/v1/users/{user['id']}",
            json={"limits": {"messagesPerMinute": 0, "outputTokensPerDay": 30}},
        )
        first = bob.post("/api/v1/messages", json={"message": "count me"})
        assert first.status_code == 200
        assert first.json()["usage"]["completionTokens"] >= 30  # the demo's 40 tokens
        over = bob.post("/api/v1/messages", json={"message": "one more"})
        assert over.status_code == 429
        assert error_of(over) == "RATE_LIMIT"
        assert "30 output tokens per day" in over.json()["error"]["message"]
        assert int(over.headers["retry-after"]) <= 86400
        bad = admin.patch(f"/api/v1/users/{user['id']}", json={"limits": {"maxStreams": -1}})
        assert bad.status_code == 422


def test_stream_padding_hides_token_lengths(serve: ServeFactory) -> None:
    server = serve(stream_padding=True)
    with client_of(server) as client:
        cid = new_conversation(client)
        transcript = stream(
            client, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "pad"}
        )
        tokens = [e for e in transcript.events if e.type == "token"]
        assert tokens
        assert all("p" in e.data for e in tokens)
        for event in transcript.raw.split(b"\n\n"):
            if b'"type":"token"' in event:
                assert (len(event) + 2) % 32 == 0, event
        stored = client.get(f"/api/v1/conversations/{cid}").json()["messages"][-1]["content"]
        assert transcript.text == stored


def test_head_security_headers_and_the_openapi_schema(serve: ServeFactory) -> None:
    server = serve()
    with client_of(server) as client:
        cid = new_conversation(client)
        reply = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
        stream_id = reply.json()["streamId"]
        for url in (
            "/",
            "/healthz",
            "/api/v1/conversations",
            f"/api/v1/streams/{stream_id}",
            "/openapi.json",
        ):
            get, head = client.get(url), client.head(url)
            assert head.status_code == get.status_code, url
            assert head.content == b""
            assert head.headers["content-type"] == get.headers["content-type"]
        page = client.get("/")
        policy = page.headers["content-security-policy"]
        for part in ("script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
            assert part in policy
        assert "unsafe-inline" not in policy.split("script-src", 1)[1].split(";", 1)[0]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        schema = client.get("/openapi.json").json()
        for path in ("/api/v1/auth/login", "/api/v1/auth/keys", "/api/v1/users/{user_id}"):
            assert path in schema["paths"]


def test_the_database_keeps_no_secret_in_plain_text(serve: ServeFactory) -> None:
    server = serve()
    password = "a distinctive passphrase 1234"
    with client_of(server) as client:
        sign_up(client, "alice", password)
        session = client.cookies["runnel_session"]
        key = client.post("/api/v1/auth/keys", json={"name": "k"}).json()["key"]
    dump = b""
    path = server.settings.data_dir / "runnel.db"
    for file in path.parent.iterdir():
        if file.name.startswith("runnel.db"):
            dump += file.read_bytes()  # the database and its WAL, as written
    for secret in (password, session, key, key.removeprefix("rk_")):
        assert secret.encode() not in dump, secret[:6]
    (stored,) = list(rows(server, "users"))
    assert "$argon2id$" in stored[4]


def test_password_hashes_follow_the_configured_parameters(
    serve: ServeFactory, tmp_path: Path
) -> None:
    data = tmp_path / "shared"
    first = serve(data_dir=data)
    with client_of(first) as client:
        sign_up(client, "alice")
    first.stop()
    (before,) = [r[4] for r in rows(first, "users")]
    assert "t=1," in before
    second = serve(data_dir=data, password_time_cost=2)
    with client_of(second) as client:
        assert log_in(client, "alice").status_code == 200
    (after,) = [r[4] for r in rows(second, "users")]
    assert after != before
    assert "t=2," in after
    with client_of(second) as client:
        assert log_in(client, "alice").status_code == 200


@pytest.mark.parametrize("limit", ["10/fortnight", "many"])
def test_a_bad_login_limit_is_refused(limit: str, tmp_path: Path) -> None:
    from runnel.api.app import create_app
    from runnel.settings import Settings

    with pytest.raises(ValueError, match="login_limit_account"):
        create_app(Settings(data_dir=tmp_path, login_limit_account=limit))
