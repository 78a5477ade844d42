// HTTP access to Runnel's API (docs/api.md): the bearer token, an authenticated fetch, JSON
// helpers and the REST calls the UI needs. The streaming endpoints live in sse.ts.

import {
  StreamError,
  type CancelResult,
  type Conversation,
  type ConversationPage,
  type ModelList,
} from "./types";

export const API_PREFIX = "/api/v1";
const TOKEN_KEY = "runnel.token";

// ---------------------------------------------------------------------------------------
// Token

let memoryToken: string | null = null; // used when sessionStorage is unavailable
let tokenPrompt: (() => Promise<string | null>) | null = null;
let pendingPrompt: Promise<string | null> | null = null;

function storage(): Storage | null {
  try {
    return typeof sessionStorage === "undefined" ? null : sessionStorage;
  } catch {
    return null; // e.g. storage disabled by the browser
  }
}

/** The bearer token of this browser session, or null. */
export function getToken(): string | null {
  const store = storage();
  if (store === null) return memoryToken;
  try {
    return store.getItem(TOKEN_KEY);
  } catch {
    return memoryToken;
  }
}

/** Stores (or, with null or "", forgets) the bearer token for this browser session. */
export function setToken(token: string | null): void {
  const value = token === null || token.trim() === "" ? null : token.trim();
  memoryToken = value;
  const store = storage();
  if (store === null) return;
  try {
    if (value === null) store.removeItem(TOKEN_KEY);
    else store.setItem(TOKEN_KEY, value);
  } catch {
    // quota or privacy mode: the in-memory copy is used
  }
}

/**
 * Registers the dialog that asks for a token. On a 401, `apiFetch` calls it (once, shared by
 * concurrent requests), stores the answer and retries once; `null` means give up.
 */
export function setTokenPrompt(prompt: (() => Promise<string | null>) | null): void {
  tokenPrompt = prompt;
}

function askForToken(prompt: () => Promise<string | null>): Promise<string | null> {
  if (pendingPrompt === null) {
    pendingPrompt = (async () => {
      try {
        return await prompt();
      } finally {
        pendingPrompt = null;
      }
    })();
  }
  return pendingPrompt;
}

// ---------------------------------------------------------------------------------------
// Fetch

/** "/api/v1/models" and "/models" both name `GET /api/v1/models`; absolute URLs pass through. */
export function apiUrl(path: string): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(path) || path.startsWith("/api/") || path === "/api") return path;
  return `${API_PREFIX}${path.startsWith("/") ? path : `/${path}`}`;
}

function withAuth(init: RequestInit, token: string | null): RequestInit {
  const headers = new Headers(init.headers);
  if (token !== null && token !== "") headers.set("Authorization", `Bearer ${token}`);
  return { ...init, headers };
}

function discard(response: Response): void {
  response.body?.cancel().catch(() => undefined);
}

/**
 * `fetch` with `Authorization: Bearer …` when a token is set (never in the URL). On a 401,
 * asks the registered token prompt once and retries once; rejects with
 * `StreamError("UNAUTHORIZED")` when the prompt gives up. Without a prompt the 401 response
 * is returned as is. Network failures and aborts reject as `fetch` does.
 */
export async function apiFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const url = apiUrl(path);
  const sentWith = getToken();
  const response = await fetch(url, withAuth(init, sentWith));
  const prompt = tokenPrompt;
  if (response.status !== 401 || prompt === null) return response;
  discard(response);
  let token = getToken();
  if (token === null || token === sentWith) {
    // Only ask when nobody has supplied a newer token since this request went out.
    token = await askForToken(prompt);
    if (token === null || token.trim() === "") {
      throw new StreamError("UNAUTHORIZED", "a valid API token is required", { status: 401 });
    }
    setToken(token);
    token = getToken();
  }
  return fetch(url, withAuth(init, token));
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
export async function apiJson<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  if (!headers.has("Accept")) headers.set("Accept", "application/json");
  if (typeof init.body === "string" && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
  let response: Response;
  try {
    response = await apiFetch(path, { ...init, headers });
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

function jsonBody(method: string, body: unknown): RequestInit {
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
