"""Presses a Teams client can forge: the request id in a button's data is the presser's to choose
(any chat, any card, a refresh too). Nobody reads a request they may not see that way."""

from __future__ import annotations

import json
from typing import Any

from teams_standin import APPROVALS, dm_of
from teams_world import TeamsWorld, buttons

from app.domain.models import RequestState


def forged(world: TeamsWorld, who: str, data: dict[str, Any], verb: str, trigger: str) -> Any:
    """An ``adaptiveCard/action`` invoke from ``who``'s own 1:1 chat, on no card of twokey's."""
    value = {"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": trigger}
    return world.activity(
        "invoke", who, name="adaptiveCard/action", value=value, replyToId="m-not-a-card"
    )


async def test_a_forged_press_shows_nothing_of_a_request_the_presser_may_not_see(
    world: TeamsWorld,
) -> None:
    request = await world.open_request(
        "reset-mfa <at>Alice</at> INC-1234 lost-device call-back-on-0170-secret-number"
    )
    approval = await world.card(APPROVALS, request.id)
    data = buttons(approval.card)["approve"]["data"]
    # grace holds no role of this request's and is not involved: a refresh, a refused press and
    # enough refused presses to alert security (the service then tells of the request) alike
    for trigger in ("automatic", "manual", "manual", "manual", "manual"):
        answer = await world.post(forged(world, "grace", data, "approve", trigger))
        assert answer.status == 200
        shown = json.dumps(await answer.json())
        assert "call-back-on-0170" not in shown and "INC-1234" not in shown, trigger
        assert "card.adaptive" not in shown, trigger
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.state is RequestState.PENDING and not stored.approvals
    # who may see it still gets its card, from their own chat too (an approver: dave)
    answer = await world.post(forged(world, "dave", data, "approve", "automatic"))
    assert "call-back-on-0170" in json.dumps(await answer.json())


async def test_a_refused_press_on_the_card_itself_still_shows_that_card(
    world: TeamsWorld,
) -> None:
    """Whoever is in the chat where a request's card is already sees it: grace in the
    approvals channel is refused with the card, the reason on top."""
    request = await world.open_request()
    approval = await world.card(APPROVALS, request.id)
    answer = await world.press("grace", approval, "approve")
    assert answer["type"].endswith("card.adaptive") and "approve" in buttons(answer["value"])
    assert request.id in json.dumps(answer["value"])
    owner = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    assert "confirm" in buttons(owner.card)


async def test_only_a_chat_teams_calls_personal_becomes_someones_1_1_chat(
    world: TeamsWorld,
) -> None:
    """Where an owner's secret goes is remembered only from a chat Teams names ``personal``:
    a message from a group chat whose type is missing must not become bob's 1:1 chat, and
    the answer meant for him alone goes to his 1:1 chat, not there."""
    group = "19:group-with-mallory@thread.v2"
    message = world.message("bob", "list", conversation=group)
    message["conversation"].pop("conversationType")
    assert (await world.post(message)).status == 200
    await world.teams.until(lambda: world.teams.in_conversation(dm_of("bob")))
    bob = await world.runtime.directory.find_by_email("bob@example.com")
    remembered = await world.runtime.ledger.conversation_of("teams", bob[0].id)
    assert remembered is not None and remembered["conversation"] == dm_of("bob")
    assert world.teams.in_conversation(group) == []
