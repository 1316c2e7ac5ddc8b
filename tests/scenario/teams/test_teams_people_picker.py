"""The request form's people picker, through POST /api/messages and the Bot Connector stand-in:
the picked Entra object id is looked up in the roster and resolved to one directory person."""

from __future__ import annotations

import json

from teams_standin import APPROVALS, dm_of
from teams_world import TeamsWorld, walk

from app.domain.models import RequestState

FORM = {"action": "reset-mfa", "ticket": "INC-4321", "reason_code": "lost-device"}


async def test_a_picked_person_is_the_target_of_the_request(world: TeamsWorld) -> None:
    assert (await world.say("bob", "")).status == 200
    form = await world.card(dm_of("bob"), "Ask for an identity change")
    picker = next(n for n in walk(form.card) if n.get("id") == "picked")
    assert picker["type"] == "Input.ChoiceSet" and picker["isMultiSelect"] is False
    assert picker["choices.data"]["dataset"] == "graph.microsoft.com/users"

    answer = await world.press("bob", form, "open", picked="aad-alice", **FORM)
    assert "Request opened" in json.dumps(answer["value"])
    approval = await world.card(APPROVALS, "INC-4321")
    request_id = next(
        f["value"]
        for n in walk(approval.card)
        if n.get("type") == "FactSet"
        for f in n["facts"]
        if f["title"] == "Request"
    )
    stored = await world.runtime.store.get(request_id)
    assert stored is not None and stored.state is RequestState.PENDING
    assert (stored.target_id, stored.requester_id) == ("alice", "bob")
    assert ("a:dm-bob", "aad-alice") in world.teams.member_lookups  # 404 in bob's 1:1 chat...
    assert (APPROVALS, "aad-alice") in world.teams.member_lookups  # ...so the team's roster
    await world.card(dm_of("alice"), request_id, "Did you ask for this?")


async def test_someone_teams_does_not_know_is_refused_on_the_form(world: TeamsWorld) -> None:
    assert (await world.say("bob", "")).status == 200
    form = await world.card(dm_of("bob"), "Ask for an identity change")
    answer = await world.press("bob", form, "open", picked="aad-nobody", **FORM)
    shown = json.dumps(answer["value"])
    assert "Teams does not know this user." in shown and "Request opened" not in shown
    assert world.teams.find(APPROVALS, "INC-4321") is None
    assert world.connector.changes == []
