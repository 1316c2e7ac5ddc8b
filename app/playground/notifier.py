"""The playground's side of the Notifier port: what each pane would have been told.

Cards are not kept here: the page asks for them and they are rebuilt from the stored request,
so an expiry, a lapse or a decision made elsewhere shows up on the next look. What is kept is
the text each person was sent (in memory, bounded) and the one-time secret, held in memory
only, for the owner's pane, and handed over once.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import structlog
from pydantic import SecretStr

from app.channels.attest import ManagerQuestion
from app.domain.models import Request

log = structlog.get_logger("twokey.playground")

PANES = ("agent", "owner", "approver", "security")
SECRET_HOLD_S = 15 * 60
"""An unrevealed secret is dropped after this long: the owner opens a new request instead."""


@dataclass(frozen=True)
class PaneMessage:
    """A line one pane received: the chat message a real channel would have sent."""

    seq: int
    pane: str
    request_id: str
    text: str


@dataclass(frozen=True)
class _HeldSecret:
    owner_id: str
    label: str
    secret: SecretStr
    until: float

    def __repr__(self) -> str:  # never show the secret, not even by accident
        return f"_HeldSecret(owner_id={self.owner_id!r}, label={self.label!r})"


@dataclass(frozen=True)
class RevealedSecret:
    label: str
    secret: SecretStr


class PlaygroundNotifier:
    """Keeps each pane's messages and the owner's one-time secret, in this process only."""

    def __init__(
        self, max_messages: int = 500, max_requests: int = 50, hold_s: float = SECRET_HOLD_S
    ) -> None:
        self.hold_s = hold_s
        self.max_requests = max_requests
        self._messages: deque[PaneMessage] = deque(maxlen=max_messages)
        self._requests: deque[str] = deque(maxlen=max_requests)
        self._secrets: dict[str, _HeldSecret] = {}
        self._managers: dict[str, tuple[str, ManagerQuestion]] = {}
        self._seq = 0

    # ---- the Notifier port -----------------------------------------------------------------

    async def post_request(self, request: Request) -> None:
        if request.id in self._requests:
            self._requests.remove(request.id)
        self._requests.appendleft(request.id)
        self._say("approver", request, f"New request {request.id} needs an approver.")
        if request.plan.owner_confirmation:
            self._say("owner", request, f"Did you ask for request {request.id}? See the card.")

    async def update_request(self, request: Request, note: str = "") -> None:
        """Nothing to push: the page rebuilds every card from the stored request."""
        if note:
            self._say("agent", request, note)

    async def notify_owner(self, request: Request, text: str) -> None:
        self._say("owner", request, text)

    async def notify_requester(self, request: Request, text: str) -> None:
        self._say("agent", request, text)

    async def notify_person(self, request: Request, principal_id: str, text: str) -> None:
        """The playground has no pane per person: the owner's manager reads theirs in the
        approver pane, addressed to them."""
        self._say("approver", request, f"[To {principal_id}] {text}")

    async def ask_manager(self, request: Request, manager_id: str) -> bool:
        """The manager's card shows in the approver pane when the pane is them; which question
        it asked is kept here, like a chat keeps it beside the card's reference."""
        self._managers[request.id] = (manager_id, ManagerQuestion.of(request))
        while len(self._managers) > self.max_requests:
            del self._managers[next(iter(self._managers))]
        self._say(
            "approver",
            request,
            f"[To {manager_id}] Did you confirm request {request.id} with the owner by phone or "
            "in person? Pick them in this pane to see the card.",
        )
        return True

    def manager_of(self, request_id: str) -> tuple[str, ManagerQuestion] | None:
        """Who was asked to attest this request, and the question their card asked."""
        return self._managers.get(request_id)

    async def notify_approvers(self, request: Request, text: str) -> None:
        self._say("approver", request, text)

    async def deliver_secret(self, request: Request, secret: SecretStr, label: str) -> bool:
        """Hold the secret for the owner's pane only; it is handed over once, then forgotten."""
        self._drop_stale()
        self._secrets[request.id] = _HeldSecret(
            owner_id=request.owner_id,
            label=label,
            secret=secret,
            until=time.monotonic() + self.hold_s,
        )
        self._say(
            "owner",
            request,
            f"Your {label} for request {request.id} is ready: reveal it here. It is shown once.",
        )
        log.info("playground_secret_held", request=request.id, label=label)
        return True

    async def alert_security(self, request: Request | None, text: str) -> None:
        self._say("security", request, text)

    # ---- what the page asks ----------------------------------------------------------------

    @property
    def requests(self) -> list[str]:
        """Request ids this process has seen opened, newest first."""
        return list(self._requests)

    def messages(self, request_id: str | None = None, after: int = 0) -> list[PaneMessage]:
        return [
            m
            for m in self._messages
            if m.seq > after and (request_id is None or m.request_id in (request_id, ""))
        ]

    def secret_waiting(self, request_id: str, viewer_id: str) -> str | None:
        """The label of a secret waiting for this viewer, only when they are its owner."""
        self._drop_stale()
        held = self._secrets.get(request_id)
        if held is None or held.owner_id != viewer_id:
            return None
        return held.label

    def reveal_secret(self, request_id: str, viewer_id: str) -> RevealedSecret | None:
        """Hand the secret to its owner once; anyone else gets nothing and it stays held."""
        self._drop_stale()
        held = self._secrets.get(request_id)
        if held is None or held.owner_id != viewer_id:
            return None
        del self._secrets[request_id]
        log.info("playground_secret_revealed", request=request_id)
        return RevealedSecret(label=held.label, secret=held.secret)

    def hold_again(self, request_id: str, viewer_id: str, revealed: RevealedSecret) -> None:
        """Put back a secret whose hand-over could not be completed (its audit event failed)."""
        self._secrets.setdefault(
            request_id,
            _HeldSecret(
                owner_id=viewer_id,
                label=revealed.label,
                secret=revealed.secret,
                until=time.monotonic() + self.hold_s,
            ),
        )
        log.info("playground_secret_held_again", request=request_id)

    # ---- helpers ---------------------------------------------------------------------------

    def _say(self, pane: str, request: Request | None, text: str) -> None:
        self._seq += 1
        self._messages.append(PaneMessage(self._seq, pane, request.id if request else "", text))

    def _drop_stale(self) -> None:
        now = time.monotonic()
        for request_id in [r for r, held in self._secrets.items() if held.until <= now]:
            del self._secrets[request_id]
            log.info("playground_secret_dropped_unrevealed", request=request_id)


class PlaygroundMailbox:
    """The playground's simulated recovery mailbox: a step-up code "arrives" in the owner's
    pane, so a newcomer sees the whole flow without a mail server. Loopback-only, never in
    production (the playground refuses to mount beside production wiring)."""

    def __init__(self, notifier: PlaygroundNotifier) -> None:
        self.notifier = notifier

    async def send_code(self, address: str, request: Request, code: str) -> None:
        self.notifier._say(
            "owner",
            request,
            f"[Simulated recovery mailbox {address}] Your twokey code for {request.id} is "
            f"{code}. Type: verify {request.id} {code}",
        )
