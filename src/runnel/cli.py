"""``runnel serve``: start uvicorn on the app (one process, or ``--workers N``). The drain
on SIGTERM is the app's own (``runnel.api.signals``).

``runnel chat`` (``chat_cli``) is a client: ``main`` hands it its arguments before anything
of the server is imported or configured, so it reads no server settings and starts in a
fraction of the time. That is why the server's modules are imported inside the functions
that need them, not at the top of this one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runnel import __version__, chat_cli

if TYPE_CHECKING:
    from runnel.settings import Settings

log = logging.getLogger("runnel")


def build_parser() -> argparse.ArgumentParser:
    from runnel import users_cli

    parser = argparse.ArgumentParser(prog="runnel", description="Runnel chat server")
    parser.add_argument("--version", action="version", version=f"runnel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (more than one needs RUNNEL_REDIS_URL and PostgreSQL)",
    )
    users_cli.add_parser(commands)
    chat_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["chat"]:
        return chat_cli.main(arguments[1:])
    args = build_parser().parse_args(arguments)
    return serve_or_admin(args)


def serve_or_admin(args: argparse.Namespace) -> int:
    """``runnel serve`` and ``runnel users``: the commands that need the settings."""
    import uvicorn
    from pydantic import ValidationError

    from runnel import logs, users_cli
    from runnel.api.app import create_app, settle_heap
    from runnel.api.auth import is_loopback
    from runnel.settings import Settings

    try:
        settings = Settings()
    except (ValidationError, ValueError) as exc:
        print(f"runnel: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "users":
        return users_cli.run(args, settings)
    if (
        not is_loopback(args.host)
        and not settings.tokens
        and not asyncio.run(users_cli.has_admin(settings))
    ):
        print(
            f"runnel: refusing to listen on {args.host} with no administrator account and no "
            "RUNNEL_API_TOKENS (create one with runnel users add NAME --admin, or bind to "
            "127.0.0.1)",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1:
        return serve_workers(settings, args.host, args.port, args.workers)
    try:
        app = create_app(settings)
    except ValueError as exc:
        print(f"runnel: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace) + 5,
        server_header=False,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    log.info("runnel %s listening on http://%s:%d", __version__, args.host, args.port)
    settle_heap()
    uvicorn.Server(config).run()
    return 0


def serve_workers(settings: Settings, host: str, port: int, workers: int) -> int:
    """Several worker processes on one port. They share nothing in memory, so the event
    logs must be in Redis and the store must take concurrent writers (PostgreSQL)."""
    import uvicorn

    from runnel.api.app import create_app
    from runnel.metrics import multiprocess_directory

    if not settings.redis_url:
        print("runnel: --workers needs RUNNEL_REDIS_URL (the shared event log)", file=sys.stderr)
        return 2
    if settings.database.startswith("sqlite"):
        print("runnel: --workers needs PostgreSQL (RUNNEL_DATABASE_URL)", file=sys.stderr)
        return 2
    try:
        create_app(settings)  # refuse a bad configuration here, not in every worker
    except ValueError as exc:
        print(f"runnel: {exc}", file=sys.stderr)
        return 2
    log.info("runnel %s: %d workers on http://%s:%d", __version__, workers, host, port)
    # each worker drains on SIGTERM like a single process (its app's lifespan does it).
    # The workers (new interpreters) inherit PROMETHEUS_MULTIPROC_DIR: /metrics sums them all
    with multiprocess_directory():
        uvicorn.run(
            "runnel.api.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace) + 5,
            server_header=False,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
    return 0
