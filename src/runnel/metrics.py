"""Prometheus metrics: every metric object, and the text that ``GET /metrics`` answers.

A ``Metrics`` is built once per app, in the lifespan, and handed to the services that
record. Nothing here runs per token: tokens are counted from the stream's event ids once a
second (the checkpoint loop) and at the end, the first token is observed once per stream.
Label values are bounded: a provider name from the configuration, an outcome, a finish
reason or an error code — never a model, a user or an id.

One process (the default): the metrics live in a ``CollectorRegistry`` of their own, so two
apps in one process (tests) never share counters. Several workers (``runnel serve
--workers N``): ``multiprocess_directory`` makes a fresh directory and names it in
``PROMETHEUS_MULTIPROC_DIR`` before the workers start; each worker's values are then files
there, and ``/metrics``, on whichever worker answers, adds them all up
(``MultiProcessCollector``). prometheus_client picks its value store when it is first
imported, from that variable, so the workers (new interpreters) must inherit it; a
``Metrics`` that finds the variable and the library in disagreement refuses to start.
"""

from __future__ import annotations

import glob
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    values,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from runnel.errors import Interrupted
from runnel.events import Complete, Error

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
PROVIDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)

_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def provider_of(model_id: str) -> str:
    """The provider part of ``provider/model`` — the only label taken from a model id."""
    return model_id.partition("/")[0]


class Metrics:
    def __init__(self, multiprocess_dir: str | None = None) -> None:
        library_shared = bool(getattr(values.ValueClass, "_multiprocess", False))
        if library_shared != (multiprocess_dir is not None):
            raise RuntimeError(
                f"{MULTIPROC_ENV} must be set before prometheus_client is first imported "
                "(and not unset after)"
            )
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        if multiprocess_dir is None:
            own: CollectorRegistry | None = self.registry
            ProcessCollector(registry=self.registry)
        else:
            own = None  # the values are in files; the collector reads every worker's
            MultiProcessCollector(self.registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]

        self.active_streams = Gauge(
            "runnel_active_streams",
            "Replies being generated now (by every worker, with --workers).",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.open_event_streams = Gauge(
            "runnel_open_event_streams",
            "SSE responses open now: a reply's stream, or a live feed.",
            ["kind"],
            registry=own,
            multiprocess_mode="livesum",
        )
        self.time_to_first_token = Histogram(
            "runnel_time_to_first_token_seconds",
            "From the start of a generation to its first text from the provider.",
            ["provider"],
            registry=own,
            buckets=FIRST_TOKEN_BUCKETS,
        )
        self.tokens_relayed = Counter(
            "runnel_tokens_relayed",
            "Text deltas appended to stream logs (counted once a second and at the end).",
            ["provider"],
            registry=own,
        )
        self.streams = Counter(
            "runnel_streams",
            "Generations ended, by outcome and finish reason or error code.",
            ["outcome", "code"],
            registry=own,
        )
        self.stream_duration = Histogram(
            "runnel_stream_duration_seconds",
            "From the start of a generation to its recorded outcome.",
            registry=own,
            buckets=DURATION_BUCKETS,
        )
        self.resumes = Counter(
            "runnel_resumes",
            "SSE readers that attached with a Last-Event-ID above 0.",
            registry=own,
        )
        self.cancels = Counter(
            "runnel_cancels",
            "Cancel requests accepted for a stream still generating.",
            registry=own,
        )
        self.followups = Counter(
            "runnel_followups",
            "Calls for follow-up suggestions and titles, by kind and outcome.",
            ["kind", "outcome"],
            registry=own,
        )
        self.provider_latency = Histogram(
            "runnel_provider_latency_seconds",
            "From calling the provider to its upstream accepting the request "
            "(retries and fallbacks included).",
            ["provider"],
            registry=own,
            buckets=PROVIDER_BUCKETS,
        )

    @classmethod
    def from_environment(cls) -> Metrics:
        return cls(os.environ.get(MULTIPROC_ENV) or None)

    # recording

    def followup(self, kind: str, outcome: str) -> None:
        self.followups.labels(kind, outcome).inc()

    def set_active(self, count: int) -> None:
        self.active_streams.set(count)

    def first_token(self, model_id: str, seconds: float) -> None:
        self.time_to_first_token.labels(provider_of(model_id)).observe(seconds)

    def provider_opened(self, model_id: str, seconds: float) -> None:
        self.provider_latency.labels(provider_of(model_id)).observe(seconds)

    def add_tokens(self, provider: str, count: int) -> None:
        self.tokens_relayed.labels(provider).inc(count)

    def stream_ended(self, outcome: Complete | Error, seconds: float) -> None:
        if isinstance(outcome, Complete):
            code: str = outcome.finish_reason
            kind = "cancelled" if code == "cancelled" else "complete"
        else:
            code = outcome.code
            kind = "interrupted" if code == Interrupted.code else "error"
        self.streams.labels(kind, code).inc()
        self.stream_duration.observe(seconds)

    def resumed(self) -> None:
        self.resumes.inc()

    def cancel_accepted(self) -> None:
        self.cancels.inc()

    # exposition

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The body and content type of ``/metrics`` (the Prometheus text format, or
        OpenMetrics when the scraper asks for it)."""
        if self.multiprocess_dir is not None:
            _forget_dead_workers(self.multiprocess_dir)
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    def close(self) -> None:
        """A worker leaving: its live gauges stop counting (its counters stay summed)."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


def _forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of workers that died without ``close`` (killed, crashed), so
    ``runnel_active_streams`` does not keep their streams forever."""
    for path in glob.glob(os.path.join(directory, "gauge_live*.db")):
        found = _LIVE_FILE.match(os.path.basename(path))
        if found is not None and not _alive(int(found.group(1))):
            mark_process_dead(int(found.group(1)), directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user
    return True


@contextmanager
def multiprocess_directory() -> Iterator[str]:
    """A new, empty directory named in ``PROMETHEUS_MULTIPROC_DIR`` for the workers started
    inside the block; removed, with the variable, at the end."""
    previous = os.environ.get(MULTIPROC_ENV)
    with tempfile.TemporaryDirectory(prefix="runnel-metrics-") as directory:
        os.environ[MULTIPROC_ENV] = directory
        try:
            yield directory
        finally:
            if previous is None:
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = previous
