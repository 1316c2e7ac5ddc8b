"""Slack and Teams on one twokey: one request, cards on both, one person across both.

One real app (``create_app``) serves ``/slack/events`` and ``/api/messages`` at once, on one
runtime, against the Slack stand-in and the Bot Framework stand-in together; the policy names an
approvals channel on each. Payloads are signed as each platform signs them and press only buttons
that are really on the cards (the two scenario worlds' own helpers).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

HERE = Path(__file__).resolve().parent
for folder in ("slack", "teams"):
    if str(HERE / folder) not in sys.path:
        sys.path.insert(0, str(HERE / folder))

import slack_standin as sl  # noqa: E402
import teams_standin as tm  # noqa: E402
from slack_world import SIGNING_SECRET, SlackWorld, build_runtime  # noqa: E402
from teams_world import TeamsWorld, buttons, endpoints, teams_settings  # noqa: E402

from app.channels.teams.app import TEAMS_ENDPOINTS  # noqa: E402
from app.connectors.sandbox import SandboxConnector  # noqa: E402
from app.domain.models import RequestState  # noqa: E402
from app.web import create_app  # noqa: E402
from tests.helpers import policy_text  # noqa: E402


@dataclass
class Both:
    slack: SlackWorld
    teams: TeamsWorld


@pytest.fixture
async def both(redis_client: aioredis.Redis, namespace: str) -> AsyncIterator[Both]:
    slack, teams = sl.SlackStandIn(), tm.TeamsStandIn()
    await slack.start()
    await teams.start()
    config = teams_settings(
        namespace,
        SLACK_BOT_TOKEN=sl.BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        SLACK_ALLOWED_TEAMS=[sl.TEAM],
        SLACK_APP_ID=sl.APP_ID,
    )
    policy = policy_text(
        velocity="",
        channels={
            "approvals": {"slack": sl.APPROVALS, "teams": tm.APPROVALS},
            "security": {"slack": sl.SECURITY, "teams": tm.SECURITY},
        },
    )
    connector = SandboxConnector()
    runtime = build_runtime(redis_client, namespace, config, policy, connector)
    app = create_app(config, runtime=runtime, sweeper=False)
    app[TEAMS_ENDPOINTS] = endpoints(teams)
    http = TestClient(TestServer(app))
    await http.start_server()
    worlds = Both(
        SlackWorld(slack, http, runtime, connector, redis_client, namespace),
        TeamsWorld(teams, http, runtime, connector, redis_client, namespace),
    )
    try:
        await worlds.teams.install("alice", "bob", "carol", "dave")
        yield worlds
    finally:
        await asyncio.sleep(0.05)
        await http.close()
        await asyncio.gather(*runtime.tasks, return_exceptions=True)
        await asyncio.gather(*(close() for close in runtime.closers), return_exceptions=True)
        await teams.close()
        await slack.close()


def slack_buttons(message: sl.Message) -> str:
    return json.dumps([b for b in message.blocks if b.get("type") == "actions"])


async def test_a_slack_request_has_a_card_on_both_and_a_teams_decision_updates_slack(
    both: Both,
) -> None:
    request = await both.slack.open_request()
    slack_card = both.slack.card(request.id, "approvers")
    assert slack_card is not None and "twokey.approve" in slack_buttons(slack_card)
    teams_card = await both.teams.card(tm.APPROVALS, request.id)
    assert {"approve", "deny"} <= set(buttons(teams_card.card))

    answer = await both.teams.press("carol", teams_card, "deny", reason="caller failed callback")
    assert buttons(answer["value"]) == {}
    denied = await both.slack.stored(request.id, lambda r: r.state is RequestState.DENIED)
    assert denied.decided_by == "carol"
    await both.slack.slack.until(lambda: "Denied by Carol Chen" in json.dumps(slack_card.blocks))
    assert "twokey.approve" not in slack_buttons(slack_card)
    assert both.slack.connector.changes == []


async def test_a_slack_approval_and_a_teams_confirmation_complete_it_on_both(both: Both) -> None:
    request = await both.teams.open_request()
    teams_card = await both.teams.card(tm.APPROVALS, request.id)
    slack_card = await both.slack.slack.until(lambda: both.slack.card(request.id, "approvers"))

    assert (await both.slack.click("U0CAROL", slack_card, "approve")).status == 200
    await both.teams.stored(request.id, lambda r: len(r.approvals) == 1)
    await both.teams.teams.until(lambda: "approve" not in buttons(teams_card.card))

    owner = await both.teams.card(tm.dm_of("alice"), request.id, "Did you ask for this?")
    await both.teams.press("alice", owner, "confirm")
    await both.teams.stored(request.id, lambda r: r.state is RequestState.COMPLETED)
    assert [c.request_id for c in both.teams.connector.changes] == [request.id]
    await both.teams.teams.until(lambda: not buttons(teams_card.card))
    await both.slack.slack.until(lambda: "twokey.approve" not in slack_buttons(slack_card))


async def test_one_person_on_both_platforms_is_one_principal(both: Both) -> None:
    request = await both.teams.open_request(by="bob")
    assert request.requester_id == "bob"
    slack_card = await both.slack.slack.until(lambda: both.slack.card(request.id, "approvers"))

    # bob's Slack account (same email) presses Approve on his own Teams request: refused.
    assert (await both.slack.click("U0BOB", slack_card, "approve")).status == 200
    assert "You are part of this request" in await both.slack.ephemeral_to("U0BOB")
    # and so is the target's Slack account, while a third person may approve
    assert (await both.slack.click("U0ALICE", slack_card, "approve")).status == 200
    assert "You are part of this request" in await both.slack.ephemeral_to("U0ALICE")
    stored = await both.slack.runtime.store.get(request.id)
    assert stored is not None and stored.approvals == () and stored.state is RequestState.PENDING

    # the same person the other way round: bob's Teams account on a request he opened on Slack
    other = await both.slack.open_request(user="U0BOB")
    teams_card = await both.teams.card(tm.APPROVALS, other.id)
    answer = await both.teams.press("bob", teams_card, "approve")
    assert "approve" in buttons(answer["value"]), "refused in place, the card stays"
    again = await both.teams.runtime.store.get(other.id)
    assert again is not None and again.approvals == ()
    assert both.teams.connector.changes == []
