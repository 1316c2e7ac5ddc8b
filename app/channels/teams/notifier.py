"""The Notifier port on the Bot Connector API: cards, 1:1 messages, alerts and secrets in Teams.

Every card is rendered from the stored request (re-read at render time) and where it went (a
conversation id and an activity id) is kept through the MessageLedger port, so any replica can
update every card on every change, the sweeper's included. People are reached 1:1 through the
conversation reference remembered when they installed or first messaged twokey
(``remember_conversation``, keyed by their directory id); where there is none for the owner, the
requester and security are told instead of a silent wait.

What the notifier sends (card updates and new messages) goes out as plain JSON on the shared HTTP
session with the cached connector token (``auth.replace_activity``, ``auth.send_to_conversation``):
msrest would serialize each card through its models and send a new message through ``requests``
in a worker thread. Each call is best effort: a failure is logged by type and counted, and never
undoes a decision.

Throttling: the Bot Connector answers 429 with ``Retry-After`` when a bot sends too fast (many
cards updated at once). msrest never retries a 429 and, left alone, retries 408/5xx up to three
times silently (honouring a 503's ``Retry-After`` for up to six hours, in a worker thread). So
the same bounded rule applies to the calls made here and to msrest's clients
(``auth.bounded_retries``, used for the bot's own replies): at most :data:`SILENT_RETRIES` quick
retry, of a connection that never opened, and of a dropped connection or a 502/503/504 only for
calls safe to repeat (GET, PUT, DELETE: never a POST, which could post a message twice). A 429 is
twokey's to handle: wait what ``Retry-After`` says and try again, while the waits of one call
add up to at most :data:`THROTTLE_WAIT_S`; past that the call gives up and logs
``teams_call_gave_up`` (the next change re-renders every card anyway).

The service stores a decision before it tells anyone of it: each method of the port calls
:func:`app.channels.acks.told` first, so a button press can be answered at that moment
(bot.py), before the cards and messages that follow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import structlog
from botbuilder.schema import ActivityTypes
from botframework.connector.auth import BotFrameworkAuthentication, ClaimsIdentity
from prometheus_client import Counter
from pydantic import SecretStr

from app.channels.acks import told
from app.channels.attest import MANAGER_ROLE, ManagerQuestion
from app.channels.common import KeptAnswers, KeptCards
from app.channels.teams import replies
from app.channels.teams.auth import replace_activity, send_to_conversation
from app.channels.teams.cards import Card
from app.domain.errors import TwokeyError
from app.domain.models import PrincipalKind, Request
from app.domain.policy import Policy
from app.ports import Directory, MessageLedger, MessageRef

log = structlog.get_logger("twokey.teams.notifier")

PLATFORM = "teams"
POST_CLAIM_S = 60
SERVICE_KEY = "service:"
CARDS_KEPT = 10_000
"""Requests whose cards are kept in memory (past that the memory starts afresh)."""
CHATS_KEPT_S = 60.0
"""How long a person's 1:1 chat with twokey, once read from the ledger, is kept in memory."""
"""Ledger key prefix: the service URL last seen for a tenant (``service:<tenant id>``)."""

THROTTLE_WAIT_S = 15.0
"""The most one call waits in all for ``Retry-After`` (inside the 20 s a stopping replica gives
its tracked work)."""
THROTTLE_TRIES = 5
"""The most tries of one call while the Bot Connector answers 429 (``Retry-After: 0`` too)."""
THROTTLE_DEFAULT_S = 1.0
"""The wait when a 429 names none (doubled on each further 429)."""

TEAMS_CALLS_THROTTLED = Counter(
    "twokey_teams_calls_throttled_total",
    "Bot Connector calls answered 429 (each wait for Retry-After counts once), by purpose.",
    ["what"],
)
TEAMS_CALLS_FAILED = Counter(
    "twokey_teams_calls_failed_total",
    "Bot Connector calls that failed, by purpose and error.",
    ["what", "error"],
)


class TeamsNotifier:
    """twokey's cards and messages on Teams; keeps only message and conversation references."""

    def __init__(
        self,
        auth: BotFrameworkAuthentication,
        app_id: str,
        scope: str,
        tenant: str,
        ledger: MessageLedger,
        directory: Directory,
        policy: Policy,
        clock: Callable[[], Awaitable[int]],
        load: Callable[[str], Awaitable[Request | None]],
        names: Callable[[Request], Awaitable[Mapping[str, str]]] | None = None,
    ) -> None:
        self.auth = auth
        self.app_id = app_id
        self.scope = scope
        self.tenant = tenant
        self.ledger = ledger
        self.directory = directory
        self.policy = policy
        self.clock = clock
        self.load = load
        self.names = names
        """Directory display names for a request's cards (``TwoKey.names.for_request``)."""
        self._claims = ClaimsIdentity({"aud": app_id}, True)
        self._chats: KeptAnswers[str, tuple[str, str]] = KeptAnswers(CHATS_KEPT_S)
        self._cards = KeptCards(CARDS_KEPT)
        self.throttle_wait_s = THROTTLE_WAIT_S

    # ---- the port ----------------------------------------------------------------------------

    async def post_request(self, request: Request) -> None:
        """The approval card(s), the owner's "did you ask for this?" and the requester's receipt."""
        told(request)
        now = await self.clock()
        refs = await self._refs(request.id, fresh=True)
        names = await self._names(request)
        posted: list[MessageRef | None] = []
        for role, person in self._people(request):
            if any(r.role == role and r.extra.get("person") == person for r in refs):
                continue
            where = await self._one_to_one(person)
            if where is None:
                if role == "owner":
                    await self._owner_unreachable(request)
                continue
            posted.append(await self._post(request, role, where, now, person, names))
        channel = request.plan.approval_channels.get(PLATFORM)
        if channel and not any(r.role == "approvers" for r in refs):
            service_url = await self._service_url()
            if service_url is None:
                log.warning("teams_service_url_unknown", request=request.id)
            else:
                where = (channel, service_url)
                posted.append(await self._post(request, "approvers", where, now, "", names))
        if request.plan.dm_approvers:
            for approver in await self._approvers(request):
                if any(r.role == "approver-dm" and r.extra.get("person") == approver for r in refs):
                    continue
                where = await self._one_to_one(approver)
                if where is not None:
                    posted.append(
                        await self._post(request, "approver-dm", where, now, approver, names)
                    )
        if all(ref is not None for ref in posted):
            # every card it gets is posted, and only a manager's card is ever added later
            self._cards.keep(request.id, [*refs, *(ref for ref in posted if ref is not None)])

    async def update_request(self, request: Request, note: str = "") -> None:
        """Every card of this request to its stored truth."""
        told(request)
        request = await self._freshest(request)
        now = request.last_change_at  # the store's clock at this version's change
        names = await self._names(request)
        # a manager's card is added outside the cards every request has (ask_manager, on
        # whichever replica asked): while a manager is asked, read where the cards are afresh
        for ref in await self._refs(request.id, fresh=request.step_up_verifier == "manager"):
            if ref.role not in replies.ROLES:
                continue
            card = replies.card_for(ref.role, request, now, names=names, question=_question_of(ref))
            await self._update(ref, card, _summary(ref.role, request))

    async def notify_owner(self, request: Request, text: str) -> None:
        told(request)
        await self._tell(request.owner_id, text, "notify_owner")

    async def notify_requester(self, request: Request, text: str) -> None:
        told(request)
        await self._tell(request.requester_id, text, "notify_requester")

    async def notify_person(self, request: Request, principal_id: str, text: str) -> None:
        told(request)
        await self._tell(principal_id, text, "notify_person")

    async def ask_manager(self, request: Request, manager_id: str) -> bool:
        """The manager's card in their 1:1 chat with twokey, once per question (whichever
        replica); a card of an earlier question there is painted closed first, so it keeps no
        button. Kept on the ledger and updated like every card of the request."""
        told(request)
        where = await self._one_to_one(manager_id)
        if where is None:
            log.info("teams_person_unreachable", what="ask_manager")
            return False
        question = ManagerQuestion.of(request)
        claim = f"{request.id}:{MANAGER_ROLE}:{manager_id}:{question.asked_at}"
        try:
            if not await self.ledger.claim_once("teams-post", claim, POST_CLAIM_S):
                return True  # another replica is posting this very question
        except TwokeyError:
            return False
        now = request.last_change_at
        names = await self._names(request)
        self._cards.forget(request.id)  # a card is added: read its cards from the ledger
        for earlier in await self._refs(request.id, fresh=True):
            if earlier.role == MANAGER_ROLE and earlier.extra.get("person") == manager_id:
                card = replies.card_for(
                    MANAGER_ROLE, request, now, names=names, question=_question_of(earlier)
                )
                await self._update(earlier, card, _summary(MANAGER_ROLE, request))
        card = replies.card_for(MANAGER_ROLE, request, now, names=names, question=question)
        sent = await self._send(where[0], where[1], card, "post_manager", request, MANAGER_ROLE)
        if sent is None:
            await self._release("teams-post", claim)
            return False
        ref = MessageRef(
            platform=PLATFORM,
            role=MANAGER_ROLE,
            channel=where[0],
            message_id=sent,
            extra={"service_url": where[1], "person": manager_id, **question.as_extra()},
        )
        try:
            await self.ledger.remember(request.id, ref)
        except TwokeyError:
            log.error("teams_card_not_remembered", request=request.id, role=MANAGER_ROLE)
        return True

    async def notify_approvers(self, request: Request, text: str) -> None:
        told(request)
        channel = request.plan.approval_channels.get(PLATFORM)
        service_url = await self._service_url()
        if channel and service_url:
            await self._send(channel, service_url, replies.notice_card(text), "notify_approvers")
        if request.plan.dm_approvers:
            for approver in await self._approvers(request):
                await self._tell(approver, text, "notify_approvers")

    async def deliver_secret(self, request: Request, secret: SecretStr, label: str) -> bool:
        """Invariant 5: the owner's 1:1 chat only, its reference read afresh; never a channel."""
        told(request)
        where = await self._one_to_one(request.owner_id, fresh=True)
        if where is None:
            log.warning("secret_owner_unreachable", request=request.id, platform=PLATFORM)
            return False
        card = replies.secret_card(request, secret.get_secret_value(), label)
        sent = await self._send(
            where[0], where[1], card, "deliver_secret", summary=f"Your {label[:40]} from twokey"
        )
        return sent is not None

    async def alert_security(self, request: Request | None, text: str) -> None:
        told(request)
        channels = request.plan.security_channels if request else self.policy.channels.security
        channel = channels.get(PLATFORM)
        service_url = await self._service_url()
        if not channel or not service_url:
            log.warning("teams_no_security_channel", request=request.id if request else None)
            return
        await self._send(channel, service_url, replies.alert_card(text, request), "alert_security")

    async def _update(self, ref: MessageRef, card: Card, summary: str) -> None:
        """Replace a card in place (the Bot Connector's update activity), as plain JSON."""
        service_url = ref.extra.get("service_url", "")
        activity = {**_card_activity(card, summary), "id": ref.message_id}

        async def call(clients: Any) -> Any:
            await replace_activity(
                clients, service_url, ref.channel, ref.message_id, activity, self.scope
            )

        await self._call(f"update_{ref.role}", service_url, call)

    # ---- pieces ------------------------------------------------------------------------------

    def _people(self, request: Request) -> list[tuple[str, str]]:
        people = [("requester", request.requester_id)]
        if request.plan.owner_confirmation or request.target_kind is PrincipalKind.NHI:
            people.insert(0, ("owner", request.owner_id))
        return people

    async def _post(
        self,
        request: Request,
        role: str,
        where: tuple[str, str],
        now: int,
        person: str,
        names: Mapping[str, str],
    ) -> MessageRef | None:
        """Post one card once (whichever replica), and remember where it went. None when this
        call did not post it (another replica does, or the Bot Connector refused it)."""
        conversation, service_url = where
        try:
            if not await self.ledger.claim_once(
                "teams-post", f"{request.id}:{role}:{person or conversation}", POST_CLAIM_S
            ):
                return None
        except TwokeyError:
            return None
        card = replies.card_for(role, request, now, names=names)
        sent = await self._send(conversation, service_url, card, f"post_{role}", request, role)
        if sent is None:
            await self._release("teams-post", f"{request.id}:{role}:{person or conversation}")
            return None
        ref = MessageRef(
            platform=PLATFORM,
            role=role,
            channel=conversation,
            message_id=sent,
            extra={"service_url": service_url, "person": person},
        )
        try:
            await self.ledger.remember(request.id, ref)
        except TwokeyError:
            log.error("teams_card_not_remembered", request=request.id, role=role)
        return ref

    async def _send(
        self,
        conversation: str,
        service_url: str,
        card: Card,
        what: str,
        request: Request | None = None,
        role: str = "",
        summary: str = "",
    ) -> str | None:
        text = summary or (_summary(role, request) if request is not None else "twokey")
        activity = _card_activity(card, text)

        async def call(clients: Any) -> str | None:
            return await send_to_conversation(
                clients, service_url, conversation, activity, self.scope
            )

        sent = await self._call(what, service_url, call)
        return str(sent) if sent else None

    async def _tell(self, principal_id: str, text: str, what: str) -> None:
        where = await self._one_to_one(principal_id)
        if where is None:
            log.info("teams_person_unreachable", what=what)
            return
        await self._send(where[0], where[1], replies.notice_card(text), what)

    async def _owner_unreachable(self, request: Request) -> None:
        text = (
            f"twokey cannot ask the owner of request {request.id} in Teams: they have not "
            "installed or messaged twokey there yet. Ask them to open a chat with twokey; the "
            "request waits for their answer until it expires."
        )
        await self._tell(request.requester_id, text, "owner_unreachable")
        await self.alert_security(request, text)

    async def _one_to_one(
        self, principal_id: str, *, fresh: bool = False
    ) -> tuple[str, str] | None:
        """The person's 1:1 chat with twokey (conversation id, service URL), if they have one.

        Kept :data:`CHATS_KEPT_S` once found (a person's 1:1 chat with a bot keeps its id): the
        requester is told of each decision, and each telling would otherwise read it again.
        Someone not found yet is asked again next time (they may install twokey meanwhile).
        ``fresh``: read it again whatever is kept (a secret goes where the person is now)."""
        kept = None if fresh else self._chats.get(principal_id)
        if kept is not None:
            return kept
        try:
            ref = await self.ledger.conversation_of(PLATFORM, principal_id)
        except TwokeyError:
            return None
        if not ref or not ref.get("conversation") or not ref.get("service_url"):
            return None
        found = ref["conversation"], ref["service_url"]
        self._chats.keep(principal_id, found)
        return found

    async def _service_url(self) -> str | None:
        try:
            ref = await self.ledger.conversation_of(PLATFORM, SERVICE_KEY + self.tenant)
        except TwokeyError:
            return None
        return (ref or {}).get("service_url") or None

    async def _approvers(self, request: Request) -> list[str]:
        try:
            candidates = await self.directory.search("", limit=500)
        except Exception as exc:
            log.warning("directory_unavailable", error=type(exc).__name__)
            return []
        involved = {request.requester_id, request.target_id, request.owner_id}
        return [
            p.id
            for p in candidates
            if p.kind is PrincipalKind.HUMAN
            and not p.disabled
            and p.id not in involved
            and self.policy.holds_role(p, request.plan.approver_role)
        ]

    async def _names(self, request: Request) -> Mapping[str, str]:
        """The names its cards show; none (ids shown) when they cannot be had."""
        if self.names is None:
            return {}
        try:
            return await self.names(request)
        except Exception as exc:
            log.warning("directory_unavailable", error=type(exc).__name__)
            return {}

    async def _refs(self, request_id: str, *, fresh: bool = False) -> list[MessageRef]:
        """The request's cards: from memory when this replica posted all of them (cards are
        only ever added, each once), else (or ``fresh``) from the ledger."""
        known = None if fresh else self._cards.get(request_id)
        if known is not None:
            return known
        try:
            return await self.ledger.messages_of(request_id, PLATFORM)
        except TwokeyError:
            return []

    async def _release(self, scope: str, key: str) -> None:
        try:
            await self.ledger.release(scope, key)
        except TwokeyError:
            pass

    async def _freshest(self, request: Request) -> Request:
        try:
            stored = await self.load(request.id)
        except Exception as exc:
            log.warning("teams_reload_failed", error=type(exc).__name__)
            return request
        if stored is not None and stored.events >= request.events:
            return stored
        return request

    async def _call(
        self, what: str, service_url: str, call: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        """One Bot Connector call, tried again after each 429's ``Retry-After`` within
        :data:`THROTTLE_WAIT_S`; a failure is logged (purpose and error, never the payload)."""
        if not service_url:
            return None
        waited = 0.0
        for attempt in range(THROTTLE_TRIES):
            try:
                return await call(self.auth.create_connector_factory(self._claims))
            except Exception as exc:
                response = getattr(exc, "response", None)
                status = getattr(response, "status_code", None)
                if status == 429:
                    TEAMS_CALLS_THROTTLED.labels(what).inc()
                    pause = retry_after(response, THROTTLE_DEFAULT_S * 2**attempt)
                    if attempt + 1 < THROTTLE_TRIES and waited + pause <= self.throttle_wait_s:
                        log.info("teams_call_throttled", what=what, retry_after_s=round(pause, 2))
                        await asyncio.sleep(pause)
                        waited += pause
                        continue
                    log.error(
                        "teams_call_gave_up",
                        what=what,
                        error="http_429",
                        waited_s=round(waited, 2),
                        retry_after_s=round(pause, 2),
                    )
                error = f"http_{status}" if status else type(exc).__name__
                TEAMS_CALLS_FAILED.labels(what, error).inc()
                log.error("teams_call_failed", what=what, error=error)
                return None
        return None


def retry_after(response: Any, default: float) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), else
    ``default``; never negative."""
    headers = getattr(response, "headers", None) or {}
    value = str(headers.get("Retry-After") or "").strip()
    if not value:
        return default
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _card_activity(card: Card, summary: str) -> dict[str, Any]:
    """A message activity carrying one Adaptive Card, as the Bot Connector's JSON."""
    return {
        "type": ActivityTypes.message,
        "summary": summary[:200],
        "attachments": [{"contentType": replies.CARD_TYPE, "content": card}],
    }


def _question_of(ref: MessageRef) -> ManagerQuestion | None:
    """The question a manager's card asked (kept beside its reference); None for other cards."""
    return ManagerQuestion.from_extra(ref.extra) if ref.role == MANAGER_ROLE else None


def _summary(role: str, request: Request | None) -> str:
    """The notification line (no user-typed text: the request id and the change only)."""
    if request is None:
        return "twokey"
    what = request.action.label
    return {
        "owner": f"twokey: did you ask for this? ({what}, {request.id})",
        "requester": f"twokey: your request {request.id} ({what})",
        MANAGER_ROLE: f"twokey: did you confirm it with the owner? ({what}, {request.id})",
    }.get(role, f"twokey: approval for {what} ({request.id})")
