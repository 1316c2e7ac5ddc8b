"""Slack errors and rate limits never lose a stored decision: the decision stands, the message
is retried (429 + Retry-After) or reported, and the person who clicked is still answered."""

from __future__ import annotations

import json

import structlog
from slack_world import SlackWorld

from app.channels.slack.notifier import SlackNotifier


async def confirmed_request(world: SlackWorld) -> str:
    request = await world.open_request()
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    await world.click("U0ALICE", owner, "confirm")
    await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
    await world.slack.until(lambda: world.slack.ephemerals_to("U0ALICE"))
    return request.id


async def test_a_rate_limited_card_update_is_retried_after_retry_after(world: SlackWorld) -> None:
    rid = await confirmed_request(world)
    card = world.card(rid, "approvers")
    assert card is not None
    world.slack.fail("chat.update", "ratelimited", status=429, retry_after=1)
    await world.click("U0CAROL", card, "approve")
    await world.settled(rid, "completed")
    await world.slack.until(lambda: "Completed" in json.dumps(card.blocks))
    limited = [c for c in world.slack.of("chat.update") if c.status == 429]
    assert len(limited) == 1
    assert limited[0].answer == {"ok": False, "error": "ratelimited"}
    await world.shown_on_card(card, "Carol Chen")


async def test_a_card_slack_will_not_update_does_not_undo_the_decision(world: SlackWorld) -> None:
    rid = await confirmed_request(world)
    card = world.card(rid, "approvers")
    assert card is not None
    world.slack.fail("chat.update", "internal_error", status=500, times=100)
    with structlog.testing.capture_logs() as logged:
        await world.click("U0CAROL", card, "approve")
        done = await world.settled(rid, "completed")
        # the card could not show her approval: she is told in an ephemeral instead
        assert "approval is recorded" in await world.ephemeral_to("U0CAROL")
    assert len(world.connector.changes) == 1
    assert done.approvals and done.approvals[0].approver_id == "carol"
    assert any(
        e["event"] == "slack_call_failed" and e["what"].startswith("update_") for e in logged
    )
    world.slack.faults.clear()
    # the cards are stale, but the stored decision stands and `status` reads it
    _, form = await world.command("U0CAROL", f"status {rid}")
    assert "Completed" in await world.receipt(form)


async def test_a_rate_limit_longer_than_we_wait_is_reported_not_waited_out(
    world: SlackWorld,
) -> None:
    rid = await confirmed_request(world)
    card = world.card(rid, "approvers")
    assert card is not None
    world.slack.fail("chat.update", "ratelimited", status=429, retry_after=120, times=3)
    with structlog.testing.capture_logs() as logged:
        await world.click("U0CAROL", card, "approve")
        await world.settled(rid, "completed")
        await world.slack.until(lambda: any(e.get("error") == "ratelimited" for e in logged))


async def test_an_ephemeral_slack_refuses_is_not_an_error_of_the_decision(
    world: SlackWorld,
) -> None:
    rid = await confirmed_request(world)
    card = world.card(rid, "approvers")
    assert card is not None
    # the card she pressed cannot show her approval, so she must be told another way
    world.slack.fail("chat.update", "message_not_found", times=100)
    world.slack.fail("chat.postEphemeral", "user_not_in_channel")
    payload = world.click_payload("U0CAROL", card, "approve")
    await world.interact(payload)
    await world.settled(rid, "completed")
    posts = await world.slack.until(lambda: world.slack.hook_posts(payload["response_url"]))
    assert "approval is recorded" in json.dumps(posts)


async def test_when_no_answer_gets_through_the_decision_still_stands(world: SlackWorld) -> None:
    rid = await confirmed_request(world)
    card = world.card(rid, "approvers")
    assert card is not None
    world.slack.fail("chat.update", "message_not_found", times=100)
    world.slack.fail("chat.postEphemeral", "user_not_in_channel")
    payload = world.click_payload("U0CAROL", card, "approve")
    payload["response_url"] = world.slack.url + "/hooks/expired"
    world.slack.fail("chat.postMessage", "channel_not_found", times=1)
    with structlog.testing.capture_logs() as logged:
        await world.interact(payload)
        await world.settled(rid, "completed")
        await world.slack.until(
            lambda: (
                any(e["event"] == "slack_person_not_answered" for e in logged)
                or [
                    c
                    for c in world.slack.of("chat.postMessage")
                    if c.params.get("channel") == "U0CAROL"
                ]
            )
        )
    assert len(world.connector.changes) == 1


async def test_an_approval_card_that_could_not_be_posted_is_posted_by_the_next_update(
    world: SlackWorld,
) -> None:
    world.slack.fail("chat.postMessage", "ratelimited", status=429, retry_after=120)
    _, form = await world.command("U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device")
    receipt = await world.receipt(form)
    rid = receipt.split("Request ", 1)[1].split(" ", 1)[0]
    owner = await world.slack.until(lambda: world.card(rid, "owner", "U0ALICE"))
    assert world.card(rid, "approvers") is None, "Slack refused the approval card"
    await world.click("U0ALICE", owner, "confirm")
    card = await world.slack.until(lambda: world.card(rid, "approvers"))
    assert "Alice Adams at" in json.dumps(card.blocks)
    cards = [m for m in world.slack.in_channel("C0APPROVALS") if rid in json.dumps(m.blocks)]
    assert len(cards) == 1


def slack_notifier(world: SlackWorld) -> SlackNotifier:
    return next(n for n in world.runtime.notifier.notifiers if isinstance(n, SlackNotifier))


async def test_cards_slack_refused_are_posted_again_in_the_background(world: SlackWorld) -> None:
    slack_notifier(world).repair_delays = (0.2, 0.2)
    world.slack.fail("chat.postMessage", "ratelimited", status=429, retry_after=120, times=3)
    _, form = await world.command("U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device")
    rid = (await world.receipt(form)).split("Request ", 1)[1].split(" ", 1)[0]
    await world.slack.until(lambda: world.card(rid, "approvers"))
    await world.slack.until(lambda: world.card(rid, "owner", "U0ALICE"))
    await world.slack.until(lambda: world.card(rid, "requester", "U0BOB"))
    cards = [m for m in world.slack.in_channel("C0APPROVALS") if rid in json.dumps(m.blocks)]
    assert len(cards) == 1
