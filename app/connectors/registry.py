"""Every connector twokey knows, one plugin a line, and how configured ones are built and wired.

:data:`PLUGINS` is the only list to edit for a new identity provider: the known ``type:``
values, which ones may be the directory of people, `connectors check` words, clean-up jobs
and what to close on shutdown all come from the plugins' own declarations
(:class:`~app.connectors.plugin.ConnectorPlugin`).

This module knows nothing of the policy file: it takes :class:`ConnectorEntry` values (an
entry's type, name and settings) that ``app.connector_setup`` read and located in the file.
It

- checks that every secret the entries name by environment variable is set, before anything is
  built, so start-up stops with the variable's name instead of half a set of connectors;
- builds the connectors and picks the one that acts as the directory of people: the entry
  marked ``directory: true``, else the first entry whose plugin may be the directory and is not
  marked ``directory: false``. None: the sandbox directory, as when nothing is configured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from app.connectors import aws_iam, entra, google, ldap, okta, sandbox, vault, webhook
from app.connectors.base import ConnectorConfigError
from app.connectors.checks import (
    CheckResult,
    ConnectorReport,
    missing,
    note,
    run_checks,
)
from app.connectors.plugin import AnyPlugin
from app.ports import Directory, IdentityProvider
from app.settings import environment

log = structlog.get_logger(__name__)

PLUGINS: tuple[AnyPlugin, ...] = (
    okta.PLUGIN,
    entra.PLUGIN,
    google.PLUGIN,
    ldap.PLUGIN,
    aws_iam.PLUGIN,
    vault.PLUGIN,
    webhook.PLUGIN,
    sandbox.PLUGIN,
)
"""One line per connector: a new identity provider is one module and one line here."""

_BY_TYPE: dict[str, AnyPlugin] = {plugin.type: plugin for plugin in PLUGINS}
CONNECTOR_TYPES = tuple(_BY_TYPE)
ENV_SUFFIX = "_env"
"""Settings ending in this name an environment variable that holds a secret."""


def plugin_of(kind: str) -> AnyPlugin:
    """The plugin of a connector type (one of :data:`CONNECTOR_TYPES`)."""
    return _BY_TYPE[kind]


@dataclass(frozen=True)
class ConnectorEntry:
    """One valid entry of ``connectors:``, as written (minus ``directory``)."""

    index: int
    kind: str
    name: str
    settings: Mapping[str, Any]
    marked_directory: bool | None
    """``directory: true`` / ``false`` as written; None when the entry does not say."""

    @property
    def where(self) -> str:
        return f"connectors.{self.index}"

    @property
    def plugin(self) -> AnyPlugin:
        return plugin_of(self.kind)


# ---- secrets and building ---------------------------------------------------------------------


def missing_secrets(entries: Sequence[ConnectorEntry]) -> list[str]:
    """Each environment variable an entry names that is not set, in words naming both."""
    absent = []
    found = environment()
    for entry in entries:
        for key, value in entry.settings.items():
            if str(key).endswith(ENV_SUFFIX) and isinstance(value, str) and not found.get(value):
                what = str(key).removesuffix(ENV_SUFFIX).replace("_", " ")
                absent.append(
                    f"connector {entry.name!r} ({entry.where}.{key}): environment variable "
                    f"{value} is not set (or empty); set it to the {what}"
                )
    return absent


def build_one(entry: ConnectorEntry) -> IdentityProvider:
    """The connector of one entry; reads its secrets from the environment now."""
    try:
        built: IdentityProvider = entry.plugin.build(dict(entry.settings))
    except ConnectorConfigError as exc:
        raise ConnectorConfigError(f"connector {entry.name!r} ({entry.where}): {exc}") from None
    return built


def directory_entry(entries: Sequence[ConnectorEntry]) -> ConnectorEntry | None:
    """The entry marked ``directory: true``, else the first directory-capable one not opted out."""
    for entry in entries:
        if entry.marked_directory is True:
            return entry
    for entry in entries:
        plugin = entry.plugin
        if (
            plugin.may_be_directory
            and plugin.directory_unless_marked
            and entry.marked_directory is not False
        ):
            return entry
    return None


def describe_connectors(entries: Sequence[ConnectorEntry]) -> str:
    """One line for `policy check`: each connector, and which one is the directory."""
    if not entries:
        return "none (the sandbox directory and connector: they change nothing; not for production)"
    chosen = directory_entry(entries)
    named = [
        f"{entry.name} ({entry.kind}{', the directory' if entry is chosen else ''})"
        for entry in entries
    ]
    if chosen is None:
        named.append("people from the sandbox directory (not for production)")
    return ", ".join(named)


@dataclass
class ConnectorWiring:
    """The built connectors, which one is the directory, and what to close on shutdown."""

    connectors: list[IdentityProvider] = field(default_factory=list)
    directory: Directory | None = None
    """None: twokey uses the sandbox directory (nothing configured, or a sandbox marked)."""
    directory_name: str | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in self.closers:
            try:
                await close()
            except Exception as exc:  # closing is best effort; nothing to tell anyone
                log.warning("connector_close_failed", error=type(exc).__name__)


async def wire_connectors(entries: Sequence[ConnectorEntry]) -> ConnectorWiring:
    """Build every configured connector; a missing secret stops everything, naming each one."""
    absent = missing_secrets(entries)
    if absent:
        raise ConnectorConfigError("\n".join(absent))
    wiring = ConnectorWiring()
    chosen = directory_entry(entries)
    try:
        for entry in entries:
            connector = build_one(entry)
            close = entry.plugin.closer(connector)
            if close is not None:
                wiring.closers.append(close)
            wiring.connectors.append(connector)
            if entry is chosen and entry.plugin.directory is not None:
                wiring.directory = entry.plugin.directory(connector)
                wiring.directory_name = entry.name if wiring.directory is not None else None
    except BaseException:
        await wiring.aclose()
        raise
    log.info(
        "connectors_configured",
        connectors=[f"{entry.name} ({entry.kind})" for entry in entries],
        directory=wiring.directory_name or "sandbox",
    )
    return wiring


def role_of(entry: ConnectorEntry, chosen: ConnectorEntry | None) -> str:
    """What twokey uses a connector for, in words (for `connectors check`)."""
    parts = []
    if entry is chosen:
        parts.append("the directory of people")
    plugin = entry.plugin
    parts.append("changes: " + plugin.changes(plugin.config.model_validate(dict(entry.settings))))
    return "; ".join(parts)


async def check_configured(entries: Sequence[ConnectorEntry]) -> list[ConnectorReport]:
    """`twokey connectors check`: build each connector on its own and run its read-only checks.

    A connector that cannot be built (a secret not set, a key that does not parse) is reported
    as such; the others are still checked. Each one is closed again right after.
    """
    chosen = directory_entry(entries)
    reports = []
    for entry in entries:
        results = await _check_entry(entry)
        role = role_of(entry, chosen)
        reports.append(ConnectorReport(entry.name, entry.kind, role, tuple(results)))
    return reports


async def _check_entry(entry: ConnectorEntry) -> list[CheckResult]:
    absent = missing_secrets([entry])
    if absent:
        return [missing("read its secrets from the environment", text) for text in absent]
    try:
        connector = build_one(entry)
    except ConnectorConfigError as exc:
        return [missing("start from its settings", str(exc))]
    plugin = entry.plugin
    try:
        if plugin.check is None:
            return [note("checks", "this connector has no read-only checks")]
        return await run_checks(entry.name, plugin.check(connector))
    finally:
        close = plugin.closer(connector)
        if close is not None:
            await close()


async def clean_up(entries: Sequence[ConnectorEntry], name: str | None) -> tuple[int, str]:
    """Run the clean-up job of every connector that has one (AWS IAM: delete the old access
    keys whose grace period has passed); ``name`` picks one."""
    chosen = [
        e for e in entries if e.plugin.cleanup is not None and (name is None or e.name == name)
    ]
    if not chosen:
        which = f"named {name!r} " if name else ""
        return 2, f"no aws_iam connector {which}is configured in the policy file"
    lines: list[str] = []
    trouble = False
    for entry in chosen:
        cleanup = entry.plugin.cleanup
        assert cleanup is not None
        try:
            connector = build_one(entry)
        except ConnectorConfigError as exc:
            lines.append(f"{entry.name}: {exc}")
            trouble = True
            continue
        report = await cleanup(connector)
        lines.append(
            f"{entry.name}: {len(report.deleted)} deleted, {len(report.waiting)} waiting, "
            f"{len(report.problems)} problems"
        )
        lines += [f"  deleted  {item}" for item in report.deleted]
        lines += [f"  waiting  {item}" for item in report.waiting]
        lines += [f"  PROBLEM  {item}" for item in report.problems]
        trouble = trouble or bool(report.problems)
    return (1 if trouble else 0), "\n".join(lines)
