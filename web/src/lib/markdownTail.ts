// String-level helpers for rendering markdown while it streams: fence tracking, splitting
// into top-level blocks, and "tail repair" of half-typed syntax at the end of the text.

export interface Fence {
  marker: "`" | "~";
  length: number;
}

// A fence may sit inside a blockquote or right after a list marker.
const OPEN_FENCE = /^((?:[ \t]*>)*[ \t]*(?:(?:[-+*]|\d{1,9}[.)])[ \t]+)?)(`{3,}|~{3,})(.*)$/;
const CLOSE_FENCE = /^(?:[ \t]*>)*[ \t]*(`{3,}|~{3,})[ \t]*$/;

/** The fence a line opens, or null. */
export function openingFence(line: string): Fence | null {
  const m = OPEN_FENCE.exec(line);
  if (m === null) return null;
  const run = m[2] ?? "";
  const marker = run[0] === "~" ? "~" : "`";
  if (marker === "`" && (m[3] ?? "").includes("`")) return null; // "```a`b" is inline code
  return { marker, length: run.length };
}

/** True when `line` closes `fence`. */
export function closesFence(line: string, fence: Fence): boolean {
  const m = CLOSE_FENCE.exec(line);
  if (m === null) return false;
  const run = m[1] ?? "";
  return run[0] === fence.marker && run.length >= fence.length;
}

export function normalizeNewlines(text: string): string {
  return text.includes("\r") ? text.replace(/\r\n?/g, "\n") : text;
}

/**
 * Splits markdown into top-level blocks at blank lines — never inside a fenced code block,
 * and not where the next line is indented (an indented code block or a list item's
 * continuation belongs to the block before). Joining the blocks with "\n\n" gives back text
 * that renders the same.
 */
export function splitBlocks(input: string): string[] {
  const lines = normalizeNewlines(input).split("\n");
  const blocks: string[] = [];
  let current: string[] = [];
  let fence: Fence | null = null;
  let pendingBlank = false; // blank lines seen after `current`, outside a fence

  for (const line of lines) {
    if (fence !== null) {
      current.push(line);
      if (closesFence(line, fence)) fence = null;
      continue;
    }
    if (line.trim() === "") {
      if (current.length > 0) pendingBlank = true;
      continue;
    }
    if (pendingBlank) {
      if (/^[ \t]/.test(line)) {
        current.push(""); // keep it in the block before, with its blank line
      } else {
        blocks.push(current.join("\n"));
        current = [];
      }
      pendingBlank = false;
    }
    current.push(line);
    fence = openingFence(line);
  }
  if (current.length > 0) {
    // keep a trailing newline visible to tail repair (a finished line is final)
    blocks.push(current.join("\n") + (pendingBlank || input.endsWith("\n") ? "\n" : ""));
  }
  return blocks;
}

/** The fence still open at the end of `text` (with the line it starts on), or null. */
export function openFenceAtEnd(text: string): { fence: Fence; line: number } | null {
  const lines = normalizeNewlines(text).split("\n");
  let open: { fence: Fence; line: number } | null = null;
  lines.forEach((line, index) => {
    if (open !== null) {
      if (closesFence(line, open.fence)) open = null;
    } else {
      const fence = openingFence(line);
      if (fence !== null) open = { fence, line: index };
    }
  });
  return open;
}

// ---------------------------------------------------------------------------------------
// Tail repair

const BLOCK_START = /^(?:[ \t]{0,3}(?:#{1,6}(?:[ \t]|$)|>|[-+*][ \t]|\d{1,9}[.)][ \t]|\|))/;

function isSpace(ch: string | undefined): boolean {
  return ch === undefined || /\s/.test(ch);
}

function isPunct(ch: string | undefined): boolean {
  return ch !== undefined && /[\p{P}\p{S}]/u.test(ch);
}

function runLength(s: string, at: number, ch: string): number {
  let n = 0;
  while (s[at + n] === ch) n += 1;
  return n;
}

/** Index of the next run of exactly `n` backticks at or after `from`, or -1. */
function findBacktickRun(s: string, from: number, n: number): number {
  let i = s.indexOf("`", from);
  while (i >= 0) {
    const len = runLength(s, i, "`");
    if (len === n) return i;
    i = s.indexOf("`", i + len);
  }
  return -1;
}

/** Index of the ")" closing a link destination that starts at `from`, or -1. */
function findParenClose(s: string, from: number): number {
  let depth = 0;
  for (let i = from; i < s.length; i += 1) {
    const ch = s[i];
    if (ch === "\\") i += 1;
    else if (ch === "\n" && s[i + 1] === "\n") return -1;
    else if (ch === "(") depth += 1;
    else if (ch === ")") {
      if (depth === 0) return i;
      depth -= 1;
    }
  }
  return -1;
}

interface Edit {
  from: number;
  to: number;
  insert: string;
}

function applyEdits(s: string, edits: Edit[]): string {
  let out = s;
  for (const edit of [...edits].sort((a, b) => b.from - a.from)) {
    out = out.slice(0, edit.from) + edit.insert + out.slice(edit.to);
  }
  return out;
}

/** Pass 1: unclosed code spans and half-typed links/images. */
function repairCodeAndLinks(s: string): string {
  const brackets: Array<{ pos: number; image: boolean }> = [];
  const edits: Edit[] = [];
  let append = "";
  let i = 0;
  while (i < s.length) {
    const ch = s[i];
    if (ch === "\\") {
      i += 2;
      continue;
    }
    if (ch === "`") {
      const n = runLength(s, i, "`");
      const close = findBacktickRun(s, i + n, n);
      if (close >= 0) {
        i = close + n;
        continue;
      }
      // an unclosed code span: the rest is code
      if (s.slice(i + n).trim() === "") edits.push({ from: i, to: s.length, insert: "" });
      else append = "`".repeat(n);
      break;
    }
    if (ch === "[") {
      brackets.push({ pos: i, image: i > 0 && s[i - 1] === "!" && s[i - 2] !== "\\" });
    } else if (ch === "]") {
      const open = brackets.pop();
      if (open !== undefined) {
        const cutFrom = open.image ? open.pos - 1 : open.pos;
        if (i + 1 >= s.length) {
          // "[text]" at the very end may still become a link: show the text
          if (open.image) edits.push({ from: cutFrom, to: s.length, insert: "" });
          else edits.push({ from: i, to: i + 1, insert: "" }, { from: open.pos, to: open.pos + 1, insert: "" });
          break;
        }
        if (s[i + 1] === "(") {
          const close = findParenClose(s, i + 2);
          if (close < 0) {
            // "[text](htt": the text only; a half-typed image is not shown
            edits.push({ from: cutFrom, to: s.length, insert: open.image ? "" : s.slice(open.pos + 1, i) });
            break;
          }
          i = close + 1;
          continue;
        }
      }
    }
    i += 1;
  }
  for (const open of brackets) {
    if (open.image) edits.push({ from: open.pos - 1, to: s.length, insert: "" });
    else edits.push({ from: open.pos, to: open.pos + 1, insert: "" });
  }
  // The earliest edit that runs to the end wins; edits after its start are swallowed.
  const toEnd = edits.filter((e) => e.to === s.length).sort((a, b) => a.from - b.from)[0];
  const kept = edits.filter((e) => e.to !== s.length && (toEnd === undefined || e.to <= toEnd.from));
  if (toEnd !== undefined) kept.push(toEnd);
  return applyEdits(s, kept) + (toEnd === undefined ? append : "");
}

interface Delim {
  ch: string;
  pos: number;
  count: number;
}

/** Pass 2: emphasis and strikethrough left open at the end. */
function repairEmphasis(s: string): string {
  const stack: Delim[] = [];
  let trailing: Delim | null = null; // a run at the very end that closed nothing
  let i = 0;
  while (i < s.length) {
    const ch = s[i] ?? "";
    if (ch === "\\") {
      i += 2;
      continue;
    }
    if (ch === "`") {
      const n = runLength(s, i, "`");
      const close = findBacktickRun(s, i + n, n);
      if (close < 0) break;
      i = close + n;
      continue;
    }
    if (ch === "]" && s[i + 1] === "(") {
      const close = findParenClose(s, i + 2);
      if (close < 0) break;
      i = close + 1;
      continue;
    }
    if (ch !== "*" && ch !== "_" && ch !== "~") {
      i += 1;
      continue;
    }
    const n = runLength(s, i, ch);
    const prev = s[i - 1];
    const next = s[i + n];
    i += n;
    if (ch === "~" && n !== 2) {
      if (next === undefined) trailing = { ch, pos: i - n, count: n }; // maybe half of "~~"
      continue;
    }
    const left = !isSpace(next) && (!isPunct(next) || isSpace(prev) || isPunct(prev));
    const right = prev !== undefined && !isSpace(prev) && (!isPunct(prev) || isSpace(next) || isPunct(next));
    const canOpen = ch === "_" ? left && (!right || isPunct(prev)) : left;
    const canClose = ch === "_" ? right && (!left || isPunct(next)) : right;
    let remaining = n;
    if (canClose) {
      for (let k = stack.length - 1; k >= 0 && remaining > 0; k -= 1) {
        const opener = stack[k];
        if (opener === undefined || opener.ch !== ch) continue;
        const used = Math.min(opener.count, remaining);
        opener.count -= used;
        remaining -= used;
        stack.length = opener.count > 0 ? k + 1 : k; // openers inside it stay literal
      }
    }
    if (remaining > 0) {
      if (canOpen) stack.push({ ch, pos: i - remaining, count: remaining });
      else if (next === undefined) trailing = { ch, pos: i - remaining, count: remaining };
    }
  }
  const edits: Edit[] = [];
  if (trailing !== null) edits.push({ from: trailing.pos, to: trailing.pos + trailing.count, insert: "" });
  let end = trailing?.pos ?? s.length;
  let closers = "";
  for (let k = stack.length - 1; k >= 0; k -= 1) {
    const opener = stack[k];
    if (opener === undefined) continue;
    const start = opener.pos + opener.count;
    if (closers === "" && s.slice(start, end).trim() === "") {
      edits.push({ from: opener.pos, to: start, insert: "" }); // nothing after it yet: hide it
      end = opener.pos;
    } else {
      closers += opener.ch.repeat(opener.count);
    }
  }
  const out = applyEdits(s, edits);
  return closers === "" ? out : out.trimEnd() + closers;
}

/**
 * Makes the end of a streaming text render as it will once finished, without flicker:
 * a half-typed closing fence is dropped (markdown-it closes an open fence by itself),
 * unclosed `` ` ``, `**`, `*`, `_`, `~~` are closed (or hidden when nothing follows them),
 * a half-typed `[text](htt` shows as its text, a lone trailing setext underline or
 * backslash is hidden. Only the last paragraph is touched.
 */
export function repairTail(input: string): string {
  let text = normalizeNewlines(input);
  const open = openFenceAtEnd(text);
  const lastNewline = text.lastIndexOf("\n");
  const lastLine = text.slice(lastNewline + 1);
  if (open !== null) {
    // inside a code block: only a half-typed closing fence needs hiding
    const m = /^(?:[ \t]*>)*[ \t]*(`+|~+)[ \t]*$/.exec(lastLine);
    const run = m?.[1];
    if (run !== undefined && run[0] === open.fence.marker && lastNewline >= 0 && text.split("\n").length - 1 > open.line) {
      text = text.slice(0, lastNewline);
    }
    return text;
  }

  // A "-" or "=" line still being typed under a paragraph would make it a heading.
  if (lastNewline >= 0 && /^ {0,3}(?:-+|=+)[ \t]*$/.test(lastLine)) {
    const before = text.slice(0, lastNewline);
    const prevLine = before.slice(before.lastIndexOf("\n") + 1);
    if (prevLine.trim() !== "" && !BLOCK_START.test(prevLine)) text = before;
  }

  // The last paragraph: after the last blank line / closed fence, or from the last block start.
  const lines = text.split("\n");
  let start = 0;
  let offset = 0;
  let fence: Fence | null = null;
  for (const line of lines) {
    const lineEnd = offset + line.length + 1;
    if (fence !== null) {
      if (closesFence(line, fence)) {
        fence = null;
        start = lineEnd;
      }
    } else if (line.trim() === "") {
      start = lineEnd;
    } else {
      const opened = openingFence(line);
      if (opened !== null) fence = opened;
      else if (BLOCK_START.test(line)) start = offset;
    }
    offset = lineEnd;
  }
  if (start >= text.length) return text;
  const head = text.slice(0, start);
  let tail = text.slice(start);
  if (/^(?: {4}|\t)/.test(tail)) return text; // an indented code block: leave it alone

  const trailingBackslashes = /\\+$/.exec(tail)?.[0].length ?? 0;
  if (trailingBackslashes % 2 === 1) tail = tail.slice(0, -1);
  tail = tail.replace(/<[a-z][a-z0-9+.-]*:[^\s<>]*$/i, (m) => m.slice(1)); // "<https://exa"
  tail = repairEmphasis(repairCodeAndLinks(tail));
  return head + tail;
}
