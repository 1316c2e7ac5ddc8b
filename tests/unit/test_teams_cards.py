"""The Adaptive Card builders: buttons, risk, final states, escaping and Teams' limits."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from app.channels.common import ButtonAction, decode_button
from app.channels.teams import cards
from app.channels.teams.cards import (
    MAX_ACTIONS,
    MAX_CARD_BYTES,
    approval_card,
    owner_card,
    owner_confirmation_card,
    owner_done_card,
    plain,
    requester_status_card,
)
from app.domain.models import Action, Approval, Plan, PrincipalKind, Request, RequestState

NOW = 1_800_000_000_000
HOUR = 3_600_000
BUILDERS = [owner_confirmation_card, approval_card, requester_status_card, owner_done_card]


def make_request(**changes: Any) -> Request:
    plan = Plan(rule="default", tier="standard", tier_label="Standard", reasons=("rule 'default'",))
    fields: dict[str, Any] = {
        "id": "TK-4K7M2P9Q",
        "ticket": "INC-1234",
        "action": Action.RESET_MFA,
        "target_id": "alice",
        "target_name": "Alice Adams",
        "target_kind": PrincipalKind.HUMAN,
        "owner_id": "alice",
        "requester_id": "bob",
        "requester_name": "Bob Brown",
        "reason_code": "lost-device",
        "plan": plan,
        "created_at": NOW - HOUR,
        "expires_at": NOW + 3 * HOUR,
    }
    fields.update(changes)
    return Request(**fields)


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def actions_of(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in walk(card) if str(n.get("type", "")).startswith("Action.")]


def executes(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in walk(card) if n.get("type") == "Action.Execute"]


def texts(card: dict[str, Any]) -> list[str]:
    found = []
    for node in walk(card):
        if node.get("type") == "TextBlock":
            found.append(node["text"])
        if node.get("type") == "FactSet":
            found += [f"{f['title']}: {f['value']}" for f in node["facts"]]
    return found


def buttons(card: dict[str, Any]) -> dict[str, tuple[ButtonAction, str]]:
    return {a["title"]: decode_button(a["data"]["button"]) for a in executes(card)}


# ---- the buttons ---------------------------------------------------------------------------


def test_owner_is_asked_yes_or_no_and_the_buttons_carry_only_action_and_id() -> None:
    card = owner_confirmation_card(make_request(), NOW)

    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    assert buttons(card) == {
        "Yes, it was me": (ButtonAction.CONFIRM, "TK-4K7M2P9Q"),
        "No, this wasn't me": (ButtonAction.REJECT, "TK-4K7M2P9Q"),
    }
    for action in executes(card):
        assert set(action["data"]) == {"button"}
        assert action["verb"] == decode_button(action["data"]["button"])[0].value
    assert "Did you ask for this?" in texts(card)[0]


def test_once_the_owner_confirmed_their_card_has_no_buttons() -> None:
    confirmed = make_request(owner_confirmed_at=NOW - 1000)

    card = owner_confirmation_card(confirmed, NOW)

    assert actions_of(card) == []
    assert any("You confirmed" in t for t in texts(card))


def test_a_lapsed_confirmation_asks_the_owner_again() -> None:
    """The store takes a fresh "Yes" once the first one lapsed: the card must offer it again."""
    lapsed = make_request(owner_confirmed_at=NOW - 31 * 60 * 1000)
    assert not lapsed.owner_gate_satisfied(NOW) and "owner confirmation" in lapsed.waiting_for(NOW)

    card = owner_confirmation_card(lapsed, NOW)

    assert set(buttons(card)) == {"Yes, it was me", "No, this wasn't me"}
    assert any("lapsed" in t for t in texts(card))
    assert not any(t.startswith("You confirmed") for t in texts(card))


def test_approval_card_offers_approve_and_a_deny_that_asks_why() -> None:
    card = approval_card(make_request(), NOW)

    assert buttons(card) == {
        "Approve": (ButtonAction.APPROVE, "TK-4K7M2P9Q"),
        "Deny request": (ButtonAction.DENY, "TK-4K7M2P9Q"),
    }
    show = next(a for a in card["actions"] if a["type"] == "Action.ShowCard")
    reason = show["card"]["body"][0]
    assert reason["type"] == "Input.Text" and reason["id"] == "reason"
    assert reason["isRequired"] is True and reason["maxLength"] == 300


def test_approval_card_drops_its_buttons_once_enough_approvals_are_in() -> None:
    approved = make_request(
        approvals=(Approval(approver_id="carol", approved_at=NOW, valid_until=NOW + HOUR),)
    )

    card = approval_card(approved, NOW)

    assert actions_of(card) == []
    assert any("Approvals: 1 of 1 (carol)" == t for t in texts(card))


def test_requester_can_cancel_while_open_only() -> None:
    assert buttons(requester_status_card(make_request(), NOW)) == {
        "Cancel request": (ButtonAction.CANCEL, "TK-4K7M2P9Q")
    }
    cancelled = make_request(state=RequestState.CANCELLED, decided_by="bob")
    assert actions_of(requester_status_card(cancelled, NOW)) == []


def test_owner_may_dispute_a_completed_change_only_while_the_window_is_open() -> None:
    done = make_request(
        state=RequestState.COMPLETED, finished_at=NOW - 1000, dispute_until=NOW + HOUR
    )

    assert buttons(owner_done_card(done, NOW)) == {
        "This wasn't me": (ButtonAction.DISPUTE, "TK-4K7M2P9Q")
    }
    assert owner_card(done, NOW) == owner_done_card(done, NOW)
    assert actions_of(owner_done_card(done, NOW + HOUR)) == []
    disputed = done.model_copy(update={"disputed_at": NOW - 10})
    card = owner_done_card(disputed, NOW)
    assert actions_of(card) == []
    assert any("DISPUTED" in t for t in texts(card))


FINAL = [
    {"state": RequestState.DENIED, "decided_by": "carol", "decision_reason": "caller unverified"},
    {"state": RequestState.REJECTED_BY_OWNER, "decided_by": "alice"},
    {"state": RequestState.EXPIRED},
    {"state": RequestState.CANCELLED, "decided_by": "bob"},
    {"state": RequestState.FAILED, "outcome_detail": "provider refused"},
    {"state": RequestState.INTERRUPTED},
    {"state": RequestState.COMPLETED, "finished_at": NOW - 2 * HOUR, "dispute_until": NOW - HOUR},
]


@pytest.mark.parametrize("final", FINAL, ids=lambda f: f["state"].value)
@pytest.mark.parametrize("build", [*BUILDERS, owner_card], ids=lambda b: b.__name__)
def test_final_states_have_no_buttons(final: dict[str, Any], build: Any) -> None:
    card = build(make_request(**final), NOW)

    assert actions_of(card) == []
    assert "actions" not in card


def test_a_denied_request_says_who_denied_it_and_why() -> None:
    denied = make_request(**FINAL[0])

    assert any("Denied by carol: caller unverified" in t for t in texts(approval_card(denied, NOW)))
    assert any("Denied" in t for t in texts(requester_status_card(denied, NOW)))


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_an_open_request_past_its_expiry_shows_expired_without_buttons(build: Any) -> None:
    lapsed = make_request(expires_at=NOW - 1)

    card = build(lapsed, NOW)

    assert actions_of(card) == []
    if build is not owner_done_card:
        assert any("Expired" in t or "expired" in t for t in texts(card))


# ---- the risk, plainly ---------------------------------------------------------------------


def banner_lines(card: dict[str, Any]) -> list[str]:
    return [
        item["text"]
        for node in walk(card)
        if node.get("type") == "Container" and node.get("style") == "attention"
        for item in node["items"]
    ]


def test_a_privileged_account_is_flagged_prominently() -> None:
    plan = Plan(
        rule="privileged-account",
        tier="privileged",
        tier_label="Privileged account",
        privileged=True,
        approvals_needed=2,
        alert_security=True,
    )

    lines = banner_lines(
        approval_card(
            make_request(plan=plan, target_id="grace", target_name="Grace Green", owner_id="grace"),
            NOW,
        )
    )

    assert lines and lines[0].startswith("PRIVILEGED: Privileged account")


def test_a_production_nhi_is_flagged_with_its_system() -> None:
    plan = Plan(
        rule="production-nhi",
        tier="production-nhi",
        tier_label="Production non-human identity",
        approver_role="security",
        alert_security=True,
    )
    nhi = make_request(
        plan=plan,
        action=Action.ROTATE_SECRET,
        target_id="nhi:billing-api",
        target_name="Billing API (AWS access key)",
        target_kind=PrincipalKind.NHI,
        target_system="aws",
        owner_id="alice",
    )

    card = approval_card(nhi, NOW)

    assert any(
        line.startswith("NON-HUMAN IDENTITY: Production non-human identity")
        for line in banner_lines(card)
    )
    assert any("non-human identity on aws" in t for t in texts(card))
    assert any("which you own" in t for t in texts(owner_confirmation_card(nhi, NOW)))


def test_an_everyday_request_has_no_alarm_banner() -> None:
    assert banner_lines(approval_card(make_request(), NOW)) == []


def test_break_glass_shows_the_justification() -> None:
    plan = Plan(
        rule="breakglass",
        tier="breakglass",
        tier_label="Break-glass emergency",
        breakglass=True,
        privileged=True,
    )
    card = approval_card(
        make_request(plan=plan, justification="CEO locked out before the board call"), NOW
    )

    assert banner_lines(card)[0].startswith("BREAK-GLASS")
    assert any("Justification: CEO locked out before the board call" in t for t in texts(card))


# ---- what people typed stays text -----------------------------------------------------------


UNESCAPED_LINK = re.compile(r"(?<!\\)\[[^\]]*(?<!\\)\]\(")


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("[Approve now](https://evil.example)", r"\[Approve now\](https://evil.example)"),
        ("**urgent** _now_", r"\*\*urgent\*\* \_now\_"),
        ("<at>everyone</at>", r"\<at\>everyone\</at\>"),
        ("- not a list", r"\- not a list"),
        ("1. not a list", r"1\. not a list"),
        ("`code` ~strike~", r"\`code\` \~strike\~"),
        ("{{DATE(2017-02-14T06:08:00Z, SHORT)}}", "{ {DATE(2017-02-14T06:08:00Z, SHORT)}}"),
        ("back\\slash", r"back\\slash"),
        ("a\u202ebidi\u200bzero\nnewline", "abidizero newline"),
        ("&#91;x&#93;", r"\&\#91;x\&\#93;"),
    ],
)
def test_typed_text_is_neutralised(typed: str, shown: str) -> None:
    assert plain(typed, 200) == shown


def test_typed_text_is_bounded() -> None:
    assert plain("x" * 5000) == "x" * 119 + "…"
    assert len(plain("y" * 5000, 500)) == 500


def test_a_note_with_a_spoofed_link_stays_literal_on_every_card() -> None:
    sneaky = make_request(
        note="[Click to approve](https://evil.example) **now**",
        ticket="INC-1](https://evil.example)",
        requester_name="[IT Security](https://evil.example)",
        target_name="Alice [admin](https://evil.example)",
    )
    for build in BUILDERS:
        card = build(sneaky, NOW)
        for text in texts(card):
            assert not UNESCAPED_LINK.search(text), text
            assert "](" not in text.replace("\\](", "")


# ---- Teams' limits --------------------------------------------------------------------------


def biggest_request() -> Request:
    plan = Plan(
        rule="r" * 64,
        tier="t" * 40,
        tier_label="L" * 200,
        privileged=True,
        approvals_needed=5,
        breakglass=True,
        alert_security=True,
        reasons=tuple("reason " + "z" * 300 for _ in range(10)),
    )
    approvals = tuple(
        Approval(approver_id="a" * 200 + str(i), approved_at=NOW, valid_until=NOW + HOUR)
        for i in range(5)
    )
    return make_request(
        plan=plan,
        ticket="T" * 64,
        target_name="N" * 2000,
        target_kind=PrincipalKind.NHI,
        target_system="s" * 500,
        requester_name="R" * 2000,
        reason_code="c" * 40,
        note="[*_" * 500,
        justification="<&>" * 1000,
        approvals=approvals,
        escalated=True,
        decision_reason="d" * 300,
        outcome_detail="o" * 2000,
    )


@pytest.mark.parametrize("build", [*BUILDERS, owner_card], ids=lambda b: b.__name__)
@pytest.mark.parametrize("state", list(RequestState), ids=lambda s: s.value)
def test_every_card_fits_teams_limits(build: Any, state: RequestState) -> None:
    card = build(
        biggest_request().model_copy(update={"state": state, "dispute_until": NOW + HOUR}), NOW
    )

    assert len(json.dumps(card).encode()) < MAX_CARD_BYTES
    assert len(card.get("actions", [])) <= MAX_ACTIONS
    assert card["version"] == cards.CARD_VERSION and card["$schema"].startswith(
        "http://adaptivecards.io"
    )
    for action in executes(card):
        assert len(action["data"]["button"]) <= 64
        decode_button(action["data"]["button"])
    for node in walk(card):
        if node.get("type") == "TextBlock":
            assert node["wrap"] is True
            assert len(node["text"]) <= 2500


def test_titles_keep_the_actions_own_capitals() -> None:
    done = make_request(state=RequestState.COMPLETED, finished_at=NOW, dispute_until=NOW - 1)

    assert texts(approval_card(done, NOW))[0] == "Reset MFA for Alice Adams: completed"
