import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { effectScope, watch, type EffectScope } from "vue";
import { useChatStream, type ChatPhase, type ChatStream, type LiveReply } from "../src/composables/useChatStream";
import { StreamError } from "../src/lib/types";
import { FakeSse, complete, errorEvent, errorResponse, flushAsync, jsonResponse, sseEvent, status, stubFetch, token } from "./helpers";

let scope: EffectScope;

function setup() {
  const settled: LiveReply[] = [];
  scope = effectScope();
  const chat = scope.run(() => useChatStream({ onSettled: (reply) => settled.push(reply) })) as ChatStream;
  const phases: ChatPhase[] = [];
  let replyUpdates = 0;
  scope.run(() => {
    watch(chat.phase, (p) => phases.push(p), { flush: "sync" });
    watch(chat.reply, () => (replyUpdates += 1), { flush: "sync" });
  });
  return { chat, settled, phases, replyUpdates: () => replyUpdates };
}

const cancelled = (keptThrough?: number) =>
  complete({ finishReason: "cancelled", usage: null, ...(keptThrough === undefined ? {} : { keptThrough }) });

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  scope.stop();
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe("useChatStream", () => {
  it("sends, streams and completes", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    const { chat, settled, phases } = setup();

    const sending = chat.send("c_1", "Plan a day in Lisbon", "demo/markdown");
    expect(chat.phase.value).toBe("sending");
    expect(chat.busy.value).toBe(true);
    await sending; // resolves once the stream exists
    expect(chat.phase.value).toBe("waiting");

    sse.event(1, status("s_1", "m_1", "c_1"));
    await vi.advanceTimersByTimeAsync(120);
    sse.event(2, token("Hello"));
    await flushAsync();
    expect(chat.phase.value).toBe("streaming");
    expect(chat.reply.value?.shown).toBe("Hello"); // the first token shows at once
    await vi.advanceTimersByTimeAsync(200);
    sse.event(3, token(" from"));
    sse.event(4, token(" Runnel"));
    sse.event(5, complete({ usage: { promptTokens: 3, completionTokens: 3 } }));
    await vi.advanceTimersByTimeAsync(1000);

    expect(chat.phase.value).toBe("complete");
    expect(chat.busy.value).toBe(false);
    const reply = chat.reply.value;
    expect(reply).toMatchObject({
      conversationId: "c_1",
      streamId: "s_1",
      messageId: "m_1",
      model: "demo/markdown",
      text: "Hello from Runnel",
      shown: "Hello from Runnel",
      lastEventId: 5,
      tokens: 3,
      finishReason: "stop",
      error: null,
    });
    expect(reply?.ttftMs).toBeGreaterThanOrEqual(120);
    expect(reply?.ttftMs).toBeLessThan(200);
    expect(reply?.tokensPerSecond).toBeGreaterThan(0);
    expect(phases).toEqual(["sending", "waiting", "streaming", "complete"]);
    expect(settled).toHaveLength(1);
    expect(settled[0]?.text).toBe("Hello from Runnel");

    const call = fetch.calls[0];
    expect(call?.url).toBe("/api/v1/conversations/c_1/messages");
    expect(call?.method).toBe("POST");
    expect(call?.headers.get("Accept")).toBe("text/event-stream");
    expect(call?.body).toEqual({ content: "Plan a day in Lisbon", model: "demo/markdown" });
    expect(vi.getTimerCount()).toBe(0);
  });

  it("updates the reply at most once per frame, not per token", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    const { chat, replyUpdates } = setup();
    await chat.send("c_1", "hi");
    let wire = sseEvent(1, status("s_1", "m_1", "c_1"));
    for (let id = 2; id < 502; id += 1) wire += sseEvent(id, token(`w${id} `));
    const before = replyUpdates();
    sse.send(wire); // 500 tokens in one read
    await flushAsync();
    expect(replyUpdates() - before).toBeLessThanOrEqual(2); // the status, the first token
    const atBurst = replyUpdates();
    await vi.advanceTimersByTimeAsync(1000);
    expect(replyUpdates() - atBurst).toBeLessThanOrEqual(Math.ceil(1000 / 16) + 1);
    expect(chat.reply.value?.shown).toBe(chat.reply.value?.text); // caught up within ~1 s
    expect(chat.reply.value?.tokens).toBe(500);
  });

  it("stop() cancels with the id of the last token shown and keeps the text", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    fetch.next(jsonResponse({ streamId: "s_1", status: "cancelling" }, 202));
    const { chat, settled } = setup();
    await chat.send("c_1", "hi");
    sse.event(1, status("s_1", "m_1", "c_1"));
    sse.event(2, token("One"));
    sse.event(3, token(" two"));
    sse.event(4, token(" three"));
    await vi.advanceTimersByTimeAsync(1500); // the pacer has caught up
    expect(chat.reply.value?.shown).toBe("One two three");

    const stopping = chat.stop();
    await flushAsync();
    const cancel = fetch.calls[1];
    expect(cancel?.url).toBe("/api/v1/streams/s_1/cancel");
    expect(cancel?.method).toBe("POST");
    expect(cancel?.body).toEqual({ lastEventId: 4 });

    sse.event(5, token(" four")); // generated before the cancel landed: not shown
    await vi.advanceTimersByTimeAsync(50);
    expect(chat.reply.value?.shown).toBe("One two three");
    sse.event(6, cancelled(4));
    await stopping;
    expect(chat.phase.value).toBe("stopped");
    expect(chat.reply.value?.text).toBe("One two three");
    expect(chat.reply.value?.shown).toBe("One two three");
    expect(chat.reply.value?.finishReason).toBe("cancelled");
    expect(settled).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("stop() while the display is behind keeps exactly the token being shown", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    fetch.next(jsonResponse({ streamId: "s_1", status: "cancelling" }, 202));
    const { chat } = setup();
    await chat.send("c_1", "hi");
    const long = " " + "x".repeat(2000);
    sse.event(1, status("s_1", "m_1", "c_1"));
    sse.event(2, token("Start"));
    sse.event(3, token(long));
    sse.event(4, token(" tail"));
    await flushAsync();
    await vi.advanceTimersByTimeAsync(48); // a few frames: inside token 3
    const shown = chat.reply.value?.shown.length ?? 0;
    expect(shown).toBeGreaterThan(5);
    expect(shown).toBeLessThan(5 + long.length);

    const stopping = chat.stop();
    await flushAsync();
    expect(fetch.calls[1]?.body).toEqual({ lastEventId: 3 });
    expect(chat.reply.value?.shown).toBe(`Start${long}`);
    sse.event(5, cancelled(3));
    await stopping;
    expect(chat.reply.value?.text).toBe(`Start${long}`); // token 4 dropped, as stored
    expect(chat.reply.value?.tokens).toBe(2);
    expect(chat.phase.value).toBe("stopped");
  });

  it("stop() before any token is shown cancels with lastEventId 0", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    fetch.next(jsonResponse({ streamId: "s_1", status: "cancelling" }, 202));
    const { chat } = setup();
    await chat.send("c_1", "hi");
    const stopping = chat.stop(); // the status event has not arrived yet
    sse.event(1, status("s_1", "m_1", "c_1"));
    await flushAsync();
    expect(fetch.calls[1]?.body).toEqual({ lastEventId: 0 });
    sse.event(2, cancelled(0));
    await stopping;
    expect(chat.phase.value).toBe("stopped");
    expect(chat.reply.value?.text).toBe("");
  });

  it("stop() ends locally when the server does not answer", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    fetch.next(errorResponse(404, "NOT_FOUND"));
    const { chat, settled } = setup();
    await chat.send("c_1", "hi");
    sse.event(1, status("s_1", "m_1", "c_1"));
    sse.event(2, token("kept"));
    await vi.advanceTimersByTimeAsync(100);
    await chat.stop();
    expect(chat.phase.value).toBe("stopped");
    expect(chat.reply.value?.text).toBe("kept");
    expect(settled).toHaveLength(1);
    expect(fetch.calls[0]?.signal?.aborted).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("resumes a dropped stream without duplicating text", async () => {
    const fetch = stubFetch();
    const first = new FakeSse();
    fetch.next(first);
    fetch.next((call) => {
      expect(call.url).toBe("/api/v1/streams/s_7");
      expect(call.headers.get("Last-Event-ID")).toBe("3");
      const second = new FakeSse();
      second.event(3, token(" world")); // already seen
      second.event(4, token("!"));
      second.event(5, complete());
      return second;
    });
    const { chat, phases, settled } = setup();
    await chat.send("c_1", "hi");
    first.event(1, status("s_7", "m_1", "c_1"));
    first.event(2, token("Hello"));
    first.event(3, token(" world"));
    await flushAsync();
    first.fail(new TypeError("network changed"));
    await flushAsync();
    expect(chat.phase.value).toBe("reconnecting");
    expect(chat.busy.value).toBe(true);
    await vi.advanceTimersByTimeAsync(2000);
    expect(chat.phase.value).toBe("complete");
    expect(chat.reply.value?.text).toBe("Hello world!");
    expect(chat.reply.value?.shown).toBe("Hello world!");
    expect(chat.reply.value?.tokens).toBe(3);
    expect(phases).toContain("reconnecting");
    expect(phases.indexOf("streaming")).toBeLessThan(phases.indexOf("reconnecting"));
    expect(settled).toHaveLength(1);
  });

  it("reloads the stored message when the stream expired", async () => {
    const fetch = stubFetch();
    const first = new FakeSse();
    fetch.next(first);
    fetch.next(errorResponse(404, "NOT_FOUND"));
    fetch.next(
      jsonResponse({
        id: "c_1",
        title: "t",
        model: null,
        systemPrompt: null,
        activeStreamId: null,
        createdAt: "",
        updatedAt: "",
        messages: [
          { id: "m_1", role: "assistant", content: "The whole stored reply", status: "complete", model: "demo/markdown", streamId: "s_7", finishReason: "stop", usage: null, error: null, createdAt: "", updatedAt: "" },
        ],
      }),
    );
    const { chat } = setup();
    await chat.send("c_1", "hi");
    first.event(1, status("s_7", "m_1", "c_1"));
    first.event(2, token("The whole"));
    await flushAsync();
    first.fail(new TypeError("offline"));
    await vi.advanceTimersByTimeAsync(2000);
    expect(fetch.calls[2]?.url).toBe("/api/v1/conversations/c_1");
    expect(chat.phase.value).toBe("complete");
    expect(chat.reply.value?.text).toBe("The whole stored reply");
    expect(chat.reply.value?.shown).toBe("The whole stored reply");
  });

  it("handles the JSON fallback", async () => {
    const fetch = stubFetch();
    fetch.next(
      jsonResponse({
        model: "demo/markdown",
        finishReason: "stop",
        totalTokens: 14,
        usage: { promptTokens: 2, completionTokens: 12 },
        messageId: "m_2",
        content: "## Hello from Runnel",
        streamId: "s_2",
        conversationId: "c_1",
      }),
    );
    const { chat, settled } = setup();
    await chat.send("c_1", "hi");
    await vi.advanceTimersByTimeAsync(0);
    expect(chat.phase.value).toBe("complete");
    expect(chat.reply.value).toMatchObject({
      text: "## Hello from Runnel",
      shown: "## Hello from Runnel",
      messageId: "m_2",
      streamId: "s_2",
      tokens: 1,
      finishReason: "stop",
    });
    expect(settled).toHaveLength(1);
    expect(fetch.calls).toHaveLength(1);
  });

  it("rejects errors before the stream exists and shows them", async () => {
    stubFetch().next(errorResponse(409, "STREAM_IN_PROGRESS", "this conversation already has a reply streaming"));
    const { chat, settled } = setup();
    const error = await chat.send("c_1", "hi").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StreamError);
    expect((error as StreamError).code).toBe("STREAM_IN_PROGRESS");
    expect(chat.phase.value).toBe("error");
    expect(chat.reply.value?.error?.code).toBe("STREAM_IN_PROGRESS");
    expect(settled).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("ends in phase error on an error event", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const { chat } = setup();
    await chat.send("c_1", "hi");
    sse.event(1, status("s_1", "m_1", "c_1"));
    sse.event(2, token("partial"));
    sse.event(3, errorEvent("INTERRUPTED"));
    await vi.advanceTimersByTimeAsync(500);
    expect(chat.phase.value).toBe("error");
    expect(chat.reply.value?.error).toMatchObject({ code: "INTERRUPTED", retryable: true });
    expect(chat.reply.value?.shown).toBe("partial");
  });

  it("refuses a second send while one is streaming", async () => {
    const sse = new FakeSse();
    stubFetch().next(sse);
    const { chat } = setup();
    await chat.send("c_1", "hi");
    await expect(chat.send("c_1", "again")).rejects.toMatchObject({ code: "STREAM_IN_PROGRESS" });
    expect(chat.phase.value).toBe("waiting");
  });

  it("regenerates", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    const { chat } = setup();
    await chat.regenerate("c_1");
    expect(fetch.calls[0]?.url).toBe("/api/v1/conversations/c_1/regenerate");
    expect(fetch.calls[0]?.method).toBe("POST");
    expect(fetch.calls[0]?.body).toEqual({});
    sse.event(1, status("s_3", "m_3", "c_1"));
    sse.event(2, token("Again"));
    sse.event(3, complete({ messageId: "m_3" }));
    await vi.advanceTimersByTimeAsync(500);
    expect(chat.reply.value?.messageId).toBe("m_3");
    expect(chat.phase.value).toBe("complete");
  });

  it("attach() returns false when nothing is streaming", async () => {
    const fetch = stubFetch();
    fetch.next(new Response(null, { status: 204 }));
    const { chat, settled } = setup();
    expect(await chat.attach("c_1")).toBe(false);
    expect(fetch.calls[0]?.url).toBe("/api/v1/conversations/c_1/stream");
    expect(fetch.calls[0]?.method).toBe("GET");
    expect(chat.phase.value).toBe("idle");
    expect(chat.reply.value).toBeNull();
    expect(settled).toEqual([]);
  });

  it("attach() follows a reply in progress, showing the replay at once", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    const { chat } = setup();
    expect(await chat.attach("c_1")).toBe(true);
    sse.send(sseEvent(1, status("s_1", "m_1", "c_1")) + sseEvent(2, token("Already ")) + sseEvent(3, token("written. ".repeat(100))));
    await flushAsync();
    expect(chat.reply.value?.shown).toBe(chat.reply.value?.text);
    expect(chat.phase.value).toBe("streaming");
    sse.event(4, token("More"));
    sse.event(5, complete());
    await vi.advanceTimersByTimeAsync(1000);
    expect(chat.phase.value).toBe("complete");
    expect(chat.reply.value?.ttftMs).toBeNull(); // not a send: no time to first token
  });

  it("reset() forgets the reply without cancelling", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    const { chat, settled } = setup();
    await chat.send("c_1", "hi");
    sse.event(1, status("s_1", "m_1", "c_1"));
    sse.event(2, token("x"));
    await flushAsync();
    chat.reset();
    expect(chat.phase.value).toBe("idle");
    expect(chat.reply.value).toBeNull();
    expect(fetch.calls).toHaveLength(1); // no cancel request
    expect(fetch.calls[0]?.signal?.aborted).toBe(true);
    sse.event(3, complete());
    await vi.advanceTimersByTimeAsync(1000);
    expect(chat.reply.value).toBeNull();
    expect(settled).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("cleans up when its scope is disposed", async () => {
    const fetch = stubFetch();
    const sse = new FakeSse();
    fetch.next(sse);
    const { chat } = setup();
    await chat.send("c_1", "hi");
    sse.event(1, status("s_1", "m_1", "c_1"));
    sse.event(2, token("a"));
    sse.event(3, token("b".repeat(1000)));
    await flushAsync();
    scope.stop();
    expect(fetch.calls[0]?.signal?.aborted).toBe(true);
    await vi.advanceTimersByTimeAsync(0);
    expect(vi.getTimerCount()).toBe(0);
  });
});
