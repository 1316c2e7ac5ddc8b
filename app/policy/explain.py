"""`twokey policy explain`: a dry run of the policy for one action on one target.

So an operator can test a policy change before shipping it: which rule matched and why (and
why each earlier rule did not), the tier, the gates and who may approve, the timers, alerts,
velocity limits, and whether a given requester may open the request at all. Pure: it uses
only what it is given and never creates a request.

Whether the request would open is decided by the very checks `TwoKey.open` makes
(app.domain.opening, app.domain.sod, app.domain.policy.evaluate), in the same order, so the dry
run and the real thing cannot drift apart: what `open` would refuse, explain refuses, in the
same words.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from app.domain import opening
from app.domain.durations import format_duration
from app.domain.errors import NotAllowed, TwokeyError, VelocityLimited
from app.domain.models import Action, Plan, Principal, PrincipalKind
from app.domain.policy import Policy, Signals, evaluate
from app.domain.sod import check_may_open
from app.domain.stepup import Verifier

_Frozen = ConfigDict(frozen=True)


@dataclass(frozen=True)
class Live:
    """What only the running deployment knows. Without it, explain checks the policy and the
    target's own record only, and says what it left unchecked."""

    owner: Principal | None
    """The target's owner of record as the directory has them now (None: not there)."""
    connectors: Sequence[opening.Executor]
    """The connectors `twokey serve` would use, in its order."""
    approver_pool: Sequence[Principal] | None = None
    """The people in the groups of the request's approver role, as the directory has them now
    (None: not asked)."""


class RuleCheck(BaseModel):
    """One rule tried on the way to the match: the conditions that held and those that failed."""

    model_config = _Frozen

    name: str
    tier: str
    matched: bool
    held: list[str]
    failed: list[str]


class VelocityCheck(BaseModel):
    """One velocity limit that applies to this action, and how close it is."""

    model_config = _Frozen

    index: int
    per: Literal["target", "requester"]
    actions: list[Action] | None
    limit: int
    window: int
    then: Literal["refuse", "escalate"]
    seen: int

    @property
    def reached(self) -> bool:
        return self.seen >= self.limit


class RequesterCheck(BaseModel):
    """Whether the given requester may open this request, with each reason."""

    model_config = _Frozen

    id: str
    name: str
    role: str
    may_open: bool
    reasons: list[str]


class Explanation(BaseModel):
    """What the policy would decide; nothing here is stored or sent anywhere."""

    model_config = _Frozen

    action: Action
    target: Principal
    breakglass: bool
    target_flagged: bool
    rules: list[RuleCheck]
    """The rules tried, in order, up to and including the one that matched."""
    not_reached: list[str]
    """Rules after the match, never looked at."""
    matched_rule: str | None
    plan: Plan | None
    """The plan the request would get (for a refusal by velocity: the plan below the limit)."""
    refused: str | None
    """Why the policy refuses the request outright, in the words the requester would see."""
    approver_groups: list[str]
    escalation_groups: list[str]
    velocity: list[VelocityCheck]
    requester: RequesterCheck | None
    refusals: list[str]
    """Every reason `open` would refuse, in the order it checks; the first is what it says."""
    connector: str | None
    """The connector that would make the change (None: not checked, or none can)."""
    notes: list[str]
    tickets: str = ""
    """How the quoted ticket would be checked ("" when it is not looked up)."""
    approvers_able: int | None = None
    """How many people the directory has who could approve it (active, holding the role,
    neither the requester nor the target nor its owner); None when not asked."""

    @property
    def would_open(self) -> bool:
        return not self.refusals


def explain(
    policy: Policy,
    action: Action,
    target: Principal,
    requester: Principal | None,
    signals: Signals,
    breakglass: bool = False,
    *,
    live: Live | None = None,
    notes: Sequence[str] = (),
    reason_code: str = "",
) -> Explanation:
    """Dry-run the policy for ``action`` on ``target``, as if ``requester`` opened it now
    (with ``reason_code``, which decides whether a device-based step-up may be offered)."""
    rules, not_reached = ([], []) if breakglass else _try_rules(policy, action, target, signals)
    plan, refused = _plan_or_refusal(policy, action, target, signals, breakglass, reason_code)
    refusals, connector = _refusals(policy, action, target, requester, breakglass, live)
    if refused is not None and not (breakglass and policy.breakglass is None):
        refusals.append(refused)  # (a missing break-glass section is refused first, above)
    return Explanation(
        action=action,
        target=target,
        breakglass=breakglass,
        target_flagged=signals.target_flagged,
        rules=rules,
        not_reached=not_reached,
        matched_rule=next((r.name for r in rules if r.matched), None),
        plan=plan,
        refused=refused,
        approver_groups=_groups(policy, plan.approver_role if plan else None),
        escalation_groups=_groups(policy, plan.escalate_to if plan else None),
        velocity=_velocity_checks(policy, action, signals),
        requester=None
        if requester is None
        else _requester_check(policy, requester, target, breakglass),
        refusals=refusals,
        connector=connector,
        notes=[*_unchecked(target, live), *notes],
        tickets=policy.tickets.in_words(plan.tier if plan else None)
        if policy.tickets.checked
        else "",
        approvers_able=_approvers_able(policy, plan, target, requester, live),
    )


def _approvers_able(
    policy: Policy,
    plan: Plan | None,
    target: Principal,
    requester: Principal | None,
    live: Live | None,
) -> int | None:
    """Who could approve it, of the approver role's people the directory holds now."""
    if live is None or live.approver_pool is None or plan is None or not plan.approvals_needed:
        return None
    parties = {target.id, target.owner_of_record, requester.id if requester else None}
    return sum(
        policy.could_approve(person, [plan.approver_role], parties) for person in live.approver_pool
    )


def _refusals(
    policy: Policy,
    action: Action,
    target: Principal,
    requester: Principal | None,
    breakglass: bool,
    live: Live | None,
) -> tuple[list[str], str | None]:
    """The checks `TwoKey.open` (or `breakglass`) and `_open` make, in their order, each kept."""
    refusals: list[str] = []

    def check(step: Callable[[], object]) -> None:
        try:
            step()
        except TwokeyError as exc:
            refusals.append(exc.message)

    if breakglass:
        check(lambda: opening.enabled_breakglass(policy))
    if requester is not None:
        check(lambda: opening.check_may_request(policy, requester, breakglass=breakglass))
    person = target.kind is PrincipalKind.HUMAN
    if person:  # a person is named as in chat, and identified like any caller
        check(lambda: opening.check_active(target, "The target"))
    check(lambda: opening.check_action_fits(action, target))
    if requester is not None:
        check(lambda: check_may_open(requester, target))
    connector = None
    if live is not None:
        try:
            connector = opening.connector_for(live.connectors, action, target).name
        except TwokeyError as exc:
            refusals.append(exc.message)
    said = (target.disabled and person) or (
        target.owner_of_record is None and requester is not None
    )
    if not said:  # (each already said above, in the words open would use first)
        check(lambda: opening.owner_to_reach(target))
    owner_id = target.owner_of_record
    if live is not None and not target.disabled and owner_id not in (None, target.id):
        check(lambda: opening.check_owner_active(target, live.owner))
    return refusals, connector


def _try_rules(
    policy: Policy, action: Action, target: Principal, signals: Signals
) -> tuple[list[RuleCheck], list[str]]:
    """The same first-match walk as evaluate(), keeping the why of each step."""
    tried: list[RuleCheck] = []
    for index, rule in enumerate(policy.rules):
        conditions = rule.when.check(action, target, signals.target_flagged)
        matched = all(held for held, _ in conditions)
        tried.append(
            RuleCheck(
                name=rule.name,
                tier=rule.tier,
                matched=matched,
                held=[text for held, text in conditions if held] or ["it has no conditions"],
                failed=[text for held, text in conditions if not held],
            )
        )
        if matched:
            return tried, [r.name for r in policy.rules[index + 1 :]]
    return tried, []  # unreachable for a validated policy: its last rule matches everything


def _plan_or_refusal(
    policy: Policy,
    action: Action,
    target: Principal,
    signals: Signals,
    breakglass: bool,
    reason_code: str = "",
) -> tuple[Plan | None, str | None]:
    try:
        plan = evaluate(
            policy, action, target, signals, breakglass=breakglass, reason_code=reason_code
        )
        return plan, None
    except VelocityLimited as exc:
        below = _below_refusing_limits(policy, action, signals)
        plan = evaluate(
            policy, action, target, below, breakglass=breakglass, reason_code=reason_code
        )
        return plan, exc.message
    except NotAllowed as exc:
        return None, exc.message


def _below_refusing_limits(policy: Policy, action: Action, signals: Signals) -> Signals:
    """The same signals with every refusing limit's count reset, to show the plan behind it."""
    target_count, requester_count = dict(signals.target_count), dict(signals.requester_count)
    for index, limit in enumerate(policy.velocity):
        if limit.then == "refuse" and limit.applies_to(action):
            counts = target_count if limit.per == "target" else requester_count
            counts.pop(str(index), None)
    return signals.model_copy(
        update={"target_count": target_count, "requester_count": requester_count}
    )


def _groups(policy: Policy, role: str | None) -> list[str]:
    return list(policy.roles.get(role, [])) if role else []


def _velocity_checks(policy: Policy, action: Action, signals: Signals) -> list[VelocityCheck]:
    checks = []
    for index, limit in enumerate(policy.velocity):
        if not limit.applies_to(action):
            continue
        counts = signals.target_count if limit.per == "target" else signals.requester_count
        checks.append(
            VelocityCheck(
                index=index,
                per=limit.per,
                actions=limit.actions,
                limit=limit.limit,
                window=limit.window,
                then=limit.then,
                seen=counts.get(str(index), 0),
            )
        )
    return checks


def _requester_check(
    policy: Policy, requester: Principal, target: Principal, breakglass: bool
) -> RequesterCheck:
    role = opening.opening_role(policy, breakglass=breakglass)
    groups = policy.roles.get(role, [])
    member_of = sorted(requester.groups & set(groups))
    reasons: list[str] = []
    may_open = True
    if member_of:
        reasons.append(f"holds role {role!r} (member of {', '.join(member_of)})")
    else:
        may_open = False
        reasons.append(
            f"does not hold role {role!r}: not a member of {', '.join(groups) or 'any group'}"
        )
    if requester.disabled:
        may_open = False
        reasons.append("is disabled in the directory")
    try:
        check_may_open(requester, target)
    except TwokeyError as exc:
        may_open = False
        reasons.append(exc.message)
    else:
        reasons.append("is not the target, nor its owner of record")
    return RequesterCheck(
        id=requester.id, name=requester.name, role=role, may_open=may_open, reasons=reasons
    )


def _able_in_words(able: int, needed: int) -> str:
    people = f"{able} {'person' if able == 1 else 'people'} in the directory"
    if able < needed:
        return (
            f"only {people} could approve it: it would wait until it expires. Add people to "
            "the role's groups, or lower the tier's approvals"
        )
    return f"{people} could approve it"


def _unchecked(target: Principal, live: Live | None) -> list[str]:
    if live is not None:
        return []
    unchecked = ["whether a configured connector can make this change"]
    if target.kind is PrincipalKind.NHI:
        unchecked.append("whether the owner of record is an active person")
    return [f"not checked without the directory and connectors: {' and '.join(unchecked)}"]


# ---- in words ---------------------------------------------------------------------------------


def render_explanation(explanation: Explanation) -> str:
    """The dry run as plain text for the terminal."""
    e = explanation
    lines = [
        f"Dry run: {e.action} ({e.action.label}) on {_who(e.target)}."
        + (" Break-glass." if e.breakglass else ""),
        "Nothing was created.",
        "",
    ]
    lines += _rules_in_words(e)
    if e.plan is not None:
        lines += _plan_in_words(e, e.plan)
    lines += _velocity_in_words(e.velocity)
    if e.requester is not None:
        verdict = "may open this request" if e.requester.may_open else "may NOT open this request"
        name = e.requester.name
        who = name if name == e.requester.id else f"{name} ({e.requester.id})"
        lines.append(f"Requester {who} {verdict}:")
        lines += [f"  - {reason}" for reason in e.requester.reasons]
    if e.connector is not None:
        lines.append(f"Connector that would make the change: {e.connector}")
    if e.tickets:
        lines.append(f"Ticket (checked when it opens): {e.tickets}")
    lines += [f"Note: {note}" for note in e.notes]
    lines.append("")
    lines += _outcome(e)
    return "\n".join(lines)


def _who(principal: Principal) -> str:
    kind = "a non-human identity" if principal.kind is PrincipalKind.NHI else "a person"
    name = (
        principal.name if principal.name == principal.id else f"{principal.name} ({principal.id})"
    )
    details = [kind]
    if principal.groups:
        details.append(f"groups: {', '.join(sorted(principal.groups))}")
    if principal.tags:
        details.append(f"tags: {', '.join(sorted(principal.tags))}")
    return f"{name}, {'; '.join(details)}"


def _rules_in_words(e: Explanation) -> list[str]:
    if e.breakglass:
        return ["Rules: skipped (break-glass uses its own tier)."]
    lines = ["Rules, top to bottom (first match wins):"]
    for rule in e.rules:
        if rule.matched:
            lines.append(f"  MATCH {rule.name} -> tier {rule.tier}: {'; '.join(rule.held)}")
        else:
            lines.append(f"  no    {rule.name} -> tier {rule.tier}: {'; '.join(rule.failed)}")
    if e.not_reached:
        lines.append(f"  (not reached: {', '.join(e.not_reached)})")
    return lines


def _plan_in_words(e: Explanation, plan: Plan) -> list[str]:
    label = f' "{plan.tier_label}"' if plan.tier_label and plan.tier_label != plan.tier else ""
    lines = [f"Tier: {plan.tier}{label}" + (", a privileged tier" if plan.privileged else "")]
    lines += [f"  because {reason}" for reason in plan.reasons]
    lines.append("Gates (all needed, each still valid, before the bot acts):")
    if plan.owner_confirmation:
        lines.append(f"  - owner confirmation by {_owner_in_words(e.target)}")
    else:
        lines.append("  - no owner confirmation" + (" (skipped by break-glass)" * e.breakglass))
    if plan.approvals_needed:
        approvals = f"{plan.approvals_needed} approval" + "s" * (plan.approvals_needed > 1)
        lines.append(
            f"  - {approvals} by role {plan.approver_role!r} "
            f"(groups: {', '.join(e.approver_groups) or 'none'}), each by a different person "
            "who is neither the requester nor the owner"
        )
        if e.approvers_able is not None:
            lines.append(f"    {_able_in_words(e.approvers_able, plan.approvals_needed)}")
    else:
        lines.append("  - no approvals" + (" (skipped by break-glass)" * e.breakglass))
    lines += _step_up_in_words(plan)
    lines.append(
        f"Timers: the request expires after {format_duration(plan.request_ttl)}; each "
        f"confirmation and approval is valid for {format_duration(plan.approval_ttl)}"
    )
    if plan.remind_after is not None:
        lines.append(f"  reminder once after {format_duration(plan.remind_after)}")
    if plan.escalate_after is not None:
        lines.append(
            f"  escalation after {format_duration(plan.escalate_after)} to role "
            f"{plan.escalate_to!r} (groups: {', '.join(e.escalation_groups) or 'none'})"
        )
    lines.append(f"Approval requests are posted to: {_channels(plan.approval_channels)}")
    if plan.alert_security:
        lines.append(f"Security is alerted: {_channels(plan.security_channels)}")
    else:
        lines.append("Security is not alerted.")
    if e.breakglass:
        lines.append("Break-glass opens a review item that stays open until security closes it.")
    return lines


def _step_up_in_words(plan: Plan) -> list[str]:
    lines = []
    if plan.approver_step_up and plan.approvals_needed:
        how = "; else ".join(
            Verifier(v).words.replace("owner", "approver") for v in plan.approver_step_up
        )
        lines.append(
            f"  - approver step-up: an approval counts once its approver passed {how}, "
            "before the approval expires"
        )
    if not plan.owner_step_up:
        return [*lines, "  - no owner step-up"]
    tried = "; else ".join(Verifier(v).words for v in plan.owner_step_up)
    return [
        *lines,
        f"  - owner step-up (a second channel): {tried}",
        f"    a pass counts for {format_duration(plan.step_up_ttl)}; a code lives "
        f"{format_duration(plan.code_ttl)} with {plan.code_attempts} tries; "
        f"{plan.step_up_max_failures} failed step-ups flag the account",
    ]


def _owner_in_words(target: Principal) -> str:
    if target.owner_of_record is None:
        return "nobody: the target has no owner of record"
    if target.kind is PrincipalKind.NHI:
        return f"{target.owner_of_record}, the owner of record of this non-human identity"
    return f"{target.owner_of_record}, the account's owner"


def _channels(channels: dict[str, str]) -> str:
    return ", ".join(f"{p} {c}" for p, c in sorted(channels.items())) or "(no channel configured)"


def _velocity_in_words(checks: list[VelocityCheck]) -> list[str]:
    if not checks:
        return ["Velocity: no limit applies to this action."]
    lines = ["Velocity:"]
    for check in checks:
        actions = ", ".join(check.actions) if check.actions else "any action"
        consequence = "refused" if check.then == "refuse" else "escalated to the strictest tier"
        state = f"reached: {consequence}" if check.reached else "under the limit"
        lines.append(
            f"  - {actions} per {check.per}: {check.seen} of {check.limit} "
            f"in {format_duration(check.window)} ({state})"
        )
    return lines


def _outcome(e: Explanation) -> list[str]:
    """The verdict last, in the words `open` would answer with."""
    if e.refusals:
        lines = []
        if len(e.refusals) > 1:
            count = len(e.refusals)
            lines.append(f"It would be refused for {count} reasons (open names the first):")
            lines += [f"  - {refusal}" for refusal in e.refusals]
        who = "The requester" if e.requester is None else e.requester.name
        lines.append(f"Outcome: REFUSED. {who} would be told: {e.refusals[0]}")
        return lines
    tier = e.plan.tier if e.plan else "?"
    if e.requester is None:
        role = "the break-glass role" if e.breakglass else "the requester role"
        return [
            f"Outcome: a request would open in tier {tier}, for a requester who holds {role} "
            "and is neither the target nor its owner of record."
        ]
    return [f"Outcome: a request would open in tier {tier}."]
