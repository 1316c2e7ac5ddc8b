"""Reminders and escalations reach the approvers in the card's thread (shown in the channel);
a policy that DMs approvers gives each of them their own card, updated like the others."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis
from slack_standin import APPROVALS, SlackStandIn
from slack_world import slack_policy, start_world, stop_world


async def test_a_reminder_is_broadcast_from_the_cards_thread(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    world = await start_world(
        slack, redis_client, namespace, policy=slack_policy(remind_after="1s", escalate_after="")
    )
    try:
        request = await world.open_request()
        card = world.card(request.id, "approvers")
        assert card is not None
        await asyncio.sleep(1.2)
        report = await world.runtime.service.expire_due()
        assert report.changes.get("REMIND") == 1
        reminder = await slack.until(lambda: slack.replies(APPROVALS, card.ts))
        assert "Reminder" in json.dumps(reminder[-1].blocks)
        sent = [c for c in slack.of("chat.postMessage") if c.params.get("reply_broadcast")]
        assert sent and sent[-1].params["thread_ts"] == card.ts
        alice_dm = slack.dm_of("U0ALICE") or ""
        await slack.until(lambda: any("Reminder" in m.text for m in slack.in_channel(alice_dm)))
    finally:
        await stop_world(world)


async def test_an_escalation_lets_security_decide_and_says_so(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    world = await start_world(
        slack, redis_client, namespace, policy=slack_policy(remind_after="", escalate_after="1s")
    )
    try:
        request = await world.open_request()
        card = world.card(request.id, "approvers")
        assert card is not None
        await asyncio.sleep(1.2)
        await world.runtime.service.expire_due()
        await slack.until(
            lambda: "Escalated" in json.dumps([m.blocks for m in slack.replies(APPROVALS, card.ts)])
        )
        owner = await slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
        await world.click("U0ALICE", owner, "confirm")
        await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
        await world.click("U0FRANK", card, "approve")  # security, allowed once escalated
        await world.settled(request.id, "completed")
    finally:
        await stop_world(world)


async def test_approvers_get_their_own_card_when_the_policy_says_so(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    world = await start_world(
        slack, redis_client, namespace, policy=slack_policy(dm_approvers=True)
    )
    try:
        request = await world.open_request()
        carol = await slack.until(lambda: world.card(request.id, "approver-dm", "U0CAROL"))
        dave = await slack.until(lambda: world.card(request.id, "approver-dm", "U0DAVE"))
        assert world.card(request.id, "approver-dm", "U0HEIDI") is None, "not an approver"
        owner = await slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
        await world.click("U0ALICE", owner, "confirm")
        await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
        await world.click("U0DAVE", dave, "approve")
        await world.settled(request.id, "completed")
        await slack.until(lambda: "Completed" in json.dumps(carol.blocks))
        assert "twokey.approve" not in json.dumps(carol.blocks)
    finally:
        await stop_world(world)
