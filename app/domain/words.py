"""What a request's state, gates and outcome are called, once, for every face.

Slack (Block Kit), Teams (Adaptive Cards) and the playground lay these words out; none of them
phrases a state, a gate or an outcome itself, so the faces cannot drift apart (the risk statement
is in :mod:`app.domain.risk_words`). Pure: no I/O, time passed in.

Words a person typed or a directory returned (a denial reason, a provider's detail, a name) are
never placed here raw: each face hands in a :class:`Face` whose ``text`` makes untrusted text
safe in its markup (Slack entities, Teams Markdown) and whose ``when`` formats a time its way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from app.domain.forms import REASON_MAX
from app.domain.models import Request, RequestState
from app.domain.stepup import Verifier


def when(ms: int | None) -> str:
    """A time as people read it in a message (UTC, to the minute); "-" for none."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class StateWords:
    headline: str
    """On its own: a card's title or badge ("Approved: about to run")."""
    phrase: str
    """Inside a sentence, after "is": "Request TK-... is approved and about to run"."""


STATE_WORDS: dict[RequestState, StateWords] = {
    RequestState.PENDING: StateWords(
        "Waiting for confirmation and approval", "waiting for confirmation and approval"
    ),
    RequestState.READY: StateWords("Approved: about to run", "approved and about to run"),
    RequestState.EXECUTING: StateWords("Being carried out", "being carried out"),
    RequestState.COMPLETED: StateWords("Completed", "completed"),
    RequestState.FAILED: StateWords("Failed", "failed"),
    RequestState.UNKNOWN: StateWords(
        "Outcome unknown: it may have happened", "finished with an unknown outcome"
    ),
    RequestState.INTERRUPTED: StateWords("Interrupted: not re-run", "interrupted"),
    RequestState.DENIED: StateWords("Denied", "denied"),
    RequestState.REJECTED_BY_OWNER: StateWords(
        "Rejected by the owner: they did not ask for it", "rejected by the account owner"
    ),
    RequestState.EXPIRED: StateWords("Expired: nothing was done", "expired"),
    RequestState.CANCELLED: StateWords("Cancelled", "cancelled"),
}


def headline(state: RequestState) -> str:
    return STATE_WORDS[state].headline


def phrase(state: RequestState) -> str:
    return STATE_WORDS[state].phrase


def shown_state(request: Request, now: int) -> RequestState:
    """The state to show: an open request past its expiry is expired, sweeper or not."""
    if request.state.is_open and now >= request.expires_at:
        return RequestState.EXPIRED
    return request.state


RAN = frozenset(
    {
        RequestState.EXECUTING,
        RequestState.COMPLETED,
        RequestState.FAILED,
        RequestState.UNKNOWN,
        RequestState.INTERRUPTED,
    }
)
"""States in which the provider was (or may have been) asked to make the change."""


# ---- faces ------------------------------------------------------------------------------------


def _as_is(text: str | None, limit: int) -> str:
    value = text or ""
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(frozen=True)
class Face:
    """How one face makes words safe and shows a time: the words here never do it themselves."""

    text: Callable[[str | None, int], str] = _as_is
    """Untrusted text (typed by a person, returned by a directory or provider) made safe."""
    when: Callable[[int | None], str] = when
    names: Callable[[str], str | None] = lambda _pid: None
    """A directory principal's display name, when the face knows it (else the id is shown)."""

    def name(self, principal_id: str | None, fallback: str = "-") -> str:
        if not principal_id:
            return fallback
        return self.text(self.names(principal_id) or principal_id, 120)


PLAIN = Face()
"""Words for plain text (the playground, logs): nothing to escape, UTC times."""


class Tone(StrEnum):
    """How a line should look; each face maps it to its own colour or icon."""

    PLAIN = "plain"
    GOOD = "good"
    WAITING = "waiting"
    ATTENTION = "attention"
    WARNING = "warning"
    SUBTLE = "subtle"


@dataclass(frozen=True)
class Line:
    words: str
    tone: Tone = Tone.PLAIN


# ---- gates -----------------------------------------------------------------------------------


def owner_gate(request: Request, now: int, face: Face) -> Line:
    """The owner's confirmation, after "Owner confirmation:" (Slack) or as the "Owner" fact."""
    if not request.plan.owner_confirmation:
        return Line("not required by policy")
    if request.owner_confirmed_at is None:
        return Line(f"waiting for {face.name(request.owner_id)}", Tone.WAITING)
    valid = request.owner_gate_satisfied(now) or request.state.is_final
    confirmed = f"{face.name(request.owner_id)} at {face.when(request.owner_confirmed_at)}"
    if valid:
        return Line(confirmed, Tone.GOOD)
    return Line(f"{confirmed} (lapsed: must be given again)", Tone.WAITING)


def approvals_gate(request: Request, now: int, face: Face) -> Line:
    """The approvals so far, after "Approvals:": "1 of 2 (Carol Chen)"; lapsed ones marked."""
    needed = request.plan.approvals_needed
    if needed == 0:
        return Line("none required by policy")
    final = request.state.is_final
    who = ", ".join(
        face.name(a.approver_id) + ("" if final or a.valid_at(now) else " (lapsed)")
        for a in request.approvals
    )
    waiting = [a for a in request.approvals_unverified if not final and a.valid_at(now)]
    if waiting:  # "approved by X — waiting for X's verification"
        who = ", ".join(
            [who] * bool(who)
            + [f"{face.name(a.approver_id)}: waiting for their verification" for a in waiting]
        )
    counted = len(request.approvals) if final else len(request.valid_approvals(now))
    words = f"{counted} of {needed}" + (f" ({who})" if who else "")
    return Line(words, Tone.GOOD if counted >= needed else Tone.WAITING)


def waiting_words(request: Request, now: int) -> str:
    """What an open request still waits for: "owner confirmation, 1 approval"."""
    return ", ".join(request.waiting_for(now))


# ---- outcome ---------------------------------------------------------------------------------


def outcome(
    request: Request, now: int, face: Face, state: RequestState | None = None
) -> list[Line]:
    """What happened in the end (or what is still missing), as lines a face lays out.

    ``state``: the state to tell of; by default the one to show (:func:`shown_state`).
    """
    state = state if state is not None else shown_state(request, now)
    lines: list[Line] = []
    if state is RequestState.PENDING:
        missing = waiting_words(request, now) or "the bot"
        lines.append(Line(f"Waiting for {face.text(missing, 200)}."))
        lines += step_up_lines(request, now, face)
        if request.gate_note:
            lines.append(Line(face.text(request.gate_note, 400), Tone.WARNING))
    elif state is RequestState.READY or state is RequestState.EXECUTING:
        lines.append(Line("The bot is carrying it out now."))
    elif state is RequestState.DENIED:
        reason = face.text(request.decision_reason, REASON_MAX + 100)
        by = face.name(request.decided_by, "an approver")
        lines.append(
            Line(f"Denied by {by}: {reason} ({face.when(request.decided_at)})", Tone.ATTENTION)
        )
    elif state is RequestState.CANCELLED:
        by = face.name(request.decided_by, "the agent")
        lines.append(Line(f"Cancelled by {by} at {face.when(request.decided_at)}."))
    elif state is RequestState.REJECTED_BY_OWNER:
        lines.append(
            Line(
                f'{face.name(request.owner_id)} said "this wasn\'t me" at '
                f"{face.when(request.decided_at)}: the request is stopped, the account is "
                "flagged and security has been told.",
                Tone.ATTENTION,
            )
        )
    elif state is RequestState.EXPIRED:
        lines.append(
            Line(
                f"Expired at {face.when(request.expires_at)} before every gate was passed; "
                "nothing was done.",
                Tone.WARNING,
            )
        )
    else:
        at = face.when(request.finished_at or request.claimed_at)
        tone = Tone.GOOD if state is RequestState.COMPLETED else Tone.ATTENTION
        lines.append(Line(f"{headline(state)} at {at}.", tone))
        if request.outcome_detail:
            lines.append(Line(face.text(request.outcome_detail, 600), Tone.SUBTLE))
    if request.disputed_at is not None:
        lines.append(
            Line(
                "DISPUTED: security incident. Disputed by the owner at "
                f"{face.when(request.disputed_at)}.",
                Tone.ATTENTION,
            )
        )
    return lines


def step_up_lines(request: Request, now: int, face: Face) -> list[Line]:
    """Where the owner's step-up stands, for an open request whose plan asks for one."""
    if not request.plan.owner_step_up:
        return []
    failed = request.step_up_failures
    tries = f" ({failed} of {request.plan.step_up_max_failures} failed)" if failed else ""
    if request.step_up_locked:
        return [
            Line(
                "Owner verification failed too often: the account is flagged. Verify the owner "
                "in person and use break-glass if the change is urgent.",
                Tone.ATTENTION,
            )
        ]
    if request.step_up_gate_satisfied(now):
        return [Line(f"Owner verified on a second channel at {face.when(request.step_up_at)}.")]
    how = _verifier_words(request.step_up_verifier)
    if how:
        return [Line(f"Owner verification: waiting for {how}{tries}.", Tone.WAITING)]
    return [Line(f"Owner verification needed; it has not started{tries}.", Tone.WARNING)]


def _verifier_words(verifier: str) -> str:
    try:
        return Verifier(verifier).words
    except ValueError:
        return ""


def status_sentence(request: Request, now: int) -> str:
    """One plain sentence for `status` in a text-only face (the playground)."""
    state = shown_state(request, now)
    text = f"Request {request.id} ({request.action.value} for {request.target_name}): "
    text += headline(state)
    missing = request.waiting_for(now) if state.is_open else []
    return text + (f"; waiting for {', '.join(missing)}." if missing else ".")
