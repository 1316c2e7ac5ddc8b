"""The policy file: loading and checking it, and explaining what it decides (a dry run)."""

from __future__ import annotations

from pathlib import Path

from app.policy.explain import Explanation, explain, render_explanation
from app.policy.loader import (
    PolicyFileError,
    PolicyProblem,
    example_policy,
    load_policy,
    load_policy_text,
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
    try:
        policy = load_policy_text(text, str(path))
    except PolicyFileError as exc:
        return EXIT_MISTAKES, exc.message
    rules = ", ".join(f"{rule.name} -> {rule.tier}" for rule in policy.rules)
    lines = [
        f"{path}: OK, the policy is valid.",
        f"  tiers: {', '.join(policy.tiers)}",
        f"  rules (first match wins): {rules}",
        f"  flagged targets and escalations get tier: {policy.strictest_tier}",
    ]
    if policy.breakglass is not None:
        lines.append(f"  break-glass: role {policy.breakglass.role}, tier {policy.breakglass.tier}")
    return EXIT_OK, "\n".join(lines)
