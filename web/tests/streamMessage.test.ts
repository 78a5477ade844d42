import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { streamMessage } from "../src/lib/streamMessage";
import { StreamError, type CompleteEvent } from "../src/lib/types";
import { FakeSse, complete, errorEvent, errorResponse, flushAsync, jsonResponse, status, stubFetch, token } from "./helpers";

function callbacks() {
  const tokens: string[] = [];
  const completes: CompleteEvent[] = [];
  const errors: StreamError[] = [];
  return {
    tokens,
    completes,
    errors,
    onToken: vi.fn((t: string) => tokens.push(t)),
    onComplete: vi.fn((e: CompleteEvent) => completes.push(e)),
    onError: vi.fn((e: StreamError) => errors.push(e)),
  };
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe("streamMessage", () => {
  it("streams tokens, then completes", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    const cb = callbacks();
    const history = [{ role: "user" as const, content: "Hi" }, { role: "assistant" as const, content: "Hello!" }];
    streamMessage("What is SSE?", cb.onToken, cb.onComplete, cb.onError, history, "demo/markdown");
    sse.event(1, status());
    sse.event(2, token("Server-"));
    sse.event(3, token("Sent Events"));
    sse.event(4, complete());
    await vi.runAllTimersAsync();
    expect(cb.tokens).toEqual(["Server-", "Sent Events"]);
    expect(cb.completes).toHaveLength(1);
    expect(cb.completes[0]?.finishReason).toBe("stop");
    expect(cb.errors).toEqual([]);
    const call = fetch.calls[0];
    expect(call?.url).toBe("/api/v1/messages");
    expect(call?.method).toBe("POST");
    expect(call?.headers.get("Accept")).toBe("text/event-stream");
    expect(call?.body).toEqual({ message: "What is SSE?", history, model: "demo/markdown" });
    expect(vi.getTimerCount()).toBe(0);
  });

  it("sends an empty history and no model by default", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    const cb = callbacks();
    streamMessage("hi", cb.onToken, cb.onComplete, cb.onError);
    sse.event(1, complete());
    await vi.runAllTimersAsync();
    expect(fetch.calls[0]?.body).toEqual({ message: "hi", history: [] });
  });

  it.each([
    ["onToken", 1],
    ["onComplete", 2],
    ["onError", 3],
  ])("throws INVALID_CALLBACK synchronously when %s is not a function", (_name, position) => {
    const fetch = stubFetch();
    const fns: unknown[] = ["hi", () => undefined, () => undefined, () => undefined];
    fns[position] = "not a function";
    const call = () => (streamMessage as (...args: unknown[]) => () => void)(...fns);
    expect(call).toThrow(StreamError);
    try {
      call();
    } catch (error) {
      expect((error as StreamError).code).toBe("INVALID_CALLBACK");
    }
    expect(fetch.calls).toHaveLength(0);
  });

  it("falls back to a JSON reply: one onToken with everything, then onComplete", async () => {
    stubFetch().next(
      jsonResponse({
        model: "demo/markdown",
        finishReason: "stop",
        totalTokens: 14,
        usage: { promptTokens: 2, completionTokens: 12 },
        messageId: "m_1",
        content: "## Hello from Runnel",
        streamId: "s_1",
        conversationId: null,
      }),
    );
    const cb = callbacks();
    streamMessage("hi", cb.onToken, cb.onComplete, cb.onError);
    await vi.runAllTimersAsync();
    expect(cb.tokens).toEqual(["## Hello from Runnel"]);
    expect(cb.completes).toEqual([
      {
        type: "complete",
        model: "demo/markdown",
        finishReason: "stop",
        totalTokens: 14,
        usage: { promptTokens: 2, completionTokens: 12 },
        messageId: "m_1",
      },
    ]);
    expect(cb.onToken.mock.invocationCallOrder[0]).toBeLessThan(cb.onComplete.mock.invocationCallOrder[0] ?? 0);
    expect(cb.errors).toEqual([]);
  });

  it("reports an error event through onError", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const cb = callbacks();
    streamMessage("hi", cb.onToken, cb.onComplete, cb.onError);
    sse.event(1, status());
    sse.event(2, token("partial"));
    sse.event(3, errorEvent("PROVIDER_ERROR", true));
    await vi.runAllTimersAsync();
    expect(cb.errors).toHaveLength(1);
    expect(cb.errors[0]).toMatchObject({ code: "PROVIDER_ERROR", retryable: true });
    expect(cb.completes).toEqual([]);
  });

  it("reports an HTTP error through onError", async () => {
    stubFetch().next(errorResponse(400, "INVALID_REQUEST", "message must not be blank"));
    const cb = callbacks();
    streamMessage(" ", cb.onToken, cb.onComplete, cb.onError);
    await vi.runAllTimersAsync();
    expect(cb.errors[0]).toMatchObject({ code: "INVALID_REQUEST", message: "message must not be blank", status: 400 });
    expect(vi.getTimerCount()).toBe(0);
  });

  it("reports a throwing onToken as CALLBACK_ERROR", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    const cb = callbacks();
    const boom = new Error("render failed");
    streamMessage("hi", () => {
      throw boom;
    }, cb.onComplete, cb.onError);
    sse.event(1, token("x"));
    sse.event(2, complete());
    await vi.runAllTimersAsync();
    expect(cb.errors).toHaveLength(1);
    expect(cb.errors[0]?.code).toBe("CALLBACK_ERROR");
    expect(cb.errors[0]?.cause).toBe(boom);
    expect(cb.completes).toEqual([]);
    expect(fetch.calls[0]?.signal?.aborted).toBe(true);
  });

  it("cancel() aborts, stops the server's stream, calls nothing more and is idempotent", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    fetch.next(jsonResponse({ streamId: "s_1", status: "cancelling" }, 202));
    const cb = callbacks();
    const cancel = streamMessage("hi", cb.onToken, cb.onComplete, cb.onError);
    sse.event(1, status("s_1"));
    sse.event(2, token("a"));
    await flushAsync();
    cancel();
    cancel();
    sse.event(3, token("b"));
    sse.event(4, complete());
    await vi.runAllTimersAsync();
    expect(cb.tokens).toEqual(["a"]);
    expect(cb.completes).toEqual([]);
    expect(cb.errors).toEqual([]);
    expect(fetch.calls[0]?.signal?.aborted).toBe(true);
    expect(fetch.calls).toHaveLength(2);
    expect(fetch.calls[1]?.url).toBe("/api/v1/streams/s_1/cancel");
    expect(fetch.calls[1]?.method).toBe("POST");
    expect(vi.getTimerCount()).toBe(0);
  });

  it("cancel() before the response calls nothing", async () => {
    const fetch = stubFetch();
    fetch.next(() => new Promise<Response>(() => undefined));
    const cb = callbacks();
    const cancel = streamMessage("hi", cb.onToken, cb.onComplete, cb.onError);
    await flushAsync();
    cancel();
    await vi.runAllTimersAsync();
    expect(cb.onToken).not.toHaveBeenCalled();
    expect(cb.onComplete).not.toHaveBeenCalled();
    expect(cb.onError).not.toHaveBeenCalled();
    expect(fetch.calls).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("resumes a dropped stream without duplicating text", async () => {
    const fetch = stubFetch();
    const first = new FakeSse();
    const second = new FakeSse();
    fetch.next(first);
    fetch.next(second);
    const cb = callbacks();
    streamMessage("hi", cb.onToken, cb.onComplete, cb.onError);
    first.event(1, status("s_9"));
    first.event(2, token("one "));
    first.event(3, token("two "));
    first.fail(new TypeError("connection reset"));
    second.event(3, token("two ")); // replayed
    second.event(4, token("three"));
    second.event(5, complete());
    await vi.runAllTimersAsync();
    expect(cb.tokens.join("")).toBe("one two three");
    expect(fetch.calls[1]?.url).toBe("/api/v1/streams/s_9");
    expect(fetch.calls[1]?.headers.get("Last-Event-ID")).toBe("3");
    expect(cb.completes).toHaveLength(1);
  });

  it("times out a silent stream with STREAM_TIMEOUT after retries give up", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    // resumes hit a server that is gone
    const cb = callbacks();
    streamMessage("hi", cb.onToken, cb.onComplete, cb.onError);
    sse.event(1, status("s_1"));
    await flushAsync();
    fetch.fn.mockImplementation(async () => {
      throw new TypeError("offline");
    });
    await vi.runAllTimersAsync();
    expect(cb.errors).toHaveLength(1);
    expect(["NETWORK_ERROR", "STREAM_TIMEOUT"]).toContain(cb.errors[0]?.code);
    expect(vi.getTimerCount()).toBe(0);
  });
});
