"""``runnel chat``: a terminal client of a Runnel server, on ``runnel.client``.

``runnel chat "a question"`` prints one reply and exits; without a question it is an
interactive session (``/new``, ``/model``, ``/history``, ``/quit``). On a terminal the reply
is rendered as Markdown while it streams (Rich); otherwise it is written as plain text as
it arrives, so it pipes, and notes (``[stopped]``, errors) go to stderr. Ctrl-C during a
reply stops it on the server — the partial text is kept, in the conversation too, and the
reply is read to its end — and a dropped connection resumes (the client does it).

It is a client only: ``cli.py`` dispatches to it before anything of the server is
imported, and it reads no server settings.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment

from runnel.client import Client, Complete, Failed, Reply, RunnelClientError, Token, Unreachable
from runnel.client._protocol import DEFAULT_URL

HELP = "/new a new conversation · /model [M] list or pick a model · /history · /quit"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a pipe's writer killed by it
DESCRIPTION = "Talk to a Runnel server. With a question: print one reply and exit."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("RUNNEL_URL", DEFAULT_URL),
        help=f"the server (default: $RUNNEL_URL, else {DEFAULT_URL})",
    )
    parser.add_argument("--key", help="an API key or token (default: $RUNNEL_API_KEY)")
    parser.add_argument("--model", help="a model id, e.g. demo/markdown")
    parser.add_argument("--conversation", metavar="ID", help="continue this conversation")
    parser.add_argument("question", nargs="*", help="ask this, print the reply and exit")


def add_parser(commands: Any) -> None:
    """``runnel chat`` in the full ``runnel`` parser (for ``runnel --help``)."""
    configure(commands.add_parser("chat", help="talk to a Runnel server", description=DESCRIPTION))


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="runnel chat", description=DESCRIPTION)
    configure(parser)
    return run(parser.parse_args(argv))


class Output(Protocol):
    """Where a reply is shown while it streams."""

    def start(self) -> None: ...
    def piece(self, text: str) -> None: ...
    def end(self, note: str | None) -> None: ...


class PlainOutput:
    """Text as it arrives (a pipe, a file); stdout carries the reply only."""

    def start(self) -> None:
        pass

    def piece(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def end(self, note: str | None) -> None:
        sys.stdout.write("\n")
        sys.stdout.flush()
        if note:
            print(f"[{note}]", file=sys.stderr)


class Tail:
    """The reply so far as Markdown, cut to its last screenful. A live region taller than
    the terminal cannot be redrawn (what scrolled off would be printed again and again), so
    while it streams the tail is shown, and the whole reply is printed once at its end.
    Rendered by ``Live``'s refresh thread a dozen times a second, not once per token."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(Markdown("".join(self.pieces)), options, pad=False)
        lines = lines[-max(1, options.size.height - 1) :]
        for number, line in enumerate(lines, 1):
            yield from line
            if number < len(lines):
                yield Segment.line()


class MarkdownOutput:
    """The reply rendered as Markdown while it grows, on a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tail = Tail()
        self.live = Live(
            self.tail,
            console=console,
            refresh_per_second=12,
            transient=True,
            vertical_overflow="crop",
        )

    def start(self) -> None:
        self.live.start()

    def piece(self, text: str) -> None:
        self.tail.pieces.append(text)

    def end(self, note: str | None) -> None:
        self.live.stop()
        self.console.print(Markdown("".join(self.tail.pieces)))
        if note:
            self.console.print(f"[dim]\\[{note}][/dim]")


def ending(reply: Reply, stopping: bool) -> str | None:
    """The note shown after a reply that did not simply complete (or fail: that is an
    error, reported apart)."""
    end = reply.terminal
    if isinstance(end, Failed):
        return None
    if isinstance(end, Complete):
        if end.finish_reason == "stop":
            return None
        return "stopped" if end.finish_reason == "cancelled" else end.finish_reason
    return "interrupted" if stopping else "the stream ended before the reply did"


class Session:
    """One terminal's conversation with a server."""

    def __init__(
        self,
        client: Client,
        console: Console,
        plain: bool,
        model: str | None,
        conversation: str | None,
        one_shot: bool = False,
    ) -> None:
        self.client = client
        self.console = console
        self.plain = plain
        self.one_shot = one_shot
        self.model = model
        self.conversation_id = conversation

    def ask(self, question: str) -> int:
        """Send ``question`` and show the reply; the exit status it deserves."""
        if self.conversation_id is None:
            self.conversation_id = self.client.create_conversation(model=self.model)["id"]
        try:
            reply = self.client.send(self.conversation_id, question, self.model)
        except KeyboardInterrupt:
            self.stop_active()
            raise
        return self.show(reply)

    def stop_active(self) -> None:
        """Stop the reply a request left with Ctrl-C may have started anyway (best effort:
        the server may not have started it yet)."""
        if self.conversation_id is None:
            return
        with contextlib.suppress(RunnelClientError):
            active = self.client.conversation(self.conversation_id)["activeStreamId"]
            if active:
                self.client.cancel(active)

    def show(self, reply: Reply) -> int:
        """Show ``reply`` as it streams. A first Ctrl-C stops it on the server and reads on
        to its end (the server's word on what was kept); a second stops waiting."""
        output: Output = PlainOutput() if self.plain else MarkdownOutput(self.console)
        stopping = stopped = False
        note: str | None = None
        output.start()
        try:
            while True:
                try:
                    for event in reply:
                        if type(event) is Token:
                            output.piece(event.text)
                        elif stopping and not stopped and reply.stream_id is not None:
                            stopped = True  # the Ctrl-C came before the stream's id
                            reply.stop()
                    break
                except KeyboardInterrupt:
                    if stopping:
                        break
                    stopping = True
                    if reply.stream_id is not None:
                        stopped = True
                        reply.stop()
                except BrokenPipeError:
                    # the reader of a pipe left (``| head``): no one reads the rest
                    if reply.stream_id is not None and reply.terminal is None:
                        reply.stop()
                    raise
            note = ending(reply, stopping)
        finally:
            with contextlib.suppress(BrokenPipeError):
                output.end(note)
        if isinstance(reply.terminal, Failed):
            self.error(reply.terminal.code, reply.terminal.message)
            return EXIT_ERROR
        return EXIT_INTERRUPTED if stopping else EXIT_OK

    def error(self, code: str, message: str) -> None:
        """An error: on stderr for a one-shot question (stdout is the reply), else inline."""
        if self.one_shot:
            print(f"runnel chat: {code}: {message}", file=sys.stderr)
        else:
            self.console.print(f"[red]{code}[/red]: {message}", highlight=False)

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
            self.console.print(HELP, markup=False)
        return True

    def pick_model(self, model: str) -> None:
        listed = self.client.models()
        ids = [m["id"] for m in listed["data"]]
        if not model:
            current = self.model or listed["default"]
            for model_id in ids:
                mark = "*" if model_id == current else " "
                self.console.print(f"{mark} {model_id}", markup=False)
            return
        if model not in ids:
            self.console.print(f"unknown model {model!r}; /model lists them", markup=False)
            return
        self.model = model
        self.console.print(f"model {model}", style="dim", markup=False)

    def history(self) -> None:
        if self.conversation_id is None:
            self.console.print("[dim]nothing yet[/dim]")
            return
        for message in self.client.conversation(self.conversation_id)["messages"]:
            who = "you" if message["role"] == "user" else message.get("model") or "assistant"
            self.console.print(who, style="bold", markup=False)
            if self.plain:
                self.console.print(message["content"], markup=False)
            else:
                self.console.print(Markdown(message["content"]))

    def interactive(self) -> int:
        with contextlib.suppress(ImportError):
            importlib.import_module("readline")  # line editing and history for input()
        if self.conversation_id is not None:
            title = self.client.conversation(self.conversation_id).get("title") or "untitled"
            self.console.print(f"continuing {title!r}", style="dim", markup=False)
        self.console.print(f"Runnel at {self.client.url} · {HELP}", style="dim", markup=False)
        while True:
            try:
                line = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                self.console.print()
                return EXIT_OK
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if not self.command(line):
                        return EXIT_OK
                else:
                    self.ask(line)
            except RunnelClientError as exc:
                self.error(exc.code, exc.message)
            except KeyboardInterrupt:
                self.console.print("[dim]interrupted[/dim]")


def run(args: argparse.Namespace) -> int:
    plain = not sys.stdout.isatty()
    console = Console(highlight=False, force_terminal=False) if plain else Console(highlight=False)
    with Client(args.url, args.key) as client:
        one_shot = bool(args.question)
        session = Session(client, console, plain, args.model, args.conversation, one_shot)
        try:
            if one_shot:
                return session.ask(" ".join(args.question))
            return session.interactive()
        except Unreachable as exc:
            print(f"runnel chat: {exc.message}", file=sys.stderr)
            return EXIT_ERROR
        except RunnelClientError as exc:
            print(f"runnel chat: {exc.code}: {exc.message}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # Python would complain again when it flushes stdout at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
