"""What each Slack interaction does: parse -> ONE service call, acked once on record -> render.

A 200 tells Slack (and so the person) that twokey has the interaction; a decision it answers
for must survive this process stopping. So a command, a click or a form that changes something
is acknowledged once its decision is stored: when the service first tells anyone of it (it
stores, then tells), or when the call is over, or after ``ACK_WITHIN_S`` at the latest (Slack
allows 3 seconds; work still under way then goes on, and a stopping replica finishes it). Only
re-doable work follows the ack: cards and messages (re-rendered from the stored request) and the
execution (claimed atomically; a ready request nobody claimed is taken by the sweeper). Answers
that *are* the ack (help, a malformed command, a form error, picker options) need no slow
look-up. The person who typed or clicked is always answered: by the command's ``response_url``,
or an ephemeral in the channel, or a DM, whichever Slack accepts; an answer Slack refuses is
logged and never undoes a decision.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from app.channels.acks import Recorded, answer_on_record
from app.channels.actions import NEEDS_REASON, press, verify
from app.channels.commands import USAGE, Command, parse_command
from app.channels.common import ButtonAction, decode_button
from app.channels.slack import blocks as bk
from app.channels.slack.guard import Deliveries, is_slack_hook
from app.channels.slack.identity import SlackPeople
from app.channels.slack.notifier import noting_updated_cards
from app.delivery import Repeated, carried
from app.domain.errors import BadInput, TwokeyError
from app.domain.forms import NOTE_MAX, DenyForm, clean_text, human_error, parse_request_id
from app.domain.models import Action, ChatUser, Principal
from app.domain.policy import Policy
from app.logs import quiet_logger
from app.runtime import InFlight
from app.service import TwoKey

log = structlog.get_logger("twokey.slack.handlers")

MENTION = re.compile(r"<@([UW][A-Z0-9]{2,30})(?:\|[^<>]{0,80})?>")
UNEXPECTED = (
    "twokey hit an unexpected error and may not have finished. Check `/twokey status "
    "<request-id>` before trying again."
)
AFTER_ACK_SLOTS = 8
"""How many interactions are worked on at once until their decision is on record. A burst of
clicks then queues cheaply instead of crowding the event loop; one still queued at
``ACK_WITHIN_S`` is acked and done in turn. The cards and messages after an ack hold no slot
(the notifier bounds its own Web API calls), so an ack never waits behind them."""
ACK_WITHIN_S = 2.0
"""The latest an interaction is acked: inside Slack's 3 s, with room for the network."""
RESPOND_TIMEOUT_S = 10
"""How long an answer through a ``response_url`` may take (it is after the ack)."""
NHI_SEARCH_S = 2.0
"""Picker options are answered inside the ack, so the directory gets at most this long."""

Blocks = list[bk.Block]


def typed(text: str) -> str:
    """A command's text as typed: Slack sends a typed ``&``, ``<`` and ``>`` as ``&amp;``,
    ``&lt;`` and ``&gt;``. Decoded once here, the request keeps what the person typed and every
    card escapes it once (not twice: ``R&amp;amp;D``); mentions arrive raw and are kept."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def target_of(token: str) -> tuple[str, str]:
    """("slack", user id) for a mention as Slack sends it, ("nhi", token) for ``nhi:<name>``."""
    found = MENTION.fullmatch(token)
    if found:
        return "slack", found.group(1)
    if token.lower().startswith("nhi:") and len(token) > 4:
        return "nhi", token
    raise BadInput(
        "Name the person with an @-mention (pick them from Slack's list so it sends their id) "
        "or a non-human identity as nhi:<name>."
    )


@dataclass(frozen=True)
class OpenFields:
    """The request form, read and checked without any look-up (so errors show in place)."""

    action: str
    person: str | None
    nhi: str | None
    ticket: str
    reason_code: str
    note: str


def _selected(values: dict[str, Any], block: str, action_id: str = "value") -> dict[str, Any]:
    state = (values.get(block) or {}).get(action_id) or {}
    return state if isinstance(state, dict) else {}


def read_open_form(
    values: dict[str, Any], policy: Policy
) -> tuple[OpenFields | None, dict[str, str]]:
    """The submitted form's fields, or Slack ``response_action: errors`` per block."""
    errors: dict[str, str] = {}
    action = str((_selected(values, "action").get("selected_option") or {}).get("value") or "")
    person = _selected(values, "person").get("selected_user") or None
    nhi = (_selected(values, "nhi", bk.NHI_PICKER).get("selected_option") or {}).get("value")
    ticket = str(_selected(values, "ticket").get("value") or "").strip()
    reason = str((_selected(values, "reason").get("selected_option") or {}).get("value") or "")
    note = clean_text(str(_selected(values, "note").get("value") or ""))
    try:
        chosen = Action(action)
    except ValueError:
        errors["action"] = "Choose one of the actions in the list."
        chosen = None
    if person and nhi:
        errors["person"] = "Pick a person or a non-human identity, not both."
    elif not person and not nhi:
        errors["person"] = "Pick the person (or the non-human identity below) to change."
    elif chosen is not None and chosen.for_nhi and person:
        errors["person"] = f"{chosen.value} is for non-human identities: pick one below instead."
    elif chosen is not None and not chosen.for_nhi and nhi:
        errors["nhi"] = f"{chosen.value} applies to people: pick a person above instead."
    try:
        policy.check_ticket(ticket)
    except BadInput:
        errors["ticket"] = (
            "That is not a ticket id this deployment accepts "
            f"(it must match {policy.ticket_pattern[:80]})."
        )
    if reason not in policy.reason_codes:
        errors["reason"] = "Choose one of the reasons in the list."
    if len(note) > NOTE_MAX:
        errors["note"] = f"The note is too long (at most {NOTE_MAX} characters)."
    if errors:
        return None, errors
    fields = OpenFields(
        action=action,
        person=str(person) if person else None,
        nhi=str(nhi) if nhi else None,
        ticket=ticket,
        reason_code=reason,
        note=note,
    )
    return fields, {}


def _metadata(view: dict[str, Any]) -> dict[str, str]:
    try:
        data = json.loads(str(view.get("private_metadata") or "{}"))
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}


def _card_of(body: dict[str, Any]) -> tuple[str, str] | None:
    """(channel, ts) of the message whose button was pressed, if it was a message."""
    container = body.get("container")
    if not isinstance(container, dict):
        return None
    channel, ts = container.get("channel_id"), container.get("message_ts")
    if container.get("type") != "message" or not channel or not ts:
        return None
    return str(channel), str(ts)


def _user_of(body: dict[str, Any]) -> str:
    user = body.get("user")
    if isinstance(user, dict):
        return str(user.get("id") or "")
    return str(body.get("user_id") or "")


def _channel_of(body: dict[str, Any]) -> str | None:
    channel = body.get("channel")
    if isinstance(channel, dict) and channel.get("id"):
        return str(channel["id"])
    container = body.get("container") or {}
    if container.get("channel_id"):
        return str(container["channel_id"])
    return str(body["channel_id"]) if body.get("channel_id") else None


class SlackHandlers:
    """The listeners' bodies; app.py registers them with Bolt."""

    def __init__(
        self,
        service: TwoKey,
        people: SlackPeople,
        client: AsyncWebClient,
        deliveries: Deliveries,
        *,
        slots: int = AFTER_ACK_SLOTS,
        inflight: InFlight | None = None,
        api_url: str = "https://slack.com/api/",
    ) -> None:
        self.service = service
        self.people = people
        self.client = client
        self.deliveries = deliveries
        self.slots = asyncio.Semaphore(slots)
        """Decisions worked on at once; the rest wait, parked, in order."""
        self.inflight = inflight if inflight is not None else InFlight()
        """Work a stopping replica must finish before its clients close."""
        self.api_url = api_url
        """Besides Slack's hooks host, the one origin a ``response_url`` may point to."""
        self.hook_log = quiet_logger("twokey.slack.webhook", logging.WARNING)
        """slack_sdk's webhook client logs the URL, a credential, below WARNING."""

    # ---- /twokey ----------------------------------------------------------------------------

    async def command(
        self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, retry: str | None = None
    ) -> None:
        try:
            command = parse_command(typed(str(body.get("text") or "")))
        except BadInput as exc:
            usage = "" if USAGE in exc.message else f"\n{USAGE}"
            await ack(response_type="ephemeral", text=bk.shown(exc.message + usage, 2900))
            return
        if command.verb == "help":
            await ack(response_type="ephemeral", text=bk.HELP)
            return
        if command.verb == "form":
            await ack()
            if await self._first(body, retry):
                await self._open_form(body)
            return
        reply = await self._acked_on_record(ack, body, retry, self._run_command(command, body))
        if reply is not None:
            await self._answer_command(body, reply)

    async def _run_command(self, command: Command, body: dict[str, Any]) -> Blocks:
        me = await self.people.chat_user(_user_of(body))
        if command.verb == "status":
            request = await self.service.status(me, command.request_id)
            ctx = bk.CardContext(
                now=await self.service.now(), names=await self.service.names.for_request(request)
            )
            return bk.request_status(request, ctx)
        if command.verb == "list":
            listing = await self.service.list_for(me)
            now = await self.service.now()
            return bk.listing_blocks(listing.mine, listing.to_approve, listing.to_confirm, now)
        if command.verb == "cancel":
            return bk.message((await self.service.cancel(me, command.request_id)).message)
        if command.verb in ("verify", "attest"):
            return bk.message((await verify(self.service, me, command)).message)
        target = await self._target(command.target)
        if command.verb == "breakglass":
            decision = await self.service.breakglass(
                me, target, command.action, command.ticket, command.text
            )
        else:
            decision = await self.service.open(
                me, target, command.action, command.ticket, command.reason_code, command.text
            )
        return bk.message(decision.message)

    async def _target(self, token: str) -> ChatUser | str:
        kind, value = target_of(token)
        if kind == "slack":
            return await self.people.chat_user(value, who="The target")
        return value

    async def _answer_command(self, body: dict[str, Any], reply: Blocks) -> None:
        text = _fallback(reply)
        url = body.get("response_url")
        if url:
            try:
                status = await self.answer_at_hook(str(url), text, reply)
                if status == 200:
                    return
                log.warning("slack_respond_refused", status=status)
            except Exception as exc:
                log.warning("slack_respond_failed", error=type(exc).__name__)
        await self._tell(_user_of(body), _channel_of(body), reply)

    async def answer_at_hook(self, url: str, text: str, reply: Blocks) -> int:
        """An ephemeral answer through a ``response_url``, on the Web API client's HTTP session
        (kept-alive connections; Bolt's ``respond`` opens a new session for each answer).
        A url off Slack is not followed (0: the person is answered another way)."""
        if not is_slack_hook(url, self.api_url):
            log.warning("slack_response_url_refused")
            return 0
        sent = await AsyncWebhookClient(
            url=url,
            timeout=RESPOND_TIMEOUT_S,
            session=self.client.session,
            logger=self.hook_log,
        ).send_dict(
            {
                "text": text,
                "blocks": reply,
                "response_type": "ephemeral",
                "replace_original": False,
            }
        )
        return sent.status_code

    # ---- the request form -------------------------------------------------------------------

    async def _open_form(self, body: dict[str, Any]) -> None:
        meta = json.dumps({"channel": _channel_of(body) or ""})
        view = bk.open_form(self.service.policy.reason_codes, meta)
        try:
            await self.client.views_open(trigger_id=str(body.get("trigger_id") or ""), view=view)
        except Exception as exc:
            log.warning("slack_form_not_opened", error=_code(exc))
            await self._tell(
                _user_of(body),
                _channel_of(body),
                bk.message(
                    "The request form could not open (Slack allows 3 seconds). Type /twokey "
                    "again, or use the one-line form: " + USAGE
                ),
            )

    async def form_submitted(
        self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], retry: str | None = None
    ) -> None:
        values = (view.get("state") or {}).get("values") or {}
        fields, errors = read_open_form(values, self.service.policy)
        if fields is None:
            await ack(response_action="errors", errors=errors)
            return
        channel = _metadata(view).get("channel")
        reply = await self._acked_on_record(
            ack, body, retry, self._open_from_form(_user_of(body), fields), channel
        )
        if reply is not None:
            await self._tell(_user_of(body), channel, reply)

    async def _open_from_form(self, user_id: str, fields: OpenFields) -> Blocks:
        me = await self.people.chat_user(user_id)
        target: ChatUser | str
        if fields.person:
            target = await self.people.chat_user(fields.person, who="The target")
        else:
            target = str(fields.nhi)
        decision = await self.service.open(
            me, target, fields.action, fields.ticket, fields.reason_code, fields.note
        )
        return bk.message(decision.message)

    async def nhi_options(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The NHI picker's options: answered in the ack, so the look-ups get 2 seconds."""
        query = clean_text(str(body.get("value") or ""))[:64]
        try:
            found = await asyncio.wait_for(self._nhis_for(_user_of(body), query), NHI_SEARCH_S)
        except TwokeyError as exc:
            log.info("nhi_search_refused", code=exc.code)
            found = []
        except Exception as exc:
            log.warning("nhi_search_failed", error=type(exc).__name__)
            found = []
        await ack(options=bk.nhi_options((p.id, p.name) for p in found))

    async def _nhis_for(self, user_id: str, query: str) -> list[Principal]:
        """Only someone who may open a request browses NHIs (``TwoKey.search_nhis``)."""
        return await self.service.search_nhis(await self.people.chat_user(user_id), query)

    # ---- buttons ----------------------------------------------------------------------------

    async def button(self, ack: AsyncAck, body: dict[str, Any], retry: str | None = None) -> None:
        user_id, channel = _user_of(body), _channel_of(body)
        pressed = (body.get("actions") or [{}])[0]
        try:
            verb, request_id = decode_button(pressed.get("value"))
            if pressed.get("action_id") != f"{bk.ACTION_PREFIX}{verb.value}":
                raise BadInput("This button is not one of twokey's.")
        except BadInput as exc:
            await ack()
            if await self._first(body, retry):
                await self._tell(user_id, channel, bk.message(exc.message), body)
            return
        if verb in NEEDS_REASON:
            await ack()
            if await self._first(body, retry):
                await self._open_deny(body, request_id)
            return
        with noting_updated_cards() as updated:
            reply = await self._acked_on_record(
                ack,
                body,
                retry,
                self._decide(verb, user_id, request_id, card=(_card_of(body), updated)),
                near=request_id,
            )
        if reply:
            await self._tell(user_id, channel, reply, body)

    async def _decide(
        self,
        verb: ButtonAction,
        user_id: str,
        request_id: str,
        reason: str | None = None,
        *,
        card: tuple[tuple[str, str] | None, set[tuple[str, str]]] = (None, set()),
    ) -> Blocks:
        """The decision's answer to the person; none when ``card`` (the card they pressed, and
        the cards updated meanwhile) shows they were answered by that card's update."""
        me = await self.people.chat_user(user_id)
        decision = await press(self.service, verb, me, request_id, reason)
        pressed, updated = card
        if decision.on_cards and pressed is not None and pressed in updated:
            return []
        return bk.message(decision.message)

    async def _open_deny(self, body: dict[str, Any], request_id: str) -> None:
        card = _card_of(body)
        meta = json.dumps(
            {
                "request": request_id,
                "channel": _channel_of(body) or "",
                "ts": card[1] if card else "",
            }
        )
        try:
            await self.client.views_open(
                trigger_id=str(body.get("trigger_id") or ""), view=bk.deny_form(request_id, meta)
            )
        except Exception as exc:
            log.warning("slack_form_not_opened", error=_code(exc))
            await self._tell(
                _user_of(body),
                _channel_of(body),
                bk.message("The deny form could not open; press Deny again."),
                body,
            )

    async def deny_submitted(
        self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], retry: str | None = None
    ) -> None:
        meta = _metadata(view)
        reason = str(
            _selected((view.get("state") or {}).get("values") or {}, "reason").get("value") or ""
        )
        try:
            request_id = parse_request_id(meta.get("request", ""))
            DenyForm(reason=reason)
        except BadInput as exc:
            await ack(response_action="errors", errors={"reason": exc.message[:150]})
            return
        except ValidationError as exc:
            message = human_error(exc).message.removeprefix("reason: ")
            await ack(response_action="errors", errors={"reason": f"The reason {message}"[:150]})
            return
        user_id = _user_of(body)
        pressed = (meta["channel"], meta["ts"]) if meta.get("channel") and meta.get("ts") else None
        with noting_updated_cards() as updated:
            reply = await self._acked_on_record(
                ack,
                body,
                retry,
                self._decide(
                    ButtonAction.DENY, user_id, request_id, reason, card=(pressed, updated)
                ),
                meta.get("channel"),
                near=request_id,
            )
        if reply:
            await self._tell(user_id, meta.get("channel"), reply)

    # ---- acknowledging -----------------------------------------------------------------------

    async def _acked_on_record(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        retry: str | None,
        call: Coroutine[Any, Any, Blocks],
        channel: str | None = None,
        *,
        near: str | None = None,
    ) -> Blocks | None:
        """Run one service call and ack once its decision is stored (see the module docstring).

        ``near``: the request a decision is about. Its gate script then checks this delivery
        with the decision (app/delivery.py), in the same round trip; without it, the delivery is
        claimed first. Returns the reply to show, or None when there is nothing to say (a
        repeated delivery, or one that could not be checked, whose answer is already given).
        """
        recorded = Recorded()

        async def work() -> Blocks | None:
            if near is None:
                if not await self._first(body, retry, channel):
                    call.close()
                    return None
                return await self._in_slot(call, recorded)
            delivery = self.deliveries.carried(body, near)
            try:
                with carried(delivery):
                    reply = await self._in_slot(call, recorded)
            except Repeated:
                self.deliveries.repeated(body, retry)
                return None
            if delivery is not None and not delivery.taken:
                # refused before any gate script: claim the delivery now, answer it once
                if not await self._first(body, retry, channel, near=near):
                    return None
            return reply

        task = await answer_on_record(
            work(), recorded, self.inflight, ACK_WITHIN_S, "twokey-slack-decision"
        )
        if not (task.done() or recorded.is_set()):
            log.warning("slack_acked_before_record", after_s=ACK_WITHIN_S)
        await ack()
        return await task

    async def _in_slot(self, call: Coroutine[Any, Any, Blocks], recorded: Recorded) -> Blocks:
        """Run ``call`` holding one of ``slots`` until its decision is on record (or it ends):
        a decision waits only for decisions, never for the cards and messages after an ack."""
        await self.slots.acquire()
        held = True

        def free(_: object = None) -> None:
            nonlocal held
            if held:
                held = False
                self.slots.release()

        watch = asyncio.ensure_future(recorded.wait())
        watch.add_done_callback(free)
        try:
            return await self._guarded(call)
        finally:
            watch.cancel()
            free()

    # ---- answering ---------------------------------------------------------------------------

    async def _first(
        self,
        body: dict[str, Any],
        retry: str | None,
        channel: str | None = None,
        *,
        near: str | None = None,
    ) -> bool:
        """Act on each delivery once; if that cannot be checked, act on none (fail closed)."""
        try:
            return await self.deliveries.first(body, retry, near=near)
        except TwokeyError as exc:
            await self._tell(
                _user_of(body), channel or _channel_of(body), bk.message(exc.message), body
            )
            return False

    async def _guarded(self, work: Awaitable[Blocks]) -> Blocks:
        """A refusal becomes its message; anything unexpected is logged by type, never raised
        (a repeated delivery is raised: it is not answered)."""
        try:
            return await work
        except Repeated:
            raise
        except TwokeyError as exc:
            log.info("slack_refused", code=exc.code)
            return bk.message(exc.message)
        except Exception as exc:
            log.error("slack_handler_failed", error=type(exc).__name__)
            return bk.message(UNEXPECTED)

    async def _tell(
        self,
        user_id: str,
        channel: str | None,
        reply: Blocks,
        body: dict[str, Any] | None = None,
    ) -> None:
        """An ephemeral to the person; else the click's response_url; else a DM; else a log."""
        text = _fallback(reply)
        if channel:
            try:
                await self.client.chat_postEphemeral(
                    channel=channel, user=user_id, text=text, blocks=reply
                )
                return
            except Exception as exc:
                log.info("slack_ephemeral_refused", error=_code(exc))
        url = (body or {}).get("response_url")
        if url:
            try:
                if await self.answer_at_hook(str(url), text, reply) == 200:
                    return
            except Exception as exc:
                log.info("slack_respond_failed", error=type(exc).__name__)
        try:
            await self.client.chat_postMessage(channel=user_id, text=text, blocks=reply)
        except Exception as exc:
            log.warning("slack_person_not_answered", error=_code(exc))


def _fallback(reply: Sequence[bk.Block]) -> str:
    """The notification text of a reply: its first text, already escaped, cut short."""
    for block in reply:
        text = (block.get("text") or {}).get("text")
        if isinstance(text, str) and text:
            return bk.fit(text, bk.MAX_FALLBACK)
    return "twokey"


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            return str(response.get("error") or type(exc).__name__)[:60]
        except Exception:
            return type(exc).__name__
    return type(exc).__name__
