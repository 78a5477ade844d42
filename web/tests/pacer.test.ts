import { afterEach, describe, expect, it, vi } from "vitest";
import { createPacer, setSegmenterForTesting, snapToGrapheme, stableEnd, type PacerOptions } from "../src/lib/pacer";

const FRAME = 16;

/** A manual clock and frame loop: `step(ms)` advances time, running due frames. */
function harness(extra: Partial<PacerOptions> = {}) {
  let time = 0;
  let nextHandle = 1;
  let hidden = false;
  const frames = new Map<number, () => void>();
  const shownLog: string[] = [];
  const requestFrame = vi.fn((cb: () => void) => {
    const handle = nextHandle++;
    frames.set(handle, cb);
    return handle;
  });
  const pacer = createPacer({
    onFrame: (shown) => shownLog.push(shown),
    now: () => time,
    requestFrame,
    cancelFrame: (handle) => frames.delete(handle),
    isHidden: () => hidden,
    ...extra,
  });
  const frame = (): void => {
    time += FRAME;
    const due = [...frames.values()];
    frames.clear();
    for (const cb of due) cb();
  };
  return {
    pacer,
    shownLog,
    requestFrame,
    frame,
    get time() {
      return time;
    },
    set time(t: number) {
      time = t;
    },
    pendingFrames: () => frames.size,
    setHidden(value: boolean) {
      hidden = value;
    },
    /** Runs frames until `ms` have passed. */
    run(ms: number, each?: () => void) {
      const end = time + ms;
      while (time < end) {
        frame();
        each?.();
      }
    },
  };
}

afterEach(() => {
  setSegmenterForTesting(undefined);
  vi.useRealTimers();
});

describe("createPacer", () => {
  it("shows the first text immediately", () => {
    const h = harness();
    h.pacer.push("Hello");
    expect(h.pacer.shown).toBe("Hello");
    expect(h.shownLog).toEqual(["Hello"]);
    expect(h.requestFrame).not.toHaveBeenCalled();
  });

  it("reveals later text smoothly over several frames", () => {
    const h = harness();
    h.pacer.push("a");
    h.pacer.push("x".repeat(400));
    h.frame();
    const afterOne = h.pacer.shown.length;
    expect(afterOne).toBeGreaterThan(1);
    expect(afterOne).toBeLessThan(401);
    h.frame();
    expect(h.pacer.shown.length).toBeGreaterThan(afterOne);
    h.run(1200);
    expect(h.pacer.shown.length).toBe(401);
    expect(h.pendingFrames()).toBe(0); // stops asking for frames when caught up
  });

  it("never trails what was received by more than maxLagMs, under a burst", () => {
    const maxLagMs = 1000;
    const h = harness({ maxLagMs });
    const arrivals: Array<{ at: number; end: number }> = [];
    let received = 0;
    h.pacer.push("start ");
    received = 6;
    // 3 s of a fast producer (≈ 8 000 chars/s in bursts), then a huge burst.
    for (let t = 0; t < 3000; t += FRAME) {
      if (t % 48 === 0) {
        const chunk = "lorem ipsum ".repeat(30);
        h.pacer.push(chunk);
        received += chunk.length;
        arrivals.push({ at: h.time, end: received });
      }
      h.frame();
      for (const a of arrivals) {
        if (h.time - a.at > maxLagMs + FRAME) expect(h.pacer.shown.length).toBeGreaterThanOrEqual(a.end);
      }
    }
    const big = "z".repeat(50_000);
    h.pacer.push(big);
    received += big.length;
    const burstAt = h.time;
    h.run(maxLagMs + FRAME);
    expect(h.pacer.shown.length).toBe(received);
    expect(h.time - burstAt).toBeLessThanOrEqual(maxLagMs + 2 * FRAME);
  });

  it("adapts its rate to the backlog", () => {
    const small = harness();
    small.pacer.push("a");
    small.pacer.push("b".repeat(50));
    small.frame();
    const large = harness();
    large.pacer.push("a");
    large.pacer.push("b".repeat(5000));
    large.frame();
    expect(large.pacer.shown.length).toBeGreaterThan(small.pacer.shown.length * 5);
  });

  it("finish() reveals the rest promptly and reports when drained", () => {
    const onDrained = vi.fn();
    const h = harness({ onDrained, finishMs: 250 });
    h.pacer.push("a");
    h.pacer.push("b".repeat(3000));
    h.frame();
    h.pacer.finish();
    expect(onDrained).not.toHaveBeenCalled();
    h.run(250 + FRAME);
    expect(h.pacer.shown.length).toBe(3001);
    expect(onDrained).toHaveBeenCalledTimes(1);
    expect(h.pendingFrames()).toBe(0);
  });

  it("finish() reveals everything even if no frame ever comes", () => {
    vi.useFakeTimers();
    const onDrained = vi.fn();
    const h = harness({ onDrained, finishMs: 250 });
    h.pacer.push("a");
    h.pacer.push("b".repeat(3000));
    h.pacer.finish();
    vi.advanceTimersByTime(400); // frames are never run
    expect(h.pacer.shown.length).toBe(3001);
    expect(onDrained).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("finish() with nothing pending drains at once", () => {
    const onDrained = vi.fn();
    const h = harness({ onDrained });
    h.pacer.push("all shown");
    h.pacer.finish();
    expect(onDrained).toHaveBeenCalledTimes(1);
  });

  it("flush() shows everything at once", () => {
    const h = harness();
    h.pacer.push("a");
    h.pacer.push("b".repeat(100));
    h.pacer.flush();
    expect(h.pacer.shown.length).toBe(101);
    expect(h.pendingFrames()).toBe(0);
  });

  it("keeps up without animation frames while the document is hidden", () => {
    vi.useFakeTimers();
    const h = harness({ hiddenFlushMs: 100 });
    h.setHidden(true);
    h.pacer.push("first");
    h.pacer.push(" second");
    h.pacer.push(" third");
    expect(h.requestFrame).not.toHaveBeenCalled();
    vi.advanceTimersByTime(100);
    expect(h.pacer.shown).toBe("first second third");
    expect(vi.getTimerCount()).toBe(0);
  });

  it("switches to timers when the tab is hidden while a frame is pending", () => {
    vi.useFakeTimers();
    const h = harness({ hiddenFlushMs: 100 });
    h.pacer.push("a");
    h.pacer.push("b".repeat(500));
    expect(h.pendingFrames()).toBe(1);
    h.setHidden(true); // the frame will never fire now
    h.pacer.push("c");
    expect(h.pendingFrames()).toBe(0);
    vi.advanceTimersByTime(100);
    expect(h.pacer.shown.length).toBe(502);
  });

  it("finish() while hidden shows everything at once", () => {
    const onDrained = vi.fn();
    const h = harness({ onDrained });
    h.pacer.push("a");
    h.pacer.push("b".repeat(500));
    h.setHidden(true);
    h.pacer.finish();
    expect(h.pacer.shown.length).toBe(501);
    expect(onDrained).toHaveBeenCalledTimes(1);
  });

  it("truncate() cuts received and shown text", () => {
    const h = harness();
    h.pacer.push("Hello");
    h.pacer.push(" world");
    h.pacer.flush();
    h.pacer.truncate(5);
    expect(h.pacer.shown).toBe("Hello");
    expect(h.pacer.received).toBe("Hello");
  });

  it("dispose() stops frames and timers", () => {
    vi.useFakeTimers();
    const h = harness();
    h.pacer.push("a");
    h.pacer.push("b".repeat(500));
    h.pacer.finish();
    const calls = h.shownLog.length;
    h.pacer.dispose();
    h.run(2000);
    vi.advanceTimersByTime(2000);
    expect(h.shownLog.length).toBe(calls);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("uses requestAnimationFrame by default", () => {
    vi.useFakeTimers();
    const frames: string[] = [];
    const pacer = createPacer({ onFrame: (s) => frames.push(s), isHidden: () => false });
    pacer.push("a");
    pacer.push("b".repeat(200));
    vi.advanceTimersByTime(1100);
    expect(pacer.shown.length).toBe(201);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("grapheme safety", () => {
  const segmenter = new Intl.Segmenter(undefined, { granularity: "grapheme" });
  const boundaries = (text: string): Set<number> => {
    const set = new Set<number>([0, text.length]);
    for (const s of segmenter.segment(text)) set.add(s.index);
    return set;
  };

  const TEXT = "Hi 👩‍💻 and 👨‍👩‍👧‍👦 fly 🇫🇷🇯🇵, e\u0301 👍🏽 ok. ".repeat(40);

  for (const useSegmenter of [true, false]) {
    it(`never splits a grapheme (${useSegmenter ? "Intl.Segmenter" : "fallback"})`, () => {
      if (!useSegmenter) setSegmenterForTesting(null);
      const h = harness({ minCharsPerSecond: 60 });
      const valid = boundaries(TEXT);
      // feed in odd-sized pieces, never splitting a code point (the server never does);
      // a letter and its combining mark stay together (a base letter alone is not held back)
      let i = 0;
      const cps = TEXT.match(/\P{M}\p{M}*/gu) ?? [];
      let cp = 0;
      while (cp < cps.length) {
        const n = 1 + (i % 5);
        const piece = cps.slice(cp, cp + n).join("");
        cp += n;
        i += 1;
        h.pacer.push(piece);
        h.frame();
      }
      h.pacer.finish();
      h.run(1500);
      expect(h.pacer.shown).toBe(TEXT);
      for (const shown of h.shownLog) {
        expect(valid.has(shown.length), `split at ${shown.length}: ${JSON.stringify(shown.slice(-6))}`).toBe(true);
      }
    });
  }

  it("holds back a cluster that may still grow", () => {
    const h = harness();
    h.pacer.push("dev: 👩\u200d");
    expect(h.pacer.shown).toBe("dev: ");
    h.pacer.push("💻 done");
    h.pacer.flush();
    expect(h.pacer.shown).toBe("dev: 👩‍💻 done");
    expect(h.shownLog.every((s) => !s.endsWith("\u200d") && !s.endsWith("👩"))).toBe(true);
  });

  it("holds back half a flag", () => {
    const h = harness();
    h.pacer.push("flag ");
    h.pacer.push("🇫");
    h.run(200);
    expect(h.pacer.shown).toBe("flag ");
    h.pacer.push("🇷");
    h.run(200);
    expect(h.pacer.shown).toBe("flag 🇫🇷");
  });

  it("snapToGrapheme rounds up to the end of a cluster", () => {
    const text = "a👩‍💻b";
    for (let i = 2; i < 1 + "👩‍💻".length; i += 1) expect(snapToGrapheme(text, 0, i)).toBe(1 + "👩‍💻".length);
    setSegmenterForTesting(null);
    for (let i = 2; i < 1 + "👩‍💻".length; i += 1) expect(snapToGrapheme(text, 0, i)).toBe(1 + "👩‍💻".length);
    expect(snapToGrapheme("a🎉b", 0, 2)).toBe(3);
  });

  it("stableEnd stops before a trailing cluster that may grow", () => {
    expect(stableEnd("ab👩\u200d")).toBe(2);
    expect(stableEnd("ab👩")).toBe(2);
    expect(stableEnd("ab👨‍👩")).toBe(2);
    expect(stableEnd("ab👍🏽")).toBe(2);
    expect(stableEnd("ab c")).toBe(4);
    expect(stableEnd("ab\ud83d")).toBe(2);
    expect(stableEnd("ab🇫🇷")).toBe(6);
    expect(stableEnd("ab🇫🇷🇯")).toBe(6);
    setSegmenterForTesting(null);
    expect(stableEnd("ab👩\u200d")).toBe(2);
    expect(stableEnd("ab👨‍👩‍👧\u200d")).toBe(2);
    expect(stableEnd("ab👨‍👩")).toBe(2);
    expect(stableEnd("ab👍🏽")).toBe(2);
    expect(stableEnd("ab🇫🇷🇯")).toBe(6);
  });
});
