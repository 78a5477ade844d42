"""``GET /metrics``: Prometheus text whose values follow the streams, per app and across the
workers of ``runnel serve --workers N``."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from runnel.metrics import Metrics
from tests.conftest import ServeFactory
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.helpers import error_of, new_conversation
from tests.processes import runnel_process
from tests.sse_client import open_stream, stream

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

FAMILIES = {
    "runnel_active_streams": "gauge",
    "runnel_time_to_first_token_seconds": "histogram",
    "runnel_tokens_relayed": "counter",
    "runnel_streams": "counter",
    "runnel_stream_duration_seconds": "histogram",
    "runnel_resumes": "counter",
    "runnel_cancels": "counter",
    "runnel_provider_latency_seconds": "histogram",
}


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(client: httpx2.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(
    client: httpx2.Client, check: Callable[[Samples], bool], timeout: float = 20
) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(client)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, f"the metrics never got there: {samples}"
        time.sleep(0.02)


def streams(samples: Samples, outcome: str, code: str) -> float:
    return value(samples, "runnel_streams_total", outcome=outcome, code=code)


def active(samples: Samples) -> float:
    return value(samples, "runnel_active_streams")


def test_metrics_are_prometheus_text(client: httpx2.Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f.type for f in text_string_to_metric_families(response.text)}
    assert {name: families.get(name) for name in FAMILIES} == FAMILIES
    assert families["process_cpu_seconds"] == "counter"
    samples = parse(response.text)
    assert active(samples) == 0
    assert value(samples, "runnel_stream_duration_seconds_count") == 0
    assert value(samples, "runnel_stream_duration_seconds_bucket", le="+Inf") == 0

    openmetrics = client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


def test_a_stream_moves_the_gauge_the_counters_and_the_histograms(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    tokens = [f"t{i} " for i in range(30)]
    fake_openai.script("slow", Script(tokens=list(tokens), delay=0.05))
    before = scrape(client)
    assert active(before) == 0
    cid = new_conversation(client)
    with open_stream(
        client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "go", "model": "openai/slow"},
    ) as live:
        head = live.take(3)
        wait_for(client, lambda s: active(s) == 1)
        tail = live.rest()
    assert tail.terminal.data["finishReason"] == "stop"
    assert head.text + tail.text == "".join(tokens)

    after = wait_for(
        client,
        lambda s: (
            active(s) == 0
            and streams(s, "complete", "stop") == 1 + streams(before, "complete", "stop")
        ),
    )

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("runnel_tokens_relayed_total", provider="openai") == len(tokens)
    assert grew("runnel_time_to_first_token_seconds_count", provider="openai") == 1
    assert grew("runnel_time_to_first_token_seconds_sum", provider="openai") > 0
    assert grew("runnel_provider_latency_seconds_count", provider="openai") == 1
    assert grew("runnel_stream_duration_seconds_count") == 1
    assert grew("runnel_stream_duration_seconds_sum") > 0
    assert grew("runnel_stream_duration_seconds_bucket", le="+Inf") == 1
    assert grew("runnel_streams_total", outcome="error", code="PROVIDER_ERROR") == 0
    assert grew("runnel_cancels_total") == 0


def test_tokens_are_counted_while_streaming_and_a_cancel_is_counted(
    client: httpx2.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("long", Script(tokens=[f"w{i} " for i in range(400)], delay=0.05))
    before = scrape(client)
    cid = new_conversation(client)
    with open_stream(
        client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "go", "model": "openai/long"},
    ) as live:
        head = live.take(3)
        stream_id = head.events[0].data["streamId"]
        # the checkpoint loop counts the tokens of a stream still running (every second)
        during = wait_for(
            client,
            lambda s: (
                value(s, "runnel_tokens_relayed_total", provider="openai")
                > value(before, "runnel_tokens_relayed_total", provider="openai")
            ),
        )
        assert active(during) == 1
        answer = client.post(f"/api/v1/streams/{stream_id}/cancel")
        assert answer.status_code == 202
        assert answer.json()["status"] == "cancelling"
        tail = live.rest()
    terminal = tail.terminal.data
    assert terminal["finishReason"] == "cancelled"
    again = client.post(f"/api/v1/streams/{stream_id}/cancel")
    assert again.json()["status"] == "finished"

    after = wait_for(
        client,
        lambda s: (
            active(s) == 0
            and streams(s, "cancelled", "cancelled")
            == 1 + streams(before, "cancelled", "cancelled")
        ),
    )
    # the second cancel found the stream finished: not counted
    assert value(after, "runnel_cancels_total") == 1 + value(before, "runnel_cancels_total")
    relayed = value(after, "runnel_tokens_relayed_total", provider="openai") - value(
        before, "runnel_tokens_relayed_total", provider="openai"
    )
    assert relayed == terminal["totalTokens"]
    assert 0 < relayed < 400
    assert streams(after, "complete", "stop") == streams(before, "complete", "stop")


def test_errors_are_counted_with_their_code(client: httpx2.Client, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("denied", Script(status=401))
    fake_openai.script("dropped", Script(tokens=["a ", "b ", "c ", "d ", "e "], drop_after=3))
    before = scrape(client)
    cid = new_conversation(client)

    refused = client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "go", "model": "openai/denied"},
        headers={"accept": "text/event-stream"},
    )
    assert refused.status_code == 502
    assert error_of(refused) == "PROVIDER_AUTH"
    dropped = stream(
        client,
        "POST",
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "go", "model": "openai/dropped"},
    )
    assert dropped.terminal.data["code"] == "INTERRUPTED"

    after = wait_for(
        client,
        lambda s: (
            active(s) == 0
            and streams(s, "interrupted", "INTERRUPTED")
            == 1 + streams(before, "interrupted", "INTERRUPTED")
        ),
    )
    assert streams(after, "error", "PROVIDER_AUTH") == 1 + streams(before, "error", "PROVIDER_AUTH")
    relayed = value(after, "runnel_tokens_relayed_total", provider="openai") - value(
        before, "runnel_tokens_relayed_total", provider="openai"
    )
    assert relayed == 3
    # the refused request never reached a first token
    assert value(after, "runnel_time_to_first_token_seconds_count", provider="openai") == 1 + value(
        before, "runnel_time_to_first_token_seconds_count", provider="openai"
    )


def test_resumes_are_readers_that_send_a_last_event_id(client: httpx2.Client) -> None:
    cid = new_conversation(client)
    whole = stream(client, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    assert whole.terminal.data["finishReason"] == "stop"
    stream_id = whole.events[0].data["streamId"]
    last = whole.events[-1].id
    start = value(scrape(client), "runnel_resumes_total")

    def resumes() -> float:
        return value(scrape(client), "runnel_resumes_total") - start

    assert stream(client, "GET", f"/api/v1/streams/{stream_id}").status == 200
    assert resumes() == 0  # from the start: not a resume
    resumed = stream(client, "GET", f"/api/v1/streams/{stream_id}", headers={"last-event-id": "2"})
    assert resumed.status == 200
    assert resumed.ids[-1] == last
    assert whole.text.endswith(resumed.text)
    assert resumes() == 1
    assert stream(client, "GET", f"/api/v1/streams/{stream_id}?lastEventId=3").status == 200
    assert resumes() == 2
    over = stream(
        client, "GET", f"/api/v1/streams/{stream_id}", headers={"last-event-id": str(last)}
    )
    assert over.status == 204  # an EventSource reconnecting after the end: not a resume
    assert resumes() == 2
    again = stream(
        client, "GET", f"/api/v1/conversations/{cid}/stream", headers={"last-event-id": "2"}
    )
    assert again.status == 200
    assert resumes() == 3


def test_each_app_has_its_own_metrics(serve: ServeFactory) -> None:
    one, other = serve(), serve()
    with (
        httpx2.Client(base_url=one.url, timeout=30) as a,
        httpx2.Client(base_url=other.url, timeout=30) as b,
    ):
        reply = a.post("/api/v1/messages", json={"message": "hi"})
        assert reply.status_code == 200
        wait_for(a, lambda s: streams(s, "complete", "stop") == 1)
        quiet = scrape(b)
        assert streams(quiet, "complete", "stop") == 0
        assert value(quiet, "runnel_tokens_relayed_total", provider="demo") == 0


def test_metrics_need_no_token_but_keep_the_host_check(serve: ServeFactory) -> None:
    guarded = serve(api_tokens="tok-1:alice")
    with httpx2.Client(base_url=guarded.url, timeout=30) as client:
        assert client.get("/api/v1/models").status_code == 401
        assert client.get("/metrics").status_code == 200
    open_server = serve()
    with httpx2.Client(base_url=open_server.url, timeout=30) as client:
        assert client.get("/metrics").status_code == 200
        refused = client.get("/metrics", headers={"host": "metrics.example.com"})
        assert refused.status_code == 403
        assert error_of(refused) == "FORBIDDEN"


def test_a_multiprocess_directory_needs_the_variable_before_the_import(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(str(tmp_path))


def test_a_killed_worker_leaves_its_counts_but_not_its_active_streams(tmp_path: Path) -> None:
    """Multiprocess mode, in new interpreters (the variable must be set before the import):
    a worker that dies without closing keeps its counters in the sum, and its share of
    ``runnel_active_streams`` is dropped at the next scrape."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = (
        "import os\n"
        "from runnel.metrics import Metrics\n"
        "m = Metrics.from_environment()\n"
        "m.set_active(3)\n"
        "m.add_tokens('demo', 5)\n"
        "os._exit(0)\n"
    )
    scraper = (
        "from runnel.metrics import Metrics\n"
        "m = Metrics.from_environment()\n"
        "m.set_active(1)\n"
        "print(m.render()[0].decode())\n"
    )
    subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    assert glob.glob(str(tmp_path / "gauge_livesum_*.db"))
    done = subprocess.run(
        [sys.executable, "-c", scraper],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    samples = parse(done.stdout)
    assert active(samples) == 1
    assert value(samples, "runnel_tokens_relayed_total", provider="demo") == 5


def _streams_by_worker(directory: str) -> dict[str, float]:
    """Finished streams per worker pid, from each worker's own file."""
    counts: dict[str, float] = {}
    for path in glob.glob(os.path.join(directory, "counter_*.db")):
        pid = Path(path).stem.rpartition("_")[2]
        for metric in MultiProcessCollector.merge([path]):
            for sample in metric.samples:
                if sample.name == "runnel_streams_total":
                    counts[pid] = counts.get(pid, 0.0) + sample.value
    return counts


def test_workers_are_counted_together(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    output: list[str] = []
    with runnel_process(
        tmp_path / "data",
        output,
        {"TMPDIR": str(temp)},  # where the parent makes the metrics directory
        workers=2,
        graceful=True,
        database_url=postgres_url,
        redis_url=redis_url,
        demo_tokens_per_second="400",
        demo_first_token_delay="0",
        demo_reply_tokens="20",
        log_level="WARNING",
    ) as (process, url):
        (directory,) = glob.glob(str(temp / "runnel-metrics-*"))

        # one request per new connection, until both workers have served some
        sent, tokens = 0, 0
        while (
            len(_streams_by_worker(directory)) < 2
            or min(_streams_by_worker(directory).values()) == 0
        ):
            assert sent < 60, f"one worker served everything: {_streams_by_worker(directory)}"
            reply = httpx2.post(f"{url}/api/v1/messages", json={"message": f"n{sent}"}, timeout=30)
            assert reply.status_code == 200, reply.text
            assert reply.json()["finishReason"] == "stop"
            tokens += reply.json()["usage"]["completionTokens"]
            sent += 1
        assert sum(_streams_by_worker(directory).values()) == sent

        # whichever worker answers, it answers for both
        for _ in range(8):
            samples = parse(httpx2.get(f"{url}/metrics", timeout=10).text)
            assert streams(samples, "complete", "stop") == sent
            assert value(samples, "runnel_tokens_relayed_total", provider="demo") == tokens
            assert value(samples, "runnel_stream_duration_seconds_count") == sent
            assert (
                value(samples, "runnel_time_to_first_token_seconds_count", provider="demo") == sent
            )
            assert active(samples) == 0
    assert process.returncode == 0, "\n".join(output)
    assert not glob.glob(str(temp / "runnel-metrics-*")), "the metrics directory was left"
