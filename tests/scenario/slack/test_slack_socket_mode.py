"""Socket Mode (SLACK_APP_TOKEN set): no public URL; deliveries come over a websocket, are
acknowledged there, and go through the same tenancy and replay checks as HTTP ones."""

from __future__ import annotations

import asyncio
import json
import secrets

import redis.asyncio as aioredis
from slack_standin import APP_TOKEN, OTHER_TEAM, SlackStandIn
from slack_world import start_world, stop_world


async def test_a_slash_command_over_socket_mode_opens_a_request(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    world = await start_world(slack, redis_client, namespace, SLACK_APP_TOKEN=APP_TOKEN)
    try:
        await asyncio.wait_for(slack.socket_connected.wait(), timeout=8)
        assert slack.of("apps.connections.open")[0].ok
        form = world.command_form("U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device")
        envelope = {
            "envelope_id": secrets.token_hex(8),
            "type": "slash_commands",
            "accepts_response_payload": True,
            "payload": form,
        }
        await slack.socket_envelopes.put(envelope)
        await slack.socket_envelopes.put(dict(envelope))  # Slack redelivers: acted on once
        receipt = await world.receipt(form)
        assert "opened" in receipt
        acks = await slack.until(lambda: len(slack.socket_acks) >= 2 and slack.socket_acks)
        assert {a["envelope_id"] for a in acks} == {envelope["envelope_id"]}
        await asyncio.sleep(0.3)
        assert len(await world.runtime.store.open_requests()) == 1

        foreign = world.command_form(
            "U0BOB", "unlock <@U0ALICE> INC-1235 locked-out", team=OTHER_TEAM
        )
        await slack.socket_envelopes.put(
            {
                "envelope_id": "e2",
                "type": "slash_commands",
                "accepts_response_payload": True,
                "payload": foreign,
            }
        )
        ack = await slack.until(lambda: [a for a in slack.socket_acks if a["envelope_id"] == "e2"])
        assert "not served" in json.dumps(ack)
        await asyncio.sleep(0.2)
        assert len(await world.runtime.store.open_requests()) == 1
    finally:
        await stop_world(world)


async def test_without_a_signing_secret_http_is_refused_but_socket_mode_works(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    world = await start_world(
        slack, redis_client, namespace, SLACK_APP_TOKEN=APP_TOKEN, SLACK_SIGNING_SECRET=None
    )
    try:
        response, _ = await world.command("U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device")
        assert response.status == 401
        await asyncio.wait_for(slack.socket_connected.wait(), timeout=8)
        form = world.command_form("U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device")
        await slack.socket_envelopes.put(
            {
                "envelope_id": "e9",
                "type": "slash_commands",
                "accepts_response_payload": True,
                "payload": form,
            }
        )
        assert "opened" in await world.receipt(form)
    finally:
        await stop_world(world)


async def test_a_replica_stopping_while_socket_mode_cannot_connect_stops_at_once(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    """Slack unreachable (here: apps.connections.open never answers): slack_sdk keeps trying
    by itself, and a SIGTERM waited out the whole shutdown grace, then logged work abandoned
    though nothing had been taken. Nothing is in flight: the stop is clean and quick."""
    import time

    release = slack.hold("apps.connections.open")
    world = await start_world(
        slack, redis_client, namespace, SLACK_APP_TOKEN=APP_TOKEN, SLACK_SIGNING_SECRET=None
    )
    try:
        await asyncio.sleep(1.0)
        began = time.monotonic()
        assert await world.runtime.stop(within=10) is True
        assert time.monotonic() - began < 3
    finally:
        release.set()
        await stop_world(world)
