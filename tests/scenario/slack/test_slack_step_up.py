"""Step-up on Slack: the owner is told what happens next, types `/twokey verify TK-… CODE`,
and every card shows where the step-up stands; nothing runs before it passed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from slack_standin import SlackStandIn
from slack_world import SlackWorld, slack_policy, start_world, stop_world

from app.domain.models import RequestState
from app.mail import SmtpCodeSender
from app.service import StepUpOptions
from tests.smtp_inbox import Inbox

STEP_UP = "  standard:\n    label: Standard\n    step_up: {owner: [email_code]}\n"


@pytest.fixture
async def stepped(
    slack: SlackStandIn,
    redis_client: aioredis.Redis,
    namespace: str,
    inbox: tuple[Inbox, int],
) -> AsyncIterator[tuple[SlackWorld, Inbox]]:
    policy = (
        slack_policy()
        .replace("  standard:\n    label: Standard\n", STEP_UP)
        .replace(
            "  strictest:\n    label: Flagged target\n",
            "  strictest:\n    label: Flagged target\n    step_up: {owner: [email_code]}\n",
        )
    )
    world = await start_world(slack, redis_client, namespace, policy=policy)
    mails, port = inbox
    world.runtime.service.step_up = StepUpOptions(
        code_key=b"slack-step-up-test-key",
        mail=SmtpCodeSender("127.0.0.1", port, starttls=False),
    )
    try:
        yield world, mails
    finally:
        await stop_world(world)


async def test_the_owner_verifies_by_command_and_the_cards_show_it(
    stepped: tuple[SlackWorld, Inbox],
) -> None:
    world, mails = stepped
    request = await world.open_request()
    dm = await world.slack.until(
        lambda: [
            c
            for c in world.slack.of("chat.postMessage")
            if "verify " + request.id in json.dumps(c.params)
        ]
    )
    assert "alice@home.example.net" not in json.dumps(dm[0].params)  # masked: a***@home...
    card = await world.slack.until(lambda: world.card(request.id, "approvers"))
    await world.slack.until(lambda: "Owner verification: waiting for" in json.dumps(card.blocks))

    _, form = await world.command("U0ALICE", f"verify {request.id} 00000000")
    assert "not right" in await world.receipt(form)
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    await world.click("U0ALICE", owner, "confirm")
    await world.click("U0CAROL", card, "approve")
    await world.stored(request.id, lambda r: len(r.approvals) == 1)
    assert world.connector.changes == []

    code = mails.code_for(request.id)
    _, form = await world.command("U0ALICE", f"verify {request.id} {code}")
    assert "verified" in await world.receipt(form)
    await world.settled(request.id, RequestState.COMPLETED.value)
    assert [c.request_id for c in world.connector.changes] == [request.id]
    every_call = json.dumps([c.params for c in world.slack.calls])
    assert code not in every_call
