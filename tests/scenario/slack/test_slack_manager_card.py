"""The owner's manager attests on a card in Slack: signed block_actions through the real app.

The sandbox directory names Dave as Alice's manager of record. He gets a card in his DM, "Did
you confirm with Alice by phone or in person that they asked for reset MFA?", with Yes / No;
only he may answer, once, and the card then shows his answer with no button left.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from slack_standin import SECURITY, Message, SlackStandIn
from slack_world import SlackWorld, slack_policy, start_world, stop_world

from app.domain.models import Request, RequestState
from app.service import StepUpOptions
from app.store.keys import shard_of_request

STEP_UP = "    step_up: {owner: [manager]}\n"


@pytest.fixture
async def stepped(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> AsyncIterator[SlackWorld]:
    policy = (
        slack_policy()
        .replace(
            "  standard:\n    label: Standard\n", "  standard:\n    label: Standard\n" + STEP_UP
        )
        .replace(
            "  strictest:\n    label: Flagged target\n",
            "  strictest:\n    label: Flagged target\n" + STEP_UP,
        )
    )
    world = await start_world(slack, redis_client, namespace, policy=policy)
    world.runtime.service.step_up = StepUpOptions(code_key=b"slack-manager-card-test-key")
    try:
        yield world
    finally:
        await stop_world(world)


def manager_card(world: SlackWorld, request_id: str) -> Message | None:
    channel = world.slack.dm_of("U0DAVE") or ""
    for message in world.slack.in_channel(channel, thread=False):
        shown = json.dumps(message.blocks)
        if request_id in shown and "Did you confirm it with them?" in shown:
            return message
    return None


def has_buttons(message: Message) -> bool:
    return any(block.get("type") == "actions" for block in message.blocks)


async def asked(world: SlackWorld) -> tuple[Request, Message]:
    request = await world.open_request()
    card = await world.slack.until(lambda: manager_card(world, request.id))
    return request, card


async def audit(world: SlackWorld, request_id: str) -> list[dict[str, Any]]:
    key = world.runtime.store.keys.audit(shard_of_request(request_id))
    events = [json.loads(fields["e"]) for _, fields in await world.redis.xrange(key)]
    return [e for e in events if e["rid"] == request_id]


async def test_the_manager_presses_yes_and_the_request_moves_on(stepped: SlackWorld) -> None:
    world = stepped
    request, card = await asked(world)
    shown = json.dumps(card.blocks)
    assert "Did you confirm with Alice Adams by phone or in person" in shown
    assert "reset MFA" in shown and has_buttons(card)
    assert [e["value"] for b in card.blocks if b["type"] == "actions" for e in b["elements"]] == [
        f"attest_yes:{request.id}",
        f"attest_no:{request.id}",
    ]  # only the action and the request id (invariant 7)
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    await world.click("U0ALICE", owner, "confirm")
    approval = world.card(request.id, "approvers")
    assert approval is not None
    await world.click("U0CAROL", approval, "approve")
    await world.stored(request.id, lambda r: len(r.approvals) == 1)
    assert world.connector.changes == []

    assert (await world.click("U0DAVE", card, "attest_yes")).status == 200
    await world.settled(request.id, RequestState.COMPLETED.value)
    await world.shown_on_card(card, "You confirmed it with them", "Completed")
    assert not has_buttons(card)
    passed = [e for e in await audit(world, request.id) if e["kind"] == "step_up_passed"]
    assert [(e["actor"], e["role"]) for e in passed] == [("dave", "manager")]


async def test_the_manager_presses_no_and_the_request_stays_blocked(stepped: SlackWorld) -> None:
    world = stepped
    request, card = await asked(world)
    assert (await world.click("U0DAVE", card, "attest_no")).status == 200
    stored = await world.stored(request.id, lambda r: r.step_up_failures == 1)
    assert stored.state is RequestState.PENDING and stored.step_up_at is None
    assert "did not confirm" in await world.ephemeral_to("U0DAVE")
    await world.shown_on_card(card, "You could not confirm it")
    assert not has_buttons(card)
    alerts = await world.slack.until(lambda: world.slack.in_channel(SECURITY))
    assert any("did not confirm" in json.dumps(m.blocks) for m in alerts)
    assert world.connector.changes == []


async def test_someone_else_pressing_is_refused_and_nothing_changes(stepped: SlackWorld) -> None:
    world = stepped
    request, card = await asked(world)
    before = await world.runtime.store.get(request.id)
    for who in ("U0ERIN", "U0BOB", "U0CAROL"):  # a stranger, the requester, an approver
        payload = world.click_payload(who, card, "attest_yes")
        assert (await world.interact(payload)).status == 200
        # not in Dave's DM, so Slack refuses an ephemeral there: the click's response_url
        # answers the presser alone
        url = payload["response_url"]
        refusal = (await world.slack.until(lambda u=url: world.slack.hook_posts(u)))[-1]
        assert refusal["response_type"] == "ephemeral" and not refusal["replace_original"]
        assert "Only the owner's manager of record" in json.dumps(refusal)
    after = await world.runtime.store.get(request.id)
    assert before is not None and after is not None
    assert (after.state, after.step_up_at, after.step_up_failures) == (
        RequestState.PENDING,
        None,
        0,
    )
    assert {e["actor"] for e in await audit(world, request.id) if e["kind"] == "refused"} == {
        "erin",
        "bob",
        "carol",
    }
    assert has_buttons(card) and not world.slack.ephemerals_to("U0DAVE")


async def test_a_double_press_decides_once(stepped: SlackWorld) -> None:
    world = stepped
    request, card = await asked(world)
    first, second = await asyncio.gather(
        world.click("U0DAVE", card, "attest_yes"), world.click("U0DAVE", card, "attest_no")
    )
    assert first.status == second.status == 200
    await world.stored(request.id, lambda r: r.step_up_at is not None or r.step_up_failures > 0)
    await asyncio.sleep(0.3)
    kinds = [e["kind"] for e in await audit(world, request.id)]
    assert kinds.count("step_up_passed") + kinds.count("step_up_failed") == 1
    await world.slack.until(lambda: not has_buttons(card))


async def test_the_typed_attest_command_still_works_and_updates_the_card(
    stepped: SlackWorld,
) -> None:
    world = stepped
    request, card = await asked(world)
    _, form = await world.command("U0DAVE", f"attest {request.id} yes")
    assert "confirmation is recorded" in await world.receipt(form)
    await world.shown_on_card(card, "You confirmed it with them")
    assert not has_buttons(card)
