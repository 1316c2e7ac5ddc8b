"""Rules and tiers a valid policy can never use, for `twokey policy check` to warn about.

A policy whose catch-all rule comes first is valid (every request gets a tier) and badly wrong:
the privileged and flagged-target rules below it never match, so an administrator's MFA reset
gets the standard tier. Validation cannot call that a mistake, so the check warns of every rule
that an earlier rule always takes first, every rule that matches nothing, and every tier that
no rule, fraud flag, velocity escalation or break-glass can give. Pure: it reads the policy only.
"""

from __future__ import annotations

from app.domain.models import Action, PrincipalKind
from app.domain.policy import Loc, Match, Policy, Rule

_FITTING = frozenset(
    (action, kind)
    for action in Action
    for kind in PrincipalKind
    if action.for_nhi == (kind is PrincipalKind.NHI)
)
"""Every (action, target kind) a request can have: `open` refuses the others."""


def policy_warnings(policy: Policy) -> list[tuple[Loc, str]]:
    """Each rule that can never match and each tier nothing can give, with where it is."""
    warnings: list[tuple[Loc, str]] = []
    live: list[Rule] = []
    dead: dict[str, list[str]] = {}
    for index, rule in enumerate(policy.rules):
        why = _never_matches(rule.when) or _shadowed(rule, policy.rules[:index])
        if why is None:
            live.append(rule)
            continue
        dead.setdefault(rule.tier, []).append(rule.name)
        warnings.append((("rules", index), f"rule {rule.name!r} can never match: {why}"))
    given = {rule.tier for rule in live} | {policy.strictest_tier}
    if policy.breakglass is not None:
        given.add(policy.breakglass.tier)
    for name in policy.tiers:
        if name in given:
            continue
        only = dead.get(name)
        named = (
            f"only rules that can never match name it ({', '.join(only)})"
            if only
            else "no rule names it"
        )
        warnings.append(
            (
                ("tiers", name),
                f"tier {name!r} is never used: {named}, and flagged targets, velocity "
                f"escalations and break-glass get other tiers",
            )
        )
    for role, groups in policy.roles.items():
        if not groups:
            warnings.append(
                (
                    ("roles", role),
                    f"role {role!r} lists no group: nobody holds it, so nothing needing it can "
                    "ever be asked for or decided",
                )
            )
    return warnings


def _pairs(when: Match) -> frozenset[tuple[Action, PrincipalKind]]:
    """The (action, kind) pairs whose requests this match's action and kind conditions allow."""
    return frozenset(
        (action, kind)
        for action, kind in _FITTING
        if (when.actions is None or action in when.actions)
        and (when.target_kind is None or kind is when.target_kind)
    )


def _never_matches(when: Match) -> str | None:
    for field in ("actions", "target_groups", "target_tags"):
        if getattr(when, field) == []:
            return f"its `{field}` list is empty"
    if not _pairs(when):
        return (
            f"none of its actions ({', '.join(when.actions or ())}) applies to "
            f"{'a non-human identity' if when.target_kind is PrincipalKind.NHI else 'a person'}"
        )
    return None


def _shadowed(rule: Rule, earlier: list[Rule]) -> str | None:
    """Why an earlier rule always matches first, or None when this rule can be reached."""
    for before in earlier:
        if not _covers(before.when, rule.when):
            continue
        if before.when == Match():
            return (
                f"rule {before.name!r} above it has no conditions, so it matches every request "
                f"first; put {before.name!r} last"
            )
        if before.when == rule.when:
            return f"it repeats the conditions of rule {before.name!r} above it, which wins"
        return (
            f"every request it matches, rule {before.name!r} above it matches too, and first; "
            f"move {rule.name!r} above {before.name!r} or narrow it"
        )
    return None


def _covers(earlier: Match, later: Match) -> bool:
    """Every request ``later`` matches, ``earlier`` matches too."""
    if not _pairs(later) <= _pairs(earlier):
        return False
    for field in ("target_groups", "target_tags"):
        needed: list[str] | None = getattr(earlier, field)
        if needed is None:
            continue
        having: list[str] | None = getattr(later, field)
        # "any of": a target in one of ``having`` is in one of ``needed`` only if having <= needed
        if having is None or not set(having) <= set(needed):
            return False
    return earlier.flagged is None or earlier.flagged == later.flagged
