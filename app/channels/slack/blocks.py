"""Block Kit builders: pure functions from a stored request to the blocks Slack shows.

Nothing here does I/O. Every string a person typed (note, reason, justification, ticket) and
every name that came from a directory is escaped (``&``, ``<``, ``>``) and cut to length before
it is placed in a text object, so ``<!channel>``, ``<https://evil|bank.com>`` and ``<@U123>``
show as the characters they are and never ping, link or mention anyone. Text objects that carry
such strings are ``verbatim`` so Slack does not auto-link bare URLs or names either. The limits
Slack documents (50 blocks in a message, 3000 characters in a text, 75 in a button) are checked
by :func:`limit_problems`, which the tests and the notifier both use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.channels.attest import MANAGER_ROLE, NO, YES, ManagerQuestion, manager_card_words
from app.channels.common import ButtonAction, encode_button
from app.domain import words
from app.domain.forms import JUSTIFICATION_MAX, NOTE_MAX, REASON_MAX, clean_text
from app.domain.models import Action, PrincipalKind, Request, RequestState, Risk
from app.domain.risk_words import risk_lines
from app.domain.words import Face, Line, Tone

Block = dict[str, Any]

MAX_BLOCKS = 50
MAX_MODAL_BLOCKS = 100
MAX_TEXT = 3000
MAX_FIELD = 2000
MAX_FIELDS = 10
MAX_HEADER = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ID = 255
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_CONFIRM_BUTTON = 30
MAX_CONTEXT_ELEMENTS = 10
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_OPTIONS = 100
MAX_MODAL_TITLE = 24
MAX_FALLBACK = 300
"""The top-level ``text`` of a message is its notification: short, and never a secret."""
LIST_MAX = 10
"""Requests shown per section of ``/twokey list`` (the rest are counted, not shown)."""

ACTION_PREFIX = "twokey."
OPEN_FORM = "twokey.open"
DENY_FORM = "twokey.deny"
NHI_PICKER = "twokey.nhi"

# ---- text ---------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Slack's three control characters as entities; nothing else is encoded."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_ENTITY = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def shown(text: str | None, limit: int) -> str:
    """An untrusted string made safe to show: cleaned, escaped, and at most ``limit`` long.

    Control and format characters (bidi overrides, zero-width joiners) are dropped first, then
    the text is escaped character by character so a cut never splits an entity in two.
    """
    if not text:
        return ""
    if text.isascii() and text.isprintable():
        quick = escape(" ".join(text.split()))
        if len(quick) <= limit:
            return quick
    out: list[str] = []
    used = 0
    for ch in clean_text(text):
        piece = _ENTITY.get(ch, ch)
        if used + len(piece) > limit - 1:
            out.append("…")
            break
        out.append(piece)
        used += len(piece)
    return "".join(out)


def fit(text: str, limit: int) -> str:
    """Cut text we wrote ourselves (already escaped) to a limit, at a safe place."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def when(ms: int | None) -> str:
    """A time every reader sees in their own time zone, with a UTC fallback."""
    if not ms:
        return "-"
    return f"<!date^{ms // 1000}^{{date_short_pretty}} {{time}}|{words.when(ms)}>"


def mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": fit(text, MAX_TEXT), "verbatim": True}


def plain(text: str, limit: int = MAX_TEXT) -> Block:
    return {"type": "plain_text", "text": fit(text, limit), "emoji": True}


def section(text: str) -> Block:
    return {"type": "section", "text": mrkdwn(text)}


def context(*texts: str) -> Block:
    return {"type": "context", "elements": [mrkdwn(t) for t in texts[:MAX_CONTEXT_ELEMENTS]]}


def header(text: str) -> Block:
    return {"type": "header", "text": plain(text, MAX_HEADER)}


def fields(pairs: Sequence[tuple[str, str]]) -> Block:
    """A two-column section of ``*label*\\nvalue`` pairs (values already escaped)."""
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": fit(f"*{label}*\n{value}", MAX_FIELD), "verbatim": True}
            for label, value in pairs[:MAX_FIELDS]
        ],
    }


def button(
    label: str,
    action: ButtonAction,
    request_id: str,
    *,
    style: str | None = None,
    confirm: Block | None = None,
) -> Block:
    """A button that carries only the action and the request id (invariant 7)."""
    element: Block = {
        "type": "button",
        "action_id": f"{ACTION_PREFIX}{action.value}",
        "text": plain(label, MAX_BUTTON_TEXT),
        "value": encode_button(action, request_id),
    }
    if style:
        element["style"] = style
    if confirm:
        element["confirm"] = confirm
    return element


def confirm_dialog(title: str, text: str, yes: str, style: str = "primary") -> Block:
    return {
        "title": plain(title, MAX_CONFIRM_TITLE),
        "text": {"type": "mrkdwn", "text": fit(text, MAX_CONFIRM_TEXT), "verbatim": True},
        "confirm": plain(yes, MAX_CONFIRM_BUTTON),
        "deny": plain("Go back", MAX_CONFIRM_BUTTON),
        "style": style,
    }


def actions(block_id: str, *elements: Block) -> Block:
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}


def message(text: str) -> list[Block]:
    """A short reply built from words we did not write (service messages, errors): escaped."""
    return [section(shown(text, MAX_TEXT))]


# ---- cards ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardContext:
    """What a card needs besides the request: the time, and people's names by principal id."""

    now: int
    names: Mapping[str, str] = field(default_factory=dict)

    def name(self, principal_id: str | None) -> str:
        return self.face.name(principal_id)

    @property
    def face(self) -> Face:
        """The neutral words (app/domain/words.py), escaped and timed the Slack way."""
        return Face(text=shown, when=when, names=self.names.get)


ROLES = ("approvers", "approver-dm", "owner", "requester", MANAGER_ROLE)

_STATE_ICONS = {
    RequestState.PENDING: ":hourglass_flowing_sand:",
    RequestState.READY: ":white_check_mark:",
    RequestState.EXECUTING: ":gear:",
    RequestState.COMPLETED: ":white_check_mark:",
    RequestState.FAILED: ":x:",
    RequestState.UNKNOWN: ":warning:",
    RequestState.INTERRUPTED: ":warning:",
    RequestState.DENIED: ":no_entry:",
    RequestState.REJECTED_BY_OWNER: ":rotating_light:",
    RequestState.EXPIRED: ":hourglass:",
    RequestState.CANCELLED: ":heavy_multiplication_x:",
}
_TONE_ICONS = {
    Tone.GOOD: ":white_check_mark: ",
    Tone.WAITING: ":hourglass_flowing_sand: ",
    Tone.ATTENTION: ":rotating_light: ",
}


def badge(state: RequestState) -> str:
    """``:no_entry: Denied``: the state's icon and its neutral headline."""
    return f"{_STATE_ICONS[state]} {words.headline(state)}"


def _iconed(line: Line) -> str:
    return _TONE_ICONS.get(line.tone, "") + line.words


def title_of(request: Request) -> str:
    """``Reset MFA for Alice Adams`` (plain text: escaped, cut for a header)."""
    label = request.action.label
    return fit(f"{label[0].upper()}{label[1:]} for {shown(request.target_name, 100)}", MAX_HEADER)


_RISK_ICONS = {
    Risk.BREAKGLASS: ":fire:",
    Risk.FLAGGED: ":rotating_light:",
    Risk.PRIVILEGED_ACCOUNT: ":rotating_light:",
    Risk.UNUSUAL_PACE: ":warning:",
    "nhi": ":robot_face:",
}


def tier_banner(request: Request) -> list[Block]:
    """Why this request is risky, before anything else: from why its tier was chosen."""
    lines = [f"{_RISK_ICONS.get(why, ':warning:')} *{words}*" for why, words in risk_lines(request)]
    if request.plan.breakglass:
        lines.append("*Justification:* " + shown(request.justification, JUSTIFICATION_MAX + 100))
    return [section("\n".join(lines))] if lines else []


def _target_words(request: Request, ctx: CardContext) -> str:
    name = shown(request.target_name, 120)
    if request.target_kind is PrincipalKind.NHI:
        system = f", {shown(request.target_system, 40)}" if request.target_system else ""
        return f"{name} (non-human identity{system}; owner {ctx.name(request.owner_id)})"
    return name


def facts(request: Request, ctx: CardContext) -> Block:
    return fields(
        [
            ("Request", f"`{shown(request.id, 20)}`"),
            ("Ticket", shown(request.ticket, 80)),
            ("Action", shown(request.action.label, 60)),
            ("Account", _target_words(request, ctx)),
            ("Requested by", shown(request.requester_name or request.requester_id, 120)),
            ("Reason", shown(request.reason_code, 60)),
            ("Tier", shown(request.plan.tier_label or request.plan.tier, 80)),
            ("Expires", when(request.expires_at)),
        ]
    )


TICKET_SUMMARY_MAX = 300
TICKET_NAME_MAX = 120
TICKET_UNCHECKED_MAX = 600


def ticket_block(request: Request) -> list[Block]:
    """What the ticket system says the agent was asked (outside text: escaped and cut like
    anything typed), or a warning that the ticket could not be checked when it opened."""
    details = request.ticket_details
    if details is None:
        return []
    if details.unchecked:
        warning = shown(details.unchecked, TICKET_UNCHECKED_MAX)
        return [section(f":warning: *Ticket not checked:* {warning}")]
    lines = []
    if details.summary:
        system = shown(details.system, 40) or "the ticket"
        lines.append(f"*In {system}:* " + shown(details.summary, TICKET_SUMMARY_MAX))
    people = []
    if details.caller:
        people.append("caller " + shown(details.caller, TICKET_NAME_MAX))
    if details.group:
        people.append("assignment group " + shown(details.group, TICKET_NAME_MAX))
    if people:
        lines.append(_first_up(", ".join(people)))
    return [section("\n".join(lines))] if lines else []


def _first_up(text: str) -> str:
    return text[:1].upper() + text[1:]


def note_block(request: Request) -> list[Block]:
    if not request.note:
        return []
    return [section("*Note from the requester:* " + shown(request.note, NOTE_MAX + 100))]


def owner_status(request: Request, ctx: CardContext) -> str:
    line = words.owner_gate(request, ctx.now, ctx.face)
    return _iconed(Line(f"Owner confirmation: {line.words}", line.tone))


def approvals_status(request: Request, ctx: CardContext) -> str:
    line = words.approvals_gate(request, ctx.now, ctx.face)
    return _iconed(Line(f"Approvals: {line.words}", line.tone))


def outcome_words(request: Request, ctx: CardContext) -> str:
    """What happened in the end, or what is still missing (the neutral words, with icons)."""
    lines = words.outcome(request, ctx.now, ctx.face, state=request.state)
    return "\n".join(_iconed(line) for line in lines)


def status_blocks(request: Request, ctx: CardContext) -> list[Block]:
    return [
        section(f"*{badge(request.state)}*"),
        context(owner_status(request, ctx), approvals_status(request, ctx)),
        section(outcome_words(request, ctx)),
    ]


def approval_card(request: Request, ctx: CardContext) -> list[Block]:
    """The card approvers see: risk first, facts, gates so far, and Approve / Deny while open."""
    blocks: list[Block] = [header(title_of(request)), *tier_banner(request), facts(request, ctx)]
    blocks += ticket_block(request)
    blocks += note_block(request)
    blocks += status_blocks(request, ctx)
    if request.state is RequestState.PENDING and not request.approvals_gate_satisfied(ctx.now):
        subject = shown(request.target_name, 60)
        blocks.append(
            actions(
                "twokey.decide",
                button(
                    "Approve",
                    ButtonAction.APPROVE,
                    request.id,
                    style="primary",
                    confirm=confirm_dialog(
                        "Approve this change?",
                        f"twokey will {shown(request.action.label, 40)} for {subject} "
                        f"(ticket {shown(request.ticket, 40)}) once every gate is passed.",
                        "Approve",
                    ),
                ),
                button("Deny", ButtonAction.DENY, request.id, style="danger"),
            )
        )
    return _capped(blocks)


def owner_card(request: Request, ctx: CardContext) -> list[Block]:
    """The owner's "did you ask for this?" in plain words, with Yes / No while it matters."""
    account = (
        "your account"
        if request.target_kind is PrincipalKind.HUMAN
        else f"*{shown(request.target_name, 120)}*, a non-human identity you own"
    )
    asked = (
        f"*{shown(request.requester_name or request.requester_id, 120)}* from the help desk asked "
        f"twokey to *{shown(request.action.label, 60)}* for {account} "
        f"(ticket {shown(request.ticket, 80)}, reason {shown(request.reason_code, 60)}). "
        f"The request expires {when(request.expires_at)}."
    )
    blocks: list[Block] = [header("Did you ask for this?"), section(asked)]
    blocks += note_block(request)
    blocks += status_blocks(request, ctx)
    rid = request.id
    no_button = button(
        "No, this wasn't me",
        ButtonAction.REJECT,
        rid,
        style="danger",
        confirm=confirm_dialog(
            "Stop this request?",
            "The request is stopped, your account is flagged and the security team is told.",
            "Yes, stop it",
            style="danger",
        ),
    )
    if request.state.is_open:
        buttons = []
        # A confirmation lapses after the approval TTL; the owner must be able to give it again.
        awaiting_owner = not request.owner_gate_satisfied(ctx.now)
        if request.plan.owner_confirmation and awaiting_owner:
            buttons.append(button("Yes, it was me", ButtonAction.CONFIRM, rid, style="primary"))
        if awaiting_owner or request.owner_confirmed_at is None:
            buttons.append(no_button)
        if buttons:
            blocks.append(actions("twokey.owner", *buttons))
    elif request.dispute_open(ctx.now):
        blocks.append(
            section(
                "If you did not ask for this change, say so before "
                f"{when(request.dispute_until)}: security will be alerted at once."
            )
        )
        blocks.append(
            actions(
                "twokey.dispute",
                button(
                    "This wasn't me",
                    ButtonAction.DISPUTE,
                    rid,
                    style="danger",
                    confirm=confirm_dialog(
                        "Report this change?",
                        "Security is alerted and the account is flagged.",
                        "Report it",
                        style="danger",
                    ),
                ),
            )
        )
    return _capped(blocks)


def requester_card(request: Request, ctx: CardContext) -> list[Block]:
    """The agent's own copy: where the request stands, and Cancel while it is open."""
    blocks: list[Block] = [
        header(f"Your request: {title_of(request)}"),
        facts(request, ctx),
        *note_block(request),
        *status_blocks(request, ctx),
    ]
    if request.state.is_open:
        blocks.append(
            actions(
                "twokey.requester",
                button(
                    "Cancel request",
                    ButtonAction.CANCEL,
                    request.id,
                    confirm=confirm_dialog(
                        "Cancel this request?", "Nothing will be changed.", "Cancel it", "danger"
                    ),
                ),
            )
        )
    return _capped(blocks)


def manager_card(
    request: Request, ctx: CardContext, question: ManagerQuestion | None = None
) -> list[Block]:
    """The owner's manager of record: did you confirm it with them? Two buttons while the
    question this card asked is open; the answer once given (names and labels escaped)."""
    said = manager_card_words(request, question, ctx.now, ctx.face)
    blocks: list[Block] = [
        header(said.title),
        section(f"*{said.question}*"),
        context(said.context),
        section(_iconed(said.answer)),
    ]
    if not said.buttons:  # answered or closed: where the request stands now
        blocks.append(section(f"*{badge(request.state)}*\n{outcome_words(request, ctx)}"))
    if said.buttons:
        blocks.append(
            actions(
                "twokey.manager",
                button(YES, ButtonAction.ATTEST_YES, request.id, style="primary"),
                button(
                    NO,
                    ButtonAction.ATTEST_NO,
                    request.id,
                    style="danger",
                    confirm=confirm_dialog(
                        "You could not confirm it?",
                        "The request stays blocked and the security team is told.",
                        "I could not",
                        style="danger",
                    ),
                ),
            )
        )
    return _capped(blocks)


def card_for(
    role: str, request: Request, ctx: CardContext, question: ManagerQuestion | None = None
) -> list[Block]:
    """The card of this role; a manager's card also needs the question it asked."""
    if role == MANAGER_ROLE:
        return manager_card(request, ctx, question)
    if role == "owner":
        return owner_card(request, ctx)
    if role == "requester":
        return requester_card(request, ctx)
    return approval_card(request, ctx)


def notification_text(role: str, request: Request) -> str:
    """The top-level message text: what a notification shows. Escaped, short, never a secret."""
    subject = shown(request.target_name, 60)
    words = {
        "owner": f"Did you ask twokey to {request.action.label} for your account? ({request.id})",
        MANAGER_ROLE: f"Did you confirm {request.action.label} with the owner? ({request.id})",
        "requester": f"Your request {request.id}: {request.action.label} for {subject}",
    }.get(role, f"Approval needed: {request.action.label} for {subject} ({request.id})")
    if request.state is not RequestState.PENDING:
        words = f"{request.id}: {request.action.label} for {subject}: {request.state.value}"
    return fit(words, MAX_FALLBACK)


def decision_lines(request: Request, ctx: CardContext) -> list[tuple[str, str]]:
    """A short line in the approval card's thread for what the channel should hear of: an
    escalation, the request's end, a dispute. Keyed so each is posted only once. The steps on
    the way (the owner's confirmation, each approval) are on the card itself."""
    lines: list[tuple[str, str]] = []
    if request.escalated:
        lines.append(
            (
                "escalated",
                f":arrow_double_up: Escalated to {shown(request.plan.escalate_to, 40)}.",
            )
        )
    if request.state.is_final:
        lines.append(
            (
                f"final:{request.state.value}",
                f"{badge(request.state)}: " + outcome_words(request, ctx),
            )
        )
    if request.disputed_at is not None:
        lines.append(
            (
                "disputed",
                f":rotating_light: {ctx.name(request.owner_id)} disputed the change "
                f"({when(request.disputed_at)}).",
            )
        )
    return [(key, fit(text, MAX_TEXT)) for key, text in lines]


def secret_blocks(request: Request, secret: str, label: str) -> list[Block]:
    """The one-time secret, for the owner's DM only. Shown as literal text (rich_text)."""
    return [
        header(f"Your {fit(shown(label, 60), 60)}"),
        section(
            f"twokey did *{shown(request.action.label, 60)}* for "
            f"{shown(request.target_name, 120)} (request `{request.id}`). Here is the "
            f"{shown(label, 60)}. Only you received it; twokey did not keep it. Use it now and "
            "then delete this message."
        ),
        {
            "type": "rich_text",
            "elements": [
                {
                    "type": "rich_text_preformatted",
                    "elements": [{"type": "text", "text": secret}],
                }
            ],
        },
        context("Nobody from the help desk will ever ask you for it."),
    ]


def alert_blocks(text: str, request: Request | None) -> list[Block]:
    blocks = [section(":rotating_light: *twokey security alert*\n" + shown(text, 2500))]
    if request is not None:
        blocks.append(
            context(
                f"Request `{request.id}` · ticket {shown(request.ticket, 60)} · "
                f"tier {shown(request.plan.tier_label or request.plan.tier, 60)}"
            )
        )
    return blocks


def summary_line(request: Request, now: int) -> str:
    """One line for lists: id, action, target, state, what it waits for."""
    waiting = ", ".join(request.waiting_for(now)) if request.state is RequestState.PENDING else ""
    tail = f" (waiting for {shown(waiting, 100)})" if waiting else ""
    return (
        f"`{request.id}` {shown(request.action.label, 40)} for {shown(request.target_name, 80)} "
        f"· {shown(request.ticket, 40)} · {request.state.value}{tail}"
    )


def listing_blocks(
    mine: Sequence[Request],
    to_approve: Sequence[Request],
    to_confirm: Sequence[Request],
    now: int,
) -> list[Block]:
    blocks: list[Block] = []
    for title, requests in (
        ("Your open requests", mine),
        ("Waiting for your approval", to_approve),
        ("Waiting for your confirmation", to_confirm),
    ):
        lines = [summary_line(r, now) for r in list(requests)[:LIST_MAX]]
        if len(requests) > LIST_MAX:
            lines.append(f"…and {len(requests) - LIST_MAX} more.")
        blocks.append(section(f"*{title}*\n" + ("\n".join(lines) if lines else "None.")))
    return blocks


def request_status(request: Request, ctx: CardContext) -> list[Block]:
    return _capped(
        [
            header(f"{request.id}: {title_of(request)}"),
            *tier_banner(request),
            facts(request, ctx),
            *note_block(request),
            *status_blocks(request, ctx),
        ]
    )


HELP = (
    "*twokey* puts a two-person rule in front of identity changes: the account's owner confirms "
    "and a different approver approves before the bot acts.\n"
    + escape(
        "• `/twokey` opens the request form\n"
        "• `/twokey <action> <@person|nhi:name> <ticket> <reason-code> [note]`\n"
        "• `/twokey status <request-id>` · `/twokey list` · `/twokey cancel <request-id>`\n"
        "• `/twokey breakglass <action> <@person|nhi:name> <ticket> <justification>`\n"
    )
    + "Actions: "
    + ", ".join(f"`{a.value}`" for a in Action)
)


# ---- modals -------------------------------------------------------------------------------


def _option(text: str, value: str) -> Block:
    return {"text": plain(text, MAX_OPTION_TEXT), "value": value[:MAX_OPTION_VALUE]}


def nhi_options(principals: Iterable[tuple[str, str]]) -> list[Block]:
    """Options for the NHI picker from (principal id, display name) pairs."""
    return [_option(shown(name, 70), pid) for pid, name in list(principals)[:MAX_OPTIONS]]


def open_form(reason_codes: Sequence[str], private_metadata: str = "") -> Block:
    """The request form: the same fields as the command, validated in place on submit."""
    actions_options = [_option(a.label.capitalize(), a.value) for a in Action]
    reasons = [_option(shown(code, 70), code) for code in list(reason_codes)[:MAX_OPTIONS]]
    return {
        "type": "modal",
        "callback_id": OPEN_FORM,
        "title": plain("twokey request", MAX_MODAL_TITLE),
        "submit": plain("Open request", MAX_MODAL_TITLE),
        "close": plain("Cancel", MAX_MODAL_TITLE),
        "private_metadata": private_metadata[:3000],
        "blocks": [
            {
                "type": "input",
                "block_id": "action",
                "label": plain("What should be done?"),
                "element": {
                    "type": "static_select",
                    "action_id": "value",
                    "placeholder": plain("Choose an action"),
                    "options": actions_options,
                },
            },
            {
                "type": "input",
                "block_id": "person",
                "optional": True,
                "label": plain("For which person?"),
                "hint": plain("Pick a person, or a non-human identity below (not both)."),
                "element": {
                    "type": "users_select",
                    "action_id": "value",
                    "placeholder": plain("Choose a person"),
                },
            },
            {
                "type": "input",
                "block_id": "nhi",
                "optional": True,
                "label": plain("Or which non-human identity?"),
                "element": {
                    "type": "external_select",
                    "action_id": NHI_PICKER,
                    "min_query_length": 0,
                    "placeholder": plain("Search service accounts, keys, tokens"),
                },
            },
            {
                "type": "input",
                "block_id": "ticket",
                "label": plain("Ticket"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "value",
                    "max_length": 64,
                    "placeholder": plain("INC-1234"),
                },
            },
            {
                "type": "input",
                "block_id": "reason",
                "label": plain("Reason"),
                "element": {
                    "type": "static_select",
                    "action_id": "value",
                    "placeholder": plain("Why is it needed?"),
                    "options": reasons,
                },
            },
            {
                "type": "input",
                "block_id": "note",
                "optional": True,
                "label": plain("Note for the owner and approvers"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "value",
                    "multiline": True,
                    "max_length": NOTE_MAX,
                },
            },
        ],
    }


def deny_form(request_id: str, private_metadata: str) -> Block:
    """Deny asks for a reason; the form opens at once (inside Slack's 3 s), before any look-up."""
    return {
        "type": "modal",
        "callback_id": DENY_FORM,
        "title": plain("Deny request", MAX_MODAL_TITLE),
        "submit": plain("Deny", MAX_MODAL_TITLE),
        "close": plain("Go back", MAX_MODAL_TITLE),
        "private_metadata": private_metadata[:3000],
        "blocks": [
            section(
                f"Deny request `{shown(request_id, 20)}`: the requester and the channel see why."
            ),
            {
                "type": "input",
                "block_id": "reason",
                "label": plain("Why is it denied?"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "value",
                    "multiline": True,
                    "max_length": REASON_MAX,
                },
            },
        ],
    }


# ---- limits -------------------------------------------------------------------------------


def _capped(blocks: list[Block]) -> list[Block]:
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    return [*blocks[: MAX_BLOCKS - 1], context("…more in `/twokey status`.")]


def limit_problems(blocks: Sequence[Block], *, modal: bool = False) -> list[str]:
    """Every way these blocks break a documented Block Kit limit (empty when they fit)."""
    problems: list[str] = []
    most = MAX_MODAL_BLOCKS if modal else MAX_BLOCKS
    if len(blocks) > most:
        problems.append(f"{len(blocks)} blocks (at most {most})")
    for i, block in enumerate(blocks):
        problems += [f"block {i}: {p}" for p in _block_problems(block)]
    return problems


def _text_len(obj: Any) -> int:
    return len(obj.get("text", "")) if isinstance(obj, dict) else 0


def _block_problems(block: Block) -> list[str]:
    problems: list[str] = []
    kind = block.get("type")
    if len(str(block.get("block_id", ""))) > MAX_ID:
        problems.append("block_id too long")
    if kind == "section":
        if "text" in block and _text_len(block["text"]) > MAX_TEXT:
            problems.append(f"section text over {MAX_TEXT}")
        found = block.get("fields", [])
        if len(found) > MAX_FIELDS:
            problems.append(f"more than {MAX_FIELDS} fields")
        problems += [f"field over {MAX_FIELD}" for f in found if _text_len(f) > MAX_FIELD]
        if "text" not in block and not found:
            problems.append("section without text or fields")
    elif kind == "header":
        if _text_len(block.get("text")) > MAX_HEADER:
            problems.append(f"header over {MAX_HEADER}")
        if block.get("text", {}).get("type") != "plain_text":
            problems.append("header text must be plain_text")
    elif kind == "context":
        elements = block.get("elements", [])
        if not elements or len(elements) > MAX_CONTEXT_ELEMENTS:
            problems.append("context needs 1 to 10 elements")
        problems += [f"context text over {MAX_TEXT}" for e in elements if _text_len(e) > MAX_TEXT]
    elif kind == "actions":
        elements = block.get("elements", [])
        if not elements or len(elements) > 25:
            problems.append("actions needs 1 to 25 elements")
        for element in elements:
            problems += _element_problems(element)
    elif kind == "input":
        problems += _element_problems(block.get("element", {}))
    return problems


def _element_problems(element: Block) -> list[str]:
    problems: list[str] = []
    if len(str(element.get("action_id", ""))) > MAX_ID:
        problems.append("action_id too long")
    if element.get("type") == "button":
        if _text_len(element.get("text")) > MAX_BUTTON_TEXT:
            problems.append(f"button text over {MAX_BUTTON_TEXT}")
        if len(str(element.get("value", ""))) > MAX_BUTTON_VALUE:
            problems.append("button value too long")
        dialog = element.get("confirm")
        if dialog:
            if _text_len(dialog.get("title")) > MAX_CONFIRM_TITLE:
                problems.append("confirm title too long")
            if _text_len(dialog.get("text")) > MAX_CONFIRM_TEXT:
                problems.append("confirm text too long")
    for option in element.get("options", []):
        if _text_len(option.get("text")) > MAX_OPTION_TEXT:
            problems.append("option text too long")
        if len(str(option.get("value", ""))) > MAX_OPTION_VALUE:
            problems.append("option value too long")
    if len(element.get("options", [])) > MAX_OPTIONS:
        problems.append("too many options")
    return problems


def as_json(blocks: Sequence[Block]) -> str:
    """Blocks as Slack's form-encoded methods expect them."""
    return json.dumps(list(blocks), ensure_ascii=False, separators=(",", ":"))
