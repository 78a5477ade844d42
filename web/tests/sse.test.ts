import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { openEventStream, type StreamHandlers, type StreamOutcome, type StreamRequest } from "../src/lib/sse";
import { setSignInHandler } from "../src/lib/api";
import { StreamError, type JsonReply, type StreamEvent } from "../src/lib/types";
import {
  FakeSse,
  complete,
  errorEvent,
  errorResponse,
  flushAsync,
  jsonResponse,
  sseEvent,
  status,
  stubFetch,
  token,
} from "./helpers";

const request: StreamRequest = { path: "/api/v1/messages", method: "POST", body: { message: "hi" } };

interface Recorder {
  events: Array<[number | null, StreamEvent]>;
  errors: StreamError[];
  json: JsonReply[];
  retries: number[];
  handlers: StreamHandlers;
}

function recorder(overrides: Partial<StreamHandlers> = {}): Recorder {
  const r: Recorder = {
    events: [],
    errors: [],
    json: [],
    retries: [],
    handlers: {
      onEvent: (id, event) => r.events.push([id, event]),
      onError: (error) => r.errors.push(error),
      onJson: (reply) => r.json.push(reply),
      onRetry: (ms) => r.retries.push(ms),
      ...overrides,
    },
  };
  return r;
}

const text = (r: Recorder): string =>
  r.events.map(([, e]) => (e.type === "token" ? e.content : "")).join("");

// A multi-event stream with multi-byte characters (2-, 3- and 4-byte UTF-8) and a ping.
const WIRE =
  "retry: 3000\n\n" +
  sseEvent(1, status()) +
  sseEvent(2, token("Café ")) +
  ": ping\n\n" +
  sseEvent(3, token("🎉 日本")) +
  sseEvent(4, token("語!")) +
  sseEvent(5, complete());
const BYTES = new TextEncoder().encode(WIRE);

function expectFullStream(r: Recorder, outcome: StreamOutcome): void {
  expect(r.errors).toEqual([]);
  expect(r.events.map(([id]) => id)).toEqual([1, 2, 3, 4, 5]);
  expect(text(r)).toBe("Café 🎉 日本語!");
  expect(r.retries).toEqual([3000]);
  expect(outcome.type).toBe("terminal");
}

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
  setSignInHandler(null);
});

describe("openEventStream: framing and decoding", () => {
  it("ignores the padding of padded token events (stream_padding)", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    sse.send(sseEvent(1, status()));
    sse.send(sseEvent(2, { type: "token", content: "Hi", p: "........................" }));
    sse.send(sseEvent(3, complete()));
    sse.close();
    expect((await done).type).toBe("terminal");
    const tokens = r.events.filter(([, e]) => e.type === "token").map(([, e]) => (e.type === "token" ? e.content : ""));
    expect(tokens).toEqual(["Hi"]);
  });

  it("survives a split at every byte position", async () => {
    for (let split = 0; split <= BYTES.length; split += 1) {
      const sse = new FakeSse();
      stubFetch().next(sse);
      const r = recorder();
      const done = openEventStream(request, r.handlers);
      // Enqueued chunks stay separate reads: each read gets one of them.
      sse.send(BYTES.slice(0, split));
      sse.send(BYTES.slice(split));
      sse.close();
      expectFullStream(r, await done);
    }
  });

  it("survives every pair of split points (three reads)", async () => {
    const step = 3;
    for (let a = 0; a <= BYTES.length; a += step) {
      for (let b = a; b <= BYTES.length; b += step + 4) {
        const sse = new FakeSse();
        stubFetch().next(sse);
        const r = recorder();
        const done = openEventStream(request, r.handlers);
        sse.send(BYTES.slice(0, a));
        sse.send(BYTES.slice(a, b));
        sse.send(BYTES.slice(b));
        sse.close();
        expectFullStream(r, await done);
      }
    }
  });

  it("survives one byte per read", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    for (const byte of BYTES) sse.send(new Uint8Array([byte]));
    sse.close();
    expectFullStream(r, await done);
  });

  it.each([
    ["CRLF", "\r\n"],
    ["CR", "\r"],
  ])("accepts %s line endings", async (_name, eol) => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    const wire = WIRE.replace(/\n/g, eol);
    // split inside a CRLF pair too
    sse.send(wire.slice(0, wire.indexOf("\r") + 1));
    await flushAsync();
    sse.send(wire.slice(wire.indexOf("\r") + 1));
    sse.close();
    expectFullStream(r, await done);
  });

  it("keeps a multi-byte character split across reads", async () => {
    for (const ch of ["é", "🎉", "日本"]) {
      const bytes = new TextEncoder().encode(sseEvent(1, token(ch)) + sseEvent(2, complete()));
      const at = new TextEncoder().encode(sseEvent(1, token("")).slice(0, -4)).length + 1; // inside the char
      const sse = new FakeSse();
      stubFetch().next(sse);
      const r = recorder();
      const done = openEventStream(request, r.handlers);
      sse.send(bytes.slice(0, at));
      await flushAsync();
      sse.send(bytes.slice(at));
      sse.close();
      await done;
      expect(text(r)).toBe(ch);
    }
  });

  it("ignores comments and reports retry", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    sse.send(": ping\n\nretry: 1500\n\n: another comment\n");
    sse.event(1, token("x"));
    sse.send(": ping\n\n");
    sse.event(2, complete());
    sse.close();
    await done;
    expect(r.events).toHaveLength(2);
    expect(r.retries).toEqual([1500]);
  });

  it("ignores event types it does not know", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    sse.event(1, { type: "future-thing", x: 1 });
    sse.event(2, token("a"));
    sse.event(3, complete());
    expect((await done).type).toBe("terminal");
    expect(r.events.map(([id]) => id)).toEqual([2, 3]);
  });

  it("stops reading after the terminal event", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    sse.send(sseEvent(1, token("a")) + sseEvent(2, errorEvent()) + sseEvent(3, token("late")));
    const outcome = await done;
    expect(outcome).toMatchObject({ type: "terminal", id: 2, event: { type: "error", code: "INTERRUPTED" } });
    expect(r.events).toHaveLength(2);
    expect(r.errors).toEqual([]); // an error *event* is a normal end of the stream
    await flushAsync();
    expect(sse.cancelled).toBe(true);
  });
});

describe("openEventStream: the request", () => {
  it("sends Accept, JSON body, the cookie and Last-Event-ID", async () => {
    const sse = new FakeSse();
    const fetch = stubFetch();
    fetch.next(sse);
    const done = openEventStream({ ...request, lastEventId: 7 }, recorder().handlers);
    sse.event(8, complete());
    await done;
    const call = fetch.calls[0];
    expect(call?.url).toBe("/api/v1/messages");
    expect(call?.method).toBe("POST");
    expect(call?.headers.get("Accept")).toBe("text/event-stream");
    expect(call?.headers.get("Content-Type")).toBe("application/json");
    expect(call?.credentials).toBe("same-origin");
    expect(call?.headers.has("Authorization")).toBe(false);
    expect(call?.headers.get("Last-Event-ID")).toBe("7");
    expect(call?.body).toEqual({ message: "hi" });
  });

  it("sends no Authorization or Last-Event-ID when there is none", async () => {
    const sse = new FakeSse();
    const fetch = stubFetch();
    fetch.next(sse);
    const done = openEventStream({ path: "/api/v1/streams/s_1" }, recorder().handlers);
    sse.event(1, complete());
    await done;
    expect(fetch.calls[0]?.method).toBe("GET");
    expect(fetch.calls[0]?.headers.has("Authorization")).toBe(false);
    expect(fetch.calls[0]?.headers.has("Last-Event-ID")).toBe(false);
  });

  it("asks to sign in on 401 and sends the request again once", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(errorResponse(401, "UNAUTHORIZED"));
    fetch.next(sse);
    const prompt = vi.fn(async () => true);
    setSignInHandler(prompt);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    await flushAsync();
    sse.event(1, complete());
    expect((await done).type).toBe("terminal");
    expect(prompt).toHaveBeenCalledTimes(1);
    expect(fetch.calls).toHaveLength(2);
    expect(fetch.calls[1]?.body).toEqual({ message: "hi" });
  });

  it("gives up with UNAUTHORIZED when the sign-in is dismissed", async () => {
    const fetch = stubFetch();
    fetch.next(errorResponse(401, "UNAUTHORIZED"));
    setSignInHandler(async () => false);
    const r = recorder();
    const outcome = await openEventStream(request, r.handlers);
    expect(outcome.type).toBe("error");
    expect(r.errors[0]?.code).toBe("UNAUTHORIZED");
    expect(fetch.calls).toHaveLength(1);
  });
});

describe("openEventStream: failures", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });

  it("reports bad JSON as PARSE_ERROR and ends the stream", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    sse.event(1, token("a"));
    sse.send("id: 2\ndata: {not json\n\n");
    sse.event(3, token("b"));
    const outcome = await done;
    expect(outcome.type).toBe("error");
    expect(r.errors.map((e) => e.code)).toEqual(["PARSE_ERROR"]);
    expect(text(r)).toBe("a");
    await flushAsync();
    expect(sse.cancelled || sse.closed).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("reports a malformed event as PARSE_ERROR", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    sse.event(1, { type: "token", content: 42 });
    await done;
    expect(r.errors[0]?.code).toBe("PARSE_ERROR");
    expect(vi.getTimerCount()).toBe(0);
  });

  it("turns a throwing callback into CALLBACK_ERROR and aborts", async () => {
    const sse = new FakeSse();
    const fetch = stubFetch();
    fetch.next(sse);
    const boom = new Error("boom");
    const seen: number[] = [];
    const r = recorder({
      onEvent: (id) => {
        seen.push(id ?? -1);
        if (id === 2) throw boom;
      },
    });
    const done = openEventStream(request, r.handlers);
    sse.send(sseEvent(1, token("a")) + sseEvent(2, token("b")) + sseEvent(3, token("c")));
    const outcome = await done;
    expect(outcome.type).toBe("error");
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]?.code).toBe("CALLBACK_ERROR");
    expect(r.errors[0]?.cause).toBe(boom);
    expect(seen).toEqual([1, 2]);
    expect(fetch.calls[0]?.signal?.aborted).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("fires STREAM_TIMEOUT after the inactivity period; pings don't reset it", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers, { inactivityTimeoutMs: 30_000 });
    await flushAsync();
    sse.event(1, status());
    await vi.advanceTimersByTimeAsync(20_000);
    sse.event(2, token("a")); // resets the timer
    await vi.advanceTimersByTimeAsync(20_000);
    expect(r.errors).toEqual([]);
    sse.send(": ping\n\n");
    await vi.advanceTimersByTimeAsync(5_000);
    sse.send(": ping\n\nretry: 100\n\n");
    await vi.advanceTimersByTimeAsync(4_999);
    expect(r.errors).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(r.errors.map((e) => e.code)).toEqual(["STREAM_TIMEOUT"]);
    expect(r.errors[0]?.retryable).toBe(true);
    expect((await done).type).toBe("error");
    await flushAsync();
    expect(sse.cancelled || sse.closed).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("uses a 30 s inactivity timeout by default", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    await flushAsync();
    await vi.advanceTimersByTimeAsync(29_999);
    expect(r.errors).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(r.errors[0]?.code).toBe("STREAM_TIMEOUT");
    await done;
    expect(vi.getTimerCount()).toBe(0);
  });

  it("reports nothing after the caller aborts", async () => {
    const sse = new FakeSse();
    const fetch = stubFetch();
    fetch.next(sse);
    const controller = new AbortController();
    const r = recorder();
    const done = openEventStream(request, r.handlers, { signal: controller.signal });
    sse.event(1, token("a"));
    await flushAsync();
    controller.abort();
    sse.event(2, token("b"));
    sse.event(3, complete());
    expect(await done).toEqual({ type: "aborted" });
    await flushAsync();
    expect(r.events).toHaveLength(1);
    expect(r.errors).toEqual([]);
    expect(fetch.calls[0]?.signal?.aborted).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("reports nothing when aborted before the response", async () => {
    const fetch = stubFetch();
    fetch.next(() => new Promise<Response>(() => undefined)); // never answers
    const controller = new AbortController();
    const r = recorder();
    const done = openEventStream(request, r.handlers, { signal: controller.signal });
    await flushAsync();
    controller.abort();
    expect(await done).toEqual({ type: "aborted" });
    await flushAsync();
    expect(r.errors).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("does nothing with an already aborted signal", async () => {
    const fetch = stubFetch();
    const controller = new AbortController();
    controller.abort();
    const outcome = await openEventStream(request, recorder().handlers, { signal: controller.signal });
    expect(outcome.type).toBe("aborted");
    expect(fetch.calls).toHaveLength(0);
  });

  it.each([
    [409, errorResponse(409, "STREAM_IN_PROGRESS", "busy"), "STREAM_IN_PROGRESS", false],
    [400, errorResponse(400, "INVALID_REQUEST"), "INVALID_REQUEST", false],
    [404, errorResponse(404, "NOT_FOUND"), "NOT_FOUND", false],
    [503, errorResponse(503, "OVERLOADED"), "OVERLOADED", true],
    [502, errorResponse(502, "PROVIDER_ERROR"), "PROVIDER_ERROR", true],
    [500, new Response("oops", { status: 500 }), "HTTP_500", true],
    [418, new Response("{}", { status: 418, headers: { "Content-Type": "application/json" } }), "HTTP_418", false],
  ])("maps HTTP %i to its code", async (httpStatus, response, code, retryable) => {
    stubFetch().next(response);
    const r = recorder();
    const outcome = await openEventStream(request, r.handlers);
    expect(outcome.type).toBe("error");
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toBeInstanceOf(StreamError);
    expect(r.errors[0]?.code).toBe(code);
    expect(r.errors[0]?.status).toBe(httpStatus);
    expect(r.errors[0]?.retryable).toBe(retryable);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("keeps the server's message and Retry-After of a 429", async () => {
    stubFetch().next(errorResponse(429, "RATE_LIMIT", "slow down", { "Retry-After": "2" }));
    const r = recorder();
    await openEventStream(request, r.handlers);
    expect(r.errors[0]).toMatchObject({ code: "RATE_LIMIT", message: "slow down", status: 429, retryable: true, retryAfterMs: 2000 });
  });

  it("reports a failed fetch as NETWORK_ERROR", async () => {
    stubFetch().next(new TypeError("Failed to fetch"));
    const r = recorder();
    await openEventStream(request, r.handlers);
    expect(r.errors[0]).toMatchObject({ code: "NETWORK_ERROR", retryable: true });
    expect(vi.getTimerCount()).toBe(0);
  });

  it("reports a body that ends without a terminal event as NETWORK_ERROR", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    sse.event(1, token("a"));
    sse.send("id: 2\ndata: {\"type\":\"token\",\"content\":\"never dispatched\"}\n"); // no blank line
    sse.close();
    await done;
    expect(text(r)).toBe("a");
    expect(r.errors.map((e) => e.code)).toEqual(["NETWORK_ERROR"]);
    expect(r.errors[0]?.retryable).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("reports a connection lost mid-body as NETWORK_ERROR", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const r = recorder();
    const done = openEventStream(request, r.handlers);
    sse.event(1, token("a"));
    await flushAsync();
    sse.fail(new TypeError("terminated"));
    await done;
    expect(r.errors.map((e) => e.code)).toEqual(["NETWORK_ERROR"]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("rejects an unexpected content type", async () => {
    stubFetch().next(new Response("<html>", { status: 200, headers: { "Content-Type": "text/html" } }));
    const r = recorder();
    await openEventStream(request, r.handlers);
    expect(r.errors[0]?.code).toBe("PARSE_ERROR");
  });
});

describe("openEventStream: other answers", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });

  it("hands a JSON reply to onJson", async () => {
    const body: JsonReply = {
      model: "demo/markdown",
      finishReason: "stop",
      totalTokens: 4,
      usage: { promptTokens: 1, completionTokens: 3 },
      messageId: "m_1",
      content: "Hello there",
      streamId: "s_1",
      conversationId: null,
    };
    stubFetch().next(jsonResponse(body));
    const r = recorder();
    const outcome = await openEventStream(request, r.handlers);
    expect(outcome).toEqual({ type: "json", reply: body });
    expect(r.json).toEqual([body]);
    expect(r.events).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("reports malformed JSON replies as PARSE_ERROR", async () => {
    stubFetch().next(new Response("{oops", { status: 200, headers: { "Content-Type": "application/json" } }));
    const r = recorder();
    await openEventStream(request, r.handlers);
    expect(r.errors[0]?.code).toBe("PARSE_ERROR");
  });

  it("reports 204 as no content", async () => {
    stubFetch().next(new Response(null, { status: 204 }));
    const onNoContent = vi.fn();
    const r = recorder({ onNoContent });
    expect(await openEventStream({ path: "/api/v1/conversations/c_1/stream" }, r.handlers)).toEqual({ type: "no-content" });
    expect(onNoContent).toHaveBeenCalledTimes(1);
    expect(r.errors).toEqual([]);
  });
});
