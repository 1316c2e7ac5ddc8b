"""NHIs from an inventory file, people from the real directory: one Directory for both.

The identity-provider directories (okta, entra, google, ldap) know people, not the service
accounts, API keys and tokens twokey rotates. An NHI inventory file (``TWOKEY_DIRECTORY`` set
while an IdP connector is the directory; format in docs/directory.md) lists those NHIs, each
with the id (or login) of its human owner *in the IdP directory*.

:class:`DirectoryWithInventory` answers people's questions (``find_by_email``, ``get`` of a
person id) from the IdP directory and NHI questions (``find_nhi``, ``get`` of an ``nhi:`` id)
from the inventory. The owner written in the file is not trusted as it stands: each NHI
look-up asks the IdP directory for that person (cheap behind the directory cache) and hands
back the NHI with ``owner_id`` set to the person's id *as the directory knows it*, so it
matches the chat user who resolves to that person. An owner the directory does not know, or
knows as disabled, leaves the NHI without an owner of record (``owner_id=None``), which the
service refuses ("has no owner of record"): nobody is asked to confirm on a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import structlog

from app.connectors.checks import CheckResult, missing, works
from app.connectors.sandbox import NHI_PREFIX, read_directory_text, read_inventory
from app.domain.models import Principal, PrincipalKind
from app.ports import MEMBERS_MAX, Directory

log = structlog.get_logger(__name__)


class DirectoryWithInventory:
    """The :class:`~app.ports.Directory` port: people from ``people``, NHIs from an inventory."""

    name = "nhi-inventory"

    def __init__(
        self,
        people: Directory,
        nhis: Iterable[Principal],
        *,
        source: str = "(in memory)",
        people_name: str = "the directory",
    ) -> None:
        self.people = people
        self.source = source
        self.people_name = people_name
        self._nhis: dict[str, Principal] = {}
        for nhi in nhis:
            if nhi.kind is not PrincipalKind.NHI or not nhi.id.startswith(NHI_PREFIX):
                raise ValueError(f"{nhi.id!r} is not an NHI; an inventory lists NHIs only")
            if nhi.id in self._nhis:
                raise ValueError(f"NHI {nhi.id!r} appears twice")
            self._nhis[nhi.id] = nhi

    @classmethod
    def from_file(
        cls, people: Directory, path: str | Path, *, people_name: str = "the directory"
    ) -> DirectoryWithInventory:
        """Read the inventory ``TWOKEY_DIRECTORY`` names; every mistake is listed with its place."""
        source = str(path)
        nhis = read_inventory(read_directory_text(path), source)
        return cls(people, nhis, source=source, people_name=people_name)

    @property
    def nhis(self) -> tuple[Principal, ...]:
        """The NHIs as written in the inventory (owners not checked)."""
        return tuple(self._nhis.values())

    # ---- the Directory port -------------------------------------------------------------------

    async def find_by_email(self, email: str) -> list[Principal]:
        """People only: an NHI has no mailbox a chat user could sign in with."""
        return _people_only(await self.people.find_by_email(email))

    async def get(self, principal_id: str) -> Principal | None:
        if principal_id.startswith(NHI_PREFIX):
            return await self.find_nhi(principal_id)
        found = await self.people.get(principal_id)
        return found if found is not None and _is_person(found) else None

    async def find_nhi(self, name: str) -> Principal | None:
        """By bare name (``billing-api``) or principal id (``nhi:billing-api``), owner checked."""
        nhi = self._nhis.get(NHI_PREFIX + name.removeprefix(NHI_PREFIX))
        if nhi is None:
            return None
        return nhi.model_copy(update={"owner_id": await self._owner_id(nhi)})

    async def search(self, text: str, limit: int = 20) -> list[Principal]:
        """For pickers: the directory's people first, then matching NHIs, ``limit`` in all.

        NHIs are listed without an owner: an owner is only vouched for by a look-up that asks
        the directory (:meth:`find_nhi`), and nothing is decided from a picker.
        """
        if limit <= 0:
            return []
        people = _people_only(await self.people.search(text, limit))[:limit]
        needle = text.strip().lower()
        nhis = [
            nhi.model_copy(update={"owner_id": None})
            for nhi in self._nhis.values()
            if needle in _search_text(nhi)
        ]
        return (people + nhis)[:limit]

    async def members(self, groups: Sequence[str], limit: int = MEMBERS_MAX) -> list[Principal]:
        """People only: NHIs are in no approvers' group."""
        return _people_only(await self.people.members(groups, limit))[: max(limit, 0)]

    # ---- owners -------------------------------------------------------------------------------

    async def _owner_id(self, nhi: Principal) -> str | None:
        """The owner's id as the directory knows them, or None when the directory cannot vouch.

        A directory error propagates (the service says the directory is unavailable).
        """
        written = nhi.owner_id
        if not written:
            return None
        owner = await self.people.get(written)
        problem = _owner_problem(owner)
        if problem is not None or owner is None:
            log.warning(
                "nhi_owner_unknown",
                nhi=nhi.id,
                owner=written,
                directory=self.people_name,
                problem=problem,
            )
            return None
        return owner.id

    async def unknown_owners(self) -> list[tuple[Principal, str]]:
        """Each NHI whose owner the directory cannot vouch for, with why (one look-up each)."""
        found = []
        for nhi in self._nhis.values():
            owner = await self.people.get(nhi.owner_id) if nhi.owner_id else None
            problem = _owner_problem(owner)
            if problem is not None:
                found.append((nhi, problem))
        return found

    async def check(self) -> list[CheckResult]:
        """Read-only (`connectors check`): every NHI's owner is a person of the directory."""
        try:
            unknown = await self.unknown_owners()
        except Exception as exc:  # the report says what went wrong; the check reads nothing else
            return [
                missing(
                    "NHI owners",
                    f"{self.people_name} could not be asked ({type(exc).__name__})",
                )
            ]
        if not unknown:
            count = len(self._nhis)
            return [
                works("NHI owners", f"all {count} owners in {self.source} are in the directory")
            ]
        return [
            missing(
                f"owner of {nhi.id}",
                f"{nhi.owner_id!r} {problem} in {self.people_name}; requests on this NHI are "
                f"refused until {self.source} names a person the directory knows",
            )
            for nhi, problem in unknown
        ]


def _is_person(principal: Principal) -> bool:
    """A directory answer twokey can take as a person: not an NHI, not in the NHI id space."""
    return principal.kind is PrincipalKind.HUMAN and not principal.id.startswith(NHI_PREFIX)


def _people_only(found: Sequence[Principal]) -> list[Principal]:
    return [principal for principal in found if _is_person(principal)]


def _owner_problem(owner: Principal | None) -> str | None:
    """Why this directory answer cannot be an NHI's owner of record, or None when it can."""
    if owner is None or not _is_person(owner):
        return "is not a person"
    if owner.disabled:
        return "is a disabled account"
    return None


def _search_text(principal: Principal) -> str:
    return "\n".join((principal.id, principal.display_name)).lower()
