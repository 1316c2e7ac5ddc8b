"""The policy file's ``connectors:`` list: where the policy file meets the connector plugins.

The policy (``app.policy``) reads the file and locates every mistake at its line and column;
the connectors (``app.connectors``) know each type's settings. Neither imports the other: this
module, like the composition root, uses both. It

- validates every entry with its plugin's settings model and reports each mistake at its line
  and column, like the rest of the policy (``policy.yaml:41:7 connectors.0.org_url: ...``),
  without ever repeating a secret pasted where only a variable's name belongs;
- turns the entries into :class:`~app.connectors.registry.ConnectorEntry` values to build;
- runs `twokey policy check` (the policy's own checks plus these) and `twokey connectors
  check | aws-cleanup`.
"""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from app.connectors.checks import render_reports
from app.connectors.registry import (
    CONNECTOR_TYPES,
    ENV_SUFFIX,
    PLUGINS,
    ConnectorEntry,
    check_configured,
    clean_up,
    describe_connectors,
    plugin_of,
)
from app.policy import check_file
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

_MARKABLE_TYPES = tuple(plugin.type for plugin in PLUGINS if plugin.may_be_directory)
_SECRET_WORDS = re.compile(r"token|secret|password|passwd|private_key|credential|access_key")


def check_policy_file(path: str | Path, *, strict: bool = False) -> tuple[int, str]:
    """`twokey policy check FILE`: the policy's own checks and every connector entry's."""
    return check_file(
        path,
        strict=strict,
        more_problems=connector_problems,
        connectors_summary=lambda document: describe_connectors(read_entries(document)),
    )


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
        if entry.get("directory") is True and plugin_of(str(entry["type"])).may_be_directory:
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
    model = plugin_of(str(kind)).config
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
    if value and not plugin_of(kind).may_be_directory:
        return [
            document.problem(
                (*at, "directory"),
                f"a {kind} connector cannot act as the directory of people; only "
                f"{', '.join(sorted(_MARKABLE_TYPES))} can",
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
        named = f"{text}{ENV_SUFFIX}"
        instead = (
            f"write {named}: NAME_OF_THE_VARIABLE instead"
            if named in model.model_fields
            else "name the environment variable that holds it in the connector's *_env setting"
            if any(f.endswith(ENV_SUFFIX) for f in model.model_fields)
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
        return await clean_up(entries, args.name)
    if not entries:
        return 0, (
            f"{source or EXAMPLE_POLICY}: no connectors are configured, so twokey uses the "
            "sandbox directory and connector: they change nothing anywhere (not for production)."
        )
    reports = await check_configured(entries)
    return (0 if all(report.ready for report in reports) else 1), render_reports(reports)
