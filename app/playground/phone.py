"""The playground's simulated phone: a push step-up a newcomer answers in the owner's or the
approver's pane, with Approve or Deny, as they would in Okta Verify or Duo Mobile.

``SimulatedPush`` is a PushVerifier (app.ports) like the Okta and Duo ones, so the service runs
the very same push flow (started, answered or timed out, recorded by step_up.lua or
verify_approver.lua). It is mounted by the playground only (loopback, no chat credentials, no
real identity provider), never anywhere else. Pending pushes live in this process only.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

import structlog

from app.domain.models import Principal, Request
from app.domain.stepup import Verifier
from app.ports import PushOutcome, PushResult

log = structlog.get_logger("twokey.playground")

PUSH_ID = r"^[A-Za-z0-9_-]{16,64}$"
WAITING_MAX = 100
"""Pushes waiting at once: more are refused as unavailable (nothing passes)."""


@dataclass(frozen=True)
class PendingPush:
    """A push on someone's simulated phone, waiting for Approve or Deny."""

    id: str
    person_id: str
    request_id: str
    verifier: str
    answer: asyncio.Future[PushOutcome]

    @property
    def app(self) -> str:
        return Verifier(self.verifier).app


class SimulatedPhones:
    """Everyone's simulated phone: pushes waiting, by id, answered once by their person."""

    def __init__(self) -> None:
        self._waiting: dict[str, PendingPush] = {}

    async def ask(
        self, person: Principal, request: Request, verifier: str, timeout_s: int
    ) -> PushResult:
        """Show the push on ``person``'s phone and wait for their answer or ``timeout_s``."""
        if len(self._waiting) >= WAITING_MAX:
            return PushResult(outcome=PushOutcome.UNAVAILABLE, detail="too many pushes waiting")
        future: asyncio.Future[PushOutcome] = asyncio.get_running_loop().create_future()
        push = PendingPush(secrets.token_urlsafe(16), person.id, request.id, verifier, future)
        self._waiting[push.id] = push
        log.info("playground_push_shown", request=request.id, person=person.id)
        try:
            outcome = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return PushResult(outcome=PushOutcome.TIMEOUT, detail="not answered in time")
        finally:
            self._waiting.pop(push.id, None)
        return PushResult(outcome=outcome)

    def waiting(self, person_id: str, request_id: str) -> list[PendingPush]:
        """The pushes on this person's phone about this request, oldest first."""
        return [
            p
            for p in self._waiting.values()
            if p.person_id == person_id and p.request_id == request_id and not p.answer.done()
        ]

    def answer(self, push_id: str, person_id: str, approve: bool) -> PendingPush | None:
        """Their person's Approve or Deny; None when it is not on their phone (any more)."""
        push = self._waiting.get(push_id)
        if push is None or push.person_id != person_id or push.answer.done():
            return None
        push.answer.set_result(PushOutcome.APPROVED if approve else PushOutcome.REJECTED)
        log.info("playground_push_answered", request=push.request_id, approved=approve)
        return push

    async def hang_up(self, *_: object) -> None:
        """At shutdown: every push still waiting ends unanswered (nothing passes)."""
        for push in list(self._waiting.values()):
            push.answer.cancel()


class SimulatedPush:
    """The PushVerifier port for one push verifier name (okta_push, duo_push), answered on
    the simulated phone instead of an identity provider."""

    def __init__(self, phones: SimulatedPhones, verifier: Verifier) -> None:
        self.phones = phones
        self.verifier = verifier.value

    async def push_step_up(self, owner: Principal, request: Request, timeout_s: int) -> PushResult:
        return await self.phones.ask(owner, request, self.verifier, timeout_s)
