"""The Teams bot's handlers, turn by turn, through botbuilder's own TestAdapter and TestFlow.

No HTTP in front: each activity goes straight to ``TwokeyBot.on_turn`` as botbuilder's test
adapter delivers it, and what the bot sends back (replies, invoke responses) lands in the
adapter's buffer, where TestFlow reads it. Everything behind the bot is real: the service on
Redis (``build_core``), the message ledger on Redis, and the roster look-ups through botbuilder's
connector client, with production credentials, against the Bot Framework stand-in.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from botbuilder.core import BotAdapter, TurnContext
from botbuilder.core.adapters import TestAdapter, TestFlow
from botbuilder.core.middleware_set import Middleware
from botbuilder.schema import Activity
from botframework.connector.auth import ClaimsIdentity
from teams_standin import APP_ID, APPROVALS, BOT_ID, HELPDESK, TENANT, TeamsStandIn, dm_of
from teams_world import buttons, endpoints, teams_policy, teams_settings, walk

from app.channels.teams import replies
from app.channels.teams.auth import ConnectorTokens, authentication, bot_config
from app.channels.teams.bot import TwokeyBot
from app.channels.teams.identity import TeamsPeople
from app.connectors.sandbox import SandboxDirectory
from app.domain.models import Principal, Request, RequestState
from app.store.ledger import RedisMessageLedger
from tests.helpers import Core, build_core, chat

CARD = "application/vnd.microsoft.card.adaptive"


class ConnectorClientIn(Middleware):  # type: ignore[misc]
    """Puts a Bot Connector client in every turn, as CloudAdapter does (roster look-ups)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def on_turn(self, context: TurnContext, logic: Callable[[], Awaitable[None]]) -> None:
        context.turn_state[BotAdapter.BOT_CONNECTOR_CLIENT_KEY] = self.client
        await logic()


@dataclass
class Handlers:
    core: Core
    bot: TwokeyBot
    adapter: TestAdapter
    teams: TeamsStandIn

    def activity(self, person: str, conversation: str | None = None, **fields: Any) -> Activity:
        """An activity from ``person`` (their 1:1 chat unless a channel is named), read from
        JSON as the HTTP endpoint reads it."""
        conversation = conversation or dm_of(person)
        personal = conversation.startswith("a:")
        raw = {
            "channelId": "msteams",
            "serviceUrl": self.teams.url + "/",
            "from": {
                "id": f"29:{person}",
                "name": person.capitalize(),
                "aadObjectId": f"aad-{person}",
            },
            "recipient": {"id": BOT_ID, "name": "twokey"},
            "conversation": {
                "id": conversation,
                "conversationType": "personal" if personal else "channel",
                "tenantId": TENANT,
                "isGroup": not personal,
            },
            "channelData": {"tenant": {"id": TENANT}},
            **fields,
        }
        return Activity().deserialize(raw)

    def says(
        self, person: str, text: str, mentions: tuple[str, ...] = (), **options: Any
    ) -> Activity:
        entities = [
            {
                "type": "mention",
                "text": f"<at>{'twokey' if name == 'twokey' else name.capitalize()}</at>",
                "mentioned": {
                    "id": BOT_ID if name == "twokey" else f"29:{name}",
                    "name": name.capitalize(),
                },
            }
            for name in mentions
        ]
        return self.activity(person, type="message", text=text, entities=entities, **options)

    def presses(
        self, who: str, card: dict[str, Any], verb: str, trigger: str = "manual", **inputs: Any
    ) -> Activity:
        """The ``adaptiveCard/action`` invoke Teams sends when ``who`` presses ``verb``; ``inputs``
        are the card's input values (a form's fields)."""
        button = buttons(card).get(verb)
        assert button is not None, f"no {verb} button on this card"
        value = {
            "action": {
                "type": "Action.Execute",
                "verb": verb,
                "data": {**button["data"], **inputs},
            },
            "trigger": trigger,
        }
        return self.activity(who, type="invoke", name="adaptiveCard/action", value=value)

    async def send(self, activity: Activity) -> TestFlow:
        return await self.adapter.send(activity)

    async def open_requests_of(self, person: str) -> list[Request]:
        """What ``person`` has open, read through the service's own index."""
        return (await self.core.service.list_for(chat(person))).mine


def card_of(activity: Activity) -> dict[str, Any]:
    """The Adaptive Card a message carries."""
    assert activity.type == "message", activity.type
    attachments = activity.attachments or []
    assert len(attachments) == 1 and attachments[0].content_type == CARD
    return dict(attachments[0].content)


def words(card: dict[str, Any]) -> str:
    return json.dumps(card, ensure_ascii=False)


def reply(check: Callable[[dict[str, Any]], None]) -> Callable[[Activity, str], Awaitable[None]]:
    """A TestFlow inspector: the reply is one card message, and ``check`` holds for its card."""

    async def inspect(activity: Activity, description: str) -> None:
        check(card_of(activity))

    return inspect


def invoke_answer(
    check: Callable[[dict[str, Any]], None],
) -> Callable[[Activity, str], Awaitable[None]]:
    """A TestFlow inspector: the invoke response (status 200), ``check`` holds for its body."""

    async def inspect(activity: Activity, description: str) -> None:
        assert activity.type == "invokeResponse", activity.type
        assert activity.value.status == 200
        check(dict(activity.value.body))

    return inspect


@asynccontextmanager
async def bot_on_test_adapter(
    teams: TeamsStandIn,
    redis: aioredis.Redis,
    namespace: str,
    directory: SandboxDirectory | None = None,
) -> AsyncIterator[Handlers]:
    """The bot on botbuilder's TestAdapter, its core on Redis, its roster the stand-in's."""
    core = build_core(redis, namespace, policy=teams_policy(), directory=directory)
    ledger = RedisMessageLedger(redis, core.keys)
    people = TeamsPeople(core.service.directory, {TENANT}, APPROVALS)
    bot = TwokeyBot(core.service, people, ledger, APP_ID)
    config = bot_config(teams_settings(namespace), endpoints(teams))
    async with aiohttp.ClientSession() as session:
        auth = authentication(config, ConnectorTokens(config, session))
        factory = auth.create_connector_factory(ClaimsIdentity({"aud": APP_ID}, True))
        client = await factory.create(teams.url + "/", config.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE)
        adapter = TestAdapter(bot.on_turn)
        adapter.use(ConnectorClientIn(client))
        yield Handlers(core, bot, adapter, teams)
        await bot.inflight.drain(5.0)


@pytest.fixture
async def handlers(
    teams: TeamsStandIn, redis_client: aioredis.Redis, namespace: str
) -> AsyncIterator[Handlers]:
    async with bot_on_test_adapter(teams, redis_client, namespace) as started:
        yield started


async def open_one(handlers: Handlers) -> Request:
    """bob asks for alice's MFA reset in his 1:1 chat; the stored request."""
    flow = await handlers.send(
        handlers.says("bob", "reset-mfa <at>Alice</at> INC-1234 lost-device", ("alice",))
    )
    await flow.assert_reply(reply(lambda card: None))
    (request,) = await handlers.open_requests_of("bob")
    return request


async def test_help_answers_with_the_commands(handlers: Handlers) -> None:
    def check(card: dict[str, Any]) -> None:
        shown = words(card)
        assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
        assert "twokey" in shown and "status" in shown and "cancel" in shown
        assert not buttons(card)

    flow = await handlers.send(handlers.says("bob", "help"))
    flow = await flow.assert_reply(reply(check))
    await flow.assert_no_reply(timeout=200)
    assert await handlers.open_requests_of("bob") == []


async def test_a_malformed_command_in_a_channel_is_answered_to_the_asker_only(
    handlers: Handlers,
) -> None:
    """In the help desk channel: nothing is said in the channel, the error goes to bob's 1:1
    chat, and no request is opened."""
    said = handlers.says(
        "bob",
        "<at>twokey</at> reset-mfa <at>Alice</at> NOT-A-TICKET lost-device",
        ("twokey", "alice"),
        conversation=HELPDESK,
    )
    flow = await handlers.send(said)
    await flow.assert_no_reply(timeout=200)
    (error,) = handlers.teams.in_conversation(dm_of("bob"))
    assert "ticket" in error.text.lower()
    assert not handlers.teams.in_conversation(HELPDESK)
    assert await handlers.open_requests_of("bob") == []
    assert handlers.core.notifier.sent == []


async def test_an_unknown_word_is_refused_with_the_usage_and_opens_nothing(
    handlers: Handlers,
) -> None:
    def check(card: dict[str, Any]) -> None:
        assert "reset-mfa" in words(card)  # the usage line
        assert not buttons(card)

    flow = await handlers.send(handlers.says("bob", "frobnicate <at>Alice</at>", ("alice",)))
    await flow.assert_reply(reply(check))
    assert await handlers.open_requests_of("bob") == []


async def test_a_command_opens_a_request_and_the_receipt_names_it(handlers: Handlers) -> None:
    receipts: list[dict[str, Any]] = []
    flow = await handlers.send(
        handlers.says(
            "bob",
            "reset-mfa <at>Alice</at> INC-1234 lost-device [x](https://evil.example)",
            ("alice",),
        )
    )
    await flow.assert_reply(reply(receipts.append))
    (request,) = await handlers.open_requests_of("bob")
    assert request.state is RequestState.PENDING
    assert (request.target_id, request.owner_id, request.requester_id) == ("alice", "alice", "bob")
    assert request.ticket == "INC-1234" and request.reason_code == "lost-device"
    assert request.note == "[x](https://evil.example)"
    assert request.id in words(receipts[0])
    assert [s[0] for s in handlers.core.notifier.sent][:1] == ["post_request"]


async def test_status_list_and_cancel(handlers: Handlers) -> None:
    request = await open_one(handlers)

    def status(card: dict[str, Any]) -> None:
        shown = words(card)
        assert f"Request {request.id}" in shown and "INC-1234" in shown
        assert "waiting for Alice Adams" in shown  # the owner, by directory name
        assert set(buttons(card)) == {"cancel"}

    def listing(card: dict[str, Any]) -> None:
        assert f"{request.id}: reset MFA for Alice Adams" in words(card)

    def cancelled(card: dict[str, Any]) -> None:
        assert "cancel" in words(card).lower()

    flow = await handlers.send(handlers.says("bob", f"status {request.id}"))
    flow = await flow.assert_reply(reply(status))
    flow = await flow.send(handlers.says("bob", "list"))
    flow = await flow.assert_reply(reply(listing))
    flow = await flow.send(handlers.says("bob", f"cancel {request.id}"))
    await flow.assert_reply(reply(cancelled))
    stored = await handlers.core.store.get(request.id)
    assert stored is not None and stored.state is RequestState.CANCELLED
    assert await handlers.open_requests_of("bob") == []


async def test_a_press_is_answered_with_the_refreshed_card(handlers: Handlers) -> None:
    request = await open_one(handlers)
    owner_card = replies.card_for("owner", request, request.last_change_at)
    answers: list[dict[str, Any]] = []
    flow = await handlers.send(handlers.presses("alice", owner_card, "confirm"))
    await flow.assert_reply(invoke_answer(answers.append))
    (body,) = answers
    assert body["statusCode"] == 200 and body["type"] == CARD
    assert not buttons(body["value"])  # the question is answered: no Yes / No any more
    assert "You confirmed" in words(body["value"])
    stored = await handlers.core.store.get(request.id)
    assert stored is not None and stored.owner_confirmed_at is not None
    assert stored.state is RequestState.PENDING  # still needs an approval


async def test_a_refused_press_answers_with_the_card_and_why(handlers: Handlers) -> None:
    """bob opened it: he may not approve it. The card comes back with the reason on top and its
    buttons still there for someone who may; nothing is stored."""
    request = await open_one(handlers)
    approval = replies.card_for("approvers", request, request.last_change_at)
    answers: list[dict[str, Any]] = []
    flow = await handlers.send(handlers.presses("bob", approval, "approve"))
    await flow.assert_reply(invoke_answer(answers.append))
    (body,) = answers
    first = body["value"]["body"][0]
    assert first["color"] == "Attention" and "cannot decide it" in first["text"]
    assert set(buttons(body["value"])) == {"approve", "deny"}
    stored = await handlers.core.store.get(request.id)
    assert stored is not None and not stored.approvals
    assert stored.state is RequestState.PENDING


async def test_a_refresh_only_renders(handlers: Handlers) -> None:
    request = await open_one(handlers)
    approval = replies.card_for("approvers", request, request.last_change_at)
    answers: list[dict[str, Any]] = []
    refresh = handlers.presses("carol", approval, "approve", trigger="automatic")
    flow = await handlers.send(refresh)
    await flow.assert_reply(invoke_answer(answers.append))
    assert set(buttons(answers[0]["value"])) == {"approve", "deny"}
    stored = await handlers.core.store.get(request.id)
    assert stored is not None and not stored.approvals


async def test_the_invoke_answer_names_the_approver(handlers: Handlers) -> None:
    request = await open_one(handlers)
    approval = replies.card_for("approvers", request, request.last_change_at)
    answers: list[dict[str, Any]] = []
    flow = await handlers.send(handlers.presses("carol", approval, "approve"))
    await flow.assert_reply(invoke_answer(answers.append))
    card = answers[0]["value"]
    assert "1 of 1 (Carol Chen)" in words(card) and "(carol)" not in words(card)
    assert "approve" not in buttons(card)
    stored = await handlers.core.store.get(request.id)
    assert stored is not None and [a.approver_id for a in stored.approvals] == ["carol"]


# ---- the request form and its people picker ---------------------------------------------------

FORM = {"action": "reset-mfa", "ticket": "INC-1234", "reason_code": "lost-device"}


async def submit_form(handlers: Handlers, who: str, **inputs: str) -> dict[str, Any]:
    """``who`` opens the form (an empty message) and submits it with ``inputs``; the body of
    the invoke response."""
    forms: list[dict[str, Any]] = []
    flow = await handlers.send(handlers.says(who, ""))
    await flow.assert_reply(reply(forms.append))
    picker = next(n for n in walk(forms[0]) if n.get("id") == "picked")
    assert picker["choices.data"] == {"type": "Data.Query", "dataset": "graph.microsoft.com/users"}
    answers: list[dict[str, Any]] = []
    flow = await handlers.send(handlers.presses(who, forms[0], "open", **inputs))
    await flow.assert_reply(invoke_answer(answers.append))
    return answers[0]


async def test_a_person_picked_in_the_form_is_the_target(handlers: Handlers) -> None:
    body = await submit_form(handlers, "bob", picked="aad-alice", **FORM)
    assert "Request opened" in words(body["value"])
    (request,) = await handlers.open_requests_of("bob")
    assert (request.target_id, request.target_name) == ("alice", "Alice Adams")
    # found through the roster by the Entra object id, as a mention is by its 29: id
    assert any(member == "aad-alice" for _, member in handlers.teams.member_lookups)


async def test_the_email_field_still_names_the_target(handlers: Handlers) -> None:
    body = await submit_form(handlers, "bob", person="alice@example.com", **FORM)
    assert "Request opened" in words(body["value"])
    (request,) = await handlers.open_requests_of("bob")
    assert request.target_id == "alice"


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ({"picked": "aad-nobody"}, "Teams does not know this user."),
        ({"picked": "aad-alice,aad-carol"}, "Pick one person only."),
        ({"picked": "aad-alice", "person": "alice@example.com"}, "Pick one person"),
        ({}, "Pick one person"),
    ],
)
async def test_a_bad_pick_comes_back_on_the_form_and_opens_nothing(
    handlers: Handlers, inputs: dict[str, str], says: str
) -> None:
    body = await submit_form(handlers, "bob", **inputs, **FORM)
    card = body["value"]
    assert says in words(card)
    assert "open" in buttons(card)  # the form again, to correct
    assert await handlers.open_requests_of("bob") == []
    assert handlers.core.notifier.sent == []


async def test_a_pick_the_directory_finds_twice_is_refused(
    teams: TeamsStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    example = SandboxDirectory.example()
    twice = Principal(id="alice-old", display_name="Alice Adams", email="alice@example.com")
    directory = SandboxDirectory([*example.principals, twice])
    async with bot_on_test_adapter(teams, redis_client, namespace, directory) as handlers:
        body = await submit_form(handlers, "bob", picked="aad-alice", **FORM)
        assert "open" in buttons(body["value"])
        shown = words(body["value"])
        assert "matches 2 directory entries" in shown and "Request opened" not in shown
        assert await handlers.open_requests_of("bob") == []
