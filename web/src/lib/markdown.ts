// Markdown → sanitized HTML for replies, including while they stream.
//
// markdown-it (raw HTML off, linkify on) → DOMPurify with a strict allowlist. Code fences
// get a header with a copy button and are highlighted once their closing fence arrived.
// While streaming, the tail is repaired first (markdownTail.ts) so half-typed syntax does
// not flicker. `createBlockRenderer` renders block by block and re-renders only the last.

import MarkdownIt from "markdown-it";
import type Token from "markdown-it/lib/token.mjs";
import DOMPurify, { type Config, type DOMPurify as Purifier } from "dompurify";
import { highlightCode } from "./highlight";
import { closesFence, normalizeNewlines, repairTail, splitBlocks, type Fence } from "./markdownTail";

export interface RenderOptions {
  /** The text is still arriving: repair its tail and leave an unclosed fence unhighlighted. */
  streaming?: boolean;
}

interface RenderEnv {
  streaming: boolean;
  lines: string[];
}

const COPY_BUTTON =
  '<button type="button" class="copy-code" data-testid="copy-code">Copy</button>';

const md = new MarkdownIt({ html: false, linkify: true, typographer: false, breaks: false });
const escapeHtml = md.utils.escapeHtml;

const BAD_URL = /^(?:javascript|vbscript|data|file):/i;

/** Strips what browsers ignore inside a URL scheme ("java\tscript:", leading spaces, controls). */
function normalizeUrl(url: string): string {
  return url.replace(/[\u0000-\u0020\u007f-\u00a0\u1680\u180e\u2000-\u2029\u205f\u3000\ufeff]/g, "").toLowerCase();
}

export function isDangerousUrl(url: string): boolean {
  return BAD_URL.test(normalizeUrl(url));
}

// No data: URLs at all (markdown-it would allow data:image/png etc.).
md.validateLink = (url: string): boolean => !isDangerousUrl(url);

// Table alignment arrives as style="text-align:…"; styles are not allowed, classes are.
md.core.ruler.push("align_classes", (state) => {
  for (const token of state.tokens) {
    if (token.type !== "th_open" && token.type !== "td_open") continue;
    const style = token.attrGet("style");
    if (style === null) continue;
    const m = /text-align:\s*(left|center|right)/.exec(style);
    token.attrs = (token.attrs ?? []).filter(([name]) => name !== "style");
    if (m !== null) token.attrJoin("class", `align-${m[1] ?? "left"}`);
  }
});

function fenceOf(token: Token): Fence {
  const marker = token.markup[0] === "~" ? "~" : "`";
  return { marker, length: token.markup.length };
}

/** True when the fence's closing line is in the source (markdown-it closes open fences silently). */
function isFenceClosed(token: Token, env: RenderEnv): boolean {
  const map = token.map;
  if (map === null) return true;
  const [start, end] = map;
  if (end - 1 <= start) return false;
  const line = env.lines[end - 1];
  return line !== undefined && closesFence(line, fenceOf(token));
}

function codeBlock(code: string, language: string, highlight: boolean, open: boolean): string {
  const lang = language.replace(/[^\w#+.-]/g, "").slice(0, 32);
  const highlighted = highlight && lang !== "" ? highlightCode(code, lang) : null;
  const body = highlighted ?? escapeHtml(code);
  const codeClass = `hljs${lang !== "" ? ` language-${lang}` : ""}`;
  return (
    `<div class="code-block${open ? " code-open" : ""}" data-lang="${escapeHtml(lang)}">` +
    `<div class="code-header"><span class="code-lang">${escapeHtml(lang)}</span>${COPY_BUTTON}</div>` +
    `<pre><code class="${codeClass}">${body}</code></pre></div>\n`
  );
}

md.renderer.rules.fence = (tokens, idx, _options, env: RenderEnv) => {
  const token = tokens[idx];
  if (token === undefined) return "";
  const info = token.info ? md.utils.unescapeAll(token.info).trim() : "";
  const language = info.split(/\s+/)[0] ?? "";
  const closed = isFenceClosed(token, env);
  return codeBlock(token.content, language, closed || !env.streaming, !closed && env.streaming);
};

md.renderer.rules.code_block = (tokens, idx) => codeBlock(tokens[idx]?.content ?? "", "", false, false);

// ---------------------------------------------------------------------------------------
// Sanitizing

const PURIFY_CONFIG: Config = {
  ALLOWED_TAGS: [
    "a", "b", "blockquote", "br", "button", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "img", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "ul",
  ],
  ALLOWED_ATTR: [
    "alt", "aria-label", "class", "colspan", "data-lang", "data-testid", "href", "rel",
    "rowspan", "src", "start", "target", "title", "type",
  ],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  ALLOW_UNKNOWN_PROTOCOLS: false,
  FORBID_TAGS: ["script", "style", "iframe", "object", "embed", "form", "link", "meta", "base", "svg", "math"],
  FORBID_ATTR: ["style"],
};

const URL_ATTRS = ["href", "src", "xlink:href", "action", "formaction", "srcset", "background", "poster"];

let purifier: Purifier | null = null;

function getPurifier(): Purifier {
  if (purifier !== null) return purifier;
  if (typeof window === "undefined") throw new Error("renderMarkdown needs a DOM (a browser or jsdom)");
  const instance = DOMPurify(window);
  instance.addHook("afterSanitizeAttributes", (node) => {
    for (const name of URL_ATTRS) {
      const value = node.getAttribute(name);
      if (value !== null && isDangerousUrl(value)) node.removeAttribute(name);
    }
    for (const attr of Array.from(node.attributes)) {
      if (attr.name.toLowerCase().startsWith("on")) node.removeAttribute(attr.name);
    }
    if (node.tagName === "A") {
      if (node.hasAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      } else {
        node.removeAttribute("target");
      }
    }
  });
  purifier = instance;
  return instance;
}

/** Sanitizes HTML with the markdown allowlist (no scripts, handlers, styles, frames or bad URLs). */
export function sanitizeHtml(html: string): string {
  return getPurifier().sanitize(html, PURIFY_CONFIG);
}

// ---------------------------------------------------------------------------------------
// Rendering

/** Markdown → sanitized HTML. With `streaming`, the unfinished tail is repaired first. */
export function renderMarkdown(text: string, options: RenderOptions = {}): string {
  const streaming = options.streaming === true;
  const source = streaming ? repairTail(text) : normalizeNewlines(text);
  const env: RenderEnv = { streaming, lines: source.split("\n") };
  return sanitizeHtml(md.render(source, env));
}

export interface RenderedBlock {
  /** Stable per position: "b0", "b1", … (use as the v-for key). */
  key: string;
  html: string;
}

export interface BlockRendering {
  blocks: RenderedBlock[];
  /** Number of blocks rendered by this call (for tests and profiling). */
  rendered: number;
}

export interface BlockRenderer {
  render(text: string, streaming: boolean): BlockRendering;
  reset(): void;
}

/**
 * Incremental rendering: the text is split into top-level blocks (blank-line separated,
 * never inside a code fence); finished blocks are rendered once and cached, and only the
 * last block is rendered again on each call.
 */
export function createBlockRenderer(
  options: { render?: (text: string, options: RenderOptions) => string } = {},
): BlockRenderer {
  const render = options.render ?? renderMarkdown;
  let cache: Array<{ source: string; html: string }> = [];
  let last: { source: string; streaming: boolean; html: string } | null = null;

  return {
    render(text: string, streaming: boolean): BlockRendering {
      const sources = splitBlocks(text);
      let rendered = 0;
      const blocks: RenderedBlock[] = [];
      const finished = streaming ? sources.length - 1 : sources.length;
      const nextCache: Array<{ source: string; html: string }> = [];
      sources.forEach((source, index) => {
        let html: string;
        if (index < finished) {
          const cached = cache[index];
          if (cached !== undefined && cached.source === source) {
            html = cached.html;
          } else {
            html = render(source, { streaming: false });
            rendered += 1;
          }
          nextCache.push({ source, html });
        } else if (last !== null && last.source === source && last.streaming === streaming) {
          html = last.html;
        } else {
          html = render(source, { streaming });
          rendered += 1;
          last = { source, streaming, html };
        }
        blocks.push({ key: `b${index}`, html });
      });
      cache = nextCache;
      return { blocks, rendered };
    },
    reset(): void {
      cache = [];
      last = null;
    },
  };
}

// ---------------------------------------------------------------------------------------
// Copy buttons

/**
 * Wires the copy buttons of rendered code blocks inside `root` (one delegated listener, as
 * sanitized HTML carries no handlers). Returns a function that removes the listener.
 */
export function attachCopyHandler(
  root: HTMLElement,
  copy: (text: string) => Promise<void> = (text) => navigator.clipboard.writeText(text),
): () => void {
  const onClick = (event: Event): void => {
    const target = event.target;
    if (!(target instanceof Element)) return;
    const button = target.closest("button.copy-code");
    if (button === null || !root.contains(button)) return;
    const code = button.closest(".code-block")?.querySelector("pre code");
    if (code == null) return;
    copy(code.textContent ?? "").then(
      () => {
        button.textContent = "Copied";
        setTimeout(() => {
          button.textContent = "Copy";
        }, 1500);
      },
      () => {
        button.textContent = "Copy failed";
      },
    );
  };
  root.addEventListener("click", onClick);
  return () => root.removeEventListener("click", onClick);
}
