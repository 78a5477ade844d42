"""The aiohttp transport under the SDKs (providers/transport.py), against raw sockets: what
it must keep of httpx2's behaviour — decoding, errors, timeouts, keep-alive — and the bytes
that arrive just before a connection drops."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Awaitable, Callable

import httpx2
import pytest

from runnel.providers.transport import UpstreamBody, http_client, take_body

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if length:
        await reader.readexactly(length)
    return head


async def with_server(handler: Handler, test: Callable[[str], Awaitable[None]]) -> None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await test(f"http://127.0.0.1:{port}")
    finally:
        server.close()
        await asyncio.sleep(0.05)  # let closed transports release their sockets


async def read_all(body: UpstreamBody) -> list[bytes]:
    parts = []
    while part := await body.read():
        parts.append(part)
    return parts


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_a_streamed_body_arrives_whole_and_the_connection_is_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await read_head(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(chunk(b"data: one\n\n") + chunk(b"data: two\n\n") + b"0\r\n\r\n")
            await writer.drain()
        writer.close()

    async def test(url: str) -> None:
        async with http_client(10.0) as client:
            for _ in range(3):
                async with client.stream("POST", url, content=b"{}") as response:
                    body = b"".join(await read_all(take_body(response, response.aclose)))
                    assert body == b"data: one\n\ndata: two\n\n"
        assert connections == 1

    asyncio.run(with_server(handler, test))


def test_an_encoded_body_is_decoded() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        packed = gzip.compress(b"data: squeezed\n\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
            % (len(packed), packed)
        )
        await writer.drain()
        writer.close()

    async def test(url: str) -> None:
        async with http_client(10.0) as client, client.stream("GET", url) as response:
            body = b"".join(await read_all(take_body(response, response.aclose)))
        assert body == b"data: squeezed\n\n"

    asyncio.run(with_server(handler, test))


def test_bytes_that_arrive_with_a_dropped_connection_are_delivered_first() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(chunk(b"data: last words\n\n"))
        await writer.drain()
        writer.transport.abort()  # no terminating chunk: the body is cut

    received: list[bytes] = []

    async def read_into(body: UpstreamBody) -> None:
        while part := await body.read():
            received.append(part)

    async def test(url: str) -> None:
        async with http_client(10.0) as client, client.stream("GET", url) as response:
            with pytest.raises(httpx2.TransportError):
                await read_into(take_body(response, response.aclose))
        assert b"".join(received) == b"data: last words\n\n"

    asyncio.run(with_server(handler, test))


def test_no_response_head_in_time_is_a_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        try:
            await reader.read()  # never answers; returns when the client hangs up
        finally:
            writer.close()

    async def test(url: str) -> None:
        async with http_client(httpx2.Timeout(0.2, connect=5.0)) as client:
            with pytest.raises(httpx2.ReadTimeout):
                await client.get(url)

    asyncio.run(with_server(handler, test))


def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def test() -> None:
        async with http_client(5.0) as client:
            with pytest.raises(httpx2.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")

    asyncio.run(test())


def test_closing_a_response_mid_body_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(chunk(b"data: first\n\n"))
        await writer.drain()
        await reader.read()  # returns at EOF: the client hung up
        writer.close()
        await writer.wait_closed()
        closed.set()

    async def test(url: str) -> None:
        async with http_client(10.0) as client:
            async with client.stream("GET", url) as response:
                assert await take_body(response, response.aclose).read() == b"data: first\n\n"
            await asyncio.wait_for(closed.wait(), 1.0)

    asyncio.run(with_server(handler, test))


def test_requests_go_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain-HTTP proxy (it receives the absolute URL); NO_PROXY hosts go direct."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        seen.append(head.split(b"\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def test(url: str) -> None:
        monkeypatch.setenv("HTTP_PROXY", url)
        monkeypatch.setenv("NO_PROXY", "direct.invalid")
        async with http_client(5.0) as client:
            response = await client.get("http://upstream.invalid/v1/models")
            assert response.text == "ok"
            with pytest.raises(httpx2.ConnectError):
                await client.get("http://direct.invalid/v1/models")
        assert seen == [b"GET http://upstream.invalid/v1/models HTTP/1.1"]

    asyncio.run(with_server(proxy, test))
