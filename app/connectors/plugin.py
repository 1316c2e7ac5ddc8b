"""What a connector declares about itself, so the registry needs one line per connector.

Each identity provider or NHI system exports one :data:`PLUGIN`: its ``type`` in the policy
file, its settings model, how to build it from those settings, and what it can do besides
changes (be the directory of people, rotate NHI secrets, clean up after itself, run read-only
checks, be closed). The registry derives everything else from these declarations: the known
types, which entries may be the directory, `connectors check` words, what to close on shutdown.
Nothing is found by naming convention: a capability a plugin does not declare does not exist.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from app.connectors.checks import CheckResult
from app.domain.models import Action
from app.ports import Directory, IdentityProvider

ConnectorT = TypeVar("ConnectorT", bound=IdentityProvider)
ConfigT = TypeVar("ConfigT", bound=BaseModel)


class CleanupReport(Protocol):
    """What a clean-up job did: one line per item, in words safe to print."""

    @property
    def deleted(self) -> Sequence[str]: ...
    @property
    def waiting(self) -> Sequence[str]: ...
    @property
    def problems(self) -> Sequence[str]: ...


def in_words(actions: Iterable[Action]) -> str:
    """The changes a connector makes, for `connectors check`: ``reset-mfa, unlock``."""
    return ", ".join(sorted(str(action) for action in actions))


@dataclass(frozen=True, kw_only=True)
class ConnectorPlugin(Generic[ConnectorT, ConfigT]):
    """One identity provider or NHI system, as the registry and the contract suite see it."""

    type: str
    """The ``type:`` of its entries in the policy file's ``connectors:`` list."""
    config: builtins.type[ConfigT]
    """Its settings model: validates an entry (minus ``directory``), located in the file."""
    build: Callable[[Mapping[str, Any]], ConnectorT]
    """The connector from an entry's settings; reads its secrets from the environment now and
    raises :class:`~app.connectors.base.ConnectorConfigError` with words when it cannot."""
    changes: Callable[[ConfigT], str]
    """What it changes, in words for `connectors check` (``reset-password, unlock``)."""
    check: Callable[[ConnectorT], Awaitable[list[CheckResult]]] | None = None
    """Read-only checks of its credentials and permissions (`twokey connectors check`)."""
    directory: Callable[[ConnectorT], Directory | None] | None = None
    """It knows people and may be the directory: the Directory it serves when chosen. None
    from the callable means twokey's sandbox directory (the sandbox connector, when marked)."""
    directory_unless_marked: bool = True
    """Chosen as the directory when no entry is marked ``directory: true`` (first one wins)."""
    rotation: bool = False
    """It rotates NHI secrets (rotate-secret for non-human identities of its ``system``)."""
    cleanup: Callable[[ConnectorT], Awaitable[CleanupReport]] | None = None
    """An operator job that finishes what rotations left for later (`connectors aws-cleanup`)."""
    close: Callable[[ConnectorT], Awaitable[None]] | None = None
    """Releases what the connector holds (an HTTP client); called on shutdown."""

    @property
    def may_be_directory(self) -> bool:
        return self.directory is not None

    def closer(self, connector: ConnectorT) -> Callable[[], Awaitable[None]] | None:
        """The connector's close, bound to it, when it has one."""
        close = self.close
        if close is None:
            return None

        async def closing() -> None:
            await close(connector)

        return closing


AnyPlugin = ConnectorPlugin[Any, Any]
