"""/twokey alone opens the request form; its fields are checked in place (response_action:
errors) and a good form opens the same request the one-line command would."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from slack_standin import HELPDESK
from slack_world import SlackWorld


def answers(
    action: str | None = "reset-mfa",
    person: str | None = "U0ALICE",
    nhi: str | None = None,
    ticket: str = "INC-4321",
    reason: str | None = "lost-device",
    note: str = "",
) -> dict[str, dict[str, dict[str, Any]]]:
    def option(value: str | None) -> dict[str, Any] | None:
        return {"text": {"type": "plain_text", "text": value}, "value": value} if value else None

    return {
        "action": {"value": {"type": "static_select", "selected_option": option(action)}},
        "person": {"value": {"type": "users_select", "selected_user": person}},
        "nhi": {"twokey.nhi": {"type": "external_select", "selected_option": option(nhi)}},
        "ticket": {"value": {"type": "plain_text_input", "value": ticket}},
        "reason": {"value": {"type": "static_select", "selected_option": option(reason)}},
        "note": {"value": {"type": "plain_text_input", "value": note}},
    }


async def open_form(world: SlackWorld) -> dict[str, Any]:
    response, _ = await world.command("U0BOB", "")
    assert response.status == 200
    opened = await world.slack.until(lambda: world.slack.of("views.open"))
    assert opened[-1].ok, opened[-1].answer
    view: dict[str, Any] = opened[-1].answer["view"]
    assert view["callback_id"] == "twokey.open"
    return view


async def test_the_form_opens_with_the_policys_choices(world: SlackWorld) -> None:
    view = await open_form(world)
    text = json.dumps(view)
    for reason in ("lost-device", "forgotten-password", "locked-out"):
        assert reason in text
    assert "users_select" in text and "external_select" in text
    assert json.loads(view["private_metadata"]) == {"channel": HELPDESK}


async def test_bad_fields_are_shown_in_place_and_nothing_is_opened(world: SlackWorld) -> None:
    view = await open_form(world)
    cases = [
        (answers(ticket="not a ticket"), {"ticket"}),
        (answers(person=None), {"person"}),
        (answers(nhi="nhi:billing-api"), {"person"}),
        (answers(action="rotate-secret"), {"person"}),
        (answers(person=None, nhi="nhi:billing-api"), {"nhi"}),
        (answers(reason="because"), {"reason"}),
        (answers(action="delete-everything"), {"action"}),
    ]
    for values, blocks in cases:
        response = await world.interact(world.submission("U0BOB", view, values))
        answer = await response.json()
        assert answer["response_action"] == "errors", values
        assert set(answer["errors"]) == blocks, answer
    await asyncio.sleep(0.2)
    assert await world.runtime.store.open_requests() == []


async def test_a_good_form_opens_the_request(world: SlackWorld) -> None:
    view = await open_form(world)
    response = await world.interact(
        world.submission("U0BOB", view, answers(note="New phone <!here>"))
    )
    assert response.status == 200 and await response.text() == ""
    receipt = await world.ephemeral_to("U0BOB")
    assert "opened" in receipt
    requests = await world.runtime.store.open_requests()
    assert len(requests) == 1
    request = requests[0]
    assert (request.target_id, request.ticket, request.reason_code) == (
        "alice",
        "INC-4321",
        "lost-device",
    )
    assert request.note == "New phone <!here>"
    card = await world.slack.until(lambda: world.card(request.id, "approvers"))
    assert "&lt;!here&gt;" in json.dumps(card.blocks)


async def test_a_good_form_for_an_nhi_opens_a_rotation(world: SlackWorld) -> None:
    view = await open_form(world)
    values = answers(
        action="rotate-secret", person=None, nhi="nhi:billing-api", reason="scheduled-rotation"
    )
    await world.interact(world.submission("U0BOB", view, values))
    assert "opened" in await world.ephemeral_to("U0BOB")
    (request,) = await world.runtime.store.open_requests()
    assert request.target_id == "nhi:billing-api" and request.owner_id == "alice"
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    assert "non-human identity you own" in json.dumps(owner.blocks)


async def test_a_refusal_after_the_form_closed_reaches_the_agent(world: SlackWorld) -> None:
    """The form is fine, but bob cannot open a request on himself: told by ephemeral."""
    view = await open_form(world)
    await world.interact(world.submission("U0BOB", view, answers(person="U0BOB")))
    assert "your own account" in await world.ephemeral_to("U0BOB")
    assert await world.runtime.store.open_requests() == []


async def test_the_nhi_picker_lists_matching_nhis_only(world: SlackWorld) -> None:
    view = await open_form(world)
    payload = {
        "type": "block_suggestion",
        "user": {"id": "U0BOB", "username": "bob", "name": "bob", "team_id": "T0TWOKEY"},
        "container": {"type": "view", "view_id": view["id"]},
        "api_app_id": "A0TWOKEY",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "action_id": "twokey.nhi",
        "block_id": "nhi",
        "value": "",
        "team": {"id": "T0TWOKEY", "domain": "twokey-test"},
        "enterprise": None,
        "is_enterprise_install": False,
        "view": view,
    }
    response = await world.interact(payload)
    options = (await response.json())["options"]
    assert {o["value"] for o in options} == {"nhi:billing-api", "nhi:ci-deployer"}
    payload["value"] = "bill"
    options = (await (await world.interact(payload)).json())["options"]
    assert [o["value"] for o in options] == ["nhi:billing-api"]


async def test_a_form_slack_could_not_open_is_explained(world: SlackWorld) -> None:
    world.slack.fail("views.open", "expired_trigger_id")
    _, form = await world.command("U0BOB", "")
    assert "could not open" in await world.ephemeral_to("U0BOB")
    assert form["trigger_id"]


def nhi_search(user: str, view: dict[str, Any], team: str = "T0TWOKEY") -> dict[str, Any]:
    return {
        "type": "block_suggestion",
        "user": {"id": user, "username": user[2:].lower(), "name": "x", "team_id": team},
        "container": {"type": "view", "view_id": view["id"]},
        "api_app_id": "A0TWOKEY",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "action_id": "twokey.nhi",
        "block_id": "nhi",
        "value": "",
        "team": {"id": "T0TWOKEY", "domain": "twokey-test"},
        "enterprise": None,
        "is_enterprise_install": False,
        "view": view,
    }


async def test_the_nhi_picker_shows_the_directory_only_to_people_who_may_request(
    world: SlackWorld,
) -> None:
    """A guest, a Slack Connect stranger or an approver cannot browse the directory's NHIs."""
    view = await open_form(world)
    for user in ("U0GUEST", "U0MALLORY", "U0NOMAIL", "U0CAROL"):
        response = await world.interact(nhi_search(user, view))
        assert response.status == 200
        assert (await response.json())["options"] == [], user
    options = (await (await world.interact(nhi_search("U0BOB", view))).json())["options"]
    assert {o["value"] for o in options} == {"nhi:billing-api", "nhi:ci-deployer"}
