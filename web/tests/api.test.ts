import { afterEach, describe, expect, it, vi } from "vitest";
import {
  apiFetch,
  apiJson,
  apiUrl,
  cancelStream,
  createConversation,
  deleteConversation,
  listConversations,
  listModels,
  parseRetryAfter,
  setSignInHandler,
  updateConversation,
} from "../src/lib/api";
import { StreamError } from "../src/lib/types";
import { errorResponse, jsonResponse, stubFetch } from "./helpers";

afterEach(() => {
  vi.unstubAllGlobals();
  setSignInHandler(null);
});

describe("sign-in", () => {
  it("relies on the same-origin cookie: no Authorization header, nothing in storage", async () => {
    const fetch = stubFetch(() => jsonResponse({ data: [], default: "demo/markdown" }));
    await listModels();
    expect(fetch.calls[0]?.url).toBe("/api/v1/models");
    expect(fetch.calls[0]?.credentials).toBe("same-origin");
    expect(fetch.calls[0]?.headers.has("Authorization")).toBe(false);
    expect(sessionStorage.length).toBe(0);
    expect(localStorage.length).toBe(0);
  });

  it("asks once for concurrent 401s and sends each request again once", async () => {
    let signedIn = false;
    const fetch = stubFetch(() => (signedIn ? jsonResponse({ ok: true }) : errorResponse(401, "UNAUTHORIZED")));
    const handler = vi.fn(async () => {
      signedIn = true;
      return true;
    });
    setSignInHandler(handler);
    const results = await Promise.all([apiJson("/a"), apiJson("/b"), apiJson("/c")]);
    expect(results).toEqual([{ ok: true }, { ok: true }, { ok: true }]);
    expect(handler).toHaveBeenCalledTimes(1);
    expect(fetch.calls).toHaveLength(6);
  });

  it("rejects with UNAUTHORIZED when the person does not sign in", async () => {
    stubFetch(() => errorResponse(401, "UNAUTHORIZED"));
    setSignInHandler(async () => false);
    await expect(apiJson("/models")).rejects.toMatchObject({ code: "UNAUTHORIZED", status: 401 });
  });

  it("returns the 401 as is without a handler, or when asked not to prompt", async () => {
    stubFetch(() => errorResponse(401, "UNAUTHORIZED"));
    expect((await apiFetch("/api/v1/models")).status).toBe(401);
    const handler = vi.fn(async () => true);
    setSignInHandler(handler);
    expect((await apiFetch("/api/v1/auth/login", { method: "POST" }, { signIn: false })).status).toBe(401);
    expect(handler).not.toHaveBeenCalled();
  });
});

describe("apiJson and helpers", () => {
  it("maps error bodies to StreamError", async () => {
    stubFetch(() => errorResponse(404, "NOT_FOUND", "no such conversation"));
    const error = await apiJson("/conversations/c_x").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StreamError);
    expect(error).toMatchObject({ code: "NOT_FOUND", message: "no such conversation", status: 404, retryable: false });
  });

  it("uses HTTP_<status> without a JSON error body", async () => {
    stubFetch(() => new Response("bad gateway", { status: 502 }));
    await expect(apiJson("/models")).rejects.toMatchObject({ code: "HTTP_502", status: 502, retryable: true });
  });

  it("maps a network failure to NETWORK_ERROR", async () => {
    stubFetch(() => new TypeError("Failed to fetch"));
    await expect(apiJson("/models")).rejects.toMatchObject({ code: "NETWORK_ERROR", retryable: true });
  });

  it("builds the REST calls of docs/api.md", async () => {
    const fetch = stubFetch((call) => (call.method === "DELETE" ? new Response(null, { status: 204 }) : jsonResponse({})));
    await listConversations("WzE3OTYw", 20);
    await listConversations();
    await createConversation({ title: "Trip" });
    await updateConversation("c_1", { title: "New", model: null });
    await deleteConversation("c_1");
    await cancelStream("s_1", 12);
    await cancelStream("s_2");
    expect(fetch.calls.map((c) => `${c.method} ${c.url}`)).toEqual([
      "GET /api/v1/conversations?cursor=WzE3OTYw&limit=20",
      "GET /api/v1/conversations",
      "POST /api/v1/conversations",
      "PATCH /api/v1/conversations/c_1",
      "DELETE /api/v1/conversations/c_1",
      "POST /api/v1/streams/s_1/cancel",
      "POST /api/v1/streams/s_2/cancel",
    ]);
    expect(fetch.calls[2]?.body).toEqual({ title: "Trip" });
    expect(fetch.calls[3]?.body).toEqual({ title: "New", model: null });
    expect(fetch.calls[5]?.body).toEqual({ lastEventId: 12 });
    expect(fetch.calls[6]?.body).toBeUndefined();
    expect(fetch.calls[2]?.headers.get("Content-Type")).toBe("application/json");
  });

  it("accepts paths with or without the /api/v1 prefix", () => {
    expect(apiUrl("/models")).toBe("/api/v1/models");
    expect(apiUrl("models")).toBe("/api/v1/models");
    expect(apiUrl("/api/v1/models")).toBe("/api/v1/models");
    expect(apiUrl("https://x.example/api/v1/models")).toBe("https://x.example/api/v1/models");
  });

  it("parses Retry-After", () => {
    expect(parseRetryAfter("3")).toBe(3000);
    expect(parseRetryAfter(null)).toBeNull();
    expect(parseRetryAfter("Wed, 21 Oct 2015 07:28:05 GMT", Date.parse("Wed, 21 Oct 2015 07:28:00 GMT"))).toBe(5000);
  });
});
