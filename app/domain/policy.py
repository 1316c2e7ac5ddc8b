"""The policy: which tier a request falls in and what that tier requires.

Evaluated once, when a request opens; the resulting :class:`Plan` is frozen into the request so
a later policy change never alters a request in flight. Rules match top to bottom, first match
wins; fraud flags and velocity limits can only make a plan stricter.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.domain.durations import Duration, format_duration
from app.domain.errors import BadInput, NotAllowed, VelocityLimited
from app.domain.models import Action, Plan, Principal, PrincipalKind, Risk
from app.domain.stepup import (
    StepUp,
    StepUpSettings,
    Verifier,
    choose,
    device_problems,
    oidc_reference_problems,
    owner_problems,
)
from app.domain.tickets import TicketSettings, ticket_tier_problems

_Strict = ConfigDict(extra="forbid", frozen=True)

Loc = tuple[str | int, ...]
"""Where in the policy a setting lives, e.g. ``("rules", 2, "tier")``."""

PLATFORMS = ("slack", "teams")


class Tier(BaseModel):
    """What a risk tier requires before the bot may act."""

    model_config = _Strict

    label: str = ""
    privileged: bool = False
    owner_confirmation: bool = True
    approvals: int = Field(default=1, ge=0, le=5)
    approver_role: str = "approver"
    request_ttl: Duration = 4 * 3600
    approval_ttl: Duration = 30 * 60
    alert_security: bool = False
    remind_after: Duration | None = None
    escalate_after: Duration | None = None
    escalate_to: str | None = None
    dm_approvers: bool = False
    step_up: StepUp | None = None
    """Step-up verification of the owner before their key counts (docs/policy.md)."""

    @model_validator(mode="after")
    def _gates_and_timers_make_sense(self) -> Tier:
        problems = []
        if self.escalate_after is not None and not self.escalate_to:
            problems.append("escalate_after needs escalate_to (the role to escalate to)")
        if self.approvals == 0 and not self.owner_confirmation:
            problems.append("a tier must require owner confirmation or at least one approval")
        # A timer at or past the request's end would never fire: almost surely a typo.
        for name in ("remind_after", "escalate_after"):
            after = getattr(self, name)
            if after is not None and after >= self.request_ttl:
                problems.append(
                    f"{name} ({format_duration(after)}) must be shorter than request_ttl "
                    f"({format_duration(self.request_ttl)}), or it would never happen"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def demands_at_least(self, other: Tier) -> bool:
        """Every gate ``other`` requires, this tier requires too."""
        return (
            self.approvals >= other.approvals
            and (self.owner_confirmation or not other.owner_confirmation)
            and (self.steps_up or not other.steps_up)
        )

    @property
    def steps_up(self) -> bool:
        return self.step_up is not None and self.step_up.any


class Match(BaseModel):
    """Conditions of a rule; all given ones must hold (an empty match always holds)."""

    model_config = _Strict

    actions: list[Action] | None = None
    target_kind: PrincipalKind | None = None
    target_groups: list[str] | None = None
    """Any of these directory groups."""
    target_tags: list[str] | None = None
    """Any of these NHI tags (e.g. production)."""
    flagged: bool | None = None

    def holds(self, action: Action, target: Principal, flagged: bool) -> bool:
        return all(held for held, _ in self.check(action, target, flagged))

    def check(self, action: Action, target: Principal, flagged: bool) -> list[tuple[bool, str]]:
        """Each condition with whether it holds and why, in words (for `policy explain`)."""
        results: list[tuple[bool, str]] = []
        if self.actions is not None:
            held = action in self.actions
            results.append((held, f"action {action} is {_is(held)}one of {_listed(self.actions)}"))
        if self.target_kind is not None:
            held = target.kind is self.target_kind
            results.append((held, f"target is {_is(held)}{_kind_words(self.target_kind)}"))
        if self.target_groups is not None:
            shared = sorted(target.groups & set(self.target_groups))
            held = bool(shared)
            results.append(
                (
                    held,
                    f"target is in group {_listed(shared)}"
                    if held
                    else f"target is in none of the groups {_listed(self.target_groups)}",
                )
            )
        if self.target_tags is not None:
            shared = sorted(target.tags & set(self.target_tags))
            held = bool(shared)
            results.append(
                (
                    held,
                    f"target is tagged {_listed(shared)}"
                    if held
                    else f"target has none of the tags {_listed(self.target_tags)}",
                )
            )
        if self.flagged is not None:
            held = self.flagged == flagged
            results.append((held, f"target is {_is(flagged)}flagged after a fraud signal"))
        return results


def _is(held: bool) -> str:
    return "" if held else "not "


def _listed(names: list[str] | list[Action]) -> str:
    return ", ".join(str(n) for n in names) or "(none)"


def _kind_words(kind: PrincipalKind) -> str:
    return "a non-human identity (NHI)" if kind is PrincipalKind.NHI else "a person"


class Rule(BaseModel):
    model_config = _Strict

    name: str = Field(min_length=1, max_length=64)
    when: Match = Field(default_factory=Match)
    tier: str


class VelocityLimit(BaseModel):
    """E.g. at most 2 MFA resets of one person per 24 h; then refuse or escalate."""

    model_config = _Strict

    per: Literal["target", "requester"]
    actions: list[Action] | None = None
    limit: int = Field(ge=1, le=10_000)
    window: Duration
    then: Literal["refuse", "escalate"] = "refuse"

    def applies_to(self, action: Action) -> bool:
        return self.actions is None or action in self.actions


class Channels(BaseModel):
    """Where approval cards and security alerts go, per platform (channel/conversation ids)."""

    model_config = _Strict

    approvals: dict[str, str] = Field(default_factory=dict)
    security: dict[str, str] = Field(default_factory=dict)

    @field_validator("approvals", "security")
    @classmethod
    def _known_platforms(cls, value: dict[str, str]) -> dict[str, str]:
        for platform in value:
            if platform not in PLATFORMS:
                raise ValueError(
                    f"unknown platform {platform!r}: give channel ids per platform, "
                    f"as {' or '.join(PLATFORMS)}"
                )
        return value


class RefusalAlert(BaseModel):
    """Alert security when one person is refused this often (self-approval, answering for the
    owner, approving without the role): probing looks like this."""

    model_config = _Strict

    count: int = Field(default=3, ge=1, le=1000)
    window: Duration = 10 * 60


class Fraud(BaseModel):
    model_config = _Strict

    flag_window: Duration = 7 * 86400
    flagged_tier: str | None = None
    """Tier forced on any request whose target is flagged; the strictest by default."""
    refusals: RefusalAlert = Field(default_factory=RefusalAlert)
    step_up: list[Verifier] = Field(default_factory=list, max_length=5)
    """Owner step-up for a flagged target whose tier names none (tried in order)."""

    @field_validator("step_up")
    @classmethod
    def _no_push_for_a_flagged_reset(cls, value: list[Verifier]) -> list[Verifier]:
        if len(set(value)) != len(value):
            raise ValueError("name each verifier once; the list is tried in order")
        problems = owner_problems(value, "fraud.step_up")
        problems += device_problems(value, True, "fraud.step_up")
        if problems:
            raise ValueError("; ".join(problems))
        return value


class Disputes(BaseModel):
    model_config = _Strict

    window: Duration = 24 * 3600
    auto_revoke_sessions: bool = True


class Breakglass(BaseModel):
    """The emergency path: named roles, mandatory justification, always alerted and reviewed."""

    model_config = _Strict

    role: str
    tier: str
    skip: list[Literal["owner_confirmation", "approvals", "step_up"]] = Field(default_factory=list)
    min_justification: int = Field(default=20, ge=1, le=500)


class Policy(BaseModel):
    model_config = _Strict

    version: Literal[1] = 1
    ticket_pattern: str = r"^[A-Z][A-Z0-9]{1,9}-\d{1,10}$"
    reason_codes: list[str] = Field(min_length=1)
    roles: dict[str, list[str]] = Field(min_length=1)
    """Role name -> directory groups whose members hold it."""
    requester_role: str = "helpdesk"
    tiers: dict[str, Tier] = Field(min_length=1)
    rules: list[Rule] = Field(min_length=1)
    channels: Channels = Field(default_factory=Channels)
    velocity: list[VelocityLimit] = Field(default_factory=list)
    fraud: Fraud = Field(default_factory=Fraud)
    disputes: Disputes = Field(default_factory=Disputes)
    breakglass: Breakglass | None = None
    step_up: StepUpSettings = Field(default_factory=StepUpSettings)
    tickets: TicketSettings = Field(default_factory=TicketSettings)
    """Whether quoted tickets are looked up in a ticket system before a request opens."""
    retention: Duration = 30 * 86400
    connectors: list[dict[str, Any]] = Field(default_factory=list)
    """Identity-provider connectors; validated by app.connectors, passed through untouched."""

    @field_validator("ticket_pattern")
    @classmethod
    def _ticket_pattern_compiles(cls, value: str) -> str:
        try:
            ticket_regex(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("reason_codes")
    @classmethod
    def _reason_codes_are_slugs(cls, value: list[str]) -> list[str]:
        for code in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", code):
                raise ValueError(f"reason code {code!r} must be lower-case letters, digits, '-'")
        return value

    @model_validator(mode="after")
    def _names_resolve(self) -> Policy:
        problems = reference_problems(self.model_dump())
        if problems:
            raise ValidationError.from_exception_data(
                "Policy",
                [
                    InitErrorDetails(
                        type=PydanticCustomError(REFERENCE_ERROR, "{problem}", {"problem": text}),
                        loc=loc,
                        input=None,
                    )
                    for loc, text in problems
                ],
            )
        return self

    # ---- questions the service asks -------------------------------------------------------

    def holds_role(self, principal: Principal, role: str) -> bool:
        return bool(principal.groups & set(self.roles.get(role, ())))

    def could_approve(
        self, principal: Principal, roles: Iterable[str], parties: Collection[str | None]
    ) -> bool:
        """THE rule for who may approve: an enabled person, none of the ``parties`` (requester,
        account, owner), holding one of ``roles``. The gate script enforces it again."""
        if principal.kind is not PrincipalKind.HUMAN or principal.disabled:
            return False
        if principal.id in parties:
            return False
        return any(self.holds_role(principal, role) for role in roles)

    def groups_of(self, roles: Iterable[str]) -> list[str]:
        """The directory groups whose members hold any of ``roles``."""
        return sorted({group for role in roles for group in self.roles.get(role, ())})

    def check_ticket(self, ticket: str) -> None:
        if not ticket_regex(self.ticket_pattern).fullmatch(ticket):
            raise BadInput(
                f"Ticket {ticket!r} does not look like a ticket id here "
                f"(expected something matching {self.ticket_pattern})."
            )

    def check_reason(self, reason_code: str) -> None:
        if reason_code not in self.reason_codes:
            raise BadInput(
                f"Reason code {reason_code!r} is not one of: {', '.join(self.reason_codes)}."
            )

    @property
    def strictest_tier(self) -> str:
        """The flagged tier if named, else the tier demanding the most approvals.

        Validation guarantees it demands at least what every other tier demands, so a fraud
        flag or a velocity escalation can only add gates, never remove one.
        """
        return _strictest_of(self.tiers, self.fraud.flagged_tier)


@functools.lru_cache(maxsize=16)
def ticket_regex(pattern: str) -> re.Pattern[str]:
    """A policy's ticket pattern, compiled ASCII-only: Python's ``\\d`` and ``\\w`` otherwise
    accept any Unicode digit or letter, so ``INC-１２３４`` or ``INC-١٢٣٤`` would pass as a ticket
    id that no ticketing system has and that looks like a real one to a reviewer."""
    return re.compile(pattern, re.ASCII)


def _strictest_of(tiers: Mapping[str, Tier], flagged_tier: str | None) -> str:
    if flagged_tier:
        return flagged_tier
    return max(
        tiers, key=lambda n: (tiers[n].approvals, tiers[n].owner_confirmation, tiers[n].steps_up)
    )


REFERENCE_ERROR = "policy_reference"
"""Error type of the cross-reference problems below, so a loader can tell them apart."""


def reference_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Names one part of the policy uses that another part must define, with where they are.

    Works on the raw mapping as read from the file (tolerating parts that are malformed,
    which field validation reports) so a policy file's every mistake is found in one pass.
    """
    tiers = _mapping(data.get("tiers"))
    roles = _mapping(data.get("roles"))
    problems = _rule_problems(data.get("rules"), tiers)
    problems += _role_problems(data, tiers, roles)
    problems += _tier_name_problems(data, tiers)
    problems += _strictest_problems(data, tiers)
    problems += _lost_reason_problems(data)
    problems += oidc_reference_problems(data)
    problems += ticket_tier_problems(data, tiers)
    problems += _ticket_fallback_problems(data, tiers)
    return problems


def _ticket_fallback_problems(
    data: Mapping[str, Any], tiers: Mapping[str, Any] | None
) -> list[tuple[Loc, str]]:
    """``tickets.fallback_tier`` opens requests whose ticket nobody could check: it must demand
    at least the gates of every tier (what "strictest" means here), or an outage would help."""
    section = _mapping(data.get("tickets")) or {}
    fallback = section.get("fallback_tier")
    if not isinstance(fallback, str) or tiers is None or fallback not in tiers:
        return []  # unset, or an unknown name (reported by ticket_tier_problems)
    valid: dict[str, Tier] = {}
    for name, raw in tiers.items():
        try:
            valid[str(name)] = Tier.model_validate(raw)
        except ValidationError:
            continue  # reported by field validation
    chosen = valid.get(fallback)
    if chosen is None:
        return []
    stricter = [n for n, t in valid.items() if not chosen.demands_at_least(t)]
    if not stricter:
        return []
    which = f"tier{'s' * (len(stricter) > 1)} {_listed(stricter)}"
    return [
        (
            ("tickets", "fallback_tier"),
            f"tier {fallback!r} opens requests whose ticket could not be checked, so it must "
            f"demand at least the gates of every tier, but {which} asks for more (more "
            "approvals, owner confirmation, or a step-up): name your strictest tier",
        )
    ]


def _lost_reason_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """step_up.device_lost_reasons must be reason codes the policy has, or a typo would let a
    push go to a device the reason says is lost."""
    codes = data.get("reason_codes")
    step_up = _mapping(data.get("step_up")) or {}
    lost = step_up.get("device_lost_reasons")
    if not isinstance(codes, list) or not isinstance(lost, list):
        return []
    if lost == StepUpSettings.model_fields["device_lost_reasons"].get_default(
        call_default_factory=True
    ):
        return []  # the default, lost-device, matters only where that reason code exists
    return [
        (
            ("step_up", "device_lost_reasons", index),
            f"unknown reason code {code!r}; reason codes: {', '.join(map(str, codes))}",
        )
        for index, code in enumerate(lost)
        if isinstance(code, str) and code not in codes
    ]


def _mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _defined(names: Mapping[str, Any]) -> str:
    return ", ".join(sorted(str(n) for n in names)) or "none"


def _rule_problems(rules: object, tiers: Mapping[str, Any] | None) -> list[tuple[Loc, str]]:
    if not isinstance(rules, list) or not rules:
        return []
    problems: list[tuple[Loc, str]] = []
    first_use: dict[str, int] = {}
    for index, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            continue
        name, tier = rule.get("name"), rule.get("tier")
        if isinstance(name, str):
            if name in first_use:
                problems.append(
                    (
                        ("rules", index, "name"),
                        f"rule name {name!r} is already used by rules.{first_use[name]}; "
                        "give each rule its own name",
                    )
                )
            first_use.setdefault(name, index)
        if tiers is not None and isinstance(tier, str) and tier not in tiers:
            problems.append(
                (
                    ("rules", index, "tier"),
                    f"unknown tier {tier!r}; tiers defined: {_defined(tiers)}",
                )
            )
    last = len(rules) - 1
    if isinstance(rules[last], Mapping) and not _matches_everything(rules[last].get("when")):
        where: Loc = ("rules", last, "when")
        problems.append(
            (
                where,
                "the last rule must match everything (leave out `when`), so every request "
                "gets a tier; add a final rule such as `- {name: default, tier: standard}`",
            )
        )
    return problems


def _matches_everything(when: object) -> bool:
    return when is None or (isinstance(when, Mapping) and all(v is None for v in when.values()))


def _role_problems(
    data: Mapping[str, Any],
    tiers: Mapping[str, Any] | None,
    roles: Mapping[str, Any] | None,
) -> list[tuple[Loc, str]]:
    if roles is None:
        return []
    problems: list[tuple[Loc, str]] = []

    defined = f"roles defined: {_defined(roles)}"

    def check(loc: Loc, role: object, default_note: str = "") -> None:
        if isinstance(role, str) and role not in roles:
            problems.append((loc, f"unknown role {role!r}{default_note}; {defined}"))

    requester_role = data.get("requester_role", Policy.model_fields["requester_role"].default)
    note = "" if "requester_role" in data else " (the default requester_role)"
    check(("requester_role",), requester_role, note)
    for name, tier in (tiers or {}).items():
        if not isinstance(tier, Mapping):
            continue
        if tier.get("approvals", 1) != 0:  # with no approvals the role is never asked
            default = Tier.model_fields["approver_role"].default
            note = "" if "approver_role" in tier else " (the default approver_role)"
            check(("tiers", name, "approver_role"), tier.get("approver_role", default), note)
        check(("tiers", name, "escalate_to"), tier.get("escalate_to"))
    breakglass = _mapping(data.get("breakglass"))
    if breakglass is not None:
        check(("breakglass", "role"), breakglass.get("role"))
    return problems


def _tier_name_problems(
    data: Mapping[str, Any], tiers: Mapping[str, Any] | None
) -> list[tuple[Loc, str]]:
    if tiers is None:
        return []
    problems: list[tuple[Loc, str]] = []
    for section in ("fraud", "breakglass"):
        part = _mapping(data.get(section))
        field = "flagged_tier" if section == "fraud" else "tier"
        named = part.get(field) if part is not None else None
        if isinstance(named, str) and named not in tiers:
            problems.append(
                ((section, field), f"unknown tier {named!r}; tiers defined: {_defined(tiers)}")
            )
    return problems


def _strictest_problems(
    data: Mapping[str, Any], tiers: Mapping[str, Any] | None
) -> list[tuple[Loc, str]]:
    """The tier forced on flagged targets and escalations must demand at least every gate."""
    if tiers is None:
        return []
    valid: dict[str, Tier] = {}
    for name, raw in tiers.items():
        try:
            valid[str(name)] = Tier.model_validate(raw)
        except ValidationError:
            continue  # reported by field validation
    fraud = _mapping(data.get("fraud")) or {}
    flagged_tier = fraud.get("flagged_tier")
    if flagged_tier is not None and not (isinstance(flagged_tier, str) and flagged_tier in valid):
        return []  # a wrong or unknown name is reported elsewhere
    if not valid:
        return []
    strictest = _strictest_of(valid, flagged_tier)
    stricter = [n for n, t in valid.items() if not valid[strictest].demands_at_least(t)]
    if not stricter:
        return []
    which = f"tier{'s' * (len(stricter) > 1)} {_listed(stricter)}"
    if flagged_tier is not None:
        return [
            (
                ("fraud", "flagged_tier"),
                f"tier {strictest!r} is used for flagged targets and escalated requests, so it "
                f"must demand at least the gates of every tier, but {which} "
                "asks for more (more approvals, owner confirmation, or a step-up)",
            )
        ]
    return [
        (
            ("tiers", strictest),
            f"flagged targets and escalated requests get the tier with the most approvals, "
            f"{strictest!r}, but it skips owner confirmation or step-up, which {which} asks "
            "for: require it there, or name a stricter tier in fraud.flagged_tier",
        )
    ]


class Signals(BaseModel):
    """What the store knows about the target and requester when the request opens."""

    model_config = ConfigDict(frozen=True)

    target_flagged: bool = False
    target_count: dict[str, int] = Field(default_factory=dict)
    """Requests on this target within each velocity window, keyed by limit index."""
    requester_count: dict[str, int] = Field(default_factory=dict)


def evaluate(
    policy: Policy,
    action: Action,
    target: Principal,
    signals: Signals,
    *,
    breakglass: bool = False,
    reason_code: str = "",
    ticket_unchecked: bool = False,
) -> Plan:
    """Decide the tier and gates of a new request, with the reasons, or refuse it.

    ``ticket_unchecked``: the ticket system could not answer and the policy opens such a
    request in ``tickets.fallback_tier`` (validated to demand at least every tier's gates)."""
    reasons: list[str] = []
    if breakglass:
        if policy.breakglass is None:
            raise NotAllowed("Break-glass is not enabled in this policy.")
        rule_name, tier_name = "breakglass", policy.breakglass.tier
        reasons.append(f"break-glass: tier {tier_name}")
    else:
        rule = next(r for r in policy.rules if r.when.holds(action, target, signals.target_flagged))
        rule_name, tier_name = rule.name, rule.tier
        reasons.append(f"rule {rule.name!r} matched: tier {tier_name}")
    if signals.target_flagged:
        tier_name = policy.strictest_tier
        reasons.append(f"target is flagged after a fraud signal: tier {tier_name}")
    escalate = _apply_velocity(policy, action, signals, reasons)
    if escalate and not breakglass:
        tier_name = policy.strictest_tier
        reasons.append(f"velocity limit reached: escalated to tier {tier_name}")
    fallback = policy.tickets.fallback_tier
    if ticket_unchecked and fallback and not breakglass:
        tier_name = fallback
        reasons.append(f"the ticket could not be checked: tier {tier_name}")
    elif ticket_unchecked:
        reasons.append("the ticket could not be checked (break-glass keeps its tier)")
    tier = policy.tiers[tier_name]
    risks = _risks(policy, rule_name, breakglass, signals.target_flagged, escalate)
    owner_confirmation, approvals = tier.owner_confirmation, tier.approvals
    if breakglass and policy.breakglass is not None:
        if "owner_confirmation" in policy.breakglass.skip:
            owner_confirmation = False
        if "approvals" in policy.breakglass.skip:
            approvals = 0
    step_up = _owner_step_up(policy, tier, action, reason_code, signals.target_flagged)
    skips = policy.breakglass.skip if breakglass and policy.breakglass is not None else []
    if step_up and ("step_up" in skips or "owner_confirmation" in skips):
        step_up = ()
        reasons.append("break-glass: no owner step-up")
    elif step_up:
        reasons.append(f"owner step-up: {', '.join(step_up)}")
    return Plan(
        rule=rule_name,
        tier=tier_name,
        tier_label=tier.label or tier_name,
        privileged=tier.privileged,
        owner_confirmation=owner_confirmation,
        approvals_needed=approvals,
        approver_role=tier.approver_role,
        request_ttl=tier.request_ttl,
        approval_ttl=tier.approval_ttl,
        alert_security=tier.alert_security
        or breakglass
        or signals.target_flagged
        or escalate
        or ticket_unchecked,
        remind_after=tier.remind_after,
        escalate_after=tier.escalate_after,
        escalate_to=tier.escalate_to,
        dm_approvers=tier.dm_approvers,
        approval_channels=dict(policy.channels.approvals),
        security_channels=dict(policy.channels.security),
        dispute_window=policy.disputes.window,
        auto_revoke_on_dispute=policy.disputes.auto_revoke_sessions,
        retention=policy.retention,
        breakglass=breakglass,
        reasons=tuple(reasons),
        risks=risks,
        owner_step_up=step_up,
        approver_step_up=tuple(v.value for v in tier.step_up.approver) if tier.step_up else (),
        step_up_ttl=(tier.step_up.ttl if tier.step_up else None) or tier.approval_ttl,
        step_up_max_failures=policy.step_up.max_failures,
        code_ttl=policy.step_up.code_ttl,
        code_attempts=policy.step_up.code_attempts,
        push_timeout=policy.step_up.push_timeout,
    )


def _owner_step_up(
    policy: Policy, tier: Tier, action: Action, reason_code: str, flagged: bool
) -> tuple[str, ...]:
    """The verifiers this request's owner step-up may use, in order (empty: none needed)."""
    listed = tier.step_up.for_action(action) if tier.step_up is not None else ()
    if flagged and not listed:
        listed = tuple(policy.fraud.step_up)
    lost = policy.step_up.device_lost_reasons
    return tuple(v.value for v in choose(listed, action, reason_code, lost))


def _risks(
    policy: Policy, rule_name: str, breakglass: bool, flagged: bool, escalated: bool
) -> tuple[Risk, ...]:
    """Why this request is risky, as the cards must say it: from why its tier was chosen."""
    risks: list[Risk] = []
    if breakglass:
        risks.append(Risk.BREAKGLASS)
    else:
        matched = next((r for r in policy.rules if r.name == rule_name), None)
        about_the_account = matched is not None and not matched.when.flagged
        if about_the_account and matched is not None and policy.tiers[matched.tier].privileged:
            risks.append(Risk.PRIVILEGED_ACCOUNT)
    if flagged:
        risks.append(Risk.FLAGGED)
    if escalated and not breakglass:
        risks.append(Risk.UNUSUAL_PACE)
    return tuple(risks)


def _apply_velocity(policy: Policy, action: Action, signals: Signals, reasons: list[str]) -> bool:
    """Refuse (raise) or report whether any velocity limit asks to escalate."""
    escalate = False
    for index, limit in enumerate(policy.velocity):
        if not limit.applies_to(action):
            continue
        counts = signals.target_count if limit.per == "target" else signals.requester_count
        seen = counts.get(str(index), 0)
        if seen < limit.limit:
            continue
        who = "this account" if limit.per == "target" else "you"
        if limit.then == "refuse":
            raise VelocityLimited(
                f"Velocity limit: {seen} requests for {who} in the last window "
                f"(limit {limit.limit}). Ask security to review before trying again."
            )
        escalate = True
        reasons.append(f"velocity limit #{index} ({limit.per}) reached: {seen}/{limit.limit}")
    return escalate
