"""The Notifier port on Slack's Web API: cards, DMs, thread replies, alerts, secrets.

Every card is rendered from the request the service hands over: the one its gate script just
returned, so nothing is read again. Its time is ``Request.last_change_at`` (the store's clock at
that change) and its names come from the service's name book, looked up together. An update for
an older version of a request than one this process already painted is skipped, so a late
update never paints an older state. Each card's ``channel`` + ``ts`` are kept through the
MessageLedger port, so any replica can update it. Each method is best effort: a Slack error or
rate limit is retried by the client (429 with ``Retry-After``), then logged and counted, and
never reaches back into the decision the service already stored. A card that could not be posted
is posted by the next update of the request instead (a once-only claim on the ledger, so two
replicas never post it twice).

The service stores a change (one gate script) before it tells anyone of it, so the first thing
it tells about a decision marks that decision as on record: each method here calls
:func:`app.channels.acks.told` first, so a handler can acknowledge Slack at that moment, before
the cards and messages (and any execution) that follow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog
from prometheus_client import Counter
from pydantic import SecretStr
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from app.channels.acks import told
from app.channels.attest import MANAGER_ROLE, ManagerQuestion
from app.channels.common import KeptCards
from app.channels.slack import blocks as bk
from app.channels.slack.identity import SlackPeople
from app.domain.errors import TwokeyError
from app.domain.models import Request
from app.ports import MessageLedger, MessageRef
from app.service import TwoKey

log = structlog.get_logger("twokey.slack.notifier")

PLATFORM = "slack"
POST_CLAIM_S = 60
"""How long a replica holds the right to post a missing card before another may try."""
REPAIR_DELAYS_S = (5.0, 30.0, 120.0)
"""When a card could not be posted, try again after these pauses (any update also retries)."""

SLACK_CALLS_FAILED = Counter(
    "twokey_slack_calls_failed_total",
    "Slack Web API calls that failed after the client's retries, by purpose and error.",
    ["what", "error"],
)


PAINTED_MOST = 10_000
"""Requests whose newest painted version this process remembers (then it starts afresh)."""
WEB_API_AT_ONCE = 16
"""Web API calls this notifier makes at once: the work after an ack is bounded, so a burst of
clicks cannot crowd out the acks (which make none of these calls)."""


_UPDATED: ContextVar[set[tuple[str, str]] | None] = ContextVar(
    "twokey_slack_cards_updated", default=None
)


@contextmanager
def noting_updated_cards() -> Iterator[set[tuple[str, str]]]:
    """Collect the cards, as (channel, ts), that tasks started inside this block update: a
    handler learns whether the card a person pressed now shows their decision (then it need
    not also answer them) or Slack refused the update (then it must)."""
    updated: set[tuple[str, str]] = set()
    token = _UPDATED.set(updated)
    try:
        yield updated
    finally:
        _UPDATED.reset(token)


class SlackNotifier:
    """twokey's cards and messages on Slack; keeps only message references (on the ledger)."""

    def __init__(
        self,
        client: AsyncWebClient,
        people: SlackPeople,
        ledger: MessageLedger,
        service: TwoKey,
        load: Callable[[str], Awaitable[Request | None]],
    ) -> None:
        self.client = client
        self.people = people
        self.ledger = ledger
        self.service = service
        self.policy = service.policy
        self.load = load
        """Only for repairs in the background, seconds later: the request may have moved."""
        self._painted: dict[str, int] = {}
        """Request id -> the newest version (audit event count) this process painted."""
        self._dm_channels: dict[str, str] = {}
        self._told: set[str] = set()
        """Thread lines this process has posted: no Redis round trip to skip them again."""
        self.repair_delays: tuple[float, ...] = REPAIR_DELAYS_S
        self._cards = KeptCards(PAINTED_MOST)
        """Request id -> its cards, once every card it should have is known (no re-read)."""
        self._calls = asyncio.Semaphore(WEB_API_AT_ONCE)
        self._repairs: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        """Stop background card repairs (the runtime is shutting down)."""
        tasks = list(self._repairs.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- the port ----------------------------------------------------------------------------

    async def post_request(self, request: Request) -> None:
        """The approval card, the owner's "did you ask for this?" and the requester's card."""
        told(request)
        ctx = await self._context(request)
        await self._post_missing(request, ctx, await self._refs(request.id))

    async def update_request(self, request: Request, note: str = "") -> None:
        """Every card of the request to its stored truth, then one thread line per decision."""
        told(request)
        if self._older_than_painted(request):
            return
        ctx = await self._context(request)
        # a manager's card is added outside the cards every request has (ask_manager, on
        # whichever replica asked): while a manager is asked, read where the cards are afresh
        refs = await self._refs(request.id, fresh=request.step_up_verifier == "manager")
        updated = _UPDATED.get()
        for ref in refs:
            if ref.role in bk.ROLES:
                answer = await self._slack(
                    f"update_{ref.role}",
                    self.client.chat_update(
                        channel=ref.channel,
                        ts=ref.message_id,
                        text=bk.notification_text(ref.role, request),
                        blocks=bk.card_for(ref.role, request, ctx, _question_of(ref)),
                    ),
                )
                if answer is not None and updated is not None:
                    updated.add((ref.channel, ref.message_id))
        if request.state.is_open:
            refs = await self._post_missing(request, ctx, refs)
        await self._thread_decisions(request, ctx, refs)

    async def notify_owner(self, request: Request, text: str) -> None:
        told(request)
        await self._dm(request.owner_id, text, "notify_owner")

    async def notify_requester(self, request: Request, text: str) -> None:
        told(request)
        await self._dm(request.requester_id, text, "notify_requester")

    async def notify_person(self, request: Request, principal_id: str, text: str) -> None:
        told(request)
        await self._dm(principal_id, text, "notify_person")

    async def ask_manager(self, request: Request, manager_id: str) -> bool:
        """The manager's card in their DM, where the question went as text before: posted once
        per question (whichever replica), kept on the ledger and updated like every card. A
        card of an earlier question in the same DM is painted closed first, so it keeps no
        button."""
        told(request)
        user_id = await self.people.slack_id_of(manager_id)
        if user_id is None:
            log.info("slack_person_unreachable", what="ask_manager")
            return False
        question = ManagerQuestion.of(request)
        claim = f"{request.id}:{MANAGER_ROLE}:{user_id}:{question.asked_at}"
        if not await self.ledger.claim_once("slack-post", claim, POST_CLAIM_S):
            return True  # another replica is posting this very question
        ctx = await self._context(request)
        refs = await self._refs(request.id)
        for earlier in (r for r in refs if r.role == MANAGER_ROLE):
            await self._slack(
                "update_manager",
                self.client.chat_update(
                    channel=earlier.channel,
                    ts=earlier.message_id,
                    text=bk.notification_text(MANAGER_ROLE, request),
                    blocks=bk.manager_card(request, ctx, _question_of(earlier)),
                ),
            )
        channel = await self._dm_channel(user_id)
        answer = None
        if channel is not None:
            answer = await self._slack(
                "post_manager",
                self.client.chat_postMessage(
                    channel=channel,
                    text=bk.notification_text(MANAGER_ROLE, request),
                    blocks=bk.manager_card(request, ctx, question),
                    unfurl_links=False,
                    unfurl_media=False,
                ),
            )
        if answer is None or not answer.get("ts"):
            await self.ledger.release("slack-post", claim)
            return False
        ref = MessageRef(
            platform=PLATFORM,
            role=MANAGER_ROLE,
            channel=str(answer.get("channel") or channel),
            message_id=str(answer["ts"]),
            extra={"user": user_id, **question.as_extra()},
        )
        try:
            await self.ledger.remember(request.id, ref)
        except TwokeyError:  # the card is before them all the same; only its updates are lost
            log.error("slack_card_not_remembered", request=request.id, role=MANAGER_ROLE)
        known = self._cards.get(request.id)
        if known is not None:
            self._cards.keep(request.id, [*(r for r in known if r.name != ref.name), ref])
        return True

    async def notify_approvers(self, request: Request, text: str) -> None:
        """Reminders and escalations: in the card's thread, shown in the channel too."""
        told(request)
        card = _approvals_card(await self._refs(request.id))
        if card is not None:
            await self._slack(
                "notify_approvers",
                self.client.chat_postMessage(
                    channel=card.channel,
                    thread_ts=card.message_id,
                    reply_broadcast=True,
                    text=bk.shown(text, bk.MAX_FALLBACK),
                    blocks=bk.message(text),
                    unfurl_links=False,
                    unfurl_media=False,
                ),
            )
        if request.plan.dm_approvers:
            for approver in await self._approvers(request):
                await self._dm(approver, text, "notify_approvers")

    async def deliver_secret(self, request: Request, secret: SecretStr, label: str) -> bool:
        """Invariant 5: to the owner's DM only, looked up afresh; the notification hides it."""
        told(request)
        user_id = await self.people.slack_id_of(request.owner_id, fresh=True)
        if user_id is None:
            log.warning("secret_owner_unreachable", request=request.id)
            return False
        channel = await self._dm_channel(user_id)
        if channel is None:
            return False
        sent = await self._slack(
            "deliver_secret",
            self.client.chat_postMessage(
                channel=channel,
                text=bk.fit(
                    f"twokey: your {bk.shown(label, 60)} for request {request.id} (open the "
                    "message to see it)",
                    bk.MAX_FALLBACK,
                ),
                blocks=bk.secret_blocks(request, secret.get_secret_value(), label),
                unfurl_links=False,
                unfurl_media=False,
            ),
        )
        return sent is not None

    async def alert_security(self, request: Request | None, text: str) -> None:
        told(request)
        channels = request.plan.security_channels if request else self.policy.channels.security
        channel = channels.get(PLATFORM)
        if not channel:
            log.warning("slack_no_security_channel", request=request.id if request else None)
            return
        await self._slack(
            "alert_security",
            self.client.chat_postMessage(
                channel=channel,
                text=bk.fit("twokey security alert: " + bk.shown(text, 250), bk.MAX_FALLBACK),
                blocks=bk.alert_blocks(text, request),
                unfurl_links=False,
                unfurl_media=False,
            ),
        )

    # ---- cards -------------------------------------------------------------------------------

    async def _post_missing(
        self,
        request: Request,
        ctx: bk.CardContext,
        refs: list[MessageRef],
        *,
        repair: bool = True,
    ) -> list[MessageRef]:
        """Post each card this request should have and does not: once, whichever replica."""
        refs = list(refs)
        complete = not request.plan.dm_approvers  # approvers may come and go: read each time
        for role, target in await self._destinations(request):
            if any(_is_card_for(ref, role, target) for ref in refs):
                continue
            claim = f"{request.id}:{role}:{target}"
            if not await self.ledger.claim_once("slack-post", claim, POST_CLAIM_S):
                complete = False  # another replica posts (or posted) it: read the ledger again
                continue
            ref = await self._post_card(request, ctx, role, target)
            if ref is None:
                complete = False
                await self.ledger.release("slack-post", claim)
                if repair:
                    self._repair_later(request.id)
                continue
            await self.ledger.remember(request.id, ref)
            refs.append(ref)
        if complete:
            self._cards.keep(request.id, refs)
        else:
            self._cards.forget(request.id)
        return refs

    def _repair_later(self, request_id: str) -> None:
        """Retry a card Slack refused, in the background, while the request is still open."""
        if request_id in self._repairs or not self.repair_delays:
            return
        self._repairs[request_id] = asyncio.create_task(
            self._repair(request_id), name=f"twokey-slack-repair-{request_id}"
        )

    async def _repair(self, request_id: str) -> None:
        try:
            for delay in self.repair_delays:
                await asyncio.sleep(delay)
                request = await self.load(request_id)
                if request is None or not request.state.is_open:
                    return
                refs = await self._refs(request_id)
                ctx = await self._context(request)
                refs = await self._post_missing(request, ctx, refs, repair=False)
                wanted = await self._destinations(request)
                if all(any(_is_card_for(r, role, t) for r in refs) for role, t in wanted):
                    log.info("slack_cards_repaired", request=request_id)
                    return
            log.error("slack_cards_missing", request=request_id, note="gave up retrying")
        except Exception as exc:
            log.error("slack_repair_failed", error=type(exc).__name__)
        finally:
            self._repairs.pop(request_id, None)

    async def _destinations(self, request: Request) -> list[tuple[str, str]]:
        """(role, channel id or Slack user id) for each card of this request."""
        found: list[tuple[str, str]] = []
        channel = request.plan.approval_channels.get(PLATFORM)
        if channel:
            found.append(("approvers", channel))
        elif not request.plan.dm_approvers:
            log.warning("slack_no_approval_channel", request=request.id)
        for role, principal_id in (
            ("owner", request.owner_id),
            ("requester", request.requester_id),
        ):
            user_id = await self.people.slack_id_of(principal_id)
            if user_id is not None:
                found.append((role, user_id))
        if request.plan.dm_approvers:
            for approver in await self._approvers(request):
                user_id = await self.people.slack_id_of(approver)
                if user_id is not None:
                    found.append(("approver-dm", user_id))
        return found

    async def _post_card(
        self, request: Request, ctx: bk.CardContext, role: str, target: str
    ) -> MessageRef | None:
        channel = target if role == "approvers" else await self._dm_channel(target)
        if channel is None:
            return None
        answer = await self._slack(
            f"post_{role}",
            self.client.chat_postMessage(
                channel=channel,
                text=bk.notification_text(role, request),
                blocks=bk.card_for(role, request, ctx),
                unfurl_links=False,
                unfurl_media=False,
            ),
        )
        if answer is None or not answer.get("ts"):
            return None
        extra = {} if role == "approvers" else {"user": target}
        return MessageRef(
            platform=PLATFORM,
            role=role,
            channel=str(answer.get("channel") or channel),
            message_id=str(answer["ts"]),
            extra=extra,
        )

    async def _thread_decisions(
        self, request: Request, ctx: bk.CardContext, refs: Sequence[MessageRef]
    ) -> None:
        """A short reply in the approval card's thread for each decision not yet told there."""
        card = _approvals_card(refs)
        if card is None:
            return
        keep = max(request.plan.retention, 86400)
        for key, line in bk.decision_lines(request, ctx):
            once = f"{request.id}:{key}"
            if once in self._told:
                continue
            if len(self._told) > 50_000:
                self._told.clear()
            if not await self.ledger.claim_once("slack-thread", once, keep):
                self._told.add(once)
                continue
            self._told.add(once)
            sent = await self._slack(
                "thread_reply",
                self.client.chat_postMessage(
                    channel=card.channel,
                    thread_ts=card.message_id,
                    text=f"Update on {request.id}",
                    blocks=[bk.section(line)],
                    unfurl_links=False,
                    unfurl_media=False,
                ),
            )
            if sent is None:
                self._told.discard(once)
                await self.ledger.release("slack-thread", once)

    # ---- people and DMs ----------------------------------------------------------------------

    async def _dm(self, principal_id: str, text: str, what: str) -> None:
        user_id = await self.people.slack_id_of(principal_id)
        if user_id is None:
            log.info("slack_person_unreachable", what=what)
            return
        channel = await self._dm_channel(user_id)
        if channel is None:
            return
        await self._slack(
            what,
            self.client.chat_postMessage(
                channel=channel,
                text=bk.shown(text, bk.MAX_FALLBACK),
                blocks=bk.message(text),
                unfurl_links=False,
                unfurl_media=False,
            ),
        )

    async def _dm_channel(self, user_id: str) -> str | None:
        known = self._dm_channels.get(user_id)
        if known:
            return known
        answer = await self._slack("open_dm", self.client.conversations_open(users=user_id))
        channel = (answer.get("channel") or {}).get("id") if answer is not None else None
        if not isinstance(channel, str) or not channel:
            return None
        self._dm_channels[user_id] = channel
        return channel

    async def _approvers(self, request: Request) -> list[str]:
        """People who may approve this request (for policies that DM approvers): the
        service's one rule, ``approvers_for``."""
        try:
            return [p.id for p in await self.service.approvers_for(request)]
        except Exception as exc:
            log.warning("directory_unavailable", error=type(exc).__name__)
            return []

    # ---- plumbing ----------------------------------------------------------------------------

    async def _context(self, request: Request) -> bk.CardContext:
        """The time of the request's latest change and the names its cards show."""
        names = await self.service.names.for_request(request)
        return bk.CardContext(now=request.last_change_at, names=names)

    def _older_than_painted(self, request: Request) -> bool:
        """Whether this process already painted a newer version of the request (then this
        late update would paint an older state); otherwise remember this one as the newest."""
        if request.events < self._painted.get(request.id, 0):
            return True
        if len(self._painted) > PAINTED_MOST:
            self._painted.clear()
        self._painted[request.id] = request.events
        return False

    async def _refs(self, request_id: str, *, fresh: bool = False) -> list[MessageRef]:
        """The request's cards: from memory once all were known here, else (or ``fresh``)
        from the ledger."""
        known = None if fresh else self._cards.get(request_id)
        if known is not None:
            return known
        return await self.ledger.messages_of(request_id, PLATFORM)

    async def _slack(
        self, what: str, call: Awaitable[AsyncSlackResponse]
    ) -> AsyncSlackResponse | None:
        """One Web API call; its failure is logged (method and error code, never the payload)."""
        try:
            async with self._calls:
                return await call
        except SlackApiError as exc:
            error = _error_of(exc)
            SLACK_CALLS_FAILED.labels(what, error).inc()
            log.error("slack_call_failed", what=what, error=error)
        except Exception as exc:
            SLACK_CALLS_FAILED.labels(what, type(exc).__name__).inc()
            log.error("slack_call_failed", what=what, error=type(exc).__name__)
        return None


def _error_of(exc: SlackApiError) -> str:
    response: Any = exc.response
    if response is None:
        return "unknown"
    return str(response.get("error") or f"http_{getattr(response, 'status_code', '?')}")[:60]


def _question_of(ref: MessageRef) -> ManagerQuestion | None:
    """The question a manager's card asked (kept beside its reference); None for other cards."""
    return ManagerQuestion.from_extra(ref.extra) if ref.role == MANAGER_ROLE else None


def _approvals_card(refs: Sequence[MessageRef]) -> MessageRef | None:
    return next((r for r in refs if r.role == "approvers"), None)


def _is_card_for(ref: MessageRef, role: str, target: str) -> bool:
    return ref.role == role and (ref.channel == target or ref.extra.get("user") == target)
