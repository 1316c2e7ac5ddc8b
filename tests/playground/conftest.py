"""A real headless Chromium (Debian's package, driven by Playwright), and screenshots of each step.

No browser is ever downloaded: Playwright is pointed at /usr/bin/chromium (or TWOKEY_CHROMIUM).
Without Chromium the browser tests are skipped on a developer's machine and fail under CI=true,
where scripts/install-chromium.sh must have put it in place.
"""

from __future__ import annotations

import asyncio
import os
import re
import warnings
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from app.bootstrap import Runtime
from tests.playground.runtime import serve_playground

CHROMIUM = Path(os.environ.get("TWOKEY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",  # a container's 64 MB /dev/shm makes Chromium's tabs crash
]
STEP_S = 20.0
"""Longest wait for one browser set-up or tear-down step."""
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "playground"


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so the playground's browser tests must run)")
    pytest.skip(what)


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium, or a skip (a failure under CI) saying how to install it."""
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing: run scripts/install-chromium.sh")
    return CHROMIUM


@pytest.fixture
async def served(redis_url: str, namespace: str) -> AsyncIterator[tuple[TestServer, Runtime]]:
    """The playground app on a free loopback port; the page fixture depends on it."""
    async with serve_playground(redis_url, namespace) as pair:
        yield pair


@pytest.fixture
async def browser_page(chromium: Path, served: tuple[TestServer, Runtime]) -> AsyncIterator[Any]:
    """A fresh page in a fresh headless Chromium, closed after the test.

    It depends on ``served``, so it is torn down first: the page stops polling (about:blank)
    and Chromium is closed while the server still answers; only then does the server close.
    Every step of the teardown is bounded, because a timeout that fires inside a test
    (pytest-timeout) leaves the teardown with no timer at all: an unbounded ``browser.close()``
    on a wedged Chromium would hang the whole run.
    """
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install playwright)")
    playwright = await asyncio.wait_for(async_playwright().start(), STEP_S)
    try:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            context = await asyncio.wait_for(
                browser.new_context(viewport={"width": 1500, "height": 1100}), STEP_S
            )
            page = await asyncio.wait_for(context.new_page(), STEP_S)
            page.set_default_timeout(15_000)
            yield page
            await _bounded(page.goto("about:blank", timeout=5_000), "leaving the page")
        finally:
            await _bounded(browser.close(), "closing Chromium")
    finally:
        await _bounded(playwright.stop(), "stopping Playwright")


async def _bounded(step: Awaitable[Any], what: str) -> None:
    """A teardown step that may not hang: give up after STEP_S and say so."""
    try:
        await asyncio.wait_for(step, STEP_S)
    except TimeoutError:
        warnings.warn(f"{what} took over {STEP_S:.0f} s; left behind", stacklevel=2)
    except Exception as exc:  # a crashed page or browser: the test's own result stands
        warnings.warn(f"{what} failed: {exc!r}", stacklevel=2)


class Screenshots:
    """Numbered screenshots of each step, kept as test artefacts (test-artifacts/ is ignored)."""

    def __init__(self, page: Any, test_name: str) -> None:
        self.page = page
        self.folder = ARTIFACTS
        self.prefix = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
        self.count = 0

    async def take(self, step: str) -> Path:
        self.count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.prefix}-{self.count:02d}-{step}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def screenshots(browser_page: Any, request: pytest.FixtureRequest) -> Screenshots:
    return Screenshots(browser_page, request.node.name)
