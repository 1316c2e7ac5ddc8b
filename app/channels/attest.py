"""The owner's manager's card, in neutral words every face lays out the same way.

The manager of record is asked "did you confirm with <owner> by phone or in person that they
asked for <action>?" and answers with one of two buttons (``ButtonAction.ATTEST_YES`` /
``ATTEST_NO``, run by :func:`app.channels.actions.press`). A request does not say whether its
manager question is still open, so each card keeps which question it asked
(:class:`ManagerQuestion`, in its ledger reference): a card asked again later, answered, or
overtaken by another verifier then shows so, with no button left to press.
Pure: no I/O, time passed in; untrusted text goes through the face's ``text``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from app.domain import words
from app.domain.models import PrincipalKind, Request
from app.domain.stepup import Verifier
from app.domain.words import Face, Line, Tone

MANAGER_ROLE = "manager"
"""The MessageRef role of a manager's card."""
YES = "Yes, I confirmed it with them"
NO = "No, I could not"


@dataclass(frozen=True)
class ManagerQuestion:
    """Which manager question a card asked: the step-up start it belongs to (the store's time
    of that change) and the failures counted before it, so an answer can be told apart from
    the same question asked again."""

    asked_at: int
    failures: int

    @classmethod
    def of(cls, request: Request) -> ManagerQuestion:
        """The question the request (as its step-up start returned it) stands for."""
        return cls(asked_at=request.step_up_changed_at or 0, failures=request.step_up_failures)

    def as_extra(self) -> dict[str, str]:
        """Kept beside the card's reference on the ledger."""
        return {"asked_at": str(self.asked_at), "failures": str(self.failures)}

    @classmethod
    def from_extra(cls, extra: Mapping[str, str]) -> ManagerQuestion | None:
        """From a ledger reference; None when it holds none (or a damaged one)."""
        try:
            return cls(asked_at=int(extra["asked_at"]), failures=int(extra["failures"]))
        except (KeyError, ValueError):
            return None


class ManagerAnswer(StrEnum):
    WAITING = "waiting"
    CONFIRMED = "confirmed"
    NOT_CONFIRMED = "not_confirmed"
    CLOSED = "closed"


def manager_answer(request: Request, question: ManagerQuestion | None, now: int) -> ManagerAnswer:
    """Where the question on this card stands; only WAITING shows the buttons."""
    by_manager = request.step_up_verifier == Verifier.MANAGER.value
    asked_at = question.asked_at if question is not None else 0
    if by_manager and request.step_up_at is not None and request.step_up_at >= asked_at:
        return ManagerAnswer.CONFIRMED
    if question is not None and by_manager and request.step_up_failures > question.failures:
        return ManagerAnswer.NOT_CONFIRMED
    if not words.shown_state(request, now).is_open or request.step_up_locked or not by_manager:
        return ManagerAnswer.CLOSED
    if question is not None and (request.step_up_changed_at or 0) != question.asked_at:
        return ManagerAnswer.CLOSED  # asked again, in a newer card
    return ManagerAnswer.WAITING


@dataclass(frozen=True)
class ManagerCardWords:
    title: str
    question: str
    context: str
    answer: Line
    buttons: bool


def manager_card_words(
    request: Request, question: ManagerQuestion | None, now: int, face: Face
) -> ManagerCardWords:
    """The card's words, names and labels made safe by ``face``."""
    owner = face.name(request.owner_id)
    action = face.text(request.action.label, 60)
    requester = face.text(request.requester_name, 120) or face.name(request.requester_id)
    nhi = request.target_kind is PrincipalKind.NHI
    on = f" on {face.text(request.target_name, 120)}" if nhi else ""
    account = f"{face.text(request.target_name, 120)}, which {owner} owns" if nhi else owner
    context = (
        f"{requester} from the help desk asked twokey to {action} for {account} (ticket "
        f"{face.text(request.ticket, 64)}, request {request.id}). Call {owner} on a number you "
        "already know, never one given in chat."
    )
    answer = manager_answer(request, question, now)
    return ManagerCardWords(
        title="Did you confirm it with them?",
        question=(
            f"Did you confirm with {owner} by phone or in person that they asked for {action}{on}?"
        ),
        context=context,
        answer=_answer_line(request, answer, now, face),
        buttons=answer is ManagerAnswer.WAITING,
    )


def _answer_line(request: Request, answer: ManagerAnswer, now: int, face: Face) -> Line:
    if answer is ManagerAnswer.CONFIRMED:
        return Line(f"You confirmed it with them ({face.when(request.step_up_at)}).", Tone.GOOD)
    if answer is ManagerAnswer.NOT_CONFIRMED:
        return Line(
            "You could not confirm it: the request stays blocked and security has been told.",
            Tone.ATTENTION,
        )
    if answer is ManagerAnswer.WAITING:
        return Line("Waiting for your answer; it goes into the audit trail.", Tone.WAITING)
    state = words.shown_state(request, now)
    if not state.is_open:
        why = f"the request is {words.phrase(state)}"
    elif request.step_up_locked:
        why = "the owner's verification failed too often"
    elif request.step_up_verifier != Verifier.MANAGER.value:
        why = "the owner is verified another way now"
    else:
        why = "twokey asked again in a newer message"
    return Line(f"This question is closed: {why}.", Tone.SUBTLE)
