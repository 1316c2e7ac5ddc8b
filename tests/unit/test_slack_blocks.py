"""The Block Kit builders: pure functions from a stored request to blocks, tested on their
output, on escaping, and on Slack's documented limits (50 blocks, 3000 characters per text,
75 per button text), including with the most hostile input the forms accept."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from app.channels.common import ButtonAction, decode_button
from app.channels.slack import blocks as bk
from app.domain.forms import JUSTIFICATION_MAX, NOTE_MAX, REASON_MAX
from app.domain.models import Action, Approval, Plan, PrincipalKind, Request, RequestState

NOW = 1_800_000_000_000
HOUR = 3_600_000
DATE = re.compile(r"<!date\^\d+\^\{date_short_pretty\} \{time\}\|[0-9: -]+UTC>")
HOSTILE = "<!channel> <https://evil.example|bank.com> <@U0CAROL> & <!here> <#C123>"


def plan(**extra: Any) -> Plan:
    values: dict[str, Any] = {
        "rule": "default",
        "tier": "standard",
        "tier_label": "Standard",
        "approvals_needed": 1,
        **extra,
    }
    return Plan(**values)


def request(**extra: Any) -> Request:
    values: dict[str, Any] = {
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
        "plan": plan(),
        "created_at": NOW - HOUR,
        "expires_at": NOW + 3 * HOUR,
        **extra,
    }
    return Request(**values)


def hostile() -> Request:
    """Everything a person can type, at its maximum length, full of Slack control characters."""
    return request(
        ticket="&" * 64,
        target_name="<" * 200,
        requester_name=">" * 200,
        reason_code="&" * 40,
        note=("&" * (NOTE_MAX - len(HOSTILE))) + HOSTILE,
        justification="<" * JUSTIFICATION_MAX,
        decision_reason="&" * REASON_MAX,
        outcome_detail=HOSTILE * 8,
        plan=plan(tier_label="&" * 100, breakglass=True, privileged=True, approver_role="<" * 40),
    )


CTX = bk.CardContext(now=NOW, names={"alice": "Alice Adams", "carol": "Carol Chen"})
HOSTILE_CTX = bk.CardContext(now=NOW, names={"alice": HOSTILE * 5, "carol": "<" * 300})

BUILDERS = [bk.approval_card, bk.owner_card, bk.requester_card, bk.request_status]
STATES = list(RequestState)


def texts(value: Any) -> list[str]:
    """Every ``text`` string anywhere in a block structure."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                found.append(item)
            else:
                found += texts(item)
    elif isinstance(value, list):
        for item in value:
            found += texts(item)
    return found


def buttons(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        e["action_id"]: e
        for b in blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e["type"] == "button"
    }


# ---- escaping ----------------------------------------------------------------------------------


def test_escape_turns_slacks_control_characters_into_entities() -> None:
    assert bk.escape("a & b < c > d") == "a &amp; b &lt; c &gt; d"
    assert bk.escape("&lt;") == "&amp;lt;", "an entity someone typed is shown as typed"


def test_shown_cuts_without_splitting_an_entity_and_drops_invisible_characters() -> None:
    cut = bk.shown("&" * 100, 12)
    assert cut == "&amp;&amp;…" and len(cut) <= 12
    assert bk.shown("a\u202eb\u200bc\u0000d", 50) == "abcd"
    assert bk.shown("", 10) == "" and bk.shown(None, 10) == ""
    assert bk.shown("Téléphone 📱 携帯", 50) == "Téléphone 📱 携帯"


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("state", STATES)
def test_no_typed_string_can_ping_link_or_mention(builder: Any, state: RequestState) -> None:
    blocks = builder(hostile().model_copy(update={"state": state}), HOSTILE_CTX)
    raw = json.dumps(blocks)
    for control in ("<!channel>", "<!here>", "<https://evil", "<@U0CAROL>", "<#C123>"):
        assert control not in raw
    for text in texts(blocks):
        # the only markup left may be twokey's own date tokens: everything typed is entities
        assert "<" not in DATE.sub("", text) and ">" not in DATE.sub("", text), text


def test_the_hostile_note_is_shown_escaped_and_verbatim() -> None:
    blocks = bk.approval_card(request(note=HOSTILE), CTX)
    note = next(b for b in blocks if "Note from the requester" in json.dumps(b))
    assert note["text"]["verbatim"] is True
    assert bk.escape(HOSTILE) in note["text"]["text"]


# ---- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("state", STATES)
def test_every_card_fits_slacks_limits_with_the_most_hostile_input(
    builder: Any, state: RequestState
) -> None:
    approvals = tuple(
        Approval(approver_id="carol", approved_at=NOW - i, valid_until=NOW + HOUR) for i in range(5)
    )
    stored = hostile().model_copy(
        update={
            "state": state,
            "approvals": approvals,
            "owner_confirmed_at": NOW - 5,
            "decided_by": "carol",
            "decided_at": NOW,
            "finished_at": NOW,
            "dispute_until": NOW + HOUR,
            "disputed_at": NOW,
        }
    )
    blocks = builder(stored, HOSTILE_CTX)
    assert bk.limit_problems(blocks) == []
    assert len(blocks) <= 50
    assert all(len(t) <= 3000 for t in texts(blocks))
    for button in buttons(blocks).values():
        assert len(button["text"]["text"]) <= 75
    assert len(bk.notification_text("approvers", stored)) <= bk.MAX_FALLBACK
    for _, line in bk.decision_lines(stored, HOSTILE_CTX):
        assert len(line) <= 3000 and "<!channel>" not in line


def test_limit_problems_finds_what_slack_would_refuse() -> None:
    too_many = [bk.section("x")] * 51
    assert any("51 blocks" in p for p in bk.limit_problems(too_many))
    long_text = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    assert bk.limit_problems(long_text)
    long_button = [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "a",
                    "text": {"type": "plain_text", "text": "y" * 76},
                }
            ],
        }
    ]
    assert bk.limit_problems(long_button) == ["block 0: button text over 75"]
    assert bk.limit_problems([{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}])


def test_a_list_of_hundreds_of_requests_stays_within_one_message() -> None:
    many = [request(id=f"TK-{i:08d}".replace("0", "A")[:11]) for i in range(300)]
    blocks = bk.listing_blocks(many, many, many, NOW)
    assert bk.limit_problems(blocks) == []
    assert "…and 290 more." in json.dumps(blocks, ensure_ascii=False)


def test_the_forms_fit_slacks_modal_limits() -> None:
    form = bk.open_form([f"reason-{i}" for i in range(150)], json.dumps({"channel": "C1"}))
    assert bk.limit_problems(form["blocks"], modal=True) == []
    assert len(form["title"]["text"]) <= 24 and len(form["submit"]["text"]) <= 24
    reasons = next(b for b in form["blocks"] if b["block_id"] == "reason")["element"]["options"]
    assert len(reasons) == 100
    deny = bk.deny_form("TK-4K7M2P9Q", json.dumps({"request": "TK-4K7M2P9Q"}))
    assert bk.limit_problems(deny["blocks"], modal=True) == []
    assert deny["callback_id"] == bk.DENY_FORM


# ---- what each card offers ---------------------------------------------------------------------


def test_the_approval_card_shows_the_facts_and_offers_approve_and_deny_while_pending() -> None:
    blocks = bk.approval_card(request(), CTX)
    raw = json.dumps(blocks)
    for fact in ("Alice Adams", "Bob Brown", "INC-1234", "lost-device", "Standard", "0 of 1"):
        assert fact in raw
    found = buttons(blocks)
    assert set(found) == {"twokey.approve", "twokey.deny"}
    assert decode_button(found["twokey.approve"]["value"]) == (ButtonAction.APPROVE, "TK-4K7M2P9Q")
    assert found["twokey.approve"]["value"] == "approve:TK-4K7M2P9Q", "only the id and the action"
    assert "confirm" in found["twokey.approve"]


@pytest.mark.parametrize("state", [s for s in STATES if s is not RequestState.PENDING])
def test_the_approval_card_has_no_buttons_once_it_is_not_pending(state: RequestState) -> None:
    assert buttons(bk.approval_card(request(state=state), CTX)) == {}


def test_the_approval_card_has_no_buttons_once_approvals_are_enough() -> None:
    approved = request(
        approvals=(Approval(approver_id="carol", approved_at=NOW, valid_until=NOW + HOUR),)
    )
    assert buttons(bk.approval_card(approved, CTX)) == {}
    assert "Carol Chen" in json.dumps(bk.approval_card(approved, CTX))


def test_a_lapsed_approval_is_shown_as_lapsed_and_buttons_come_back() -> None:
    lapsed = request(
        approvals=(Approval(approver_id="carol", approved_at=NOW - HOUR, valid_until=NOW - 1),)
    )
    blocks = bk.approval_card(lapsed, CTX)
    assert "(lapsed)" in json.dumps(blocks)
    assert "twokey.approve" in buttons(blocks)


def test_privileged_breakglass_and_production_nhi_are_shown_first() -> None:
    privileged = bk.approval_card(
        request(plan=plan(privileged=True, tier_label="Privileged account")), CTX
    )
    assert "Privileged account" in json.dumps(privileged[1])
    glass = bk.approval_card(
        request(plan=plan(breakglass=True), justification="CEO locked out"), CTX
    )
    assert "break-glass" in json.dumps(glass[1]).lower()
    assert "CEO locked out" in json.dumps(glass[1])
    nhi = bk.approval_card(
        request(
            target_kind=PrincipalKind.NHI,
            target_id="nhi:billing-api",
            target_name="Billing API",
            action=Action.ROTATE_SECRET,
            plan=plan(alert_security=True, tier_label="Production non-human identity"),
        ),
        CTX,
    )
    assert "production non-human identity" in json.dumps(nhi[1])
    assert "owner Alice Adams" in json.dumps(nhi)


def test_the_owner_card_asks_then_thanks_then_offers_a_dispute() -> None:
    asking = bk.owner_card(request(), CTX)
    assert set(buttons(asking)) == {"twokey.confirm", "twokey.reject"}
    assert "Did you ask for this?" in json.dumps(asking)
    confirmed = bk.owner_card(request(owner_confirmed_at=NOW), CTX)
    assert buttons(confirmed) == {}
    done = request(state=RequestState.COMPLETED, dispute_until=NOW + HOUR, finished_at=NOW)
    assert set(buttons(bk.owner_card(done, CTX))) == {"twokey.dispute"}
    too_late = done.model_copy(update={"dispute_until": NOW - 1})
    assert buttons(bk.owner_card(too_late, CTX)) == {}
    disputed = done.model_copy(update={"disputed_at": NOW})
    assert buttons(bk.owner_card(disputed, CTX)) == {}


def test_a_lapsed_confirmation_asks_the_owner_again() -> None:
    ttl_ms = plan().approval_ttl * 1000
    lapsed = request(owner_confirmed_at=NOW - ttl_ms - 1)
    assert set(buttons(bk.owner_card(lapsed, CTX))) == {"twokey.confirm", "twokey.reject"}
    assert "lapsed" in json.dumps(bk.owner_card(lapsed, CTX))
    still_valid = request(owner_confirmed_at=NOW - ttl_ms + 60_000)
    assert buttons(bk.owner_card(still_valid, CTX)) == {}


def test_the_owner_can_still_say_no_when_confirmation_is_not_required() -> None:
    blocks = bk.owner_card(request(plan=plan(owner_confirmation=False)), CTX)
    assert set(buttons(blocks)) == {"twokey.reject"}


def test_the_requester_card_offers_cancel_only_while_open() -> None:
    assert set(buttons(bk.requester_card(request(), CTX))) == {"twokey.cancel"}
    assert set(buttons(bk.requester_card(request(state=RequestState.READY), CTX))) == {
        "twokey.cancel"
    }
    assert buttons(bk.requester_card(request(state=RequestState.DENIED), CTX)) == {}


def test_final_cards_say_who_decided_and_when() -> None:
    denied = request(
        state=RequestState.DENIED, decided_by="carol", decided_at=NOW, decision_reason="no callback"
    )
    raw = json.dumps(bk.approval_card(denied, CTX))
    assert "Denied by Carol Chen" in raw and "no callback" in raw and "<!date^1800000000^" in raw


def test_the_thread_hears_how_a_request_ended_not_each_step_on_the_way() -> None:
    pending = request(
        owner_confirmed_at=NOW - 10,
        approvals=(Approval(approver_id="carol", approved_at=NOW, valid_until=NOW + HOUR),),
    )
    assert bk.decision_lines(pending, CTX) == [], "the card shows the steps; the thread is quiet"
    stored = pending.model_copy(update={"state": RequestState.COMPLETED, "finished_at": NOW})
    lines = bk.decision_lines(stored, CTX)
    assert [k for k, _ in lines] == ["final:completed"]
    assert "Completed" in lines[0][1]
    assert bk.decision_lines(stored, CTX) == lines, "the same request gives the same keys"


def test_the_secret_is_only_in_a_literal_block_and_never_in_mrkdwn() -> None:
    secret = "<!channel>&pa55<word>"
    blocks = bk.secret_blocks(request(action=Action.RESET_PASSWORD), secret, "temporary password")
    literal = [b for b in blocks if b["type"] == "rich_text"]
    assert literal[0]["elements"][0]["elements"][0]["text"] == secret
    others = json.dumps([b for b in blocks if b["type"] != "rich_text"])
    assert secret not in others and "pa55" not in others
    assert bk.limit_problems(blocks) == []


def test_notification_text_is_short_escaped_and_has_no_note() -> None:
    stored = request(note="secret-ish note", target_name="<@U0CAROL>")
    for role in bk.ROLES:
        text = bk.notification_text(role, stored)
        assert "secret-ish" not in text and "<@U0CAROL>" not in text
        assert len(text) <= bk.MAX_FALLBACK


def test_help_shows_its_angle_brackets_as_text() -> None:
    assert "<" not in bk.HELP.replace("&lt;", "") and "&lt;request-id&gt;" in bk.HELP


def test_when_lets_slack_show_each_reader_their_own_time_zone() -> None:
    assert bk.when(NOW) == "<!date^1800000000^{date_short_pretty} {time}|2027-01-15 08:00 UTC>"
    assert bk.when(None) == "-"


def mrkdwn_objects(value: Any) -> list[dict[str, Any]]:
    """Every mrkdwn text object anywhere in a block structure (confirm dialogs included)."""
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        if value.get("type") == "mrkdwn":
            found.append(value)
        for item in value.values():
            found += mrkdwn_objects(item)
    elif isinstance(value, list):
        for item in value:
            found += mrkdwn_objects(item)
    return found


@pytest.mark.parametrize("builder", BUILDERS)
def test_every_mrkdwn_text_is_verbatim_so_slack_links_and_mentions_nothing_itself(
    builder: Any,
) -> None:
    """Directory names and tickets reach confirm dialogs too: Slack must not auto-link them."""
    target = request(target_name="https://evil.example/login #general @here")
    objects = mrkdwn_objects(builder(target, CTX))
    assert objects
    assert all(o.get("verbatim") is True for o in objects), [
        o for o in objects if not o.get("verbatim")
    ]
