"""The connectors the policy file configures: validated in place, built, and wired into twokey.

The policy file's ``connectors:`` list names each connector by ``type`` (okta, entra, google,
ldap, aws_iam, vault, webhook, sandbox) with that connector's own settings. This module

- validates every entry with its connector's settings model and reports each mistake at its
  line and column, like the rest of the policy (``policy.yaml:41:7 connectors.0.org_url: ...``);
- checks that every secret the entries name by environment variable is set, before anything is
  built, so start-up stops with the variable's name instead of half a set of connectors;
- builds the connectors and picks the one that acts as the directory of people: the entry
  marked ``directory: true``, else the first okta, entra, google or ldap entry not marked
  ``directory: false``. None: the sandbox directory, as when nothing is configured.

Connector modules are imported only when an entry uses them, so a deployment with Okta alone
never loads boto3, hvac or ldap3.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.connectors.base import ConnectorConfigError
from app.connectors.checks import (
    CheckableConnector,
    CheckResult,
    ConnectorReport,
    missing,
    note,
    render_reports,
    run_checks,
)
from app.domain.models import Action
from app.policy.loader import (
    EXAMPLE_POLICY,
    LocatedYaml,
    PolicyFileError,
    PolicyProblem,
    in_file_order,
    problems_from_validation,
    read_located_yaml,
    read_policy_file,
)
from app.ports import Directory, IdentityProvider

log = structlog.get_logger(__name__)

_MODULES: dict[str, tuple[str, str]] = {
    "okta": ("app.connectors.okta", "OktaConfig"),
    "entra": ("app.connectors.entra", "EntraConfig"),
    "google": ("app.connectors.google", "GoogleConfig"),
    "ldap": ("app.connectors.ldap", "LdapConfig"),
    "aws_iam": ("app.connectors.aws_iam", "AwsIamConfig"),
    "vault": ("app.connectors.vault", "VaultConfig"),
    "webhook": ("app.connectors.webhook", "WebhookConfig"),
}
CONNECTOR_TYPES = (*_MODULES, "sandbox")
DIRECTORY_TYPES = frozenset({"okta", "entra", "google", "ldap"})
"""Connectors that can say who a person is (email, groups); the sandbox can when marked."""
_MARKABLE = DIRECTORY_TYPES | {"sandbox"}
_SECRET_WORDS = re.compile(r"token|secret|password|passwd|private_key|credential|access_key")
_ENV_SUFFIX = "_env"


class SandboxConfig(BaseModel):
    """The ``sandbox`` connector: changes nothing anywhere (not for production)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["sandbox"]
    name: str = Field(default="sandbox", pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    record_path: Path | None = None
    """A file that gets one JSON line per change the sandbox was asked to make."""
    fail_actions: list[Action] = Field(default_factory=list)
    unknown_actions: list[Action] = Field(default_factory=list)


def config_model(kind: str) -> type[BaseModel]:
    """The settings model of a connector type (importing its module only now)."""
    if kind == "sandbox":
        return SandboxConfig
    module_name, class_name = _MODULES[kind]
    model = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model


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


# ---- validation, located in the policy file -----------------------------------------------


def policy_document(path: str | Path | None) -> LocatedYaml:
    """The policy file (or the packaged example) with the position of every setting."""
    if path is None:
        text = resources.files("app.policy").joinpath(EXAMPLE_POLICY).read_text(encoding="utf-8")
        return read_located_yaml(text, EXAMPLE_POLICY)
    return read_located_yaml(read_policy_file(path), str(path))


def connector_problems(document: LocatedYaml) -> list[PolicyProblem]:
    """Every mistake in the document's ``connectors:`` list, located, in file order."""
    data = document.data
    entries = data.get("connectors") if isinstance(data, Mapping) else None
    if entries is None:
        return []
    if not isinstance(entries, list):
        return []  # the policy's own validation says it should be a list
    problems: list[PolicyProblem] = []
    names: dict[str, int] = {}
    marked: list[int] = []
    for index, entry in enumerate(entries):
        problems += _entry_problems(document, index, entry)
        if not isinstance(entry, Mapping) or entry.get("type") not in CONNECTOR_TYPES:
            continue
        name = str(entry.get("name") or entry["type"])
        if name in names:
            loc = ("connectors", index, "name") if "name" in entry else ("connectors", index)
            problems.append(
                document.problem(
                    loc,
                    f"connectors.{names[name]} is already called {name!r}: give each connector "
                    "its own name (name: ...), so logs and `connectors check` tell them apart",
                )
            )
        names.setdefault(name, index)
        if entry.get("directory") is True and entry["type"] in _MARKABLE:
            marked.append(index)
    for index in marked[1:]:
        problems.append(
            document.problem(
                ("connectors", index, "directory"),
                f"connectors.{marked[0]} is already the directory: mark only one connector "
                "with directory: true",
            )
        )
    return in_file_order(problems)


def _entry_problems(document: LocatedYaml, index: int, entry: object) -> list[PolicyProblem]:
    at: tuple[str | int, ...] = ("connectors", index)
    if not isinstance(entry, Mapping):
        return []  # the policy's own validation says it should be a mapping
    kind = entry.get("type")
    if kind is None:
        return [document.problem(at, f"say which connector this is: type: {_known_types()}")]
    if kind not in CONNECTOR_TYPES:
        return [document.problem((*at, "type"), _unknown_type(kind))]
    problems = _directory_problems(document, at, str(kind), entry)
    settings = {key: value for key, value in entry.items() if key != "directory"}
    model = config_model(str(kind))
    inline = _inline_secrets(settings, model)
    problems += [document.problem((*at, key), message) for key, message in inline.items()]
    try:
        model.model_validate({k: v for k, v in settings.items() if k not in inline})
    except ValidationError as exc:
        problems += problems_from_validation(exc, document, at, model)
    return problems


def _known_types() -> str:
    return " | ".join(CONNECTOR_TYPES)


def _unknown_type(kind: object) -> str:
    text = f"unknown connector type {str(kind)[:40]!r}"
    close = difflib.get_close_matches(str(kind), CONNECTOR_TYPES, n=1)
    if close:
        text += f"; did you mean {close[0]!r}?"
    return text + f" (known: {', '.join(CONNECTOR_TYPES)})"


def _directory_problems(
    document: LocatedYaml, at: tuple[str | int, ...], kind: str, entry: Mapping[str, Any]
) -> list[PolicyProblem]:
    if "directory" not in entry:
        return []
    value = entry["directory"]
    if not isinstance(value, bool):
        return [document.problem((*at, "directory"), "should be true or false")]
    if value and kind not in _MARKABLE:
        return [
            document.problem(
                (*at, "directory"),
                f"a {kind} connector cannot act as the directory of people; only "
                f"{', '.join(sorted(_MARKABLE))} can",
            )
        ]
    return []


def _inline_secrets(settings: Mapping[str, Any], model: type[BaseModel]) -> dict[str, str]:
    """Unknown keys that look like a secret written in the file: a message that never echoes it."""
    found = {}
    for key in settings:
        text = str(key)
        if text in model.model_fields or not _SECRET_WORDS.search(text.lower()):
            continue
        named = f"{text}{_ENV_SUFFIX}"
        instead = (
            f"write {named}: NAME_OF_THE_VARIABLE instead"
            if named in model.model_fields
            else "name the environment variable that holds it in the connector's *_env setting"
            if any(f.endswith(_ENV_SUFFIX) for f in model.model_fields)
            else "this connector takes its credentials from its own standard chain "
            "(see docs/connectors.md)"
        )
        found[text] = f"secrets are never written in the policy file; {instead}"
    return found


def read_entries(document: LocatedYaml) -> list[ConnectorEntry]:
    """The document's connector entries, or :class:`PolicyFileError` listing every mistake."""
    problems = connector_problems(document)
    if problems and not document.positions:
        # No file to point into (a policy built in code): name the setting, not a line.
        problems = [p.model_copy(update={"line": None, "column": None}) for p in problems]
    if problems:
        raise PolicyFileError(document.source, problems)
    data = document.data
    entries = data.get("connectors") if isinstance(data, Mapping) else None
    read = []
    for index, entry in enumerate(entries or []):
        settings = {key: value for key, value in entry.items() if key != "directory"}
        read.append(
            ConnectorEntry(
                index=index,
                kind=str(entry["type"]),
                name=str(entry.get("name") or entry["type"]),
                settings=settings,
                marked_directory=entry.get("directory"),
            )
        )
    return read


def entries_of(
    connectors: Sequence[Mapping[str, Any]], source: str | Path | None
) -> list[ConnectorEntry]:
    """The entries of a loaded policy, located in ``source`` (the file they came from).

    The policy was loaded from ``source`` a moment ago; reading it again gives the positions.
    If it changed in between, the entries the policy holds are the ones used.
    """
    if not connectors:
        return []
    document = policy_document(source)
    data = document.data
    if not isinstance(data, Mapping) or data.get("connectors") != list(connectors):
        document = LocatedYaml(str(source or "policy"), {"connectors": list(connectors)}, {})
    return read_entries(document)


# ---- secrets and building ---------------------------------------------------------------------


def missing_secrets(entries: Sequence[ConnectorEntry]) -> list[str]:
    """Each environment variable an entry names that is not set, in words naming both."""
    absent = []
    for entry in entries:
        for key, value in entry.settings.items():
            if (
                str(key).endswith(_ENV_SUFFIX)
                and isinstance(value, str)
                and not os.environ.get(value)
            ):
                what = str(key).removesuffix(_ENV_SUFFIX).replace("_", " ")
                absent.append(
                    f"connector {entry.name!r} ({entry.where}.{key}): environment variable "
                    f"{value} is not set (or empty); set it to the {what}"
                )
    return absent


class _Closable(Protocol):
    async def aclose(self) -> None: ...


def build_one(entry: ConnectorEntry) -> IdentityProvider:
    """The connector of one entry; reads its secrets from the environment now."""
    try:
        if entry.kind == "sandbox":
            from app.connectors.sandbox import SandboxConnector

            config = SandboxConfig.model_validate(dict(entry.settings))
            return SandboxConnector(
                config.record_path,
                fail_actions=config.fail_actions,
                unknown_actions=config.unknown_actions,
            )
        module = importlib.import_module(_MODULES[entry.kind][0])
        built = module.build(dict(entry.settings))
    except ConnectorConfigError as exc:
        raise ConnectorConfigError(f"connector {entry.name!r} ({entry.where}): {exc}") from None
    return cast(IdentityProvider, built)


def closer_of(connector: object) -> Callable[[], Awaitable[None]] | None:
    """The connector's ``aclose`` (it owns an HTTP client), if it has one."""
    close = getattr(connector, "aclose", None)
    return cast(_Closable, connector).aclose if callable(close) else None


def directory_entry(entries: Sequence[ConnectorEntry]) -> ConnectorEntry | None:
    """The entry marked ``directory: true``, else the first directory-capable one not opted out."""
    for entry in entries:
        if entry.marked_directory is True:
            return entry
    for entry in entries:
        if entry.kind in DIRECTORY_TYPES and entry.marked_directory is not False:
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
            close = closer_of(connector)
            if close is not None:
                wiring.closers.append(close)
            wiring.connectors.append(connector)
            if entry is chosen and entry.kind != "sandbox":
                wiring.directory = cast(Directory, connector)
                wiring.directory_name = entry.name
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
    config = config_model(entry.kind).model_validate(dict(entry.settings))
    actions = getattr(config, "actions", None)
    if isinstance(actions, frozenset | set) and actions:
        parts.append("changes: " + ", ".join(sorted(str(action) for action in actions)))
    elif entry.kind in ("aws_iam", "vault"):
        parts.append("changes: rotate-secret")
    elif entry.kind == "ldap":
        parts.append("changes: reset-password, unlock")
    elif entry.kind == "sandbox":
        parts.append("changes: none (records what it is asked)")
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
    try:
        if not callable(getattr(connector, "check", None)):
            return [note("checks", "this connector has no read-only checks")]
        return await run_checks(cast(CheckableConnector, connector))
    finally:
        close = closer_of(connector)
        if close is not None:
            await close()


# ---- `twokey connectors check | aws-cleanup` ---------------------------------------------------


async def connectors_command(
    args: argparse.Namespace, default_policy: Path | None
) -> tuple[int, str]:
    """Exit code and text: 0 all fine, 1 something missing or failed, 2 nothing could be done."""
    source = args.policy or default_policy
    try:
        entries = read_entries(policy_document(source))
    except PolicyFileError as exc:
        return 2, str(exc)
    if args.connectors_command == "aws-cleanup":
        return await aws_cleanup(entries, args.name)
    if not entries:
        return 0, (
            f"{source or EXAMPLE_POLICY}: no connectors are configured, so twokey uses the "
            "sandbox directory and connector: they change nothing anywhere (not for production)."
        )
    reports = await check_configured(entries)
    return (0 if all(report.ready for report in reports) else 1), render_reports(reports)


async def aws_cleanup(entries: Sequence[ConnectorEntry], name: str | None) -> tuple[int, str]:
    """Delete the old AWS access keys whose grace period has passed, for each aws_iam connector."""
    chosen = [e for e in entries if e.kind == "aws_iam" and (name is None or e.name == name)]
    if not chosen:
        which = f"named {name!r} " if name else ""
        return 2, f"no aws_iam connector {which}is configured in the policy file"
    lines: list[str] = []
    trouble = False
    for entry in chosen:
        try:
            connector = build_one(entry)
        except ConnectorConfigError as exc:
            lines.append(f"{entry.name}: {exc}")
            trouble = True
            continue
        cleanup = getattr(connector, "delete_expired_keys", None)
        assert callable(cleanup)
        report = await cleanup()
        lines.append(
            f"{entry.name}: {len(report.deleted)} deleted, {len(report.waiting)} waiting, "
            f"{len(report.problems)} problems"
        )
        lines += [f"  deleted  {item}" for item in report.deleted]
        lines += [f"  waiting  {item}" for item in report.waiting]
        lines += [f"  PROBLEM  {item}" for item in report.problems]
        trouble = trouble or bool(report.problems)
    return (1 if trouble else 0), "\n".join(lines)
