// Stateless chat: `POST /api/v1/messages`, streamed (or answered in JSON), resumed across
// dropped connections, cancellable.

import { API_PREFIX, cancelStream } from "./api";
import { followStream, type FollowOutcome } from "./resume";
import { StreamError, type CompleteEvent, type HistoryMessage, type JsonReply } from "./types";

export type TokenCallback = (token: string) => void;
export type CompleteCallback = (event: CompleteEvent) => void;
export type ErrorCallback = (error: StreamError) => void;

/** A JSON reply as the `complete` event it stands for. */
export function completeFromJson(reply: JsonReply): CompleteEvent {
  const event: CompleteEvent = {
    type: "complete",
    model: reply.model,
    finishReason: reply.finishReason,
    totalTokens: reply.totalTokens,
    usage: reply.usage,
    messageId: reply.messageId,
  };
  if (reply.keptThrough !== undefined) event.keptThrough = reply.keptThrough;
  return event;
}

/** The `StreamError` for a terminal `error` event. */
export function errorFromEvent(event: { code: string; error: string; retryable: boolean }): StreamError {
  return new StreamError(event.code, event.error, { retryable: event.retryable });
}

function assertCallback(value: unknown, name: string): void {
  if (typeof value !== "function") {
    throw new StreamError("INVALID_CALLBACK", `${name} must be a function`);
  }
}

/**
 * Streams a reply to `text`. `onToken` gets each piece of text (once, in order; a JSON
 * answer calls it once with the whole content), then exactly one of `onComplete` (the
 * `complete` event, or the JSON reply mapped to it) or `onError`. Returns `cancel()`, which
 * aborts the request, asks the server to stop generating, and is idempotent; no callback
 * runs after it. Throws `StreamError("INVALID_CALLBACK")` synchronously when a callback is
 * not a function.
 */
export function streamMessage(
  text: string,
  onToken: TokenCallback,
  onComplete: CompleteCallback,
  onError: ErrorCallback,
  history?: HistoryMessage[],
  model?: string | null,
): () => void {
  assertCallback(onToken, "onToken");
  assertCallback(onComplete, "onComplete");
  assertCallback(onError, "onError");

  const controller = new AbortController();
  let streamId: string | null = null;
  let ended = false; // a final callback ran, or cancel() was called

  const body: { message: string; history: HistoryMessage[]; model?: string } = { message: text, history: history ?? [] };
  if (typeof model === "string" && model !== "") body.model = model;

  const report = (error: StreamError): void => {
    if (ended) return;
    ended = true;
    try {
      onError(error);
    } catch (callbackError) {
      console.error("streamMessage: onError threw", callbackError);
    }
  };

  const settle = (outcome: FollowOutcome): void => {
    switch (outcome.type) {
      case "terminal":
      case "json":
      case "aborted":
        return; // reported from the handlers below (or nothing to report)
      case "failed":
        report(outcome.error);
        return;
      case "expired":
        report(new StreamError("STREAM_EXPIRED", "the reply can no longer be resumed", { cause: outcome.error ?? undefined }));
        return;
      case "no-content":
        report(new StreamError("PARSE_ERROR", "the server sent no reply"));
        return;
    }
  };

  void followStream(
    {
      onEvent(_id, event) {
        if (ended) return;
        switch (event.type) {
          case "status":
            streamId = event.streamId;
            return;
          case "token":
            if (event.content !== "") onToken(event.content);
            return;
          case "complete":
            ended = true;
            onComplete(event);
            return;
          case "error":
            report(errorFromEvent(event));
            return;
        }
      },
      onJson(reply) {
        if (ended) return;
        streamId = reply.streamId;
        if (reply.content !== "") onToken(reply.content);
        ended = true;
        onComplete(completeFromJson(reply));
      },
    },
    { request: { path: `${API_PREFIX}/messages`, method: "POST", body }, signal: controller.signal },
  ).then(
    (outcome) => {
      // A callback that threw after `ended` was set still deserves its CALLBACK_ERROR.
      if (outcome.type === "failed" && outcome.error.code === "CALLBACK_ERROR" && !controller.signal.aborted) {
        ended = false;
      }
      settle(outcome);
    },
    (error: unknown) => report(new StreamError("NETWORK_ERROR", "the stream failed", { retryable: true, cause: error })),
  );

  return function cancel(): void {
    if (controller.signal.aborted) return;
    const wasRunning = !ended;
    ended = true;
    controller.abort();
    if (wasRunning && streamId !== null) {
      // Closing the connection only ends this reader; the generation would go on.
      cancelStream(streamId).catch(() => undefined);
    }
  };
}
