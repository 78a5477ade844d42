// Syntax highlighting for fenced code: highlight.js core with a handful of languages, so the
// bundle stays small. No auto-detection: an unknown or missing language is left plain.

import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import css from "highlight.js/lib/languages/css";
import go from "highlight.js/lib/languages/go";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import shell from "highlight.js/lib/languages/shell";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";

hljs.registerLanguage("python", python);
hljs.registerLanguage("javascript", javascript);
hljs.registerLanguage("typescript", typescript);
hljs.registerLanguage("json", json);
hljs.registerLanguage("bash", bash);
hljs.registerLanguage("shell", shell);
hljs.registerLanguage("xml", xml); // also html, svg, …
hljs.registerLanguage("css", css);
hljs.registerLanguage("sql", sql);
hljs.registerLanguage("go", go);
hljs.registerLanguage("rust", rust);
hljs.configure({ ignoreUnescapedHTML: true });

/** The registered language for a fence's info word ("py", "ts", "html", …), or null. */
export function resolveLanguage(name: string): string | null {
  const key = name.trim().toLowerCase();
  if (key === "") return null;
  const language = hljs.getLanguage(key);
  if (language === undefined) return null;
  // getLanguage resolves aliases; find the registered name the alias belongs to
  if (hljs.listLanguages().includes(key)) return key;
  for (const registered of hljs.listLanguages()) {
    if (hljs.getLanguage(registered) === language) return registered;
  }
  return null;
}

/** Highlighted HTML for `code` in `language`, or null (the caller escapes the code itself). */
export function highlightCode(code: string, language: string): string | null {
  const resolved = resolveLanguage(language);
  if (resolved === null) return null;
  try {
    return hljs.highlight(code, { language: resolved, ignoreIllegals: true }).value;
  } catch {
    return null;
  }
}

export function highlightLanguages(): string[] {
  return hljs.listLanguages();
}
