"""The command words: help, malformed text, status, list, cancel, breakglass and NHI targets."""

from __future__ import annotations

import asyncio
import json

from slack_standin import SECURITY
from slack_world import SlackWorld


async def test_help_is_answered_in_the_ack(world: SlackWorld) -> None:
    response, _ = await world.command("U0BOB", "help")
    body = await response.json()
    assert body["response_type"] == "ephemeral"
    assert "two-person rule" in body["text"]
    assert "&lt;ticket&gt;" in body["text"] and "<ticket>" not in body["text"]
    assert [c.method for c in world.slack.calls] == ["auth.test"]  # Bolt's one-time check


async def test_malformed_text_gets_a_specific_error_and_the_usage(world: SlackWorld) -> None:
    for text, words in [
        ("reset-everything <@U0ALICE> INC-1 lost-device", "is not an action"),
        ("reset-mfa <@U0ALICE>", "Not enough words"),
        ("status", "status &lt;request-id&gt;"),
        ("status TK-NOPE", "not a request id"),
        ("list me", "takes no arguments"),
    ]:
        response, _ = await world.command("U0BOB", text)
        body = await response.json()
        assert words in body["text"], (text, body["text"])
    await asyncio.sleep(0.2)
    assert await world.runtime.store.open_requests() == []
    assert world.slack.of("users.info") == []


async def test_a_target_that_is_not_a_mention_is_refused(world: SlackWorld) -> None:
    _, form = await world.command("U0BOB", "reset-mfa @alice INC-1234 lost-device")
    assert "@-mention" in await world.receipt(form)
    assert await world.runtime.store.open_requests() == []


async def test_a_bad_ticket_or_reason_is_refused_with_the_policys_words(world: SlackWorld) -> None:
    _, form = await world.command("U0BOB", "reset-mfa <@U0ALICE> 1234 lost-device")
    assert "does not look like a ticket id" in await world.receipt(form)
    _, form = await world.command("U0BOB", "reset-mfa <@U0ALICE> INC-1234 because")
    assert "not one of" in await world.receipt(form)
    assert await world.runtime.store.open_requests() == []


async def test_an_agent_without_the_helpdesk_role_cannot_open(world: SlackWorld) -> None:
    _, form = await world.command("U0CAROL", "reset-mfa <@U0ALICE> INC-1234 lost-device")
    assert "helpdesk role" in await world.receipt(form)


async def test_status_list_and_cancel(world: SlackWorld) -> None:
    request = await world.open_request()
    _, form = await world.command("U0BOB", f"status {request.id.lower()}")
    status = await world.receipt(form)
    assert request.id in status and "Waiting" in status and "Alice Adams" in status

    _, form = await world.command("U0CAROL", "list")
    listing = await world.receipt(form)
    assert "Waiting for your approval" in listing and request.id in listing

    _, form = await world.command("U0FRANK", f"status {request.id}")
    assert "Waiting" in await world.receipt(form)  # security may read any request

    _, form = await world.command("U0BOB", f"cancel {request.id}")
    assert "cancelled" in await world.receipt(form)
    await world.settled(request.id, "cancelled")
    card = world.card(request.id, "approvers")
    assert card is not None
    await world.slack.until(lambda: "Cancelled" in json.dumps(card.blocks))


async def test_the_requester_can_cancel_from_their_card(world: SlackWorld) -> None:
    request = await world.open_request()
    mine = await world.slack.until(lambda: world.card(request.id, "requester", "U0BOB"))
    await world.click("U0BOB", mine, "cancel")
    await world.settled(request.id, "cancelled")
    await world.slack.until(lambda: "twokey.cancel" not in json.dumps(mine.blocks))


async def test_a_production_nhi_rotation_goes_to_its_owner_and_security(world: SlackWorld) -> None:
    request = await world.open_request("rotate-secret nhi:billing-api CHG-7001 scheduled-rotation")
    assert request.owner_id == "alice" and request.plan.tier == "production-nhi"
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    assert "Billing API" in json.dumps(owner.blocks)
    card = world.card(request.id, "approvers")
    assert card is not None and "production non-human identity" in json.dumps(card.blocks)
    await world.slack.until(lambda: world.slack.in_channel(SECURITY))


async def test_breakglass_opens_alerts_and_waits_only_for_the_owner(world: SlackWorld) -> None:
    text = "breakglass unlock <@U0ALICE> INC-9000 CEO locked out before the board call"
    _, form = await world.command("U0ERIN", text)
    receipt = await world.receipt(form)
    assert "opened" in receipt, receipt
    rid = receipt.split("Request ", 1)[1].split(" ", 1)[0]
    card = await world.slack.until(lambda: world.card(rid, "approvers"))
    assert "Break-glass" in json.dumps(card.blocks)
    assert "CEO locked out" in json.dumps(card.blocks)
    alerts = await world.slack.until(lambda: world.slack.in_channel(SECURITY))
    assert rid in json.dumps([m.blocks for m in alerts])
    owner = await world.slack.until(lambda: world.card(rid, "owner", "U0ALICE"))
    await world.click("U0ALICE", owner, "confirm")
    await world.settled(rid, "completed")


async def test_breakglass_needs_the_role(world: SlackWorld) -> None:
    _, form = await world.command(
        "U0BOB", "breakglass unlock <@U0ALICE> INC-9000 it is an emergency really"
    )
    assert "breakglass role" in await world.receipt(form)
