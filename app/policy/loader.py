"""Reading the policy file: YAML in, a validated :class:`Policy` out, or every mistake located.

An operator fixing a policy wants the whole list at once, each mistake with the line and
column where it is and said in plain words, in file order, like a compiler. So the YAML is
read with a loader that remembers where each key and list item sits, pydantic's errors are
mapped back onto those positions, and the cross-references (a rule naming a tier, a tier
naming a role) are checked on the raw file too, since pydantic skips them while any field is
wrong.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from app.domain.errors import PolicyError
from app.domain.policy import REFERENCE_ERROR, Loc, Policy, reference_problems
from app.yaml_words import yaml_error_words

EXAMPLE_POLICY = "example_policy.yaml"
MAX_POLICY_BYTES = 1_000_000
_MAX_NODES = 100_000
"""Stop recording positions after this many nodes (aliases can multiply a small file)."""


class PolicyProblem(BaseModel):
    """One mistake in a policy file, where it is and what is wrong."""

    model_config = ConfigDict(frozen=True)

    source: str
    line: int | None = None
    """1-based; None when the mistake has no place (the file cannot be read)."""
    column: int | None = None
    path: str = ""
    """The setting, dotted: ``tiers.privileged.approvals``, ``rules.2.tier``."""
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}:{self.column}"
        return f"{where} {self.path}: {self.message}" if self.path else f"{where} {self.message}"


class PolicyFileError(PolicyError):
    """The policy file cannot be used; ``problems`` lists every mistake in file order."""

    def __init__(self, source: str, problems: list[PolicyProblem]) -> None:
        self.source = source
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: the policy cannot be used ({count}):\n{lines}")


class LocatedYaml:
    """A parsed YAML document plus the position of every mapping key and list item in it."""

    def __init__(self, source: str, data: Any, positions: dict[Loc, tuple[int, int]]) -> None:
        self.source = source
        self.data = data
        self.positions = positions
        self.problems: list[PolicyProblem] = []

    def problem(self, loc: Loc, message: str) -> PolicyProblem:
        """A problem at ``loc``, placed at the deepest part of it the file actually has."""
        for depth in range(len(loc), -1, -1):
            position = self.positions.get(loc[:depth])
            if position is not None:
                line, column = position
                return PolicyProblem(
                    source=self.source,
                    line=line,
                    column=column,
                    path=dotted(loc),
                    message=message,
                )
        return PolicyProblem(
            source=self.source, line=1, column=1, path=dotted(loc), message=message
        )


def dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)


class _PolicyYamlLoader(yaml.SafeLoader):
    """The safe loader; a subclass so nothing we add leaks into yaml.SafeLoader itself."""


def read_located_yaml(text: str, source: str) -> LocatedYaml:
    """Parse ``text`` safely, recording positions; a syntax error raises with its line."""
    loader = _PolicyYamlLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise PolicyFileError(source, [_syntax_problem(source, exc)]) from None
    except yaml.YAMLError as exc:
        problem = PolicyProblem(source=source, line=1, column=1, message=f"not valid YAML: {exc}")
        raise PolicyFileError(source, [problem]) from None
    finally:
        loader.dispose()
    document = LocatedYaml(source, data, {})
    if node is not None:
        _record_positions(loader, node, (), document, set())
    return document


def _syntax_problem(source: str, exc: yaml.MarkedYAMLError) -> PolicyProblem:
    mark = exc.problem_mark or exc.context_mark
    started = exc.context_mark
    began = None
    if started is not None and mark is not None and started.line != mark.line:
        began = started.line + 1
    return PolicyProblem(
        source=source,
        line=mark.line + 1 if mark else 1,
        column=mark.column + 1 if mark else 1,
        message=yaml_error_words(exc.context, exc.problem, began),
    )


def _record_positions(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    loc: Loc,
    document: LocatedYaml,
    ancestors: set[int],
) -> None:
    """Walk the node tree: each key and item's start, and keys written twice."""
    if len(document.positions) >= _MAX_NODES or id(node) in ancestors:
        return
    document.positions.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
    ancestors = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            key = _key_of(loader, key_node)
            line, column = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            # Keys merged in with `<<: *anchor` sit before this mapping in the file; a key
            # written here overrides them by design, so only keys written here can clash.
            merged = key_node.start_mark.index < node.start_mark.index
            if merged:
                document.positions.setdefault((*loc, key), (line, column))
                _record_positions(loader, value_node, (*loc, key), document, ancestors)
                continue
            if key in seen:
                document.problems.append(
                    PolicyProblem(
                        source=document.source,
                        line=line,
                        column=column,
                        path=dotted((*loc, key)),
                        message=f"{key!r} is written twice here (first on line {seen[key]}); "
                        "only the last one would count, so remove one",
                    )
                )
            seen.setdefault(key, line)
            document.positions[(*loc, key)] = (line, column)
            _record_positions(loader, value_node, (*loc, key), document, ancestors)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            document.positions.setdefault(
                (*loc, index), (item.start_mark.line + 1, item.start_mark.column + 1)
            )
            _record_positions(loader, item, (*loc, index), document, ancestors)


def _key_of(loader: yaml.SafeLoader, key_node: yaml.Node) -> str | int:
    """The key as the constructed data has it (``1:`` is the int 1), for matching paths."""
    if isinstance(key_node, yaml.ScalarNode):
        try:
            key = loader.construct_object(key_node)
        except yaml.YAMLError:
            return str(key_node.value)
        return key if isinstance(key, str | int) else str(key)
    return str(key_node.value)


# ---- loading ----------------------------------------------------------------------------------


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy file at ``path``; raise :class:`PolicyFileError` if unusable."""
    source = str(path)
    return load_policy_text(read_policy_file(path), source)


def read_policy_file(path: str | Path) -> str:
    """The file's text, or a :class:`PolicyFileError` saying plainly why it cannot be read."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        message = "cannot read the file: it is a folder; give the path of the policy YAML file"
        raise PolicyFileError(source, [_unplaced(source, message)]) from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise PolicyFileError(
            source, [_unplaced(source, f"cannot read the file: {reason}")]
        ) from None
    if len(raw) > MAX_POLICY_BYTES:
        message = f"the file is larger than {MAX_POLICY_BYTES} bytes; is it the policy?"
        raise PolicyFileError(source, [_unplaced(source, message)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyFileError(source, [_unplaced(source, "the file is not UTF-8 text")]) from None


def _unplaced(source: str, message: str) -> PolicyProblem:
    return PolicyProblem(source=source, message=message)


def load_policy_text(text: str, source_name: str = "policy.yaml") -> Policy:
    """Validate a policy given as YAML text; ``source_name`` is used in the locations."""
    document = read_located_yaml(text, source_name)
    data = document.data
    if data is None:
        problem = document.problem((), "the policy file is empty")
        raise PolicyFileError(source_name, [problem])
    if not isinstance(data, Mapping):
        message = (
            "the policy file must be a mapping of settings (version, reason_codes, roles, "
            f"tiers, rules, ...), not {_yaml_kind(data)}"
        )
        raise PolicyFileError(source_name, [document.problem((), message)])
    if "people" in data and not {"tiers", "rules"} & set(data):
        message = (
            "this looks like a sandbox directory file (it has people:, no tiers or rules): "
            "TWOKEY_POLICY takes the policy file, TWOKEY_DIRECTORY the directory file"
        )
        raise PolicyFileError(source_name, [document.problem(("people",), message)])
    policy: Policy | None = None
    failure: ValidationError | None = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        failure = exc
    # Cross-references are checked on the raw file, since pydantic skips them while any
    # field is wrong; the model's own report of them is then the same list, so it is dropped.
    references = [document.problem(loc, message) for loc, message in reference_problems(data)]
    problems = document.problems + references
    if failure is not None:
        problems += problems_from_validation(failure, document, skip_references=bool(references))
    if problems:
        raise PolicyFileError(source_name, in_file_order(problems))
    assert policy is not None  # validation raised nothing, so the policy exists
    return policy


def example_policy() -> Policy:
    """The documented example policy shipped in the package (used when none is configured)."""
    text = resources.files("app.policy").joinpath(EXAMPLE_POLICY).read_text(encoding="utf-8")
    return load_policy_text(text, EXAMPLE_POLICY)


def in_file_order(problems: list[PolicyProblem]) -> list[PolicyProblem]:
    """Sorted by position (stable, so problems at one place keep the order they were found)."""
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.line or 0, p.column or 0))


# ---- pydantic errors in plain words -----------------------------------------------------------


def problems_from_validation(
    exc: ValidationError,
    document: LocatedYaml,
    prefix: Loc = (),
    model: type[BaseModel] = Policy,
    *,
    skip_references: bool = False,
) -> list[PolicyProblem]:
    """Each pydantic error as a located problem, in plain words.

    ``prefix`` and ``model`` let another part of the file (e.g. one entry of ``connectors``,
    validated by its connector's model) be reported at its own place in the same file.
    """
    problems = []
    for error in exc.errors(include_url=False):
        if skip_references and error["type"] == REFERENCE_ERROR:
            continue
        loc = tuple(part for part in error["loc"] if part != "[key]")
        problems.append(document.problem((*prefix, *loc), _in_plain_words(error, loc, model)))
    return problems


def _in_plain_words(error: ErrorDetails, loc: Loc, model: type[BaseModel]) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return _unknown_setting(str(loc[-1]) if loc else "?", _fields_at(model, loc[:-1]))
    if kind == "missing":
        return "this setting is required but missing"
    if kind in ("value_error", "assertion_error"):
        return message.split(", ", 1)[1] if ", " in message else message
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"should be a mapping of settings (key: value), not {_yaml_kind(error['input'])}"
    if kind == "list_type":
        return f"should be a list (lines starting with '- '), not {_yaml_kind(error['input'])}"
    if kind == "too_short":
        return "needs at least one entry"
    if kind in ("bool_type", "bool_parsing"):
        return "should be true or false"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "should be a whole number"
    if kind == "string_type":
        return f"should be text, not {_yaml_kind(error['input'])}"
    if kind in ("enum", "literal_error"):
        return f"{message.removeprefix('Input ')} (got {_shown(error['input'])})"
    return message


def _unknown_setting(key: str, allowed: list[str] | None) -> str:
    text = f"unknown setting {key!r}"
    if allowed:
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            text += f"; did you mean {close[0]!r}?"
        text += f" (allowed here: {', '.join(allowed)})"
    return text


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _yaml_kind(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return "text"


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str] | None:
    """The settings allowed at ``loc``, by following the model's field types."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) in (list, tuple) and get_args(current):
            current = get_args(current)[0]
        elif get_origin(current) is dict and get_args(current):
            current = get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> X and ``X | None`` -> X."""
    if get_origin(annotation) is Annotated:
        return _unwrap(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation
