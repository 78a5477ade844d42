"""``runnel chat`` driven as a person would: in a pseudo-terminal (a real tty, so Ctrl-C is
the terminal's SIGINT and the reply is rendered by Rich), and through a pipe."""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from rich.console import Console
from rich.markdown import Markdown

from runnel.providers.demo import demo_reply
from tests.conftest import ServeFactory
from tests.proxy import CuttingProxy
from tests.server import RunningServer

# CSI sequences, OSC sequences (Rich's hyperlinks end with ST: ESC, backslash), and CRs
ANSI = re.compile(rb"\x1b\[[0-9;?]*[a-zA-Z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\r")
COLUMNS = 100


def chat_command(server: RunningServer, *args: str) -> list[str]:
    return [sys.executable, "-m", "runnel", "chat", "--url", server.url, *args]


class Terminal:
    """A process on the slave side of a pty (its controlling terminal); we hold the master."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = os.openpty()
        os.set_blocking(master, False)

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        env = {**os.environ, "COLUMNS": str(COLUMNS), "LINES": "40", "TERM": "xterm-256color"}
        env.pop("RUNNEL_API_KEY", None)
        self.process = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=controlling_tty,
            env=env,
            close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.output = b""

    def read(self, timeout: float = 0.1) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                while chunk := os.read(self.master, 65536):
                    self.output += chunk
            except (BlockingIOError, OSError):
                pass

    def text(self) -> str:
        return ANSI.sub(b"", self.output).decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30.0, start: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while pattern not in self.text()[start:]:
            assert self.process.poll() is None or time.monotonic() < deadline, self.text()
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.text()}"
            self.read()

    def wait_for_prompt(self, count: int) -> None:
        """Wait for the ``count``-th prompt: readline has the terminal then, so a control
        character is read as typed (sent earlier, while the terminal was still in canonical
        mode, an EOF would turn into a NUL byte when readline switches the mode)."""
        deadline = time.monotonic() + 30.0
        while self.text().count("you> ") < count:
            assert time.monotonic() < deadline, f"no prompt {count} in:\n{self.text()}"
            self.read()

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> int:
        """Wait for the process to end (reading what it writes meanwhile); its status."""
        deadline = time.monotonic() + 30
        try:
            while self.process.poll() is None:
                assert time.monotonic() < deadline, f"still running:\n{self.text()}"
                self.read()
            self.read(0)
        finally:
            os.close(self.master)
        return self.process.returncode


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        if term.process.poll() is None:
            term.process.kill()
            term.process.wait()


def conversations(server: RunningServer) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = httpx2.get(f"{server.url}/api/v1/conversations").json()["data"]
    return listed


def messages(server: RunningServer, conversation_id: str) -> list[dict[str, Any]]:
    body = httpx2.get(f"{server.url}/api/v1/conversations/{conversation_id}").json()
    found: list[dict[str, Any]] = body["messages"]
    return found


def test_one_question_through_a_pipe_prints_plain_text(server: RunningServer) -> None:
    done = subprocess.run(
        chat_command(server, "What is SSE?"), capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    reply = "".join(demo_reply("What is SSE?", server.settings.demo_reply_tokens))
    assert done.stdout.decode() == reply + "\n"
    assert b"\x1b[" not in done.stdout
    (conversation,) = conversations(server)
    assert messages(server, conversation["id"])[-1]["content"] == reply


def test_a_dropped_connection_resumes(serve: ServeFactory) -> None:
    """Cut again and again, the printed reply is the whole reply, each token once."""
    server = serve(demo_tokens_per_second=800.0, demo_reply_tokens=300)
    port = int(server.url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, low=300, high=2500, seed=11).start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "runnel", "chat", "--url", proxy.url, "Cut me"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    assert proxy.cuts >= 2
    assert done.stdout.decode() == "".join(demo_reply("Cut me", 300)) + "\n"


def test_a_closed_pipe_stops_the_reply(serve: ServeFactory) -> None:
    """``runnel chat … | head``: when the reader goes, the reply stops on the server, with
    no traceback."""
    server = serve(demo_tokens_per_second=40.0, demo_reply_tokens=400)
    process = subprocess.Popen(
        chat_command(server, "Pipe me"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stdout.read(20)
    process.stdout.close()
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 141
    assert errors == b""
    (conversation,) = conversations(server)
    deadline = time.monotonic() + 30
    while (reply := messages(server, conversation["id"])[-1])["status"] == "streaming":
        assert time.monotonic() < deadline, "the reply did not stop"
        time.sleep(0.05)
    assert reply["status"] == "cancelled"


def test_a_question_to_an_unknown_model_fails_cleanly(server: RunningServer) -> None:
    done = subprocess.run(
        chat_command(server, "--model", "demo/nope", "hi"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert b"MODEL_NOT_FOUND" in done.stderr
    assert done.stdout == b""
    assert conversations(server) == []


def test_continuing_a_conversation(server: RunningServer) -> None:
    first = subprocess.run(
        chat_command(server, "first"), capture_output=True, timeout=60, check=True
    )
    (conversation,) = conversations(server)
    subprocess.run(
        chat_command(server, "--conversation", conversation["id"], "second"),
        capture_output=True,
        timeout=60,
        check=True,
    )
    contents = [m["content"] for m in messages(server, conversation["id"])]
    assert contents[0] == "first"
    assert contents[1] + "\n" == first.stdout.decode()
    assert contents[2] == "second"


def rendered(markdown: str) -> str:
    """``markdown`` as Rich renders it on a terminal as wide as the test's, colours aside."""
    out = io.StringIO()
    Console(file=out, width=COLUMNS, color_system=None, highlight=False).print(Markdown(markdown))
    return trimmed(out.getvalue())


def trimmed(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines())


def test_one_question_in_a_terminal(server: RunningServer, terminal: list[Terminal]) -> None:
    term = Terminal(chat_command(server, "Render this"))
    terminal.append(term)
    term.wait_for("Hello from Runnel")  # the "## Hello from Runnel" heading, rendered
    assert term.close() == 0
    assert "## Hello" not in term.text()  # Markdown, not its source
    (conversation,) = conversations(server)
    reply = messages(server, conversation["id"])[-1]
    assert reply["status"] == "complete"
    # the whole reply is printed, rendered, at the end (while it streamed, its tail was)
    assert trimmed(term.text()).endswith(rendered(reply["content"]))


def test_ctrl_c_stops_a_one_shot_question(serve: ServeFactory, terminal: list[Terminal]) -> None:
    server = serve(demo_tokens_per_second=20.0, demo_reply_tokens=400)
    term = Terminal(chat_command(server, "Stop soon"))
    terminal.append(term)
    term.wait_for("Hello from Runnel")
    term.send(b"\x03")
    assert term.close() == 130
    assert "[stopped]" in term.text()
    (conversation,) = conversations(server)
    reply = messages(server, conversation["id"])[-1]
    assert reply["status"] == "cancelled"
    assert reply["content"]
    assert trimmed(term.text()).endswith(rendered(reply["content"]) + "\n[stopped]")


def test_ctrl_c_at_the_prompt_ends_the_session(
    server: RunningServer, terminal: list[Terminal]
) -> None:
    term = Terminal(chat_command(server))
    terminal.append(term)
    term.wait_for("you>")
    term.send(b"\x03")
    assert term.close() == 0
    assert "Traceback" not in term.text()


def test_runnel_chat_is_a_client_only() -> None:
    """``runnel chat`` imports nothing of the server (it starts fast, needs no settings);
    a server that is not there is an error message, not a traceback."""
    script = (
        "import sys\n"
        "from runnel.cli import main\n"
        "code = main(['chat', '--url', 'http://127.0.0.1:9', 'hi'])\n"
        "server = ('runnel.api', 'runnel.store', 'runnel.settings', 'runnel.generation',\n"
        "          'uvicorn', 'fastapi', 'sqlalchemy')\n"
        "print(code, sorted(m for m in sys.modules if m.startswith(server)))\n"
    )
    env = {**os.environ, "RUNNEL_DATABASE_URL": "not a database url"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=False, env=env
    )
    assert done.stdout.decode().split("\n")[0] == "1 []", done.stderr
    assert b"runnel chat: no answer from http://127.0.0.1:9" in done.stderr
    assert b"Traceback" not in done.stderr


def test_ctrl_c_stops_the_reply_on_the_server(
    serve: ServeFactory, terminal: list[Terminal]
) -> None:
    server = serve(demo_tokens_per_second=20.0, demo_reply_tokens=400)
    term = Terminal(chat_command(server))
    terminal.append(term)
    term.wait_for("you>")
    term.send(b"Tell me everything\r")
    term.wait_for("Hello from Runnel")
    term.send(b"\x03")  # Ctrl-C: the terminal sends SIGINT
    term.wait_for("[stopped]")
    start = term.text().index("[stopped]")
    term.wait_for("you>", start=start)
    (conversation,) = conversations(server)
    reply = messages(server, conversation["id"])[-1]
    assert reply["status"] == "cancelled"
    assert reply["finishReason"] == "cancelled"
    assert reply["content"]
    whole = "".join(demo_reply("Tell me everything", 400))
    assert whole.startswith(reply["content"])
    assert len(reply["content"]) < len(whole)
    # the session goes on: /history shows the stopped reply, /quit ends it
    term.send(b"/history\r")
    term.wait_for("Tell me everything", start=start)
    term.send(b"/quit\r")
    assert term.close() == 0


def test_commands(server: RunningServer, terminal: list[Terminal]) -> None:
    term = Terminal(chat_command(server))
    terminal.append(term)
    term.wait_for_prompt(1)
    term.send(b"/model\r")
    term.wait_for("* demo/markdown")
    term.wait_for_prompt(2)
    term.send(b"/model demo/nope\r")
    term.wait_for("unknown model 'demo/nope'")
    term.wait_for_prompt(3)
    term.send(b"one\r")
    term.wait_for_prompt(4)
    assert "Hello from Runnel" in term.text()
    term.send(b"/new\r")
    term.wait_for("a new conversation")
    term.wait_for_prompt(5)
    term.send(b"two\r")
    term.wait_for_prompt(6)
    assert term.text().count("Hello from Runnel") >= 2
    term.send(b"\x04")  # EOF at the prompt ends the session
    assert term.close() == 0
    assert len(conversations(server)) == 2
