"""``runnel chat``: a terminal client of a Runnel server, on ``runnel.client``.

``runnel chat "a question"`` prints one reply and exits; without a question it is an
interactive session (``/new``, ``/model``, ``/history``, ``/quit``). On a terminal the reply
is rendered as Markdown while it streams (Rich); otherwise it is written as plain text as
it arrives, so it pipes. Ctrl-C during a reply stops it on the server — the partial text is
kept, in the conversation too — and a dropped connection resumes (the client does it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any, Protocol, TextIO

import httpx2
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown

from runnel.client import Client, Complete, Failed, Reply, RunnelClientError, Token
from runnel.client._protocol import DEFAULT_URL

HELP = "/new a new conversation · /model [M] list or pick a model · /history · /quit"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a pipe's writer killed by it


def add_parser(commands: Any) -> None:
    chat = commands.add_parser(
        "chat",
        help="talk to a Runnel server from the terminal",
        description="Talk to a Runnel server. With a question: print one reply and exit.",
    )
    chat.add_argument("--url", default=os.environ.get("RUNNEL_URL", DEFAULT_URL))
    chat.add_argument("--key", help="an API key or token (default: $RUNNEL_API_KEY)")
    chat.add_argument("--model", help="a model id, e.g. demo/markdown")
    chat.add_argument("--conversation", help="continue this conversation (its id)")
    chat.add_argument("question", nargs="*", help="ask this, print the reply and exit")


class Output(Protocol):
    """Where a reply is shown while it streams."""

    def start(self) -> None: ...
    def update(self, text: str, piece: str) -> None: ...
    def end(self, note: str | None) -> None: ...


class PlainOutput:
    """Text as it arrives (a pipe, a file, a dumb terminal)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def start(self) -> None:
        pass

    def update(self, text: str, piece: str) -> None:
        self.stream.write(piece)
        self.stream.flush()

    def end(self, note: str | None) -> None:
        self.stream.write("\n")
        if note:
            self.stream.write(f"[{note}]\n")
        self.stream.flush()


class MarkdownOutput:
    """The reply rendered as Markdown, re-rendered as it grows (at most ~12 times a second)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None

    def start(self) -> None:
        self.live = Live(
            Markdown(""),
            console=self.console,
            refresh_per_second=12,
            vertical_overflow="visible",
        )
        self.live.start()

    def update(self, text: str, piece: str) -> None:
        assert self.live is not None
        self.live.update(Markdown(text))

    def end(self, note: str | None) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        if note:
            self.console.print(f"[dim]\\[{note}][/dim]")


class Session:
    """One terminal's conversation with a server."""

    def __init__(
        self,
        client: Client,
        console: Console,
        plain: bool,
        model: str | None,
        conversation: str | None,
    ) -> None:
        self.client = client
        self.console = console
        self.plain = plain
        self.model = model
        self.conversation_id = conversation

    def output(self) -> Output:
        return PlainOutput(sys.stdout) if self.plain else MarkdownOutput(self.console)

    def ask(self, question: str) -> int:
        """Send ``question`` and show the reply; the exit status it deserves."""
        if self.conversation_id is None:
            self.conversation_id = self.client.create_conversation(model=self.model)["id"]
        reply = self.client.send(self.conversation_id, question, self.model)
        return self.show(reply)

    def show(self, reply: Reply) -> int:
        output = self.output()
        output.start()
        interrupted = False
        note: str | None = None
        try:
            while True:
                try:
                    for event in reply:
                        if isinstance(event, Token):
                            output.update(reply.text, event.text)
                    break
                except BrokenPipeError:
                    # the reader of a pipe left (``| head``): no one reads the rest
                    if reply.stream_id is not None and reply.terminal is None:
                        reply.stop()
                    raise
                except KeyboardInterrupt:
                    if interrupted:  # a second Ctrl-C: stop waiting for the end
                        break
                    interrupted = True
                    if reply.stream_id is not None:
                        reply.stop()  # on the server; the loop reads on to the end
            end = reply.terminal
            if isinstance(end, Failed):
                note = f"error {end.code}: {end.message}"
            elif isinstance(end, Complete) and end.finish_reason != "stop":
                note = "stopped" if end.finish_reason == "cancelled" else end.finish_reason
        finally:
            with contextlib.suppress(BrokenPipeError):
                output.end(note)
        if isinstance(reply.terminal, Failed):
            return EXIT_ERROR
        return EXIT_INTERRUPTED if interrupted else 0

    # commands

    def command(self, line: str) -> bool:
        """Run a ``/command``; False for ``/quit``."""
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        if name in ("/quit", "/exit"):
            return False
        if name == "/new":
            self.conversation_id = None
            self.console.print("[dim]a new conversation[/dim]")
        elif name == "/model":
            self.pick_model(argument)
        elif name == "/history":
            self.history()
        else:
            self.console.print(HELP)
        return True

    def pick_model(self, model: str) -> None:
        listed = self.client.models()
        ids = [m["id"] for m in listed["data"]]
        if not model:
            current = self.model or listed["default"]
            for model_id in ids:
                mark = "*" if model_id == current else " "
                self.console.print(f"{mark} {model_id}", markup=False, highlight=False)
            return
        if model not in ids:
            self.console.print(f"unknown model {model!r}; /model lists them", markup=False)
            return
        self.model = model
        self.console.print(f"[dim]model {model}[/dim]")

    def history(self) -> None:
        if self.conversation_id is None:
            self.console.print("[dim]nothing yet[/dim]")
            return
        for message in self.client.conversation(self.conversation_id)["messages"]:
            who = "you" if message["role"] == "user" else message.get("model") or "assistant"
            self.console.print(f"[bold]{who}[/bold]")
            if self.plain:
                self.console.print(message["content"], markup=False, highlight=False)
            else:
                self.console.print(Markdown(message["content"]))

    def interactive(self) -> int:
        self.console.print(f"[dim]Runnel at {self.client.url} · {HELP}[/dim]")
        while True:
            try:
                line = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                self.console.print()
                return 0
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if not self.command(line):
                        return 0
                    continue
                self.ask(line)
            except RunnelClientError as exc:
                self.console.print(f"[red]{exc.code}[/red]: {exc.message}", highlight=False)
            except httpx2.TransportError as exc:
                self.console.print(f"[red]cannot reach {self.client.url}[/red] ({exc})")


def run(args: argparse.Namespace) -> int:
    plain = not sys.stdout.isatty()
    console = Console(highlight=False, force_terminal=None if not plain else False)
    with Client(args.url, args.key) as client:
        session = Session(client, console, plain, args.model, args.conversation)
        try:
            if args.question:
                return session.ask(" ".join(args.question))
            return session.interactive()
        except RunnelClientError as exc:
            print(f"runnel chat: {exc.code}: {exc.message}", file=sys.stderr)
            return EXIT_ERROR
        except httpx2.TransportError as exc:
            print(f"runnel chat: cannot reach {args.url} ({exc})", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # Python would complain again when it flushes stdout at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
