"""Display names of directory people, for cards: looked up together and kept a short while.

A card shows the owner, the approvers and whoever decided; the service hands every face this
one resolver (``TwoKey.names``), so no channel asks the directory one name at a time per card.
Names are for display only (a decision never rests on one), so a name a minute old is fine and
a directory that cannot answer just leaves the id in its place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog

from app.domain.models import Request
from app.ports import Directory

log = structlog.get_logger("twokey.names")

KEEP_S = 60.0
MOST = 5000


def people_shown(request: Request) -> list[str]:
    """Everyone a card of this request names."""
    ids = [request.owner_id, request.decided_by, request.reviewed_by]
    ids += [a.approver_id for a in (*request.approvals, *request.approvals_unverified)]
    return [i for i in dict.fromkeys(ids) if i]


class NameBook:
    """Principal id -> display name, from the directory, cached for ``keep_s`` seconds."""

    def __init__(self, directory: Directory, keep_s: float = KEEP_S, most: int = MOST) -> None:
        self.directory = directory
        self.keep_s = keep_s
        self.most = most
        self._known: dict[str, tuple[float, str]] = {}

    async def of(self, principal_ids: Iterable[str | None]) -> dict[str, str]:
        """Names of these people; anyone the directory does not know (or cannot say) is left
        out, and the card shows their id instead."""
        now = time.monotonic()
        names: dict[str, str] = {}
        missing: list[str] = []
        for pid in dict.fromkeys(p for p in principal_ids if p):
            known = self._known.get(pid)
            if known is not None and known[0] > now:
                names[pid] = known[1]
            else:
                missing.append(pid)
        if not missing:
            return names
        found = await asyncio.gather(
            *(self.directory.get(pid) for pid in missing), return_exceptions=True
        )
        if len(self._known) > self.most:
            self._known.clear()
        for pid, principal in zip(missing, found, strict=True):
            if isinstance(principal, BaseException):
                log.warning("directory_unavailable", error=type(principal).__name__)
                continue
            if principal is not None:
                names[pid] = principal.name
                self._known[pid] = (now + self.keep_s, principal.name)
        return names

    async def for_request(self, request: Request) -> dict[str, str]:
        return await self.of(people_shown(request))
