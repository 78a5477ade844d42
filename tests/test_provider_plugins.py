"""Provider types come from the ``runnel.providers`` entry point group — the built-in ones and
a third-party package's alike. The example provider of docs/providers.md is installed here
from the doc's own text (module, entry point and TOML) and must stream and stop."""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from runnel.providers.registry import ENTRY_POINT_GROUP, Registry, provider_type
from runnel.settings import ProviderConfig, Settings
from tests.conftest import ServeFactory
from tests.helpers import new_conversation, wait_until_idle
from tests.sse_client import open_stream, stream

DOC = Path(__file__).resolve().parents[1] / "docs" / "providers.md"
BUILT_IN = {"demo", "openai", "anthropic", "gemini", "langchain"}


def doc_example(name: str) -> str:
    """The fenced block that follows ``<!-- example: NAME -->`` in docs/providers.md."""
    found = re.search(
        rf"<!-- example: {re.escape(name)} -->\n```\w+\n(.*?)```", DOC.read_text(), re.DOTALL
    )
    assert found, f"docs/providers.md has no example {name}"
    return found.group(1)


@pytest.fixture
def echo_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderConfig]:
    """The doc's example package, installed the way pip would: a module and a dist-info
    with the entry points from the doc's pyproject snippet."""
    (tmp_path / "runnel_echo.py").write_text(doc_example("runnel_echo.py"))
    dist = tmp_path / "runnel_echo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: runnel-echo\nVersion: 1.0\n")
    points = tomllib.loads(doc_example("pyproject.toml"))["project"]["entry-points"]
    lines = [
        f"[{ENTRY_POINT_GROUP}]",
        *(f"{k} = {v}" for k, v in points[ENTRY_POINT_GROUP].items()),
    ]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tomllib.loads(doc_example("runnel.toml"))["providers"]["parrots"]
    yield ProviderConfig(**config)
    sys.modules.pop("runnel_echo", None)


def test_built_in_types_are_entry_points() -> None:
    for name in BUILT_IN:
        assert callable(provider_type(name))


def test_the_documented_example_provider_streams_and_stops(
    serve: ServeFactory, echo_installed: ProviderConfig
) -> None:
    server = serve(providers={"parrots": echo_installed}, default_model="parrots/parrot")
    words = " ".join(f"w{i}" for i in range(60))
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        ids = [m["id"] for m in client.get("/api/v1/models").json()["data"]]
        assert "parrots/parrot" in ids
        cid = new_conversation(client)
        t = stream(
            client, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": "a b c"}
        )
        assert (t.text, t.terminal.data["finishReason"]) == ("a b c", "stop")
        assert t.terminal.data["model"] == "parrots/parrot"

        live = open_stream(
            client, "POST", f"/api/v1/conversations/{cid}/messages", json={"content": words}
        )
        head = live.take(3)
        cancel = client.post(f"/api/v1/streams/{head.events[0].data['streamId']}/cancel")
        assert cancel.status_code == 202
        tail = live.rest()
        live.close()
        assert tail.terminal.data["finishReason"] == "cancelled"
        stored = wait_until_idle(client, cid)["messages"][-1]
    assert stored["status"] == "cancelled"
    assert 0 < len(stored["content"]) < len(words)


def test_an_unknown_provider_type_stops_start_up() -> None:
    settings = Settings(providers={"x": ProviderConfig(type="nope")})
    with pytest.raises(ValueError, match=r"provider 'x': unknown provider type 'nope'") as info:
        Registry.from_settings(settings)
    assert "openai" in str(info.value)  # the message lists what is installed


def test_an_example_option_it_does_not_know_stops_start_up(echo_installed: ProviderConfig) -> None:
    config = echo_installed.model_copy(update={"options": {"speed": 3}})
    with pytest.raises(ValueError, match="provider 'parrots': unknown options: speed"):
        Registry.from_settings(Settings(providers={"parrots": config}))


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ({"nope": ["demo/markdown"]}, "must be written prefix/name"),
        ({"demo/x": ["demo/markdown"]}, "uses the name of provider 'demo'"),
        ({"auto/x": []}, "names no model"),
        ({"auto/x": ["missing/model"]}, "unknown model: missing/model"),
        ({"auto/x": ["demo/unknown"]}, "unknown model: demo/unknown"),
    ],
)
def test_bad_aliases_stop_start_up(aliases: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Registry.from_settings(Settings(aliases=aliases))


def test_an_alias_can_be_the_default_model() -> None:
    registry = Registry.from_settings(
        Settings(aliases={"auto/any": ["demo/markdown"]}, default_model="auto/any")
    )
    route = registry.resolve(None)
    assert route.model_id == "auto/any"
    assert [c.model_id for c in route.candidates] == ["demo/markdown"]
