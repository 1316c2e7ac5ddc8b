"""The execution journal: what this replica ran, kept apart from Redis (invariant 3).

Redis can lose writes it acknowledged (restart from a snapshot, failover to a lagging replica).
If the claim of a request vanishes that way, Redis shows the request `ready` again and another
claim would run the change twice. So each replica also notes, before any connector runs, that
it is about to run a request, what the provider answered, and when the result was recorded. A
request this replica ran is never claimed by it again, and a result that could not be recorded
is recorded later, when Redis answers again.

This module holds the record and an in-memory journal (pure state, no I/O); the file-backed one
that survives a restart is in app/store/journal.py.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from app.domain.models import Request


class JournalEntry(BaseModel):
    """One execution as this replica saw it; never holds a secret."""

    model_config = ConfigDict(frozen=True)

    request: Request
    """The request as claimed (frozen facts), enough to write it back if Redis lost it."""
    token: str
    outcome: str | None = None
    """What the provider answered (completed|failed|unknown), once it answered."""
    detail: str = ""
    settled: bool = False
    """The result is recorded in Redis (or the request was ended there otherwise)."""
    secret_pending: bool = False
    """A one-time secret came back and is not yet known to be in its owner's hands (the flag
    only: the secret itself is never written). Left set by a process that stopped in between,
    it tells the next one to say the secret was lost, instead of saying nothing."""


class MemoryJournal:
    """The journal of one process: enough for a single process, lost when it stops."""

    def __init__(self) -> None:
        self._entries: dict[str, JournalEntry] = {}

    def ran_before(self, request_id: str) -> JournalEntry | None:
        """The entry of a request this replica already claimed, if any."""
        return self._entries.get(request_id)

    def unsettled(self) -> list[JournalEntry]:
        """Executions whose result is not (known to be) recorded in Redis yet."""
        return [e for e in self._entries.values() if not e.settled]

    async def begin(self, request: Request, token: str) -> None:
        self._remember(JournalEntry(request=request, token=token))

    async def acted(
        self, request_id: str, token: str, outcome: str, detail: str, *, secret: bool = False
    ) -> None:
        entry = self._entries.get(request_id)
        if entry is not None and entry.token == token:
            update = {"outcome": outcome, "detail": detail, "secret_pending": secret}
            self._remember(entry.model_copy(update=update))

    async def handed_over(self, request_id: str, token: str) -> None:
        """The secret reached its owner's delivery (or its loss was told): nothing pending."""
        entry = self._entries.get(request_id)
        if entry is not None and entry.token == token:
            self._remember(entry.model_copy(update={"secret_pending": False}))

    async def settled(self, request_id: str, token: str) -> None:
        entry = self._entries.get(request_id)
        if entry is not None and entry.token == token:
            self._remember(entry.model_copy(update={"settled": True}))

    def _remember(self, entry: JournalEntry) -> None:
        self._entries[entry.request.id] = entry
