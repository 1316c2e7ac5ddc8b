"""Only our workspace and our app are served; a Slack Connect user from another organisation is
refused even when their email matches one of our approvers."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis
from slack_standin import OTHER_TEAM, TEAM, SlackStandIn
from slack_world import SlackWorld, start_world, stop_world


async def test_a_command_from_another_workspace_is_refused(world: SlackWorld) -> None:
    response, form = await world.command(
        "U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device", team=OTHER_TEAM
    )
    assert response.status == 200
    assert "not served" in await response.text()
    await asyncio.sleep(0.2)
    assert world.slack.of("users.info") == []
    assert await world.runtime.store.open_requests() == []
    assert world.slack.hook_posts(form["response_url"]) == []


async def test_a_payload_for_another_app_is_refused(world: SlackWorld) -> None:
    response, _ = await world.command(
        "U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device", app="A0SOMEONEELSE"
    )
    assert "not served" in await response.text()
    await asyncio.sleep(0.2)
    assert await world.runtime.store.open_requests() == []


async def test_a_click_from_another_workspace_changes_nothing(world: SlackWorld) -> None:
    request = await world.open_request()
    card = world.card(request.id, "approvers")
    assert card is not None
    response = await world.click("U0CAROL", card, "approve", team=OTHER_TEAM, user_team=OTHER_TEAM)
    assert response.status == 200
    await asyncio.sleep(0.3)
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.approvals == ()


async def test_a_slack_connect_user_cannot_approve(world: SlackWorld) -> None:
    """Mallory is in the shared approvals channel with carol's email, but from another org."""
    request = await world.open_request()
    card = world.card(request.id, "approvers")
    assert card is not None
    updates = len(world.slack.of("chat.update"))
    response = await world.click("U0MALLORY", card, "approve", user_team=OTHER_TEAM)
    assert response.status == 200
    refusal = await world.ephemeral_to("U0MALLORY")
    assert "another organisation" in refusal
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.approvals == ()
    assert len(world.slack.of("chat.update")) == updates
    assert world.connector.changes == []


async def test_without_an_allow_list_only_the_bots_own_workspace_is_served(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    world = await start_world(slack, redis_client, namespace, SLACK_ALLOWED_TEAMS=[])
    try:
        refused, _ = await world.command(
            "U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device", team=OTHER_TEAM
        )
        assert "not served" in await refused.text()
        assert slack.of("auth.test"), "the workspace is learned from the bot token"
        request = await world.open_request()
        assert request.requester_id == "bob"
        assert json.loads(json.dumps(slack.of("auth.test")[0].answer))["team_id"] == TEAM
    finally:
        await stop_world(world)


async def test_an_enterprise_on_the_allow_list_serves_its_workspaces() -> None:
    from slack_sdk.web.async_client import AsyncWebClient

    from app.channels.slack.guard import Origin, Tenancy

    tenancy = Tenancy(AsyncWebClient(), configured=frozenset({"E0GRID"}), app_id="A0TWOKEY")
    assert await tenancy.serves(Origin("T0ANY", "E0GRID", "A0TWOKEY")) is None
    assert await tenancy.serves(Origin("T0ANY", "E0OTHER", "A0TWOKEY")) == "other_workspace"
    assert await tenancy.serves(Origin("T0ANY", "E0GRID", "A0OTHER")) == "other_app"
    assert await tenancy.serves(Origin("T0ANY", "E0GRID", None)) == "other_app"


async def test_a_slow_auth_test_never_delays_the_ack(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    """Without an allow-list the workspace is learned from auth.test, inside Slack's 3 s: a
    slow answer is given up on (nothing is served) rather than letting the ack time out."""
    world = await start_world(slack, redis_client, namespace, SLACK_ALLOWED_TEAMS=[])
    try:
        release = slack.hold("auth.test")
        response, _ = await asyncio.wait_for(
            world.command("U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device"), timeout=2.9
        )
        assert response.status == 200
        assert "not served" in await response.text()
        release.set()
        request = await world.open_request()
        assert request.requester_id == "bob"
    finally:
        await stop_world(world)


async def test_an_ssl_check_field_does_not_carry_a_command_past_the_allow_list(
    world: SlackWorld,
) -> None:
    """Only Slack's own ``ssl_check=1`` (answered by Bolt, seen by no listener) skips the
    allow-list; a command from another workspace with any other value there is refused."""
    for value in ("0", "true"):
        form = world.command_form(
            "U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device", team=OTHER_TEAM
        )
        response = await world.signed({**form, "ssl_check": value})
        assert "not served" in await response.text()
    await asyncio.sleep(0.2)
    assert world.slack.of("users.info") == []
    assert await world.runtime.store.open_requests() == []
