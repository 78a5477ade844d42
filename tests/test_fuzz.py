"""A Schemathesis run over the whole API, from the live server's ``/openapi.json``: no
5xx, every answer inside the schema (status, content type, body), and nothing stored
for a request the server rejected."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ServeFactory

EXAMPLES = 30  # per operation and mode: ~900 requests in all, bounded for CI
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
TABLES = ("conversations", "messages", "users", "sessions", "api_keys")


def row_counts(database: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_from_its_schema(
    serve: ServeFactory, mode: GenerationMode, security_report: Callable[[str, int], None]
) -> None:
    server = serve(signup="open")
    with httpx2.Client(base_url=server.url, timeout=30) as setup:
        signed = setup.post(
            "/api/v1/auth/signup", json={"username": "fuzz", "password": "fuzz password"}
        )
        assert signed.status_code == 201
        key = setup.post("/api/v1/auth/keys", json={"name": "fuzzer"}).json()["key"]
        setup.post("/api/v1/conversations", json={"title": "a target"})
    bearer = {"Authorization": f"Bearer {key}"}
    database = server.settings.data_dir / "runnel.db"
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    cases = 0
    operations = 0
    no_negative: list[str] = []

    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        if operation.label == "GET /api/v1/live":
            continue  # a valid request opens a feed that never ends (tests/test_live.py)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            nonlocal cases
            cases += 1
            before = row_counts(database)
            response = case.call(base_url=server.url, headers=bearer, timeout=30)
            case.validate_response(response, checks=CHECKS)
            if 400 <= response.status_code < 500:
                assert row_counts(database) == before, (case.method, case.path, response.text)

        try:
            run()
        except Unsatisfiable:
            # nothing in this operation can be made invalid (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE, operation.label
            no_negative.append(operation.label)

    assert operations >= 20
    # path ids are free strings; what takes a body or a bounded query has invalid forms
    assert operations - len(no_negative) >= 8, no_negative
    # the fuzzer's account, key and data survived it all
    with httpx2.Client(base_url=server.url, timeout=30, headers=bearer) as after:
        assert after.get("/api/v1/auth/me").json()["user"]["username"] == "fuzz"
    security_report(f"Schemathesis {mode.value} over {operations} operations", cases)
