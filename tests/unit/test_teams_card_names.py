"""Teams cards name people by their directory display names, escaped like typed text."""

from __future__ import annotations

from typing import Any

import pytest

from app.channels.teams import replies
from app.domain.models import Action, Approval, PrincipalKind, RequestState
from tests.unit.test_teams_card_schema import valid
from tests.unit.test_teams_cards import HOUR, NOW, make_request, texts

NAMES = {"alice": "Alice Adams", "carol": "Carol Chen", "dave": "Dave Diaz"}
APPROVED = (Approval(approver_id="carol", approved_at=NOW - 60_000, valid_until=NOW + HOUR),)


def shown(card: dict[str, Any]) -> str:
    return "\n".join(texts(card))


@pytest.mark.parametrize("role", ["approvers", "requester"])
def test_owner_and_approvers_are_named_not_identified(role: str) -> None:
    request = make_request(owner_confirmed_at=NOW - 60_000, approvals=APPROVED)
    card = replies.card_for(role, request, NOW, names=NAMES)
    words = shown(card)
    assert "Owner: Alice Adams at" in words
    assert "Approvals: 1 of 1 (Carol Chen)" in words
    assert "Bob Brown" in words and "Alice Adams" in words  # requester and target
    assert "(carol)" not in words and "alice at" not in words
    valid(card)


def test_without_names_the_ids_are_shown() -> None:
    request = make_request(approvals=APPROVED)
    words = shown(replies.card_for("approvers", request, NOW))
    assert "Approvals: 1 of 1 (carol)" in words and "waiting for alice" in words


def test_who_denied_is_named() -> None:
    request = make_request(
        state=RequestState.DENIED, decided_by="dave", decision_reason="no", decided_at=NOW
    )
    for role in ("approvers", "requester", "owner"):
        assert "Denied by Dave Diaz" in shown(replies.card_for(role, request, NOW, names=NAMES))


def test_an_nhi_names_its_owner_for_the_approvers() -> None:
    nhi = make_request(
        action=Action.ROTATE_SECRET,
        target_id="nhi:billing-api",
        target_name="Billing API",
        target_kind=PrincipalKind.NHI,
        target_system="aws",
        owner_id="alice",
    )
    approval = shown(replies.card_for("approvers", nhi, NOW, names=NAMES))
    assert "Billing API (non-human identity on aws; owner Alice Adams)" in approval
    owner = shown(replies.card_for("owner", nhi, NOW, names=NAMES))
    assert "which you own" in owner and "owner Alice Adams" not in owner


def test_a_display_name_cannot_become_a_link_or_a_mention() -> None:
    """Anyone who can edit their directory profile types their own display name."""
    evil = {
        "carol": "[Approve here](https://evil.example) <at>Everyone</at> **now**",
        "alice": "- 1. {{DATE(2030-01-01T00:00:00Z)}}",
    }
    request = make_request(approvals=APPROVED)
    card = replies.card_for("approvers", request, NOW, names=evil)
    words = shown(card)
    assert (
        "\\[Approve here\\](https://evil.example) \\<at\\>Everyone\\</at\\> \\*\\*now\\*\\*"
        in words
    )
    assert "](https" not in words.replace("\\](https", "")
    assert "{{" not in words
    valid(card)


def test_a_long_display_name_is_cut() -> None:
    request = make_request(approvals=APPROVED)
    words = shown(replies.card_for("approvers", request, NOW, names={"carol": "C" * 500}))
    assert "C" * 119 + "…" in words and "C" * 121 not in words
