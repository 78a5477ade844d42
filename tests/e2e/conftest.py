"""Browser tests: Debian's Chromium driven by Playwright against a real Runnel on loopback.

Locally they skip when Chromium or the built web app is missing; under ``CI=true`` they
fail instead. Screenshots and measurements go to ``RUNNEL_TEST_ARTIFACTS``
(default ``build/test-artifacts``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from runnel.api.webapp import WEBAPP

CHROMIUM = os.environ.get("RUNNEL_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("RUNNEL_TEST_ARTIFACTS", "build/test-artifacts")).resolve()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI must run the browser tests")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    _require(shutil.which(CHROMIUM) is not None, f"no Chromium at {CHROMIUM}")
    _require((WEBAPP / "index.html").is_file(), "the web app is not built (scripts/build-web)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    yield opened
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
