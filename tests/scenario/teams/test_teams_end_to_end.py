"""Command -> owner 1:1 card -> approval card -> exactly one execution -> every card updated."""

from __future__ import annotations

from teams_standin import APPROVALS, dm_of
from teams_world import TeamsWorld, buttons


async def test_a_request_runs_once_both_keys_turned_and_every_card_follows(
    world: TeamsWorld,
) -> None:
    request = await world.open_request()
    owner_card = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    approval = await world.card(APPROVALS, request.id)
    assert set(buttons(approval.card)) == {"approve", "deny"}

    confirmed = await world.press("alice", owner_card, "confirm")
    assert confirmed["statusCode"] == 200
    assert "confirm" not in buttons(confirmed["value"])

    approved = await world.press("carol", approval, "approve")
    assert "approve" not in buttons(approved["value"])
    done = await world.stored(request.id, lambda r: r.state.value == "completed")
    assert [c.request_id for c in world.connector.changes] == [request.id]
    assert done.decided_by is None or done.decided_by
    approval_now = world.teams.find(APPROVALS, request.id)
    assert approval_now is not None and "Completed" in approval_now.text
    assert not world.teams.unauthorized
    assert world.teams.tokens_issued == 1
