"""A one-time secret goes to the owner's DM only: never to the agent, the approver, a channel,
a notification text or a log line."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from slack_world import SlackWorld


async def test_a_temporary_password_reaches_only_the_owners_dm(
    world: SlackWorld, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logged:
        request = await world.open_request("reset-password <@U0ALICE> INC-1234 forgotten-password")
        owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
        await world.click("U0ALICE", owner, "confirm")
        await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
        card = world.card(request.id, "approvers")
        assert card is not None
        await world.click("U0CAROL", card, "approve")
        await world.settled(request.id, "completed")
        alice_dm = world.slack.dm_of("U0ALICE")

        def secret_message() -> object:
            return [
                m
                for m in world.slack.in_channel(alice_dm or "")
                if any(b.get("type") == "rich_text" for b in m.blocks)
            ]

        found = await world.slack.until(secret_message)
    message = found[0]
    preformatted = next(b for b in message.blocks if b["type"] == "rich_text")
    secret = preformatted["elements"][0]["elements"][0]["text"]
    assert len(secret) >= 12
    assert secret not in message.text, "the notification never shows the secret"
    holders = [c for c in world.slack.calls if secret in json.dumps(c.params, ensure_ascii=False)]
    assert len(holders) == 1
    assert holders[0].method == "chat.postMessage" and holders[0].params["channel"] == alice_dm
    everything_else = (
        json.dumps([h.posts for h in world.slack.hooks.values()])
        + json.dumps(world.slack.ephemerals)
        + repr(logged)
        + caplog.text
        + "".join(capsys.readouterr())
    )
    assert secret not in everything_else
    assert secret not in json.dumps(
        await world.redis.hgetall(world.runtime.store.keys.request(request.id))
    )


async def test_no_secret_is_sent_when_the_owner_cannot_be_reached_safely(world: SlackWorld) -> None:
    request = await world.open_request("reset-password <@U0ALICE> INC-1234 forgotten-password")
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    await world.click("U0ALICE", owner, "confirm")
    await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
    # between confirmation and approval alice's Slack account is turned into a guest
    world.slack.users["U0ALICE"].is_restricted = True
    card = world.card(request.id, "approvers")
    assert card is not None
    await world.click("U0CAROL", card, "approve")
    await world.settled(request.id, "completed")
    alerts = await world.slack.until(
        lambda: [
            m
            for m in world.slack.in_channel("C0SECURITY")
            if "could not be delivered" in json.dumps(m.blocks)
        ]
    )
    assert request.id in json.dumps(alerts[-1].blocks)
    alice_dm = world.slack.dm_of("U0ALICE") or ""
    assert not any(
        b.get("type") == "rich_text" for m in world.slack.in_channel(alice_dm) for b in m.blocks
    )


async def test_no_secret_goes_to_a_slack_account_whose_email_is_unconfirmed(
    world: SlackWorld,
) -> None:
    """Slack matched the owner's address, but has not confirmed this account holds it."""
    request = await world.open_request("reset-password <@U0ALICE> INC-1234 forgotten-password")
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    await world.click("U0ALICE", owner, "confirm")
    await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
    world.slack.users["U0ALICE"].is_email_confirmed = False
    card = world.card(request.id, "approvers")
    assert card is not None
    await world.click("U0CAROL", card, "approve")
    await world.settled(request.id, "completed")
    await world.slack.until(
        lambda: [
            m
            for m in world.slack.in_channel("C0SECURITY")
            if "could not be delivered" in json.dumps(m.blocks)
        ]
    )
    alice_dm = world.slack.dm_of("U0ALICE") or ""
    assert not any(
        b.get("type") == "rich_text" for m in world.slack.in_channel(alice_dm) for b in m.blocks
    )
