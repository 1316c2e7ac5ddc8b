"""Double clicks and Slack's retried deliveries change nothing twice: one approval, one
execution, one audit event per change."""

from __future__ import annotations

import asyncio
import json

from slack_standin import APPROVALS
from slack_world import SlackWorld

from app.store.keys import shard_of_request


async def audit_kinds(world: SlackWorld, request_id: str) -> list[str]:
    entries = await world.redis.xrange(world.runtime.store.keys.audit(shard_of_request(request_id)))
    events = [json.loads(fields["e"]) for _, fields in entries]
    return [e["kind"] for e in events if e["rid"] == request_id]


async def test_a_double_click_on_approve_executes_once(world: SlackWorld) -> None:
    request = await world.open_request()
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    await world.click("U0ALICE", owner, "confirm")
    await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
    card = world.card(request.id, "approvers")
    assert card is not None
    # two presses of the same button: two deliveries with two trigger ids, at the same time
    first, second = await asyncio.gather(
        world.click("U0CAROL", card, "approve"), world.click("U0CAROL", card, "approve")
    )
    assert first.status == second.status == 200
    await world.settled(request.id, "completed")
    # the press that counted is answered by the card; the other one hears it was already done
    answers = await world.slack.until(lambda: world.slack.ephemerals_to("U0CAROL"))
    await world.shown_on_card(card, "Carol Chen", "Completed")
    assert len(answers) == 1 and "already" in json.dumps(answers)
    assert len(world.connector.changes) == 1
    kinds = await audit_kinds(world, request.id)
    assert kinds.count("approved") == 1 and kinds.count("executed") == 1
    thread = await world.slack.until(lambda: world.slack.replies(APPROVALS, card.ts))
    await asyncio.sleep(0.2)
    assert [m.ts for m in world.slack.replies(APPROVALS, card.ts)] == [thread[0].ts]
    assert "Completed" in json.dumps(thread[0].blocks)


async def test_a_retried_delivery_of_a_click_is_acted_on_once(world: SlackWorld) -> None:
    request = await world.open_request()
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    payload = world.click_payload("U0ALICE", owner, "confirm")
    assert (await world.interact(payload)).status == 200
    await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
    for attempt in ("1", "2"):
        again = await world.interact(
            payload, **{"X-Slack-Retry-Num": attempt, "X-Slack-Retry-Reason": "http_timeout"}
        )
        assert again.status == 200
    await asyncio.sleep(0.3)
    assert len(world.slack.ephemerals_to("U0ALICE")) == 1
    kinds = await audit_kinds(world, request.id)
    assert kinds == ["opened", "owner_confirmed"]
    assert len([c for c in world.slack.of("users.info") if c.params.get("user") == "U0ALICE"]) == 2
