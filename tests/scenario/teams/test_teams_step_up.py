"""Step-up on Teams: the owner types `verify TK-… CODE` to the bot; the approval card shows
where the step-up stands, and nothing runs before it passed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from teams_standin import APPROVALS, TeamsStandIn, dm_of
from teams_world import TeamsWorld, start_world, stop_world, teams_policy

from app.domain.models import RequestState
from app.mail import SmtpCodeSender
from app.service import StepUpOptions
from tests.smtp_inbox import Inbox


@pytest.fixture
async def stepped(
    teams: TeamsStandIn,
    redis_client: aioredis.Redis,
    namespace: str,
    inbox: tuple[Inbox, int],
) -> AsyncIterator[tuple[TeamsWorld, Inbox]]:
    policy = (
        teams_policy()
        .replace(
            "  standard:\n    label: Standard\n",
            "  standard:\n    label: Standard\n    step_up: {owner: [email_code]}\n",
        )
        .replace(
            "  strictest:\n    label: Flagged target\n",
            "  strictest:\n    label: Flagged target\n    step_up: {owner: [email_code]}\n",
        )
    )
    world = await start_world(teams, redis_client, namespace, policy=policy)
    mails, port = inbox
    world.runtime.service.step_up = StepUpOptions(
        code_key=b"teams-step-up-test-key",
        mail=SmtpCodeSender("127.0.0.1", port, starttls=False),
    )
    try:
        yield world, mails
    finally:
        await stop_world(world)


async def test_the_owner_verifies_by_message_to_the_bot(
    stepped: tuple[TeamsWorld, Inbox],
) -> None:
    world, mails = stepped
    request = await world.open_request()
    await world.card(dm_of("alice"), "verify " + request.id)
    await world.card(APPROVALS, request.id, "Owner verification: waiting for")
    owner = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    await world.press("alice", owner, "confirm")
    approval = await world.card(APPROVALS, request.id)
    await world.press("carol", approval, "approve")
    await world.stored(request.id, lambda r: len(r.approvals) == 1)
    assert world.connector.changes == []

    answer = await world.say("alice", f"verify {request.id} {mails.code_for(request.id)}")
    assert answer.status == 200
    await world.card(dm_of("alice"), "you are verified")
    await world.stored(request.id, lambda r: r.state is RequestState.COMPLETED)
