// The wire types of Runnel's HTTP API and SSE protocol (docs/api.md), mirrored from the
// server's event vocabulary (src/runnel/events.py). Shared by every module of the app.

export interface Usage {
  promptTokens: number | null;
  completionTokens: number | null;
}

export interface StatusEvent {
  type: "status";
  status: "started";
  streamId: string;
  conversationId: string | null;
  messageId: string;
  model: string;
}

export interface TokenEvent {
  type: "token";
  content: string;
}

export type FinishReason = "stop" | "length" | "content_filter" | "cancelled";

export interface CompleteEvent {
  type: "complete";
  model: string;
  finishReason: FinishReason;
  totalTokens: number;
  usage: Usage | null;
  messageId: string;
  keptThrough?: number;
}

export interface ErrorEvent {
  type: "error";
  code: string;
  error: string;
  retryable: boolean;
  partial: boolean;
  messageId: string | null;
}

export type StreamEvent = StatusEvent | TokenEvent | CompleteEvent | ErrorEvent;

export type MessageStatus = "streaming" | "complete" | "cancelled" | "error" | "interrupted";

export interface Message {
  id: string;
  role: "system" | "user" | "assistant";
  content: string;
  status: MessageStatus;
  model: string | null;
  streamId: string | null;
  finishReason: string | null;
  usage: Usage | null;
  error: { code: string; message: string | null } | null;
  createdAt: string;
  updatedAt: string;
}

export interface Conversation {
  id: string;
  title: string;
  model: string | null;
  systemPrompt: string | null;
  activeStreamId: string | null;
  createdAt: string;
  updatedAt: string;
  messages?: Message[];
}

export interface ModelInfo {
  id: string;
  provider: string;
  default: boolean;
}

/** The JSON body of a finished reply (no `Accept: text/event-stream`, or streaming off). */
export interface JsonReply {
  model: string;
  finishReason: FinishReason;
  totalTokens: number;
  usage: Usage | null;
  messageId: string;
  content: string;
  streamId: string;
  conversationId: string | null;
  keptThrough?: number;
}

/** Client-side error codes, plus every server code of docs/api.md (e.g. "RATE_LIMIT"). */
export type ClientErrorCode =
  | "INVALID_CALLBACK"
  | "STREAM_TIMEOUT"
  | "PARSE_ERROR"
  | "NETWORK_ERROR"
  | "CALLBACK_ERROR"
  | `HTTP_${number}`;

export class StreamError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  readonly status: number | null;
  /** From a `Retry-After` header (429), in milliseconds; otherwise null. */
  readonly retryAfterMs: number | null;

  constructor(
    code: string,
    message: string,
    options: { retryable?: boolean; status?: number | null; cause?: unknown; retryAfterMs?: number | null } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "StreamError";
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.status = options.status ?? null;
    this.retryAfterMs = options.retryAfterMs ?? null;
  }
}

/** The JSON error body of docs/api.md ("Errors"). */
export interface ErrorBody {
  error: { code: string; message: string };
}

/** A history item of `POST /api/v1/messages`. */
export interface HistoryMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** `GET /api/v1/conversations`. */
export interface ConversationPage {
  data: Conversation[];
  nextCursor: string | null;
}

/** `GET /api/v1/models`. */
export interface ModelList {
  data: ModelInfo[];
  default: string;
}

/** `POST /api/v1/streams/{streamId}/cancel` (202). */
export interface CancelResult {
  streamId: string;
  status: "cancelling" | "finished";
}

// ---- accounts (docs/api.md#accounts) ------------------------------------------------

export type Role = "admin" | "user";
export type Via = "session" | "key" | "token" | "local";
export type SignupMode = "closed" | "open" | "approval";

export interface User {
  id: string;
  username: string;
  role: Role;
  disabled: boolean;
  pending: boolean;
  createdAt: string | null;
  lastSeenAt: string | null;
}

/** Per-user limits: null = the server's default, 0 = no limit. */
export interface UserLimits {
  maxStreams: number | null;
  messagesPerMinute: number | null;
  outputTokensPerDay: number | null;
}

export interface AdminUser extends User {
  limits: UserLimits;
}

export interface Me {
  user: User;
  via: Via;
}

export interface AuthState {
  accounts: boolean;
  signup: SignupMode;
  canSignUp: boolean;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
}

/** The answer of `POST /auth/keys`: the only time `key` is shown. */
export interface NewApiKey extends ApiKey {
  key: string;
}

export interface UserChanges {
  disabled?: boolean;
  role?: Role;
  password?: string;
  limits?: Partial<UserLimits>;
}
