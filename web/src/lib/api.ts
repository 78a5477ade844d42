// HTTP access to Runnel's API (docs/api.md): fetch with the sign-in prompt on a 401, JSON
// helpers and the REST calls the UI needs. The streaming endpoints live in sse.ts, the
// account endpoints in accounts.ts.

import {
  StreamError,
  type CancelResult,
  type Conversation,
  type ConversationPage,
  type ModelList,
} from "./types";

export const API_PREFIX = "/api/v1";

// ---------------------------------------------------------------------------------------
// Sign-in
//
// The browser is authenticated by the session cookie alone (same-origin fetch sends it);
// no credential is kept in script-readable storage or put in a header or URL.

let signInHandler: (() => Promise<boolean>) | null = null;
let pendingSignIn: Promise<boolean> | null = null;

/**
 * Registers what asks the person to sign in. On a 401, `apiFetch` calls it (once, shared by
 * concurrent requests) and, when it resolves `true` (signed in), retries the request once;
 * `false` means give up (the call rejects with `StreamError("UNAUTHORIZED")`).
 */
export function setSignInHandler(handler: (() => Promise<boolean>) | null): void {
  signInHandler = handler;
}

function askToSignIn(handler: () => Promise<boolean>): Promise<boolean> {
  if (pendingSignIn === null) {
    pendingSignIn = (async () => {
      try {
        return await handler();
      } finally {
        pendingSignIn = null;
      }
    })();
  }
  return pendingSignIn;
}

// ---------------------------------------------------------------------------------------
// Fetch

/** "/api/v1/models" and "/models" both name `GET /api/v1/models`; absolute URLs pass through. */
export function apiUrl(path: string): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(path) || path.startsWith("/api/") || path === "/api") return path;
  return `${API_PREFIX}${path.startsWith("/") ? path : `/${path}`}`;
}

function discard(response: Response): void {
  response.body?.cancel().catch(() => undefined);
}

export interface FetchOptions {
  /** Ask to sign in and retry on a 401 (default true; false for the sign-in calls themselves). */
  signIn?: boolean;
}

/**
 * `fetch` for the API, with the session cookie. On a 401, asks the registered sign-in
 * handler once and retries once; rejects with `StreamError("UNAUTHORIZED")` when the person
 * does not sign in. Without a handler (or with `signIn: false`) the 401 is returned as is.
 * A request answered 401 changed nothing on the server, so sending it again never
 * duplicates anything. Network failures and aborts reject as `fetch` does.
 */
export async function apiFetch(path: string, init: RequestInit = {}, options: FetchOptions = {}): Promise<Response> {
  const url = apiUrl(path);
  const request: RequestInit = { credentials: "same-origin", ...init };
  const response = await fetch(url, request);
  const handler = signInHandler;
  if (response.status !== 401 || handler === null || options.signIn === false) return response;
  discard(response);
  if (!(await askToSignIn(handler))) {
    throw new StreamError("UNAUTHORIZED", "sign in to continue", { status: 401 });
  }
  return fetch(url, request);
}

// ---------------------------------------------------------------------------------------
// Errors

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Milliseconds from a `Retry-After` header (delta-seconds or an HTTP date), or null. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (value === null || value.trim() === "") return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** True for the HTTP statuses worth trying again: 429, 503 and every other 5xx. */
export function isRetryableStatus(status: number): boolean {
  return status === 429 || status >= 500;
}

/**
 * The `StreamError` for a non-2xx response: the code and message of its JSON error body, or
 * `HTTP_<status>`. Consumes the body.
 */
export async function errorFromResponse(response: Response): Promise<StreamError> {
  const status = response.status;
  let code = `HTTP_${status}`;
  let message = response.statusText !== "" ? response.statusText : `HTTP ${status}`;
  try {
    const body: unknown = JSON.parse(await response.text());
    if (isRecord(body) && isRecord(body.error)) {
      if (typeof body.error.code === "string" && body.error.code !== "") code = body.error.code;
      if (typeof body.error.message === "string" && body.error.message !== "") message = body.error.message;
    }
  } catch {
    // not JSON, or the body could not be read: keep HTTP_<status>
  }
  return new StreamError(code, message, {
    status,
    retryable: isRetryableStatus(status),
    retryAfterMs: parseRetryAfter(response.headers.get("Retry-After")),
  });
}

function isAbort(error: unknown): boolean {
  return error instanceof Error && error.name === "AbortError";
}

// ---------------------------------------------------------------------------------------
// JSON

/**
 * `apiFetch` + JSON. A non-2xx rejects with `StreamError(code ?? "HTTP_<status>", message,
 * {status})`; a network failure with `StreamError("NETWORK_ERROR")`; an abort rejects with
 * the AbortError itself. A 204 resolves to `undefined`.
 */
export async function apiJson<T>(path: string, init: RequestInit = {}, options: FetchOptions = {}): Promise<T> {
  const headers = new Headers(init.headers);
  if (!headers.has("Accept")) headers.set("Accept", "application/json");
  if (typeof init.body === "string" && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
  let response: Response;
  try {
    response = await apiFetch(path, { ...init, headers }, options);
  } catch (error) {
    if (error instanceof StreamError || isAbort(error)) throw error;
    throw new StreamError("NETWORK_ERROR", "the server could not be reached", { retryable: true, cause: error });
  }
  if (!response.ok) throw await errorFromResponse(response);
  if (response.status === 204 || response.status === 205) return undefined as T;
  const text = await response.text();
  if (text === "") return undefined as T;
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw new StreamError("PARSE_ERROR", "the server sent malformed JSON", { status: response.status, cause: error });
  }
}

export function jsonBody(method: string, body: unknown): RequestInit {
  return { method, body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
}

const seg = encodeURIComponent;

// ---------------------------------------------------------------------------------------
// REST helpers

/** `GET /api/v1/conversations`, newest first; pass `nextCursor` to get the next page. */
export function listConversations(cursor?: string | null, limit?: number): Promise<ConversationPage> {
  const query = new URLSearchParams();
  if (cursor != null && cursor !== "") query.set("cursor", cursor);
  if (limit !== undefined) query.set("limit", String(limit));
  const qs = query.toString();
  return apiJson<ConversationPage>(`/conversations${qs === "" ? "" : `?${qs}`}`);
}

export interface ConversationInput {
  title?: string | null;
  model?: string | null;
  systemPrompt?: string | null;
}

/** `POST /api/v1/conversations` (201): the new conversation with `messages: []`. */
export function createConversation(body: ConversationInput = {}): Promise<Conversation> {
  return apiJson<Conversation>("/conversations", jsonBody("POST", body));
}

/** `GET /api/v1/conversations/{id}`: the conversation with its messages. */
export function getConversation(id: string): Promise<Conversation> {
  return apiJson<Conversation>(`/conversations/${seg(id)}`);
}

/** `PATCH /api/v1/conversations/{id}`; fields left out are unchanged, `null` clears model/systemPrompt. */
export function updateConversation(id: string, body: ConversationInput): Promise<Conversation> {
  return apiJson<Conversation>(`/conversations/${seg(id)}`, jsonBody("PATCH", body));
}

/** `DELETE /api/v1/conversations/{id}` (204); cancels its active stream. */
export async function deleteConversation(id: string): Promise<void> {
  await apiJson<undefined>(`/conversations/${seg(id)}`, { method: "DELETE" });
}

/** `GET /api/v1/models`. */
export function listModels(): Promise<ModelList> {
  return apiJson<ModelList>("/models");
}

/**
 * `POST /api/v1/streams/{streamId}/cancel` (202). With `lastEventId`, the stored text is the
 * tokens with id ≤ lastEventId and the final `complete` carries `keptThrough`.
 */
export function cancelStream(streamId: string, lastEventId?: number | null): Promise<CancelResult> {
  const path = `/streams/${seg(streamId)}/cancel`;
  if (lastEventId == null) return apiJson<CancelResult>(path, { method: "POST" });
  const id = Math.max(0, Math.floor(lastEventId));
  return apiJson<CancelResult>(path, jsonBody("POST", { lastEventId: id }));
}
