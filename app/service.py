"""The use cases of twokey, once, for every channel.

Slack, Teams and the playground parse their payloads, call ONE method here and render what it
returns; the flow itself (who may do what, when the bot acts, whom to tell) lives only here.
Every state change happens inside the store in one atomic script with its audit event; this
layer decides who is asking, asks the store, then tells people. Telling people is best effort:
a failed message never undoes or repeats a decision.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from app.domain import messages as say
from app.domain import opening, sod
from app.domain.errors import (
    AlreadyDecided,
    BadInput,
    Conflict,
    CredentialsRefused,
    Expired,
    IdentityUnsure,
    NotAllowed,
    NotFound,
    SeparationOfDuties,
    TrailDamaged,
    TwokeyError,
    Unavailable,
    VelocityLimited,
)
from app.domain.forms import (
    BreakglassForm,
    DenyForm,
    OpenForm,
    clean_text,
    human_error,
    parse_request_id,
)
from app.domain.journal import JournalEntry, MemoryJournal
from app.domain.messages import DIRECTORY_DOWN as DIRECTORY_DOWN
from app.domain.messages import REVIEWER_ROLE, SYSTEM
from app.domain.models import (
    MAY_HAVE_CHANGED,
    Action,
    ChatUser,
    Plan,
    Principal,
    PrincipalKind,
    Request,
    RequestState,
    TicketDetails,
)
from app.domain.policy import Policy, evaluate
from app.domain.stepup import (
    CODE_DIGITS,
    Verifier,
    choose,
    code_digest,
    masked_email,
    masked_phone,
    same_person,
)
from app.domain.tickets import (
    Ticket,
    details_of,
    ticket_changed,
    ticket_gone,
    ticket_in_use,
    ticket_people_gone,
    ticket_problem,
    ticket_unreadable,
    unchecked_details,
)
from app.domain.words import when as when
from app.names import NameBook
from app.ports import (
    ACT_BEFORE,
    CodeSender,
    Directory,
    ExecutionJournal,
    ExecutionResult,
    GateCode,
    GateReply,
    IdentityProvider,
    Notifier,
    Outcome,
    PushOutcome,
    PushResult,
    PushVerifier,
    ReauthLinks,
    RequestStore,
    TicketSystem,
)

log = structlog.get_logger("twokey.service")

APPROVERS_MAX = 500
DISPUTABLE = MAY_HAVE_CHANGED | {RequestState.EXECUTING}
"""States in which an owner's "this wasn't me" is a dispute (the change is made, or being)."""
APPROVER_POOL_CHECK_S = 1.0
"""How long opening waits for the directory to say who could approve; no answer, no check."""
"""How many directory entries are read to find a request's approvers."""
PUSH_ABANDONED = "twokey stopped while waiting for the answer"
"""Why a push counts for nothing: the replica polling it stopped (``TwoKey.stop_pushes``)."""
PUSH_RECORD_S = 5.0
"""How long a stopping replica waits for its abandoned pushes to be recorded and told."""
T = TypeVar("T")


class Decision(BaseModel):
    """What a use case did, for the channel to render to the person who asked."""

    model_config = ConfigDict(frozen=True)

    request: Request
    message: str
    changed: bool = True
    on_cards: bool = False
    """The request's cards, updated as part of this decision, already say all ``message``
    says: a face need not also answer the person who pressed a card's button."""


class Listing(BaseModel):
    model_config = ConfigDict(frozen=True)

    mine: list[Request]
    to_approve: list[Request]
    to_confirm: list[Request]


@dataclass(frozen=True)
class Caller:
    """A chat user resolved to exactly one directory principal (invariant 2)."""

    principal: Principal
    via: str

    @property
    def id(self) -> str:
        return self.principal.id


@dataclass(frozen=True)
class QuotedTicket:
    """The ticket an agent quoted, as the ticket system holds it, and the person it must be
    about (the target, or an NHI's owner of record)."""

    ticket: Ticket | None
    """None: the ticket system could not answer and the policy opens in its fallback tier."""
    person: Principal

    @property
    def unchecked(self) -> bool:
        return self.ticket is None


@dataclass
class ServiceOptions:
    lease_s: int = 120
    """How long an execution may run before the sweeper declares it interrupted."""
    open_retries: int = 3


@dataclass(frozen=True)
class StepUpOptions:
    """What the owner's step-up verifiers need beyond the store and directory."""

    code_key: bytes
    """Keys the digest a one-time code is stored as (never the code itself)."""
    previous_code_keys: tuple[bytes, ...] = ()
    """Keys codes were issued under before a rotation: typed codes are checked against these
    too, so a code issued just before a rollout still works for its few minutes."""
    mail: CodeSender | None = None
    """Sends codes to recovery emails; without it the email_code verifier cannot start."""
    sms: CodeSender | None = None
    """Texts codes to phones of record (the SMS webhook); without it sms_code cannot start."""
    push: Mapping[str, PushVerifier] = field(default_factory=dict)
    """Push verifiers by the step-up verifier they run (okta_push -> the Okta connector)."""
    reauth: ReauthLinks | None = None
    """Hands approvers a single-use link to sign in again (oidc_reauth); None: it cannot."""


@dataclass(frozen=True)
class ReauthLinksRoute:
    """The approver step-up chosen for a request is a sign-in link (not a push)."""

    links: ReauthLinks


@dataclass
class SweepReport:
    ticked: int = 0
    changes: dict[str, int] = field(default_factory=dict)

    def count(self, code: str) -> None:
        self.ticked += 1
        self.changes[code] = self.changes.get(code, 0) + 1


class TwoKey:
    """The two-person rule: open, confirm, approve, deny, cancel, execute, expire, dispute."""

    def __init__(
        self,
        store: RequestStore,
        directory: Directory,
        connectors: Sequence[IdentityProvider],
        notifier: Notifier,
        policy: Policy,
        options: ServiceOptions | None = None,
        journal: ExecutionJournal | None = None,
        step_up: StepUpOptions | None = None,
        tickets: TicketSystem | None = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.connectors = list(connectors)
        self.notifier = notifier
        self.policy = policy
        self.options = options or ServiceOptions()
        self.journal: ExecutionJournal = journal or MemoryJournal()
        """What this replica ran, outside Redis; serve uses a file that survives restarts."""
        self._running: set[str] = set()
        """Claim tokens of executions running in this process right now."""
        self.step_up = step_up
        """Step-up verifiers' needs; without it every step-up fails closed (stays blocked)."""
        self._pushes: set[asyncio.Task[None]] = set()
        """Pushes waiting for the owner's answer; abandoned at shutdown (the request stays
        blocked, and the owner may ask again once the push would have timed out)."""
        self.names = NameBook(directory)
        """Display names for every face's cards, resolved together and cached briefly."""
        self.tickets = tickets
        """Where quoted tickets are read (policy ``tickets:``); None with a system named is
        a refusal, never a skipped check."""

    # ---- who is asking -----------------------------------------------------------------------

    async def identify(self, chat: ChatUser, *, who: str = "You") -> Caller:
        """Resolve a chat account to one directory principal, or refuse; never guess."""
        via = f"{chat.platform}:{chat.user_id}"
        if chat.deleted:
            raise IdentityUnsure(say.deactivated(who))
        if chat.is_bot:
            raise IdentityUnsure(say.a_bot(who))
        if chat.is_guest:
            raise IdentityUnsure(say.a_guest(who))
        if not chat.email or not chat.email_verified:
            raise IdentityUnsure(say.no_verified_email(who))
        matches = await self._directory(self.directory.find_by_email(chat.email))
        if not matches:
            raise IdentityUnsure(say.nobody_with_email(who))
        if len(matches) > 1:
            raise IdentityUnsure(say.several_with_email(who, len(matches)))
        principal = matches[0]
        if principal.kind is not PrincipalKind.HUMAN:  # a service account's mailbox: no person
            raise IdentityUnsure(say.not_a_person(who))
        opening.check_active(principal, who)
        return Caller(principal=principal, via=via)

    async def _directory(self, call: Awaitable[T]) -> T:
        """Invariant 6 for the directory: any failure is one clear `Unavailable`."""
        try:
            return await call
        except TwokeyError:
            raise
        except Exception as exc:
            log.warning("directory_unavailable", error=type(exc).__name__)
            raise Unavailable(DIRECTORY_DOWN) from exc

    async def find_target(self, target: ChatUser | str) -> Principal:
        """A mentioned chat user (resolved like any caller) or an NHI by name."""
        if isinstance(target, ChatUser):
            return (await self.identify(target, who="The target")).principal
        name = (target[4:] if target[:4].lower() == "nhi:" else target).strip()
        if not name:
            raise BadInput("Name the non-human identity as nhi:<name>.")
        principal = await self._directory(self.directory.find_nhi(name))
        if principal is None:
            raise NotFound(f"No non-human identity called {name!r} is in the directory.")
        return principal

    # ---- opening -----------------------------------------------------------------------------

    async def open(
        self,
        requester: ChatUser,
        target: ChatUser | str,
        action: str,
        ticket: str,
        reason_code: str,
        note: str = "",
    ) -> Decision:
        """An agent asks for an identity change; the policy freezes what it will need."""
        try:
            form = OpenForm(action=action, ticket=ticket, reason_code=reason_code, note=note)
        except ValidationError as exc:
            raise human_error(exc) from exc
        self.policy.check_ticket(form.ticket)
        self.policy.check_reason(form.reason_code)
        caller = await self.identify(requester)
        await self._may_request(caller, target, form.action, form.ticket, breakglass=False)
        subject = await self.find_target(target)
        return await self._open(
            caller,
            subject,
            form.action,
            form.ticket,
            form.reason_code,
            note=form.note,
            justification="",
            breakglass=False,
        )

    async def breakglass(
        self,
        requester: ChatUser,
        target: ChatUser | str,
        action: str,
        ticket: str,
        justification: str,
    ) -> Decision:
        """The emergency path: allowed to named roles, always alerted, always reviewed."""
        bg = opening.enabled_breakglass(self.policy)
        try:
            form = BreakglassForm(action=action, ticket=ticket, justification=justification)
        except ValidationError as exc:
            raise human_error(exc) from exc
        if len(form.justification) < bg.min_justification:
            raise BadInput(
                f"Break-glass needs a justification of at least {bg.min_justification} "
                "characters: say what the emergency is."
            )
        self.policy.check_ticket(form.ticket)
        caller = await self.identify(requester)
        await self._may_request(caller, target, form.action, form.ticket, breakglass=True)
        subject = await self.find_target(target)
        return await self._open(
            caller,
            subject,
            form.action,
            form.ticket,
            "breakglass",
            note="",
            justification=form.justification,
            breakglass=True,
        )

    async def _open(
        self,
        caller: Caller,
        target: Principal,
        action: Action,
        ticket: str,
        reason_code: str,
        *,
        note: str,
        justification: str,
        breakglass: bool,
    ) -> Decision:
        self._check_action_fits(action, target)
        try:
            sod.check_may_open(caller.principal, target)
        except SeparationOfDuties as refusal:  # an agent on their own (or their own NHI's) account
            await self._audit_refused_open(caller, target, action, ticket, refusal, "sod")
            await self._alert(
                None,
                say.refused_open(caller.principal.name, action.label, target.name, refusal.message),
            )
            raise
        self._connector_for(action, target)
        owner_id = await self._reachable_owner(target)
        try:
            quoted = await self._check_ticket(ticket, target, owner_id)
        except (NotFound, NotAllowed) as refusal:  # a ticket that does not hold up: audited
            await self._audit_refused_open(caller, target, action, ticket, refusal, "ticket")
            raise
        velocity = self.policy.velocity
        request_id = self.store.new_request_id(target.id)
        # The requester's pace is held first, atomically in their own slot (open.lua cannot
        # see it: requests shard by target), so parallel opens cannot all pass their limit.
        held = await self.store.reserve_requester(caller.id, request_id, action, velocity)
        reply: GateReply | None = None
        ticket_held = False
        pool_checked = False
        used = _ticket_marks(quoted, ticket)
        try:
            ticket_held = await self._use_ticket(caller, target, action, ticket, request_id, used)
            for _attempt in range(self.options.open_retries):
                now = await self.store.now()
                signals = await self.store.signals(target.id, caller.id, velocity, now)
                signals = signals.model_copy(update={"requester_count": held.counts})
                try:
                    plan = evaluate(
                        self.policy,
                        action,
                        target,
                        signals,
                        breakglass=breakglass,
                        reason_code=reason_code,
                        ticket_unchecked=quoted is not None and quoted.unchecked,
                    )
                    if not held.admitted:  # evaluate refuses on these counts; never open anyway
                        raise VelocityLimited(say.VELOCITY_REACHED)
                except TwokeyError as refusal:
                    await self._audit_refused_open(caller, target, action, ticket, refusal)
                    await self._alert(
                        None,
                        say.refused_open(
                            caller.principal.name, action.label, target.name, refusal.message
                        ),
                    )
                    raise
                if quoted is not None:
                    await self._ticket_fits_tier(quoted, plan.tier, caller, target, action)
                if not pool_checked:
                    await self._someone_can_approve(caller, target, owner_id, action, ticket, plan)
                    pool_checked = True
                request = Request(
                    id=request_id,
                    ticket=ticket,
                    action=action,
                    target_id=target.id,
                    target_name=target.name,
                    target_kind=target.kind,
                    target_system=target.system,
                    owner_id=owner_id,
                    requester_id=caller.id,
                    requester_name=caller.principal.name,
                    reason_code=reason_code,
                    note=note,
                    justification=justification,
                    plan=plan,
                    ticket_details=self._ticket_details(quoted, ticket, plan.tier),
                    created_at=now,
                    expires_at=now,
                )
                role = "breakglass" if breakglass else self.policy.requester_role
                reply = await self.store.open(request, signals, velocity, via=caller.via, role=role)
                if reply.code is not GateCode.STALE:
                    break
        finally:
            if reply is None or reply.code is not GateCode.OK:
                await self._release(caller.id, request_id, action)
                if ticket_held:
                    await self._release_tickets(used, request_id)
        if reply is None or reply.request is None or reply.code is not GateCode.OK:
            raise Conflict(say.OPEN_FAILED)
        opened = reply.request
        log.info("request_opened", request=opened.id, tier=opened.plan.tier, action=action.value)
        if quoted is not None and quoted.unchecked:
            await self._audit_ticket_unchecked(opened, "ticket_system_unavailable_at_open")
        await self._tell("post_request", self.notifier.post_request(opened))
        if opened.plan.alert_security:
            await self._alert(opened, say.alert(opened, "opened"))
        if opened.plan.owner_step_up:
            try:
                opened = await self._start_step_up(opened, SYSTEM, "")
            except TwokeyError as exc:  # opened all the same: the owner may ask for a code later
                log.warning("step_up_not_started", request=opened.id, error=type(exc).__name__)
                why = say.step_up_unavailable(opened, "it could not be started just now")
                await self._tell("notify_requester", self.notifier.notify_requester(opened, why))
        if opened.state is RequestState.READY:
            opened = (await self.execute(opened.id)).request or opened
        return Decision(request=opened, message=say.receipt(opened))

    async def _may_request(
        self,
        caller: Caller,
        target: ChatUser | str,
        action: Action,
        ticket: str,
        *,
        breakglass: bool,
    ) -> None:
        """The role check before opening. A refusal is a security event like any refused
        opening: audited (with the target when it can be named), and a break-glass attempt by
        someone without the break-glass role is alerted too."""
        try:
            opening.check_may_request(self.policy, caller.principal, breakglass=breakglass)
        except TwokeyError as refusal:
            subject: Principal | None = None
            try:
                subject = await self.find_target(target)
            except TwokeyError:  # still audited, the target left unnamed
                pass
            reason = "breakglass_role" if breakglass else "role"
            await self._audit_refused_open(caller, subject, action, ticket, refusal, reason)
            if breakglass:
                whom = subject.name if subject is not None else "an account it could not resolve"
                await self._alert(
                    None,
                    say.refused_open(caller.principal.name, action.label, whom, refusal.message),
                )
            raise

    async def _release(self, requester_id: str, request_id: str, action: Action) -> None:
        """Best effort: a place left held counts against the requester, never for them."""
        try:
            await self.store.release_requester(requester_id, request_id, action)
        except Unavailable:
            log.warning("requester_place_not_released", request=request_id)

    async def _audit_refused_open(
        self,
        caller: Caller,
        target: Principal | None,
        action: Action,
        ticket: str,
        refusal: TwokeyError,
        reason: str | None = None,
    ) -> None:
        """The policy refused to open it (a velocity limit, ...): a security event in the trail.
        ``target`` None: refused before the target could be resolved (recorded unnamed)."""
        if reason is None:
            reason = "velocity" if isinstance(refusal, VelocityLimited) else "policy"
        target_id = target.id if target is not None else ""
        try:
            await self.store.audit_refused_open(
                target_id, caller.id, caller.via, "requester", ticket, action.value, reason
            )
        except Unavailable:
            log.error("refused_open_unaudited", target=target_id, actor=caller.id, reason=reason)

    async def _someone_can_approve(
        self,
        caller: Caller,
        target: Principal,
        owner_id: str,
        action: Action,
        ticket: str,
        plan: Plan,
    ) -> None:
        """A request nobody could ever approve would only wait and expire while the caller on
        the phone is told "pending": refuse it at once and say why (audited, security told).

        Counts the enabled people of the tier's approver role (and of its escalation role) who
        are no party to it. A directory that does not answer in time, or whose answer may be
        cut short, checks nothing: the gate still enforces every role at the decision."""
        if plan.approvals_needed <= 0:
            return
        roles = [plan.approver_role, *([plan.escalate_to] if plan.escalate_to else [])]
        groups = self.policy.groups_of(roles)
        found: Sequence[Principal] = []
        if groups:
            try:
                found = await asyncio.wait_for(
                    self.directory.members(groups, limit=APPROVERS_MAX), APPROVER_POOL_CHECK_S
                )
            except Exception as exc:  # an unanswered check checks nothing
                log.info("approver_pool_not_checked", reason=type(exc).__name__)
                return
            if len(found) >= APPROVERS_MAX:
                return
        parties = {caller.id, target.id, owner_id}
        able = sum(self.policy.could_approve(person, roles, parties) for person in found)
        if able >= plan.approvals_needed:
            return
        refusal = NotAllowed(say.nobody_can_approve(plan, roles, able))
        await self._audit_refused_open(caller, target, action, ticket, refusal, "no_approvers")
        await self._alert(
            None,
            say.refused_open(caller.principal.name, action.label, target.name, refusal.message),
        )
        raise refusal

    async def _reachable_owner(self, target: Principal) -> str:
        """The owner of record must be a live directory person, or nobody could confirm."""
        owner_id = opening.owner_to_reach(target)
        if owner_id != target.id:
            owner = await self._directory(self.directory.get(owner_id))
            opening.check_owner_active(target, owner)
        return owner_id

    async def _check_ticket(
        self, number: str, target: Principal, owner_id: str
    ) -> QuotedTicket | None:
        """The quoted ticket exists (None: tickets are not looked up); whether it holds up for
        the request's tier is decided once the tier is known (`_ticket_fits_tier`). A ticket
        system that cannot answer refuses the request (fail closed)."""
        settings = self.policy.tickets
        if not settings.checked:
            return None
        try:
            found = await self._read_ticket(number)
        except Unavailable as exc:
            if not settings.falls_back or self.tickets is None:
                raise
            if isinstance(exc, CredentialsRefused):
                # an outage may fall back; refused credentials are a broken integration, and
                # falling back would open every request unchecked until someone noticed
                raise
            # tickets.on_unavailable: strictest_tier. Never a skipped check: the request opens
            # in the fallback tier, audited, its cards saying the ticket was not checked.
            return QuotedTicket(ticket=None, person=target)
        if found is None:
            raise NotFound(say.ticket_not_found(self._ticket_system().name, number))
        person = target
        if owner_id != target.id:
            owner = await self._directory(self.directory.get(owner_id))
            person = owner if owner is not None else target
        return QuotedTicket(ticket=found, person=person)

    def _ticket_details(
        self, quoted: QuotedTicket | None, number: str, tier: str
    ) -> TicketDetails | None:
        """What the approval card shows of the ticket (None when tickets are not looked up)."""
        if quoted is None:
            return None
        system = self.policy.tickets.system_name
        if quoted.ticket is None:
            fallback = tier == self.policy.tickets.fallback_tier
            return unchecked_details(system, number, tier, fallback=fallback)
        return details_of(quoted.ticket, system)

    async def _audit_ticket_unchecked(self, request: Request, reason: str) -> None:
        """A ticket the system could not check, in the trail beside the request (with the
        tier it opened in); the stored plan's reasons say it too."""
        log.warning("ticket_unchecked", request=request.id, tier=request.plan.tier, why=reason)
        try:
            await self.store.annotate(
                request.id, "ticket_unchecked", SYSTEM, reason, request.plan.tier
            )
        except Unavailable:
            log.error("ticket_unchecked_unaudited", request=request.id, why=reason)

    def _ticket_system(self) -> TicketSystem:
        if self.tickets is None:
            raise Unavailable(say.TICKETS_NOT_WIRED)
        return self.tickets

    async def _read_ticket(self, number: str) -> Ticket | None:
        system = self._ticket_system()
        try:
            return await system.find(number)
        except CredentialsRefused as exc:
            # Not an outage: an operator must act. The adapter's text is a status, no secret.
            log.error(
                "ticket_system_unavailable",
                system=system.name,
                why="credentials_refused",
                detail=exc.message,
            )
            raise CredentialsRefused(say.tickets_refused(system.name, number)) from exc
        except Exception as exc:
            log.warning("ticket_system_unavailable", system=system.name, error=type(exc).__name__)
            raise Unavailable(say.tickets_down(system.name, number)) from exc

    async def _ticket_fits_tier(
        self, quoted: QuotedTicket, tier: str, caller: Caller, target: Principal, action: Action
    ) -> None:
        """The checks the tier asks for (open, recent, the target's, the agent's); a refusal
        names the ticket's field and is audited like any refused opening."""
        if quoted.ticket is None:
            return  # not checked: the fallback tier, audited (`_audit_ticket_unchecked`)
        problem = ticket_problem(
            self.policy.tickets,
            quoted.ticket,
            quoted.person,
            await self.store.now() / 1000,
            requester=caller.principal,
            tier=tier,
        )
        if problem is not None:
            refusal = NotAllowed(problem)
            await self._audit_refused_open(
                caller, target, action, quoted.ticket.number, refusal, "ticket"
            )
            raise refusal

    async def _use_ticket(
        self,
        caller: Caller,
        target: Principal,
        action: Action,
        number: str,
        request_id: str,
        marks: Sequence[str],
    ) -> bool:
        """One ticket, one request (``tickets.one_request_per_ticket``): each of ``marks`` (see
        ``_ticket_marks``) is set atomically, so two agents quoting the same ticket at once
        cannot both open. True when marked here."""
        settings = self.policy.tickets
        if not (settings.checked and settings.one_request_per_ticket):
            return False
        keep_ms = max(self.policy.retention, 86_400) * 1000
        taken: list[str] = []
        for mark in marks:
            holder = await self.store.use_ticket(settings.system, mark, request_id, keep_ms)
            if holder != request_id:
                await self._release_tickets(taken, request_id)
                refusal = NotAllowed(ticket_in_use(number, holder))
                await self._audit_refused_open(
                    caller, target, action, number, refusal, "ticket_reused"
                )
                raise refusal
            taken.append(mark)
        return True

    async def _release_tickets(self, marks: Sequence[str], request_id: str) -> None:
        """Best effort: a ticket left marked must be quoted on a new ticket, never reused."""
        for mark in marks:
            try:
                await self.store.release_ticket(self.policy.tickets.system, mark, request_id)
            except Unavailable:
                log.warning("ticket_use_not_released", request=request_id)

    async def _ticket_no_longer_holds(self, request: Request) -> str:
        """Re-read the ticket just before the change runs: closed, reassigned or given to
        someone else since the request opened stops it ("" when it still holds). A ticket
        system that cannot answer stops it too (fail closed), except for a request that opened
        unchecked in the fallback tier while the system is still down (not refusing twokey's
        credentials): its approvers were told and approved the strictest gates, so it runs
        (audited); a system back by then checks the ticket in full."""
        settings = self.policy.tickets
        if not settings.checked or request.requester_id == SYSTEM:
            return ""
        try:
            found = await self._read_ticket(request.ticket)
        except Unavailable as exc:
            details = request.ticket_details
            refused = isinstance(exc, CredentialsRefused)
            if (
                details is not None
                and details.unchecked
                and self.tickets is not None
                and not refused
            ):
                await self._audit_ticket_unchecked(request, "ticket_system_unavailable_at_claim")
                return ""
            if isinstance(exc, CredentialsRefused):
                return say.ticket_refused_at_claim(settings.system_name, request.ticket)
            return ticket_unreadable(settings.system_name, request.ticket)
        if found is None:
            return ticket_gone(settings.system_name, request.ticket)
        try:
            requester = await self._directory(self.directory.get(request.requester_id))
            person = await self._directory(self.directory.get(request.owner_id))
        except Unavailable:
            return "the directory could not be reached to re-check the ticket's people"
        if requester is None or person is None:
            return ticket_people_gone(request.ticket)
        # a ticket first read now (the request opened unchecked) gets every check, its age
        # taken as of the request's opening; one checked at open is re-checked for changes
        first_read = request.ticket_details is not None and bool(request.ticket_details.unchecked)
        problem = ticket_problem(
            settings,
            found,
            person,
            request.created_at / 1000 if first_read else await self.store.now() / 1000,
            requester=requester,
            tier=request.plan.tier,
            at_claim=not first_read,
        )
        return ticket_changed(problem) if problem else ""

    def _check_action_fits(self, action: Action, target: Principal) -> None:
        opening.check_action_fits(action, target)

    def _connector_for(self, action: Action, target: Principal) -> IdentityProvider:
        return opening.connector_for(self.connectors, action, target)

    # ---- the gates ---------------------------------------------------------------------------

    async def confirm_owner(self, owner: ChatUser, request_id: str) -> Decision:
        """The owner of record answers "Yes, it was me"."""
        request_id = parse_request_id(request_id)
        caller = await self.identify(owner)
        reply = await self.store.confirm_owner(request_id, caller.id, caller.via)
        return await self._after_gate(
            reply, caller, "Thanks: your confirmation is recorded.", what="owner_confirmed"
        )

    async def reject_by_owner(self, owner: ChatUser, request_id: str) -> Decision:
        """The owner answers "No, this wasn't me": reject, flag the account, alert security."""
        request_id = parse_request_id(request_id)
        caller = await self.identify(owner)
        request = await self._get(request_id)
        reply = await self.store.reject_by_owner(
            request_id, caller.id, caller.via, self.policy.fraud.flag_window, request.target_id
        )
        late = reply.request.state if reply.request is not None else None
        if reply.code is GateCode.DECIDED and late in DISPUTABLE:
            # The change is being made, or was: the owner's "no" is a dispute, never dropped.
            return await self.dispute(owner, request_id)
        decision = await self._after_gate(
            reply,
            caller,
            "Thank you. The request is stopped and the security team has been told.",
            what="owner_rejected",
        )
        if reply.code is GateCode.OK:
            await self._alert(
                decision.request,
                say.alert(
                    decision.request,
                    'rejected by the owner ("this wasn\'t me"); the account is flagged',
                ),
            )
        return decision

    async def approve(self, approver: ChatUser, request_id: str) -> Decision:
        """One script call: separation of duties and the approver role are checked in it."""
        request_id = parse_request_id(request_id)
        caller = await self.identify(approver)
        reply = await self.store.approve(request_id, caller.id, caller.via, self._roles(caller))
        if reply.code is GateCode.NOOP and reply.detail == "awaiting_verification":
            request = self._reply_request(reply)
            reauth = self._approver_route(request)
            if isinstance(reauth, ReauthLinksRoute):  # a lost link: a new one, nothing else
                url = await reauth.links.link_for(request, caller.principal)
                message = say.approver_link_sent(request, url)
                return Decision(request=request, changed=False, message=message)
            return Decision(request=request, changed=False, message=say.approver_push_sent(request))
        decision = await self._after_gate(
            reply, caller, "Your approval is recorded.", what="approved"
        )
        if reply.code is GateCode.OK and reply.detail == "awaiting_verification":
            return await self._verify_approver(decision.request, caller)
        return decision

    # ---- step-up verification of an approver ------------------------------------------------

    def _approver_route(self, request: Request) -> PushVerifier | ReauthLinksRoute | None:
        """The first of the plan's approver verifiers this twokey can run, in the policy's order."""
        if self.step_up is None:
            return None
        for name in request.plan.approver_step_up:
            if name == Verifier.OIDC_REAUTH.value:
                if self.step_up.reauth is not None:
                    return ReauthLinksRoute(self.step_up.reauth)
                continue
            pusher = self.step_up.push.get(name)
            if pusher is not None:
                return pusher
        return None

    async def _verify_approver(self, request: Request, caller: Caller) -> Decision:
        """The tier wants a fresh IdP check of the approver before their approval counts: push
        to their device, or hand them a link to sign in again, and record the answer when it
        comes (within the approval's TTL)."""
        route = self._approver_route(request)
        if isinstance(route, ReauthLinksRoute):
            url = await route.links.link_for(request, caller.principal)
            return await self._tell_approver(request, caller, say.approver_link_sent(request, url))
        pusher = route
        if pusher is None or not caller.principal.email:
            reply = await self.store.verify_approver(
                request.id, caller.id, PushOutcome.UNAVAILABLE.value, "none"
            )
            await self._tell(
                "update_request", self.notifier.update_request(self._reply_request(reply))
            )
            raise NotAllowed(say.APPROVER_STEP_UP_UNAVAILABLE)
        task = asyncio.create_task(self._await_approver_push(request, caller.principal, pusher))
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)
        app = Verifier(pusher.verifier).app
        return await self._tell_approver(request, caller, say.approver_push_sent(request, app))

    async def _tell_approver(self, request: Request, caller: Caller, text: str) -> Decision:
        """What the approver must do next (sign in through the link, approve the push), sent
        to them privately: a face may already have answered their press with the card (which
        says only "waiting for their verification"), so the answer alone could be lost."""
        await self._tell("notify_person", self.notifier.notify_person(request, caller.id, text))
        return Decision(request=request, message=text, on_cards=True)

    async def _await_approver_push(
        self, request: Request, approver: Principal, pusher: PushVerifier
    ) -> None:
        result = await self._push_answer(pusher, approver, request)
        try:
            reply = await self.store.verify_approver(
                request.id, approver.id, result.outcome.value, pusher.verifier
            )
        except Unavailable:
            log.warning("approver_step_up_unrecorded", request=request.id)
            return
        await self._approver_step_up_recorded(reply, approver)

    async def approver_signed_in(
        self, request_id: str, approver_id: str, claimed: object
    ) -> Decision:
        """The identity provider signed someone in again through an approver's link (the web
        server verified the ID token): it counts only if it signed in that very approver, as
        the directory knows them, while their approval waits. Anything else changes nothing.
        """
        request_id = parse_request_id(request_id)
        settings = self.policy.step_up.oidc
        if settings is None or self.step_up is None or self.step_up.reauth is None:
            raise NotAllowed(say.APPROVER_STEP_UP_UNAVAILABLE)
        approver = await self._directory(self.directory.get(approver_id))
        if approver is None:
            raise IdentityUnsure(say.nobody_with_email("The approver"))
        opening.check_active(approver, "The approver")
        if not same_person(settings, approver, claimed):
            log.warning("approver_signin_wrong_person", request=request_id, approver=approver.id)
            await self._sign_in_refused(request_id, approver, GateCode.WRONG_PERSON, "sign_in")
            raise NotAllowed(say.approver_signin_wrong_person(request_id, approver.name))
        reply = await self.store.verify_approver(
            request_id, approver.id, PushOutcome.APPROVED.value, Verifier.OIDC_REAUTH.value
        )
        request = self._reply_request(reply)
        log.info("approver_signed_in", request=request_id, code=reply.code.value)
        self._in_background(self._approver_step_up_recorded(reply, approver, tell_approver=False))
        if reply.code is not GateCode.OK:
            raise NotAllowed(say.approver_signin_refused(request, reply.code.value))
        return Decision(request=request, message=say.approver_signed_in(request, approver.name))

    async def approver_signin_failed(self, request_id: str, approver_id: str, why: str) -> None:
        """A sign-in through an approver's link whose identity provider answer did not hold
        (a bad or forged ID token, another browser): audited and counted like any refused
        attempt; the approval keeps waiting. Best effort: the page already says nothing changed.
        """
        try:
            approver = await self._directory(self.directory.get(approver_id))
        except TwokeyError:
            approver = None
        if approver is None:  # still audited; counted under the id it was bound to
            approver = Principal(id=approver_id)
        await self._sign_in_refused(request_id, approver, GateCode.SIGNIN_REFUSED, why)

    async def approver_disowned(self, request_id: str, approver_id: str) -> None:
        """The approver opened their sign-in link and said they did not approve: someone else
        may hold their chat session. Audited as a refused sign-in, alerted at once; the approval
        keeps waiting and never counts without a sign-in."""
        try:
            approver = await self._directory(self.directory.get(approver_id))
        except TwokeyError:
            approver = None
        await self._sign_in_refused(
            request_id, approver or Principal(id=approver_id), GateCode.SIGNIN_REFUSED, "not_me"
        )

    async def _sign_in_refused(
        self, request_id: str, approver: Principal, code: GateCode, why: str
    ) -> None:
        """The refused sign-in in the request's trail (refuse_sign_in.lua), toward the policy's
        fraud.refusals; a wrong person signing in is alerted at once."""
        via = Verifier.OIDC_REAUTH.value
        try:
            reply = await self.store.refuse_sign_in(request_id, approver.id, code, why, via)
        except Unavailable:
            log.error("approver_signin_unaudited", request=request_id, approver=approver.id)
            return
        if reply.request is None or not reply.code.is_refusal:
            return  # the request is gone or finished: nothing to verify any more
        request = reply.request
        await self._refused(request, Caller(approver, via), code, "verify their approval of")
        if code is GateCode.WRONG_PERSON:
            text = say.approver_signin_wrong_person_alert(approver.name)
            await self._alert(request, say.alert(request, text))
        elif why == "not_me":
            text = say.approver_disowned_alert(approver.name)
            await self._alert(request, say.alert(request, text))

    def _in_background(self, work: Awaitable[None]) -> None:
        """Cards, messages and the execution after a step-up answered from a web page: the
        page is answered once the gate is stored; ``settle_pushes`` waits for these too."""

        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def _approver_step_up_recorded(
        self, reply: GateReply, approver: Principal, *, tell_approver: bool = True
    ) -> None:
        """After verify_approver.lua: cards, the approver told of a failed push (a sign-in
        page says it itself), the requester of an approval that unblocked the request (a step
        on the way is on their card), and the execution once every gate holds."""
        if reply.request is None:
            return
        after = reply.request
        log.info("approver_step_up", request=after.id, code=reply.code.value)
        await self._tell("update_request", self.notifier.update_request(after))
        if reply.code is not GateCode.OK:
            if tell_approver and reply.code in (GateCode.LATE, GateCode.FAILED):
                text = say.approver_step_up_failed(after, reply.detail or "late")
                await self._tell(
                    "notify_person", self.notifier.notify_person(after, approver.id, text)
                )
            return
        if after.state is not RequestState.PENDING:
            text = say.requester_decision(after, approver.name, by_owner=False)
            await self._tell("notify_requester", self.notifier.notify_requester(after, text))
        if after.state is RequestState.READY:
            await self.execute(after.id, actor=approver.id)

    async def deny(self, approver: ChatUser, request_id: str, reason: str) -> Decision:
        request_id = parse_request_id(request_id)
        try:
            form = DenyForm(reason=reason)
        except ValidationError as exc:
            raise human_error(exc) from exc
        caller = await self.identify(approver)
        reply = await self.store.deny(
            request_id, caller.id, caller.via, self._roles(caller), form.reason
        )
        return await self._after_gate(reply, caller, "The request is denied.", what="denied")

    async def cancel(self, who: ChatUser, request_id: str) -> Decision:
        request_id = parse_request_id(request_id)
        caller = await self.identify(who)
        reply = await self.store.cancel(request_id, caller.id, caller.via, self._roles(caller))
        return await self._after_gate(reply, caller, "The request is cancelled.", what="cancelled")

    def _roles(self, caller: Caller) -> list[str]:
        """Every role the policy gives this person through their directory groups, now."""
        return [
            role for role in self.policy.roles if self.policy.holds_role(caller.principal, role)
        ]

    @staticmethod
    def deciding_roles(request: Request) -> list[str]:
        """The roles that may decide this request now: its tier's, and once escalated the
        escalation role too."""
        roles = [request.plan.approver_role]
        if request.escalated and request.plan.escalate_to:
            roles.append(request.plan.escalate_to)
        return roles

    def may_decide(self, principal: Principal, request: Request) -> bool:
        """THE rule for who may approve a request: an enabled person, no party to it (not its
        requester, account or owner), holding a role that may decide it. Faces use it to pick
        whom to ask; the gate script enforces it again at the decision."""
        parties = (request.requester_id, request.target_id, request.owner_id)
        return self.policy.could_approve(principal, self.deciding_roles(request), parties)

    async def approvers_for(self, request: Request) -> list[Principal]:
        """Everyone who may approve this request (for policies that message approvers one by
        one). Raises Unavailable when the directory cannot say."""
        groups = self.policy.groups_of(self.deciding_roles(request))
        if not groups:
            return []
        found = await self._directory(self.directory.members(groups, limit=APPROVERS_MAX))
        return [p for p in found if self.may_decide(p, request)]

    async def search_nhis(self, who: ChatUser, text: str) -> list[Principal]:
        """Non-human identities for a picker. Only someone who may open a request browses the
        directory (no guest, no stranger, no unsure identity): the list of NHIs is not public."""
        caller = await self.identify(who)
        if not self.policy.holds_role(caller.principal, self.policy.requester_role):
            raise NotAllowed("Only the help desk can search non-human identities.")
        found = await self._directory(self.directory.search(text, limit=50))
        return [p for p in found if p.kind is PrincipalKind.NHI]

    async def now(self) -> int:
        """The shared clock (Redis TIME), for a face showing a request it read itself."""
        return await self.store.now()

    def _approver_role_of(self, principal: Principal, request: Request) -> str:
        """The role under which this person may decide this request, or refuse."""
        roles = self.deciding_roles(request)
        for role in roles:
            if self.policy.holds_role(principal, role):
                return role
        raise NotAllowed(say.needs_role(request, roles))

    async def _after_gate(
        self, reply: GateReply, caller: Caller, done: str, *, what: str
    ) -> Decision:
        """Map a gate script's code to a decision, then tell everyone and maybe execute."""
        request = self._reply_request(reply)
        code = reply.code
        if code.is_refusal:
            await self._refused(request, caller, code, say.ATTEMPTS.get(what, what))
        if code is GateCode.NOT_OWNER:
            raise NotAllowed(say.NOT_THE_OWNER)
        if code is GateCode.SOD:
            raise SeparationOfDuties(say.PART_OF_IT)
        if code is GateCode.NOT_REQUESTER:
            raise NotAllowed(say.NOT_THE_REQUESTER)
        if code is GateCode.ROLE:
            raise NotAllowed(say.needs_role(request, reply.detail.split(",")))
        if code is GateCode.EXPIRED:
            await self._tell("update_request", self.notifier.update_request(request))
            await self._tell(
                "notify_requester",
                self.notifier.notify_requester(request, say.expired_notice(request)),
            )
            raise Expired(say.expired_refusal(request))
        if code is GateCode.DECIDED:
            return Decision(request=request, changed=False, message=say.already(request))
        if code is GateCode.NOOP:
            return Decision(request=request, changed=False, message=say.noop(reply.detail))
        if code is not GateCode.OK:
            raise Conflict(say.changed_meanwhile(request, code))
        log.info(what, request=request.id, state=request.state.value, actor=caller.id)
        await self._tell("update_request", self.notifier.update_request(request))
        await self._tell_requester_decision(request, caller)
        if request.state is RequestState.READY:
            request = (await self.execute(request.id, actor=caller.id)).request or request
        return Decision(request=request, message=done, on_cards=what in SHOWN_ON_CARDS)

    async def _refused(self, request: Request, caller: Caller, code: GateCode, what: str) -> None:
        """A refused attempt is already audited by the script; log it, and alert security when
        one person is refused as often as the policy's fraud.refusals says."""
        log.warning("gate_refused", request=request.id, actor=caller.id, attempt=what, refusal=code)
        limit = self.policy.fraud.refusals
        try:
            count = await self.store.note_refusal(caller.id, request.id, code, limit.window * 1000)
        except Unavailable:
            return
        if count < limit.count:
            return
        await self._alert(
            request,
            say.alert(
                request,
                say.refused_often(
                    caller.principal.name, caller.id, caller.via, count, limit.window, code, what
                ),
            ),
        )

    async def _tell_requester_decision(self, request: Request, caller: Caller) -> None:
        """The agent hears of a decision by someone else that ends or unblocks the request, in
        words for what happened. A step on the way (an approval, the owner's confirmation while
        the request still waits) shows on the agent's own card, updated just before: a message
        as well would only repeat it."""
        lapsed = await self._ask_owner_again_if_lapsed(request)
        if caller.id == request.requester_id:
            return
        if request.state is RequestState.PENDING and not lapsed:
            return
        text = say.requester_decision(
            request, caller.principal.name, by_owner=caller.id == request.owner_id
        )
        await self._tell("notify_requester", self.notifier.notify_requester(request, text))

    async def _ask_owner_again_if_lapsed(self, request: Request, now: int | None = None) -> bool:
        """An owner's confirmation that lapsed while approvals came in is asked for again
        (True then: the agent should hear what the request waits for)."""
        now = now if now is not None else request.last_change_at
        lapsed = (
            request.state is RequestState.PENDING
            and request.plan.owner_confirmation
            and request.owner_confirmed_at is not None
            and not request.owner_gate_satisfied(now)
        )
        if not lapsed:
            return False
        await self._tell(
            "notify_owner",
            self.notifier.notify_owner(request, say.owner_lapsed(request)),
        )
        return True

    # ---- step-up verification of the owner ---------------------------------------------------

    async def verify_code(self, owner: ChatUser, request_id: str, code: str) -> Decision:
        """The owner types the one-time code back; the script compares digests in constant
        time and counts the try (5 per code), so guessing stops at the limit."""
        request_id = parse_request_id(request_id)
        typed = code.strip().replace(" ", "").replace("-", "")
        if not (typed.isascii() and typed.isdigit() and len(typed) == CODE_DIGITS):
            raise BadInput(say.BAD_CODE_FORMAT)
        caller = await self.identify(owner)
        request = await self._get(request_id)
        reply = await self.store.check_step_up_code(
            request,
            caller.id,
            caller.via,
            [code_digest(key, request.id, typed) for key in self._code_keys()],
            flag_window_s=self.policy.fraud.flag_window,
        )
        await self._after_step_up_failure(reply)
        if reply.code is GateCode.NOOP and reply.detail == "already_verified":
            return Decision(
                request=self._reply_request(reply), changed=False, message=say.ALREADY_VERIFIED
            )
        if reply.code is GateCode.NOOP and reply.detail == "not_needed":
            return Decision(
                request=self._reply_request(reply), changed=False, message=say.STEP_UP_NOT_NEEDED
            )
        return await self._after_gate(
            reply, caller, "Thanks: you are verified for this request.", what="step_up_passed"
        )

    async def new_code(self, owner: ChatUser, request_id: str) -> Decision:
        """The owner asks for a (new) one-time code: only once none is live."""
        request_id = parse_request_id(request_id)
        caller = await self.identify(owner)
        request = await self._get(request_id)
        if caller.id != request.owner_id:
            raise NotAllowed(say.NOT_THE_OWNER)
        if not request.plan.owner_step_up:
            return Decision(request=request, changed=False, message=say.STEP_UP_NOT_NEEDED)
        if request.step_up_gate_satisfied(await self.store.now()):
            return Decision(request=request, changed=False, message=say.ALREADY_VERIFIED)
        after = await self._start_step_up(request, caller.id, caller.via)
        return Decision(request=after, message=say.step_up_restarted(after))

    async def _start_step_up(self, request: Request, actor: str, via: str) -> Request:
        """Start the first verifier of the plan that can reach the owner; if none can, the
        request stays blocked and the requester hears what to do instead (fail closed)."""
        try:
            owner = await self._directory(self.directory.get(request.owner_id))
        except Unavailable:
            owner = None
        reasons: list[str] = []
        unsent: Verifier | None = None
        names = request.plan.owner_step_up
        for place, name in enumerate(names):
            verifier = Verifier(name)
            if verifier in (Verifier.EMAIL_CODE, Verifier.SMS_CODE):
                address, sender, why = self._code_sender(verifier, request, owner)
                if address and sender is not None:
                    more = place < len(names) - 1
                    sent = await self._send_code(
                        request, actor, via, address, sender, verifier, fall_back=more
                    )
                    if sent is not None:
                        return sent
                    unsent = unsent or verifier
                    why = say.code_not_taken(verifier is Verifier.SMS_CODE)
            elif verifier is Verifier.MANAGER:
                manager, why = await self._attesting_manager(request, owner)
                if manager is not None:
                    started = await self._ask_manager(request, actor, via, manager)
                    if started is not None:
                        return started
            else:
                pusher, why = self._push_route(request, verifier, owner)
                if pusher is not None and owner is not None:
                    return await self._send_push(request, actor, via, owner, pusher, verifier)
            reasons.append(why)
        if unsent is not None:  # nothing after the code that went nowhere could start either
            try:
                request = await self.store.get(request.id) or request
            except Unavailable:
                pass  # the words need only the request's id and plan
            return await self._code_not_sent(request, actor, unsent, withdrawn=True)
        why = "; ".join(reasons) or "none of the verifiers the policy names is available here"
        log.warning("step_up_unavailable", request=request.id)
        await self._tell(
            "notify_requester",
            self.notifier.notify_requester(request, say.step_up_unavailable(request, why)),
        )
        if actor != SYSTEM:
            raise NotAllowed(say.step_up_unavailable(request, why))
        return request

    def _code_sender(
        self, verifier: Verifier, request: Request, owner: Principal | None
    ) -> tuple[str, CodeSender | None, str]:
        """Where a one-time code of this kind would go and what sends it, or why it cannot."""
        if verifier is Verifier.SMS_CODE:
            return self._sms_route(request, owner)
        return self._code_route(owner)

    def _code_route(self, owner: Principal | None) -> tuple[str, CodeSender | None, str]:
        """Where a code would go, or why it cannot."""
        mail = self.step_up.mail if self.step_up is not None else None
        if owner is None:
            return "", mail, "the directory could not be asked for the owner's recovery address"
        if not owner.recovery_email:
            return "", mail, "the owner has no recovery email of record"
        if mail is None:
            return "", mail, "no mail server is configured to send one-time codes"
        return owner.recovery_email, mail, ""

    def _sms_route(
        self, request: Request, owner: Principal | None
    ) -> tuple[str, CodeSender | None, str]:
        """Where a texted code would go, or why it cannot: never for reset-mfa or a lost
        device, whatever the frozen plan says (the phone may be the device in question)."""
        sms = self.step_up.sms if self.step_up is not None else None
        lost = self.policy.step_up.device_lost_reasons
        if not choose((Verifier.SMS_CODE,), request.action, request.reason_code, lost):
            return "", sms, "a text message is never used for reset-mfa or a lost device"
        if owner is None:
            return "", sms, "the directory could not be asked for the owner's phone of record"
        if not owner.phone:
            return "", sms, "the owner has no phone of record"
        if sms is None:
            return "", sms, "no SMS webhook is configured to text one-time codes"
        return owner.phone, sms, ""

    def _push_route(
        self, request: Request, verifier: Verifier, owner: Principal | None
    ) -> tuple[PushVerifier | None, str]:
        """Who can push to the owner's device, or why nobody may (never for reset-mfa or a
        lost device, whatever the frozen plan says)."""
        lost = self.policy.step_up.device_lost_reasons
        if not choose((verifier,), request.action, request.reason_code, lost):
            return None, "a push is never used for reset-mfa or a lost device"
        pusher = self.step_up.push.get(verifier.value) if self.step_up is not None else None
        if pusher is None:
            return None, f"no identity provider here can send {verifier.value}"
        if owner is None or not owner.email:
            return None, "the directory could not say who the owner is"
        return pusher, ""

    async def _send_push(
        self,
        request: Request,
        actor: str,
        via: str,
        owner: Principal,
        pusher: PushVerifier,
        verifier: Verifier,
    ) -> Request:
        reply = await self.store.start_step_up(
            request,
            verifier.value,
            actor,
            via,
            flag_window_s=self.policy.fraud.flag_window,
        )
        await self._after_step_up_failure(reply)
        started = await self._started(request, reply)
        if reply.code is not GateCode.OK:
            return started
        log.info("step_up_started", request=started.id, verifier=verifier.value)
        await self._tell(
            "notify_owner",
            self.notifier.notify_owner(started, say.push_sent(started, verifier.app)),
        )
        await self._tell(
            "notify_requester",
            self.notifier.notify_requester(
                started, say.step_up_requester_waiting(started, verifier.words)
            ),
        )
        await self._tell("update_request", self.notifier.update_request(started))
        task = asyncio.create_task(self._await_push(started, owner, pusher, verifier))
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)
        return started

    async def _await_push(
        self, request: Request, owner: Principal, pusher: PushVerifier, verifier: Verifier
    ) -> None:
        """Wait for the device's answer, record it (its own audit event), tell people, and
        run the change if that was the last gate."""
        result = await self._push_answer(pusher, owner, request)
        try:
            reply = await self.store.record_push(
                request,
                verifier.value,
                result.outcome.value,
                flag_window_s=self.policy.fraud.flag_window,
            )
            if reply.code is GateCode.FAILED and reply.detail == "unavailable":
                if result.detail == PUSH_ABANDONED:
                    to_owner = say.push_abandoned_owner(request)
                    to_requester = say.push_abandoned_requester(request)
                else:
                    to_owner = to_requester = say.push_unavailable(request, result.detail)
                await self._tell("notify_owner", self.notifier.notify_owner(request, to_owner))
                await self._tell(
                    "notify_requester", self.notifier.notify_requester(request, to_requester)
                )
                return
            await self._after_step_up_failure(reply)
            if reply.code is not GateCode.OK or reply.request is None:
                return
            passed = reply.request
            log.info("step_up_passed", request=passed.id, verifier=verifier.value)
            await self._tell("update_request", self.notifier.update_request(passed))
            await self._tell(
                "notify_requester",
                self.notifier.notify_requester(passed, say.push_passed(passed)),
            )
            if passed.state is RequestState.READY:
                await self.execute(passed.id)
        except TwokeyError as exc:  # refused or failed: the owner hears it in plain words
            await self._tell("notify_owner", self.notifier.notify_owner(request, exc.message))

    @staticmethod
    async def _push_answer(pusher: PushVerifier, person: Principal, request: Request) -> PushResult:
        """What the person's device answered. A broken verifier passes nothing; a push still
        waiting when this replica stops (``stop_pushes``) is recorded as abandoned: no failure
        against anyone, and a new one may be asked for at once (approving the old one on the
        phone then changes nothing)."""
        try:
            return await pusher.push_step_up(person, request, request.plan.push_timeout)
        except asyncio.CancelledError:
            log.warning("push_abandoned", request=request.id)
            return PushResult(outcome=PushOutcome.UNAVAILABLE, detail=PUSH_ABANDONED)
        except Exception as exc:
            log.error("push_failed", request=request.id, error=type(exc).__name__)
            return PushResult(outcome=PushOutcome.UNAVAILABLE, detail="the push failed")

    async def settle_pushes(self) -> None:
        """Wait for every push under way (tests)."""
        while self._pushes:
            await asyncio.gather(*list(self._pushes), return_exceptions=True)

    async def stop_pushes(self, within: float) -> None:
        """A stopping replica: pushes under way get ``within`` seconds to be answered; the rest
        are abandoned and recorded so (see ``_push_answer``), and their people told to ask
        again, instead of waiting out a push no replica still polls."""
        pending = set(self._pushes)
        if not pending:
            return
        _, left = await asyncio.wait(pending, timeout=max(within, 0.0))
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=PUSH_RECORD_S)

    async def _attesting_manager(
        self, request: Request, owner: Principal | None
    ) -> tuple[Principal | None, str]:
        """The owner's manager of record, if they may attest: an enabled person who is not the
        requester, the account, its owner or an approver of this request."""
        if owner is None or not owner.manager_id:
            return None, "the owner has no manager of record"
        try:
            manager = await self._directory(self.directory.get(owner.manager_id))
        except Unavailable:
            return None, "the directory could not be asked for the owner's manager"
        if manager is None or manager.disabled or manager.kind is not PrincipalKind.HUMAN:
            return None, "the owner's manager of record is not an active person"
        if manager.id in (request.requester_id, request.target_id, request.owner_id) or any(
            a.approver_id == manager.id for a in request.approvals
        ):
            return None, "the owner's manager is part of this request (requester or approver)"
        return manager, ""

    async def _ask_manager(
        self, request: Request, actor: str, via: str, manager: Principal
    ) -> Request | None:
        reply = await self.store.start_step_up(
            request,
            Verifier.MANAGER.value,
            actor,
            via,
            manager=manager.id,
            flag_window_s=self.policy.fraud.flag_window,
        )
        if reply.code is GateCode.SOD:  # became part of it meanwhile: try the next verifier
            return None
        await self._after_step_up_failure(reply)
        started = await self._started(request, reply)
        if reply.code is not GateCode.OK:
            return started
        log.info("step_up_started", request=started.id, verifier=Verifier.MANAGER.value)
        if await self._manager_reached(started, manager):
            to_owner = say.manager_will_call(started, manager.name)
            to_requester = say.step_up_requester_waiting(started, Verifier.MANAGER.words)
        else:
            started = await self._manager_not_asked(started)
            to_owner = say.manager_unreachable_owner(started, manager.name)
            to_requester = say.manager_unreachable_requester(started, manager.name)
        await self._tell("notify_owner", self.notifier.notify_owner(started, to_owner))
        await self._tell("notify_requester", self.notifier.notify_requester(started, to_requester))
        await self._tell("update_request", self.notifier.update_request(started))
        return started

    async def _manager_not_asked(self, request: Request) -> Request:
        """The manager's card reached no chat: the question is withdrawn (its own audit event,
        no failure), so the owner may ask again at once once the manager can be reached.
        Should Redis not record it, the question lapses as an unanswered one does."""
        log.warning("manager_unreachable", request=request.id)
        asked_at = str(request.step_up_changed_at or "")
        try:
            reply = await self.store.withdraw_unsent_code(
                request,
                Verifier.MANAGER.value,
                asked_at,
                flag_window_s=self.policy.fraud.flag_window,
            )
        except Unavailable:
            log.error("manager_question_not_withdrawn", request=request.id)
            return request
        if reply.code is not GateCode.OK:
            log.warning("manager_question_not_withdrawn", request=request.id, code=reply.code.value)
        return reply.request or request

    async def _manager_reached(self, request: Request, manager: Principal) -> bool:
        """Whether the manager's card reached them: the owner is told to expect a call only
        then (a call they were promised and that never comes is one a caller could fake)."""
        try:
            return await self.notifier.ask_manager(request, manager.id)
        except Exception as exc:
            log.error("notify_failed", what="ask_manager", error=type(exc).__name__)
            return False

    async def attest(self, manager: ChatUser, request_id: str, confirmed: bool) -> Decision:
        """The owner's manager of record answers "did you confirm it with them?"; the script
        checks they are the manager the step-up named and no requester or approver of it."""
        request_id = parse_request_id(request_id)
        caller = await self.identify(manager)
        request = await self._get(request_id)
        reply = await self.store.attest_step_up(
            request, caller.id, caller.via, confirmed, flag_window_s=self.policy.fraud.flag_window
        )
        if reply.code.is_refusal:
            await self._refused(self._reply_request(reply), caller, reply.code, "attest")
            raise NotAllowed(say.NOT_THE_MANAGER)
        if reply.code is GateCode.NO_CODE:
            raise BadInput(say.NOTHING_TO_ATTEST)
        await self._after_step_up_failure(reply)
        if reply.code is GateCode.NOOP:
            return Decision(
                request=self._reply_request(reply), changed=False, message=say.ALREADY_VERIFIED
            )
        return await self._after_gate(
            reply, caller, "Thanks: your confirmation is recorded.", what="step_up_passed"
        )

    async def _started(self, request: Request, reply: GateReply) -> Request:
        """What a step-up start answered, for the request it was tried on."""
        if reply.code is GateCode.EXPIRED:
            raise Expired(say.expired_refusal(self._reply_request(reply)))
        if reply.code is GateCode.DECIDED:
            raise AlreadyDecided(say.already(self._reply_request(reply)))
        if reply.code is GateCode.NOOP and reply.detail == "code_live":
            raise BadInput(
                f"A code for {request.id} is still live: use it, or ask again once it runs out."
            )
        if reply.code is GateCode.NOOP and reply.detail == "in_progress":
            raise BadInput(say.step_up_in_progress(request))
        if reply.code not in (GateCode.OK, GateCode.NOOP):
            raise Conflict(say.changed_meanwhile(request, reply.code))
        return self._reply_request(reply)

    async def _send_code(
        self,
        request: Request,
        actor: str,
        via: str,
        address: str,
        mail: CodeSender,
        verifier: Verifier = Verifier.EMAIL_CODE,
        *,
        fall_back: bool = False,
    ) -> Request | None:
        """Start a code step-up and send the code. None: it could not be sent, was withdrawn,
        and ``fall_back`` says the plan names another verifier to try (an SMS gateway outage
        then falls back to email, say)."""
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        digest = code_digest(self._code_key(), request.id, code)
        reply = await self.store.start_step_up(
            request,
            verifier.value,
            actor,
            via,
            code_digest=digest,
            flag_window_s=self.policy.fraud.flag_window,
        )
        await self._after_step_up_failure(reply)
        started = await self._started(request, reply)
        if reply.code is not GateCode.OK:
            return started
        try:
            await mail.send_code(address, started, code)
        except Exception as exc:  # any failure means "not sent"; the code is never logged
            log.warning(
                "step_up_code_not_sent",
                request=started.id,
                verifier=verifier.value,
                error=type(exc).__name__,
            )
            withdrawn, started = await self._withdraw_unsent(started, verifier, digest)
            if withdrawn and fall_back:
                return None
            return await self._code_not_sent(started, actor, verifier, withdrawn)
        log.info("step_up_started", request=started.id, verifier=verifier.value)
        dm = _code_sent(started, verifier, address)
        await self._tell("notify_owner", self.notifier.notify_owner(started, dm))
        await self._tell(
            "notify_requester",
            self.notifier.notify_requester(
                started, say.step_up_requester_waiting(started, verifier.words)
            ),
        )
        await self._tell("update_request", self.notifier.update_request(started))
        return started

    async def _withdraw_unsent(
        self, request: Request, verifier: Verifier, digest: str
    ) -> tuple[bool, Request]:
        """A code nobody received is withdrawn (its own audit event), so a mail or SMS gateway
        outage is no attempt and no failure against the owner, who may ask again at once.
        Should Redis not record the withdrawal, the code runs out as any unused code does."""
        withdrawn = False
        try:
            reply = await self.store.withdraw_unsent_code(
                request, verifier.value, digest, flag_window_s=self.policy.fraud.flag_window
            )
        except Unavailable:
            log.error("step_up_code_not_withdrawn", request=request.id, verifier=verifier.value)
        else:
            withdrawn = reply.code is GateCode.OK
            if reply.request is not None:
                request = reply.request
            if not withdrawn:
                log.warning(
                    "step_up_code_not_withdrawn",
                    request=request.id,
                    verifier=verifier.value,
                    code=reply.code.value,
                )
        return withdrawn, request

    async def _code_not_sent(
        self, request: Request, actor: str, verifier: Verifier, withdrawn: bool
    ) -> Request:
        """Both people hear plainly that nothing was sent, and when the owner may ask again
        (at once if the code was withdrawn, else once it runs out: fail closed)."""
        texted, minutes = verifier is Verifier.SMS_CODE, max(1, request.plan.code_ttl // 60)
        await self._tell(
            "notify_requester",
            self.notifier.notify_requester(
                request, say.code_not_sent_requester(request, texted, withdrawn, minutes)
            ),
        )
        await self._tell("update_request", self.notifier.update_request(request))
        to_owner = say.code_not_sent_owner(request, texted, withdrawn, minutes)
        if actor == request.owner_id:  # the owner asked just now: the answer is the refusal
            raise Unavailable(to_owner)
        await self._tell("notify_owner", self.notifier.notify_owner(request, to_owner))
        return request

    async def _after_step_up_failure(self, reply: GateReply) -> None:
        """WRONG, FAILED, LOCKED, NO_CODE: tell who needs to know and refuse, plainly. The
        request stays blocked; a locked step-up flagged the target in the same script."""
        code = reply.code
        if code not in (GateCode.WRONG, GateCode.FAILED, GateCode.LOCKED, GateCode.NO_CODE):
            return
        request = self._reply_request(reply)
        if code is GateCode.WRONG:
            raise BadInput(say.code_wrong(reply.detail))
        if code is GateCode.NO_CODE:
            raise BadInput(say.no_code(request))
        log.warning("step_up_failed", request=request.id, failures=request.step_up_failures)
        await self._tell("update_request", self.notifier.update_request(request))
        if code is GateCode.FAILED:
            limit = request.plan.step_up_max_failures
            await self._tell(
                "notify_requester",
                self.notifier.notify_requester(
                    request, say.step_up_failed_requester(request, request.step_up_failures, limit)
                ),
            )
            if reply.detail == "manager_denied":
                await self._alert(request, say.alert(request, say.MANAGER_DENIED_ALERT))
                raise NotAllowed(say.manager_denied(request))
            if reply.detail == "rejected":
                await self._alert(request, say.alert(request, say.PUSH_REJECTED_ALERT))
            if request.step_up_verifier in (Verifier.OKTA_PUSH.value, Verifier.DUO_PUSH.value):
                raise NotAllowed(say.push_failed(request, reply.detail))
            raise NotAllowed(say.code_failed(request, reply.detail))
        if reply.detail:  # it locked just now: flagged in this very step
            await self._alert(
                request,
                say.alert(request, "owner verification failed too often; the account is flagged"),
            )
            await self._tell(
                "notify_requester",
                self.notifier.notify_requester(request, say.step_up_locked(request)),
            )
        raise NotAllowed(say.step_up_locked(request))

    def _code_key(self) -> bytes:
        if self.step_up is None:
            raise Unavailable("Step-up verification is not configured here, so nothing changed.")
        return self.step_up.code_key

    def _code_keys(self) -> list[bytes]:
        """The key codes are issued under, then the keys before a rotation (verify only)."""
        return [self._code_key(), *(self.step_up.previous_code_keys if self.step_up else ())]

    # ---- execution (invariants 1, 3, 5) -----------------------------------------------------

    async def execute(self, request_id: str, actor: str = SYSTEM) -> GateReply:
        """Claim the request atomically (gates re-checked at Redis TIME) and act once."""
        request_id = parse_request_id(request_id)
        ran = self.journal.ran_before(request_id)
        if ran is not None:
            # This replica ran it before, yet Redis offers it again: Redis lost the claim.
            return await self._claim_vanished(ran)
        unverified = ""
        try:
            withdrawn = await self._withdraw_lapsed_gates(request_id)
        except Unavailable:
            # Whether the gates still count cannot be checked: claim it and run nothing.
            unverified, withdrawn = "directory unreachable", None
        except TwokeyError as exc:  # the directory answered, but not about one person only
            log.warning("gates_not_rechecked", request=request_id, error=type(exc).__name__)
            unverified, withdrawn = "the directory could not say who gave the gates", None
        if withdrawn is not None:
            return withdrawn
        token = secrets.token_hex(16)
        lease_ms = self.options.lease_s * 1000
        claim = await self.store.claim(request_id, actor, lease_ms, token)
        request = self._reply_request(claim)
        if claim.code in (GateCode.LAPSED, GateCode.EXPIRED):
            await self._tell("update_request", self.notifier.update_request(request))
        if claim.code is GateCode.LAPSED:
            await self._ask_owner_again_if_lapsed(request, await self.store.now())
        if claim.code is GateCode.FLAGGED:
            await self._stopped_as_flagged(request)
        if claim.code is GateCode.NOT_DURABLE:
            return await self._refuse_to_run(
                request,
                token,
                "twokey could not make its claim durable in Redis in time",
                "not_durable",
            )
        if claim.code is not GateCode.OK:
            return claim
        # One time budget from the claim on, inside the lease: whatever runs after the claim
        # (the ticket re-read, the directory, the provider) ends before a sweeper could declare
        # the execution interrupted, so no change ever lands after that.
        act_before = time.monotonic() + max(1.0, self.options.lease_s * 0.8)
        if unverified:
            return await self._refuse_to_run(request, token, unverified, "directory_unreachable")
        try:
            ticket_stale = await asyncio.wait_for(
                self._ticket_no_longer_holds(request),
                timeout=max(0.1, act_before - time.monotonic()),
            )
        except TimeoutError:
            ticket_stale = "the ticket could not be checked again in time"
        except TwokeyError as exc:  # claimed: end it truthfully now, not interrupted later
            ticket_stale = f"the ticket could not be checked again ({exc.message})"
        if ticket_stale:
            return await self._refuse_to_run(request, token, ticket_stale, "ticket_changed")
        try:
            await self.journal.begin(request, token)
        except Exception as exc:
            log.error("journal_unavailable", request=request_id, error=type(exc).__name__)
            return await self._refuse_to_run(
                request,
                token,
                "twokey could not write its execution journal",
                "journal_unavailable",
            )
        self._running.add(token)
        try:
            result = await self._run_connector(request, act_before)
            await self._note_acted(request, token, result)
            return await self._record(request, token, result)
        finally:
            self._running.discard(token)

    async def _stopped_as_flagged(self, request: Request) -> None:
        """The claim stopped it: its account was flagged after it opened. Everyone who sees
        its cards, its agent and security hear why; nothing was changed."""
        await self._tell("update_request", self.notifier.update_request(request))
        await self._alert(request, say.alert(request, say.STOPPED_AS_FLAGGED))
        await self._tell(
            "notify_requester",
            self.notifier.notify_requester(request, say.stopped_as_flagged(request)),
        )

    async def _refuse_to_run(
        self, request: Request, token: str, why: str, reason: str
    ) -> GateReply:
        """Claimed, but running now could not be recognised later: record it failed, untried."""
        result = ExecutionResult(outcome=Outcome.FAILED, detail=f"{why}; nothing was changed")
        recorded = await self.store.record_result(
            request.id,
            token,
            RequestState.FAILED,
            result.detail,
            reason,
            request.plan.dispute_window,
        )
        final = self._reply_request(recorded)
        await self._tell("update_request", self.notifier.update_request(final))
        await self._tell_outcome(final, result)
        return recorded

    async def _note_acted(self, request: Request, token: str, result: ExecutionResult) -> None:
        """What the provider answered goes to the journal and the log before Redis is asked."""
        detail = clean_text(result.detail)[:500]
        log.info(
            "provider_answered",
            request=request.id,
            ticket=request.ticket,
            action=request.action.value,
            target=request.target_id,
            outcome=result.outcome.value,
        )
        try:
            await self.journal.acted(
                request.id, token, result.outcome.value, detail, secret=result.secret is not None
            )
        except Exception as exc:  # the change is made; recording it in Redis matters more now
            log.error("journal_unavailable", request=request.id, error=type(exc).__name__)

    async def _record(self, request: Request, token: str, result: ExecutionResult) -> GateReply:
        """Record the provider's answer; whatever Redis does, the owner gets a live secret and
        security hears of a change twokey could not record (invariants 3 and 5)."""
        state = _STATE_OF[result.outcome]
        reason = _REASON_OF[result.outcome]
        detail = clean_text(result.detail)[:500]
        try:
            recorded = await _persevering(
                lambda: self.store.record_result(
                    request.id, token, state, detail, reason, request.plan.dispute_window
                )
            )
            if recorded.code not in (GateCode.OK, GateCode.LATE):
                recorded = await _persevering(
                    lambda: self.store.claim_lost(
                        request, token, result.outcome.value, detail, request.plan.dispute_window
                    )
                )
        except Unavailable as exc:
            await self._result_unrecorded(request, token, result)
            raise Unavailable(say.unrecorded_refusal(request, result.outcome.value)) from exc
        final = recorded.request or request
        log.info("executed", request=request.id, outcome=result.outcome.value, code=recorded.code)
        if recorded.code is GateCode.LATE:
            await self._alert(
                final, say.alert(final, say.answered_late(result.outcome.value, final.state))
            )
        elif (
            recorded.code in (GateCode.RESTORED, GateCode.OK)
            and final.state is RequestState.INTERRUPTED
        ):
            await self._alert(final, say.alert(final, say.claim_lost(result.outcome.value)))
        await self._deliver_secret(final, result)
        await self._disputed_while_running(final)
        # Settled only now: a process stopping before the secret was handed over leaves the
        # entry open with its secret pending, and the next one says the secret was lost.
        await self._settle(request.id, token)
        await self._tell("update_request", self.notifier.update_request(final))
        await self._tell_outcome(final, result)
        return recorded

    async def _settle(self, request_id: str, token: str) -> None:
        try:
            await self.journal.settled(request_id, token)
        except Exception as exc:  # settled again on the next sweep: recording twice is a no-op
            log.error("journal_unavailable", request=request_id, error=type(exc).__name__)

    async def _claim_vanished(self, ran: JournalEntry) -> GateReply:
        """Redis offers a request this replica already ran: end it interrupted, run nothing."""
        outcome = ran.outcome or Outcome.UNKNOWN.value
        detail = ran.detail or "the process running it stopped before the provider answered"
        reply = await self.store.claim_lost(
            ran.request, ran.token, outcome, detail, ran.request.plan.dispute_window
        )
        await self._settle(ran.request.id, ran.token)
        final = reply.request or ran.request
        log.error("claim_vanished", request=ran.request.id, code=reply.code, outcome=outcome)
        if reply.code in (GateCode.OK, GateCode.RESTORED):
            await self._alert(final, say.alert(final, say.ran_twice_refused(outcome)))
            await self._tell("update_request", self.notifier.update_request(final))
        return reply.model_copy(update={"code": GateCode.ALREADY_RAN})

    async def settle_unrecorded(self) -> int:
        """Record executions whose result Redis did not take (it was down, or the process
        running them stopped); the sweeper calls this each pass until Redis answers."""
        settled = 0
        for entry in self.journal.unsettled():
            if entry.token in self._running:
                continue
            request = entry.request
            if entry.outcome is None:
                outcome = Outcome.UNKNOWN.value
                detail = "the process running it stopped before the provider answered"
                reply = await self.store.claim_lost(
                    request, entry.token, outcome, detail, request.plan.dispute_window
                )
            else:
                outcome, detail = entry.outcome, entry.detail
                result = ExecutionResult(outcome=Outcome(outcome), detail=detail)
                reply = await self.store.record_result(
                    request.id,
                    entry.token,
                    _STATE_OF[result.outcome],
                    detail,
                    _REASON_OF[result.outcome],
                    request.plan.dispute_window,
                )
                if reply.code not in (GateCode.OK, GateCode.LATE):
                    reply = await self.store.claim_lost(
                        request, entry.token, outcome, detail, request.plan.dispute_window
                    )
            final = reply.request or request
            if entry.secret_pending:
                await self._secret_lost(final)
            await self._settle(request.id, entry.token)
            settled += 1
            log.warning("execution_settled", request=request.id, code=reply.code, outcome=outcome)
            if reply.code is GateCode.NOOP:
                continue
            await self._alert(
                final, say.alert(final, say.settled_late(outcome, detail, final.state))
            )
            await self._tell("update_request", self.notifier.update_request(final))
        return settled

    async def _secret_lost(self, request: Request) -> None:
        """The process that held a new one-time secret stopped before handing it over: it was
        never written anywhere, so nobody has it. Said in the trail, to security and to the
        owner, who needs a new one (the account may be unusable without it)."""
        log.error("secret_lost", request=request.id)
        try:
            await self.store.annotate(
                request.id, "secret_undelivered", SYSTEM, "process_stopped", "failed"
            )
        except Unavailable:
            log.error("secret_undelivered_unrecorded", request=request.id)
        await self._alert(request, say.alert(request, say.HANDOVER_LOST))
        await self._tell(
            "notify_owner", self.notifier.notify_owner(request, say.secret_lost_owner(request))
        )

    async def _withdraw_lapsed_gates(self, request_id: str) -> GateReply | None:
        """A gate counts only while its giver still holds the standing that let them give it:
        re-check approvers and the owner in the directory before claiming. Raises Unavailable
        when the directory cannot say (the caller then runs nothing)."""
        request = await self.store.get(request_id)
        if request is None or request.state is not RequestState.READY:
            return None
        lapsed, owner_lapsed, why = await self._lapsed_givers(request)
        step_up_lapsed, step_up_why = await self._attestation_lapsed(request)
        if not lapsed and not owner_lapsed and not step_up_lapsed:
            return None
        why = " ".join(part for part in (why, step_up_why) if part)
        reply = await self.store.withdraw_gates(
            request_id, lapsed, owner_lapsed, why, step_up=step_up_lapsed
        )
        if reply.code is not GateCode.OK:  # another replica withdrew them first: it tells
            return reply
        final = reply.request or request
        log.warning("gates_withdrawn", request=request_id, approvers=len(lapsed))
        await self._tell("update_request", self.notifier.update_request(final))
        await self._alert(
            final, say.alert(final, f"a gate no longer counts before execution: {why}")
        )
        await self._tell(
            "notify_requester", self.notifier.notify_requester(final, say.waiting_again(final, why))
        )
        return reply.model_copy(update={"code": GateCode.WITHDRAWN})

    async def _attestation_lapsed(self, request: Request) -> tuple[bool, str]:
        """A manager's attestation counts only while they are an active person and still the
        owner's manager of record (invariant 3): a manager who left, or was moved off the
        owner, must not keep a step-up they gave standing; the owner then verifies again."""
        manager_id = request.step_up_manager
        if request.step_up_verifier != Verifier.MANAGER.value or not manager_id:
            return False, ""
        if request.step_up_at is None:
            return False, ""
        manager = await self._directory(self.directory.get(manager_id))
        if manager is None or manager.disabled:
            name = manager.name if manager else manager_id
            return True, f"{name}'s attestation no longer counts (disabled in the directory)."
        owner = await self._directory(self.directory.get(request.owner_id))
        if owner is None or owner.manager_id != manager.id:
            return True, (
                f"{manager.name}'s attestation no longer counts (no longer the owner's manager "
                "of record)."
            )
        return False, ""

    async def _lapsed_givers(self, request: Request) -> tuple[list[str], bool, str]:
        roles = self.deciding_roles(request)
        lapsed: list[str] = []
        words: list[str] = []
        for approval in request.approvals:
            giver = await self._directory(self.directory.get(approval.approver_id))
            if giver is None or giver.disabled:
                lapsed.append(approval.approver_id)
                name = giver.name if giver else approval.approver_id
                words.append(f"{name}'s approval no longer counts (disabled in the directory)")
            elif not any(self.policy.holds_role(giver, role) for role in roles):
                lapsed.append(approval.approver_id)
                words.append(
                    f"{giver.name}'s approval no longer counts (no longer holds the "
                    f"{' or '.join(roles)} role)"
                )
        owner_lapsed = False
        if request.plan.owner_confirmation and request.owner_confirmed_at is not None:
            owner = await self._directory(self.directory.get(request.owner_id))
            if owner is None or owner.disabled:
                owner_lapsed = True
                words.append(
                    "the owner's confirmation no longer counts (disabled in the directory)"
                )
        return lapsed, owner_lapsed, "; ".join(words) + ("." if words else "")

    async def _result_unrecorded(
        self, request: Request, token: str, result: ExecutionResult
    ) -> None:
        """Redis went away after the provider acted: the owner still gets the live secret (or
        nobody would), the owner and security hear of the change now, and the journal records
        it in Redis once Redis answers again (settle_unrecorded)."""
        log.error(
            "execution_unrecorded",
            request=request.id,
            ticket=request.ticket,
            action=request.action.value,
            target=request.target_id,
            outcome=result.outcome.value,
        )
        await self._deliver_secret(request, result)
        if result.secret is not None:
            try:
                await self.journal.handed_over(request.id, token)
            except Exception as exc:  # at worst the next sweep says a delivered secret was lost
                log.error("journal_unavailable", request=request.id, error=type(exc).__name__)
        await self._alert(request, say.alert(request, say.unrecorded_alert(result.outcome.value)))
        if result.outcome is not Outcome.FAILED:
            await self._tell(
                "notify_owner",
                self.notifier.notify_owner(
                    request, say.unrecorded_owner(request, result.outcome.value)
                ),
            )

    async def _requester_gone(self, request: Request, within: float) -> str:
        """Why the agent who asked no longer stands behind the request ("" while they do): an
        agent disabled in the directory since (dismissed, or their account taken over) must
        not have their pending change run. twokey's own requests are exempt."""
        if request.requester_id == SYSTEM:
            return ""
        try:
            requester = await asyncio.wait_for(
                self.directory.get(request.requester_id), timeout=within
            )
        except Exception:  # cannot tell: nothing runs (fail closed)
            return "directory unreachable; nothing was changed"
        if requester is None or requester.disabled:
            return say.requester_gone()
        return ""

    async def _run_connector(self, request: Request, act_before: float) -> ExecutionResult:
        """Never raises: a refusal is FAILED, anything unclear is UNKNOWN (alerted, not retried).

        The time budget that started at the claim (``act_before``, monotonic) covers the
        directory lookup and the provider call, and is handed to the connector (ACT_BEFORE),
        so the change can never land after a sweeper has declared the execution interrupted.
        """
        left = max(0.1, act_before - time.monotonic())
        try:
            target = await asyncio.wait_for(self.directory.get(request.target_id), timeout=left)
        except Exception as exc:  # directory down or too slow: nothing was attempted
            log.warning("directory_unavailable", request=request.id, error=type(exc).__name__)
            return ExecutionResult(
                outcome=Outcome.FAILED, detail="directory unreachable; nothing was changed"
            )
        if target is None:
            return ExecutionResult(
                outcome=Outcome.FAILED, detail="the account is no longer in the directory"
            )
        if target.owner_of_record != request.owner_id:
            # An NHI handed to a new owner since it opened: the confirmation came from, and a
            # new secret would go to, someone who no longer owns it (invariants 2 and 5).
            log.warning("owner_changed", request=request.id, target=request.target_id)
            return ExecutionResult(outcome=Outcome.FAILED, detail=say.owner_changed(target.name))
        gone = await self._requester_gone(request, max(0.1, act_before - time.monotonic()))
        if gone:
            log.warning("requester_gone", request=request.id)
            return ExecutionResult(outcome=Outcome.FAILED, detail=gone)
        try:
            connector = self._connector_for(request.action, target)
        except NotAllowed as exc:
            return ExecutionResult(outcome=Outcome.FAILED, detail=exc.message)
        left = act_before - time.monotonic()
        if left <= 0:
            return ExecutionResult(
                outcome=Outcome.FAILED, detail="ran out of time before acting; nothing was changed"
            )
        handed = ACT_BEFORE.set(act_before)  # copied into the task (and any worker thread)
        try:
            return await asyncio.wait_for(
                connector.execute(request.action, target, request), timeout=left
            )
        except TimeoutError:
            return ExecutionResult(
                outcome=Outcome.UNKNOWN, detail=f"{connector.name} did not answer in time"
            )
        except Exception as exc:
            log.error(
                "connector_crashed",
                request=request.id,
                connector=connector.name,
                error=type(exc).__name__,
            )
            return ExecutionResult(
                outcome=Outcome.UNKNOWN, detail=f"{connector.name} failed unexpectedly"
            )
        finally:
            ACT_BEFORE.reset(handed)

    async def _deliver_secret(self, request: Request, result: ExecutionResult) -> None:
        """Invariant 5: the one-time secret goes to the owner only, and is never stored."""
        # Connectors return a secret exactly when a live credential exists (even when a later
        # step failed or lost its answer): the owner must hold it, or nobody does.
        if result.secret is None:
            return
        delivered = False
        try:
            delivered = await self.notifier.deliver_secret(
                request, result.secret, result.secret_label or "one-time secret"
            )
        except Exception as exc:
            log.error("secret_delivery_failed", request=request.id, error=type(exc).__name__)
        if not delivered:
            try:
                await self.store.annotate(
                    request.id, "secret_undelivered", SYSTEM, "delivery_failed", "failed"
                )
            except Unavailable:
                log.error("secret_undelivered_unrecorded", request=request.id)
            await self._alert(request, say.alert(request, say.UNDELIVERED_TO_OWNER))

    async def _tell_outcome(self, request: Request, result: ExecutionResult) -> None:
        """Every final outcome of a change to their account reaches the owner, the requester
        and (unless it simply completed) security."""
        await self._tell(
            "notify_owner", self.notifier.notify_owner(request, say.owner_outcome(request))
        )
        if request.state is RequestState.COMPLETED:
            await self._tell(
                "notify_requester",
                self.notifier.notify_requester(request, f"Request {request.id} completed."),
            )
            if result.attention:
                text = f"done, but needs attention: {clean_text(result.attention)[:500]}"
                await self._alert(request, say.alert(request, text))
            return
        words = say.ended_how(request)
        await self._tell(
            "notify_requester",
            self.notifier.notify_requester(
                request, f"Request {request.id} {words}: {request.outcome_detail}"
            ),
        )
        if request.state is not RequestState.INTERRUPTED:  # interrupted: alerted with its cause
            await self._alert(
                request, say.alert(request, f"execution {words}: {request.outcome_detail}")
            )

    # ---- after the change --------------------------------------------------------------------

    async def dispute(self, owner: ChatUser, request_id: str) -> Decision:
        """The owner says a completed change was not theirs: incident, flag, maybe revoke."""
        request_id = parse_request_id(request_id)
        caller = await self.identify(owner)
        request = await self._get(request_id)
        reply = await self.store.dispute(
            request_id, caller.id, caller.via, self.policy.fraud.flag_window, request.target_id
        )
        request = self._reply_request(reply)
        if reply.code.is_refusal:
            await self._refused(request, caller, reply.code, "dispute")
        if reply.code is GateCode.NOT_OWNER:
            raise NotAllowed("Only the account's owner of record can dispute this change.")
        if reply.code is GateCode.EXPIRED:
            raise Expired("The time to dispute this change has passed; contact security directly.")
        if reply.code is GateCode.DECIDED:
            raise AlreadyDecided(
                f"Request {request.id} did not change the account, so there is nothing to dispute."
            )
        if reply.code is GateCode.NOOP:
            return Decision(
                request=request,
                changed=False,
                message="You already reported this; security is on it.",
            )
        if request.state is RequestState.EXECUTING:
            await self._alert(request, say.alert(request, say.DISPUTED_WHILE_RUNNING))
            await self._tell("update_request", self.notifier.update_request(request))
            return Decision(request=request, message=say.DISPUTED_RUNNING)
        await self._alert(
            request, say.alert(request, "DISPUTED by the owner after completion: security incident")
        )
        await self._after_dispute(request)
        await self._tell("update_request", self.notifier.update_request(request))
        return Decision(request=request, message=say.DISPUTED)

    async def _after_dispute(self, request: Request) -> None:
        """A disputed change that has ended: sign the account out where the policy says."""
        if request.plan.auto_revoke_on_dispute and request.action is not Action.REVOKE_SESSIONS:
            await self._revoke_after_dispute(request)

    async def _disputed_while_running(self, request: Request) -> None:
        """The owner said "not me" while the change ran; now that it has ended, security hears
        how, and the account is signed out where the policy says (as after any dispute)."""
        if request.disputed_at is None or request.state not in MAY_HAVE_CHANGED:
            return
        await self._alert(request, say.alert(request, say.disputed_change_ended(request)))
        await self._after_dispute(request)

    async def _revoke_after_dispute(self, request: Request) -> None:
        """Sign the account out everywhere as its own request: system-opened, audited like any
        other, and needing no gates because the owner asked. Never silent when it fails."""
        try:
            revoke = await self._open_auto_revoke(request)
            done = await self.execute(revoke.id)
            final = done.request or revoke
            outcome, detail = final.state.value, f"{revoke.id}: {final.outcome_detail}"
        except TwokeyError as exc:
            outcome, detail = "failed", exc.message
        except Exception as exc:  # the dispute is already recorded; say what did not happen
            log.error("auto_revoke_failed", request=request.id, error=type(exc).__name__)
            outcome, detail = "failed", type(exc).__name__
        try:
            await self.store.annotate(
                request.id, "auto_revoke_sessions", SYSTEM, clean_text(detail)[:200], outcome
            )
        except Unavailable:
            log.error("auto_revoke_unrecorded", request=request.id, outcome=outcome)
        if outcome != RequestState.COMPLETED.value:
            await self._alert(request, say.alert(request, say.auto_revoke_failed(detail)))

    async def _open_auto_revoke(self, disputed: Request) -> Request:
        target = await self._directory(self.directory.get(disputed.target_id))
        if target is None:
            raise NotFound("the account is no longer in the directory")
        self._connector_for(Action.REVOKE_SESSIONS, target)
        now = await self.store.now()
        signals = await self.store.signals(target.id, SYSTEM, (), now)
        plan = Plan(
            rule="automatic sign-out after a dispute",
            tier="auto_revoke",
            tier_label="Automatic sign-out after a dispute",
            privileged=disputed.plan.privileged,
            owner_confirmation=False,
            approvals_needed=0,
            approver_role=disputed.plan.approver_role,
            request_ttl=max(600, self.options.lease_s * 2),
            approval_ttl=max(600, self.options.lease_s * 2),
            alert_security=False,
            approval_channels=disputed.plan.approval_channels,
            security_channels=disputed.plan.security_channels,
            dispute_window=0,
            retention=disputed.plan.retention,
            reasons=(f"the owner disputed request {disputed.id}",),
        )
        revoke = Request(
            id=self.store.new_request_id(target.id),
            ticket=disputed.ticket,
            action=Action.REVOKE_SESSIONS,
            target_id=target.id,
            target_name=target.name,
            target_kind=target.kind,
            target_system=target.system,
            owner_id=disputed.owner_id,
            requester_id=SYSTEM,
            requester_name="twokey (after the owner's dispute)",
            reason_code="owner_disputed",
            note=f"Automatic sign-out: the owner disputed request {disputed.id}.",
            plan=plan,
            created_at=now,
            expires_at=now,
        )
        reply = await self.store.open(revoke, signals, (), via=SYSTEM, role="system")
        if reply.code is not GateCode.OK or reply.request is None:
            raise Conflict(f"the sign-out request could not be opened ({reply.code})")
        log.info("auto_revoke_opened", request=reply.request.id, disputed=disputed.id)
        await self._tell("post_request", self.notifier.post_request(reply.request))
        return reply.request

    async def close_review(self, reviewer: ChatUser, request_id: str, note: str) -> Decision:
        """A security reviewer closes a break-glass review. The break-glass role is not enough:
        its holders would otherwise clear each other's emergencies."""
        request_id = parse_request_id(request_id)
        caller = await self.identify(reviewer)
        if not self.policy.holds_role(caller.principal, REVIEWER_ROLE):
            await self._review_refused(request_id, caller)
            raise NotAllowed(
                f"Closing a break-glass review needs the {REVIEWER_ROLE} role, which you do not "
                "hold (the break-glass role is not enough). Ask a security reviewer."
            )
        text = _review_note(note)
        reply = await self.store.close_review(request_id, caller.id, caller.via, text)
        if reply.code.is_refusal and reply.request is not None:
            await self._refused(reply.request, caller, reply.code, "review")
        return _review_decision(reply)

    async def _review_refused(self, request_id: str, caller: Caller) -> None:
        """Someone without the reviewer role tried to clear a break-glass use (often a fellow
        break-glass holder): audited on the request, and security hears of it."""
        try:
            reply = await self.store.annotate(
                request_id, "review_refused", caller.id, f"role:{REVIEWER_ROLE}", "refused"
            )
        except Unavailable:
            log.error("review_refusal_unaudited", request=request_id, actor=caller.id)
            return
        if reply.request is not None:
            text = say.review_refused(caller.principal.name)
            await self._alert(reply.request, say.alert(reply.request, text))

    async def close_review_as_operator(self, operator: str, request_id: str, note: str) -> Decision:
        """An operator closes a review from the CLI. The CLI cannot verify a reviewer, so it is
        recorded as the operator's own action (``operator:<name>``, a distinct audit event)
        and security is alerted, never as a security reviewer the operator named."""
        request_id = parse_request_id(request_id)
        text = _review_note(note)
        actor = f"operator:{operator}"
        reply = await self.store.close_review(request_id, actor, "cli", text, by_operator=True)
        decision = _review_decision(reply)
        if decision.changed:
            log.warning("review_closed_by_operator", request=request_id, actor=actor)
            await self._alert(
                decision.request, say.alert(decision.request, say.closed_by_operator(actor, text))
            )
        return decision

    # ---- reading -----------------------------------------------------------------------------

    async def status(self, who: ChatUser, request_id: str) -> Request:
        request_id = parse_request_id(request_id)
        caller = await self.identify(who)
        request = await self._get(request_id)
        if not self.may_view(caller.principal, request):
            raise NotFound(f"No request {request_id} that you can see.")
        return request

    def may_view(self, principal: Principal, request: Request) -> bool:
        """Who may read a request (``status``, and a face showing its card): whoever is part of
        it, or holds the role to ask, approve or escalate it."""
        if request.involves(principal.id):
            return True
        roles = {
            self.policy.requester_role,
            request.plan.approver_role,
            request.plan.escalate_to or "",
        }
        return any(self.policy.holds_role(principal, r) for r in roles if r)

    async def list_for(self, who: ChatUser) -> Listing:
        """Reads only the open requests indexed under this person or a role they hold: `list`
        costs what it shows, however many requests are open."""
        caller = await self.identify(who)
        now = await self.store.now()
        mine, to_approve, to_confirm = [], [], []
        for request in await self.store.open_requests_for(caller.id, self._roles(caller)):
            if request.requester_id == caller.id:
                mine.append(request)
            if (
                request.owner_id == caller.id
                and request.plan.owner_confirmation
                and not request.owner_gate_satisfied(now)
            ):
                to_confirm.append(request)
            if self._may_approve_now(caller.principal, request, now):
                to_approve.append(request)
        return Listing(mine=mine, to_approve=to_approve, to_confirm=to_confirm)

    def _may_approve_now(self, principal: Principal, request: Request, now: int) -> bool:
        if request.involves(principal.id) or request.approvals_gate_satisfied(now):
            return False
        try:
            self._approver_role_of(principal, request)
        except NotAllowed:
            return False
        return True

    # ---- the sweeper's use case --------------------------------------------------------------

    async def expire_due(self, limit: int = 200) -> SweepReport:
        """Expire, remind, escalate, declare interrupted, and claim what was left ready.

        Safe on any number of replicas at once: each step is one guarded script (tick.lua).
        """
        report = SweepReport()
        settled = await self.settle_unrecorded()
        if settled:
            report.changes["SETTLED"] = settled
        now = await self.store.now()
        for shard in range(self.store.shards):
            for request_id in await self.store.due(shard, now, limit):
                try:
                    reply = await self.store.tick(request_id)
                    report.count(reply.code)
                    if reply.request is not None:
                        await self._after_tick(reply.code, reply.request)
                except Unavailable as exc:
                    if not isinstance(exc, TrailDamaged):
                        raise  # Redis itself: the next pass tries everything again
                    report.changes["FAILED"] = report.changes.get("FAILED", 0) + 1
                except Exception as exc:  # one request's trouble never holds up the others
                    report.changes["FAILED"] = report.changes.get("FAILED", 0) + 1
                    log.error("sweep_request_failed", request=request_id, error=type(exc).__name__)
        return report

    async def _after_tick(self, code: GateCode, request: Request) -> None:
        if code is GateCode.EXPIRED:
            await self._tell("update_request", self.notifier.update_request(request))
            await self._tell(
                "notify_requester",
                self.notifier.notify_requester(request, say.expired_notice(request, swept=True)),
            )
        elif code is GateCode.INTERRUPTED:
            await self._tell("update_request", self.notifier.update_request(request))
            await self._alert(request, say.alert(request, say.INTERRUPTED_BY_STOP))
            await self._disputed_while_running(request)
            # Every final outcome of a change to their account reaches the owner and the agent.
            await self._tell(
                "notify_owner", self.notifier.notify_owner(request, say.owner_outcome(request))
            )
            await self._tell(
                "notify_requester",
                self.notifier.notify_requester(
                    request, f"Request {request.id} {say.ended_how(request)}."
                ),
            )
        elif code is GateCode.REMIND:
            await self._tell(
                "notify_approvers",
                self.notifier.notify_approvers(request, say.remind_approvers(request)),
            )
            if request.plan.owner_confirmation and request.owner_confirmed_at is None:
                await self._tell(
                    "notify_owner", self.notifier.notify_owner(request, say.remind_owner(request))
                )
        elif code is GateCode.ESCALATE:
            await self._tell(
                "notify_approvers", self.notifier.notify_approvers(request, say.escalated(request))
            )
            await self._alert(request, say.alert(request, "escalated after waiting"))
            await self._tell("update_request", self.notifier.update_request(request))
        elif code is GateCode.LAPSED:
            await self._tell("update_request", self.notifier.update_request(request))
            await self._ask_owner_again_if_lapsed(request, await self.store.now())
        elif code is GateCode.CLAIMABLE:
            await self.execute(request.id)

    # ---- helpers -----------------------------------------------------------------------------

    async def _get(self, request_id: str) -> Request:
        request = await self.store.get(request_id)
        if request is None:
            raise NotFound(f"No request {request_id}: check the id (they look like TK-4K7M2P9Q).")
        return request

    @staticmethod
    def _reply_request(reply: GateReply) -> Request:
        if reply.request is None:
            raise NotFound(say.NO_SUCH_REQUEST)
        return reply.request

    async def _alert(self, request: Request | None, text: str) -> None:
        await self._tell("alert_security", self.notifier.alert_security(request, text))

    @staticmethod
    async def _tell(what: str, call: Awaitable[object]) -> None:
        """Best effort: a message that fails is logged, never undoes or repeats a decision."""
        try:
            await call
        except Exception as exc:
            log.error("notify_failed", what=what, error=type(exc).__name__)


def _ticket_marks(quoted: QuotedTicket | None, number: str) -> list[str]:
    """What marks a ticket as used: the number as quoted, always (a request opened while the
    ticket system was down has nothing else, and must still meet the others), and the
    system's own id of the record when it was read (a moved Jira issue keeps its id under a
    new key, so two keys of one issue cannot back two requests)."""
    marks = [number.upper()]
    found = quoted.ticket if quoted is not None else None
    if found is not None and found.ref:
        marks.insert(0, f"id:{found.table}:{found.ref}")
    return marks


SHOWN_ON_CARDS = frozenset({"approved", "denied", "cancelled"})
"""Decisions whose cards say everything the person who took them needs to hear back."""

RECORD_RETRIES_S = (0.2, 0.5, 1.0)
"""Pauses between tries to record a result after the provider acted: a Redis restart or a
failover drops the connection once, and the record is worth a second or two."""


async def _persevering(call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call``; on Unavailable try again after each pause, then give up (raise)."""
    for pause in RECORD_RETRIES_S:
        try:
            return await call()
        except Unavailable:
            log.warning("record_retry", pause_s=pause)
            await asyncio.sleep(pause)
    return await call()


_STATE_OF = {
    Outcome.COMPLETED: RequestState.COMPLETED,
    Outcome.FAILED: RequestState.FAILED,
    Outcome.UNKNOWN: RequestState.UNKNOWN,
}
_REASON_OF = {
    Outcome.COMPLETED: "",
    Outcome.FAILED: "provider_refused",
    Outcome.UNKNOWN: "outcome_unknown",
}


def _review_note(note: str) -> str:
    text = clean_text(note)[:500]
    if not text:
        raise BadInput("Say what you reviewed: a note is required to close a review.")
    return text


def _review_decision(reply: GateReply) -> Decision:
    """Map close_review.lua's code to what the reviewer (or operator) is told."""
    request = TwoKey._reply_request(reply)
    if reply.code is GateCode.SOD:
        raise SeparationOfDuties(
            "You took part in this break-glass use (you opened or decided it, or it was about "
            "your account), so someone else must review it."
        )
    if reply.code is GateCode.NOT_FINISHED:
        raise NotAllowed(say.review_not_finished(request))
    if reply.code is GateCode.NOOP:
        return Decision(request=request, changed=False, message="That review is not open.")
    return Decision(request=request, message="Review closed.")


def _code_sent(request: Request, verifier: Verifier, address: str) -> str:
    """The owner's DM once a code went out: where it went (masked) and what to type."""
    minutes, tries = max(1, request.plan.code_ttl // 60), request.plan.code_attempts
    if verifier is Verifier.SMS_CODE:
        return say.step_up_code_texted(request, masked_phone(address), minutes, tries)
    return say.step_up_code_sent(request, masked_email(address), minutes, tries)
