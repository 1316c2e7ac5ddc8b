"""A real headless Chromium (Debian's package, driven by Playwright), and screenshots of each step.

No browser is ever downloaded: Playwright is pointed at /usr/bin/chromium (or TWOKEY_CHROMIUM).
Without Chromium the browser tests are skipped on a developer's machine and fail under CI=true,
where scripts/install-chromium.sh must have put it in place.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("TWOKEY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
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
async def browser_page(chromium: Path) -> AsyncIterator[Any]:
    """A fresh page in a fresh headless Chromium, closed after the test."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install playwright)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = await browser.new_context(viewport={"width": 1500, "height": 1100})
            page = await context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            await browser.close()


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
