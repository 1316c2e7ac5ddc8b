""" "No, this wasn't me": the request stops, the security channel is alerted, every card says
so, and the target is flagged (the next request on it gets the strictest tier)."""

from __future__ import annotations

import json

from slack_standin import SECURITY
from slack_world import SlackWorld


async def test_the_owner_saying_no_stops_it_and_alerts_security(world: SlackWorld) -> None:
    request = await world.open_request()
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    card = world.card(request.id, "approvers")
    assert card is not None
    await world.click("U0ALICE", owner, "reject")
    assert "security team has been told" in await world.ephemeral_to("U0ALICE")
    rejected = await world.settled(request.id, "rejected_by_owner")
    alert = await world.slack.until(lambda: world.slack.in_channel(SECURITY))
    words = json.dumps(alert[-1].blocks)
    assert request.id in words and "wasn" in words
    await world.slack.until(lambda: "Rejected by the owner" in json.dumps(card.blocks))
    await world.slack.until(lambda: '"actions"' not in json.dumps(owner.blocks))
    assert world.connector.changes == []
    assert rejected.decided_by == "alice"

    again = await world.open_request()
    assert again.plan.tier == "strictest"
    assert "Flagged target" in json.dumps(world.card(again.id, "approvers").blocks)  # type: ignore[union-attr]


async def test_a_privileged_target_is_shown_prominently_and_alerted(world: SlackWorld) -> None:
    request = await world.open_request("reset-password <@U0GRACE> INC-2001 forgotten-password")
    assert request.plan.privileged
    card = world.card(request.id, "approvers")
    assert card is not None
    banner = json.dumps(card.blocks[1])
    assert "Privileged account" in banner and "rotating_light" in banner
    assert "0 of 2" in json.dumps(card.blocks)
    alerts = await world.slack.until(lambda: world.slack.in_channel(SECURITY))
    assert request.id in json.dumps(alerts[-1].blocks)


async def test_the_owner_can_dispute_a_completed_change(world: SlackWorld) -> None:
    request = await world.open_request()
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    await world.click("U0ALICE", owner, "confirm")
    await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
    card = world.card(request.id, "approvers")
    assert card is not None
    await world.click("U0CAROL", card, "approve")
    await world.settled(request.id, "completed")
    await world.slack.until(lambda: "twokey.dispute" in json.dumps(owner.blocks))
    await world.click("U0ALICE", owner, "dispute")
    disputed = await world.stored(request.id, lambda r: r.disputed_at is not None)
    assert disputed.state.value == "completed"
    alerts = await world.slack.until(
        lambda: [m for m in world.slack.in_channel(SECURITY) if "DISPUTED" in json.dumps(m.blocks)]
    )
    assert request.id in json.dumps(alerts[-1].blocks)
    await world.slack.until(lambda: "Disputed by the owner" in json.dumps(card.blocks))
    await world.slack.until(lambda: "twokey.dispute" not in json.dumps(owner.blocks))
