// A fetch-based reader of Runnel's event streams (docs/api.md, "The event stream").
//
// One call = one HTTP request. It reports each event once, in order, and then exactly one
// ending: a terminal event, a JSON reply, "no content" (204), an error, or nothing at all
// when the caller aborted. Every timer it starts is cleared on every way out.

import { createParser, type EventSourceMessage } from "eventsource-parser";
import { apiFetch, errorFromResponse } from "./api";
import {
  StreamError,
  type CompleteEvent,
  type ErrorEvent,
  type JsonReply,
  type StreamEvent,
} from "./types";

export const DEFAULT_INACTIVITY_TIMEOUT_MS = 30_000;
/** The parser gives up on an event (or a line) larger than this. */
const MAX_BUFFER_CHARS = 16 * 1024 * 1024;

export interface StreamRequest {
  /** "/api/v1/…" (or a path under it, see api.ts `apiUrl`). */
  path: string;
  /** Default: POST when there is a body, else GET. */
  method?: "GET" | "POST";
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as the `Last-Event-ID` header (resume after this id). */
  lastEventId?: number | null;
  headers?: Record<string, string>;
}

export interface StreamHandlers {
  /** Every event, in order, with its numeric id (null when the server sent none). */
  onEvent(id: number | null, event: StreamEvent): void;
  /** A 200 `application/json` answer: the finished reply (no events are reported then). */
  onJson?(reply: JsonReply): void;
  /** The failure that ended the stream. Not called after the caller aborted. */
  onError?(error: StreamError): void;
  /** A 200 `text/event-stream` response arrived. */
  onOpen?(response: Response): void;
  /** 204: nothing to stream. */
  onNoContent?(): void;
  /** The server's `retry:` field, in milliseconds. */
  onRetry?(ms: number): void;
}

export interface StreamOptions {
  signal?: AbortSignal;
  /**
   * Fail with STREAM_TIMEOUT when no status/token/terminal event arrived for this long once
   * the event stream is open (comments and pings don't count). 0 turns it off.
   */
  inactivityTimeoutMs?: number;
}

export type StreamOutcome =
  | { type: "terminal"; id: number | null; event: CompleteEvent | ErrorEvent }
  | { type: "json"; reply: JsonReply }
  | { type: "no-content" }
  | { type: "error"; error: StreamError }
  | { type: "aborted" };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const FINISH_REASONS = new Set(["stop", "length", "content_filter", "cancelled"]);

function isUsage(value: unknown): boolean {
  return value === null || isRecord(value);
}

/** The event, "unknown" for a type this client does not know (ignored), or null when malformed. */
export function toStreamEvent(value: unknown): StreamEvent | "unknown" | null {
  if (!isRecord(value) || typeof value.type !== "string") return null;
  switch (value.type) {
    case "status":
      return typeof value.streamId === "string" && typeof value.messageId === "string"
        ? (value as unknown as StreamEvent)
        : null;
    case "token":
      return typeof value.content === "string" ? (value as unknown as StreamEvent) : null;
    case "complete":
      return typeof value.finishReason === "string" && FINISH_REASONS.has(value.finishReason) && isUsage(value.usage ?? null)
        ? (value as unknown as StreamEvent)
        : null;
    case "error":
      return typeof value.code === "string" ? (value as unknown as StreamEvent) : null;
    default:
      return "unknown";
  }
}

function toJsonReply(value: unknown): JsonReply | null {
  if (!isRecord(value) || typeof value.content !== "string") return null;
  if (typeof value.finishReason !== "string" || !FINISH_REASONS.has(value.finishReason)) return null;
  return value as unknown as JsonReply;
}

function parseId(id: string | undefined): number | null {
  if (id === undefined || !/^\d{1,18}$/.test(id)) return null;
  const n = Number(id);
  return Number.isSafeInteger(n) ? n : null;
}

/** The MIME type of a response, lowercased, without parameters. */
function mediaType(response: Response): string {
  return (response.headers.get("Content-Type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
}

function buildInit(request: StreamRequest, signal: AbortSignal): RequestInit {
  const headers = new Headers(request.headers);
  headers.set("Accept", "text/event-stream");
  if (request.lastEventId != null) headers.set("Last-Event-ID", String(Math.max(0, Math.floor(request.lastEventId))));
  const init: RequestInit = { method: request.method ?? (request.body === undefined ? "GET" : "POST"), headers, signal, cache: "no-store" };
  if (request.body !== undefined) {
    headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(request.body);
  }
  return init;
}

/**
 * Sends `request` and reads the answer as an event stream (or as a JSON reply). Resolves
 * with how it ended; never rejects. Handlers run synchronously as data arrives; one that
 * throws ends the stream with CALLBACK_ERROR.
 */
export function openEventStream(
  request: StreamRequest,
  handlers: StreamHandlers,
  options: StreamOptions = {},
): Promise<StreamOutcome> {
  const controller = new AbortController();
  const external = options.signal;
  const timeoutMs = options.inactivityTimeoutMs ?? DEFAULT_INACTIVITY_TIMEOUT_MS;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  let outcome: StreamOutcome | null = null;
  let resolve!: (outcome: StreamOutcome) => void;
  const done = new Promise<StreamOutcome>((r) => {
    resolve = r;
  });

  const clearTimer = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };

  /** Ends the stream once: clears the timer, stops the network, resolves. True if it ended it. */
  const settle = (result: StreamOutcome): boolean => {
    if (outcome !== null) return false;
    outcome = result;
    clearTimer();
    external?.removeEventListener("abort", onAbort);
    if (result.type !== "terminal" && result.type !== "json" && result.type !== "no-content") {
      controller.abort();
    }
    reader?.cancel().catch(() => undefined);
    resolve(result);
    return true;
  };

  const fail = (error: StreamError): void => {
    if (!settle({ type: "error", error })) return;
    try {
      handlers.onError?.(error);
    } catch (callbackError) {
      console.error("openEventStream: onError threw", callbackError);
    }
  };

  /** Runs a caller's callback; a throw ends the stream with CALLBACK_ERROR. False if it threw. */
  const call = (callback: () => void): boolean => {
    try {
      callback();
      return true;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      fail(new StreamError("CALLBACK_ERROR", `a stream callback threw: ${message}`, { cause: error }));
      return false;
    }
  };

  const arm = (): void => {
    clearTimer();
    if (outcome !== null || !(timeoutMs > 0) || !Number.isFinite(timeoutMs)) return;
    timer = setTimeout(() => {
      timer = undefined;
      fail(new StreamError("STREAM_TIMEOUT", `no data for ${Math.round(timeoutMs / 1000)} s`, { retryable: true }));
    }, timeoutMs);
  };

  function onAbort(): void {
    settle({ type: "aborted" });
  }

  const onMessage = (message: EventSourceMessage): void => {
    if (outcome !== null || message.data === "") return;
    let data: unknown;
    try {
      data = JSON.parse(message.data);
    } catch (error) {
      fail(new StreamError("PARSE_ERROR", "the server sent an event that is not JSON", { cause: error }));
      return;
    }
    const event = toStreamEvent(data);
    if (event === null) {
      fail(new StreamError("PARSE_ERROR", "the server sent a malformed event"));
      return;
    }
    if (event === "unknown") return; // a newer server's event type: ignore
    arm();
    const id = parseId(message.id);
    if (!call(() => handlers.onEvent(id, event))) return;
    if (event.type === "complete" || event.type === "error") settle({ type: "terminal", id, event });
  };

  const parser = createParser({
    onEvent: onMessage,
    onRetry: (ms) => {
      if (outcome === null && handlers.onRetry) call(() => handlers.onRetry?.(ms));
    },
    onComment: () => undefined, // ": ping" keeps the connection, not the timer, alive
    onError: (error) => {
      if (error.type === "max-buffer-size-exceeded") {
        fail(new StreamError("PARSE_ERROR", "the server sent an event that is too large", { cause: error }));
      }
      // invalid retry values and unknown fields are ignored, as EventSource does
    },
    maxBufferSize: MAX_BUFFER_CHARS,
  });

  const networkError = (cause?: unknown): StreamError =>
    new StreamError("NETWORK_ERROR", "the connection to the server was lost", { retryable: true, cause });

  const readJson = async (response: Response): Promise<void> => {
    let value: unknown;
    try {
      value = JSON.parse(await response.text());
    } catch (error) {
      if (outcome === null) fail(new StreamError("PARSE_ERROR", "the server sent malformed JSON", { cause: error }));
      return;
    }
    if (outcome !== null) return;
    const reply = toJsonReply(value);
    if (reply === null) {
      fail(new StreamError("PARSE_ERROR", "the server sent an unexpected JSON reply"));
      return;
    }
    if (handlers.onJson && !call(() => handlers.onJson?.(reply))) return;
    settle({ type: "json", reply });
  };

  const readEvents = async (body: ReadableStream<Uint8Array>): Promise<void> => {
    const decoder = new TextDecoder("utf-8");
    let endsWithCr = false;
    reader = body.getReader();
    if (outcome !== null) {
      reader.cancel().catch(() => undefined);
      return;
    }
    arm();
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (outcome === null) fail(networkError(error));
        return;
      }
      if (outcome !== null) return;
      if (chunk.done) {
        // A final CR may still be waiting to see whether an LF follows: it is a line end.
        const rest = decoder.decode() + (endsWithCr ? "\n" : "");
        if (rest !== "") parser.feed(rest);
        if (outcome === null) fail(networkError()); // ended without a terminal event
        return;
      }
      const text = decoder.decode(chunk.value, { stream: true });
      if (text !== "") endsWithCr = text.endsWith("\r");
      parser.feed(text);
      if (outcome !== null) return;
    }
  };

  const run = async (): Promise<void> => {
    let response: Response;
    try {
      response = await apiFetch(request.path, buildInit(request, controller.signal));
    } catch (error) {
      if (outcome !== null) return;
      fail(error instanceof StreamError ? error : networkError(error));
      return;
    }
    if (outcome !== null) {
      response.body?.cancel().catch(() => undefined);
      return;
    }
    if (!response.ok) {
      const error = await errorFromResponse(response);
      if (outcome === null) fail(error);
      return;
    }
    if (response.status === 204) {
      if (handlers.onNoContent && !call(() => handlers.onNoContent?.())) return;
      settle({ type: "no-content" });
      return;
    }
    const type = mediaType(response);
    if (type === "application/json" || type.endsWith("+json")) {
      await readJson(response);
      return;
    }
    if (type !== "text/event-stream") {
      response.body?.cancel().catch(() => undefined);
      fail(new StreamError("PARSE_ERROR", `unexpected response type "${type}"`, { status: response.status }));
      return;
    }
    if (response.body === null) {
      fail(networkError());
      return;
    }
    if (handlers.onOpen && !call(() => handlers.onOpen?.(response))) return;
    await readEvents(response.body);
  };

  if (external?.aborted) {
    settle({ type: "aborted" });
    return done;
  }
  external?.addEventListener("abort", onAbort, { once: true });
  run().catch((error: unknown) => {
    // not expected: every step above handles its own failures
    fail(new StreamError("NETWORK_ERROR", "the stream failed", { retryable: true, cause: error }));
  });
  return done;
}
