"""The HTTP transport under the provider SDKs: aiohttp's client behind httpx2's interface.

The SDKs (``openai``, ``anthropic``, ``google-genai``) speak ``httpx2``: they build requests,
add auth, follow redirects and raise their error classes on top of an ``httpx2.AsyncClient``.
What happens below the client is its *transport*. httpx2's own reads every chunk of a
streaming body through a pure-Python HTTP/1.1 parser, a timeout context per read and
several nested generators — ~100 µs per token, more than the whole relay budget
(shared/PERFORMANCE.md, docs/performance.md). ``AiohttpTransport`` hands the request to
aiohttp instead, whose C parser (llhttp) delivers a chunk for a few µs, and returns an
``httpx2.Response`` streaming from it. Nothing above the transport changes: the SDKs keep
request building, auth and error classes, and the providers still read
``response.aiter_bytes()``.

Semantics kept from httpx2's transport: the request's connect timeout and, for the response
head, its read timeout (the body has no per-read timer, see ``handle_async_request``),
connection pooling with keep-alive, proxies from the environment
(``HTTPS_PROXY``, ``NO_PROXY``…, read once), TLS verified against the system store, the body left
encoded (httpx2 decodes ``Content-Encoding`` itself). aiohttp's exceptions become the
matching httpx2 ones, which the SDKs map to their own. Closing a response that was not
read to its end closes its connection (this is how Stop aborts an upstream request); one
read to its end returns the connection to the pool.

The aiohttp session belongs to an event loop, so it is created at the first request, on
the loop that serves the app, and closed by ``aclose``.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx2

_BODY = "runnel.body"  # the response extension that holds the aiohttp body stream
CONNECT_TIMEOUT = 10.0  # seconds to connect to an upstream, whatever its read timeout


class AiohttpTransport(httpx2.AsyncBaseTransport):
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        # read once: aiohttp's own trust_env looks proxies up in a worker thread per request
        self._proxies = urllib.request.getproxies_environment()
        self._proxy_for: dict[tuple[str, str], str | None] = {}

    def _client(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # httpx2 decodes, from the headers it is given
                trust_env=False,  # proxies: see _proxy, read once from the environment
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                raise_for_status=False,
            )
            self._session = session
        return session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        # No per-read timer: aiohttp re-arms it on every chunk received, which costs more
        # than parsing the chunk. The read timeout bounds the wait for the response head
        # here; a body that stalls is ended by what reads it (the generation watchdog's
        # stall timeout, the model list's deadline).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.get("connect"))
        payload = await request.aread()
        with _mapped(connecting=True):
            async with asyncio.timeout(timeouts.get("read")):
                response = await self._client().request(
                    request.method,
                    str(request.url),
                    headers=list(request.headers.multi_items()),
                    data=payload or None,
                    timeout=timeout,
                    allow_redirects=False,  # httpx2 follows redirects above the transport
                    proxy=self._proxy(request.url),
                    compress=None,
                )
        body = _ResponseStream(response)
        return httpx2.Response(
            response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=body,
            extensions={
                _BODY: body,
                "http_version": b"HTTP/%d.%d" % (response.version or (1, 1)),
                "reason_phrase": (response.reason or "").encode("latin-1"),
            },
        )

    def _proxy(self, url: httpx2.URL) -> str | None:
        """The proxy for ``url`` from ``HTTP(S)_PROXY``/``ALL_PROXY`` and ``NO_PROXY``, as
        httpx2 would pick it (per scheme and host, remembered)."""
        key = (url.scheme, url.host)
        if key not in self._proxy_for:
            proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
            if proxy and urllib.request.proxy_bypass(url.host):
                proxy = None
            self._proxy_for[key] = proxy
        return self._proxy_for[key]

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class _ResponseStream(httpx2.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = response.content

    async def read(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end."""
        try:
            return await self._content.readany()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # aiohttp raises a dropped connection before handing out the bytes that arrived
            # just ahead of it; they are the reply's last tokens, so deliver them first
            # (the next read raises again: the reader keeps its exception)
            if rest := _buffered(self._content):
                return rest
            raise _as_httpx2(exc, connecting=False) from exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = self.read
        while chunk := await read():
            yield chunk

    async def aclose(self) -> None:
        response = self._response
        if response.content.at_eof():
            response.release()  # read to its end: the connection goes back to the pool
        else:
            response.close()  # abandoned mid-body: close the connection, stopping the upstream


def _buffered(content: aiohttp.StreamReader) -> bytes:
    """What the reader holds but has not handed out (a private method, looked up
    defensively)."""
    read = getattr(content, "_read_nowait", None)
    if read is None:
        return b""
    try:
        data = read(-1)
    except Exception:  # noqa: BLE001 - a private reader: the original failure is what counts
        return b""
    return data if isinstance(data, bytes) else b""


@contextmanager
def _mapped(*, connecting: bool) -> Iterator[None]:
    """aiohttp's exceptions as the httpx2 exceptions the SDKs expect."""
    try:
        yield
    except httpx2.HTTPError:
        raise
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise _as_httpx2(exc, connecting=connecting) from exc


def _as_httpx2(exc: BaseException, *, connecting: bool) -> httpx2.HTTPError:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx2.ConnectError(str(exc))
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx2.ConnectTimeout(str(exc))
    if isinstance(exc, TimeoutError | aiohttp.SocketTimeoutError):
        if connecting:
            return httpx2.ReadTimeout("no response headers in time")
        return httpx2.ReadTimeout("the server stopped sending")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx2.RemoteProtocolError(str(exc))
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx2.RemoteProtocolError(str(exc) or "server disconnected")
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx2.RemoteProtocolError(str(exc))
    return httpx2.ReadError(str(exc) or type(exc).__name__)


def sdk_timeout(seconds: float) -> httpx2.Timeout:
    """An SDK's timeout: ``seconds`` to wait for the upstream, ``CONNECT_TIMEOUT`` to connect."""
    return httpx2.Timeout(seconds, connect=CONNECT_TIMEOUT)


def http_client(timeout: httpx2.Timeout | float, **kwargs: Any) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` on ``AiohttpTransport``, for an SDK's ``http_client``."""
    return httpx2.AsyncClient(
        transport=AiohttpTransport(), timeout=timeout, follow_redirects=True, **kwargs
    )


class UpstreamBody:
    """A streaming response's body: ``read()`` returns the next bytes as they arrive (``b""``
    at its end); ``aclose()`` closes the response, which aborts the upstream request when
    the body was not read to its end."""

    __slots__ = ("_close", "read")

    def __init__(
        self, read: Callable[[], Awaitable[bytes]], close: Callable[[], Awaitable[object]]
    ) -> None:
        self.read = read
        self._close = close

    async def aclose(self) -> None:
        await self._close()


def take_body(response: httpx2.Response, close: Callable[[], Awaitable[object]]) -> UpstreamBody:
    """The body of a streaming response as it arrives; ``close`` closes the response.

    From ``AiohttpTransport`` with no content encoding, the body is aiohttp's alone: each
    read is one await of aiohttp's stream reader (no generator layers between it and the
    provider), and the stream holds neither the httpx2 request and response, nor the SDK's
    wrapper, nor the request's own body — the whole prompt — which it would otherwise keep
    alive for its whole life. Otherwise the reads come from ``aiter_bytes()`` and ``close``
    closes the response."""
    body = response.extensions.get(_BODY)
    if isinstance(body, _ResponseStream) and "content-encoding" not in response.headers:
        return UpstreamBody(body.read, body.aclose)
    chunks = response.aiter_bytes()

    async def read() -> bytes:
        async for chunk in chunks:
            if chunk:
                return chunk
        return b""

    return UpstreamBody(read, close)
