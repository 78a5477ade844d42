import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { setSignInHandler } from "../src/lib/api";
import { backoffDelay, DEFAULT_BACKOFF, followStream, type FollowHandlers, type ReconnectInfo } from "../src/lib/resume";
import type { StreamRequest } from "../src/lib/sse";
import type { StreamEvent } from "../src/lib/types";
import { FakeSse, complete, errorResponse, flushAsync, sseEvent, status, stubFetch, token } from "./helpers";

const first: StreamRequest = { path: "/api/v1/messages", method: "POST", body: { message: "hi" } };

// The server's log: status, then tokens t1..t8, then complete.
const PIECES = ["Hel", "lo", ", wor", "ld", "! é", "🎉", " 日本", "語"];
const LOG: Array<[number, unknown]> = [
  [1, status("s_42")],
  ...PIECES.map((p, i): [number, unknown] => [i + 2, token(p)]),
  [PIECES.length + 2, complete()],
];
const FULL = PIECES.join("");

function recorder() {
  const events: Array<[number | null, StreamEvent]> = [];
  const reconnects: ReconnectInfo[] = [];
  const handlers: FollowHandlers = {
    onEvent: (id, event) => events.push([id, event]),
    onReconnecting: (info) => reconnects.push(info),
  };
  const text = () => events.map(([, e]) => (e.type === "token" ? e.content : "")).join("");
  return { events, reconnects, handlers, text };
}

/** An SSE body holding LOG entries with id > after (optionally also replaying `replay` older ones). */
function serve(after: number, upTo: number, opts: { drop?: boolean; replay?: number } = {}): FakeSse {
  const sse = new FakeSse();
  const from = Math.max(0, after - (opts.replay ?? 0));
  for (const [id, data] of LOG) if (id > from && id <= upTo) sse.send(sseEvent(id, data));
  if (opts.drop) sse.fail(new TypeError("network connection lost"));
  else sse.close();
  return sse;
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe("followStream", () => {
  it("a session that ended mid-stream: the resume waits for sign-in, then goes on from the last id", async () => {
    const fetch = stubFetch();
    fetch.next(serve(0, 4, { drop: true }));
    fetch.next(errorResponse(401, "UNAUTHORIZED", "your session has ended; sign in again"));
    fetch.next((call) => serve(Number(call.headers.get("Last-Event-ID") ?? "0"), LOG.length));
    let signIn: (done: boolean) => void = () => undefined;
    const handler = vi.fn(() => new Promise<boolean>((resolve) => (signIn = resolve)));
    setSignInHandler(handler);
    try {
      const r = recorder();
      const done = followStream(r.handlers, { request: first, random: () => 0 });
      await vi.runAllTimersAsync();
      expect(handler).toHaveBeenCalledTimes(1);
      expect(r.text()).toBe(PIECES.slice(0, 3).join("")); // what arrived is kept while waiting
      signIn(true);
      await vi.runAllTimersAsync();
      expect((await done).type).toBe("terminal");
      expect(fetch.calls.map((c) => c.headers.get("Last-Event-ID"))).toEqual([null, "4", "4"]);
      expect(r.text()).toBe(FULL);
      expect(r.events.map(([id]) => id)).toEqual(LOG.map(([id]) => id));
    } finally {
      setSignInHandler(null);
    }
  });

  it("resumes after a drop at every point, with no duplicate and no gap", async () => {
    const last = LOG.length;
    for (let k = 1; k < last; k += 1) {
      for (const replay of [0, 1, 3]) {
        const fetch = stubFetch();
        fetch.next(serve(0, k, { drop: true }));
        fetch.next((call) => {
          const after = Number(call.headers.get("Last-Event-ID") ?? "0");
          return serve(after, last, { replay });
        });
        const r = recorder();
        const done = followStream(r.handlers, { request: first, random: () => 0 });
        await vi.runAllTimersAsync();
        const outcome = await done;
        expect(outcome.type).toBe("terminal");
        expect(fetch.calls).toHaveLength(2);
        expect(fetch.calls[1]?.url).toBe("/api/v1/streams/s_42");
        expect(fetch.calls[1]?.method).toBe("GET");
        expect(fetch.calls[1]?.headers.get("Last-Event-ID")).toBe(String(k));
        expect(r.text()).toBe(FULL);
        const ids = r.events.map(([id]) => id);
        expect(ids).toEqual(LOG.map(([id]) => id)); // each id once, in order
        expect(r.reconnects).toHaveLength(1);
        expect(r.reconnects[0]?.lastEventId).toBe(k);
        expect(vi.getTimerCount()).toBe(0);
      }
    }
  });

  it("survives several drops in a row", async () => {
    const fetch = stubFetch();
    fetch.next(serve(0, 3, { drop: true }));
    fetch.next(serve(3, 5, { drop: true, replay: 2 }));
    fetch.next(serve(5, 5, { drop: true }));
    fetch.next(serve(5, LOG.length, { replay: 5 }));
    const r = recorder();
    const done = followStream(r.handlers, { request: first, random: () => 0 });
    await vi.runAllTimersAsync();
    expect((await done).type).toBe("terminal");
    expect(r.text()).toBe(FULL);
    expect(fetch.calls.map((c) => c.headers.get("Last-Event-ID"))).toEqual([null, "3", "5", "5"]);
  });

  it("backs off exponentially with jitter, up to the cap", () => {
    const options = { ...DEFAULT_BACKOFF };
    const delays = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(n, options, () => 0));
    expect(delays).toEqual([250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
    // jitter takes up to half off, never adds
    expect(backoffDelay(3, options, () => 0.999)).toBeGreaterThanOrEqual(500);
    expect(backoffDelay(3, options, () => 0.999)).toBeLessThanOrEqual(1000);
  });

  it("waits longer before each reconnect and gives up after the limit", async () => {
    const fetch = stubFetch();
    fetch.next(serve(0, 2, { drop: true }));
    for (let i = 0; i < 10; i += 1) fetch.next(new TypeError("offline"));
    const r = recorder();
    const done = followStream(r.handlers, {
      request: first,
      random: () => 0,
      backoff: { maxAttempts: 4 },
    });
    const times: number[] = [];
    fetch.fn.mockImplementation(async () => {
      times.push(Date.now());
      throw new TypeError("offline");
    });
    const start = Date.now();
    await vi.runAllTimersAsync();
    const outcome = await done;
    expect(outcome).toMatchObject({ type: "failed", error: { code: "NETWORK_ERROR" }, attempts: 4 });
    expect(r.reconnects.map((x) => x.delayMs)).toEqual([250, 500, 1000, 2000]);
    expect(r.reconnects.map((x) => x.attempt)).toEqual([1, 2, 3, 4]);
    expect(times.map((t) => t - start)).toEqual([250, 750, 1750, 3750]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("gives up when the time budget is spent", async () => {
    const fetch = stubFetch(() => new TypeError("offline"));
    fetch.next(serve(0, 2, { drop: true }));
    const r = recorder();
    const done = followStream(r.handlers, {
      request: first,
      random: () => 0,
      backoff: { maxAttempts: 100, maxElapsedMs: 2_000 },
    });
    await vi.runAllTimersAsync();
    const outcome = await done;
    expect(outcome.type).toBe("failed");
    expect(r.reconnects.map((x) => x.delayMs)).toEqual([250, 500, 1000]); // 250+500+1000 ≤ 2000 < +2000
  });

  it("starts counting again after progress", async () => {
    const fetch = stubFetch();
    fetch.next(serve(0, 2, { drop: true }));
    fetch.next(new TypeError("offline"));
    fetch.next(serve(2, 4, { drop: true }));
    fetch.next(serve(4, LOG.length));
    const r = recorder();
    const done = followStream(r.handlers, { request: first, random: () => 0 });
    await vi.runAllTimersAsync();
    expect((await done).type).toBe("terminal");
    expect(r.reconnects.map((x) => x.attempt)).toEqual([1, 2, 1]);
    expect(r.text()).toBe(FULL);
  });

  it("retries 5xx and 429 on resume, honouring Retry-After", async () => {
    const fetch = stubFetch();
    fetch.next(serve(0, 2, { drop: true }));
    fetch.next(errorResponse(503, "OVERLOADED"));
    fetch.next(errorResponse(429, "RATE_LIMIT", "slow", { "Retry-After": "3" }));
    fetch.next(serve(2, LOG.length));
    const r = recorder();
    const done = followStream(r.handlers, { request: first, random: () => 0 });
    await vi.runAllTimersAsync();
    expect((await done).type).toBe("terminal");
    expect(r.reconnects.map((x) => x.error.code)).toEqual(["NETWORK_ERROR", "OVERLOADED", "RATE_LIMIT"]);
    expect(r.reconnects[2]?.delayMs).toBe(3000);
    expect(r.text()).toBe(FULL);
  });

  it("reports an expired stream (404) so the caller reloads the stored message", async () => {
    const fetch = stubFetch();
    fetch.next(serve(0, 4, { drop: true }));
    fetch.next(errorResponse(404, "NOT_FOUND"));
    const r = recorder();
    const done = followStream(r.handlers, { request: first, random: () => 0 });
    await vi.runAllTimersAsync();
    const outcome = await done;
    expect(outcome).toMatchObject({ type: "expired", streamId: "s_42", lastEventId: 4 });
    expect(vi.getTimerCount()).toBe(0);
  });

  it("does not retry an HTTP error of the first request", async () => {
    const fetch = stubFetch();
    fetch.next(errorResponse(503, "OVERLOADED"));
    const r = recorder();
    const outcome = await followStream(r.handlers, { request: first });
    expect(outcome).toMatchObject({ type: "failed", error: { code: "OVERLOADED" } });
    expect(fetch.calls).toHaveLength(1);
    expect(r.reconnects).toEqual([]);
  });

  it("does not retry what is not retryable", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    sse.event(1, status("s_42"));
    sse.send("data: nope\n\n");
    const outcome = await followStream(recorder().handlers, { request: first });
    expect(outcome).toMatchObject({ type: "failed", error: { code: "PARSE_ERROR" } });
    expect(fetch.calls).toHaveLength(1);
  });

  it("cannot resume before the stream id is known", async () => {
    const fetch = stubFetch();
    fetch.next(serve(0, 0, { drop: true }));
    const outcome = await followStream(recorder().handlers, { request: first });
    expect(outcome).toMatchObject({ type: "failed", error: { code: "NETWORK_ERROR" } });
    expect(fetch.calls).toHaveLength(1);
  });

  it("resumes a known stream from a given id", async () => {
    const fetch = stubFetch();
    fetch.next((call) => serve(Number(call.headers.get("Last-Event-ID")), LOG.length, { replay: 2 }));
    const r = recorder();
    const outcome = await followStream(r.handlers, {
      request: { path: "/api/v1/streams/s_42", method: "GET", lastEventId: 5 },
      streamId: "s_42",
      lastEventId: 5,
    });
    expect(outcome.type).toBe("terminal");
    expect(r.events[0]?.[0]).toBe(6);
    expect(r.text()).toBe(PIECES.slice(4).join(""));
  });

  it("stops waiting when aborted during the backoff", async () => {
    const fetch = stubFetch();
    fetch.next(serve(0, 3, { drop: true }));
    const controller = new AbortController();
    const r = recorder();
    const done = followStream(r.handlers, { request: first, signal: controller.signal, random: () => 0 });
    await flushAsync();
    expect(r.reconnects).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(1);
    controller.abort();
    expect(await done).toEqual({ type: "aborted" });
    expect(vi.getTimerCount()).toBe(0);
    expect(fetch.calls).toHaveLength(1);
  });

  it("reports a throwing callback as CALLBACK_ERROR without retrying", async () => {
    const fetch = stubFetch();
    fetch.next(serve(0, LOG.length));
    const outcome = await followStream(
      {
        onEvent: () => {
          throw new Error("bad handler");
        },
      },
      { request: first },
    );
    expect(outcome).toMatchObject({ type: "failed", error: { code: "CALLBACK_ERROR" } });
    expect(fetch.calls).toHaveLength(1);
  });
});
