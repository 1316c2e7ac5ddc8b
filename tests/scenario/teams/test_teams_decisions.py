"""Who may press what, in which order, and what everyone sees afterwards (through HTTP)."""

from __future__ import annotations

import asyncio
import json

from teams_standin import APPROVALS, SECURITY, dm_of
from teams_world import TeamsWorld, buttons, teams_policy

from app.domain.models import RequestState


async def test_approver_before_owner_runs_once_the_owner_confirms(world: TeamsWorld) -> None:
    request = await world.open_request()
    approval = await world.card(APPROVALS, request.id)
    await world.press("carol", approval, "approve")
    assert world.connector.changes == []
    owner = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    await world.press("alice", owner, "confirm")
    await world.stored(request.id, lambda r: r.state is RequestState.COMPLETED)
    assert [c.request_id for c in world.connector.changes] == [request.id]
    # the agent hears of the outcome (cards and messages follow the stored change)
    await world.teams.until(
        lambda: any(
            "completed" in m.text.lower() for m in world.teams.in_conversation(dm_of("bob"))
        )
    )


async def test_requester_target_and_non_approver_are_refused_with_the_card(
    world: TeamsWorld,
) -> None:
    request = await world.open_request()
    approval = await world.card(APPROVALS, request.id)
    for person in ("bob", "alice", "ivan"):
        answer = await world.press(person, approval, "approve")
        assert answer["statusCode"] == 200 and answer["type"].endswith("card.adaptive")
        shown = json.dumps(answer["value"])
        assert "approve" in buttons(answer["value"]), person
        assert shown.count("TextBlock") > 1
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and not stored.approvals
    assert world.connector.changes == []


async def test_this_wasnt_me_stops_it_and_alerts_security(world: TeamsWorld) -> None:
    request = await world.open_request()
    owner = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    answer = await world.press("alice", owner, "reject")
    assert "confirm" not in buttons(answer["value"])
    await world.stored(request.id, lambda r: r.state is RequestState.REJECTED_BY_OWNER)
    await world.card(SECURITY, request.id)
    approval = await world.card(APPROVALS, request.id)
    await world.teams.until(lambda: not buttons(approval.card))
    assert world.connector.changes == []


async def test_deny_with_a_reason_tells_the_requester(world: TeamsWorld) -> None:
    request = await world.open_request()
    approval = await world.card(APPROVALS, request.id)
    answer = await world.press("carol", approval, "deny", reason="caller could not be verified")
    assert buttons(answer["value"]) == {}
    await world.stored(request.id, lambda r: r.state is RequestState.DENIED)
    await world.card(dm_of("bob"), "caller could not be verified")


async def test_deny_without_a_reason_is_refused_in_place(world: TeamsWorld) -> None:
    request = await world.open_request()
    approval = await world.card(APPROVALS, request.id)
    answer = await world.press("carol", approval, "deny", reason="")
    assert "approve" in buttons(answer["value"])
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.state is RequestState.PENDING


async def test_cancel_by_command_updates_every_card(world: TeamsWorld) -> None:
    request = await world.open_request()
    assert (await world.say("bob", f"cancel {request.id}")).status == 200
    await world.stored(request.id, lambda r: r.state is RequestState.CANCELLED)
    approval = await world.card(APPROVALS, request.id)
    owner = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    await world.teams.until(lambda: not buttons(approval.card) and not buttons(owner.card))


async def test_twenty_concurrent_presses_execute_once(world: TeamsWorld) -> None:
    request = await world.open_request()
    owner = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    await world.press("alice", owner, "confirm")
    approval = await world.card(APPROVALS, request.id)
    presses = [world.press(p, approval, "approve") for p in ("carol", "dave") * 10]
    answers = await asyncio.gather(*presses)
    assert all(a["statusCode"] == 200 for a in answers)
    await world.stored(request.id, lambda r: r.state is RequestState.COMPLETED)
    assert [c.request_id for c in world.connector.changes] == [request.id]


async def test_a_refresh_only_renders_whatever_it_carries(world: TeamsWorld) -> None:
    request = await world.open_request()
    owner = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    answer = await world.press("alice", owner, "confirm", trigger="automatic")
    assert "confirm" in buttons(answer["value"])
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.owner_confirmed_at is None


async def test_a_redelivered_message_opens_one_request(world: TeamsWorld) -> None:
    activity = world.message("bob", "reset-mfa <at>Alice</at> INC-1234 lost-device", ["alice"])
    first, second = await asyncio.gather(world.post(activity), world.post(activity))
    assert first.status == 200 and second.status == 200
    await world.card(APPROVALS, "TK-")
    await asyncio.sleep(0.2)
    assert len(await world.runtime.store.open_requests()) == 1


async def test_messages_in_two_chats_with_the_same_id_are_both_acted_on(
    world: TeamsWorld,
) -> None:
    """Teams numbers each chat's messages itself: the same id in another chat is another
    message, not a repeat."""
    asked = {who: world.message(who, "help") for who in ("bob", "erin")}
    for activity in asked.values():
        activity["id"] = "1796688423493"
        assert (await world.post(activity)).status == 200
    for who in asked:
        await world.teams.until(lambda who=who: world.teams.in_conversation(dm_of(who)))


async def test_a_redelivered_press_decides_once(world: TeamsWorld) -> None:
    request = await world.open_request()
    owner = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    activity = world.press_activity("alice", owner, "confirm")
    for _ in range(2):
        answer = await world.post(activity)
        assert answer.status == 200
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.events == request.events + 1


async def test_expiry_by_the_sweeper_updates_cards_and_late_presses_get_no_buttons(
    teams,
    redis_client,
    namespace,  # type: ignore[no-untyped-def]
) -> None:
    from teams_world import start_world, stop_world

    world = await start_world(
        teams, redis_client, namespace, policy=teams_policy(request_ttl="1s", approval_ttl="1s")
    )
    try:
        request = await world.open_request()
        approval = await world.card(APPROVALS, request.id)
        await asyncio.sleep(1.2)
        await world.runtime.service.expire_due()
        await world.stored(request.id, lambda r: r.state is RequestState.EXPIRED)
        await world.teams.until(lambda: not buttons(approval.card))
        answer = await world.press("carol", _first(approval), "approve")
        assert buttons(answer["value"]) == {}
        assert world.connector.changes == []
    finally:
        await stop_world(world)


def _first(message):  # type: ignore[no-untyped-def]
    """The card as it was first posted (with its buttons): a person with a stale view."""
    from teams_standin import Message

    return Message(message.conversation, message.id, message.versions[0], message.versions)


async def trail_of(world: TeamsWorld, request_id: str) -> list[dict[str, object]]:
    """The request's audit events, as written."""
    from app.store.keys import shard_of_request

    stream = world.runtime.store.keys.audit(shard_of_request(request_id))
    events = [json.loads(fields["e"]) for _, fields in await world.redis.xrange(stream)]
    return [e for e in events if e["rid"] == request_id]


async def test_a_press_delivered_twice_at_once_is_one_approval_and_no_refusal(
    world: TeamsWorld,
) -> None:
    """The activity id is checked by the approval's own gate script: the second delivery of
    carol's press changes nothing and is not audited as a refused second approval."""
    request = await world.open_request()
    approval = await world.card(APPROVALS, request.id)
    press = world.press_activity("carol", approval, "approve")
    answers = await asyncio.gather(world.post(press), world.post(press))
    assert [a.status for a in answers] == [200, 200]
    await world.stored(request.id, lambda r: len(r.approvals) == 1)
    kinds = [e["kind"] for e in await trail_of(world, request.id)]
    assert kinds.count("approved") == 1 and "refused" not in kinds, kinds


async def test_a_refused_press_delivered_again_is_audited_once(world: TeamsWorld) -> None:
    """bob may not approve his own request: refused and audited once, however often Teams
    delivers that press."""
    request = await world.open_request()
    approval = await world.card(APPROVALS, request.id)
    press = world.press_activity("bob", approval, "approve")
    for _ in range(3):
        assert (await world.post(press)).status == 200
    refused = [e for e in await trail_of(world, request.id) if e["kind"] == "refused"]
    assert len(refused) == 1, refused
