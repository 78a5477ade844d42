"""A fast fake OpenAI-compatible upstream for the benchmark.

    python -m bench.upstream --port 8001

Raw asyncio protocols (uvloop when installed), HTTP/1.1 keep-alive, chunked responses.
``POST /v1/chat/completions`` with ``"stream": true`` answers ``chat.completion.chunk`` SSE
events, then a usage chunk and ``data: [DONE]``. Each token's text records when it was
written, ``"<seq>:<time.time_ns()>|"``, so a reader can measure what every hop added.

The model name sets the pace: ``bench-50tps-200tok`` sends 200 tokens at 50 tokens/s,
token i due at start + i/50 (an absolute schedule: a late tick sends every token that is
due, so lag never accumulates). ``0tps`` sends as fast as the reader takes them (flow
control respected). Optional parts: ``-hold`` stops after the first token until
``POST /bench/release``; ``-first300ms`` delays the first token.

Also ``GET /v1/models``, ``GET /bench/stats`` and ``POST /bench/release``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import re
import socket
import time
from dataclasses import dataclass
from typing import cast

MODEL = re.compile(
    r"^bench-(?P<rate>\d+(?:\.\d+)?)tps-(?P<tokens>\d+)tok(?P<rest>(?:-[a-z0-9]+)*)$"
)
BURST_BATCH = 64
HOLD_LIMIT = 900.0
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True)
class Pace:
    rate: float  # tokens per second; 0 = as fast as the reader takes them
    tokens: int
    hold: bool = False
    first_delay: float = 0.0


def parse_model(name: str) -> Pace | None:
    """``bench-50tps-200tok[-hold][-first300ms]`` → its pacing, or None."""
    match = MODEL.match(name)
    if match is None:
        return None
    hold, first = False, 0.0
    for part in match["rest"].split("-")[1:]:
        if part == "hold":
            hold = True
        elif part.startswith("first") and part.endswith("ms") and part[5:-2].isdigit():
            first = int(part[5:-2]) / 1000
        else:
            return None
    return Pace(float(match["rate"]), int(match["tokens"]), hold, first)


def model_name(rate: float, tokens: int, *, hold: bool = False, first_ms: int = 0) -> str:
    name = f"bench-{rate:g}tps-{tokens}tok"
    if hold:
        name += "-hold"
    if first_ms:
        name += f"-first{first_ms}ms"
    return name


def chunk(payload: bytes) -> bytes:
    """One chunk of a chunked HTTP body."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        status.encode(),
        content_type,
        len(body),
        body,
    )


def error_body(message: str, code: str) -> bytes:
    err = {"message": message, "type": "invalid_request_error", "code": code}
    return json.dumps({"error": err}).encode()


class Upstream:
    """Shared state of one upstream process: counters and streams waiting for release."""

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        self.tokens = 0
        self.active: set[TokenStream] = set()
        self.held: set[TokenStream] = set()
        self.next_id = 0
        # one timer wheel (1 ms slots) paces every stream: a timer per token would cost
        # more than the token's write
        self.slots: dict[int, list[TokenStream]] = {}
        self.wheel: asyncio.TimerHandle | None = None
        self.wheel_at = 0
        self.turning = False
        self.max_lag_ms = 0  # how late the wheel turned, at worst (since the last stats)
        self.max_gc_ms = 0.0  # the longest garbage collection (since the last stats)
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            pause = (time.perf_counter() - self._gc_started) * 1000
            self.max_gc_ms = max(self.max_gc_ms, pause)

    def schedule(self, stream: TokenStream, at: float) -> None:
        """Call ``stream.tick()`` at loop time ``at`` (rounded up to the millisecond)."""
        slot = math.ceil(at * 1000)
        waiting = self.slots.get(slot)
        if waiting is None:
            self.slots[slot] = [stream]
        else:
            waiting.append(stream)
        if self.turning:
            return  # turn() arms the wheel for the earliest slot when it is done
        if self.wheel is None or slot < self.wheel_at:
            if self.wheel is not None:
                self.wheel.cancel()
            self.wheel_at = slot
            self.wheel = asyncio.get_running_loop().call_at(slot / 1000, self.turn)

    def turn(self) -> None:
        self.wheel = None
        loop = asyncio.get_running_loop()
        now = math.floor(loop.time() * 1000) + 1
        self.max_lag_ms = max(self.max_lag_ms, now - 1 - self.wheel_at)
        self.turning = True
        try:
            for slot in sorted(k for k in self.slots if k <= now):
                for stream in self.slots.pop(slot):
                    stream.tick()
        finally:
            self.turning = False
        if self.slots:
            self.wheel_at = min(self.slots)
            self.wheel = loop.call_at(self.wheel_at / 1000, self.turn)

    def release(self) -> int:
        held, self.held = self.held, set()
        for stream in held:
            stream.release()
        return len(held)


class TokenStream:
    """One streamed completion on one connection, paced by the upstream's timer wheel."""

    def __init__(self, conn: Connection, model: str, pace: Pace) -> None:
        self.conn = conn
        self.pace = pace
        self.loop = asyncio.get_running_loop()
        upstream = conn.upstream
        upstream.next_id += 1
        created = int(time.time())
        head = (
            f'{{"id":"chatcmpl-{upstream.next_id}","object":"chat.completion.chunk",'
            f'"created":{created},"model":{json.dumps(model)},"choices":[{{"index":0,"delta":'
        ).encode()
        self.head = head
        self.token_head = head + b'{"content":"'
        self.token_tail = b'"},"finish_reason":null}]}\n\n'
        self.seq = 0
        self.timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self.hold_timer: asyncio.TimerHandle | None = None
        self.waiting_hold = False
        self.start = self.loop.time() + pace.first_delay
        self.done = False

    def begin(self) -> None:
        self.conn.upstream.started += 1
        self.conn.upstream.active.add(self)
        first = self.head + b'{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
        self.conn.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + chunk(b"data: " + first)
        )
        if self.pace.first_delay:
            self.conn.upstream.schedule(self, self.start)
        else:
            self.tick()

    def due(self, seq: int) -> float:
        return self.start + seq / self.pace.rate

    def tick(self) -> None:
        self.timer = None
        if self.done or self.conn.closed:
            return
        pace = self.pace
        stamp = time.time_ns()
        out: list[bytes] = []
        seq, n = self.seq, pace.tokens
        if pace.rate <= 0:
            stop = min(n, seq + BURST_BATCH)
        else:
            now = self.loop.time() + 0.001  # the wheel's resolution
            stop = seq
            while stop < n and self.due(stop) <= now:
                stop += 1
        if pace.hold and seq == 0 and stop > 1:
            stop = 1
        head, tail = b"data: " + self.token_head, self.token_tail
        for i in range(seq, stop):
            out.append(chunk(head + b"%d:%d|" % (i, stamp) + tail))
        self.seq = stop
        self.conn.upstream.tokens += stop - seq
        if stop >= n:
            out.append(self._ending())
            self.conn.transport.write(b"".join(out))
            self.finish()
            return
        if out:
            self.conn.transport.write(b"".join(out))
        if pace.hold and stop == 1 and not self.waiting_hold and self.hold_timer is None:
            self.waiting_hold = True
            self.conn.upstream.held.add(self)
            self.hold_timer = self.loop.call_later(HOLD_LIMIT, self.release)
            return
        if pace.rate <= 0:
            if not self.conn.paused:
                self.timer = self.loop.call_soon(self.tick)
            # else: Connection.resume_writing calls tick
        else:
            self.conn.upstream.schedule(self, self.due(stop))

    def release(self) -> None:
        if not self.waiting_hold:
            return
        self.waiting_hold = False
        self.conn.upstream.held.discard(self)
        if self.hold_timer is not None:
            self.hold_timer.cancel()
        if self.pace.rate > 0:
            self.start = self.loop.time() - 1 / self.pace.rate  # token 1 is due now
        self.tick()

    def _ending(self) -> bytes:
        n = self.pace.tokens
        stop = self.head + b'{},"finish_reason":"stop"}]}\n\n'
        usage = (
            b'{"id":"chatcmpl-u","object":"chat.completion.chunk","created":0,"model":"bench",'
            b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":%d,'
            b'"total_tokens":%d}}\n\n' % (n, n + 5)
        )
        return chunk(b"data: " + stop + b"data: " + usage + b"data: [DONE]\n\n") + b"0\r\n\r\n"

    def finish(self) -> None:
        self.done = True
        self.cancel()
        self.conn.upstream.finished += 1
        self.conn.stream_ended(self)

    def cancel(self) -> None:
        for handle in (self.timer, self.hold_timer):
            if handle is not None:
                handle.cancel()
        self.timer = self.hold_timer = None
        upstream = self.conn.upstream
        upstream.active.discard(self)
        upstream.held.discard(self)
        self.waiting_hold = False


class Connection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection: requests are answered one at a time."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.buffer = b""
        self.stream: TokenStream | None = None
        self.closed = False
        self.paused = False
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.stream is not None:
            self.stream.cancel()
            self.stream = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        stream = self.stream
        if stream is not None and stream.timer is None and stream.pace.rate <= 0:
            stream.tick()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.stream is None:
            self.next_request()

    def stream_ended(self, stream: TokenStream) -> None:
        if self.stream is stream:
            self.stream = None
        if self.close_after:
            self.transport.close()
        elif self.buffer:
            self.next_request()

    def next_request(self) -> None:
        while self.stream is None and not self.closed:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.fail("431 Request Header Fields Too Large")
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            parts = head[0].split(" ")
            if len(parts) != 3:
                self.fail("400 Bad Request")
                return
            method, target, _ = parts
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.fail("411 Length Required")
                return
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self.fail("400 Bad Request")
                return
            if length > MAX_BODY:
                self.fail("413 Content Too Large")
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.close_after = headers.get("connection", "").lower() == "close"
            self.handle(method, target.split("?", 1)[0], body)
            if self.close_after and self.stream is None:
                self.transport.close()
                return

    def fail(self, status: str) -> None:
        self.transport.write(response(status, error_body(status, "bad_request")))
        self.transport.close()
        self.closed = True

    def handle(self, method: str, path: str, body: bytes) -> None:
        write = self.transport.write
        upstream = self.upstream
        if method == "POST" and path.endswith("/chat/completions"):
            self.chat(body)
        elif method == "GET" and path.endswith("/models"):
            models = [model_name(50, 200), model_name(0, 2000)]
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "bench"} for m in models]
            write(response("200 OK", json.dumps({"object": "list", "data": data}).encode()))
        elif method == "POST" and path == "/bench/release":
            released = upstream.release()
            write(response("200 OK", json.dumps({"released": released}).encode()))
        elif method == "GET" and path == "/bench/stats":
            stats = {
                "started": upstream.started,
                "finished": upstream.finished,
                "active": len(upstream.active),
                "held": len(upstream.held),
                "tokens": upstream.tokens,
                "max_lag_ms": upstream.max_lag_ms,
                "max_gc_ms": upstream.max_gc_ms,
            }
            upstream.max_lag_ms, upstream.max_gc_ms = 0, 0.0
            write(response("200 OK", json.dumps(stats).encode()))
        else:
            write(response("404 Not Found", error_body("no such route", "not_found")))

    def chat(self, body: bytes) -> None:
        write = self.transport.write
        try:
            request = json.loads(body)
            model = str(request["model"])
        except (ValueError, KeyError, TypeError):
            write(response("400 Bad Request", error_body("malformed request", "bad_request")))
            return
        pace = parse_model(model)
        if pace is None:
            message = f"The model `{model}` does not exist"
            write(response("404 Not Found", error_body(message, "model_not_found")))
            return
        if not request.get("stream"):
            stamp = time.time_ns()
            text = "".join(f"{i}:{stamp}|" for i in range(pace.tokens))
            completion = {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": pace.tokens,
                    "total_tokens": pace.tokens + 5,
                },
            }
            write(response("200 OK", json.dumps(completion).encode()))
            return
        self.stream = TokenStream(self, model, pace)
        self.stream.begin()


async def serve(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    upstream = Upstream()
    server = await loop.create_server(
        lambda: Connection(upstream), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI-compatible upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    gc.freeze()  # what start-up made stays out of every collection
    with (
        asyncio.Runner(loop_factory=new_event_loop) as runner,
        contextlib.suppress(KeyboardInterrupt),
    ):
        runner.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
