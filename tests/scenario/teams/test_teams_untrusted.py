"""The secret goes to the owner only; typed text never becomes a link or a mention; oversized
or malformed input is refused, specifically, to the asker only, and creates nothing."""

from __future__ import annotations

import json

from teams_standin import APPROVALS, SECURITY, dm_of
from teams_world import TeamsWorld

from app.domain.models import RequestState


async def test_nhi_rotation_hands_the_secret_to_the_owner_only(world: TeamsWorld) -> None:
    request = await world.open_request(
        "rotate-secret nhi:ci-deployer INC-2001 scheduled-rotation", mentions=()
    )
    owner = await world.card(dm_of("ivan"), request.id, "Did you ask for this?")
    await world.press("ivan", owner, "confirm")
    approval = await world.card(APPROVALS, request.id)
    answer = await world.press("carol", approval, "approve")
    await world.stored(request.id, lambda r: r.state is RequestState.COMPLETED)
    secret_card = await world.card(dm_of("ivan"), "Monospace")
    [secret] = [
        block["text"] for block in secret_card.card["body"] if block.get("fontType") == "Monospace"
    ]
    assert len(secret) >= 8
    for conversation, messages in world.teams.messages.items():
        for message in messages:
            if message is secret_card:
                continue
            assert all(secret not in json.dumps(v) for v in message.versions), conversation
    assert secret not in json.dumps(answer)


async def test_typed_links_and_mentions_stay_text(world: TeamsWorld) -> None:
    text = (
        "reset-mfa <at>Alice</at> INC-1234 lost-device [Approve here](https://evil.example) "
        "<at>Erin</at> {{DATE(x)}}"
    )
    request = await world.open_request(text, mentions=("alice", "erin"))
    assert "Erin" in request.note and "<at>" not in request.note
    approval = await world.card(APPROVALS, request.id)
    shown = json.dumps(approval.card)
    assert "[Approve here](" not in shown and "{{" not in shown and "<at>" not in shown
    assert not any(m.activity.get("entities") for m in world.teams.in_conversation(APPROVALS))


async def test_oversized_and_malformed_commands_create_nothing(world: TeamsWorld) -> None:
    for text in ("x" * 2500, "reset-mfa", "reset-mfa alice INC-1234 lost-device", "frobnicate"):
        assert (await world.say("bob", text)).status == 200
    await world.teams.until(lambda: len(world.teams.in_conversation(dm_of("bob"))) >= 4)
    assert await world.runtime.store.open_requests() == []
    assert world.teams.in_conversation(APPROVALS) == []
    assert world.teams.in_conversation(SECURITY) == []


async def test_an_empty_message_opens_the_form_and_it_validates_in_place(world: TeamsWorld) -> None:
    assert (await world.say("bob", "<at>twokey</at>", ["twokey"])).status == 200
    form = await world.card(dm_of("bob"), "Ask for an identity change")
    answer = await world.press(
        "bob", form, "open", action="reset-mfa", ticket="nope", reason_code="lost-device"
    )
    shown = json.dumps(answer["value"])
    assert "Ask for an identity change" in shown and "Attention" in shown
    assert await world.runtime.store.open_requests() == []
    answer = await world.press(
        "bob",
        form,
        "open",
        action="reset-mfa",
        ticket="INC-1234",
        reason_code="lost-device",
        person="alice@example.com",
    )
    assert "TK-" in json.dumps(answer["value"])
    assert len(await world.runtime.store.open_requests()) == 1
