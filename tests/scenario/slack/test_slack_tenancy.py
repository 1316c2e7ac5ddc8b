"""Only our workspace and our app are served; a Slack Connect user from another organisation is
refused even when their email matches one of our approvers."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis
from slack_standin import OTHER_TEAM, TEAM, SlackStandIn
from slack_world import SlackWorld, start_world, stop_world

from app.channels.slack.guard import UNCONFIRMED


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


async def test_a_slow_auth_test_never_delays_the_ack_and_says_what_happened(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    """Without an allow-list the workspace is learned from auth.test, inside Slack's 3 s: a
    slow answer is given up on (nothing is served) rather than letting the ack time out, and
    the agent hears that Slack could not confirm the workspace, not that it is not served."""
    release = slack.hold("auth.test")
    world = await start_world(slack, redis_client, namespace, SLACK_ALLOWED_TEAMS=[])
    try:
        response, _ = await asyncio.wait_for(
            world.command("U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device"), timeout=2.9
        )
        assert response.status == 200
        assert await response.text() == UNCONFIRMED
        assert await world.runtime.store.open_requests() == []
        release.set()
        request = await world.open_request()
        assert request.requester_id == "bob"
    finally:
        await stop_world(world)


async def test_a_click_while_slack_cannot_confirm_the_workspace_is_answered_not_dropped(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    """A fresh replica that Slack has not yet told its workspace gets carol's Approve: nothing
    is decided, and carol is told so in an ephemeral (a silent 200 would read as approved)."""
    first = await start_world(slack, redis_client, namespace)
    try:
        request = await first.open_request()
        card = first.card(request.id, "approvers")
        assert card is not None
    finally:
        await stop_world(first)
    release = slack.hold("auth.test")
    replica = await start_world(slack, redis_client, namespace, SLACK_ALLOWED_TEAMS=[])
    try:
        payload = replica.click_payload("U0CAROL", card, "approve")
        response = await replica.interact(payload)
        assert (response.status, await response.text()) == (200, "")
        posts = slack.hook_posts(payload["response_url"])
        assert [p["text"] for p in posts] == [UNCONFIRMED]
        assert posts[0]["response_type"] == "ephemeral"
        stored = await replica.runtime.store.get(request.id)
        assert stored is not None and stored.approvals == ()
        release.set()
        await replica.click("U0CAROL", card, "approve")
        await replica.stored(request.id, lambda r: len(r.approvals) == 1)
    finally:
        release.set()
        await stop_world(replica)


async def test_a_form_sent_while_slack_cannot_confirm_the_workspace_shows_why(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    release = slack.hold("auth.test")
    world = await start_world(slack, redis_client, namespace, SLACK_ALLOWED_TEAMS=[])
    try:
        view = {"id": "V0FORM", "callback_id": "twokey.open", "private_metadata": "{}"}
        values = {"ticket": {"ticket": {"type": "plain_text_input", "value": "INC-1234"}}}
        response = await world.interact(world.submission("U0BOB", view, values))
        assert response.status == 200
        assert json.loads(await response.text()) == {
            "response_action": "errors",
            "errors": {"ticket": UNCONFIRMED[:150]},
        }
        assert await world.runtime.store.open_requests() == []
    finally:
        release.set()
        await stop_world(world)


async def test_the_workspace_is_learned_at_start_up_not_by_the_first_person(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    """auth.test fails as the replica starts (a Slack blip): it asks again by itself, so the
    first agent to type /twokey afterwards is served at once."""
    slack.fail("auth.test", "internal_error")
    world = await start_world(slack, redis_client, namespace, SLACK_ALLOWED_TEAMS=[])
    try:
        # no one has typed anything yet: the replica asks again by itself, and Slack answers
        await slack.until(lambda: [c.answer["ok"] for c in slack.of("auth.test")] == [False, True])
        request = await world.open_request()
        assert request.requester_id == "bob"
    finally:
        await stop_world(world)


async def test_on_enterprise_grid_the_default_serves_the_bots_workspace_not_the_org(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    """The default allow-list is the bot's own workspace: a sister workspace of the same
    Enterprise Grid org is not served (list the org, E..., in SLACK_ALLOWED_TEAMS for that)."""
    slack.enterprise_id = "E0GRID"
    world = await start_world(slack, redis_client, namespace, SLACK_ALLOWED_TEAMS=[])
    try:
        refused, _ = await world.command(
            "U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device", team="T0SISTER"
        )
        assert "not served" in await refused.text()
        assert await world.runtime.store.open_requests() == []
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
