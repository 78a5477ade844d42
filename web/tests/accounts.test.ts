import { afterEach, describe, expect, it, vi } from "vitest";
import { setSignInHandler } from "../src/lib/api";
import {
  addUser,
  authState,
  changeUser,
  createKey,
  listKeys,
  listUsers,
  logIn,
  logOut,
  revokeKey,
  signUp,
  whoAmI,
} from "../src/lib/accounts";
import { errorResponse, jsonResponse, stubFetch } from "./helpers";

afterEach(() => {
  vi.unstubAllGlobals();
  setSignInHandler(null);
});

const user = { id: "u_1", username: "alice", role: "admin", disabled: false, pending: false, createdAt: null, lastSeenAt: null };

describe("account calls", () => {
  it("sign in, up and out without ever opening the sign-in prompt", async () => {
    const handler = vi.fn(async () => true);
    setSignInHandler(handler);
    const fetch = stubFetch();
    fetch.next(errorResponse(401, "UNAUTHORIZED", "wrong username or password"));
    await expect(logIn("alice", "nope")).rejects.toMatchObject({ code: "UNAUTHORIZED", message: "wrong username or password" });
    fetch.next(errorResponse(401, "UNAUTHORIZED"));
    await expect(whoAmI()).rejects.toMatchObject({ code: "UNAUTHORIZED" });
    fetch.next(jsonResponse({ user }, 201));
    expect(await signUp("alice", "password1")).toEqual(user);
    fetch.next(jsonResponse({ accounts: true, signup: "closed", canSignUp: false }));
    expect((await authState()).accounts).toBe(true);
    fetch.next(new Response(null, { status: 204 }));
    await logOut();
    expect(handler).not.toHaveBeenCalled();
    expect(fetch.calls.map((c) => `${c.method} ${c.url}`)).toEqual([
      "POST /api/v1/auth/login",
      "GET /api/v1/auth/me",
      "POST /api/v1/auth/signup",
      "GET /api/v1/auth/state",
      "POST /api/v1/auth/logout",
    ]);
    expect(fetch.calls[0]?.body).toEqual({ username: "alice", password: "nope" });
  });

  it("a throttled sign-in keeps its Retry-After", async () => {
    const fetch = stubFetch();
    fetch.next(errorResponse(429, "RATE_LIMIT", "too many failed sign-ins for this account", { "Retry-After": "42" }));
    await expect(logIn("alice", "x")).rejects.toMatchObject({ code: "RATE_LIMIT", retryAfterMs: 42_000 });
  });

  it("keys and users follow docs/api.md", async () => {
    const fetch = stubFetch((call) => {
      if (call.method === "DELETE") return new Response(null, { status: 204 });
      if (call.url.endsWith("/auth/keys") && call.method === "GET") return jsonResponse({ data: [] });
      if (call.url.endsWith("/users") && call.method === "GET") return jsonResponse({ data: [] });
      return jsonResponse({ user, id: "k_1", key: "rk_x" }, 201);
    });
    await listKeys();
    await createKey("laptop");
    await revokeKey("k/1");
    await listUsers();
    await addUser("bob", "password1", "user");
    await changeUser("u_2", { disabled: true, limits: { maxStreams: 0 } });
    expect(fetch.calls.map((c) => `${c.method} ${c.url}`)).toEqual([
      "GET /api/v1/auth/keys",
      "POST /api/v1/auth/keys",
      "DELETE /api/v1/auth/keys/k%2F1",
      "GET /api/v1/users",
      "POST /api/v1/users",
      "PATCH /api/v1/users/u_2",
    ]);
    expect(fetch.calls[1]?.body).toEqual({ name: "laptop" });
    expect(fetch.calls[4]?.body).toEqual({ username: "bob", password: "password1", role: "user" });
    expect(fetch.calls[5]?.body).toEqual({ disabled: true, limits: { maxStreams: 0 } });
  });
});
