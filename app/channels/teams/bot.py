"""What each Teams activity does: parse -> ONE service call -> render, in the words Slack uses.

* A message is a command (``app/channels/commands.py``); in a channel or group chat people
  @mention twokey first, and that mention is stripped. The first @mention after the action is the
  target (its ``29:`` id resolved through the roster); mentions in the note are plain text. An
  empty message, or only the mention, opens the request form.
* An ``adaptiveCard/action`` invoke is a button press (Action.Execute): the one use case
  behind it (``app/channels/actions.press``, as on Slack and the playground) runs as a tracked
  task and the invoke is answered as soon as its decision is stored (``app/channels/acks.py``:
  the service's first notification about it, the call ending, or ``ANSWER_WITHIN_S``), with
  the card rendered from the request the service stored; the card updates elsewhere, the
  messages and the execution go on after the answer. A refusal (raised before anything is
  stored) answers with the card re-read and the reason on top. A ``trigger: "automatic"``
  invoke (a card refresh) only renders, whatever data it carries; botbuilder 4.17.1 drops
  ``trigger``, so it is read from the raw ``activity.value``. The form's submit is an invoke
  too (verb ``open``); it answers once ``open`` is over (its reply is the decision's message).
* Installing twokey or messaging it 1:1 remembers the conversation reference, keyed by the
  person's directory id, so twokey can later reach them 1:1 (owner confirmation, receipts,
  the secret).

Each activity id is acted on once (``MessageLedger.claim_once``): a redelivered message opens
nothing twice, and a redelivered press only renders. Answers to one person go to that person
only: in their 1:1 chat (opened for them when they wrote in a channel), never in the channel.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from botbuilder.core import InvokeResponse, TurnContext
from botbuilder.core.teams import TeamsActivityHandler
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    Attachment,
    ChannelAccount,
    ConversationParameters,
)
from pydantic import ValidationError

from app.channels.acks import Recorded, answer_on_record
from app.channels.actions import NEEDS_REASON, press, verify
from app.channels.attest import MANAGER_ROLE, ManagerQuestion
from app.channels.commands import HELP_TEXT, USAGE, Command, parse_command
from app.channels.common import ButtonAction, decode_button
from app.channels.teams import replies
from app.channels.teams.cards import Card
from app.channels.teams.identity import PLATFORM, TeamsPeople, tenant_of
from app.delivery import Delivery, Repeated, carried
from app.domain.errors import BadInput, TwokeyError
from app.domain.forms import NOTE_MAX, DenyForm, human_error
from app.domain.models import Action, ChatUser, Request
from app.ports import MessageLedger
from app.runtime import InFlight
from app.service import Decision, TwoKey

log = structlog.get_logger("twokey.teams.bot")

ACTIVITY_KEEP_S = 24 * 3600
ACTIVITY_SCOPE = "teams-activity"
"""Each activity id is acted on once (``claim_once`` scope; a press's id checked by its gate
script)."""
"""How long an activity id is remembered: longer than the Bot Framework retries one."""
ANSWER_WITHIN_S = 5.0
"""The latest a press is answered while its decision is not yet on record: it is then answered
with the card as stored, the decision goes on (tracked) and its card update follows."""
NAMES_WITHIN_S = 0.5
"""The longest a card waits for people's display names before it shows their ids."""
UNEXPECTED = "Something went wrong on twokey's side; nothing was changed. Please try again."
_TOKEN = re.compile(r"^<m(\d+)>$")
_PICKED = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,63}$")
"""One Entra object id from the people picker (several would come comma-separated)."""


@dataclass(frozen=True)
class Mention:
    user_id: str
    name: str


def split_mentions(
    text: str, mentions: Sequence[Mapping[str, Any]], bot_id: str
) -> tuple[str, list[Mention]]:
    """The command text with the bot's own mention removed and every other mention replaced by
    a one-word token ``<m0>``, ``<m1>``... (pure). A mention's display name may hold spaces."""
    found: list[Mention] = []
    for entity in mentions:
        mentioned = entity.get("mentioned") or {}
        shown = str(entity.get("text") or "")
        if not shown:
            continue
        if mentioned.get("id") == bot_id:
            text = text.replace(shown, " ", 1)
            continue
        if shown not in text:
            continue
        name = re.sub(r"</?at[^>]*>", "", shown).strip()
        text = text.replace(shown, f" <m{len(found)}> ", 1)
        found.append(Mention(str(mentioned.get("id") or ""), name))
    return " ".join(text.split()), found


def _mention_text(text: str, mentions: list[Mention]) -> str:
    """A note with its mention tokens back as the plain names (never a live mention)."""
    for index, mention in enumerate(mentions):
        text = text.replace(f"<m{index}>", mention.name)
    return text


class TwokeyBot(TeamsActivityHandler):  # type: ignore[misc]
    """The Teams activity handler: thin, every decision is the service's."""

    def __init__(
        self,
        service: TwoKey,
        people: TeamsPeople,
        ledger: MessageLedger,
        app_id: str,
        inflight: InFlight | None = None,
    ) -> None:
        self.service = service
        self.people = people
        self.ledger = ledger
        self.app_id = app_id
        self.inflight = inflight if inflight is not None else InFlight()
        """Decisions still going on after their invoke was answered (a stopping replica
        finishes them before its clients close)."""

    # ---- turns -------------------------------------------------------------------------------

    async def on_turn(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        if (
            activity.type in (ActivityTypes.message, ActivityTypes.invoke)
            and activity.id
            and not _checked_with_its_decision(activity)
        ):
            try:
                first = await self.ledger.claim_once(
                    ACTIVITY_SCOPE, delivery_id(activity), ACTIVITY_KEEP_S
                )
            except TwokeyError:
                first = False  # cannot tell: act on nothing (a press still renders)
            turn_context.turn_state["twokey.repeat"] = not first
            if not first and activity.type == ActivityTypes.message:
                log.info("teams_activity_repeated")
                return
        await super().on_turn(turn_context)

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        mentions = [
            dict(e.additional_properties or {}, type=e.type)
            for e in (activity.entities or [])
            if (e.type or "").lower() == "mention"
        ]
        bot_id = activity.recipient.id if activity.recipient else self.app_id
        text, found = split_mentions(str(activity.text or ""), mentions, bot_id)
        try:
            command = parse_command(text)
        except BadInput as exc:
            usage = "" if USAGE in exc.message else f"\n{USAGE}"
            await self._answer(turn_context, replies.notice_card(exc.message + usage))
            return
        if command.verb == "help":
            await self._answer(turn_context, replies.notice_card(HELP_TEXT, "twokey"))
            return
        if command.verb == "form":
            await self._answer(
                turn_context, replies.open_form_card(self.service.policy.reason_codes)
            )
            return
        reply = await self._guarded(self._run(turn_context, command, found))
        await self._answer(turn_context, reply)

    async def _run(self, turn: TurnContext, command: Command, found: list[Mention]) -> Card:
        me = await self._me(turn)
        if command.verb == "status":
            request = await self.service.status(me, command.request_id)
            now = await self.service.store.now()
            return replies.card_for("requester", request, now, names=await self._names(request))
        if command.verb == "list":
            listing = await self.service.list_for(me)
            lines = [f"{r.id}: {r.action.label} for {r.target_name}" for r in listing.mine]
            lines += [f"To approve: {r.id}" for r in listing.to_approve]
            lines += [f"To confirm: {r.id}" for r in listing.to_confirm]
            return replies.notice_card("\n".join(lines) or "Nothing open for you.", "Your list")
        if command.verb == "cancel":
            return replies.notice_card((await self.service.cancel(me, command.request_id)).message)
        if command.verb in ("verify", "attest"):
            return replies.notice_card((await verify(self.service, me, command)).message)
        target = await self._target(turn, command.target, found)
        note = _mention_text(command.text, found)
        decision: Decision
        if command.verb == "breakglass":
            decision = await self.service.breakglass(
                me, target, command.action, command.ticket, note
            )
        else:
            decision = await self.service.open(
                me, target, command.action, command.ticket, command.reason_code, note
            )
        return replies.notice_card(decision.message)

    async def _target(self, turn: TurnContext, token: str, found: list[Mention]) -> ChatUser | str:
        match = _TOKEN.match(token)
        if match and int(match.group(1)) < len(found):
            mention = found[int(match.group(1))]
            return await self.people.chat_user(turn, mention.user_id, who="The target")
        if token.lower().startswith("nhi:"):
            return token
        raise BadInput(
            "Name the person with an @mention (type @ and pick them), or a non-human identity "
            f"as nhi:<name>. {USAGE}"
        )

    async def _me(self, turn: TurnContext) -> ChatUser:
        """Who is acting, resolved through the roster; their 1:1 chat is remembered."""
        sender = turn.activity.from_property
        me = await self.people.chat_user(turn, str(sender.id if sender else ""))
        await self._remember_if_personal(turn, me)
        return me

    async def _remember_if_personal(self, turn: TurnContext, me: ChatUser) -> None:
        activity = turn.activity
        # only a chat Teams names personal: the secret goes where this points (fail closed)
        if activity.conversation.conversation_type != "personal":
            return
        try:
            caller = await self.service.identify(me)
        except TwokeyError:
            return
        await self._remember(caller.id, activity.conversation.id, activity)

    async def _remember(self, principal_id: str, conversation: str, activity: Activity) -> None:
        reference = {
            "conversation": conversation,
            "service_url": str(activity.service_url or ""),
            "tenant": tenant_of(activity),
            "user": str(activity.from_property.id if activity.from_property else ""),
        }
        try:
            await self.ledger.remember_conversation(PLATFORM, principal_id, reference)
        except TwokeyError:
            log.warning("teams_conversation_not_remembered")

    async def on_installation_update_add(self, turn_context: TurnContext) -> None:
        """Installed for a person: remember how to reach them 1:1 from now on."""
        await self._learn_sender(turn_context)

    async def on_conversation_update_activity(self, turn_context: TurnContext) -> None:
        await self._learn_sender(turn_context)

    async def _learn_sender(self, turn: TurnContext) -> None:
        activity = turn.activity
        if (activity.conversation.conversation_type or "") != "personal":
            return
        try:
            await self._me(turn)
        except TwokeyError as exc:
            log.info("teams_installer_unknown", code=exc.code)
        except Exception as exc:
            log.warning("teams_install_failed", error=type(exc).__name__)

    # ---- button presses ----------------------------------------------------------------------

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        if turn_context.activity.name != "adaptiveCard/action":
            return InvokeResponse(status=200, body={})
        try:
            body = await self._card_action(turn_context)
        except Exception as exc:
            log.error("teams_invoke_failed", error=type(exc).__name__)
            body = replies.invoke_message(UNEXPECTED)
        return InvokeResponse(status=200, body=body)

    async def _card_action(self, turn: TurnContext) -> dict[str, object]:
        value = _object(turn.activity.value)
        action = _object(value.get("action"))
        data = _object(action.get("data"))
        verb = str(action.get("verb") or "")
        refresh = value.get("trigger") == "automatic"
        repeated = bool(turn.turn_state.get("twokey.repeat"))
        if verb == replies.OPEN_VERB:
            if refresh or repeated:
                return replies.invoke_card(
                    replies.open_form_card(self.service.policy.reason_codes, _strings(data))
                )
            return await self._open_from_form(turn, _strings(data))
        try:
            pressed, request_id = decode_button(str(data.get("button") or ""))
            if pressed.value != verb:
                raise BadInput("This button is not one of twokey's.")
        except BadInput as exc:
            return replies.invoke_message(exc.message)
        role = replies.role_of_verb(pressed.value)
        question = await self._question_on(turn, role, request_id)
        if refresh or repeated:
            return await self._stored_card(turn, role, request_id, "", question)
        recorded = Recorded()
        task = await answer_on_record(
            self._deciding_once(turn, pressed, request_id, data),
            recorded,
            self.inflight,
            ANSWER_WITHIN_S,
            "twokey-teams-decision",
        )
        note = task.result() if task.done() else ""
        if note is None:  # this activity was acted on before: the card as it stands
            return await self._stored_card(turn, role, request_id, "", question)
        stored = recorded.request
        if stored is not None and stored.id == request_id:
            # on record: the card of the request the service told of (its gate script's
            # result, its time the store's at that change); the rest goes on, tracked. The
            # service also tells of refusals (an alert to security), so who pressed is checked
            if not await self._may_see(turn, stored):
                return replies.invoke_message(note or _unseen(request_id))
            names = await self._names(stored)
            return replies.invoke_card(
                replies.card_for(role, stored, stored.last_change_at, note, names, question)
            )
        if not task.done():
            log.warning("teams_answered_before_record", after_s=ANSWER_WITHIN_S)
        return await self._stored_card(turn, role, request_id, note, question)

    async def _stored_card(
        self,
        turn: TurnContext,
        role: str,
        request_id: str,
        note: str,
        question: ManagerQuestion | None = None,
    ) -> dict[str, object]:
        """The invoke response: the card re-read from the store, ``note`` on top; only ``note``
        (or that there is nothing to see) for someone who may not see the request."""
        request = await self.service.store.get(request_id)
        if request is None or not await self._may_see(turn, request):
            return replies.invoke_message(note or _unseen(request_id))
        now = await self.service.store.now()
        names = await self._names(request)
        return replies.invoke_card(replies.card_for(role, request, now, note, names, question))

    async def _may_see(self, turn: TurnContext, request: Request) -> bool:
        """Whether the card of ``request`` may be shown to whoever pressed: the request id in a
        button's data is the presser's to choose (any invoke, a refresh too, from any chat).
        Yes for whoever ``status`` lets read it (the service's ``may_view``: involved, or
        holding the role to ask, approve or escalate it), and for a press on one of this
        request's own cards where it was posted (whoever is in that chat already sees it)."""
        activity = turn.activity
        try:
            sender = activity.from_property
            me = await self.people.chat_user(turn, str(sender.id if sender else ""))
            caller = await self.service.identify(me)
            # the rule ``TwoKey.status`` applies, on the request in hand (no second read)
            if self.service.may_view(caller.principal, request):
                return True
        except TwokeyError:
            pass
        except Exception as exc:
            log.warning("teams_viewer_unknown", error=type(exc).__name__)
            return False
        try:
            refs = await self.ledger.messages_of(request.id, PLATFORM)
        except TwokeyError:
            return False
        pressed_on = str(activity.reply_to_id or "")
        here = str(activity.conversation.id if activity.conversation else "")
        return bool(pressed_on) and any(
            r.message_id == pressed_on and r.channel == here for r in refs
        )

    async def _question_on(
        self, turn: TurnContext, role: str, request_id: str
    ) -> ManagerQuestion | None:
        """For a manager's card, the question it asked, from its ledger reference (the card
        pressed, else the newest asked): what the answer card shows depends on it."""
        if role != MANAGER_ROLE:
            return None
        try:
            refs = await self.ledger.messages_of(request_id, PLATFORM)
        except TwokeyError:
            return None
        asked = [r for r in refs if r.role == MANAGER_ROLE]
        pressed = [r for r in asked if r.message_id == turn.activity.reply_to_id]
        found = [ManagerQuestion.from_extra(r.extra) for r in pressed or asked]
        return max((q for q in found if q is not None), key=lambda q: q.asked_at, default=None)

    async def _names(self, request: Request) -> Mapping[str, str]:
        """Directory names for the card, waited for briefly: a cold cache must not hold up an
        invoke answer (the card then shows ids; the next update names them)."""
        try:
            return await asyncio.wait_for(self.service.names.for_request(request), NAMES_WITHIN_S)
        except Exception as exc:
            log.info("teams_names_skipped", error=type(exc).__name__)
            return {}

    async def _decide(
        self, turn: TurnContext, pressed: ButtonAction, request_id: str, data: Mapping[str, Any]
    ) -> str:
        """The one use case behind the button (``actions.press``, as Slack and the playground);
        the note to show on the card: empty when it changed the request."""
        me = await self._me(turn)
        reason: str | None = None
        if pressed in NEEDS_REASON:
            reason = str(data.get("reason") or "")
            try:
                DenyForm(reason=reason)
            except ValidationError as exc:
                raise human_error(exc) from exc
        decision = await press(self.service, pressed, me, request_id, reason)
        if pressed in NEEDS_REASON or decision.changed:
            return ""  # the card re-rendered from the stored request says what happened
        return decision.message

    async def _deciding_once(
        self, turn: TurnContext, pressed: ButtonAction, request_id: str, data: Mapping[str, Any]
    ) -> str | None:
        """The decision behind a press, acted on once per activity id: the gate script checks
        (and marks) the id with the decision, in the same round trip (app/delivery.py). None:
        a redelivery, which changes nothing. A press refused before any gate script claims the
        id itself, so a redelivery of it is not refused (and audited) twice."""
        activity_id = delivery_id(turn.activity) if turn.activity.id else ""
        delivery = None
        if activity_id:
            delivery = Delivery(ACTIVITY_SCOPE, activity_id, ACTIVITY_KEEP_S, request_id)
        with carried(delivery):
            try:
                note = await self._guarded_note(self._decide(turn, pressed, request_id, data))
            except Repeated:
                log.info("teams_activity_repeated")
                return None
        if delivery is not None and not delivery.taken:
            try:
                first = await self.ledger.claim_once(
                    ACTIVITY_SCOPE, activity_id, ACTIVITY_KEEP_S, near=request_id
                )
            except TwokeyError:
                first = True  # the refusal stands either way; it is only said once more
            if not first:
                return None
        return note

    async def _guarded_note(self, work: Awaitable[str]) -> str:
        try:
            return await work
        except Repeated:
            raise
        except TwokeyError as exc:
            log.info("teams_refused", code=exc.code)
            return exc.message
        except Exception as exc:
            log.error("teams_handler_failed", error=type(exc).__name__)
            return UNEXPECTED

    # ---- the form ----------------------------------------------------------------------------

    async def _open_from_form(self, turn: TurnContext, values: dict[str, str]) -> dict[str, object]:
        policy = self.service.policy
        errors = form_errors(values, policy.reason_codes, policy.check_ticket)
        if errors:
            return replies.invoke_card(replies.open_form_card(policy.reason_codes, values, errors))
        try:
            me = await self._me(turn)
            target: ChatUser | str
            if values.get("picked"):
                # Picked in Teams' people picker: the value is their Entra object id, which
                # the roster answers for (TeamsInfo), then the directory resolves exactly one
                # person (or refuses), as for a mention.
                target = await self.people.chat_user(turn, values["picked"], who="The target")
            elif values.get("person"):
                # Named by their directory email: the directory resolves exactly one person
                # (or refuses), as for a mention; the target is named, not authenticated.
                email = values["person"]
                target = ChatUser(platform=PLATFORM, user_id=f"email:{email}", email=email)
            else:
                nhi = values["nhi"]
                target = nhi if nhi.lower().startswith("nhi:") else f"nhi:{nhi}"
            decision = await self.service.open(
                me,
                target,
                values["action"],
                values["ticket"],
                values["reason_code"],
                values.get("note", ""),
            )
        except TwokeyError as exc:
            errors = {"form": exc.message}
            return replies.invoke_card(replies.open_form_card(policy.reason_codes, values, errors))
        return replies.invoke_card(replies.notice_card(decision.message, "Request opened"))

    # ---- answering ---------------------------------------------------------------------------

    async def _guarded(self, work: Awaitable[Card]) -> Card:
        try:
            return await work
        except TwokeyError as exc:
            log.info("teams_refused", code=exc.code)
            return replies.notice_card(exc.message)
        except Exception as exc:
            log.error("teams_handler_failed", error=type(exc).__name__)
            return replies.notice_card(UNEXPECTED)

    async def _answer(self, turn: TurnContext, card: Card) -> None:
        """To the person only: in their 1:1 chat; from a channel, in a 1:1 chat opened for them."""
        activity = Activity(
            type=ActivityTypes.message,
            attachments=[Attachment(content_type=replies.CARD_TYPE, content=card)],
        )
        incoming = turn.activity
        if incoming.conversation.conversation_type == "personal":
            await turn.send_activity(activity)
            return
        try:
            client: Any = turn.turn_state.get(turn.adapter.BOT_CONNECTOR_CLIENT_KEY)
            sender = incoming.from_property
            created = await client.conversations.create_conversation(
                ConversationParameters(
                    is_group=False,
                    bot=incoming.recipient,
                    members=[ChannelAccount(id=sender.id)],
                    tenant_id=tenant_of(incoming),
                    channel_data={"tenant": {"id": tenant_of(incoming)}},
                )
            )
            await client.conversations.send_to_conversation(created.id, activity)
        except Exception as exc:
            log.warning("teams_person_not_answered", error=type(exc).__name__)


def form_errors(
    values: Mapping[str, str],
    reason_codes: list[str],
    check_ticket: Callable[[str], None],
) -> dict[str, str]:
    """Each field's problem, to show beside it (pure apart from the policy's ticket check)."""
    errors: dict[str, str] = {}
    if values.get("action") not in {a.value for a in Action}:
        errors["action"] = "Choose the change to make."
    picked, person, nhi = values.get("picked", ""), values.get("person", ""), values.get("nhi", "")
    if sum(map(bool, (picked, person, nhi))) != 1:
        errors["target"] = (
            "Pick one person (or type their email), or name one non-human identity (nhi:<name>)."
        )
    elif picked and not _PICKED.match(picked):
        errors["target"] = "Pick one person only."
    try:
        check_ticket(values.get("ticket", ""))
    except TwokeyError as exc:
        errors["ticket"] = exc.message
    if values.get("reason_code") not in reason_codes:
        errors["reason_code"] = "Choose one of the reasons."
    if len(values.get("note", "")) > NOTE_MAX:
        errors["note"] = f"The note is too long (at most {NOTE_MAX} characters)."
    return errors


def _unseen(request_id: str) -> str:
    return f"No request {request_id} that you can see."


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(data: Mapping[str, Any]) -> dict[str, str]:
    fields = ("action", "picked", "person", "nhi", "ticket", "reason_code", "note")
    return {f: str(data.get(f) or "").strip()[:2000] for f in fields}


def delivery_id(activity: Activity) -> str:
    """What makes an activity one delivery: its id within its conversation. Teams numbers a
    chat's messages itself (ids like a millisecond time), so two people's messages in two
    chats may share an id; keyed on the id alone, the second would be dropped as a repeat."""
    conversation = str(getattr(activity.conversation, "id", "") or "")
    both = f"{conversation}\n{activity.id or ''}".encode()
    return hashlib.sha256(both).hexdigest()[:32]


def _checked_with_its_decision(activity: Activity) -> bool:
    """A button press that decides (an ``adaptiveCard/action`` invoke, not the request form,
    not a refresh): its activity id is checked by the gate script with the decision instead of
    a claim of its own first (``TwokeyBot._deciding_once``); a refresh only renders."""
    if activity.type != ActivityTypes.invoke or activity.name != "adaptiveCard/action":
        return False
    value = _object(activity.value)
    if value.get("trigger") == "automatic":
        return True
    return str(_object(value.get("action")).get("verb") or "") != replies.OPEN_VERB
