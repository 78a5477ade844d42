// Keeps one reply's stream alive across dropped connections (docs/api.md, "Resume").
//
// The first request is whatever started or attached to the stream. When it fails in a way
// worth retrying, the stream is resumed with `GET /api/v1/streams/{streamId}` and
// `Last-Event-ID: <last id seen>` after an exponential backoff with jitter. Events whose id
// is ≤ the last id seen are dropped, so the caller sees every event once: no duplicate, no gap.

import { openEventStream, type StreamHandlers, type StreamOutcome, type StreamRequest } from "./sse";
import { API_PREFIX } from "./api";
import { StreamError, type CompleteEvent, type ErrorEvent, type JsonReply, type StreamEvent } from "./types";

export interface BackoffOptions {
  /** Delay before the first reconnect. */
  initialDelayMs: number;
  /** Upper bound of one delay. */
  maxDelayMs: number;
  factor: number;
  /** 0..1: a delay is drawn from [base·(1−jitter), base]. */
  jitter: number;
  /** Reconnects in a row without receiving a new event before giving up. */
  maxAttempts: number;
  /** Give up when failing for longer than this since the first failure in a row. */
  maxElapsedMs: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = {
  initialDelayMs: 250,
  maxDelayMs: 8_000,
  factor: 2,
  jitter: 0.5,
  maxAttempts: 8,
  maxElapsedMs: 60_000,
};

/** The delay before reconnect number `attempt` (1-based). */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const base = Math.min(options.maxDelayMs, options.initialDelayMs * options.factor ** Math.max(0, attempt - 1));
  const jitter = Math.min(1, Math.max(0, options.jitter));
  return Math.round(base * (1 - jitter * Math.min(1, Math.max(0, random()))));
}

export interface ResumeContext {
  streamId: string | null;
  lastEventId: number;
}

/** `GET /api/v1/streams/{streamId}` from after `lastEventId`; null while the stream id is unknown. */
export function streamResumeRequest(context: ResumeContext): StreamRequest | null {
  if (context.streamId === null) return null;
  return {
    path: `${API_PREFIX}/streams/${encodeURIComponent(context.streamId)}`,
    method: "GET",
    lastEventId: context.lastEventId > 0 ? context.lastEventId : null,
  };
}

export interface FollowOptions {
  /** The request that starts (or attaches to) the stream. */
  request: StreamRequest;
  /** Known up front when attaching to a known stream; otherwise learnt from the `status` event. */
  streamId?: string | null;
  /** Events with an id ≤ this are dropped (default 0). */
  lastEventId?: number;
  /** How to resume; default `streamResumeRequest`. Null = cannot resume (give up). */
  resumeRequest?: (context: ResumeContext) => StreamRequest | null;
  /** Which failures are retried; default: `error.retryable` (NETWORK_ERROR, 429, 5xx, STREAM_TIMEOUT). */
  isRetryable?: (error: StreamError) => boolean;
  signal?: AbortSignal;
  inactivityTimeoutMs?: number;
  backoff?: Partial<BackoffOptions>;
  random?: () => number;
  now?: () => number;
}

export interface ReconnectInfo {
  /** 1 for the first reconnect after a failure, 2 for the next, … */
  attempt: number;
  delayMs: number;
  error: StreamError;
  lastEventId: number;
}

export interface FollowHandlers {
  /** Each new event once (ids > the last id seen). */
  onEvent(id: number | null, event: StreamEvent): void;
  onJson?(reply: JsonReply): void;
  /** An SSE response opened; `attempt` 0 is the first request, n the n-th reconnect. */
  onOpen?(info: { attempt: number }): void;
  /** The connection failed and a reconnect is scheduled in `delayMs`. */
  onReconnecting?(info: ReconnectInfo): void;
  onRetry?(ms: number): void;
}

export type FollowOutcome =
  | { type: "terminal"; id: number | null; event: CompleteEvent | ErrorEvent }
  | { type: "json"; reply: JsonReply }
  /** 204 on the first request: nothing is streaming. */
  | { type: "no-content" }
  /**
   * The stream can no longer be resumed (404, or 204 when resuming through an attach
   * endpoint): read the stored message instead.
   */
  | { type: "expired"; streamId: string | null; lastEventId: number; error: StreamError | null }
  /** Not retryable, or retries exhausted: the last error. */
  | { type: "failed"; error: StreamError; attempts: number }
  | { type: "aborted" };

function sleep(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve(false);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Follows a stream to its end, reconnecting on retryable failures. Resolves with how it
 * ended; never rejects. A caller's callback that throws ends it (`failed`, CALLBACK_ERROR).
 */
export async function followStream(handlers: FollowHandlers, options: FollowOptions): Promise<FollowOutcome> {
  const backoff: BackoffOptions = { ...DEFAULT_BACKOFF, ...options.backoff };
  const resumeRequest = options.resumeRequest ?? streamResumeRequest;
  const isRetryable = options.isRetryable ?? ((error: StreamError) => error.retryable);
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  const signal = options.signal;

  let streamId = options.streamId ?? null;
  let lastId = Math.max(0, options.lastEventId ?? 0);
  let failures = 0; // reconnects in a row without a new event
  let failingSince: number | null = null;
  let attempt = 0; // 0 = the first request
  let request: StreamRequest = options.request;

  const streamHandlers: StreamHandlers = {
    onEvent(id, event) {
      if (id !== null) {
        if (id <= lastId) return; // a replayed event already seen
        lastId = id;
      }
      failures = 0;
      failingSince = null;
      if (event.type === "status") streamId = event.streamId;
      handlers.onEvent(id, event);
    },
    onOpen() {
      handlers.onOpen?.({ attempt });
    },
  };
  if (handlers.onJson) streamHandlers.onJson = (reply) => handlers.onJson?.(reply);
  if (handlers.onRetry) streamHandlers.onRetry = (ms) => handlers.onRetry?.(ms);

  for (;;) {
    const result: StreamOutcome = await openEventStream(request, streamHandlers, {
      signal,
      inactivityTimeoutMs: options.inactivityTimeoutMs,
    });
    switch (result.type) {
      case "terminal":
      case "json":
      case "aborted":
        return result;
      case "no-content":
        return attempt === 0 ? result : { type: "expired", streamId, lastEventId: lastId, error: null };
      case "error":
        break;
    }
    const error = result.error;
    if (signal?.aborted) return { type: "aborted" };
    if (attempt > 0 && error.status === 404) return { type: "expired", streamId, lastEventId: lastId, error };
    // An HTTP error on the first request means no stream was started: nothing to resume.
    const resumable = isRetryable(error) && !(attempt === 0 && error.status !== null);
    const next = resumable ? resumeRequest({ streamId, lastEventId: lastId }) : null;
    if (next === null) return { type: "failed", error, attempts: failures };

    failures += 1;
    failingSince ??= now();
    const delayMs = Math.max(backoffDelay(failures, backoff, random), error.retryAfterMs ?? 0);
    if (failures > backoff.maxAttempts || now() - failingSince + delayMs > backoff.maxElapsedMs) {
      return { type: "failed", error, attempts: failures - 1 };
    }
    try {
      handlers.onReconnecting?.({ attempt: failures, delayMs, error, lastEventId: lastId });
    } catch (callbackError) {
      const message = callbackError instanceof Error ? callbackError.message : String(callbackError);
      return {
        type: "failed",
        error: new StreamError("CALLBACK_ERROR", `a stream callback threw: ${message}`, { cause: callbackError }),
        attempts: failures,
      };
    }
    if (!(await sleep(delayMs, signal))) return { type: "aborted" };
    attempt += 1;
    request = next;
  }
}
