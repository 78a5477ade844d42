// The channel that carries the live reply to the one message component that shows it.
// App.vue provides a computed LiveView; only LiveMessage.vue reads it, so a new token
// re-renders that message alone (ChatView and the other messages are not touched).

import type { InjectionKey, Ref } from "vue";
import type { MessageStatus } from "../lib/types";

export interface LiveView {
  messageId: string | null;
  text: string;                 // what to display (the paced text)
  streaming: boolean;           // show the cursor
  status: MessageStatus;        // data-status of the live message
  model: string | null;
  tokens: number;
  ttftMs: number | null;
  tokensPerSecond: number | null;
  finishReason: string | null;
  error: { code: string; message: string | null } | null;
  canRetry: boolean;
}

export const LIVE_VIEW: InjectionKey<Readonly<Ref<LiveView>>> = Symbol("runnel.liveView");

/** One entry of the chat: a stored message, the live reply, or the user's message not yet stored. */
export type ChatItem =
  | { kind: "stored"; key: string; message: import("../lib/types").Message }
  | { kind: "live"; key: string }
  | { kind: "pending-user"; key: string; content: string };

export interface ReplyStats {
  ttftMs: number | null;
  tokensPerSecond: number | null;
}

export type StatusState =
  | "ready" | "waiting" | "streaming" | "reconnecting" | "complete" | "stopped" | "error";
