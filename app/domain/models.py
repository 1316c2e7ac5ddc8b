"""What a help desk request is, in the help desk's words.

A :class:`Request` is frozen at opening (who, what, ticket, and the :class:`Plan` the policy
decided) and then only its gate fields move. Times are integer milliseconds read from Redis.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

REQUEST_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
REQUEST_ID_PATTERN = re.compile(r"^TK-[0-9A-HJKMNP-TV-Z]{8}$")

PrincipalId = Annotated[str, StringConstraints(min_length=1, max_length=200)]

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")


def _is_e164(value: str) -> str:
    """Never echoes the value: a phone number is personal data and must not reach a log."""
    if not _E164.fullmatch(value):
        raise ValueError(
            "a phone of record is written in E.164: '+', the country code and the number, "
            "digits only, 8 to 16 characters (e.g. '+447700900123'; quote it in YAML)"
        )
    return value


PhoneNumber = Annotated[str, AfterValidator(_is_e164)]
"""A phone of record in E.164 (``+447700900123``): where step-up codes are texted."""


def phone_of_record(raw: object) -> str | None:
    """A directory's free-form phone attribute as E.164, or None when it is not one for sure
    (no country code, letters, extensions): a code is never texted to a guessed number."""
    if not isinstance(raw, str):
        return None
    phone = _PHONE_PUNCTUATION.sub("", raw)
    return phone if _E164.fullmatch(phone) else None


class Action(StrEnum):
    """The identity changes twokey guards."""

    RESET_MFA = "reset-mfa"
    RESET_PASSWORD = "reset-password"  # noqa: S105 - an action name, not a password
    UNLOCK = "unlock"
    REVOKE_SESSIONS = "revoke-sessions"
    ROTATE_SECRET = "rotate-secret"  # noqa: S105
    TEMPORARY_ACCESS = "temporary-access"

    @property
    def for_nhi(self) -> bool:
        """Only secret rotation applies to non-human identities; the rest to people."""
        return self is Action.ROTATE_SECRET

    @property
    def label(self) -> str:
        return _ACTION_LABELS[self]


_ACTION_LABELS = {
    Action.RESET_MFA: "reset MFA",
    Action.RESET_PASSWORD: "reset the password",
    Action.UNLOCK: "unlock the account",
    Action.REVOKE_SESSIONS: "sign out of every session",
    Action.ROTATE_SECRET: "rotate the secret",
    Action.TEMPORARY_ACCESS: "issue a temporary access pass",
}


class PrincipalKind(StrEnum):
    HUMAN = "human"
    NHI = "nhi"


class Principal(BaseModel):
    """A person or non-human identity as the directory knows it."""

    model_config = ConfigDict(frozen=True)

    id: PrincipalId
    kind: PrincipalKind = PrincipalKind.HUMAN
    display_name: str = ""
    email: str | None = None
    groups: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    owner_id: str | None = None
    """For an NHI, its human owner of record; they confirm requests on its behalf."""
    system: str | None = None
    """For an NHI, where it lives (aws, vault, ...): which connector rotates it."""
    disabled: bool = False
    recovery_email: str | None = None
    """An address of record outside the chat account (step-up one-time codes go there)."""
    manager_id: str | None = None
    """Their manager of record, as the directory says (asked to attest a step-up)."""
    phone: PhoneNumber | None = Field(default=None, repr=False)
    """Their phone of record (E.164), where step-up codes are texted (sms_code); kept out of
    reprs, so it reaches no log line by accident."""

    @property
    def owner_of_record(self) -> str | None:
        """Who answers "did you ask for this?": the person themself, or an NHI's owner."""
        return self.id if self.kind is PrincipalKind.HUMAN else self.owner_id

    @property
    def name(self) -> str:
        return self.display_name or self.id


class RequestState(StrEnum):
    PENDING = "pending"
    READY = "ready"
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    UNKNOWN = "unknown"
    """The provider was asked but its answer was lost: the change may or may not have happened."""
    INTERRUPTED = "interrupted"
    DENIED = "denied"
    REJECTED_BY_OWNER = "rejected_by_owner"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        return self in (RequestState.PENDING, RequestState.READY)

    @property
    def is_final(self) -> bool:
        return self not in (RequestState.PENDING, RequestState.READY, RequestState.EXECUTING)


_S = RequestState
TRANSITIONS: frozenset[tuple[RequestState, RequestState]] = frozenset(
    {
        (_S.PENDING, _S.READY),
        (_S.READY, _S.PENDING),  # an approval or the owner's confirmation lapsed
        (_S.READY, _S.EXECUTING),
        (_S.EXECUTING, _S.COMPLETED),
        (_S.EXECUTING, _S.FAILED),
        (_S.EXECUTING, _S.UNKNOWN),
        (_S.EXECUTING, _S.INTERRUPTED),
        # Redis lost the claim (restart from a snapshot, failover to a lagging replica) after the
        # provider acted: the request shows open again, but it ran; it ends interrupted.
        (_S.PENDING, _S.INTERRUPTED),
        (_S.READY, _S.INTERRUPTED),
    }
    | {
        (open_, final)
        for open_ in (_S.PENDING, _S.READY)
        for final in (_S.DENIED, _S.REJECTED_BY_OWNER, _S.EXPIRED, _S.CANCELLED)
    }
)
"""Every state change a request may make; the Lua scripts implement exactly these."""


MAY_HAVE_CHANGED = frozenset({_S.COMPLETED, _S.UNKNOWN, _S.INTERRUPTED})
"""Final states after which the account may have been changed: the owner can dispute them."""


def may_move(source: RequestState, target: RequestState) -> bool:
    """Whether a request may go from ``source`` to ``target`` (staying put is not a move)."""
    return (source, target) in TRANSITIONS


class Risk(StrEnum):
    """Why a request deserves a second look, as decided when it opened (shown on every card)."""

    BREAKGLASS = "breakglass"
    PRIVILEGED_ACCOUNT = "privileged_account"
    """The rule that matched the account (e.g. its admin group) chose a privileged tier."""
    FLAGGED = "flagged"
    """The account is flagged after a fraud signal ("this wasn't me")."""
    UNUSUAL_PACE = "unusual_pace"
    """A velocity limit was reached: many requests on this account or by this agent."""


class Plan(BaseModel):
    """What the policy decided when the request opened; frozen into it for its whole life."""

    model_config = ConfigDict(frozen=True)

    rule: str
    tier: str
    tier_label: str = ""
    privileged: bool = False
    owner_confirmation: bool = True
    approvals_needed: int = Field(default=1, ge=0, le=5)
    approver_role: str = "approver"
    approver_step_up: tuple[str, ...] = ()
    """Step-up verifiers an approver must pass before their approval counts (empty: none)."""
    request_ttl: int = Field(default=4 * 3600, ge=1)
    approval_ttl: int = Field(default=30 * 60, ge=1)
    alert_security: bool = False
    remind_after: int | None = None
    escalate_after: int | None = None
    escalate_to: str | None = None
    dm_approvers: bool = False
    approval_channels: dict[str, str] = Field(default_factory=dict)
    security_channels: dict[str, str] = Field(default_factory=dict)
    dispute_window: int = 24 * 3600
    auto_revoke_on_dispute: bool = False
    retention: int = 30 * 86400
    breakglass: bool = False
    reasons: tuple[str, ...] = ()
    """Why this plan: each rule and signal that shaped it, for `policy explain` and the card."""
    risks: tuple[Risk, ...] = ()
    """The risks behind the tier, for the risk statement on cards."""
    owner_step_up: tuple[str, ...] = ()
    """Step-up verifiers of the owner, in the policy's order (empty: no step-up gate)."""
    step_up_ttl: int = Field(default=30 * 60, ge=1)
    step_up_max_failures: int = Field(default=3, ge=1)
    code_ttl: int = Field(default=10 * 60, ge=1)
    code_attempts: int = Field(default=5, ge=1)
    push_timeout: int = Field(default=120, ge=1)


class Approval(BaseModel):
    model_config = ConfigDict(frozen=True)

    approver_id: str
    approved_at: int
    valid_until: int

    def valid_at(self, now: int) -> bool:
        return now < self.valid_until


class TicketDetails(BaseModel):
    """What the ticket system says the quoted ticket is about, read when the request opened, so
    approvers see what the agent was asked. Outside text: cleaned and cut when captured
    (app/domain/tickets.py ``details_of``) and escaped again by every face that shows it."""

    model_config = ConfigDict(frozen=True)

    system: str = ""
    """The ticket system's name (ServiceNow, Jira Service Management)."""
    summary: str = ""
    """ServiceNow ``short_description``; Jira ``summary``."""
    caller: str = ""
    """The caller's (Jira: reporter's) display name."""
    group: str = ""
    """The assignment group's name (empty where the system has none)."""
    unchecked: str = ""
    """Set when the ticket could not be checked at opening (``tickets.on_unavailable:
    strictest_tier``): why, in words. The request then opened in the fallback tier."""


class Request(BaseModel):
    """One help desk request: frozen facts plus the state of its gates."""

    id: str
    ticket: str
    action: Action
    target_id: str
    target_name: str
    target_kind: PrincipalKind
    target_system: str | None = None
    owner_id: str
    requester_id: str
    requester_name: str = ""
    reason_code: str
    note: str = ""
    justification: str = ""
    plan: Plan
    ticket_details: TicketDetails | None = None
    """The ticket as its system described it at opening; None: tickets are not looked up."""
    created_at: int
    expires_at: int

    state: RequestState = RequestState.PENDING
    owner_confirmed_at: int | None = None
    approvals: tuple[Approval, ...] = ()
    approvals_unverified: tuple[Approval, ...] = ()
    """Approvals given but waiting for their approver's step-up: they do not count yet."""
    decided_by: str | None = None
    decision_reason: str = ""
    decided_at: int | None = None
    claimed_at: int | None = None
    lease_until: int | None = None
    finished_at: int | None = None
    outcome_detail: str = ""
    gate_note: str = ""
    """Why a gate given earlier stopped counting (its giver was disabled or lost the role)."""
    reminded: bool = False
    escalated: bool = False
    review_open: bool = False
    reviewed_by: str | None = None
    dispute_until: int | None = None
    disputed_at: int | None = None
    events: int = 0
    """How many audit events this request has written (one per change)."""
    step_up_verifier: str = ""
    """The owner step-up under way or passed (a `Verifier` value); empty: none started."""
    step_up_manager: str = ""
    """The manager asked to attest (verifier ``manager``); empty otherwise."""
    step_up_at: int | None = None
    """When the owner's step-up passed (it counts for ``plan.step_up_ttl``)."""
    step_up_failures: int = 0
    step_up_changed_at: int | None = None
    """The latest step-up change (started, failed, passed), for `last_change_at`."""

    def dispute_open(self, now: int) -> bool:
        """Whether the owner may still say "This wasn't me" about a change that ran (or may have).

        An unknown or interrupted outcome may have changed the account as much as a completed one.
        """
        return (
            self.state in MAY_HAVE_CHANGED
            and self.disputed_at is None
            and self.dispute_until is not None
            and now < self.dispute_until
        )

    @property
    def owner_confirmation_valid_until(self) -> int | None:
        if self.owner_confirmed_at is None:
            return None
        return self.owner_confirmed_at + self.plan.approval_ttl * 1000

    def valid_approvals(self, now: int) -> tuple[Approval, ...]:
        return tuple(a for a in self.approvals if a.valid_at(now))

    def owner_gate_satisfied(self, now: int) -> bool:
        if not self.plan.owner_confirmation:
            return True
        until = self.owner_confirmation_valid_until
        return until is not None and now < until

    def step_up_gate_satisfied(self, now: int) -> bool:
        if not self.plan.owner_step_up:
            return True
        return self.step_up_at is not None and now < self.step_up_at + self.plan.step_up_ttl * 1000

    @property
    def step_up_locked(self) -> bool:
        """Failed as often as the policy allows: no step-up can pass on this request any more."""
        return bool(self.plan.owner_step_up) and (
            self.step_up_failures >= self.plan.step_up_max_failures
        )

    def approvals_gate_satisfied(self, now: int) -> bool:
        return len(self.valid_approvals(now)) >= self.plan.approvals_needed

    def gates_satisfied(self, now: int) -> bool:
        """Invariant 1 in Python: mirrors the Lua check that is authoritative."""
        return (
            now < self.expires_at
            and self.owner_gate_satisfied(now)
            and self.step_up_gate_satisfied(now)
            and self.approvals_gate_satisfied(now)
        )

    @property
    def last_change_at(self) -> int:
        """When its latest gate or state change happened, by the store's clock: "now" for a
        request a script just returned, without asking Redis for the time again."""
        moments = [
            self.created_at,
            self.owner_confirmed_at or 0,
            self.decided_at or 0,
            self.claimed_at or 0,
            self.finished_at or 0,
            self.disputed_at or 0,
            self.step_up_changed_at or 0,
            *(a.approved_at for a in (*self.approvals, *self.approvals_unverified)),
        ]
        return max(moments)

    def waiting_for(self, now: int) -> list[str]:
        """Plain words for what is still missing, for cards and `status`."""
        missing = []
        if not self.owner_gate_satisfied(now):
            missing.append("owner confirmation")
        if not self.step_up_gate_satisfied(now):
            missing.append("owner verification (step-up)")
        unverified = [a for a in self.approvals_unverified if a.valid_at(now)]
        short = self.plan.approvals_needed - len(self.valid_approvals(now)) - len(unverified)
        if short > 0:
            missing.append(f"{short} approval" + ("s" if short > 1 else ""))
        if unverified:
            missing.append(
                "the approver's verification"
                if len(unverified) == 1
                else f"{len(unverified)} approvers' verification"
            )
        return missing

    def involves(self, principal_id: str) -> bool:
        return principal_id in (self.requester_id, self.target_id, self.owner_id) or any(
            a.approver_id == principal_id for a in (*self.approvals, *self.approvals_unverified)
        )


class AuditEvent(BaseModel):
    """One line of the audit trail, as written by the store in the same step as the change."""

    model_config = ConfigDict(extra="allow")

    seq: int
    rid: str
    kind: str
    at: int
    actor: str = ""
    role: str = ""
    ticket: str = ""
    action: str = ""
    target: str = ""
    tier: str = ""
    from_state: str = Field(default="", alias="from")
    to_state: str = Field(default="", alias="to")
    reason: str = ""
    outcome: str = ""


class ChatUser(BaseModel):
    """A chat account as the platform describes it; resolved to a principal before use."""

    model_config = ConfigDict(frozen=True)

    platform: str
    user_id: str
    team_id: str = ""
    email: str | None = None
    email_verified: bool = True
    display_name: str = ""
    is_bot: bool = False
    is_guest: bool = False
    deleted: bool = False
