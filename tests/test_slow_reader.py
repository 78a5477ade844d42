"""A reader that stops reading costs bounded memory, is dropped, and slows no one else."""

from __future__ import annotations

import socket
import time

import httpx2

from tests.conftest import ServeFactory
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.helpers import new_conversation, wait_for_reply
from tests.sse_client import stream

TOKEN = "x" * 2000
COUNT = 4000  # ~8 MB of text: far more than the kernel's socket buffers hold


def test_a_stalled_reader_is_bounded_and_isolated(
    serve: ServeFactory, fake_openai: FakeOpenAI
) -> None:
    server = serve(send_timeout=1.5)
    fake_openai.script("big", Script(tokens=[TOKEN] * COUNT))
    fake_openai.script("small", Script(tokens=["ok"] * 20, delay=0.01))
    host, port = server.url.removeprefix("http://").split(":")
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        stalled_cid = new_conversation(client)
        other_cid = new_conversation(client)

        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((host, int(port)))
        body = b'{"content": "big", "model": "openai/big"}'
        stalled.sendall(
            b"POST /api/v1/conversations/%s/messages HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"accept: text/event-stream\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (stalled_cid.encode(), len(body), body)
        )
        try:
            # the generation runs to the end although its only reader reads nothing
            message = wait_for_reply(client, stalled_cid)
            assert message["status"] == "complete"
            assert len(message["content"]) == len(TOKEN) * COUNT

            # what the server buffers for the stalled reader stays small
            buffered = [
                c.transport.get_write_buffer_size()
                for c in server.server.server_state.connections
                if not c.transport.is_closing()
            ]
            assert max(buffered, default=0) < 2_000_000

            # another stream is unaffected
            t = stream(
                client,
                "POST",
                f"/api/v1/conversations/{other_cid}/messages",
                json={"content": "hi", "model": "openai/small"},
            )
            assert t.terminal.data["finishReason"] == "stop"
            assert t.text == "ok" * 20

            # after send_timeout the server gives up on the stalled reader
            deadline = time.monotonic() + 20
            received = 0
            stalled.settimeout(20)
            time.sleep(2)
            while time.monotonic() < deadline:
                chunk = stalled.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
            else:
                raise AssertionError("the stalled connection was never closed")
            assert received < len(TOKEN) * COUNT
        finally:
            stalled.close()
