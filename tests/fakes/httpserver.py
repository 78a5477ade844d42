"""The raw HTTP/1.1 machinery shared by the fake provider servers (OpenAI, Anthropic, Gemini).

Each fake is a ``FakeServer`` subclass that routes requests and writes its provider's wire
format; this module owns the sockets, the recording of every request and of when its
connection closed, and the ``Script`` that says how a model answers. It is a raw
``asyncio.start_server`` server rather than an app on a web framework because the tests need
to control every byte on the wire (chunk framing, hand-made SSE frames, abrupt closes,
deliberately split writes) and to see the exact moment the client goes away, which frameworks
hide behind their own buffering and error handling. It runs its own event loop in a daemon
thread, so it serves sync tests and tests that call ``asyncio.run`` alike.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import http
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson

PROMPT_TOKENS = 11
_HEAD_LIMIT = 64 * 1024
_READ_SIZE = 64 * 1024
_SPLIT_PAUSE = 0.01
_START_TIMEOUT = 5.0
_STOP_TIMEOUT = 5.0
STREAM_HEADERS = (
    ("content-type", "text/event-stream; charset=utf-8"),
    ("transfer-encoding", "chunked"),
    ("cache-control", "no-cache"),
)


def default_tokens() -> list[str | bytes]:
    return ["Hello", ",", " world", "!"]


@dataclass
class Script:
    """How a fake answers one generation request, in any provider's wire format.

    A ``str`` token becomes one text delta event of the provider's stream; a ``bytes`` token
    is written as-is as its own HTTP chunk of the SSE body (for garbage or hand-made frames).
    ``delay`` separates consecutive token chunks; the finish, usage and end events follow the
    last token at once. ``drop_after`` closes the connection after that many token chunks (a
    value of at least ``len(tokens)`` drops it right before the finish event); for a
    non-streaming request it closes the connection instead of replying. ``error_after``
    sends the provider's in-stream error event (a retryable "overloaded" error) after that
    many token chunks and ends the stream. A non-streaming reply is sent after
    ``headers_delay + first_delay + delay * (len(tokens) - 1)``.

    ``finish_reason`` and ``usage`` are in the provider's own terms; None means its normal
    stop and the default usage (``PROMPT_TOKENS`` prompt tokens, one completion token per
    ``str`` token). ``status`` other than 200 answers with that HTTP error and
    ``error_body`` (else the provider's usual body for that status) and ``retry_after``.
    ``refuse_streaming`` answers a streaming request with the 400 error an
    OpenAI-compatible server gives when it cannot stream.
    """

    tokens: list[str | bytes] = field(default_factory=default_tokens)
    delay: float = 0.0
    first_delay: float = 0.0
    headers_delay: float = 0.0
    status: int = 200
    error_body: dict[str, Any] | None = None
    retry_after: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    drop_after: int | None = None
    error_after: int | None = None
    refuse_streaming: bool = False
    split_utf8: bool = False
    done: bool = True


@dataclass
class RecordedRequest:
    """One request as the fake received it, and what became of its connection.

    ``closed`` is set once the connection that carried the request is closed, by either side.
    ``closed_by_client`` is True only when the client hung up before the reply was complete.
    ``closed_at`` is when the client's EOF or reset was seen (also for a kept-alive connection
    the client closed later); it stays None when the server closed the connection.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float
    closed_at: float | None = None
    closed: threading.Event = field(default_factory=threading.Event)
    closed_by_client: bool = False
    chunks_sent: int = 0  # token chunks written so far (streaming replies)
    connection: int = 0  # which connection carried it: 1 for the first one accepted, ...


def _mark_closed(record: RecordedRequest, *, by_client: bool, at: float | None) -> None:
    if record.closed.is_set():
        return
    record.closed_by_client = by_client
    record.closed_at = at
    record.closed.set()


class BadRequest(Exception):
    """The client sent bytes that are not HTTP/1.1; the connection is dropped."""


class Outcome(enum.Enum):
    DONE = "done"  # the reply is complete; the connection may carry another request
    SERVER_CLOSED = "server_closed"  # the script hung up on purpose
    CLIENT_GONE = "client_gone"  # the client closed or reset the connection first


@dataclass
class HttpRequest:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes


class Connection:
    """One client socket. A pump task reads it continuously, so a hang-up is seen at any time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._buffer = bytearray()
        self._changed = asyncio.Event()
        self.eof = asyncio.Event()
        self.eof_at: float | None = None
        self.keep_alive = True
        self.records: list[RecordedRequest] = []
        self.number = 0
        self._pump = asyncio.create_task(self._read_forever())

    async def _read_forever(self) -> None:
        try:
            while data := await self._reader.read(_READ_SIZE):
                self._buffer += data
                self._changed.set()
        except OSError:
            pass
        self.eof_at = time.monotonic()
        self.eof.set()
        self._changed.set()

    async def _wait_for_data(self) -> bool:
        if self.eof.is_set():
            return False
        self._changed.clear()
        await self._changed.wait()
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read_until(self, separator: bytes) -> bytes | None:
        """The bytes up to and including ``separator``; None if the client closed first."""
        while (index := self._buffer.find(separator)) < 0:
            if len(self._buffer) > _HEAD_LIMIT:
                raise BadRequest("line too long")
            if not await self._wait_for_data():
                return None
        return self._take(index + len(separator))

    async def read_exactly(self, size: int) -> bytes | None:
        """Exactly ``size`` bytes; None if the client closed first."""
        while len(self._buffer) < size:
            if not await self._wait_for_data():
                return None
        return self._take(size)

    async def write(self, data: bytes) -> None:
        if self._writer.transport.is_closing():
            raise ConnectionResetError("connection already closed")
        self._writer.write(data)
        await self._writer.drain()

    def close(self, *, abort: bool = False) -> None:
        """Close the socket, flushing what was written unless ``abort``."""
        self._pump.cancel()
        if abort:
            self._writer.transport.abort()
        else:
            self._writer.close()


class FakeServer:
    """A fake provider server on 127.0.0.1, on its own event loop in a daemon thread.

    Subclasses implement ``_route``: answer one request, picking the model's script with
    ``_pick_script``."""

    def __init__(self) -> None:
        self.default = Script()
        self.models: list[str] = []
        self.requests: list[RecordedRequest] = []
        self._scripts: dict[str, Script] = {}
        self._queues: dict[str, collections.deque[Script]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._port: int | None = None
        self._failure: BaseException | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._accepted = 0
        self._errors: list[dict[str, Any]] = []  # the fake's own bugs, kept quiet but inspectable

    # -- public API -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    def script(self, model: str, script: Script) -> None:
        with self._lock:
            self._scripts[model] = script

    def queue(self, model: str, *scripts: Script) -> None:
        with self._lock:
            self._queues.setdefault(model, collections.deque()).extend(scripts)

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        self._ready.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"fake-{type(self).__name__}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"{type(self).__name__} did not start listening in time")
        if self._failure is not None:
            self._thread = None
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._failure
        return self

    def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        thread.join(_STOP_TIMEOUT)
        self._thread = None
        self._loop = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- event loop and connections -----------------------------------------------------------

    def _run(self) -> None:
        self._failure = None
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # start() reports it; the thread must not print
            self._failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            await self._close_connections()
            await server.wait_closed()

    async def _close_connections(self) -> None:
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await asyncio.sleep(0)  # let the closed transports release their sockets

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self._errors.append(context)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = Connection(reader, writer)
        with self._lock:
            self._accepted += 1
            conn.number = self._accepted
        stopping = False
        try:
            await self._serve(conn)
        except asyncio.CancelledError:
            stopping = True  # stop(): end quietly so asyncio's done-callback logs nothing
        except Exception as exc:  # a bug in the fake: kept in _errors, never printed
            self._errors.append({"message": "connection handler failed", "exception": exc})
        finally:
            self._handlers.discard(task)
            conn.close(abort=stopping)  # a client that stopped reading must not delay stop()
            for record in conn.records:
                _mark_closed(record, by_client=False, at=conn.eof_at)

    async def _serve(self, conn: Connection) -> None:
        while True:
            try:
                request = await _read_request(conn)
            except BadRequest:
                return
            if request is None:
                return
            record = self._record(request)
            record.connection = conn.number
            conn.records.append(record)
            conn.keep_alive = _wants_keep_alive(request)
            outcome = await self._reply_watching_hangup(conn, request, record)
            if outcome is Outcome.CLIENT_GONE:
                _mark_closed(record, by_client=True, at=conn.eof_at or time.monotonic())
            if outcome is not Outcome.DONE or not conn.keep_alive:
                return

    def _record(self, request: HttpRequest) -> RecordedRequest:
        record = RecordedRequest(
            method=request.method,
            path=request.target,
            headers=request.headers,
            body=parse_json_object(request.body) or {},
            received_at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(record)
        return record

    async def _reply_watching_hangup(
        self, conn: Connection, request: HttpRequest, record: RecordedRequest
    ) -> Outcome:
        """Write the reply while watching the socket; a client hang-up cancels the writing."""
        reply = asyncio.create_task(self._route(conn, request, record))
        hangup = asyncio.create_task(conn.eof.wait())
        try:
            await asyncio.wait((reply, hangup), return_when=asyncio.FIRST_COMPLETED)
        finally:
            reply.cancel()
            hangup.cancel()
            await asyncio.gather(reply, hangup, return_exceptions=True)
        if reply.cancelled():
            return Outcome.CLIENT_GONE
        error = reply.exception()
        if isinstance(error, OSError):
            return Outcome.CLIENT_GONE
        if error is not None:
            raise error
        return reply.result()

    # -- routes -------------------------------------------------------------------------------

    async def _route(
        self, conn: Connection, request: HttpRequest, record: RecordedRequest
    ) -> Outcome:
        raise NotImplementedError

    def _pick_script(self, model: str) -> Script:
        with self._lock:
            queued = self._queues.get(model)
            if queued:
                return queued.popleft()
            return self._scripts.get(model, self.default)


# -- writing replies -----------------------------------------------------------------------


async def send_json(
    conn: Connection, status: int, payload: object, extra: Sequence[tuple[str, str]] = ()
) -> Outcome:
    body = orjson.dumps(payload)
    headers = (("content-type", "application/json"), ("content-length", str(len(body))), *extra)
    await conn.write(head(status, headers, conn.keep_alive) + body)
    return Outcome.DONE


async def send_chunk(conn: Connection, payload: bytes, split_utf8: bool) -> None:
    """Write ``payload`` as one HTTP chunk, optionally torn in two inside a UTF-8 character."""
    if not payload:
        return  # an empty chunk would end the chunked body
    size_line = b"%x\r\n" % len(payload)
    frame = size_line + payload + b"\r\n"
    if not split_utf8:
        await conn.write(frame)
        return
    cut = len(size_line) + _split_point(payload)
    await conn.write(frame[:cut])
    await asyncio.sleep(_SPLIT_PAUSE)
    await conn.write(frame[cut:])


def _split_point(payload: bytes) -> int:
    """An index inside the first multi-byte UTF-8 character, else the middle."""
    for index, byte in enumerate(payload):
        if byte >= 0xC0:  # the lead byte of a multi-byte sequence
            return index + 1
    return max(len(payload) // 2, 1)


def head(status: int, headers: Sequence[tuple[str, str]], keep_alive: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {reason(status)}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


async def pause(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


# -- request parsing --------------------------------------------------------------------------


async def _read_request(conn: Connection) -> HttpRequest | None:
    """The next request on the connection; None once the client closed it."""
    head = await conn.read_until(b"\r\n\r\n")
    if head is None:
        return None
    request_line, *header_lines = head.decode("latin-1").strip().split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise BadRequest(request_line)
    method, target, version = parts
    headers = _parse_headers(header_lines)
    body = await _read_body(conn, headers)
    if body is None:
        return None
    return HttpRequest(method, target, version, headers, body)


def _parse_headers(lines: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise BadRequest(line)
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return headers


async def _read_body(conn: Connection, headers: dict[str, str]) -> bytes | None:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked_body(conn)
    length = headers.get("content-length", "0")
    try:
        size = int(length)
    except ValueError:
        raise BadRequest(f"content-length: {length}") from None
    return await conn.read_exactly(size)


async def _read_chunked_body(conn: Connection) -> bytes | None:
    body = bytearray()
    while True:
        size_line = await conn.read_until(b"\r\n")
        if size_line is None:
            return None
        size = _chunk_size(size_line)
        if size == 0:
            break
        data = await conn.read_exactly(size + 2)
        if data is None:
            return None
        body += data[:-2]
    while True:  # optional trailer fields, then the empty line
        line = await conn.read_until(b"\r\n")
        if line is None:
            return None
        if line == b"\r\n":
            return bytes(body)


def _chunk_size(line: bytes) -> int:
    try:
        return int(line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise BadRequest(f"chunk size {line!r}") from None


def parse_json_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object in ``raw`` ({} when empty); None when it is not a JSON object."""
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _wants_keep_alive(request: HttpRequest) -> bool:
    tokens = {token.strip().lower() for token in request.headers.get("connection", "").split(",")}
    if request.version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens
