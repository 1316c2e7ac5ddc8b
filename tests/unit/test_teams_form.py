"""The request form: a people picker (Teams' Data.Query over the organisation's users) beside
the email field, and how the submitted fields are judged."""

from __future__ import annotations

from typing import Any

import pytest

from app.channels.teams import replies
from app.channels.teams.bot import form_errors
from app.domain.errors import BadInput
from tests.unit.test_teams_card_schema import valid
from tests.unit.test_teams_cards import walk

REASONS = ["lost-device"]
FILLED = {"action": "reset-mfa", "ticket": "INC-1", "reason_code": "lost-device"}


def by_id(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        n["id"]: n for n in walk(card) if "id" in n and str(n.get("type", "")).startswith("Input.")
    }


def check_ticket(ticket: str) -> None:
    if not ticket.startswith("INC-"):
        raise BadInput("The ticket must look like INC-1234.")


def test_the_form_offers_a_people_picker_and_the_email_field() -> None:
    card = replies.open_form_card(REASONS)
    inputs = by_id(card)
    picker = inputs["picked"]
    assert picker["type"] == "Input.ChoiceSet" and picker["isMultiSelect"] is False
    assert picker["choices"] == []
    assert picker["choices.data"] == {"type": "Data.Query", "dataset": "graph.microsoft.com/users"}
    assert "value" not in picker
    assert inputs["person"]["type"] == "Input.Text"  # typing an email still works
    assert list(inputs).index("picked") < list(inputs).index("person")
    valid(card)


def test_a_form_sent_back_keeps_the_pick() -> None:
    card = replies.open_form_card(REASONS, {"picked": "aad-alice"}, {"form": "Refused."})
    picker = by_id(card)["picked"]
    assert picker["value"] == "aad-alice"
    assert picker["choices"] == [{"title": "The person you picked", "value": "aad-alice"}]
    valid(card)


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ({"picked": "6f1b2c3d-0000-4a5b-8c9d-0123456789ab"}, True),
        ({"person": "alice@example.com"}, True),
        ({"nhi": "nhi:billing-api"}, True),
        ({"picked": "aad-alice", "person": "alice@example.com"}, False),
        ({"picked": "aad-alice", "nhi": "nhi:billing-api"}, False),
        ({"picked": "aad-alice,aad-carol"}, False),
        ({"picked": "../../v3/conversations"}, False),
        ({}, False),
    ],
)
def test_exactly_one_target(target: dict[str, str], ok: bool) -> None:
    errors = form_errors({**FILLED, **target}, REASONS, check_ticket)
    assert ("target" not in errors) is ok, errors
    assert set(errors) <= {"target"}
