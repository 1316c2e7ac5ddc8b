"""Write-back: what happened to a request, left as internal notes on its ticket.

A notifier like the chat channels (it renders the request its gate script just returned), so
every decision and outcome reaches the ticket without a line of the flow knowing about it:
opened, the owner's confirmation, each approval, and the final state with what the identity
provider answered; the ticket's state changes on completion if the policy says so. Each note is
written once (a once-only claim per request and milestone, shared by every replica). Writing
runs in the background, in order per request: a slow or broken ticket system never delays or
undoes a decision; a failure is logged (``ticket_write_failed``, no note text) and counted
(``twokey_ticket_writes_total{result="failed"}``). A note is built from the stored request only,
which never holds a secret or a temporary password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping

import structlog
from pydantic import SecretStr

from app.domain.models import Request, RequestState
from app.domain.tickets import Ticket, WriteBack, milestones, ticket_note
from app.metrics import TICKET_WRITES
from app.ports import MessageLedger, TicketSystem
from app.tickets.common import TicketSystemDown

log = structlog.get_logger(__name__)

NamesOf = Callable[[Iterable[str | None]], Awaitable[Mapping[str, str]]]
SCOPE = "ticket_note"


class TicketNotes:
    """The Notifier port's write-back face: notes on the ticket, nothing to any person."""

    def __init__(
        self,
        system: TicketSystem,
        write_back: WriteBack,
        ledger: MessageLedger,
        names: NamesOf,
        *,
        keep_s: int = 35 * 86400,
    ) -> None:
        self.system = system
        self.write_back = write_back
        self.ledger = ledger
        self.names = names
        self.keep_s = keep_s
        self._last: dict[str, asyncio.Task[None]] = {}
        """The latest write per request: the next one waits for it (notes stay in order)."""

    # ---- the Notifier port: only posting and updating a request writes anything -------------

    async def post_request(self, request: Request) -> None:
        self._write_later(request)

    async def update_request(self, request: Request, note: str = "") -> None:
        self._write_later(request)

    async def notify_owner(self, request: Request, text: str) -> None:
        return None

    async def notify_requester(self, request: Request, text: str) -> None:
        return None

    async def notify_person(self, request: Request, principal_id: str, text: str) -> None:
        return None

    async def ask_manager(self, request: Request, manager_id: str) -> bool:
        return False  # a ticket is not where a manager is asked

    async def notify_approvers(self, request: Request, text: str) -> None:
        return None

    async def deliver_secret(self, request: Request, secret: SecretStr, label: str) -> bool:
        return False  # a secret never goes to a ticket

    async def alert_security(self, request: Request | None, text: str) -> None:
        return None

    # ---- writing -----------------------------------------------------------------------------

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait (bounded) for the writes under way: at shutdown, and in tests."""
        pending = [task for task in self._last.values() if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    async def aclose(self) -> None:
        await self.settle()

    def _write_later(self, request: Request) -> None:
        if not self.write_back.notes and request.state is not RequestState.COMPLETED:
            return
        previous = self._last.get(request.id)
        task = asyncio.create_task(self._write(request, previous))
        self._last[request.id] = task
        task.add_done_callback(lambda done: self._forget(request.id, done))

    def _forget(self, request_id: str, done: asyncio.Task[None]) -> None:
        if self._last.get(request_id) is done:
            del self._last[request_id]

    async def _write(self, request: Request, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            await self._write_new_milestones(request)
        except Exception as exc:  # never reaches the decision; logged and counted per write
            log.error("ticket_write_failed", request=request.id, error=type(exc).__name__)

    async def _write_new_milestones(self, request: Request) -> None:
        ticket: Ticket | None = None
        for milestone in milestones(request):
            if not self._wanted(milestone):
                continue
            key = f"{request.id}:{milestone}"
            if not await self.ledger.claim_once(SCOPE, key, self.keep_s):
                continue  # written before, here or by another replica
            if ticket is None:
                ticket = await self._ticket(request)
            if ticket is None or not await self._one(request, ticket, milestone):
                await self._give_back(key)

    def _wanted(self, milestone: str) -> bool:
        if milestone == RequestState.COMPLETED.value and self.write_back.completion_state:
            return True
        return self.write_back.notes

    async def _ticket(self, request: Request) -> Ticket | None:
        try:
            found = await self.system.find(request.ticket)
        except Exception as exc:
            self._failed("note", request, exc)
            return None
        if found is None:
            self._failed("note", request, LookupError("ticket not found"))
        return found

    async def _one(self, request: Request, ticket: Ticket, milestone: str) -> bool:
        """One milestone's note (and, on completion, the state change); True when written."""
        if self.write_back.notes:
            names = await self._names(request)
            try:
                await self.system.add_note(ticket, ticket_note(request, milestone, names))
            except Exception as exc:
                self._failed("note", request, exc)
                return False
            TICKET_WRITES.labels(kind="note", result="ok").inc()
        state = self.write_back.completion_state
        if state and milestone == RequestState.COMPLETED.value:
            try:
                await self.system.set_state(ticket, state)
            except Exception as exc:  # the note is written: keep it, count the state change
                self._failed("state", request, exc)
            else:
                TICKET_WRITES.labels(kind="state", result="ok").inc()
        return True

    async def _names(self, request: Request) -> Mapping[str, str]:
        people = [request.requester_id, request.owner_id, request.decided_by]
        people += [a.approver_id for a in request.approvals]
        try:
            return await self.names(people)
        except Exception:  # ids alone still say who
            return {}

    async def _give_back(self, key: str) -> None:
        """Not written: the next update of the request tries again."""
        try:
            await self.ledger.release(SCOPE, key)
        except Exception as exc:
            log.warning("ticket_note_claim_kept", error=type(exc).__name__)

    def _failed(self, kind: str, request: Request, exc: Exception) -> None:
        TICKET_WRITES.labels(kind=kind, result="failed").inc()
        log.warning(
            "ticket_write_failed",
            system=self.system.name,
            kind=kind,
            request=request.id,
            ticket=request.ticket,
            error=type(exc).__name__,
            why=str(exc) if isinstance(exc, (LookupError, TicketSystemDown)) else "",
        )
