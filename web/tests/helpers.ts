// Test doubles: a server-sent event body the test feeds chunk by chunk, and a fetch stub.

import { vi } from "vitest";

const encoder = new TextEncoder();

export function sseEvent(id: number | null, data: unknown): string {
  return `${id === null ? "" : `id: ${id}\n`}data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
}

export const status = (streamId = "s_1", messageId = "m_1", conversationId: string | null = null) => ({
  type: "status",
  status: "started",
  streamId,
  conversationId,
  messageId,
  model: "demo/markdown",
});
export const token = (content: string) => ({ type: "token", content });
export const complete = (extra: Record<string, unknown> = {}) => ({
  type: "complete",
  model: "demo/markdown",
  finishReason: "stop",
  totalTokens: 3,
  usage: { promptTokens: 1, completionTokens: 2 },
  messageId: "m_1",
  ...extra,
});
export const errorEvent = (code = "INTERRUPTED", retryable = true) => ({
  type: "error",
  code,
  error: "the connection to demo was lost",
  retryable,
  partial: true,
  messageId: "m_1",
});

/**
 * A response body the test writes to. Chunks stay separate reads; `close()` and `fail()`
 * take effect after what was sent before them has been read (like a connection that drops
 * after delivering its last bytes), unless `fail(error, true)` (an abort) is immediate.
 */
export class FakeSse {
  readonly stream: ReadableStream<Uint8Array>;
  cancelled = false;
  closed = false;
  private queue: Uint8Array[] = [];
  private end: { error: unknown } | null = null;
  private wake: (() => void) | null = null;
  private controller: ReadableStreamDefaultController<Uint8Array> | null = null;

  constructor() {
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.controller = controller;
        },
        pull: async (controller) => {
          while (this.queue.length === 0 && this.end === null) {
            await new Promise<void>((resolve) => {
              this.wake = resolve;
            });
          }
          const chunk = this.queue.shift();
          if (chunk !== undefined) controller.enqueue(chunk);
          else if (this.end?.error !== undefined) controller.error(this.end.error);
          else controller.close();
        },
        cancel: () => {
          this.cancelled = true;
          this.poke();
        },
      },
      { highWaterMark: 0 },
    );
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  response(init: { status?: number; contentType?: string; headers?: Record<string, string> } = {}): Response {
    return new Response(this.stream, {
      status: init.status ?? 200,
      headers: { "Content-Type": init.contentType ?? "text/event-stream; charset=utf-8", ...init.headers },
    });
  }

  send(chunk: string | Uint8Array): void {
    if (this.closed || this.cancelled) return;
    this.queue.push(typeof chunk === "string" ? encoder.encode(chunk) : chunk);
    this.poke();
  }

  event(id: number | null, data: unknown): void {
    this.send(sseEvent(id, data));
  }

  close(): void {
    if (this.closed || this.cancelled) return;
    this.closed = true;
    this.end = { error: undefined };
    this.poke();
  }

  fail(error: unknown = new TypeError("network error"), immediate = false): void {
    if (this.closed || this.cancelled) return;
    this.closed = true;
    this.end = { error };
    if (immediate) {
      this.queue = [];
      try {
        this.controller?.error(error);
      } catch {
        // already errored or closed
      }
    }
    this.poke();
  }
}

export interface FetchCall {
  url: string;
  method: string;
  headers: Headers;
  body: unknown;
  signal: AbortSignal | null;
  credentials: RequestCredentials | null;
}

type Reply = Response | FakeSse | Error;
type Handler = (call: FetchCall) => Reply | Promise<Reply>;

function abortError(): Error {
  return new DOMException("The operation was aborted.", "AbortError");
}

/** Stubs global fetch; each call is answered by the next queued handler (or the fallback). */
export function stubFetch(fallback?: Handler) {
  const calls: FetchCall[] = [];
  const queue: Handler[] = [];
  const fn = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const body = typeof init.body === "string" ? (JSON.parse(init.body) as unknown) : init.body ?? undefined;
    const call: FetchCall = {
      url: String(input),
      method: init.method ?? "GET",
      headers: new Headers(init.headers),
      body,
      signal: init.signal ?? null,
      credentials: init.credentials ?? null,
    };
    calls.push(call);
    const handler = queue.shift() ?? fallback;
    if (handler === undefined) throw new Error(`unexpected fetch ${call.method} ${call.url}`);
    if (call.signal?.aborted) throw abortError();
    const reply = await new Promise<Reply>((resolve, reject) => {
      const onAbort = (): void => reject(abortError());
      call.signal?.addEventListener("abort", onAbort, { once: true });
      Promise.resolve(handler(call)).then(
        (r) => {
          call.signal?.removeEventListener("abort", onAbort);
          resolve(r);
        },
        reject,
      );
    });
    if (reply instanceof Error) throw reply;
    if (reply instanceof FakeSse) {
      call.signal?.addEventListener("abort", () => reply.fail(abortError(), true), { once: true });
      return reply.response();
    }
    return reply;
  });
  vi.stubGlobal("fetch", fn);
  return {
    fn,
    calls,
    /** Queue the answer to the next call. */
    next(handler: Handler | Reply): void {
      queue.push(typeof handler === "function" ? handler : () => handler);
    },
  };
}

export function jsonResponse(value: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(status === 204 ? null : JSON.stringify(value), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

export function errorResponse(status: number, code: string, message = "nope", headers: Record<string, string> = {}): Response {
  return jsonResponse({ error: { code, message } }, status, headers);
}

/** Lets pending promise callbacks (stream reads, fetch resolution) run. */
export async function flushAsync(): Promise<void> {
  if (vi.isFakeTimers()) {
    await vi.advanceTimersByTimeAsync(0);
  } else {
    await new Promise<void>((resolve) => setTimeout(resolve, 0));
    await new Promise<void>((resolve) => setTimeout(resolve, 0));
  }
}
