// Small pure formatting helpers shared by the components.

/** "time to first token 312 ms · 41.7 tokens/s" — only the parts that are known. */
export function statsTitle(ttftMs: number | null | undefined, tokensPerSecond: number | null | undefined): string {
  const parts: string[] = [];
  if (ttftMs != null && Number.isFinite(ttftMs)) parts.push(`time to first token ${Math.round(ttftMs)} ms`);
  if (tokensPerSecond != null && Number.isFinite(tokensPerSecond)) parts.push(`${formatRate(tokensPerSecond)} tokens/s`);
  return parts.join(" · ");
}

export function formatRate(value: number): string {
  return value >= 100 ? String(Math.round(value)) : value.toFixed(1);
}

export function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

export function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** A short relative time for the sidebar ("now", "5 min", "3 h", "Mon", "12 Mar"). */
export function shortTime(iso: string, now: number = Date.now()): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const diff = Math.max(0, now - t);
  const min = 60_000;
  if (diff < min) return "now";
  if (diff < 60 * min) return `${Math.floor(diff / min)} min`;
  if (diff < 24 * 60 * min) return `${Math.floor(diff / (60 * min))} h`;
  const date = new Date(t);
  if (diff < 6 * 24 * 60 * min) return date.toLocaleDateString(undefined, { weekday: "short" });
  return date.toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

/** A date and time for settings pages ("7 Dec 2026, 14:03"); "—" when unknown. */
export function formatDate(iso: string | null | undefined): string {
  if (!iso) return "—";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "—";
  return new Date(t).toLocaleString(undefined, { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit" });
}
