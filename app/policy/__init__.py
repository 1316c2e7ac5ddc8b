"""The policy file: loading and checking it, and explaining what it decides (a dry run)."""

from __future__ import annotations

from pathlib import Path

from app.policy.explain import Explanation, explain, render_explanation
from app.policy.loader import (
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
    "render_explanation",
]

EXIT_OK = 0
EXIT_MISTAKES = 1
EXIT_UNREADABLE = 2


def check_file(path: str | Path) -> tuple[int, str]:
    """`twokey policy check FILE`: exit code and the text to print.

    0 and a short summary when the policy is usable; 1 and every mistake, located and in file
    order, when it is not; 2 when the file cannot be read at all.
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
    problems += _connector_problems(text, str(path))
    if problems or policy is None:
        return EXIT_MISTAKES, PolicyFileError(str(path), in_file_order(problems)).message
    rules = ", ".join(f"{rule.name} -> {rule.tier}" for rule in policy.rules)
    lines = [
        f"{path}: OK, the policy is valid.",
        f"  tiers: {', '.join(policy.tiers)}",
        f"  rules (first match wins): {rules}",
        f"  flagged targets and escalations get tier: {policy.strictest_tier}",
    ]
    if policy.breakglass is not None:
        lines.append(f"  break-glass: role {policy.breakglass.role}, tier {policy.breakglass.tier}")
    lines.append(f"  connectors: {_connectors_summary(text, str(path))}")
    return EXIT_OK, "\n".join(lines)


def _connector_problems(text: str, source: str) -> list[PolicyProblem]:
    """Each connector entry checked against its connector's own settings (app.connectors)."""
    from app.connectors.registry import connector_problems

    try:
        document = read_located_yaml(text, source)
    except PolicyFileError:
        return []  # a syntax error: load_policy_text has reported it
    return connector_problems(document)


def _connectors_summary(text: str, source: str) -> str:
    from app.connectors.registry import describe_connectors, read_entries

    return describe_connectors(read_entries(read_located_yaml(text, source)))
