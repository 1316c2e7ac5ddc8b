"""What every channel shares: button actions and their codec, and who-is-who kept briefly.

Message references are the MessageLedger port's ``MessageRef`` (app/ports.py); which use case a
button runs is app/channels/actions.py.

A button carries only the request id and the action (invariant 7): everything a card shows and
everything a decision rests on comes from the stored request, never from the click's payload.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Generic, TypeVar

from app.domain.errors import BadInput
from app.domain.forms import parse_request_id
from app.ports import MessageRef as MessageRef  # re-exported: where channels find it


class ButtonAction(StrEnum):
    CONFIRM = "confirm"
    REJECT = "reject"
    APPROVE = "approve"
    DENY = "deny"
    DISPUTE = "dispute"
    CANCEL = "cancel"
    ATTEST_YES = "attest_yes"
    """The owner's manager confirmed it with the owner by phone or in person."""
    ATTEST_NO = "attest_no"
    """The owner's manager could not confirm it (the request stays blocked, security told)."""


ATTEST = frozenset({ButtonAction.ATTEST_YES, ButtonAction.ATTEST_NO})
"""The manager's card: which button was pressed is the answer (as typed `attest <id> yes|no`)."""


def encode_button(action: ButtonAction, request_id: str) -> str:
    """The whole value a button carries: ``approve:TK-4K7M2P9Q``."""
    return f"{action.value}:{request_id}"


def decode_button(value: str) -> tuple[ButtonAction, str]:
    """Parse a button value strictly; anything else is refused and changes nothing."""
    if not isinstance(value, str) or len(value) > 64 or value.count(":") != 1:
        raise BadInput("This button is not one of twokey's.")
    action, request_id = value.split(":")
    try:
        return ButtonAction(action), parse_request_id(request_id)
    except ValueError as exc:
        raise BadInput("This button is not one of twokey's.") from exc


K = TypeVar("K")
V = TypeVar("V")


class KeptAnswers(Generic[K, V]):
    """A platform's answers about people (Slack users.info, the Teams roster), each kept for
    ``seconds``: a burst of clicks by one person asks the platform once. Bounded: past
    ``most`` answers it starts afresh."""

    def __init__(self, seconds: float, most: int = 10_000) -> None:
        self.seconds = seconds
        self.most = most
        self._kept: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        """The answer kept for ``key`` while it is fresh, else None."""
        kept = self._kept.get(key)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        return None

    def keep(self, key: K, answer: V) -> None:
        if len(self._kept) >= self.most:
            self._kept.clear()
        self._kept[key] = (time.monotonic() + self.seconds, answer)


class KeptCards:
    """Where a request's cards are, for requests whose every card this replica posted: cards
    are only ever added, each once, so a complete set stays true and no update needs to read
    the ledger. Bounded: past ``most`` requests it starts afresh."""

    def __init__(self, most: int = 10_000) -> None:
        self.most = most
        self._cards: dict[str, list[MessageRef]] = {}

    def get(self, request_id: str) -> list[MessageRef] | None:
        """A copy of the request's cards, or None when they must be read from the ledger."""
        known = self._cards.get(request_id)
        return list(known) if known is not None else None

    def keep(self, request_id: str, refs: list[MessageRef]) -> None:
        if len(self._cards) >= self.most:
            self._cards.clear()
        self._cards[request_id] = list(refs)

    def forget(self, request_id: str) -> None:
        self._cards.pop(request_id, None)
