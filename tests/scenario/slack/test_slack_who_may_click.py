"""Clicks by people who may not decide: each gets a specific ephemeral and the card stays."""

from __future__ import annotations

import asyncio

import pytest
from slack_world import SlackWorld


async def refused_click(
    world: SlackWorld, user: str, role: str = "approvers", action: str = "approve"
) -> str:
    request = await world.open_request()
    card = await world.slack.until(
        lambda: world.card(request.id, role, "U0ALICE" if role == "owner" else None)
    )
    updates = len(world.slack.of("chat.update"))
    response = await world.click(user, card, action)
    assert response.status == 200
    answer = await world.ephemeral_to(user)
    await asyncio.sleep(0.1)
    stored = await world.runtime.store.get(request.id)
    assert stored is not None
    assert stored.approvals == () and stored.owner_confirmed_at is None
    assert stored.state.value == "pending"
    assert len(world.slack.of("chat.update")) == updates, "the card stays as it was"
    assert world.connector.changes == []
    return answer


async def test_the_requester_cannot_approve_their_own_request(world: SlackWorld) -> None:
    assert "You are part of this request" in await refused_click(world, "U0BOB")


async def test_the_target_cannot_approve_a_change_to_their_account(world: SlackWorld) -> None:
    assert "You are part of this request" in await refused_click(world, "U0ALICE")


async def test_someone_without_the_approver_role_cannot_approve(world: SlackWorld) -> None:
    assert "approver role, which you do not hold" in await refused_click(world, "U0HEIDI")


async def test_only_the_owner_can_answer_the_owner_question(world: SlackWorld) -> None:
    request = await world.open_request()
    owner_card = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    # carol somehow presses alice's button (a forwarded or crafted click): she is not the owner.
    # She is not in alice's DM, so Slack refuses an ephemeral there; the click's response_url
    # answers her instead.
    payload = world.click_payload("U0CAROL", owner_card, "confirm")
    await world.interact(payload)
    posts = await world.slack.until(lambda: world.slack.hook_posts(payload["response_url"]))
    assert "Only the account's owner of record" in str(posts)
    assert posts[0]["response_type"] == "ephemeral" and posts[0]["replace_original"] is False
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.owner_confirmed_at is None


@pytest.mark.parametrize(
    ("user", "words"),
    [
        ("U0GUEST", "guest accounts"),
        ("U0SCG", "guest accounts"),
        ("U0HELPBOT", "bots cannot"),
        ("U0NOMAIL", "no verified email"),
        ("U0KIM", "matches 2 directory entries"),
        ("U0NOBODY", "Slack does not know"),
    ],
)
async def test_an_unsure_identity_can_do_nothing(world: SlackWorld, user: str, words: str) -> None:
    if user == "U0NOBODY":
        # a user Slack does not know cannot even get an ephemeral: the answer goes to the
        # click's response_url instead, and the decision is not taken
        request = await world.open_request()
        card = world.card(request.id, "approvers")
        assert card is not None
        payload = world.click_payload(user, card, "approve")
        await world.interact(payload)
        posts = await world.slack.until(lambda: world.slack.hook_posts(payload["response_url"]))
        assert words in str(posts)
        return
    assert words in await refused_click(world, user)


async def test_an_unconfirmed_slack_email_is_not_trusted(world: SlackWorld) -> None:
    world.slack.users["U0CAROL"].is_email_confirmed = False
    assert "no verified email" in await refused_click(world, "U0CAROL")


async def test_a_deactivated_user_can_do_nothing(world: SlackWorld) -> None:
    """judy is deactivated in Slack (and disabled in the directory)."""
    request = await world.open_request()
    card = world.card(request.id, "approvers")
    assert card is not None
    payload = world.click_payload("U0JUDY", card, "approve")
    await world.interact(payload)
    posts = await world.slack.until(lambda: world.slack.hook_posts(payload["response_url"]))
    assert "deactivated" in str(posts)
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.approvals == ()
