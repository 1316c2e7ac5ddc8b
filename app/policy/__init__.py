"""The policy file: loading and checking it, and explaining what it decides (a dry run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.policy.explain import Explanation, explain, render_explanation
from app.policy.lint import policy_warnings
from app.policy.loader import (
    LocatedYaml,
    PolicyFileError,
    PolicyProblem,
    example_policy,
    in_file_order,
    load_policy,
    load_policy_text,
    read_located_yaml,
    read_policy_file,
)

__all__ = [
    "Explanation",
    "PolicyFileError",
    "PolicyProblem",
    "check_file",
    "example_policy",
    "explain",
    "load_policy",
    "load_policy_text",
    "policy_warnings",
    "render_explanation",
]

EXIT_OK = 0
EXIT_MISTAKES = 1
EXIT_UNREADABLE = 2


def check_file(
    path: str | Path,
    *,
    strict: bool = False,
    more_problems: Callable[[LocatedYaml], list[PolicyProblem]] | None = None,
    connectors_summary: Callable[[LocatedYaml], str] | None = None,
) -> tuple[int, str]:
    """`twokey policy check FILE`: exit code and the text to print.

    0 and a short summary when the policy is usable; 1 and every mistake, located and in file
    order, when it is not; 2 when the file cannot be read at all. A usable policy can still
    have rules that never match or tiers nothing gives: each is warned of, located; warnings
    exit 0 (the policy works as written) unless ``strict``, which CI should use.

    The ``connectors:`` entries are checked by whoever knows the connectors
    (``app.connector_setup``): ``more_problems`` locates their mistakes in the document and
    ``connectors_summary`` says which connector does what. The policy keeps them as raw
    mappings and never imports a connector.
    """
    try:
        text = read_policy_file(path)
    except PolicyFileError as exc:
        return EXIT_UNREADABLE, exc.message
    problems: list[PolicyProblem] = []
    policy = None
    try:
        policy = load_policy_text(text, str(path))
    except PolicyFileError as exc:
        problems = exc.problems
    if more_problems is not None:
        problems += _section_problems(text, str(path), more_problems)
    if problems or policy is None:
        return EXIT_MISTAKES, PolicyFileError(str(path), in_file_order(problems)).message
    document = read_located_yaml(text, str(path))
    found = policy_warnings(policy)
    warnings = in_file_order([document.problem(loc, words) for loc, words in found])
    rules = ", ".join(f"{rule.name} -> {rule.tier}" for rule in policy.rules)
    lines = [f"{path}: OK, the policy is valid."]
    if warnings:
        lines = [
            f"{path}: the policy is valid, but parts of it can never apply "
            f"({len(warnings)} warning{'s' * (len(warnings) != 1)}):",
            *(f"  warning: {warning}" for warning in warnings),
            "The policy as it is:",
        ]
    lines += [
        f"  tiers: {', '.join(policy.tiers)}",
        f"  rules (first match wins): {rules}",
        f"  flagged targets and escalations get tier: {policy.strictest_tier}",
    ]
    if policy.tickets.checked:
        lines.append(f"  tickets: {policy.tickets.in_words()}")
    if policy.breakglass is not None:
        lines.append(f"  break-glass: role {policy.breakglass.role}, tier {policy.breakglass.tier}")
    if connectors_summary is not None:
        lines.append(f"  connectors: {connectors_summary(document)}")
    return EXIT_MISTAKES if warnings and strict else EXIT_OK, "\n".join(lines)


def _section_problems(
    text: str, source: str, check: Callable[[LocatedYaml], list[PolicyProblem]]
) -> list[PolicyProblem]:
    try:
        document = read_located_yaml(text, source)
    except PolicyFileError:
        return []  # a syntax error: load_policy_text has reported it
    return check(document)
