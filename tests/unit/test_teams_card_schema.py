"""Every card twokey sends to Teams is a valid Adaptive Card 1.5 (the published schema, vendored
in tests/schemas with its license), and user text cannot become a link or a mention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.channels.teams import replies
from app.domain.models import Approval, RequestState
from tests.unit.test_teams_cards import HOUR, NOW, make_request

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "tests" / "schemas" / "adaptive-card-1.5.json").read_text())
# Teams' documented extension of Input.ChoiceSet, the people picker ("choices.data", a
# Data.Query over a dataset such as graph.microsoft.com/users; schema 1.6 defines it so):
# allowed on a choice set, and held to that shape, nothing else added.
SCHEMA["definitions"]["Data.Query"] = {
    "type": "object",
    "properties": {
        "type": {"enum": ["Data.Query"]},
        "dataset": {"type": "string", "minLength": 1},
        "count": {"type": "number"},
        "skip": {"type": "number"},
    },
    "required": ["type", "dataset"],
    "additionalProperties": False,
}
SCHEMA["definitions"]["Input.ChoiceSet"]["properties"]["choices.data"] = {
    "$ref": "#/definitions/Data.Query"
}
VALIDATOR = jsonschema.Draft6Validator(SCHEMA)


def valid(card: dict[str, Any]) -> None:
    errors = sorted(VALIDATOR.iter_errors(card), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors[:5]]
    assert card["version"] == "1.5"


STATES = [
    {},
    {"owner_confirmed_at": NOW - 60_000},
    {"approvals": (Approval(approver_id="carol", approved_at=NOW, valid_until=NOW + HOUR),)},
    {"state": RequestState.COMPLETED, "finished_at": NOW, "dispute_until": NOW + HOUR},
    {"state": RequestState.DENIED, "decided_by": "carol", "decision_reason": "no"},
    {"state": RequestState.EXPIRED},
    {"note": "[Click me](https://evil.example) <at>Erin</at> **bold**"},
]


@pytest.mark.parametrize("role", ["owner", "approvers", "requester", "approver-dm"])
@pytest.mark.parametrize("changes", STATES)
def test_request_cards_are_valid(role: str, changes: dict[str, Any]) -> None:
    card = replies.card_for(role, make_request(**changes), NOW, note="Refused: [x](http://y)")
    valid(card)


def test_other_cards_are_valid() -> None:
    request = make_request()
    valid(replies.notice_card("Request TK-4K7M2P9Q opened.\nSecond line", "Title"))
    valid(replies.alert_card("[evil](https://evil.example)", request))
    valid(replies.alert_card("no request", None))
    valid(replies.secret_card(request, "s3cr3t-value", "temporary access pass"))
    valid(replies.open_form_card(["lost-device"]))
    valid(
        replies.open_form_card(
            ["lost-device"],
            {"action": "reset-mfa", "ticket": "bad", "person": "aad-alice"},
            {"ticket": "The ticket must look like INC-1234.", "form": "x"},
        )
    )


def test_user_text_stays_literal() -> None:
    text = json.dumps(replies.notice_card("[Click](https://evil.example) <at>Erin</at>"))
    assert "[Click](" not in text and "<at>" not in text
