"""The narrow interfaces the service depends on, named after intents.

Adapters (Redis store, connectors, Slack/Teams notifiers) implement these; the service imports
only this module and the domain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, SecretStr

from app.domain.journal import JournalEntry
from app.domain.models import Action, AuditEvent, Principal, Request, RequestState
from app.domain.policy import Signals, VelocityLimit
from app.domain.tickets import Ticket

MEMBERS_MAX = 500
"""The most people ``Directory.members`` reads for one question (approvers of a request)."""


class Directory(Protocol):
    """Who is this person or NHI? Answers come from the identity provider of record."""

    async def find_by_email(self, email: str) -> list[Principal]:
        """Every principal with this verified email (0, 1 or several: callers refuse != 1)."""
        ...

    async def get(self, principal_id: str) -> Principal | None: ...

    async def find_nhi(self, name: str) -> Principal | None: ...

    async def search(self, text: str, limit: int = 20) -> list[Principal]:
        """For pickers: principals whose id, name or email contains ``text``."""
        ...

    async def members(self, groups: Sequence[str], limit: int = MEMBERS_MAX) -> list[Principal]:
        """The people in any of ``groups`` (named as the policy names groups: the connector's
        group key), each once, at most ``limit``; each with ``groups`` holding at least which
        of these they are in. Who may approve is found here, never by an empty search. A group
        the directory does not know has nobody; a directory that cannot answer raises
        Unavailable. Disabled people are returned like others: callers decide."""
        ...


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    UNKNOWN = "unknown"
    """A timeout or lost answer left it unclear whether the change happened: alert, never retry."""


ACT_BEFORE: ContextVar[float | None] = ContextVar("twokey_act_before", default=None)
"""The monotonic time (time.monotonic) by which a connector must have made its last change,
set by the service around each execution; None outside one. Connectors that work in a worker
thread (asyncio.to_thread copies it there) check it before each changing call, since a timeout
abandons the wait, not the thread: a change landing later would land after a sweeper declared
the execution interrupted, and the secret it made would reach no one."""


class ExecutionResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    outcome: Outcome
    detail: str = ""
    """What happened, in words, safe to show and audit (never a secret)."""
    secret: SecretStr | None = None
    """A one-time secret for the owner only: temporary password, access pass, new key."""
    secret_label: str = ""
    attention: str = ""
    """The change was made, but a person must still see to something (words, never a
    secret): security is alerted with them, so a completed change is not read as all well."""


class IdentityProvider(Protocol):
    """A connector that performs an identity change once both keys have turned."""

    name: str

    def supports(self, action: Action, target: Principal) -> bool: ...

    async def execute(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        """Perform the change; never raise for a provider refusal: return FAILED with words."""
        ...


class GateCode(StrEnum):
    """What a store gate script answered. The store maps the script's word to a member once
    (``RedisRequestStore._run``); everyone else compares members, never strings."""

    OK = "OK"
    NOOP = "NOOP"
    """Nothing to do: already done (``detail`` says what)."""
    NOTFOUND = "NOTFOUND"
    NOTHING = "NOTHING"
    EXISTS = "EXISTS"
    STALE = "STALE"
    """open: flags or velocity moved since they were read; evaluate again."""
    CONFLICT = "CONFLICT"
    """The request changed meanwhile (or the script said something this twokey does not know)."""
    EXPIRED = "EXPIRED"
    DECIDED = "DECIDED"
    LAPSED = "LAPSED"
    NOT_READY = "NOT_READY"
    NOT_FINISHED = "NOT_FINISHED"
    # refusals, each audited as `refused` by its script
    SOD = "SOD"
    ROLE = "ROLE"
    NOT_OWNER = "NOT_OWNER"
    NOT_REQUESTER = "NOT_REQUESTER"
    WRONG_PERSON = "WRONG_PERSON"
    """An approver's sign-in link signed in someone else (refuse_sign_in.lua)."""
    SIGNIN_REFUSED = "SIGNIN_REFUSED"
    """An approver's sign-in whose identity provider answer did not hold (a bad or forged
    ID token, another browser); ``detail`` says what did not hold."""
    # execution
    NOT_DURABLE = "NOT_DURABLE"
    """Claimed, but the claim could not be made durable in time: nothing may run."""
    LATE = "LATE"
    RESTORED = "RESTORED"
    FLAGGED = "FLAGGED"
    """claim: the account was flagged after the request opened; it was stopped, not run."""
    WITHDRAWN = "WITHDRAWN"
    """A gate stopped counting before the claim (its giver lost their standing)."""
    ALREADY_RAN = "ALREADY_RAN"
    """This replica ran it before and Redis offered it again: ended interrupted, not re-run."""
    # the owner's step-up (step_up.lua)
    WRONG = "WRONG"
    """A one-time code that does not match; ``detail`` is how many tries are left."""
    FAILED = "FAILED"
    """The step-up failed (code exhausted, timed out); ``detail`` says why."""
    LOCKED = "LOCKED"
    """Failed as often as the policy allows (the target is flagged): no step-up passes now."""
    NO_CODE = "NO_CODE"
    """No one-time code is live for this request (none sent, used, or run out)."""
    # the sweeper's tick
    REMIND = "REMIND"
    ESCALATE = "ESCALATE"
    INTERRUPTED = "INTERRUPTED"
    CLAIMABLE = "CLAIMABLE"

    @property
    def is_refusal(self) -> bool:
        """A refused attempt that is a security event (audited, counted per person)."""
        return self in _REFUSALS


_REFUSALS = frozenset(
    {
        GateCode.SOD,
        GateCode.ROLE,
        GateCode.NOT_OWNER,
        GateCode.NOT_REQUESTER,
        GateCode.WRONG_PERSON,
        GateCode.SIGNIN_REFUSED,
    }
)


class GateReply(BaseModel):
    """What a store gate script did: its code (OK, NOOP, EXPIRED, ...) and the request after."""

    model_config = ConfigDict(frozen=True)

    code: GateCode
    detail: str = ""
    request: Request | None = None


class Reservation(BaseModel):
    """A place held in a requester's velocity history for a request about to open."""

    model_config = ConfigDict(frozen=True)

    admitted: bool
    """False: a refusing per-requester limit is already reached, and nothing was held."""
    counts: dict[str, int]
    """The requester's earlier requests in each per-requester limit's window, by limit index
    (as ``Signals.requester_count``)."""


class PushOutcome(StrEnum):
    """How a push to the owner's enrolled device ended."""

    APPROVED = "approved"
    REJECTED = "rejected"
    """The person at the device said no: a failed step-up (and a fraud signal)."""
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    """No push could be sent or read (not enrolled, the IdP refused or is down): nothing
    passed, and nobody is blamed for it."""


class PushResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    outcome: PushOutcome
    detail: str = ""
    """Words safe to show and log (never a token)."""


@runtime_checkable
class PushVerifier(Protocol):
    """An identity provider that can push a verification to the owner's enrolled device and
    wait for the answer (the step-up verifier named ``verifier``, e.g. okta_push)."""

    verifier: str

    async def push_step_up(self, owner: Principal, request: Request, timeout_s: int) -> PushResult:
        """Send the push and wait (as the IdP documents) for an answer or ``timeout_s``."""
        ...


class ReauthLinks(Protocol):
    """Hands an approver a short-lived, single-use link to sign in again at the identity
    provider (the ``oidc_reauth`` approver step-up); the sign-in comes back to twokey's web
    server, which reports it to ``TwoKey.approver_signed_in``."""

    verifier: str

    async def link_for(self, request: Request, approver: Principal) -> str:
        """A new link bound to this request and approver (raises Unavailable if it cannot be
        stored)."""
        ...


class CodeSender(Protocol):
    """Sends a one-time step-up code to an owner's address of record (never to chat): a
    recovery email (app/mail.py) or an E.164 phone of record (app/sms.py)."""

    async def send_code(self, address: str, request: Request, code: str) -> None:
        """Deliver ``code`` or raise: the caller treats any error as "not sent". Neither the
        address nor the code may appear in what it raises or logs."""
        ...


class TicketSystem(Protocol):
    """Where help desk tickets live (ServiceNow, Jira Service Management): read a quoted ticket
    before a request opens and again before its change runs; write what happened back."""

    name: str
    """The system, in words (e.g. ServiceNow), for messages."""

    async def find(self, number: str) -> Ticket | None:
        """The ticket with this number, or None when there is none; raises when the system
        cannot answer (down, credentials refused, an answer it does not document)."""
        ...

    async def add_note(self, ticket: Ticket, text: str) -> None:
        """An internal note on the ticket (a work note, never seen by the caller); raises when
        it was not written."""
        ...

    async def set_state(self, ticket: Ticket, state: str) -> None:
        """Move the ticket to ``state`` (ServiceNow state value, Jira transition id); raises
        when it was not moved."""
        ...

    async def check(self) -> list[str]:
        """Read-only: what the credentials may do, one line each; raises when they cannot
        even read tickets."""
        ...


class RequestStore(Protocol):
    """Requests and their gates; each change is ONE atomic step together with its audit event."""

    def new_request_id(self, target_id: str) -> str: ...

    async def now(self) -> int:
        """Milliseconds since the epoch from the shared clock (Redis TIME)."""
        ...

    async def signals(
        self, target_id: str, requester_id: str, velocity: Sequence[VelocityLimit], now: int
    ) -> Signals:
        """The target's fraud flag and velocity counts (re-checked atomically by ``open``);
        per-requester counts come from ``reserve_requester``."""
        ...

    async def reserve_requester(
        self,
        requester_id: str,
        request_id: str,
        action: Action,
        velocity: Sequence[VelocityLimit],
    ) -> Reservation:
        """Hold the request's place in its requester's history, atomically against the
        per-requester limits; release it if the request does not open."""
        ...

    async def release_requester(
        self, requester_id: str, request_id: str, action: Action
    ) -> None: ...

    async def use_ticket(self, system: str, number: str, request_id: str, keep_ms: int) -> str:
        """Mark a ticket as backing ``request_id`` unless another request did first (atomic);
        returns the request id that holds it."""
        ...

    async def release_ticket(self, system: str, number: str, request_id: str) -> None:
        """Give back a ticket marked for a request that did not open (only its own mark)."""
        ...

    async def open(
        self,
        request: Request,
        signals: Signals,
        velocity: Sequence[VelocityLimit],
        *,
        via: str,
        role: str,
    ) -> GateReply: ...

    async def confirm_owner(self, request_id: str, actor: str, via: str) -> GateReply: ...

    async def reject_by_owner(
        self, request_id: str, actor: str, via: str, flag_window_s: int, target_id: str
    ) -> GateReply: ...

    async def start_step_up(
        self,
        request: Request,
        verifier: str,
        actor: str,
        via: str,
        *,
        code_digest: str = "",
        manager: str = "",
        flag_window_s: int,
    ) -> GateReply:
        """Start (or restart) the owner's step-up with ``verifier``; with ``code_digest`` a new
        one-time code replaces any earlier one, living ``plan.code_ttl``; with ``manager`` that
        person is the one who may attest. A code that ran out unused counts as a failed step-up
        first."""
        ...

    async def withdraw_unsent_code(
        self, request: Request, verifier: str, code_digest: str, *, flag_window_s: int
    ) -> GateReply:
        """The sender could not deliver the code stored as ``code_digest``: withdraw it, with
        its audit event, so it is no attempt and no failure and a new one may be asked for at
        once. OK once withdrawn; NOOP (stale) when that code is no longer the one stored.
        ``verifier`` "manager": the manager's card reached no chat; ``code_digest`` is then the
        question's start (``step_up_changed_at``), so only that very question is withdrawn."""
        ...

    async def record_push(
        self, request: Request, verifier: str, outcome: str, *, flag_window_s: int
    ) -> GateReply:
        """What a push the step-up started came to (a ``PushOutcome`` value): APPROVED passes
        the gate, REJECTED and TIMEOUT are failed step-ups, UNAVAILABLE ends it unpassed.
        NOOP when that push is no longer the one the request waits for."""
        ...

    async def verify_approver(
        self, request_id: str, approver: str, outcome: str, via: str
    ) -> GateReply:
        """An approver's step-up answered (a ``PushOutcome`` value): APPROVED makes their
        waiting approval count (from when it was given); anything else, or an answer after the
        approval's TTL (LATE), drops it."""
        ...

    async def refuse_sign_in(
        self, request_id: str, approver: str, code: GateCode, why: str, via: str
    ) -> GateReply:
        """A sign-in through an approver's link that does not count (WRONG_PERSON, or
        SIGNIN_REFUSED with ``why``): audited as a refused attempt; nothing else changes."""
        ...

    async def attest_step_up(
        self, request: Request, actor: str, via: str, confirmed: bool, *, flag_window_s: int
    ) -> GateReply:
        """The manager the step-up named answers; "no" is a failed step-up. Refused (audited)
        for anyone else, and for the requester or an approver of this request."""
        ...

    async def check_step_up_code(
        self,
        request: Request,
        actor: str,
        via: str,
        code_digests: Sequence[str],
        *,
        flag_window_s: int,
    ) -> GateReply:
        """Compare a typed code's digests (one per code key held: the current key, then the
        keys before a rotation) with the live one, in constant time, as one try: OK passes the
        step-up gate; WRONG, FAILED (tries used up) or LOCKED (target flagged) do not."""
        ...

    async def approve(
        self, request_id: str, actor: str, via: str, roles: Sequence[str]
    ) -> GateReply:
        """``roles``: every role the directory gives the actor; the script picks the one that
        may decide this request (tier approver role, or escalation role once escalated)."""
        ...

    async def deny(
        self, request_id: str, actor: str, via: str, roles: Sequence[str], reason: str
    ) -> GateReply: ...

    async def cancel(
        self, request_id: str, actor: str, via: str, roles: Sequence[str]
    ) -> GateReply:
        """The requester, or anyone holding a role that may decide the request."""
        ...

    async def claim(self, request_id: str, actor: str, lease_ms: int, token: str) -> GateReply:
        """OK: claimed and durable. NOT_DURABLE: claimed, but Redis could not make the claim
        durable in time, so nothing may run (record it failed)."""
        ...

    async def claim_lost(
        self, request: Request, token: str, outcome: str, detail: str, dispute_window_s: int
    ) -> GateReply:
        """The provider acted but the claim is gone or taken (Redis lost writes): end the
        request ``interrupted`` whatever state it shows, writing it back if it vanished."""
        ...

    async def audit_refused_open(
        self, target_id: str, actor: str, via: str, role: str, ticket: str, action: str, reason: str
    ) -> None:
        """A request refused before it existed (velocity, policy) is audited all the same."""
        ...

    async def note_refusal(self, actor: str, request_id: str, code: str, window_ms: int) -> int:
        """Count a refused gate attempt by ``actor``; how many fell within ``window_ms``."""
        ...

    async def withdraw_gates(
        self,
        request_id: str,
        approvers: Sequence[str],
        owner: bool,
        why: str,
        *,
        step_up: bool = False,
    ) -> GateReply:
        """Stop counting gates whose givers lost the standing to give them (disabled, role
        removed; ``step_up``: the manager who attested is disabled or no longer the owner's
        manager): each withdrawal audited, the request back to pending if it was ready."""
        ...

    async def record_result(
        self,
        request_id: str,
        token: str,
        state: RequestState,
        detail: str,
        reason: str,
        dispute_window_s: int,
    ) -> GateReply: ...

    async def annotate(
        self, request_id: str, kind: str, actor: str, reason: str, outcome: str
    ) -> GateReply:
        """Audit something that happened around a request without changing its state."""
        ...

    async def tick(self, request_id: str) -> GateReply: ...

    async def dispute(
        self, request_id: str, actor: str, via: str, flag_window_s: int, target_id: str
    ) -> GateReply: ...

    async def close_review(
        self, request_id: str, actor: str, via: str, note: str, *, by_operator: bool = False
    ) -> GateReply:
        """``by_operator``: closed from the CLI, audited as ``review_closed_by_operator``."""
        ...

    async def get(self, request_id: str) -> Request | None: ...

    async def due(self, shard: int, now: int, limit: int = 200) -> list[str]: ...

    shards: int

    async def open_requests(self) -> list[Request]: ...

    async def open_requests_for(self, principal_id: str, roles: Sequence[str]) -> list[Request]:
        """Open requests this person asked for or owns, or that a role they hold may decide
        (a superset: the caller filters); read through an index, never every open request."""
        ...

    async def open_reviews(self) -> list[Request]: ...


class MessageRef(BaseModel):
    """Where a card of a request was posted, so it can be updated when the request moves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    platform: str
    role: str
    """owner | approvers | approver-dm | requester | manager | security."""
    channel: str
    """Slack channel id, Teams conversation id, playground pane."""
    message_id: str
    """Slack ts, Teams activity id."""
    extra: dict[str, str] = {}
    """Platform details needed to update it (e.g. a Teams service URL)."""

    @property
    def name(self) -> str:
        return f"{self.platform}|{self.role}|{self.channel}"


class MessageLedger(Protocol):
    """What chat channels remember outside a request: where its messages went, what may
    happen only once (a delivery, a post, a thread reply), and how to reach a person again
    (a Teams conversation reference). Channels never touch Redis themselves: this port does."""

    async def remember(self, request_id: str, ref: MessageRef) -> None:
        """Raises Unavailable when it cannot be recorded."""
        ...

    async def messages_of(
        self, request_id: str, platform: str | None = None
    ) -> list[MessageRef]: ...

    async def claim_once(
        self, scope: str, key: str, keep_s: int, *, near: str | None = None
    ) -> bool:
        """True for the first caller with this scope and key within ``keep_s``; False after.
        ``near``: a request id whose gate scripts share the claim (app/delivery.py).
        Raises Unavailable when it cannot tell (callers then refuse rather than repeat)."""
        ...

    async def release(self, scope: str, key: str) -> None:
        """Give a claim back (the once-only work failed and may be tried again)."""
        ...

    async def remember_conversation(
        self, platform: str, person: str, reference: dict[str, str]
    ) -> None:
        """How to message ``person`` (a chat user id or directory id) 1:1 later."""
        ...

    async def conversation_of(self, platform: str, person: str) -> dict[str, str] | None: ...


class ExecutionJournal(Protocol):
    """What this replica ran, kept outside Redis (see app/domain/journal.py)."""

    def ran_before(self, request_id: str) -> JournalEntry | None: ...

    def unsettled(self) -> list[JournalEntry]: ...

    async def begin(self, request: Request, token: str) -> None:
        """Before the connector runs; raises when it cannot be written (then nothing runs)."""
        ...

    async def acted(
        self, request_id: str, token: str, outcome: str, detail: str, *, secret: bool = False
    ) -> None:
        """What the provider answered, and whether a one-time secret came back (never the
        secret), before Redis is asked to record it."""
        ...

    async def handed_over(self, request_id: str, token: str) -> None:
        """The secret was handed to its delivery (or its loss was told)."""
        ...

    async def settled(self, request_id: str, token: str) -> None: ...


class AuditExport(Protocol):
    """The audit trail as records, oldest first (for read-only views such as the playground)."""

    def export(self, since_ms: int | None = None) -> AsyncIterator[dict[str, Any]]: ...


class AuditLog(Protocol):
    async def events(self, since_ms: int | None = None) -> AsyncIterator[AuditEvent]: ...


class Notifier(Protocol):
    """What the service asks of every chat channel; implementations keep only message refs.

    Every method is best effort: a failure is logged and reported, never undoes a decision.
    """

    async def post_request(self, request: Request) -> None:
        """Send the approval card(s) and the owner's "did you ask for this?" message."""
        ...

    async def update_request(self, request: Request, note: str = "") -> None:
        """Refresh every card of this request to its stored truth."""
        ...

    async def notify_owner(self, request: Request, text: str) -> None: ...

    async def notify_requester(self, request: Request, text: str) -> None: ...

    async def notify_person(self, request: Request, principal_id: str, text: str) -> None:
        """A direct message to one person who is asked something about this request (the
        owner's manager for a step-up attestation)."""
        ...

    async def ask_manager(self, request: Request, manager_id: str) -> bool:
        """The owner's manager of record gets a card: did you confirm it with the owner by
        phone or in person? Yes / No buttons, kept and updated like the request's other cards
        (role "manager"); ``request`` is the one the step-up start returned. True when the card
        is in the manager's chat (posted now, or for this question by another replica): the
        owner is told to expect their call only then."""
        ...

    async def notify_approvers(self, request: Request, text: str) -> None:
        """Remind or escalate: a message to the approvers (or escalation group)."""
        ...

    async def deliver_secret(self, request: Request, secret: SecretStr, label: str) -> bool:
        """Hand a one-time secret to the owner only; True once delivered."""
        ...

    async def alert_security(self, request: Request | None, text: str) -> None: ...
