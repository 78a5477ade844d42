"""Draining on SIGTERM and SIGINT.

uvicorn answers these signals by waiting for the open connections before it runs the
lifespan's shutdown. An SSE response stays open while its reply streams, so waiting first
would end with the connections cut and no terminal event sent. The lifespan therefore
chains a handler before uvicorn's that starts draining the generations the moment the
signal arrives (``GenerationService.shutdown``: new replies refused, running ones given
``shutdown_grace`` to finish, then interrupted), and every reader gets its ``complete`` or
``INTERRUPTED`` while uvicorn waits. Being installed by the lifespan, it works the same for
``runnel serve`` and for each worker of ``runnel serve --workers N``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def drain_on_signals(start_drain: Callable[[], object]) -> Callable[[], None]:
    """Call ``start_drain`` on the running event loop when a signal arrives, then the
    handler that was in place (uvicorn's, which begins its own shutdown). Returns what
    puts the previous handlers back. Does nothing outside the main thread, where handlers
    cannot be set (tests run servers in threads)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(start_drain)
        chained = previous[signal.Signals(signum)]
        if callable(chained):
            chained(signum, frame)
        elif chained != signal.SIG_IGN:  # the default action: end the process as before
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in SIGNALS:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, chained in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, chained)

    return restore
