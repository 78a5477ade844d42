// Drives the real `ai` package against a Runnel server: its DefaultChatTransport (which
// validates every chunk with the SDK's own schema), readUIMessageStream, and a Chat built on
// AbstractChat. Run by tests/test_ai_sdk.py:
//
//   AI_PACKAGE=ai|ai5|ai7 node ui_chat.mjs <scenario> <server url> '<json options>'
//
// prints one JSON object (what the scenario saw) on stdout; the Python test checks it
// against what the server stored. AI_PACKAGE picks the SDK's major version (ai 6 by
// default; ai5 and ai7 are the same package at 5.x and 7.x, see package.json).

const { AbstractChat, DefaultChatTransport, readUIMessageStream } = await import(
  process.env.AI_PACKAGE ?? "ai"
);

const [scenario, url, rawOptions] = process.argv.slice(2);
const options = JSON.parse(rawOptions ?? "{}");
const api = `${url}/api/v1/ui/chat`;

function transport() {
  return new DefaultChatTransport({ api, body: options.model ? { model: options.model } : {} });
}

function userMessage(text) {
  return { id: `u-${Math.random().toString(36).slice(2)}`, role: "user", parts: [{ type: "text", text }] };
}

function textOf(message) {
  return message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
}

// A ChatState in plain arrays: what a framework's reactive store is for useChat.
class PlainState {
  constructor() {
    this.status = "ready";
    this.error = undefined;
    this.messages = [];
  }
  pushMessage(message) {
    this.messages = [...this.messages, message];
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = this.messages.map((m, i) => (i === index ? message : m));
  }
  snapshot(thing) {
    return structuredClone(thing);
  }
}

class Chat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new PlainState() });
  }
  get current() {
    return this.state;
  }
}

function newChat(id, errors) {
  return new Chat({ id, transport: transport(), onError: (error) => errors.push(error.message) });
}

function summary(chat) {
  return chat.messages.map((m) => ({ id: m.id, role: m.role, text: textOf(m), metadata: m.metadata }));
}

// Read chunks from a stream of the transport, keeping their types, and rebuild the message.
async function collect(stream, { stopAfter } = {}) {
  const [forChunks, forMessage] = stream.tee();
  const types = [];
  const chunks = [];
  const reading = (async () => {
    const reader = forChunks.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      types.push(value.type);
      chunks.push(value);
      if (stopAfter && types.filter((t) => t === "text-delta").length === stopAfter.deltas) {
        await stopAfter.then();
        stopAfter.deltas = -1;
      }
    }
  })();
  let last;
  for await (const message of readUIMessageStream({ stream: forMessage })) last = message;
  await reading;
  return { types, chunks, message: last && { id: last.id, text: textOf(last), metadata: last.metadata } };
}

const scenarios = {
  // one reply through the transport, every chunk checked by the SDK's schema
  async send() {
    const stream = await transport().sendMessages({
      chatId: options.chatId,
      messages: [userMessage(options.text)],
      trigger: "submit-message",
      messageId: undefined,
      abortSignal: undefined,
    });
    return collect(stream);
  },

  // a Chat: send, then regenerate; errors through onError
  async chat() {
    const errors = [];
    const chat = newChat(options.chatId, errors);
    await chat.sendMessage({ text: options.text });
    const first = summary(chat);
    if (options.regenerate) await chat.regenerate();
    return { first, messages: summary(chat), errors, status: chat.status };
  },

  // a reply read a little, its connection dropped (the page went away), then a new Chat
  // with the same id resumes it: one assistant message, the whole text
  async resume() {
    const abort = new AbortController();
    const stream = await transport().sendMessages({
      chatId: options.chatId,
      messages: [userMessage(options.text)],
      trigger: "submit-message",
      messageId: undefined,
      abortSignal: abort.signal,
    });
    const reader = stream.getReader();
    let deltas = 0;
    let messageId;
    while (deltas < 5) {
      const { value } = await reader.read();
      if (value.type === "start") messageId = value.messageId;
      if (value.type === "text-delta") deltas += 1;
    }
    abort.abort();
    await reader.cancel().catch(() => {});
    const errors = [];
    const chat = newChat(options.chatId, errors);
    chat.current.messages = [userMessage(options.text)];
    await chat.resumeStream();
    return { messageId, messages: summary(chat), errors };
  },

  // useChat({ resume: true }) on a page load with nothing in flight
  async idle() {
    const stream = await transport().reconnectToStream({ chatId: options.chatId });
    return { stream: stream === null ? null : "a stream" };
  },

  // a reply stopped through Runnel's stop endpoint while the transport reads it
  async stop() {
    const stream = await transport().sendMessages({
      chatId: options.chatId,
      messages: [userMessage(options.text)],
      trigger: "submit-message",
      messageId: undefined,
      abortSignal: undefined,
    });
    const stopAfter = {
      deltas: 5,
      then: async () => {
        const answer = await fetch(`${api}/${encodeURIComponent(options.chatId)}/stop`, { method: "POST" });
        stopAfter.status = answer.status;
      },
    };
    const seen = await collect(stream, { stopAfter });
    return { ...seen, stopStatus: stopAfter.status };
  },
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
try {
  console.log(JSON.stringify(await run()));
} catch (error) {
  console.log(JSON.stringify({ thrown: String(error?.message ?? error) }));
}
