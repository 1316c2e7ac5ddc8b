"""The owner's manager attests on an Adaptive Card in Teams: Dave, Alice's manager of record,
presses "Yes, I confirmed it with them" in his 1:1 chat and the request moves on; anyone else
pressing it is refused on the card they pressed, and nothing changes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from teams_standin import APPROVALS, TeamsStandIn, dm_of
from teams_world import TeamsWorld, buttons, start_world, stop_world, teams_policy

from app.domain.models import RequestState
from app.service import StepUpOptions

STEP_UP = "    step_up: {owner: [manager]}\n"
QUESTION = "Did you confirm it with them?"


def stepped_policy() -> str:
    return (
        teams_policy()
        .replace(
            "  standard:\n    label: Standard\n", "  standard:\n    label: Standard\n" + STEP_UP
        )
        .replace(
            "  strictest:\n    label: Flagged target\n",
            "  strictest:\n    label: Flagged target\n" + STEP_UP,
        )
    )


@pytest.fixture
async def stepped(
    teams: TeamsStandIn, redis_client: aioredis.Redis, namespace: str
) -> AsyncIterator[TeamsWorld]:
    world = await start_world(teams, redis_client, namespace, policy=stepped_policy())
    world.runtime.service.step_up = StepUpOptions(code_key=b"teams-manager-card-test-key")
    try:
        yield world
    finally:
        await stop_world(world)


async def test_the_manager_presses_yes_and_the_request_moves_on(stepped: TeamsWorld) -> None:
    world = stepped
    request = await world.open_request()
    card = await world.card(dm_of("dave"), request.id, QUESTION)
    assert "by phone or in person" in card.text
    assert set(buttons(card.card)) == {"attest_yes", "attest_no"}
    owner = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    await world.press("alice", owner, "confirm")
    await world.press("carol", await world.card(APPROVALS, request.id), "approve")
    await world.stored(request.id, lambda r: len(r.approvals) == 1)
    assert world.connector.changes == []

    answer = await world.press("dave", card, "attest_yes")
    shown = json.dumps(answer["value"])
    assert "You confirmed it with them" in shown and "Action.Execute" not in shown
    await world.stored(request.id, lambda r: r.state is RequestState.COMPLETED)
    await world.teams.until(lambda: "Completed" in card.text and not buttons(card.card) and card)


async def test_someone_else_pressing_is_refused_and_nothing_changes(stepped: TeamsWorld) -> None:
    world = stepped
    request = await world.open_request()
    card = await world.card(dm_of("dave"), request.id, QUESTION)
    answer = await world.press("erin", card, "attest_yes")
    shown = json.dumps(answer["value"])
    assert "Only the owner" in shown and "attest_yes" in shown  # his card, still open
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.step_up_at is None and stored.step_up_failures == 0
    assert stored.state is RequestState.PENDING and set(buttons(card.card)) == {
        "attest_yes",
        "attest_no",
    }


async def test_a_manager_teams_cannot_reach_is_never_promised_to_the_owner(
    teams: TeamsStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    """Dave never opened twokey in Teams: no card can reach him, so Alice is not told to
    expect his call (one that never comes is one a caller could fake); Bob hears it stays
    blocked and why."""
    everyone_but_dave = ("alice", "bob", "carol", "erin", "frank", "ivan")
    world = await start_world(
        teams, redis_client, namespace, policy=stepped_policy(), install=everyone_but_dave
    )
    world.runtime.service.step_up = StepUpOptions(code_key=b"teams-manager-card-test-key")
    try:
        request = await world.open_request()
        to_alice = await world.card(dm_of("alice"), request.id, "nobody is calling you")
        assert "could not reach them in chat" in to_alice.text
        await world.card(dm_of("bob"), request.id, "stays blocked")
        alice_saw = " ".join(m.text for m in world.teams.messages.get(dm_of("alice"), []))
        assert "Expect their call" not in alice_saw
        assert dm_of("dave") not in world.teams.messages
        stored = await world.runtime.store.get(request.id)
        assert stored is not None and stored.state is RequestState.PENDING
    finally:
        await stop_world(world)
