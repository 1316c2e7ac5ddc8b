"""The ticket's own words on the approval cards (Slack and Teams): what the agent was asked,
by whom, for which group; outside text escaped like anything typed, cut, stripped of control
characters; and a plain warning when the ticket could not be checked at opening."""

from __future__ import annotations

import json
import re
from typing import Any

from app.channels.slack import blocks as bk
from app.channels.teams import cards
from app.domain.models import Request, RequestState, TicketDetails
from app.domain.tickets import SUMMARY_MAX, Ticket, details_of, unchecked_details
from tests.unit.test_slack_blocks import CTX, NOW, texts
from tests.unit.test_teams_cards import make_request
from tests.unit.test_teams_cards import texts as card_texts

SLACK_ATTACK = "<!channel> Reset <https://evil.example|bank.com> now <@U0CAROL> & <!here>"
CARD_ATTACK = "[Approve here](https://evil.example) **urgent** {{DATE(2020-01-01T00:00:00Z)}}"
INVISIBLE = "Lost\u202e phone\u200b\u0007 needs\x1b[31m MFA"


def details(**changes: Any) -> TicketDetails:
    values: dict[str, Any] = {
        "system": "ServiceNow",
        "summary": "Lost phone, needs MFA reset",
        "caller": "Alice Adams",
        "group": "Service Desk",
        **changes,
    }
    return TicketDetails(**values)


def with_details(**changes: Any) -> Request:
    return make_request(ticket_details=details(**changes))


def slack_ticket_text(request: Request) -> str:
    blocks = bk.approval_card(request, CTX)
    found = [t for t in texts(blocks) if "In ServiceNow" in t or "Ticket not checked" in t]
    assert len(found) == 1, texts(blocks)
    return found[0]


# ---- capture: what is kept of the ticket's text ------------------------------------------------


def test_details_are_cleaned_and_cut_when_captured() -> None:
    ticket = Ticket(
        number="INC0010001",
        state="2",
        short_description=INVISIBLE + " x" * 400,
        caller_name="Alice\u0000 Adams\n\t",
        assignment_group="Service\u200b Desk",
    )
    kept = details_of(ticket, "ServiceNow")
    assert kept.summary.startswith("Lost phone needs[31m MFA")
    assert len(kept.summary) <= SUMMARY_MAX and kept.summary.endswith("…")
    assert kept.caller == "Alice Adams" and kept.group == "Service Desk"
    assert kept.unchecked == ""


# ---- Slack -------------------------------------------------------------------------------------


def test_slack_shows_summary_caller_and_group_on_the_approval_card() -> None:
    text = slack_ticket_text(with_details())
    assert text == (
        "*In ServiceNow:* Lost phone, needs MFA reset\n"
        "Caller Alice Adams, assignment group Service Desk"
    )


def test_slack_mrkdwn_in_the_summary_cannot_ping_or_link() -> None:
    blocks = bk.approval_card(with_details(summary=SLACK_ATTACK, caller="<!everyone>"), CTX)
    raw = json.dumps(blocks)
    for control in ("<!channel>", "<!here>", "<https://evil", "<@U0CAROL>", "<!everyone>"):
        assert control not in raw
    text = slack_ticket_text(with_details(summary=SLACK_ATTACK))
    assert bk.escape(SLACK_ATTACK) in text
    block = next(b for b in blocks if "In ServiceNow" in json.dumps(b))
    assert block["text"]["verbatim"] is True, "Slack must not auto-link the ticket's text"


def test_slack_cuts_a_long_summary_and_drops_control_characters() -> None:
    request = with_details(summary="&" * 2000, caller="<" * 500, group=INVISIBLE)
    text = slack_ticket_text(request)
    assert len(text) < bk.TICKET_SUMMARY_MAX + 2 * bk.TICKET_NAME_MAX + 80
    assert "\u202e" not in text and "\u0007" not in text and "\x1b" not in text
    assert bk.limit_problems(bk.approval_card(request, CTX)) == []


def test_slack_says_plainly_when_the_ticket_could_not_be_checked() -> None:
    unchecked = unchecked_details("ServiceNow", "INC0010001", "strictest")
    text = slack_ticket_text(make_request(ticket_details=unchecked))
    assert text.startswith(":warning: *Ticket not checked:* Ticket INC0010001 could not be")
    assert "ServiceNow did not answer" in text and "fallback tier strictest" in text


def test_slack_approval_card_without_details_is_unchanged() -> None:
    blocks = bk.approval_card(make_request(), CTX)
    assert "In ServiceNow" not in json.dumps(blocks)


# ---- Teams (and the playground, which shows the Teams cards) ----------------------------------


def test_teams_shows_summary_caller_and_group_as_facts() -> None:
    shown = card_texts(cards.approval_card(with_details(), NOW))
    assert "Ticket says: Lost phone, needs MFA reset" in shown
    assert "Caller: Alice Adams" in shown
    assert "Assignment group: Service Desk" in shown


def test_teams_markdown_links_in_the_summary_stay_literal() -> None:
    card = cards.approval_card(with_details(summary=CARD_ATTACK, caller="[x](https://e.vil)"), NOW)
    raw = json.dumps(card)
    assert "[Approve here](https://evil.example)" not in raw
    assert "{{DATE(" not in raw
    assert not re.search(r"(?<!\\)\[x\]\(", raw)
    shown = card_texts(card)
    summary = next(t for t in shown if t.startswith("Ticket says: "))
    assert summary == "Ticket says: " + cards.plain(CARD_ATTACK, cards.TICKET_SUMMARY_MAX)
    assert "\\[Approve here\\]" in summary and "\\*\\*urgent\\*\\*" in summary


def test_teams_cuts_and_cleans_the_ticket_text() -> None:
    card = cards.approval_card(with_details(summary="x" * 5000, group=INVISIBLE), NOW)
    shown = card_texts(card)
    summary = next(t for t in shown if t.startswith("Ticket says: "))
    assert len(summary) <= len("Ticket says: ") + cards.TICKET_SUMMARY_MAX
    group = next(t for t in shown if t.startswith("Assignment group: "))
    assert "\u202e" not in group and "\u0007" not in group and "\x1b" not in group
    assert len(json.dumps(card).encode()) < cards.MAX_CARD_BYTES


def test_teams_warns_when_the_ticket_could_not_be_checked() -> None:
    request = make_request(ticket_details=unchecked_details("Jira", "HD-12", "strictest"))
    shown = card_texts(cards.approval_card(request, NOW))
    warning = next(t for t in shown if t.startswith("Ticket not checked: "))
    assert "Jira did not answer" in warning and "fallback tier strictest" in warning
    assert not any(t.startswith("Ticket says") for t in shown)


def test_the_details_survive_every_state_of_the_approval_card() -> None:
    for state in RequestState:
        request = with_details().model_copy(update={"state": state})
        assert "Ticket says: Lost phone, needs MFA reset" in card_texts(
            cards.approval_card(request, NOW)
        )
        assert "In ServiceNow" in json.dumps(bk.approval_card(request, CTX))
