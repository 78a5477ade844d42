"""A TCP proxy that cuts connections, as a failing network would."""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class CuttingProxy:
    """A TCP proxy to ``target`` that cuts each connection after a random number (between
    ``low`` and ``high``) of the bytes of the server's event stream, as a failing network
    would."""

    target: int
    low: int
    high: int
    seed: int
    port: int = 0
    cuts: int = 0
    connections: int = 0
    _listener: socket.socket = field(init=False)
    _rng: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    def start(self) -> CuttingProxy:
        self._rng = random.Random(self.seed)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop taking connections (those open run on until their cut). The shutdown wakes
        the thread blocked in ``accept``, which a bare ``close`` would not on Linux."""
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                budget = self._rng.randint(self.low, self.high)
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, budget), daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, budget: int | None) -> None:
        """Copy ``source`` to ``sink``; with a ``budget``, cut after that many bytes of an
        event stream's body (plain answers pass: a POST that starts a reply is never
        retried, and fails like any request when its answer is lost)."""
        body_from: int | None = None  # where the event stream's body starts in ``data``
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if budget is not None and body_from is None and b"text/event-stream" in data:
                    body_from = data.index(b"\r\n\r\n") + 4
                    budget += body_from  # the head always passes
                if budget is not None and body_from is not None:
                    if len(data) >= budget:
                        sink.sendall(data[:budget])
                        with self._lock:
                            self.cuts += 1
                        break
                    budget -= len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()
