// The sidebar's conversation list: pages from GET /conversations, refreshed on demand.
// Refreshes are coalesced (one in flight, at most one queued) so bursts of events
// (a reply ends, a title changes) cost one request.

import { ref, shallowRef } from "vue";
import { listConversations } from "../lib/api";
import type { Conversation } from "../lib/types";

export function createConversationStore(onError: (error: unknown) => void) {
  const items = shallowRef<Conversation[]>([]);
  const nextCursor = ref<string | null>(null);
  const loaded = ref(false);
  const failed = ref(false);
  const loadingMore = ref(false);

  let pages = 1;
  let running: Promise<void> | null = null;
  let queued = false;

  async function fetchPages(count: number): Promise<{ data: Conversation[]; cursor: string | null; pages: number }> {
    const seen = new Set<string>();
    const data: Conversation[] = [];
    let cursor: string | null = null;
    let fetched = 0;
    do {
      const page = await listConversations(cursor ?? undefined);
      fetched += 1;
      for (const c of page.data) {
        if (!seen.has(c.id)) {
          seen.add(c.id);
          data.push(c);
        }
      }
      cursor = page.nextCursor ?? null;
    } while (cursor && fetched < count);
    return { data, cursor, pages: fetched };
  }

  async function runRefresh(): Promise<void> {
    try {
      const result = await fetchPages(pages);
      items.value = result.data;
      nextCursor.value = result.cursor;
      pages = Math.max(1, result.pages);
      loaded.value = true;
      failed.value = false;
    } catch (error) {
      failed.value = true;
      onError(error);
    }
  }

  /** Reload every page shown so far. Resolves when a refresh started after this call is done. */
  function refresh(): Promise<void> {
    if (running) {
      queued = true; // the loop below runs once more before `running` settles
      return running;
    }
    running = (async () => {
      do {
        queued = false;
        await runRefresh();
      } while (queued);
    })().finally(() => {
      running = null;
    });
    return running;
  }

  async function loadMore(): Promise<void> {
    if (!nextCursor.value || loadingMore.value) return;
    loadingMore.value = true;
    try {
      const page = await listConversations(nextCursor.value);
      const known = new Set(items.value.map((c) => c.id));
      items.value = [...items.value, ...page.data.filter((c) => !known.has(c.id))];
      nextCursor.value = page.nextCursor ?? null;
      pages += 1;
    } catch (error) {
      onError(error);
    } finally {
      loadingMore.value = false;
    }
  }

  /** Apply a local change at once (rename, delete), before the refresh confirms it. */
  function patch(id: string, change: Partial<Conversation> | null): void {
    items.value = change === null
      ? items.value.filter((c) => c.id !== id)
      : items.value.map((c) => (c.id === id ? { ...c, ...change } : c));
  }

  function prepend(conversation: Conversation): void {
    const { messages: _messages, ...rest } = conversation;
    items.value = [rest, ...items.value.filter((c) => c.id !== conversation.id)];
  }

  return { items, nextCursor, loaded, failed, loadingMore, refresh, loadMore, patch, prepend };
}

export type ConversationStore = ReturnType<typeof createConversationStore>;
