"""A 200 to Slack comes once the decision is stored, never before, and never waits for the
cards or the identity provider; a stopping server refuses new deliveries instead of dropping them.
"""

from __future__ import annotations

import asyncio
import json
import time

from slack_world import SlackWorld

from app.channels.slack.handlers import ACK_WITHIN_S
from app.domain.models import Request, RequestState


async def confirmed_by_owner(world: SlackWorld) -> Request:
    """A request whose owner has confirmed and whose cards show it: only Carol's click is left."""
    request = await world.open_request()
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    assert (await world.click("U0ALICE", owner, "confirm")).status == 200
    await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
    card = world.card(request.id, "approvers")
    assert card is not None
    await world.slack.until(lambda: "Alice Adams at" in json.dumps(card.blocks))
    return request


async def test_the_ack_comes_once_the_approval_is_stored_before_cards_and_execution(
    world: SlackWorld,
) -> None:
    request = await confirmed_by_owner(world)
    card = world.card(request.id, "approvers")
    assert card is not None
    slow_lookup = world.slack.hold("users.info")  # the gate cannot run yet
    slow_cards = world.slack.hold("chat.update")  # everything after the gate waits on Slack
    started = time.monotonic()
    click = asyncio.create_task(world.click("U0CAROL", card, "approve"))
    await asyncio.sleep(0.3)
    assert not click.done(), "acked before the approval was stored"
    slow_lookup.set()
    answer = await click
    assert answer.status == 200
    assert time.monotonic() - started < ACK_WITHIN_S, "the ack waited for the cards"
    at_ack = await world.runtime.store.get(request.id)
    assert at_ack is not None
    assert [a.approver_id for a in at_ack.approvals] == ["carol"]
    assert at_ack.state is RequestState.READY, "the ack waited for the execution"
    assert world.connector.changes == []
    slow_cards.set()
    await world.settled(request.id, "completed")
    # carol's answer is the card she pressed: it shows her approval and the outcome
    await world.shown_on_card(card, "Carol Chen", "Completed")
    assert world.slack.ephemerals_to("U0CAROL") == []
    assert len(world.connector.changes) == 1


async def test_a_slow_slack_before_the_gate_still_gets_its_ack_in_time(world: SlackWorld) -> None:
    request = await confirmed_by_owner(world)
    card = world.card(request.id, "approvers")
    assert card is not None
    slow_lookup = world.slack.hold("users.info")  # who clicked cannot be known yet
    started = time.monotonic()
    answer = await world.click("U0CAROL", card, "approve")
    assert answer.status == 200
    assert time.monotonic() - started < 3.0, "Slack gives up after 3 seconds"
    slow_lookup.set()
    done = await world.settled(request.id, "completed")
    assert [a.approver_id for a in done.approvals] == ["carol"]
    await world.shown_on_card(card, "Carol Chen", "Completed")


async def test_a_stopping_server_refuses_new_deliveries_and_changes_nothing(
    world: SlackWorld,
) -> None:
    request = await confirmed_by_owner(world)
    card = world.card(request.id, "approvers")
    assert card is not None
    world.runtime.stop_accepting()
    answer = await world.click("U0CAROL", card, "approve")
    assert answer.status == 503
    assert (await answer.json())["error"] == "shutting_down"
    assert (await world.http.get("/readyz")).status == 503
    assert (await world.http.get("/healthz")).status == 200
    assert await world.runtime.stop(within=5) is True
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and not stored.approvals and stored.state is RequestState.PENDING
    assert world.slack.ephemerals_to("U0CAROL") == []
