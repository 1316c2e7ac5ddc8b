"""The manager's attestation card on Slack (Block Kit) and Teams (Adaptive Card): two buttons
carrying only the action and the request id while the question is open, the answer once given,
every name and label escaped, inside Slack's limits and the Adaptive Card 1.5 schema."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.channels.attest import ManagerAnswer, ManagerQuestion, manager_answer
from app.channels.common import ButtonAction, decode_button
from app.channels.slack import blocks as bk
from app.channels.teams import replies
from app.domain.models import Plan, PrincipalKind, RequestState
from tests.unit.test_slack_blocks import HOSTILE, NOW, hostile, request
from tests.unit.test_teams_card_schema import valid
from tests.unit.test_teams_cards import make_request

ASKED = ManagerQuestion(asked_at=NOW - 60_000, failures=0)
STEP_UP = {
    "plan": Plan(rule="default", tier="standard", approvals_needed=1, owner_step_up=("manager",)),
    "step_up_verifier": "manager",
    "step_up_changed_at": ASKED.asked_at,
}
ANSWERS: dict[ManagerAnswer, dict[str, Any]] = {
    ManagerAnswer.WAITING: {},
    ManagerAnswer.CONFIRMED: {"step_up_at": NOW, "step_up_changed_at": NOW},
    ManagerAnswer.NOT_CONFIRMED: {"step_up_failures": 1, "step_up_changed_at": NOW},
    ManagerAnswer.CLOSED: {"state": RequestState.CANCELLED, "decided_by": "bob"},
}


def slack_values(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["value"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_the_slack_card_shows_buttons_only_while_the_question_is_open(
    answer: ManagerAnswer,
) -> None:
    stored = request(**{**STEP_UP, **ANSWERS[answer]})
    assert manager_answer(stored, ASKED, NOW) is answer
    blocks = bk.card_for("manager", stored, bk.CardContext(now=NOW), ASKED)
    assert bk.limit_problems(blocks) == []
    values = slack_values(blocks)
    if answer is ManagerAnswer.WAITING:
        assert [decode_button(v) for v in values] == [
            (ButtonAction.ATTEST_YES, stored.id),
            (ButtonAction.ATTEST_NO, stored.id),
        ]
        shown = json.dumps(blocks)
        assert "Yes, I confirmed it with them" in shown and "No, I could not" in shown
    else:
        assert values == []


def test_the_slack_card_asks_in_plain_words_and_escapes_every_name() -> None:
    ctx = bk.CardContext(now=NOW, names={"alice": "Alice Adams"})
    shown = json.dumps(bk.manager_card(request(**STEP_UP), ctx, ASKED))
    assert (
        "Did you confirm with Alice Adams by phone or in person that they asked for reset MFA?"
        in shown
    )
    evil = hostile().model_copy(update=STEP_UP)
    ctx = bk.CardContext(now=NOW, names={"alice": HOSTILE, "bob": HOSTILE})
    blocks = bk.manager_card(evil, ctx, ASKED)
    assert bk.limit_problems(blocks) == []
    text = json.dumps(blocks)
    for raw in ("<!channel>", "<https://", "<@U0CAROL>", "<!here>", "<#C123>"):
        assert raw not in text


def test_a_card_of_an_earlier_question_is_closed_when_asked_again() -> None:
    again = request(**{**STEP_UP, "step_up_changed_at": NOW})
    assert manager_answer(again, ASKED, NOW) is ManagerAnswer.CLOSED
    assert manager_answer(again, ManagerQuestion.of(again), NOW) is ManagerAnswer.WAITING
    assert "asked again" in json.dumps(bk.manager_card(again, bk.CardContext(now=NOW), ASKED))
    assert ManagerQuestion.from_extra(ASKED.as_extra()) == ASKED
    assert ManagerQuestion.from_extra({"asked_at": "x", "failures": "0"}) is None


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_the_teams_card_is_valid_and_has_buttons_only_while_open(answer: ManagerAnswer) -> None:
    stored = make_request(**{**STEP_UP, **ANSWERS[answer]})
    card = replies.card_for("manager", stored, NOW, note="Refused: [x](http://y)", question=ASKED)
    valid(card)
    verbs = [a["verb"] for a in card.get("actions", [])]
    datas = [a["data"] for a in card.get("actions", [])]
    if answer is ManagerAnswer.WAITING:
        assert verbs == ["attest_yes", "attest_no"]
        assert datas == [{"button": f"{v}:{stored.id}"} for v in verbs]
    else:
        assert verbs == []


def test_the_teams_card_keeps_names_and_labels_literal() -> None:
    evil = "[Click me](https://evil.example) <at>Erin</at> **bold**"
    stored = make_request(
        **STEP_UP, target_kind=PrincipalKind.NHI, target_name=evil, requester_name=evil
    )
    card = replies.card_for("manager", stored, NOW, names={"alice": evil}, question=ASKED)
    valid(card)
    text = json.dumps(card)
    assert "[Click me](" not in text and "<at>" not in text and "**bold**" not in text
    assert replies.role_of_verb("attest_yes") == replies.role_of_verb("attest_no") == "manager"
