"""The sandbox: twokey's embedded directory and identity provider when no real IdP is configured.

NOT FOR PRODUCTION. The sandbox directory is a YAML file of made-up people and non-human
identities (NHIs); the sandbox connector changes nothing anywhere and only records what it was
asked to do. Together they let a newcomer run the whole two-key flow on a laptop, and let tests
drive it end to end against a directory they wrote themselves. The file format is documented in
docs/directory.md; the packaged example is ``example_directory.yaml`` next to this module.

Principal ids: a person's id is their bare slug (``alice``); an NHI's id is ``nhi:<name>``
(``nhi:billing-api``), so a person and an NHI can never be confused for one another.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from app.connectors.base import ConnectorConfigError
from app.connectors.checks import CheckResult, note
from app.connectors.plugin import ConnectorPlugin
from app.domain.models import Action, PhoneNumber, Principal, PrincipalKind, Request
from app.ports import MEMBERS_MAX, ExecutionResult, Outcome
from app.yaml_words import yaml_error_words

NHI_PREFIX = "nhi:"
"""NHI principal ids are ``nhi:<name>``; people's ids never contain a colon."""

EXAMPLE_DIRECTORY = "example_directory.yaml"

NOT_FOR_PRODUCTION = (
    "sandbox: a demo directory and identity provider that changes nothing in any real system "
    "and only records what it was asked to do. Not for production."
)

# ---- the file format ------------------------------------------------------------------------

_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_LABEL = re.compile(r"[^\x00-\x1f\x7f]{1,128}")


def _is_person_id(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a usable id: start with a lower-case letter or digit, then use "
            "only lower-case letters, digits, '.', '_' or '-' (at most 64), e.g. alice or j.doe"
        )
    return value


def _is_nhi_name(value: str) -> str:
    bare = value.removeprefix(NHI_PREFIX)
    if not _SLUG.fullmatch(bare):
        raise ValueError(
            f"{value!r} is not a usable NHI name: start with a lower-case letter or digit, then "
            "use only lower-case letters, digits, '.', '_' or '-' (at most 64), e.g. billing-api"
        )
    return bare


def _is_email(value: str) -> str:
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an email address twokey can match (write it like "
            "alice@example.com, ASCII only)"
        )
    return value


def _is_label(value: str) -> str:
    if value != value.strip() or not _LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} must be 1 to 128 characters, without line breaks or leading/trailing spaces"
        )
    return value


def _is_slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(
            f"{value!r} must be lower-case letters, digits, '.', '_' or '-' (e.g. production)"
        )
    return value


PersonId = Annotated[str, AfterValidator(_is_person_id)]
NhiName = Annotated[str, AfterValidator(_is_nhi_name)]
Email = Annotated[str, AfterValidator(_is_email)]
Label = Annotated[str, AfterValidator(_is_label)]
Slug = Annotated[str, AfterValidator(_is_slug)]
DisplayName = Annotated[str, Field(max_length=100), AfterValidator(_is_label)]

_Strict = ConfigDict(extra="forbid", frozen=True)


class PersonEntry(BaseModel):
    """A person in the sandbox directory. Every person has an email: chat users resolve by it."""

    model_config = _Strict

    id: PersonId
    display_name: DisplayName | None = None
    email: Email
    groups: list[Label] = Field(default_factory=list)
    disabled: bool = False
    recovery_email: Email | None = None
    """Where a step-up one-time code goes: an address outside the chat account's reach."""
    manager: PersonId | None = None
    """Their manager of record (a person id here): asked to attest a step-up."""
    phone: PhoneNumber | None = Field(default=None, repr=False)
    """Their phone of record, E.164 in quotes ('+447700900123'): step-up codes are texted there."""

    def principal(self) -> Principal:
        return Principal(
            id=self.id,
            kind=PrincipalKind.HUMAN,
            display_name=self.display_name or "",
            email=self.email,
            groups=frozenset(self.groups),
            disabled=self.disabled,
            recovery_email=self.recovery_email,
            manager_id=self.manager,
            phone=self.phone,
        )


class NhiEntry(BaseModel):
    """A non-human identity (service account, API key, token) and its human owner of record."""

    model_config = _Strict

    name: NhiName
    display_name: DisplayName | None = None
    owner: PersonId
    """The id of the person who confirms requests on this NHI's behalf."""
    tags: list[Slug] = Field(default_factory=list)
    system: Slug | None = None
    disabled: bool = False

    @property
    def principal_id(self) -> str:
        return NHI_PREFIX + self.name

    def principal(self) -> Principal:
        return Principal(
            id=self.principal_id,
            kind=PrincipalKind.NHI,
            display_name=self.display_name or self.name,
            owner_id=self.owner,
            tags=frozenset(self.tags),
            system=self.system,
            disabled=self.disabled,
        )


class DirectoryFile(BaseModel):
    """The whole sandbox directory file, as written (shape only; see ``_consistency``)."""

    model_config = _Strict

    version: Literal[1] = 1
    people: list[PersonEntry] = Field(min_length=1)
    nhis: list[NhiEntry] = Field(default_factory=list)


_OWNER_ELSEWHERE = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def _is_owner_elsewhere(value: str) -> str:
    if value.startswith(NHI_PREFIX):
        raise ValueError(f"{value!r} is an NHI; an NHI's owner of record is a person")
    if value != value.strip() or not _OWNER_ELSEWHERE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a usable owner: write the person's id (or login) in the "
            "directory of people, one line of 1 to 200 characters (e.g. 00u1abcd2EFGH or "
            "alice@example.com)"
        )
    return value


class InventoryNhiEntry(NhiEntry):
    """An NHI of an inventory file: its owner is a person of *another* directory (the IdP)."""

    owner: Annotated[str, AfterValidator(_is_owner_elsewhere)]
    """The owner's id (or login) in the directory of people; checked there at each look-up."""


class InventoryFile(BaseModel):
    """A file of NHIs only, kept beside a real directory that holds the people."""

    model_config = _Strict

    version: Literal[1] = 1
    nhis: list[InventoryNhiEntry] = Field(min_length=1)


# ---- errors with their location -------------------------------------------------------------


@dataclass(frozen=True)
class DirectoryProblem:
    """One mistake in a directory file: where it is (entry and field) and what is wrong."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class DirectoryFileError(ConnectorConfigError):
    """A sandbox directory file cannot be used; lists every mistake with its location."""

    def __init__(self, source: str, problems: Sequence[DirectoryProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"directory file {source} has {count} {noun}:\n{lines}")


def _entry_label(data: object, loc: Sequence[int | str]) -> str:
    """``people[2] 'bob'``: the list position plus the entry's id or name when it has one."""
    if len(loc) < 2 or not isinstance(loc[1], int):
        return str(loc[0]) if loc else ""
    section, index = str(loc[0]), loc[1]
    label = f"{section}[{index}]"
    entries = data.get(section) if isinstance(data, dict) else None
    if isinstance(entries, list) and 0 <= index < len(entries):
        entry = entries[index]
        key = entry.get("id", entry.get("name")) if isinstance(entry, dict) else None
        if isinstance(key, str) and key:
            label += f" {key!r}"
    return label


def _where(data: object, loc: Sequence[int | str]) -> str:
    entry = _entry_label(data, loc)
    rest = loc[2:] if len(loc) >= 2 and isinstance(loc[1], int) else loc[1:]
    if not rest:
        return entry
    field = ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in rest)
    return f"{entry}, field {field.replace('.[', '[')}" if entry else f"field {field}"


_ALLOWED_FIELDS = {
    "people": sorted(PersonEntry.model_fields),
    "nhis": sorted(NhiEntry.model_fields),
    "": sorted(DirectoryFile.model_fields),
}
_INVENTORY_FIELDS = {"nhis": sorted(NhiEntry.model_fields), "": sorted(InventoryFile.model_fields)}

_PEOPLE_ELSEWHERE = (
    "an NHI inventory lists no people: beside a real directory, people (and the owners "
    "named here) come from that directory; remove `people:`"
)


def _plain_message(error: ErrorDetails, allowed_fields: dict[str, list[str]]) -> str:
    """Pydantic's message, reworded where ours says more (unknown fields, our own checks)."""
    kind, message, loc = error["type"], str(error["msg"]), error["loc"]
    if kind == "extra_forbidden" and loc == ("people",) and "people" not in allowed_fields:
        return _PEOPLE_ELSEWHERE
    if kind == "extra_forbidden":
        section = str(loc[0]) if len(loc) > 1 and isinstance(loc[1], int) else ""
        allowed = ", ".join(allowed_fields.get(section, []))
        return f"unknown field {str(loc[-1])!r} (allowed here: {allowed})"
    if kind == "missing":
        return "required, but missing"
    if kind == "too_short" and loc == ("people",):
        return "list at least one person (an NHI's owner must be one of them)"
    if kind == "too_short" and loc == ("nhis",):
        return "list at least one NHI"
    if kind == "string_type" and loc[-1:] == ("phone",):
        return (
            "write the phone number in quotes, E.164 with its + (e.g. '+447700900123'): "
            "unquoted, YAML reads it as a number and drops the +"
        )
    if kind == "string_type":
        return f"{message}: write it in quotes ('...') so YAML reads it as text, not a number"
    if kind == "model_type":
        return "each entry is a mapping of fields (`id: alice`, `email: ...`), not a single value"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "literal_error" and loc == ("version",):
        return "must be 1 (the only sandbox directory format so far)"
    return message


def _shape_problems(
    data: object, error: ValidationError, allowed_fields: dict[str, list[str]] = _ALLOWED_FIELDS
) -> list[DirectoryProblem]:
    return [
        DirectoryProblem(_where(data, e["loc"]), _plain_message(e, allowed_fields))
        for e in error.errors()
    ]


def _consistency(
    people: Sequence[PersonEntry], nhis: Sequence[NhiEntry], *, owners_here: bool = True
) -> list[DirectoryProblem]:
    """What a single entry cannot know: unique ids and names, owners who exist.

    ``owners_here=False`` (an inventory): owners are people of another directory, checked there.
    """
    problems: list[DirectoryProblem] = []
    first_person: dict[str, int] = {}
    for index, person in enumerate(people):
        if person.id in first_person:
            problems.append(
                DirectoryProblem(
                    f"people[{index}] {person.id!r}, field id",
                    f"{person.id!r} is already the id of people[{first_person[person.id]}]; "
                    "every person needs their own id",
                )
            )
        else:
            first_person[person.id] = index
    for index, person in enumerate(people):
        if person.manager is not None and (
            person.manager == person.id or person.manager not in first_person
        ):
            problems.append(
                DirectoryProblem(
                    f"people[{index}] {person.id!r}, field manager",
                    f"{person.manager!r} must be the id of another person in this directory",
                )
            )
    first_nhi: dict[str, int] = {}
    for index, nhi in enumerate(nhis):
        where = f"nhis[{index}] {nhi.name!r}"
        if nhi.name in first_nhi:
            problems.append(
                DirectoryProblem(
                    f"{where}, field name",
                    f"{nhi.name!r} is already the name of nhis[{first_nhi[nhi.name]}]; "
                    "every NHI needs its own name",
                )
            )
        else:
            first_nhi[nhi.name] = index
        if owners_here and nhi.owner not in first_person:
            guess = difflib.get_close_matches(nhi.owner, list(first_person), n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            problems.append(
                DirectoryProblem(
                    f"{where}, field owner",
                    f"{nhi.owner!r} is not the id of a person in this directory; an NHI's owner "
                    f"of record must be one of the people listed under `people`.{hint}",
                )
            )
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping instead of keeping the last."""


def _mapping_without_repeats(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the key {key!r} is written twice here; keep one",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats
)


def _read_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark, started = exc.problem_mark, exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        began = started.line + 1 if started and mark and started.line != mark.line else None
        words = yaml_error_words(exc.context, exc.problem, began)
        raise DirectoryFileError(source, [DirectoryProblem(where, words)]) from None
    except yaml.YAMLError as exc:
        raise DirectoryFileError(source, [DirectoryProblem("", f"not valid YAML: {exc}")]) from None


def parse_directory(data: object, source: str) -> list[Principal]:
    """Validate a loaded directory file and return its principals, people first, in file order.

    Raises :class:`DirectoryFileError` listing every mistake with its entry and field.
    """
    if data is None:
        raise DirectoryFileError(source, [DirectoryProblem("", "the file is empty")])
    if not isinstance(data, dict):
        raise DirectoryFileError(
            source,
            [DirectoryProblem("", "the top level must be a mapping with `people:` (and `nhis:`)")],
        )
    if {"tiers", "rules"} & set(data) and "people" not in data:
        message = (
            "this looks like a policy file (it has tiers or rules, no people:): "
            "TWOKEY_DIRECTORY takes the directory file, TWOKEY_POLICY the policy file"
        )
        raise DirectoryFileError(source, [DirectoryProblem("", message)])
    try:
        directory = DirectoryFile.model_validate(data)
    except ValidationError as exc:
        raise DirectoryFileError(source, _shape_problems(data, exc)) from None
    problems = _consistency(directory.people, directory.nhis)
    if problems:
        raise DirectoryFileError(source, problems)
    return [p.principal() for p in directory.people] + [n.principal() for n in directory.nhis]


def parse_inventory(data: object, source: str) -> list[Principal]:
    """Validate a loaded NHI inventory (``nhis:`` only) and return its NHIs, in file order.

    Each NHI's ``owner_id`` is the owner *as written*: an id or login in another directory,
    not yet checked. Raises :class:`DirectoryFileError` listing every mistake.
    """
    if data is None:
        raise DirectoryFileError(source, [DirectoryProblem("", "the file is empty")])
    if not isinstance(data, dict):
        raise DirectoryFileError(
            source, [DirectoryProblem("", "the top level must be a mapping with `nhis:`")]
        )
    try:
        inventory = InventoryFile.model_validate(data)
    except ValidationError as exc:
        raise DirectoryFileError(source, _shape_problems(data, exc, _INVENTORY_FIELDS)) from None
    problems = _consistency([], inventory.nhis, owners_here=False)
    if problems:
        raise DirectoryFileError(source, problems)
    return [nhi.principal() for nhi in inventory.nhis]


def read_inventory(text: str, source: str = "(text)") -> list[Principal]:
    """The NHIs of an inventory file's text (see :func:`parse_inventory`)."""
    return parse_inventory(_read_yaml(text, source), source)


def read_directory_text(path: str | Path) -> str:
    """The text of the file ``TWOKEY_DIRECTORY`` names, or a :class:`DirectoryFileError`."""
    source = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DirectoryFileError(
            source, [DirectoryProblem("", "no such file (check TWOKEY_DIRECTORY)")]
        ) from None
    except IsADirectoryError:
        message = "is a folder: point TWOKEY_DIRECTORY at the directory YAML file itself"
        raise DirectoryFileError(source, [DirectoryProblem("", message)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DirectoryFileError(
            source, [DirectoryProblem("", f"cannot be read: {reason}")]
        ) from None


# ---- the directory --------------------------------------------------------------------------


class SandboxDirectory:
    """The :class:`~app.ports.Directory` port over a sandbox directory file. Not for production.

    Lookups are in memory. Disabled principals are returned like any other (with
    ``disabled=True``) so callers decide; several people may share an email, and
    :meth:`find_by_email` then returns them all so the caller refuses the ambiguous identity.
    """

    description = NOT_FOR_PRODUCTION

    def __init__(self, principals: Iterable[Principal], source: str = "(in memory)") -> None:
        self.source = source
        self._by_id: dict[str, Principal] = {}
        self._by_email: dict[str, list[Principal]] = {}
        for principal in principals:
            if principal.id in self._by_id:
                raise ValueError(f"principal id {principal.id!r} appears twice")
            self._by_id[principal.id] = principal
            if principal.email:
                self._by_email.setdefault(_email_key(principal.email), []).append(principal)

    @classmethod
    def from_yaml(cls, text: str, source: str = "(text)") -> SandboxDirectory:
        return cls(parse_directory(_read_yaml(text, source), source), source)

    @classmethod
    def from_file(cls, path: str | Path) -> SandboxDirectory:
        """Load the file ``TWOKEY_DIRECTORY`` names; every mistake is reported with its place."""
        return cls.from_yaml(read_directory_text(path), str(path))

    @classmethod
    def example(cls) -> SandboxDirectory:
        """The demo company shipped inside the package (read with importlib.resources)."""
        text = resources.files("app.connectors").joinpath(EXAMPLE_DIRECTORY).read_text("utf-8")
        return cls.from_yaml(text, f"packaged example ({EXAMPLE_DIRECTORY})")

    @property
    def principals(self) -> tuple[Principal, ...]:
        return tuple(self._by_id.values())

    async def find_by_email(self, email: str) -> list[Principal]:
        return list(self._by_email.get(_email_key(email), ()))

    async def get(self, principal_id: str) -> Principal | None:
        return self._by_id.get(principal_id)

    async def find_nhi(self, name: str) -> Principal | None:
        """By bare name (``billing-api``) or principal id (``nhi:billing-api``)."""
        return self._by_id.get(NHI_PREFIX + name.removeprefix(NHI_PREFIX))

    async def search(self, text: str, limit: int = 20) -> list[Principal]:
        needle = text.strip().lower()
        found = [p for p in self._by_id.values() if needle in _search_text(p)]
        return found[: max(limit, 0)]

    async def members(self, groups: Sequence[str], limit: int = MEMBERS_MAX) -> list[Principal]:
        wanted = set(groups)
        found = [
            p for p in self._by_id.values() if p.kind is PrincipalKind.HUMAN and p.groups & wanted
        ]
        return found[: max(limit, 0)]


def _email_key(email: str) -> str:
    # lower(), not casefold(): casefold would match "strasse" to "straße" (addresses are ASCII).
    return email.lower()


def _search_text(principal: Principal) -> str:
    return "\n".join((principal.id, principal.display_name, principal.email or "")).lower()


# ---- the connector --------------------------------------------------------------------------


class SandboxChange(BaseModel):
    """What the sandbox was asked to do, as recorded. Never holds a secret, only its label."""

    model_config = _Strict

    at: str
    """UTC time of the call, ISO 8601 with milliseconds."""
    action: Action
    target_id: str
    request_id: str
    ticket: str
    outcome: Outcome
    detail: str
    secret_label: str = ""
    """Which kind of one-time secret was handed back for the owner (the secret is not kept)."""


_SECRET_LABELS = {
    Action.RESET_PASSWORD: "temporary password",
    Action.TEMPORARY_ACCESS: "temporary access pass",
    Action.ROTATE_SECRET: "new secret",
}

_PASSWORD_SYMBOLS = "-_.!@#%+=?"  # noqa: S105 - an alphabet, not a password
_PASSWORD_ALPHABET = string.ascii_letters + string.digits + _PASSWORD_SYMBOLS
_PASS_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"  # noqa: S105 - no 0/O, 1/I/L, U: easy to read


def temporary_password(length: int = 20) -> str:
    """Random, with every character class present so any IdP password rule accepts it."""
    classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits, _PASSWORD_SYMBOLS)
    while True:
        candidate = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))
        if all(any(c in group for c in candidate) for group in classes):
            return candidate


def temporary_access_pass() -> str:
    """Four groups of four unambiguous characters: about 78 bits, typed by hand once."""
    groups = ("".join(secrets.choice(_PASS_ALPHABET) for _ in range(4)) for _ in range(4))
    return "-".join(groups)


def new_secret() -> str:
    """256 random bits, URL-safe, as a rotated API key or token would be."""
    return secrets.token_urlsafe(32)


_SECRET_MAKERS = {
    Action.RESET_PASSWORD: temporary_password,
    Action.TEMPORARY_ACCESS: temporary_access_pass,
    Action.ROTATE_SECRET: new_secret,
}


def _actions(values: Iterable[Action | str], setting: str) -> frozenset[Action]:
    chosen = set()
    for value in values:
        try:
            chosen.add(Action(value))
        except ValueError:
            known = ", ".join(a.value for a in Action)
            raise ConnectorConfigError(
                f"{setting}: {value!r} is not an action (known: {known})"
            ) from None
    return frozenset(chosen)


class SandboxConnector:
    """The :class:`~app.ports.IdentityProvider` port that changes nothing. Not for production.

    Every call to :meth:`execute` is recorded in :attr:`changes` and, when ``record_path`` is
    given, appended to that file as one JSON line, so a demo or a test can see exactly what the
    bot did. One-time secrets go back to the caller for the owner and are never recorded.
    ``fail_actions`` and ``unknown_actions`` make those actions end FAILED or UNKNOWN, to show and
    test what twokey does when an identity provider refuses or does not answer.
    """

    name: str = "sandbox"
    description = NOT_FOR_PRODUCTION

    def __init__(
        self,
        record_path: str | Path | None = None,
        *,
        fail_actions: Iterable[Action | str] = (),
        unknown_actions: Iterable[Action | str] = (),
    ) -> None:
        self.fail_actions = _actions(fail_actions, "fail_actions")
        self.unknown_actions = _actions(unknown_actions, "unknown_actions")
        both = self.fail_actions & self.unknown_actions
        if both:
            names = ", ".join(sorted(a.value for a in both))
            raise ConnectorConfigError(
                f"{names} cannot be in both fail_actions and unknown_actions: choose one"
            )
        self.record_path = Path(record_path) if record_path is not None else None
        if self.record_path is not None and not self.record_path.parent.is_dir():
            raise ConnectorConfigError(
                f"sandbox record file {self.record_path}: folder "
                f"{self.record_path.parent} does not exist"
            )
        self.changes: list[SandboxChange] = []
        self._lock = asyncio.Lock()

    async def check(self) -> list[CheckResult]:
        """Nothing to reach: say plainly that this connector changes nothing."""
        return [note("sandbox", NOT_FOR_PRODUCTION)]

    def supports(self, action: Action, target: Principal) -> bool:
        """rotate-secret for NHIs; every other action for people."""
        return action.for_nhi == (target.kind is PrincipalKind.NHI)

    async def execute(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        """Pretend to make the change; record it; hand back a one-time secret where one is due."""
        outcome, detail = self._decide(action, target, request)
        secret = None
        if outcome is Outcome.COMPLETED and action in _SECRET_MAKERS:
            secret = SecretStr(_SECRET_MAKERS[action]())
        label = _SECRET_LABELS[action] if secret is not None else ""
        change = SandboxChange(
            at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            action=action,
            target_id=target.id,
            request_id=request.id,
            ticket=request.ticket,
            outcome=outcome,
            detail=detail,
            secret_label=label,
        )
        try:
            await self._record(change)
        except OSError as exc:
            return ExecutionResult(
                outcome=Outcome.FAILED,
                detail=f"Sandbox: nothing done, the record file could not be written "
                f"({exc.strerror or type(exc).__name__}).",
            )
        return ExecutionResult(outcome=outcome, detail=detail, secret=secret, secret_label=label)

    def _decide(self, action: Action, target: Principal, request: Request) -> tuple[Outcome, str]:
        who = f"{target.name} ({target.id})"
        if request.action is not action or request.target_id != target.id:
            return Outcome.FAILED, (
                f"Sandbox: nothing done, request {request.id} is for {request.action.value} on "
                f"{request.target_id}, not {action.value} on {target.id}."
            )
        if not self.supports(action, target):
            kind = "a non-human identity" if target.kind is PrincipalKind.NHI else "a person"
            return Outcome.FAILED, (
                f"Sandbox: cannot {action.label} for {who}: "
                f"{action.value} does not apply to {kind}."
            )
        if action in self.fail_actions:
            return Outcome.FAILED, (
                f"Sandbox: the identity provider refused to {action.label} for {who} "
                "(a simulated failure, set by fail_actions). Nothing was changed."
            )
        if action in self.unknown_actions:
            return Outcome.UNKNOWN, (
                f"Sandbox: no answer from the identity provider while trying to {action.label} "
                f"for {who} (a simulated timeout, set by unknown_actions); it may or may not "
                "have happened."
            )
        return Outcome.COMPLETED, (
            f"Sandbox: recorded '{action.label}' for {who}; no real system was changed."
        )

    async def _record(self, change: SandboxChange) -> None:
        async with self._lock:
            if self.record_path is not None:
                line = json.dumps(change.model_dump(mode="json"), sort_keys=True) + "\n"
                await asyncio.to_thread(_append_line, self.record_path, line)
            self.changes.append(change)


def _append_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as record:
        record.write(line)


class SandboxConfig(BaseModel):
    """The ``sandbox`` connector: changes nothing anywhere (not for production)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["sandbox"]
    name: str = Field(default="sandbox", pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    record_path: Path | None = None
    """A file that gets one JSON line per change the sandbox was asked to make."""
    fail_actions: list[Action] = Field(default_factory=list)
    unknown_actions: list[Action] = Field(default_factory=list)


def build(config: Mapping[str, Any]) -> SandboxConnector:
    """The sandbox connector of one ``type: sandbox`` entry (validated already)."""
    settings = SandboxConfig.model_validate(dict(config))
    return SandboxConnector(
        settings.record_path,
        fail_actions=settings.fail_actions,
        unknown_actions=settings.unknown_actions,
    )


PLUGIN = ConnectorPlugin(
    type="sandbox",
    config=SandboxConfig,
    build=build,
    changes=lambda config: "none (records what it is asked)",
    check=SandboxConnector.check,
    directory=lambda connector: None,
    directory_unless_marked=False,
)
