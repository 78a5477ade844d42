// The paced renderer: reveals received text smoothly, one animation frame at a time.
//
// - The first text is shown at once (no latency added to the first token).
// - Afterwards text is revealed at an adaptive rate: a share of the backlog per frame (so
//   the reveal speeds up when text piles up) plus a floor, and anything received more than
//   ~maxLagMs ago is shown no matter what. The display never trails by more than ~maxLagMs.
// - While the document is hidden (no animation frames) text is flushed on a timer instead.
// - Reveal points never split a surrogate pair or a grapheme cluster ("👩‍💻"); a trailing
//   cluster that may still grow (it ends in a zero-width joiner, a lone high surrogate or a
//   lone regional indicator) is held back until more text arrives or the stream finishes.

export interface PacerOptions {
  /** Called with the text to display whenever it changed (at most once per frame, plus the first text). */
  onFrame(shown: string): void;
  /** Called once after `finish()` when everything received is shown. */
  onDrained?(): void;
  /** The display never trails what was received by more than about this (default 1000). */
  maxLagMs?: number;
  /** `finish()` reveals the rest within this (default 250). */
  finishMs?: number;
  /** Slowest reveal rate while there is a backlog (default 120 chars/s). */
  minCharsPerSecond?: number;
  /** While hidden, received text is shown after at most this (default 100). */
  hiddenFlushMs?: number;
  now?: () => number;
  requestFrame?: (callback: () => void) => number;
  cancelFrame?: (handle: number) => void;
  isHidden?: () => boolean;
}

export interface Pacer {
  /** Appends received text. */
  push(text: string): void;
  /** No more text is coming: reveal the rest promptly (within `finishMs`), then `onDrained`. */
  finish(): void;
  /** Show everything received now. */
  flush(): void;
  /** Forget received text past `length` (e.g. after a cancel with `keptThrough`). */
  truncate(length: number): void;
  /** Stop: no timer or frame stays scheduled, `onFrame` is not called again. */
  dispose(): void;
  /** The text displayed now (a prefix of `received`). */
  readonly shown: string;
  readonly received: string;
  readonly finished: boolean;
}

// ---------------------------------------------------------------------------------------
// Graphemes

let segmenter: Intl.Segmenter | null | undefined;

function getSegmenter(): Intl.Segmenter | null {
  if (segmenter === undefined) {
    segmenter = typeof Intl !== "undefined" && typeof Intl.Segmenter === "function"
      ? new Intl.Segmenter(undefined, { granularity: "grapheme" })
      : null;
  }
  return segmenter;
}

/** Tests only: pretend Intl.Segmenter is (un)available. */
export function setSegmenterForTesting(value: Intl.Segmenter | null | undefined): void {
  segmenter = value;
}

const isHigh = (c: number): boolean => c >= 0xd800 && c <= 0xdbff;
const isLow = (c: number): boolean => c >= 0xdc00 && c <= 0xdfff;
const ZWJ = 0x200d;

function isExtender(c: number): boolean {
  return (
    (c >= 0x0300 && c <= 0x036f) || // combining diacritics
    (c >= 0x1ab0 && c <= 0x1aff) ||
    (c >= 0x1dc0 && c <= 0x1dff) ||
    (c >= 0x20d0 && c <= 0x20ff) ||
    (c >= 0xfe00 && c <= 0xfe0f) || // variation selectors
    (c >= 0xfe20 && c <= 0xfe2f)
  );
}

/** Regional indicator symbols (flags are pairs of them): U+1F1E6..U+1F1FF. */
function isRegionalIndicatorAt(text: string, i: number): boolean {
  return text.charCodeAt(i) === 0xd83c && text.charCodeAt(i + 1) >= 0xdde6 && text.charCodeAt(i + 1) <= 0xddff;
}

const isSkinTone = (text: string, i: number): boolean =>
  text.charCodeAt(i) === 0xd83c && text.charCodeAt(i + 1) >= 0xdffb && text.charCodeAt(i + 1) <= 0xdfff;

/** Without Intl.Segmenter: at least keep surrogate pairs, combining marks, ZWJ sequences, skin tones and flags whole. */
function snapFallback(text: string, index: number): number {
  let end = index;
  if (end > 0 && end < text.length && isHigh(text.charCodeAt(end - 1)) && isLow(text.charCodeAt(end))) end += 1;
  while (end < text.length) {
    const c = text.charCodeAt(end);
    if (end > 0 && text.charCodeAt(end - 1) === ZWJ) {
      end += isHigh(c) && isLow(text.charCodeAt(end + 1)) ? 2 : 1; // what the joiner joins
    } else if (c === ZWJ || isExtender(c)) {
      end += 1;
    } else if (isSkinTone(text, end)) {
      end += 2;
    } else if (isRegionalIndicatorAt(text, end) && end >= 2 && isRegionalIndicatorAt(text, end - 2)) {
      // the second half of a flag, unless the one before already completed a pair
      let count = 0;
      for (let i = end - 2; i >= 0 && isRegionalIndicatorAt(text, i); i -= 2) count += 1;
      if (count % 2 === 0) break;
      end += 2;
    } else {
      break;
    }
  }
  return end;
}

/** Without Intl.Segmenter: the start of the cluster that ends at `end`. */
function clusterStartFallback(text: string, end: number): number {
  let j = end;
  for (;;) {
    while (j > 0) {
      const c = text.charCodeAt(j - 1);
      if (c === ZWJ || isExtender(c)) j -= 1;
      else if (j >= 2 && isSkinTone(text, j - 2)) j -= 2;
      else break;
    }
    if (j >= 2 && isLow(text.charCodeAt(j - 1)) && isHigh(text.charCodeAt(j - 2))) j -= 2;
    else if (j >= 1) j -= 1;
    if (j > 0 && text.charCodeAt(j - 1) === ZWJ) {
      j -= 1;
      continue;
    }
    return j;
  }
}

/** The smallest grapheme boundary ≥ `index`, searching from `from` (itself a boundary). */
export function snapToGrapheme(text: string, from: number, index: number): number {
  if (index <= from) return from;
  if (index >= text.length) return text.length;
  const seg = getSegmenter();
  if (seg === null) return snapFallback(text, index);
  const windowEnd = Math.min(text.length, index + 64);
  const hit = seg.segment(text.slice(from, windowEnd)).containing(index - from);
  if (hit === undefined || hit.index === index - from) return index;
  return from + hit.index + hit.segment.length;
}

/** Code points after which a cluster may still grow: emoji (a ZWJ, a skin tone or VS16 may follow), joiners. */
const MAY_GROW = /(?:\p{Extended_Pictographic}|\u200d|\ufe0f|[\u{1F3FB}-\u{1F3FF}])$/u;

/**
 * Where the received text can safely end for now: before a trailing cluster that may still
 * grow when more text arrives (an emoji or ZWJ sequence, a lone regional indicator, a lone
 * high surrogate). Everything is shown once the stream finishes.
 */
export function stableEnd(text: string): number {
  const end = text.length;
  if (end === 0) return 0;
  if (isHigh(text.charCodeAt(end - 1))) return end - 1;
  if (isRegionalIndicatorAt(text, end - 2)) {
    let count = 0;
    for (let i = end - 2; i >= 0 && isRegionalIndicatorAt(text, i); i -= 2) count += 1;
    return count % 2 === 0 ? end : end - 2; // a lone one waits for its partner
  }
  if (!MAY_GROW.test(text.slice(-4))) return end;
  const seg = getSegmenter();
  if (seg === null) return clusterStartFallback(text, end);
  const start = Math.max(0, end - 64);
  let clusterStart = start;
  for (const part of seg.segment(text.slice(start, end))) clusterStart = start + part.index;
  return clusterStart;
}

// ---------------------------------------------------------------------------------------
// Pacer

interface Arrival {
  at: number;
  end: number;
}

function defaultNow(): number {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}

function defaultIsHidden(): boolean {
  return typeof document !== "undefined" && document.visibilityState === "hidden";
}

export function createPacer(options: PacerOptions): Pacer {
  const maxLagMs = Math.max(1, options.maxLagMs ?? 1000);
  const finishMs = Math.max(0, options.finishMs ?? 250);
  const minCps = Math.max(1, options.minCharsPerSecond ?? 120);
  const hiddenFlushMs = Math.max(0, options.hiddenFlushMs ?? 100);
  const now = options.now ?? defaultNow;
  const isHidden = options.isHidden ?? defaultIsHidden;
  const raf = typeof globalThis.requestAnimationFrame === "function" ? globalThis.requestAnimationFrame.bind(globalThis) : null;
  const caf = typeof globalThis.cancelAnimationFrame === "function" ? globalThis.cancelAnimationFrame.bind(globalThis) : null;
  const requestFrame = options.requestFrame ?? raf ?? ((cb: () => void) => setTimeout(cb, 16) as unknown as number);
  const cancelFrame =
    options.cancelFrame ?? (options.requestFrame ? () => undefined : caf ?? ((h: number) => clearTimeout(h)));

  /** Time constant of the smooth reveal: the backlog shrinks by dt/tau per frame. */
  const tau = maxLagMs / 4;
  /** Text older than this is revealed regardless of the smooth rate (a frame of slack). */
  const forcedLag = Math.max(0, maxLagMs - 50);

  let received = "";
  let shownLen = 0;
  let shownText = "";
  let arrivals: Arrival[] = [];
  let carry = 0;
  let lastTick = 0;
  let frame: number | null = null;
  let hiddenTimer: ReturnType<typeof setTimeout> | null = null;
  let finishTimer: ReturnType<typeof setTimeout> | null = null;
  let finishing = false;
  let finishStart = 0;
  let finishFrom = 0;
  let drainedCalled = false;
  let disposed = false;

  const emit = (): void => {
    const text = received.slice(0, shownLen);
    if (text === shownText) return;
    shownText = text;
    options.onFrame(text);
  };

  const limit = (): number => (finishing ? received.length : stableEnd(received));

  const cancelScheduled = (): void => {
    if (frame !== null) cancelFrame(frame);
    frame = null;
    if (hiddenTimer !== null) clearTimeout(hiddenTimer);
    hiddenTimer = null;
  };

  const checkDrained = (): void => {
    if (!finishing || drainedCalled || disposed || shownLen < received.length) return;
    drainedCalled = true;
    if (finishTimer !== null) clearTimeout(finishTimer);
    finishTimer = null;
    cancelScheduled();
    options.onDrained?.();
  };

  const showAll = (): void => {
    cancelScheduled();
    shownLen = received.length;
    arrivals = [];
    carry = 0;
    emit();
    checkDrained();
  };

  const advance = (t: number, dt: number): void => {
    const end = limit();
    if (shownLen >= end) return;
    carry += ((end - shownLen) * dt) / tau + (minCps * dt) / 1000;
    let desired = shownLen + Math.floor(carry);
    let drop = 0;
    for (const arrival of arrivals) {
      if (arrival.end <= shownLen) {
        drop += 1;
        continue;
      }
      if (arrival.at + forcedLag > t) break;
      desired = Math.max(desired, arrival.end);
    }
    if (drop > 0) arrivals = arrivals.slice(drop);
    if (finishing) {
      const progress = finishMs === 0 ? 1 : Math.min(1, (t - finishStart) / finishMs);
      desired = Math.max(desired, finishFrom + Math.ceil((received.length - finishFrom) * progress));
    }
    const next = Math.min(end, snapToGrapheme(received, shownLen, Math.min(desired, end)));
    if (next > shownLen) {
      carry = Math.max(0, carry - (next - shownLen));
      shownLen = next;
      emit();
    }
  };

  const tick = (): void => {
    frame = null;
    if (disposed) return;
    if (isHidden()) {
      showAll();
      return;
    }
    const t = now();
    const dt = Math.max(0, t - lastTick);
    lastTick = t;
    advance(t, dt);
    if (shownLen < limit()) schedule();
    else checkDrained();
  };

  function schedule(): void {
    if (disposed) return;
    if (isHidden()) {
      // No animation frames in a hidden tab: catch up on a timer so nothing piles up.
      if (frame !== null) cancelFrame(frame);
      frame = null;
      if (hiddenTimer === null) {
        hiddenTimer = setTimeout(() => {
          hiddenTimer = null;
          if (!disposed) showAll();
        }, hiddenFlushMs);
      }
      return;
    }
    if (frame !== null || hiddenTimer !== null) return;
    frame = requestFrame(tick);
  }

  return {
    push(text: string): void {
      if (disposed || text === "") return;
      const t = now();
      const first = received === "";
      received += text;
      if (first) {
        // The first text is shown at once.
        shownLen = snapToGrapheme(received, 0, stableEnd(received));
        lastTick = t;
        emit();
        if (shownLen >= limit()) return;
      }
      if (frame === null && hiddenTimer === null) lastTick = t;
      arrivals.push({ at: t, end: received.length });
      schedule();
    },

    finish(): void {
      if (disposed || finishing) return;
      finishing = true;
      finishStart = now();
      finishFrom = shownLen;
      if (shownLen >= received.length) {
        checkDrained();
        return;
      }
      if (finishMs === 0 || isHidden()) {
        showAll();
        return;
      }
      // Animation frames may never come (the tab was just hidden): a timer backs them up.
      finishTimer = setTimeout(() => {
        finishTimer = null;
        if (!disposed) showAll();
      }, finishMs + 50);
      schedule();
    },

    flush(): void {
      if (disposed) return;
      showAll();
    },

    truncate(length: number): void {
      if (disposed) return;
      const n = Math.max(0, Math.min(received.length, Math.floor(length)));
      if (n === received.length) return;
      received = received.slice(0, n);
      shownLen = Math.min(shownLen, n);
      arrivals = arrivals.filter((a) => a.end <= n);
      emit();
      checkDrained();
    },

    dispose(): void {
      if (disposed) return;
      disposed = true;
      cancelScheduled();
      if (finishTimer !== null) clearTimeout(finishTimer);
      finishTimer = null;
    },

    get shown(): string {
      return shownText;
    },
    get received(): string {
      return received;
    },
    get finished(): boolean {
      return finishing;
    },
  };
}
