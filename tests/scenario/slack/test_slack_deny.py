"""Deny asks for a reason in a modal, validated in place; the denial updates every card, is
told in the card's thread and to the requester."""

from __future__ import annotations

import json
from typing import Any

from slack_standin import APPROVALS
from slack_world import SlackWorld

from app.domain.forms import REASON_MAX


def reason(text: str) -> dict[str, dict[str, dict[str, Any]]]:
    return {"reason": {"value": {"type": "plain_text_input", "value": text}}}


async def test_deny_opens_a_reason_form_and_denies_with_that_reason(world: SlackWorld) -> None:
    request = await world.open_request()
    card = world.card(request.id, "approvers")
    assert card is not None
    await world.click("U0CAROL", card, "deny")
    opened = await world.slack.until(lambda: world.slack.of("views.open"))
    assert opened[-1].ok, opened[-1].answer
    view = opened[-1].answer["view"]
    assert view["callback_id"] == "twokey.deny"
    assert request.id in view["private_metadata"]

    # an empty reason and an over-long one are refused in place; nothing changes
    for bad in ("   ", "r" * (REASON_MAX + 1)):
        response = await world.interact(world.submission("U0CAROL", view, reason(bad)))
        answer = await response.json()
        assert answer["response_action"] == "errors"
        assert set(answer["errors"]) == {"reason"}
    assert (await world.runtime.store.get(request.id)).state.value == "pending"  # type: ignore[union-attr]

    response = await world.interact(
        world.submission("U0CAROL", view, reason("Caller failed the callback check"))
    )
    assert response.status == 200 and (await response.text()) == ""
    denied = await world.settled(request.id, "denied")
    assert denied.decided_by == "carol"
    assert denied.decision_reason == "Caller failed the callback check"
    await world.slack.until(lambda: "Denied by Carol Chen" in json.dumps(card.blocks))
    assert "twokey.approve" not in json.dumps(card.blocks)
    thread = await world.slack.until(lambda: world.slack.replies(APPROVALS, card.ts))
    assert "Caller failed the callback check" in json.dumps(thread[-1].blocks)
    bob_dm = world.slack.dm_of("U0BOB") or ""
    await world.slack.until(lambda: any("denied" in m.text for m in world.slack.in_channel(bob_dm)))
    # carol's answer is the card she pressed, now showing her denial: nothing more to say
    assert world.slack.ephemerals_to("U0CAROL") == []
    assert world.connector.changes == []


async def test_the_requester_cannot_deny_their_own_request_through_the_form(
    world: SlackWorld,
) -> None:
    request = await world.open_request()
    card = world.card(request.id, "approvers")
    assert card is not None
    await world.click("U0BOB", card, "deny")
    opened = await world.slack.until(lambda: world.slack.of("views.open"))
    view = opened[-1].answer["view"]
    await world.interact(world.submission("U0BOB", view, reason("I changed my mind")))
    assert "part of this request" in await world.ephemeral_to("U0BOB")
    assert (await world.runtime.store.get(request.id)).state.value == "pending"  # type: ignore[union-attr]


async def test_a_deny_form_slack_could_not_open_is_explained(world: SlackWorld) -> None:
    request = await world.open_request()
    card = world.card(request.id, "approvers")
    assert card is not None
    world.slack.fail("views.open", "expired_trigger_id")
    await world.click("U0CAROL", card, "deny")
    assert "press Deny again" in await world.ephemeral_to("U0CAROL")
