"""Run a real Runnel (uvicorn on loopback) in a thread for a test."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from runnel.api.app import create_app
from runnel.api.deps import Services
from runnel.settings import Settings


@dataclass
class RunningServer:
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread
    app: Any

    @property
    def services(self) -> Services:
        found: Services = self.app.state.runnel
        return found

    def drop_connections(self) -> None:
        """Abort every open client connection, as a network failure would."""
        loop = self.server.servers[0].get_loop()

        def abort_all() -> None:
            for connection in list(self.server.server_state.connections):
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.abort()

        loop.call_soon_threadsafe(abort_all)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "server did not stop"


def start(settings: Settings, prepare: Callable[[Any], None] | None = None) -> RunningServer:
    """``prepare`` gets the app before it serves (to add a middleware, say)."""
    app = create_app(settings)
    if prepare is not None:
        prepare(app)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server failed to start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(f"http://127.0.0.1:{port}", settings, server, thread, app)
