"""Pure Adaptive Card builders for what is not a request card: notices, the request form, the
one-time secret, security alerts, and the invoke response envelopes.

Like ``cards``: JSON in, JSON out, no I/O. Every piece of text that could carry something a person
typed goes through :func:`cards.plain`, so nobody can slip a Markdown link or a mention into a
message twokey sends (Teams mentions need an entity, which twokey never adds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.channels.attest import MANAGER_ROLE, ManagerQuestion
from app.channels.common import ATTEST, ButtonAction
from app.channels.teams import cards
from app.channels.teams.cards import Card, Names, plain
from app.domain.forms import NOTE_MAX
from app.domain.models import Action, Request

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
MESSAGE_TYPE = "application/vnd.microsoft.activity.message"
OPEN_VERB = "open"
TEXT_MAX = 2000

ROLES = ("owner", "approvers", "approver-dm", "requester", MANAGER_ROLE)
"""Roles of the request cards twokey keeps updated."""


def card_for(
    role: str,
    request: Request,
    now: int,
    note: str = "",
    names: Names | None = None,
    question: ManagerQuestion | None = None,
) -> Card:
    """The card of this role, rendered from the stored request; ``note`` on top (a refusal);
    people named by their directory display names where ``names`` knows them; a manager's
    card also needs the ``question`` it asked."""
    if role == MANAGER_ROLE:
        card = cards.manager_card(request, now, names, question)
    elif role == "owner":
        card = cards.owner_card(request, now, names)
    elif role == "requester":
        card = cards.requester_status_card(request, now, names)
    else:
        card = cards.approval_card(request, now, names)
    if note:
        card = {**card, "body": [_note(note), *card["body"]]}
    return card


def role_of_verb(verb: str) -> str:
    """Which card a button lives on, from its verb alone (used to render a refresh)."""
    if verb in (ButtonAction.CONFIRM, ButtonAction.REJECT, ButtonAction.DISPUTE):
        return "owner"
    if verb == ButtonAction.CANCEL:
        return "requester"
    if verb in ATTEST:
        return MANAGER_ROLE
    return "approvers"


def _note(text: str) -> Card:
    return {
        "type": "TextBlock",
        "text": plain(text, TEXT_MAX),
        "wrap": True,
        "weight": "Bolder",
        "color": "Attention",
    }


def notice_card(text: str, title: str = "") -> Card:
    """A message to one person: the service's words, shown literally."""
    body: list[Card] = []
    if title:
        body.append(cards._text(plain(title), size="Medium", weight="Bolder"))
    body.extend(cards._text(plain(line, TEXT_MAX)) for line in text.splitlines() if line.strip())
    return cards._card(body or [cards._text("twokey")])


def alert_card(text: str, request: Request | None) -> Card:
    """A security alert for the security channel."""
    body = [
        cards._text("twokey security alert", size="Medium", weight="Bolder", color="Attention"),
        cards._text(plain(text, TEXT_MAX)),
    ]
    if request is not None:
        body.append(
            cards._facts(
                [
                    ("Request", request.id),
                    ("Ticket", plain(request.ticket, cards.TICKET_MAX)),
                    ("Account", plain(request.target_name)),
                ]
            )
        )
    return cards._card(body)


def secret_card(request: Request, secret: str, label: str) -> Card:
    """The one-time secret, for the owner's 1:1 chat only. Never logged, never stored."""
    return cards._card(
        [
            cards._text(f"Your {plain(label, 60)}", size="Medium", weight="Bolder"),
            cards._text(f"For request {request.id} ({request.action.label})."),
            # a TextRun: Teams renders no Markdown in it (a TextBlock would turn "-_ab_-" into
            # italics, and the owner would copy a secret without its underscores)
            {
                "type": "RichTextBlock",
                "inlines": [{"type": "TextRun", "text": secret, "fontType": "Monospace"}],
            },
            cards._text(
                "Use it now; it works once. twokey keeps no copy, and nobody else was sent it.",
                isSubtle=True,
                size="Small",
            ),
        ]
    )


def open_form_card(
    reason_codes: Sequence[str],
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> Card:
    """The request form (a command with no words): the same fields as the one-line command,
    with the last answers kept and each field's error shown beside it."""
    values = values or {}
    errors = errors or {}

    def error(field: str) -> list[Card]:
        if field not in errors:
            return []
        return [cards._text(plain(errors[field], 300), color="Attention", size="Small")]

    def choice(field: str, label: str, options: Sequence[str]) -> Card:
        return {
            "type": "Input.ChoiceSet",
            "id": field,
            "label": label,
            "isRequired": True,
            "errorMessage": f"Choose the {label.lower()}.",
            "value": values.get(field, "") or None,
            "choices": [{"title": o, "value": o} for o in options],
        }

    def text(field: str, label: str, placeholder: str, most: int, required: bool) -> Card:
        box: Card = {
            "type": "Input.Text",
            "id": field,
            "label": label,
            "placeholder": placeholder,
            "maxLength": most,
            "isRequired": required,
        }
        if values.get(field):
            box["value"] = values[field][:most]
        if required:
            box["errorMessage"] = f"Fill in the {label.lower()}."
        return box

    body: list[Card] = [
        cards._text("Ask for an identity change", size="Medium", weight="Bolder"),
        *error("form"),
        choice("action", "Change", [a.value for a in Action]),
        *error("action"),
        people_picker(values.get("picked", "")),
        text("person", "Or their work email", "e.g. alice@example.com", 200, False),
        text("nhi", "Or a non-human identity", "nhi:<name>", 200, False),
        *error("target"),
        text("ticket", "Ticket", "e.g. INC-1234", cards.TICKET_MAX, True),
        *error("ticket"),
        choice("reason_code", "Reason", list(reason_codes)),
        *error("reason_code"),
        text("note", "Note", "optional", NOTE_MAX, False),
        *error("note"),
    ]
    for card in body:
        if card.get("type") == "Input.ChoiceSet" and not card.get("value"):
            card.pop("value", None)
    submit: Card = {"type": "Action.Execute", "title": "Ask", "verb": OPEN_VERB, "data": {}}
    return cards._card(body, [submit])


PICKER_DATASET = "graph.microsoft.com/users"
"""Teams' people picker over the whole organisation (``Data.Query``, an Input.ChoiceSet
extension Teams documents); its value is the picked person's Entra object id."""


def people_picker(picked: str = "") -> Card:
    """Pick the person by name; kept as picked when the form comes back with an error (the id
    only: twokey shows no name it has not resolved)."""
    picker: Card = {
        "type": "Input.ChoiceSet",
        "id": "picked",
        "label": "Person",
        "placeholder": "Type their name and pick them",
        "isMultiSelect": False,
        "choices": [],
        "choices.data": {"type": "Data.Query", "dataset": PICKER_DATASET},
    }
    if picked:
        picker["choices"] = [{"title": "The person you picked", "value": picked[:64]}]
        picker["value"] = picked[:64]
    return picker


def invoke_card(card: Card) -> dict[str, object]:
    """The body of an ``adaptiveCard/action`` invoke response that replaces the card."""
    return {"statusCode": 200, "type": CARD_TYPE, "value": card}


def invoke_message(text: str) -> dict[str, object]:
    """The body of an invoke response that shows a short message instead of a new card."""
    return {"statusCode": 200, "type": MESSAGE_TYPE, "value": plain(text, 300)}
