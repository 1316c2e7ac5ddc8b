"""The execution journal on local disk: an append-only JSON-lines file per replica, fsynced.

See app/domain/journal.py for why it exists. Each running process holds an exclusive lock on one
file in the folder (``executions-N.jsonl``), so replicas that share a data folder never mix their
entries; a process that starts takes over a file whose owner has stopped, with the executions it
left unsettled, and settles them. The file is compacted when opened: settled entries are kept
for ``KEEP_SETTLED_S`` (a rollback of Redis older than that is not recognised), unsettled ones
until they are settled. No secret is ever written here.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO, Any

import structlog

from app.domain.journal import JournalEntry, MemoryJournal
from app.domain.models import Request

log = structlog.get_logger("twokey.journal")

KEEP_SETTLED_S = 7 * 86400
MAX_FILES = 64


class JournalUnavailable(Exception):
    """The journal cannot be written: nothing may run (the run could not be recognised later)."""


class FileJournal(MemoryJournal):
    """A :class:`MemoryJournal` whose every change is first appended and fsynced to disk."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path, self._lock = _lock_free_journal(folder)
        self._file = self.path.open("a+b")
        self._stamps: dict[str, float] = {}
        self._load()
        self._compact()

    def close(self) -> None:
        """Release the file (and its lock) for the next process."""
        self._file.close()
        self._lock.close()

    async def begin(self, request: Request, token: str) -> None:
        await self._append({"op": "begin", "request": request.model_dump(mode="json"), "t": token})
        await super().begin(request, token)

    async def acted(
        self, request_id: str, token: str, outcome: str, detail: str, *, secret: bool = False
    ) -> None:
        line = {"op": "acted", "rid": request_id, "t": token, "outcome": outcome, "detail": detail}
        await self._append({**line, "secret": secret})
        await super().acted(request_id, token, outcome, detail, secret=secret)

    async def handed_over(self, request_id: str, token: str) -> None:
        await self._append({"op": "handed", "rid": request_id, "t": token})
        await super().handed_over(request_id, token)

    async def settled(self, request_id: str, token: str) -> None:
        await self._append({"op": "settled", "rid": request_id, "t": token})
        await super().settled(request_id, token)

    async def _append(self, line: dict[str, Any]) -> None:
        data = (json.dumps({**line, "at": time.time()}, separators=(",", ":")) + "\n").encode()
        try:
            await asyncio.to_thread(_write_synced, self._file, data)
        except OSError as exc:
            log.error("journal_write_failed", path=str(self.path), error=type(exc).__name__)
            raise JournalUnavailable(str(self.path)) from exc

    def _load(self) -> None:
        self._file.seek(0)
        for raw in self._file.read().splitlines():
            try:
                self._replay(json.loads(raw))
            except (ValueError, KeyError, TypeError):
                # A torn last line (the process died mid-write) or damage: keep the rest.
                log.warning("journal_line_skipped", path=str(self.path))

    def _replay(self, line: dict[str, Any]) -> None:
        op, at = line["op"], float(line.get("at", 0))
        if op == "entry":
            restored = JournalEntry.model_validate(line["entry"])
            self._remember(restored)
            self._stamps[restored.request.id] = at
            return
        if op == "begin":
            request = Request.model_validate(line["request"])
            self._remember(JournalEntry(request=request, token=line["t"]))
            self._stamps[request.id] = at
            return
        entry = self.ran_before(line["rid"])
        if entry is None or entry.token != line["t"]:
            return
        if op == "acted":
            update = {
                "outcome": line["outcome"],
                "detail": line["detail"],
                "secret_pending": bool(line.get("secret", False)),
            }
            self._remember(entry.model_copy(update=update))
        elif op == "handed":
            self._remember(entry.model_copy(update={"secret_pending": False}))
        elif op == "settled":
            self._remember(entry.model_copy(update={"settled": True}))
            self._stamps[entry.request.id] = at

    def _compact(self) -> None:
        """Rewrite the file with what is still needed, atomically (write aside, then rename)."""
        horizon = time.time() - KEEP_SETTLED_S
        keep = [
            e
            for e in self._entries.values()
            if not e.settled or self._stamps.get(e.request.id, 0) >= horizon
        ]
        self._entries = {e.request.id: e for e in keep}
        aside = self.path.with_suffix(".compact")
        with aside.open("wb") as out:
            for entry in keep:
                line = {
                    "op": "entry",
                    "entry": entry.model_dump(mode="json"),
                    "at": self._stamps.get(entry.request.id, time.time()),
                }
                out.write((json.dumps(line, separators=(",", ":")) + "\n").encode())
            out.flush()
            os.fsync(out.fileno())
        os.chmod(aside, 0o600)
        os.replace(aside, self.path)
        self._file.close()
        self._file = self.path.open("a+b")


def _write_synced(file: IO[bytes], data: bytes) -> None:
    file.write(data)
    file.flush()
    os.fsync(file.fileno())


def _lock_free_journal(folder: Path) -> tuple[Path, IO[bytes]]:
    """The first journal in ``folder`` that no running process holds, with its held lock.

    The lock is a separate file that is never replaced, so compacting the journal (a rename)
    never lets another process in.
    """
    for index in range(MAX_FILES):
        lock = (folder / f"executions-{index}.lock").open("a+b")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        path = folder / f"executions-{index}.jsonl"
        path.touch(mode=0o600, exist_ok=True)
        return path, lock
    raise JournalUnavailable(
        f"all {MAX_FILES} execution journals in {folder} are held by running processes"
    )
