"""Connector clients and roster answers are kept between turns; clients replaced with their token.

botbuilder builds two msrest clients on every turn (most of a bare bot's CPU per press); twokey
keeps one per service URL and audience. A client kept for good would carry its token past its
expiry and every proactive card update would then be refused: the kept one is replaced once
the token is.
"""

from __future__ import annotations

import aiohttp
from botbuilder.schema import Activity
from botframework.connector.auth import ClaimsIdentity
from teams_standin import APP_ID, APPROVALS, TeamsStandIn
from teams_world import TeamsWorld, endpoints, teams_settings

from app.channels.teams.auth import (
    RETIRE_AFTER_S,
    TOKEN_EARLY_S,
    ConnectorClients,
    ConnectorTokens,
    authentication,
    bot_config,
)


async def test_turns_share_one_client_until_its_token_is_replaced(
    teams: TeamsStandIn, namespace: str
) -> None:
    now = [1_000.0]
    config = bot_config(teams_settings(namespace), endpoints(teams))
    async with aiohttp.ClientSession() as session:
        tokens = ConnectorTokens(config, session, clock=lambda: now[0])
        auth = authentication(config, tokens)
        factory = auth.create_connector_factory(ClaimsIdentity({"aud": APP_ID}, True))
        assert isinstance(factory, ConnectorClients)
        url = teams.url + "/"
        first = await factory.create(url)
        assert await factory.create(url) is first, "a second turn reuses the client"
        assert factory.built == 1 and tokens.fetched == 1

        stale = set(teams.issued)
        now[0] += 3599 - TOKEN_EARLY_S + 1  # the token is about to expire: a new one is fetched
        second = await factory.create(url)
        assert second is not first and factory.built == 2 and tokens.fetched == 2
        teams.issued -= stale  # the Bot Connector no longer takes the old token

        sent = await second.conversations.send_to_conversation(
            APPROVALS, Activity(type="message", text="still reaching Teams")
        )
        assert sent.id
        assert teams.unauthorized == []
        assert [m.activity.get("text") for m in teams.messages[APPROVALS]] == [
            "still reaching Teams"
        ]


def pooled_connections(client: object) -> int:
    """Sockets the msrest client's requests session keeps open to the Bot Connector."""
    session = client.config.pipeline._sender.driver.session  # type: ignore[attr-defined]
    return sum(len(adapter.poolmanager.pools) for adapter in session.adapters.values())


async def test_a_replaced_client_is_closed_once_calls_on_it_are_over(
    teams: TeamsStandIn, namespace: str
) -> None:
    """Each hourly token replacement leaves a client behind: its sockets are released after
    RETIRE_AFTER_S (not at once: a call may still be under way on it), and all at shutdown."""
    now = [1_000.0]
    config = bot_config(teams_settings(namespace), endpoints(teams))
    async with aiohttp.ClientSession() as session:
        tokens = ConnectorTokens(config, session, clock=lambda: now[0])
        factory = authentication(config, tokens).create_connector_factory(
            ClaimsIdentity({"aud": APP_ID}, True)
        )
        url = teams.url + "/"
        first = await factory.create(url)
        await first.conversations.send_to_conversation(
            APPROVALS, Activity(type="message", text="1")
        )
        assert pooled_connections(first) == 1

        now[0] += 3599 - TOKEN_EARLY_S + 1
        second = await factory.create(url)
        assert second is not first
        assert pooled_connections(first) == 1, "kept open for calls still under way"

        now[0] += RETIRE_AFTER_S
        assert await factory.create(url) is second
        assert pooled_connections(first) == 0

        await second.conversations.send_to_conversation(
            APPROVALS, Activity(type="message", text="2")
        )
        assert pooled_connections(second) == 1
        await factory.close()
        assert pooled_connections(second) == 0


async def test_the_user_token_client_is_kept_too(teams: TeamsStandIn, namespace: str) -> None:
    config = bot_config(teams_settings(namespace), endpoints(teams))
    async with aiohttp.ClientSession() as session:
        auth = authentication(config, ConnectorTokens(config, session))
        claims = ClaimsIdentity({"aud": APP_ID, "appid": APP_ID}, True)
        first = await auth.create_user_token_client(claims)
        assert await auth.create_user_token_client(claims) is first


async def test_who_pressed_is_asked_of_the_roster_once_in_a_while(world: TeamsWorld) -> None:
    """Presses by the same person in quick succession cost one roster look-up, not one each."""
    request = await world.open_request()
    approval = await world.card(APPROVALS, request.id)
    presses = [world.press_activity("carol", approval, "approve") for _ in range(4)]
    for press in presses:  # the first approves; the others are answered "already approved"
        assert (await world.post(press)).status == 200
    await world.stored(request.id, lambda r: [a.approver_id for a in r.approvals] == ["carol"])
    carol = [m for _, m in world.teams.member_lookups if "carol" in m]
    assert len(carol) == 1, world.teams.member_lookups


async def test_a_revoked_connector_token_is_replaced_at_once(world: TeamsWorld) -> None:
    """The Bot Connector stops taking the cached token before it expires (revoked, or the app's
    secret rotated): the refused card update fetches a new token and lands, not an hour later."""
    request = await world.open_request()
    approval = await world.card(APPROVALS, request.id)
    fetched = len(world.teams.issued)
    world.teams.issued.clear()
    answer = await world.press("carol", approval, "approve")
    assert answer["statusCode"] == 200
    await world.teams.until(
        lambda: (m := world.teams.find(APPROVALS, request.id)) and "Carol" in m.text
    )
    assert world.teams.unauthorized, "the old token was refused at least once"
    assert len(world.teams.issued) >= 1 and fetched >= 1
