"""The simulated phone in a real headless Chromium: a newcomer sees the push arrive in the
owner's pane, taps Approve, then the approver does the same on theirs, and the change runs."""

from __future__ import annotations

from typing import Any

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the browser fixture skips (or fails under CI) with the reason
    expect = None

from aiohttp.test_utils import TestServer

from app.bootstrap import Runtime
from tests.playground.conftest import Screenshots
from tests.playground.test_playground_browser import open_page, run_as_agent

COMMAND = "reset-password @ivan INC-1234 forgotten-password"


@pytest.mark.timeout(120)
async def test_a_push_step_up_is_approved_on_the_simulated_phones(
    served: tuple[TestServer, Runtime], browser_page: Any, screenshots: Screenshots
) -> None:
    page = browser_page
    server, _ = served
    await open_page(page, str(server.make_url("/playground")))
    await run_as_agent(page, COMMAND)
    await expect(page.locator("#owner-as")).to_have_value("ivan")
    phone = page.locator("#owner-phone")
    await expect(phone).to_be_visible()
    await expect(phone).to_contain_text("Okta Verify")
    await expect(page.locator("#approver-phone")).to_be_hidden()
    await screenshots.take("push-on-the-owners-phone")

    await page.locator("#owner-card").get_by_role("button", name="Yes, it was me").click()
    await expect(page.locator("#audit-rows tr[data-kind='owner_confirmed']")).to_have_count(1)
    await phone.get_by_role("button", name="Approve").click()
    await expect(page.locator("#audit-rows tr[data-kind='step_up_passed']")).to_have_count(1)
    await expect(phone).to_be_hidden()

    await page.locator("#approver-card").get_by_role("button", name="Approve").click()
    carols = page.locator("#approver-phone")
    await expect(carols).to_be_visible()
    await screenshots.take("push-on-the-approvers-phone")
    await carols.get_by_role("button", name="Approve").click()
    await expect(page.locator("#state")).to_have_attribute("data-state", "completed")
    await screenshots.take("completed")
