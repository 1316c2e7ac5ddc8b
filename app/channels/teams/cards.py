"""Pure Adaptive Card builders: a stored request in, the card JSON Teams shows out.

Every card is built from the stored request alone (invariant 7): a button carries only
``{"button": "<action>:<request id>"}`` (``encode_button``), never what the card showed. Buttons
are ``Action.Execute`` (Universal Actions, schema 1.5), so Teams sends an ``adaptiveCard/action``
invoke and the bot answers with the refreshed card.

Text a person typed (ticket, note, justification, names, a denial reason) is cleaned, bounded
and has its Markdown neutralised before it goes into a ``TextBlock`` or a fact: Teams renders a
CommonMark subset there, so ``[Click to approve](https://evil.example)`` must stay literal text.
Cards stay well inside Teams' documented limits: 28 KB per message, at most
:data:`MAX_ACTIONS` buttons (the Adaptive Cards renderer's default host config shows five).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from app.channels.attest import NO, YES, ManagerQuestion, manager_card_words
from app.channels.common import ButtonAction, encode_button
from app.domain import words
from app.domain.forms import REASON_MAX, clean_text
from app.domain.models import PrincipalKind, Request, RequestState
from app.domain.risk_words import risk_lines
from app.domain.words import RAN, Face, Line, Tone, when
from app.domain.words import shown_state as shown_state

Card = dict[str, Any]

CARD_VERSION = "1.5"
"""Universal Actions (Action.Execute) need schema 1.5 in Teams."""
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
MAX_CARD_BYTES = 28 * 1024
"""Teams refuses a bot message larger than 28 KB."""
MAX_ACTIONS = 5

NAME_MAX = 120
TICKET_MAX = 64
NOTE_MAX = 500
JUSTIFICATION_MAX = 1000
DETAIL_MAX = 500

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>~&|#])")
_LIST_START = re.compile(r"^(\s*)([-+]|\d+)([.)]?)")

_TONE_STYLE: dict[Tone, dict[str, Any]] = {
    Tone.PLAIN: {},
    Tone.GOOD: {"color": "Good", "weight": "Bolder"},
    Tone.WAITING: {},
    Tone.ATTENTION: {"color": "Attention", "weight": "Bolder"},
    Tone.WARNING: {"color": "Warning"},
    Tone.SUBTLE: {"isSubtle": True},
}
"""How each tone of the neutral words (app/domain/words.py) looks on a card."""


# ---- text ------------------------------------------------------------------------------------


def plain(text: str | None, limit: int = NAME_MAX) -> str:
    """User-typed text made safe for a TextBlock: cleaned, bounded, Markdown shown literally.

    Links, emphasis, code, list markers and the ``{{DATE(...)}}`` function all stay as typed.
    """
    value = clean_text(text or "")
    if len(value) > limit:
        value = value[: limit - 1].rstrip() + "…"
    value = _MARKDOWN_SPECIAL.sub(r"\\\1", value)
    value = _LIST_START.sub(_not_a_list, value, count=1)
    while "{{" in value:
        value = value.replace("{{", "{ {")
    return value


def _plain(text: str | None, limit: int) -> str:
    return plain(text, limit)


Names = Mapping[str, str]
"""Directory display names by principal id (``TwoKey.names``): display only, never decided on."""

FACE = Face(text=_plain)
"""The neutral words made safe for a TextBlock, with no names known (ids shown instead)."""


def face(names: Names | None = None) -> Face:
    """The neutral words for a card naming people by their directory display names, escaped
    like any other text a person typed (a directory name is typed by someone too)."""
    return Face(text=_plain, names=names.get) if names else FACE


def _lines(lines: list[Line]) -> list[Card]:
    return [_text(line.words, **_TONE_STYLE[line.tone]) for line in lines]


def _not_a_list(match: re.Match[str]) -> str:
    """``- x`` and ``1. x`` at the start would become a list: escape the marker's punctuation."""
    space, marker, dot = match.groups()
    if marker in "-+":
        return f"{space}\\{marker}{dot}"
    return f"{space}{marker}\\{dot}" if dot else match.group(0)


def _text(text: str, **style: Any) -> Card:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _facts(rows: list[tuple[str, str]]) -> Card:
    return {"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in rows if v]}


def _card(body: list[Card], actions: list[Card] | None = None) -> Card:
    card: Card = {"type": "AdaptiveCard", "$schema": SCHEMA, "version": CARD_VERSION, "body": body}
    if actions:
        card["actions"] = actions
    return card


def _button(action: ButtonAction, request: Request, title: str, style: str = "") -> Card:
    """An Action.Execute carrying the action and the request id, nothing else."""
    button: Card = {
        "type": "Action.Execute",
        "title": title,
        "verb": action.value,
        "data": {"button": encode_button(action, request.id)},
    }
    if style:
        button["style"] = style
    return button


def _deny_button(request: Request) -> Card:
    """Deny opens a small form: the reason is required and goes to the requester and the audit."""
    return {
        "type": "Action.ShowCard",
        "title": "Deny",
        "card": {
            "type": "AdaptiveCard",
            "body": [
                {
                    "type": "Input.Text",
                    "id": "reason",
                    "label": "Why are you denying it?",
                    "placeholder": "e.g. caller could not be verified",
                    "isRequired": True,
                    "errorMessage": "Say why: the agent and the audit trail will see it.",
                    "maxLength": REASON_MAX,
                }
            ],
            "actions": [_button(ButtonAction.DENY, request, "Deny request", "destructive")],
        },
    }


# ---- shared pieces ---------------------------------------------------------------------------


def _sentence(words: str) -> str:
    """Upper-case the first letter only: "reset MFA" -> "Reset MFA", not "Reset mfa"."""
    return words[:1].upper() + words[1:]


def _who(request: Request, shown: Face = FACE) -> str:
    """The requester: the directory name stored when the request was opened, else the name
    book's, else the id."""
    if request.requester_name:
        return plain(request.requester_name)
    return shown.name(request.requester_id)


def _account(request: Request, shown: Face | None = None) -> str:
    """The target by its directory name; given a face, an NHI also names its human owner of
    record (not on the owner's own card, where "which you own" says it)."""
    name = plain(request.target_name or request.target_id)
    if request.target_kind is PrincipalKind.NHI:
        system = f" on {plain(request.target_system)}" if request.target_system else ""
        owner = f"; owner {shown.name(request.owner_id)}" if shown is not None else ""
        return f"{name} (non-human identity{system}{owner})"
    return name


def _tier(request: Request) -> str:
    return plain(request.plan.tier_label or request.plan.tier)


def _risk_lines(request: Request) -> list[str]:
    """The risk in plain words: why an approver should look twice (see app/domain/risk_words)."""
    return [words for _, words in risk_lines(request)]


def _risk_banner(request: Request) -> list[Card]:
    lines = _risk_lines(request)
    if not lines:
        return []
    return [
        {
            "type": "Container",
            "style": "attention",
            "items": [_text(line, weight="Bolder", color="Attention") for line in lines],
        }
    ]


def _owner_gate(request: Request, now: int, shown: Face) -> str:
    return words.owner_gate(request, now, shown).words


def _approvals(request: Request, now: int, shown: Face) -> str:
    return words.approvals_gate(request, now, shown).words


def _state_words(request: Request, now: int) -> str:
    return words.headline(shown_state(request, now))


def _outcome(request: Request, now: int, shown: Face) -> list[Card]:
    """What happened, once something has: decision, result, dispute (the neutral words)."""
    if shown_state(request, now).is_open:
        return []
    return _lines(words.outcome(request, now, shown))


def _request_facts(request: Request, shown: Face) -> list[tuple[str, str]]:
    return [
        ("Request", request.id),
        ("Ticket", plain(request.ticket, TICKET_MAX)),
        ("Change", request.action.label),
        ("Account", _account(request, shown)),
        ("Asked by", _who(request, shown)),
        ("Reason", plain(request.reason_code)),
        ("Note", plain(request.note, NOTE_MAX)),
    ]


TICKET_SUMMARY_MAX = 300
TICKET_UNCHECKED_MAX = 600


def _ticket_rows(request: Request) -> list[tuple[str, str]]:
    """What the ticket system says the agent was asked: outside text, shown literally."""
    details = request.ticket_details
    if details is None or details.unchecked:
        return []
    return [
        ("Ticket says", plain(details.summary, TICKET_SUMMARY_MAX)),
        ("Caller", plain(details.caller, NAME_MAX)),
        ("Assignment group", plain(details.group, NAME_MAX)),
    ]


def _ticket_unchecked(request: Request) -> list[Card]:
    """The ticket could not be checked when the request opened: said before the facts."""
    details = request.ticket_details
    if details is None or not details.unchecked:
        return []
    text = plain(details.unchecked, TICKET_UNCHECKED_MAX)
    return [_text(f"Ticket not checked: {text}", color="Warning", weight="Bolder")]


def _still_open(request: Request, now: int) -> bool:
    return shown_state(request, now).is_open


def _expires(request: Request, now: int) -> str:
    """When it expires, while it still can: a finished request saying "expires" misleads."""
    return when(request.expires_at) if _still_open(request, now) else ""


# ---- the cards -------------------------------------------------------------------------------


def owner_confirmation_card(request: Request, now: int, names: Names | None = None) -> Card:
    """To the owner of record: "Did you ask for this?", with Yes / No while it is open."""
    shown = face(names)
    nhi = request.target_kind is PrincipalKind.NHI
    whose = f"{_account(request)}, which you own" if nhi else "your account"
    body: list[Card] = [
        _text("Did you ask for this?", size="Medium", weight="Bolder"),
        _text(
            f"{_who(request, shown)} from the help desk asked twokey to {request.action.label} "
            f"for {whose}."
        ),
        _facts(
            [
                ("Request", request.id),
                ("Ticket", plain(request.ticket, TICKET_MAX)),
                ("Reason", plain(request.reason_code)),
                ("Note", plain(request.note, NOTE_MAX)),
                ("Expires", _expires(request, now)),
            ]
        ),
    ]
    waiting = _still_open(request, now) and not request.owner_gate_satisfied(now)
    if waiting:
        if request.owner_confirmed_at is not None:
            body.append(
                _text(
                    f"Your confirmation of {when(request.owner_confirmed_at)} lapsed before "
                    "the approvers decided: answer again.",
                    color="Warning",
                )
            )
        body.append(
            _text(
                "If you did not ask for this, someone may be pretending to be you: "
                "press No and security will look into it.",
                weight="Bolder",
            )
        )
        actions = [
            _button(ButtonAction.CONFIRM, request, "Yes, it was me", "positive"),
            _button(ButtonAction.REJECT, request, "No, this wasn't me", "destructive"),
        ]
        return _card(body, actions)
    if request.state.is_open and request.owner_confirmed_at is not None:
        body.append(_text(f"You confirmed {when(request.owner_confirmed_at)}.", color="Good"))
    if _still_open(request, now):
        body.extend(_lines(words.step_up_lines(request, now, shown)))
    body.extend(_outcome(request, now, shown))
    return _card(body)


def approval_card(request: Request, now: int, names: Names | None = None) -> Card:
    """To the approvers: what, on whom, the risk in plain words, and Approve / Deny."""
    shown = face(names)
    deciding = _still_open(request, now) and not request.approvals_gate_satisfied(now)
    title = (
        f"Approval needed: {request.action.label} for {plain(request.target_name)}"
        if deciding
        else f"{_sentence(request.action.label)} for {plain(request.target_name)}: "
        f"{_state_words(request, now).lower()}"
    )
    body: list[Card] = [_text(title, size="Medium", weight="Bolder"), *_risk_banner(request)]
    body += _ticket_unchecked(request)
    rows = _request_facts(request, shown)
    rows += _ticket_rows(request)
    rows += [
        ("Tier", _tier(request)),
        ("Owner", _owner_gate(request, now, shown)),
        ("Approvals", _approvals(request, now, shown)),
        ("Expires", _expires(request, now)),
    ]
    body.append(_facts(rows))
    if _still_open(request, now):
        body.extend(_lines(words.step_up_lines(request, now, shown)))
    if request.gate_note and _still_open(request, now):
        body.append(_text(plain(request.gate_note, DETAIL_MAX), color="Warning", wrap=True))
    if request.plan.breakglass and request.justification:
        body.append(
            _text(f"Justification: {plain(request.justification, JUSTIFICATION_MAX)}", wrap=True)
        )
    if request.plan.reasons:
        why = "; ".join(plain(r, 200) for r in request.plan.reasons[:6])
        body.append(_text(f"Why this tier: {why}", isSubtle=True, size="Small"))
    if not deciding:
        body.extend(_outcome(request, now, shown))
        return _card(body)
    body.append(
        _text(
            "You cannot approve a request you opened or one about your own account.",
            isSubtle=True,
            size="Small",
        )
    )
    actions = [_button(ButtonAction.APPROVE, request, "Approve", "positive"), _deny_button(request)]
    return _card(body, actions)


def requester_status_card(request: Request, now: int, names: Names | None = None) -> Card:
    """To the agent who asked: where the request stands, and Cancel while it is open."""
    shown = face(names)
    body: list[Card] = [
        _text(
            f"Request {request.id}: {_state_words(request, now)}",
            size="Medium",
            weight="Bolder",
        ),
        _facts(
            [
                *_request_facts(request, shown)[1:],
                ("Tier", _tier(request)),
                ("Owner", _owner_gate(request, now, shown)),
                ("Approvals", _approvals(request, now, shown)),
                ("Expires", _expires(request, now)),
            ]
        ),
    ]
    if _still_open(request, now):
        missing = request.waiting_for(now)
        if missing:
            body.append(_text(f"Waiting for {', '.join(missing)}."))
        body.extend(_lines(words.step_up_lines(request, now, shown)))
        if request.gate_note:
            body.append(_text(plain(request.gate_note, DETAIL_MAX), color="Warning", wrap=True))
        body.append(
            _text(
                "A new secret or temporary password goes to the owner only, never to you.",
                isSubtle=True,
                size="Small",
            )
        )
        return _card(body, [_button(ButtonAction.CANCEL, request, "Cancel request")])
    body.extend(_outcome(request, now, shown))
    return _card(body)


def owner_done_card(request: Request, now: int, names: Names | None = None) -> Card:
    """To the owner once it ran: what was done, and "This wasn't me" while the window is open."""
    shown = face(names)
    human = request.target_kind is PrincipalKind.HUMAN
    account = "your account" if human else _account(request)
    body: list[Card] = [
        _text(
            f"Done: {request.action.label} for {account}."
            if request.state is RequestState.COMPLETED
            else f"{_sentence(request.action.label)} for {account}: "
            f"{_state_words(request, now).lower()}",
            size="Medium",
            weight="Bolder",
        ),
        _facts(
            [
                ("Request", request.id),
                ("Ticket", plain(request.ticket, TICKET_MAX)),
                ("Asked by", _who(request, shown)),
                ("Finished", when(request.finished_at)),
            ]
        ),
        *_outcome(request, now, shown),
    ]
    if request.dispute_open(now):
        body.append(
            _text(
                f'If you did not ask for this, press "This wasn\'t me" before '
                f"{when(request.dispute_until)}: security will be alerted at once.",
                weight="Bolder",
            )
        )
        dispute = _button(ButtonAction.DISPUTE, request, "This wasn't me", "destructive")
        return _card(body, [dispute])
    return _card(body)


def manager_card(
    request: Request, now: int, names: Names | None = None, question: ManagerQuestion | None = None
) -> Card:
    """To the owner's manager of record: did you confirm it with them by phone or in person?
    Yes / No while the question this card asked is open; the answer once given."""
    said = manager_card_words(request, question, now, face(names))
    body: list[Card] = [
        _text(said.title, size="Medium", weight="Bolder"),
        _text(said.question, weight="Bolder"),
        _text(said.context),
        *_lines([said.answer]),
    ]
    if not said.buttons:
        body.extend(_outcome(request, now, face(names)))
        return _card(body)
    actions = [
        _button(ButtonAction.ATTEST_YES, request, YES, "positive"),
        _button(ButtonAction.ATTEST_NO, request, NO, "destructive"),
    ]
    return _card(body, actions)


def owner_card(request: Request, now: int, names: Names | None = None) -> Card:
    """The owner's current card: the question while it stands, the "done" card once it ran."""
    if request.state in RAN:
        return owner_done_card(request, now, names)
    return owner_confirmation_card(request, now, names)
