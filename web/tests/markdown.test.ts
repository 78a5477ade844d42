import { describe, expect, it, vi } from "vitest";
import { attachCopyHandler, createBlockRenderer, renderMarkdown, sanitizeHtml } from "../src/lib/markdown";
import { repairTail, splitBlocks } from "../src/lib/markdownTail";

const DANGEROUS_URL = /^\s*(?:javascript|vbscript|data):/i;
const FORBIDDEN_TAGS = new Set(["SCRIPT", "STYLE", "IFRAME", "OBJECT", "EMBED", "FORM", "LINK", "META", "BASE", "FRAME", "SVG"]);

function parse(html: string): Document {
  return new DOMParser().parseFromString(`<!doctype html><body>${html}</body>`, "text/html");
}

/** Every problem found in the HTML: forbidden elements, handlers, dangerous URLs, unsafe links. */
function problems(html: string): string[] {
  const found: string[] = [];
  for (const el of Array.from(parse(html).body.querySelectorAll("*"))) {
    if (FORBIDDEN_TAGS.has(el.tagName.toUpperCase())) found.push(`<${el.tagName.toLowerCase()}>`);
    for (const attr of Array.from(el.attributes)) {
      const name = attr.name.toLowerCase();
      if (name.startsWith("on")) found.push(`${name}=`);
      if (name === "style") found.push("style=");
      if (["href", "src", "xlink:href", "action", "formaction", "srcset"].includes(name) && DANGEROUS_URL.test(attr.value.replace(/[\u0000-\u001f]/g, ""))) {
        found.push(`${name}=${attr.value}`);
      }
    }
    if (el.tagName === "A" && el.hasAttribute("href")) {
      if (el.getAttribute("target") !== "_blank") found.push("a without target");
      if (el.getAttribute("rel") !== "noopener noreferrer") found.push("a without rel");
    }
  }
  return found;
}

const HOSTILE_MARKDOWN = [
  "<script>alert(1)</script>",
  "[x](javascript:alert(1))",
  "[x](JaVaScRiPt:alert(1))",
  "[x](  javascript:alert(1))",
  "[x](java\tscript:alert(1))",
  "[x](&#106;avascript:alert(1))",
  "[x](javascript&colon;alert(1))",
  "<img src=x onerror=alert(1)>",
  "![x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
  "![x](data:image/png;base64,iVBORw0KGgo=)",
  "[x](data:text/html,<script>alert(1)</script>)",
  '<iframe src="https://evil.example"></iframe>',
  '<a href="vbscript:msgbox(1)">x</a>',
  "[x](vbscript:msgbox(1))",
  "<style>body{display:none}</style>",
  '<div onclick="alert(1)">x</div>',
  "[x]: javascript:alert(1)\n\n[y][x]",
  "<javascript:alert(1)>",
  "```html\n<script>alert(1)</script>\n```",
  "`<img src=x onerror=alert(1)>`",
  "[<img src=x onerror=alert(1)>](https://ok.example)",
];

const HOSTILE_HTML = [
  "<script>alert(1)</script>",
  '<img src="x" onerror="alert(1)">',
  '<img src="data:image/png;base64,iVBORw0KGgo=">',
  '<a href="javascript:alert(1)">x</a>',
  '<a href="JaVaScRiPt:alert(1)">x</a>',
  '<a href=" &#x6A;avascript:alert(1)">x</a>',
  '<a href="vbscript:msgbox(1)">x</a>',
  '<a href="data:text/html,<script>alert(1)</script>">x</a>',
  '<iframe src="https://evil.example"></iframe>',
  "<style>*{}</style><p style=\"color:red\">x</p>",
  '<svg onload="alert(1)"><circle/></svg>',
  '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
  '<form action="javascript:alert(1)"><button formaction="javascript:alert(1)">x</button></form>',
  '<object data="x"></object><embed src="x">',
  '<a href="https://ok.example" target="_self">ok</a>',
];

describe("markdown sanitization", () => {
  it.each(HOSTILE_MARKDOWN)("renders %j harmlessly", (input) => {
    for (const streaming of [false, true]) {
      const html = renderMarkdown(input, { streaming });
      expect(problems(html), html).toEqual([]);
      expect(html).not.toMatch(/<script/i);
    }
  });

  it.each(HOSTILE_HTML)("sanitizes raw HTML %j", (input) => {
    const html = sanitizeHtml(input);
    expect(problems(html), html).toEqual([]);
  });

  it("keeps safe links and gives them target and rel", () => {
    const doc = parse(renderMarkdown("See [docs](https://example.com/a?b=1) and https://runnel.dev and <mailto:a@b.c>."));
    const links = Array.from(doc.querySelectorAll("a"));
    expect(links.map((a) => a.getAttribute("href"))).toEqual(["https://example.com/a?b=1", "https://runnel.dev", "mailto:a@b.c"]);
    for (const a of links) {
      expect(a.getAttribute("target")).toBe("_blank");
      expect(a.getAttribute("rel")).toBe("noopener noreferrer");
    }
  });

  it("drops the dangerous URL but keeps the text", () => {
    const doc = parse(sanitizeHtml('<a href="javascript:alert(1)">click</a>'));
    expect(doc.body.textContent).toBe("click");
    expect(doc.querySelector("a")?.hasAttribute("href")).toBe(false);
  });

  it("keeps http images", () => {
    const doc = parse(renderMarkdown("![cat](https://img.example/cat.png)"));
    expect(doc.querySelector("img")?.getAttribute("src")).toBe("https://img.example/cat.png");
  });

  it("turns table alignment into classes", () => {
    const doc = parse(renderMarkdown("| a | b |\n|--:|:-:|\n| 1 | 2 |"));
    expect(doc.querySelector("th")?.className).toBe("align-right");
    expect(doc.querySelector("td:nth-child(2)")?.className).toBe("align-center");
    expect(doc.querySelector("[style]")).toBeNull();
  });
});

describe("code blocks", () => {
  it("puts a copy button in every code block", () => {
    const doc = parse(renderMarkdown("```js\nlet a = 1;\n```\n\ntext\n\n    indented code\n\n~~~\nplain\n~~~"));
    const blocks = doc.querySelectorAll(".code-block");
    expect(blocks).toHaveLength(3);
    for (const block of Array.from(blocks)) {
      const button = block.querySelector('button[data-testid="copy-code"]');
      expect(button?.getAttribute("type")).toBe("button");
      expect(button?.classList.contains("copy-code")).toBe(true);
      expect(button?.textContent).toBe("Copy");
    }
  });

  it("highlights a fence only once its closing fence arrived", () => {
    const open = "Here:\n\n```python\ndef greet(name):\n    return f\"hi {name}\"\n";
    const streamingHtml = renderMarkdown(open, { streaming: true });
    expect(streamingHtml).toContain("def greet(name):");
    expect(streamingHtml).not.toContain("hljs-keyword");
    expect(parse(streamingHtml).querySelector(".code-block")?.classList.contains("code-open")).toBe(true);

    const closed = renderMarkdown(`${open}\`\`\`\n`, { streaming: true });
    expect(closed).toContain('<span class="hljs-keyword">def</span>');
    expect(parse(closed).querySelector(".code-block")?.classList.contains("code-open")).toBe(false);

    // a finished text is highlighted even when its fence never closed
    expect(renderMarkdown(open, { streaming: false })).toContain("hljs-keyword");
  });

  it.each(["python", "py", "javascript", "js", "typescript", "ts", "json", "bash", "sh", "html", "xml", "css", "sql", "go", "rust"])(
    "highlights %s",
    (lang) => {
      const html = renderMarkdown(`\`\`\`${lang}\n<a>{"x": 1} if let fn func SELECT var\n\`\`\``);
      expect(html).toContain("hljs-");
    },
  );

  it("leaves an unknown language plain and escaped", () => {
    const html = renderMarkdown("```brainfuck\n<b>++</b>\n```");
    expect(html).toContain("&lt;b&gt;++&lt;/b&gt;");
    expect(html).not.toContain("hljs-");
  });

  it("copies the code of a block", async () => {
    const root = document.createElement("div");
    root.innerHTML = renderMarkdown("```js\nconst x = 1 < 2;\n```");
    document.body.append(root);
    const copy = vi.fn(async () => undefined);
    const detach = attachCopyHandler(root, copy);
    root.querySelector<HTMLButtonElement>("button.copy-code")?.click();
    await Promise.resolve();
    expect(copy).toHaveBeenCalledWith("const x = 1 < 2;\n");
    detach();
    root.remove();
  });
});

describe("tail repair while streaming", () => {
  it.each([
    // [streaming text, repaired source]
    ["Hello **wor", "Hello **wor**"],
    ["Hello **", "Hello "],
    ["Hello *", "Hello "],
    ["a *b", "a *b*"],
    ["a _b", "a _b_"],
    ["snake_case_name", "snake_case_name"],
    ["**bold** and *it", "**bold** and *it*"],
    ["***both", "***both***"],
    ["**bold *nested", "**bold *nested***"],
    ["x ~~gone", "x ~~gone~~"],
    ["x ~~", "x "],
    ["x ~", "x "],
    ["x `code", "x `code`"],
    ["x `", "x "],
    ["x ``a ` b", "x ``a ` b``"],
    ["see [docs](htt", "see docs"],
    ["see [docs](https://exa", "see docs"],
    ["see [docs](", "see docs"],
    ["see [docs]", "see docs"],
    ["see [do", "see do"],
    ["see [**bold** docs](ht", "see **bold** docs"],
    ["img ![alt](http://x", "img "],
    ["img ![al", "img "],
    ["[ok](https://a.b) and [no", "[ok](https://a.b) and no"],
    ["a [x](https://a.b/(c)", "a x"],
    ["[outer [inner](htt", "outer inner"],
    ["[outer [inner]", "outer inner"],
    ["`[not a link` and **b", "`[not a link` and **b**"],
    ["2 * 3 = 6", "2 * 3 = 6"],
    ["* item", "* item"],
    ["- item **bo", "- item **bo**"],
    ["Title\n-", "Title"],
    ["Title\n==", "Title"],
    ["Title\n---\n", "Title\n---\n"],
    ["para\n\n---", "para\n\n---"],
    ["trailing \\", "trailing "],
    ["<https://exa", "https://exa"],
    ["**a**\n\nnew *par", "**a**\n\nnew *par*"],
    ["line one **x\nline two", "line one **x\nline two**"],
    ["```py\nprint('*')\n``", "```py\nprint('*')"],
    ["```py\nprint('*')\n```\n\n**b", "```py\nprint('*')\n```\n\n**b**"],
    ["```\ncode with **stars and [link](ht", "```\ncode with **stars and [link](ht"],
    ["    indented *code", "    indented *code"],
  ])("repairs %j", (input, expected) => {
    expect(repairTail(input)).toBe(expected);
  });

  it("shows no literal markers for unmatched trailing syntax", () => {
    for (const input of ["Hello **", "Hello *", "x ~~", "x `", "word **bol", "a [link](htt", "a [li"]) {
      const text = parse(renderMarkdown(input, { streaming: true })).body.textContent ?? "";
      expect(text, input).not.toMatch(/[*~`[\]()]/);
    }
  });

  it("renders half-finished emphasis as it will end up", () => {
    const html = renderMarkdown("This is **very imp", { streaming: true });
    expect(html).toContain("<strong>very imp</strong>");
    expect(renderMarkdown("This is **very imp")).toContain("**very imp"); // not when finished
  });

  it("renders an unclosed fence as a code block", () => {
    const doc = parse(renderMarkdown("Code:\n\n```js\nconst a = 1;\n\nconst b = 2;", { streaming: true }));
    expect(doc.querySelector("pre code")?.textContent).toBe("const a = 1;\n\nconst b = 2;");
  });
});

describe("block splitting and incremental rendering", () => {
  it("splits at blank lines, but not inside fences or before indented lines", () => {
    expect(splitBlocks("a\n\nb")).toEqual(["a", "b"]);
    expect(splitBlocks("a\n\n\n\nb\n")).toEqual(["a", "b\n"]);
    expect(splitBlocks("```\nx\n\ny\n```\n\nz")).toEqual(["```\nx\n\ny\n```", "z"]);
    expect(splitBlocks("~~~~\nx\n\n~~~\ny\n~~~~\n\nz")).toEqual(["~~~~\nx\n\n~~~\ny\n~~~~", "z"]);
    expect(splitBlocks("- a\n\n  more of a\n\n- b")).toEqual(["- a\n\n  more of a", "- b"]);
    expect(splitBlocks("code:\n\n    x = 1\n\n    y = 2\n\nend")).toEqual(["code:\n\n    x = 1\n\n    y = 2", "end"]);
    expect(splitBlocks("a\r\n\r\nb")).toEqual(["a", "b"]);
    expect(splitBlocks("```\nopen\n\nstill open")).toEqual(["```\nopen\n\nstill open"]);
  });

  it("renders the same HTML as a whole-text render", () => {
    const text = "# Title\n\nSome *text* here.\n\n```py\nx = 1\n\ny = 2\n```\n\n- a\n- b\n\n> quote\n\n| a |\n|---|\n| 1 |";
    const whole = renderMarkdown(text);
    const blocks = createBlockRenderer().render(text, false).blocks;
    const normalize = (html: string) => html.replace(/\s+/g, "");
    expect(normalize(blocks.map((b) => b.html).join(""))).toBe(normalize(whole));
  });

  it("re-renders only the last block", () => {
    const render = vi.fn((text: string, options: { streaming?: boolean }) => renderMarkdown(text, options));
    const renderer = createBlockRenderer({ render });
    const paragraphs = Array.from({ length: 200 }, (_, i) => `Paragraph ${i} with **bold** text.`);
    let text = paragraphs.join("\n\n");

    let result = renderer.render(text, true);
    expect(result.blocks).toHaveLength(200);
    expect(render).toHaveBeenCalledTimes(200);

    // tokens arriving in the last block: one render each
    for (const piece of [" more", " and", " *more"]) {
      render.mockClear();
      text += piece;
      result = renderer.render(text, true);
      expect(render).toHaveBeenCalledTimes(1);
      expect(render).toHaveBeenLastCalledWith(expect.stringContaining("Paragraph 199"), { streaming: true });
      expect(result.rendered).toBe(1);
    }

    // a new block starts: the finished one is rendered once more (final), then the new last one
    render.mockClear();
    text += "\n\nNew";
    result = renderer.render(text, true);
    expect(render).toHaveBeenCalledTimes(2);
    expect(result.blocks).toHaveLength(201);
    expect(result.blocks.map((b) => b.key).slice(0, 2)).toEqual(["b0", "b1"]);

    // nothing changed: nothing rendered
    render.mockClear();
    renderer.render(text, true);
    expect(render).not.toHaveBeenCalled();

    // the end of the stream: the last block once more, without tail repair
    render.mockClear();
    result = renderer.render(text, false);
    expect(render).toHaveBeenCalledTimes(1);
    expect(render).toHaveBeenLastCalledWith("New", { streaming: false });
  });

  it("keeps a long reply cheap per frame", () => {
    const renderer = createBlockRenderer();
    let text = "";
    const words = "lorem ipsum dolor sit amet consectetur".split(" ");
    const counts: number[] = [];
    for (let i = 0; i < 10_000; i += 1) {
      text += (i % 60 === 59 ? "\n\n" : " ") + (words[i % words.length] ?? "");
      if (i % 25 === 0) counts.push(renderer.render(text, true).rendered);
    }
    expect(Math.max(...counts)).toBeLessThanOrEqual(2);
    const final = renderer.render(text, false);
    expect(final.blocks.length).toBeGreaterThan(150);
  });
});
