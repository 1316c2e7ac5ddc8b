"""Approve after expiry: the click is refused, and every card says the request expired; the
sweeper does the same for requests nobody touches."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis
from slack_standin import APPROVALS, SlackStandIn
from slack_world import SlackWorld, slack_policy, start_world, stop_world


async def expiring_world(slack: SlackStandIn, redis: aioredis.Redis, namespace: str) -> SlackWorld:
    return await start_world(
        slack,
        redis,
        namespace,
        policy=slack_policy(request_ttl="1s", remind_after="", escalate_after=""),
    )


async def test_approve_after_expiry_is_refused_and_the_cards_say_expired(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    world = await expiring_world(slack, redis_client, namespace)
    try:
        request = await world.open_request()
        card = world.card(request.id, "approvers")
        owner = await slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
        assert card is not None
        await asyncio.sleep(1.2)
        await world.click("U0CAROL", card, "approve")
        answer = await world.ephemeral_to("U0CAROL")
        assert "expired" in answer and "nothing was done" in answer
        stored = await world.settled(request.id, "expired")
        assert stored.approvals == ()
        assert world.connector.changes == []
        await slack.until(lambda: "Expired" in json.dumps(card.blocks))
        await slack.until(lambda: "Expired" in json.dumps(owner.blocks))
        for message in (card, owner):
            assert '"actions"' not in json.dumps(message.blocks), "no buttons once it is over"
        thread = await slack.until(lambda: slack.replies(APPROVALS, card.ts))
        assert "Expired" in json.dumps(thread[-1].blocks)
    finally:
        await stop_world(world)


async def test_the_sweeper_updates_the_cards_of_a_request_nobody_touched(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    world = await expiring_world(slack, redis_client, namespace)
    try:
        request = await world.open_request()
        card = world.card(request.id, "approvers")
        requester = await slack.until(lambda: world.card(request.id, "requester", "U0BOB"))
        assert card is not None
        await asyncio.sleep(1.2)
        report = await world.runtime.service.expire_due()
        assert report.changes.get("EXPIRED") == 1
        await slack.until(lambda: "Expired" in json.dumps(card.blocks))
        await slack.until(lambda: "Expired" in json.dumps(requester.blocks))
        assert "twokey.cancel" not in json.dumps(requester.blocks)
        bob_dm = slack.dm_of("U0BOB") or ""
        await slack.until(lambda: any("expired" in m.text for m in slack.in_channel(bob_dm)))
    finally:
        await stop_world(world)
