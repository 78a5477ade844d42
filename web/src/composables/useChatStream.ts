// One conversation's live reply: send / regenerate / attach, follow the stream across
// dropped connections, pace the text, stop, and report the result (web/notes/CONTRACT.md).
//
// Reactivity is deliberately coarse: `reply` is a shallowRef replaced with a fresh snapshot
// when the pacer draws a frame (and on the few status changes), never once per token.

import { computed, getCurrentScope, onScopeDispose, ref, shallowRef, type ComputedRef, type Ref } from "vue";
import { API_PREFIX, cancelStream, getConversation } from "../lib/api";
import { createPacer, type Pacer } from "../lib/pacer";
import { followStream, streamResumeRequest, type FollowOutcome, type ResumeContext } from "../lib/resume";
import type { StreamRequest } from "../lib/sse";
import { completeFromJson, errorFromEvent } from "../lib/streamMessage";
import { StreamError, type CompleteEvent, type FinishReason, type JsonReply, type StreamEvent } from "../lib/types";

export type ChatPhase =
  | "idle" | "sending" | "waiting" | "streaming" | "reconnecting"
  | "complete" | "stopped" | "error";

export interface LiveReply {
  conversationId: string | null;
  messageId: string | null;
  streamId: string | null;
  model: string | null;
  text: string; // all text received so far
  shown: string; // the paced text to display (a prefix of text; equals text at the end)
  lastEventId: number;
  tokens: number; // token pieces received
  ttftMs: number | null;
  tokensPerSecond: number | null;
  finishReason: FinishReason | null;
  error: StreamError | null; // set when phase is "error"
}

export interface UseChatStreamOptions {
  onSettled?: (reply: LiveReply) => void; // a reply ended: complete, stopped or error
}

export interface ChatStream {
  phase: Readonly<Ref<ChatPhase>>;
  reply: Readonly<Ref<LiveReply | null>>;
  busy: ComputedRef<boolean>;
  send(conversationId: string, content: string, model?: string | null): Promise<void>;
  regenerate(conversationId: string, model?: string | null): Promise<void>;
  attach(conversationId: string): Promise<boolean>;
  stop(): Promise<void>;
  reset(): void;
}

const BUSY_PHASES: ReadonlySet<ChatPhase> = new Set(["sending", "waiting", "streaming", "reconnecting"]);
/** After stop(), give up waiting for the final `complete` after this long and stop locally. */
const STOP_TIMEOUT_MS = 10_000;

type Mode = "generate" | "attach";

interface Piece {
  id: number | null;
  end: number; // offset in `text` after this piece
}

interface Run {
  mode: Mode;
  controller: AbortController;
  live: LiveReply;
  pacer: Pacer;
  pieces: Piece[];
  startedAt: number;
  firstTokenAt: number | null;
  opened: boolean;
  ended: boolean; // a terminal result is known; the pacer may still be draining
  settled: boolean;
  stopping: { lastEventId: number; sent: boolean } | null;
  stopTimer: ReturnType<typeof setTimeout> | null;
  finalPhase: ChatPhase | null;
  resolveStart: (started: boolean) => void;
  rejectStart: (error: StreamError) => void;
  waiters: Array<() => void>;
}

const now = (): number => (typeof performance !== "undefined" ? performance.now() : Date.now());

function emptyReply(conversationId: string | null): LiveReply {
  return {
    conversationId,
    messageId: null,
    streamId: null,
    model: null,
    text: "",
    shown: "",
    lastEventId: 0,
    tokens: 0,
    ttftMs: null,
    tokensPerSecond: null,
    finishReason: null,
    error: null,
  };
}

export function useChatStream(options: UseChatStreamOptions = {}): ChatStream {
  const phase = ref<ChatPhase>("idle");
  const reply = shallowRef<LiveReply | null>(null);
  const busy = computed(() => BUSY_PHASES.has(phase.value));
  let run: Run | null = null;

  // -------------------------------------------------------------------------------------
  // State helpers

  const isCurrent = (r: Run): boolean => run === r && !r.settled;

  function rate(r: Run, count: number, until: number): number | null {
    if (r.mode !== "generate" || r.firstTokenAt === null || count <= 0) return null;
    const seconds = (until - r.firstTokenAt) / 1000;
    return seconds > 0.001 ? count / seconds : null;
  }

  function publish(r: Run): void {
    if (run !== r) return;
    const live = r.live;
    if (!r.ended) live.tokensPerSecond = rate(r, live.tokens, now());
    reply.value = { ...live, shown: r.pacer.shown };
  }

  function setPhase(r: Run, next: ChatPhase): void {
    if (run !== r || r.settled) return;
    if (phase.value !== next) phase.value = next;
  }

  function clearStopTimer(r: Run): void {
    if (r.stopTimer !== null) clearTimeout(r.stopTimer);
    r.stopTimer = null;
  }

  /** The last step: phase, snapshot, promises, onSettled. */
  function settle(r: Run): void {
    if (r.settled) return;
    const final = r.finalPhase ?? "error";
    clearStopTimer(r);
    if (run === r) {
      r.live.shown = r.pacer.shown;
      phase.value = final;
      publish(r);
    }
    r.settled = true;
    r.pacer.dispose();
    if (final === "error" && !r.opened && r.live.error !== null) r.rejectStart(r.live.error);
    else r.resolveStart(true);
    for (const waiter of r.waiters.splice(0)) waiter();
    if (run === r && options.onSettled) {
      try {
        options.onSettled({ ...r.live });
      } catch (error) {
        console.error("useChatStream: onSettled threw", error);
      }
    }
  }

  /** The reply's outcome is known: let the pacer reveal the rest, then settle. */
  function finalize(r: Run, final: ChatPhase, tokensPerSecond: number | null = rate(r, r.live.tokens, now())): void {
    if (r.ended) return;
    r.ended = true;
    r.finalPhase = final;
    clearStopTimer(r);
    const live = r.live;
    live.tokensPerSecond = tokensPerSecond;
    // The pacer may hold less (pushes stop after stop()) or more (keptThrough) than `text`.
    const received = r.pacer.received;
    if (!live.text.startsWith(received)) r.pacer.truncate(0);
    if (live.text.length < r.pacer.received.length) r.pacer.truncate(live.text.length);
    if (live.text.length > r.pacer.received.length) r.pacer.push(live.text.slice(r.pacer.received.length));
    if (final === "stopped" || final === "error") r.pacer.flush();
    publish(r);
    r.pacer.finish(); // → onDrained → settle
  }

  /** Keeps only the tokens with id ≤ keptThrough (the stored text after a cancel). */
  function keepThrough(r: Run, keptThrough: number): void {
    const kept = r.pieces.filter((p) => p.id === null || p.id <= keptThrough);
    const end = kept.length > 0 ? (kept[kept.length - 1]?.end ?? 0) : 0;
    r.pieces = kept;
    r.live.text = r.live.text.slice(0, end);
    r.live.tokens = kept.length;
  }

  // -------------------------------------------------------------------------------------
  // Events

  function onEvent(r: Run, id: number | null, event: StreamEvent): void {
    if (!isCurrent(r) || r.ended) return;
    const live = r.live;
    if (id !== null) live.lastEventId = id;
    switch (event.type) {
      case "status":
        live.streamId = event.streamId;
        live.messageId = event.messageId;
        live.model = event.model;
        if (event.conversationId !== null) live.conversationId = event.conversationId;
        if (r.stopping !== null && !r.stopping.sent) sendCancel(r);
        publish(r);
        return;
      case "token": {
        if (event.content === "") return;
        const t = now();
        if (r.firstTokenAt === null) {
          r.firstTokenAt = t;
          if (r.mode === "generate") live.ttftMs = Math.round(t - r.startedAt);
        }
        live.text += event.content;
        live.tokens += 1;
        r.pieces.push({ id, end: live.text.length });
        if (r.stopping === null) {
          setPhase(r, "streaming");
          r.pacer.push(event.content); // publishes on the pacer's frame
          if (r.mode === "attach" && live.tokens === 1) {
            // A replay arrives in one burst: show it at once rather than typing it out.
            queueMicrotask(() => {
              if (isCurrent(r) && r.stopping === null) r.pacer.flush();
            });
          }
        }
        return;
      }
      case "complete":
        onComplete(r, event);
        return;
      case "error":
        live.error = errorFromEvent(event);
        if (event.messageId !== null) live.messageId = event.messageId;
        finalize(r, "error");
        return;
    }
  }

  function onComplete(r: Run, event: CompleteEvent): void {
    const live = r.live;
    live.finishReason = event.finishReason;
    live.messageId = event.messageId;
    live.model = event.model;
    if (event.keptThrough !== undefined) keepThrough(r, event.keptThrough);
    // The provider's token count is more accurate than the number of pieces, when reported.
    const completion = event.keptThrough === undefined ? (event.usage?.completionTokens ?? null) : null;
    finalize(r, event.finishReason === "cancelled" ? "stopped" : "complete", rate(r, completion ?? live.tokens, now()));
  }

  function onJson(r: Run, body: JsonReply): void {
    if (!isCurrent(r) || r.ended) return;
    const live = r.live;
    const t = now();
    live.streamId = body.streamId;
    live.conversationId = body.conversationId ?? live.conversationId;
    live.text = body.content;
    live.tokens = body.content === "" ? 0 : 1;
    r.pieces = [{ id: null, end: body.content.length }];
    if (r.mode === "generate" && body.content !== "") live.ttftMs = Math.round(t - r.startedAt);
    const event = completeFromJson(body);
    live.finishReason = event.finishReason;
    live.messageId = event.messageId;
    live.model = event.model;
    // No streaming phase to measure: the whole wait stands in for it.
    const completion = body.usage?.completionTokens ?? null;
    const seconds = (t - r.startedAt) / 1000;
    const tps = completion !== null && r.mode === "generate" && seconds > 0.001 ? completion / seconds : null;
    finalize(r, event.finishReason === "cancelled" ? "stopped" : "complete", tps);
  }

  /** The stream can't be resumed any more: take the stored message instead. */
  async function recover(r: Run, cause: StreamError | null): Promise<void> {
    const live = r.live;
    if (!r.opened && live.messageId === null) {
      live.error = cause ?? new StreamError("NETWORK_ERROR", "the connection to the server was lost", { retryable: true });
      r.finalPhase = "error";
      r.ended = true;
      settle(r);
      return;
    }
    if (live.conversationId !== null && live.messageId !== null) {
      try {
        const conversation = await getConversation(live.conversationId);
        if (!isCurrent(r)) return;
        const message = conversation.messages?.find((m) => m.id === live.messageId);
        if (message !== undefined && message.status !== "streaming") {
          live.text = message.content;
          live.tokens = Math.max(live.tokens, r.pieces.length);
          r.pieces = [{ id: null, end: message.content.length }];
          live.finishReason = (message.finishReason as FinishReason | null) ?? null;
          if (message.status === "error" || message.status === "interrupted") {
            live.error = new StreamError(message.error?.code ?? "INTERRUPTED", message.error?.message ?? "the reply failed");
            finalize(r, "error");
          } else {
            finalize(r, message.status === "cancelled" ? "stopped" : "complete");
          }
          return;
        }
      } catch {
        // fall through to the error below
      }
      if (!isCurrent(r)) return;
    }
    live.error = new StreamError("STREAM_EXPIRED", "the reply can no longer be followed; reload the conversation", {
      cause: cause ?? undefined,
    });
    finalize(r, "error");
  }

  function onOutcome(r: Run, outcome: FollowOutcome): void {
    if (!isCurrent(r)) return;
    switch (outcome.type) {
      case "terminal":
      case "json":
        return; // handled by the event handlers
      case "aborted":
        return; // stop() timeout, reset() or disposal handle their own state
      case "no-content":
        if (r.mode === "attach" && !r.opened) {
          r.settled = true;
          r.pacer.dispose();
          run = null;
          phase.value = "idle";
          reply.value = null;
          r.resolveStart(false);
          for (const waiter of r.waiters.splice(0)) waiter();
          return;
        }
        r.live.error = new StreamError("PARSE_ERROR", "the server sent no reply");
        finalize(r, "error");
        return;
      case "expired":
        void recover(r, outcome.error);
        return;
      case "failed":
        if (r.ended) return;
        if (r.stopping !== null && r.opened) {
          stopLocally(r);
          return;
        }
        r.live.error = outcome.error;
        if (!r.opened) {
          r.ended = true;
          r.finalPhase = "error";
          settle(r);
        } else {
          finalize(r, "error");
        }
        return;
    }
  }

  // -------------------------------------------------------------------------------------
  // Runs

  function teardown(r: Run | null): void {
    if (r === null) return;
    clearStopTimer(r);
    r.controller.abort();
    r.pacer.dispose();
  }

  function start(mode: Mode, conversationId: string, request: StreamRequest): Promise<boolean> {
    if (run !== null && !run.settled) {
      return Promise.reject(new StreamError("STREAM_IN_PROGRESS", "a reply is already streaming here", { status: 409 }));
    }
    teardown(run);
    let resolveStart!: (started: boolean) => void;
    let rejectStart!: (error: StreamError) => void;
    const started = new Promise<boolean>((resolve, reject) => {
      resolveStart = resolve;
      rejectStart = reject;
    });
    const r: Run = {
      mode,
      controller: new AbortController(),
      live: emptyReply(conversationId),
      pacer: createPacer({
        onFrame: () => publish(r),
        onDrained: () => {
          if (r.ended) settle(r);
        },
      }),
      pieces: [],
      startedAt: now(),
      firstTokenAt: null,
      opened: false,
      ended: false,
      settled: false,
      stopping: null,
      stopTimer: null,
      finalPhase: null,
      resolveStart: (value) => resolveStart(value),
      rejectStart: (error) => rejectStart(error),
      waiters: [],
    };
    run = r;
    phase.value = mode === "attach" ? "waiting" : "sending";
    publish(r);

    const attachPath = `${API_PREFIX}/conversations/${encodeURIComponent(conversationId)}/stream`;
    const resumeRequest = (context: ResumeContext): StreamRequest | null =>
      context.streamId !== null
        ? streamResumeRequest(context)
        : { path: attachPath, method: "GET", lastEventId: null }; // the stream's id is not known yet

    followStream(
      {
        onEvent: (id, event) => onEvent(r, id, event),
        onJson: (body) => onJson(r, body),
        onOpen: () => {
          if (!isCurrent(r)) return;
          r.opened = true;
          setPhase(r, r.live.tokens > 0 ? "streaming" : "waiting");
          r.resolveStart(true);
        },
        onReconnecting: () => {
          if (isCurrent(r) && !r.ended) setPhase(r, "reconnecting");
        },
      },
      { request, resumeRequest, signal: r.controller.signal },
    ).then(
      (outcome) => onOutcome(r, outcome),
      (error: unknown) => onOutcome(r, { type: "failed", error: new StreamError("NETWORK_ERROR", String(error), { cause: error }), attempts: 0 }),
    );
    return started;
  }

  function modelField(model: string | null | undefined): { model?: string } {
    return typeof model === "string" && model !== "" ? { model } : {};
  }

  async function send(conversationId: string, content: string, model?: string | null): Promise<void> {
    const path = `${API_PREFIX}/conversations/${encodeURIComponent(conversationId)}/messages`;
    await start("generate", conversationId, { path, method: "POST", body: { content, ...modelField(model) } });
  }

  async function regenerate(conversationId: string, model?: string | null): Promise<void> {
    const path = `${API_PREFIX}/conversations/${encodeURIComponent(conversationId)}/regenerate`;
    await start("generate", conversationId, { path, method: "POST", body: modelField(model) });
  }

  function attach(conversationId: string): Promise<boolean> {
    const path = `${API_PREFIX}/conversations/${encodeURIComponent(conversationId)}/stream`;
    return start("attach", conversationId, { path, method: "GET" });
  }

  // -------------------------------------------------------------------------------------
  // Stop

  /** Ends the reply here without the server's word (cancel failed, or it took too long). */
  function stopLocally(r: Run): void {
    if (r.ended || !isCurrent(r)) return;
    r.controller.abort();
    const shown = r.pacer.shown.length;
    const kept = r.pieces.filter((p) => p.end <= shown);
    r.pieces = kept;
    r.live.text = r.live.text.slice(0, shown);
    r.live.tokens = kept.length;
    r.live.finishReason = "cancelled";
    finalize(r, "stopped");
  }

  function sendCancel(r: Run): void {
    const stopping = r.stopping;
    const streamId = r.live.streamId;
    if (stopping === null || streamId === null || stopping.sent) return;
    stopping.sent = true;
    cancelStream(streamId, stopping.lastEventId).catch(() => {
      // Unknown or expired stream, or no connection: nothing will end it from the server.
      stopLocally(r);
    });
  }

  function stop(): Promise<void> {
    const r = run;
    if (r === null || r.settled) return Promise.resolve();
    const done = new Promise<void>((resolve) => r.waiters.push(resolve));
    if (r.ended || r.stopping !== null) return done;

    // Freeze the display at the end of the token the reader is looking at; that token's id
    // is what the person saw, and the server keeps exactly the tokens up to it.
    const shown = r.pacer.shown.length;
    const piece = shown === 0 ? undefined : r.pieces.find((p) => p.end >= shown);
    const cut = piece?.end ?? 0;
    const lastEventId = piece === undefined ? 0 : (piece.id ?? r.live.lastEventId);
    r.pacer.truncate(cut);
    r.pacer.flush();
    r.stopping = { lastEventId, sent: false };
    publish(r);
    r.stopTimer = setTimeout(() => {
      r.stopTimer = null;
      stopLocally(r);
    }, STOP_TIMEOUT_MS);
    if (r.live.streamId !== null) sendCancel(r);
    return done;
  }

  function reset(): void {
    const r = run;
    run = null;
    if (r !== null) {
      teardown(r);
      r.settled = true;
      r.resolveStart(false);
      for (const waiter of r.waiters.splice(0)) waiter();
    }
    phase.value = "idle";
    reply.value = null;
  }

  if (getCurrentScope() !== undefined) {
    onScopeDispose(() => {
      const r = run;
      run = null;
      if (r === null) return;
      teardown(r);
      r.settled = true;
      r.resolveStart(false);
      for (const waiter of r.waiters.splice(0)) waiter();
    });
  }

  return { phase, reply, busy, send, regenerate, attach, stop, reset };
}
