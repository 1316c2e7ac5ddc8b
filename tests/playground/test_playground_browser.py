"""The playground end to end in a real headless Chromium: the page, its cards, the real service.

The app is the real one (create_app) on a free loopback port, on the test Redis, with the
example policy and the sandbox directory `twokey serve` starts with.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # a developer's machine without it: skip; CI must have it
    if os.environ.get("CI"):
        raise
    pytest.skip("the playwright package is not installed", allow_module_level=True)

from aiohttp.test_utils import TestServer

from app.bootstrap import Runtime
from app.domain.errors import SeparationOfDuties
from app.domain.models import ChatUser, RequestState
from tests.playground.conftest import Screenshots

COMMAND = "reset-password @alice INC-1234 forgotten-password"
GREEN = "rgb(26, 127, 55)"
"""The page's colour for "done"."""
JS_S = 10.0
"""``page.evaluate`` has no timeout of its own: every call here is bounded by this."""


async def open_page(page: Any, url: str) -> None:
    await page.goto(url)
    await expect(page.locator("body")).to_have_attribute("data-ready", "yes")


async def run_as_agent(page: Any, command: str) -> str:
    await page.select_option("#agent-as", "bob")
    await page.fill("#agent-command", command)
    await page.click("#agent-send")
    reply = page.locator("#agent-reply")
    await expect(reply).to_contain_text("opened")
    found = re.search(r"Request (TK-[0-9A-Z]{8}) opened", await reply.inner_text())
    assert found, "the agent is told the new request's id"
    await expect(page.locator("#request-select")).to_have_value(found.group(1))
    await expect(page.locator("#state")).to_have_attribute("data-state", "pending")
    return found.group(1)


async def run_js(page: Any, script: str, arg: Any = None) -> Any:
    return await asyncio.wait_for(page.evaluate(script, arg), JS_S)


async def audit_kinds(page: Any) -> list[str]:
    rows = page.locator("#audit-rows tr")
    return [str(await rows.nth(i).get_attribute("data-kind")) for i in range(await rows.count())]


@pytest.mark.timeout(120)
async def test_reset_confirmed_by_owner_and_approved_completes(
    served: tuple[TestServer, Runtime], browser_page: Any, screenshots: Screenshots
) -> None:
    page = browser_page
    server, runtime = served
    await open_page(page, str(server.make_url("/playground")))
    await expect(page.locator(".banner")).to_contain_text("never for production")
    await screenshots.take("page")

    await page.select_option("#owner-as", "dave")  # the pickers follow the new request
    await page.select_option("#approver-as", "erin")
    request_id = await run_as_agent(page, COMMAND)
    await expect(page.locator("#owner-as")).to_have_value("alice")
    await expect(page.locator("#approver-as")).to_have_value("carol")
    await expect(page.locator("#state")).to_have_text("Waiting for confirmation and approval")
    await expect(page.locator("#agent-card")).to_contain_text(f"Request {request_id}")
    await screenshots.take("agent-opened")

    owner_card = page.locator("#owner-card")
    await expect(owner_card).to_contain_text("Did you ask for this?")
    await owner_card.get_by_role("button", name="Yes, it was me").click()
    await expect(page.locator("#owner-reply")).to_have_attribute("data-kind", "ok")
    await expect(page.locator("#audit-rows tr[data-kind='owner_confirmed']")).to_have_count(1)
    await expect(owner_card.get_by_role("button", name="Yes, it was me")).to_have_count(0)
    await screenshots.take("owner-confirmed")

    approval_card = page.locator("#approver-card")
    await expect(approval_card).to_contain_text("Approval needed")
    await approval_card.get_by_role("button", name="Approve").click()
    await expect(page.locator("#state")).to_have_attribute("data-state", "completed")
    await expect(approval_card.get_by_role("button", name="Approve")).to_have_count(0)
    await screenshots.take("approved-completed")

    await expect(page.locator("#audit-rows tr")).to_have_count(5)
    assert await audit_kinds(page) == [
        "opened",
        "owner_confirmed",
        "approved",
        "execution_started",
        "executed",
    ]
    stored = await runtime.store.get(request_id)
    assert stored is not None and stored.state is RequestState.COMPLETED
    # Finished: it says when, and nothing on the page says when it "expires".
    await expect(page.locator("#state-detail")).to_contain_text("finished")
    for where in ("#state-detail", "#agent-card", "#owner-card", "#approver-card"):
        assert "expires" not in (await page.locator(where).inner_text()).lower(), where

    # The temporary password: in the owner's pane only, once, never in the others; audited.
    reveal = page.locator("#owner-secret-reveal")
    await expect(reveal).to_contain_text("temporary password")
    await reveal.click()
    secret_box = page.locator("#owner-secret-value")
    await expect(secret_box).not_to_be_empty()
    secret = await secret_box.text_content()
    assert secret and len(secret) >= 12
    revealed_row = page.locator("#audit-rows tr[data-kind='secret_revealed']")
    await expect(revealed_row).to_have_count(1)
    await expect(revealed_row.locator("td").nth(3)).to_have_text("alice")
    for elsewhere in ("#agent-pane", "#approver-pane", "#strip"):
        assert secret not in (await page.locator(elsewhere).inner_text())
    owner_done = page.locator("#owner-card")
    await expect(owner_done).to_contain_text("Done")
    await expect(owner_done.get_by_role("button", name="This wasn't me")).to_have_count(1)
    await screenshots.take("secret-in-owner-pane")

    # Someone else takes the owner's pane: the secret and the owner's card are gone from it.
    await page.select_option("#owner-as", "carol")
    await expect(page.locator("#owner-secret")).to_be_hidden()
    await expect(page.locator("#owner-note")).to_contain_text("Alice Adams (alice)")
    await expect(owner_done).to_be_empty()
    await expect(page.locator("#owner-messages li")).to_have_count(0)
    assert secret not in await page.locator("body").inner_text()
    assert secret not in (await secret_box.text_content() or "")

    # Cancelling what is already done is refused, and looks like it: not green.
    await page.fill("#agent-command", f"cancel {request_id}")
    await page.click("#agent-send")
    reply = page.locator("#agent-reply")
    await expect(reply).to_contain_text("already completed")
    await expect(reply).to_have_attribute("data-kind", "refused")
    await expect(reply).not_to_have_css("color", GREEN)  # a refusal never looks like success


@pytest.mark.timeout(120)
async def test_an_approver_cannot_approve_a_request_about_their_own_account(
    served: tuple[TestServer, Runtime], browser_page: Any, screenshots: Screenshots
) -> None:
    page = browser_page
    server, runtime = served
    await open_page(page, str(server.make_url("/playground")))
    request_id = await run_as_agent(page, "reset-password @carol INC-1234 locked-out")
    await expect(page.locator("#owner-as")).to_have_value("carol")
    await expect(page.locator("#approver-as")).to_have_value("dave")  # not carol: her account

    # The agent gets no approval card at all: it goes to the approver role only.
    await page.select_option("#approver-as", "bob")
    await expect(page.locator("#approver-note")).to_contain_text("approver role")
    await expect(page.locator("#approver-card").get_by_role("button")).to_have_count(0)

    await page.select_option("#approver-as", "carol")
    await page.locator("#approver-card").get_by_role("button", name="Approve").click()
    reply = page.locator("#approver-reply")
    await expect(reply).to_have_attribute("data-kind", "error")
    await screenshots.take("self-approval-refused")

    # The very message a Slack or Teams user gets for the same click.
    carol_in_slack = ChatUser(platform="slack", user_id="UCAROL", email="carol@example.com")
    with pytest.raises(SeparationOfDuties) as refusal:
        await runtime.service.approve(carol_in_slack, request_id)
    await expect(reply).to_have_text(refusal.value.message)

    stored = await runtime.store.get(request_id)
    assert stored is not None
    assert stored.state is RequestState.PENDING and stored.approvals == ()
    await expect(page.locator("#audit-rows tr[data-kind='approved']")).to_have_count(0)
    await expect(page.locator("#state")).to_have_attribute("data-state", "pending")


@pytest.mark.timeout(120)
async def test_typed_markup_stays_text_and_deny_asks_why(
    served: tuple[TestServer, Runtime], browser_page: Any, screenshots: Screenshots
) -> None:
    page = browser_page
    note = "<img src=x onerror=\"document.body.dataset.pwned='yes'\"> [Approve here](https://evil.example)"
    reason = "<b>caller</b> could not be verified"
    server, runtime = served
    await open_page(page, str(server.make_url("/playground")))
    await page.select_option("#agent-as", "bob")
    await page.click("#agent-form-box summary")
    await page.select_option("#form-action", "reset-mfa")
    await page.select_option("#form-target", "@alice")
    await page.fill("#form-ticket", "INC-4004")
    await page.select_option("#form-reason", "lost-device")
    await page.fill("#form-note", note)
    await page.click("#form-open")
    await expect(page.locator("#agent-reply")).to_contain_text("opened")
    await expect(page.locator("#state")).to_have_attribute("data-state", "pending")

    approval_card = page.locator("#approver-card")
    await expect(approval_card).to_contain_text(note)
    for pane in ("#agent-card", "#owner-card", "#approver-card"):
        await expect(page.locator(f"{pane} img")).to_have_count(0)
        await expect(page.locator(f"{pane} a")).to_have_count(0)
    await screenshots.take("markup-shown-as-text")

    await expect(page.locator("#approver-as")).to_have_value("carol")
    deny = approval_card.get_by_role("button", name="Deny", exact=True)
    assert await pseudo_glyphs(page, "#approver-card") == [], "an icon font glyph nobody has"
    await deny.click()
    await approval_card.get_by_label("Why are you denying it?").fill(reason)
    await approval_card.get_by_role("button", name="Deny request").click()
    await expect(page.locator("#state")).to_have_attribute("data-state", "denied")
    await expect(approval_card).to_contain_text(f"Denied by carol: {reason}")
    await expect(page.locator("#agent-messages")).to_contain_text(reason)
    await expect(page.locator("#approver-card b")).to_have_count(0)
    await screenshots.take("denied-with-reason")

    assert (
        await page.locator("body").get_attribute("data-pwned") is None
    )  # bounded, unlike evaluate
    request_id = await page.locator("#request-select").input_value()
    stored = await runtime.store.get(request_id)
    assert stored is not None and stored.state is RequestState.DENIED
    assert stored.decision_reason == reason


PSEUDO_GLYPHS = """(root) => {
  const found = [];
  for (const node of document.querySelectorAll(root + ' *')) {
    for (const where of ['::before', '::after']) {
      const content = getComputedStyle(node, where).content;
      if ([...content].some((c) => c.codePointAt(0) >= 0xe000 && c.codePointAt(0) <= 0xf8ff)) {
        found.push(node.className + where);
      }
    }
  }
  return found;
}"""


async def pseudo_glyphs(page: Any, root: str) -> list[str]:
    """Icons drawn as private-use characters: they need an icon font, or they show as boxes."""
    return list(await run_js(page, PSEUDO_GLYPHS, root))


@pytest.mark.timeout(120)
async def test_switching_requests_switches_the_panes_and_forgets_old_replies(
    served: tuple[TestServer, Runtime], browser_page: Any, screenshots: Screenshots
) -> None:
    page = browser_page
    server, _ = served
    await open_page(page, str(server.make_url("/playground")))
    first = await run_as_agent(page, COMMAND)
    await page.locator("#owner-card").get_by_role("button", name="Yes, it was me").click()
    await expect(page.locator("#owner-reply")).to_contain_text("confirm")
    await page.fill("#agent-command", "help")
    await page.click("#agent-send")
    await expect(page.locator("#agent-reply")).to_contain_text("status <request-id>")
    assert "`" not in await page.locator("#agent-reply").inner_text()

    second = await run_as_agent(page, "/twokey reset-mfa @grace INC-1234 lost-device")
    await expect(page.locator("#owner-as")).to_have_value("grace")
    await expect(page.locator("#approver-as")).to_have_value("erin")
    await expect(page.locator("#owner-reply")).to_be_empty()
    await expect(page.locator("#owner-card")).to_contain_text(second)
    await expect(page.locator("#owner-messages")).not_to_contain_text(first)
    await screenshots.take("second-request")

    await page.select_option("#request-select", first)
    await expect(page.locator("#owner-as")).to_have_value("alice")
    await expect(page.locator("#approver-as")).to_have_value("carol")
    await expect(page.locator("#agent-reply")).to_be_empty()
    await expect(page.locator("#owner-card")).to_contain_text(first)
    await expect(page.locator("#approver-messages")).not_to_contain_text(second)

    await page.fill("#agent-command", "rest-mfa @alice INC-1234 lost-device")
    await page.click("#agent-send")
    await expect(page.locator("#agent-reply")).to_contain_text("Did you mean reset-mfa?")
    await expect(page.locator("#agent-reply")).to_have_attribute("data-kind", "error")


@pytest.mark.timeout(120)
async def test_a_dispute_changes_the_badge_and_the_reveal_offer(
    served: tuple[TestServer, Runtime], browser_page: Any, screenshots: Screenshots
) -> None:
    page = browser_page
    server, _ = served
    await open_page(page, str(server.make_url("/playground")))
    await run_as_agent(page, COMMAND)
    await page.locator("#owner-card").get_by_role("button", name="Yes, it was me").click()
    await expect(page.locator("#audit-rows tr[data-kind='owner_confirmed']")).to_have_count(1)
    await page.locator("#approver-card").get_by_role("button", name="Approve").click()
    await expect(page.locator("#state")).to_have_attribute("data-state", "completed")
    reveal = page.locator("#owner-secret-reveal")
    await expect(reveal).to_have_text("Reveal your temporary password (shown once)")

    await page.locator("#owner-card").get_by_role("button", name="This wasn't me").click()
    badge = page.locator("#state")
    await expect(badge).to_have_attribute("data-state", "disputed")
    await expect(badge).to_contain_text("disputed by the owner")
    await expect(reveal).to_contain_text("anyway")
    await expect(page.locator("#owner-secret-label")).to_contain_text("not yours")
    await expect(page.locator("#owner-card").get_by_role("button")).to_have_count(0)
    await screenshots.take("disputed")


@pytest.mark.timeout(120)
async def test_long_text_wraps_at_800_px_and_the_page_has_an_icon(
    served: tuple[TestServer, Runtime], browser_page: Any, screenshots: Screenshots
) -> None:
    page = browser_page
    server, _ = served
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    await page.set_viewport_size({"width": 800, "height": 900})
    await open_page(page, str(server.make_url("/playground")))
    unbroken = "W" * 480
    await page.fill("#agent-command", f"reset-mfa @alice INC-1234 lost-device {unbroken}")
    await page.click("#agent-send")
    await expect(page.locator("#agent-reply")).to_contain_text("opened")
    card = page.locator("#approver-card")
    await expect(card).to_contain_text(unbroken[:100])
    await card.get_by_role("button", name="Deny", exact=True).click()
    await card.get_by_label("Why are you denying it?").fill("R" * 400)
    await card.get_by_role("button", name="Deny request").click()
    await expect(page.locator("#state")).to_have_attribute("data-state", "denied")
    await expect(page.locator("#agent-messages")).to_contain_text("R" * 100)
    await screenshots.take("narrow")

    width = await run_js(page, "() => document.documentElement.scrollWidth")
    assert width <= 800, f"the page is {width} px wide in an 800 px window"

    icon = await page.locator("link[rel='icon']").get_attribute("href")
    assert icon
    answer = await page.request.get(str(server.make_url(icon)))
    assert answer.status == 200 and answer.headers["content-type"].startswith("image/svg+xml")
    assert failed == []
