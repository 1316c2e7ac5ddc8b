"""The whole twokey server with Teams on, driven by activities with real signed tokens.

``TeamsWorld`` runs the real aiohttp app (``create_app`` -> the Teams ``mount``) against real
Redis and the Bot Framework stand-in: botbuilder's production authentication checks every token
against the stand-in's published keys, and the activities' serviceUrl points at the stand-in's
Bot Connector. Presses press the Action.Execute buttons really on the card the stand-in holds.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from teams_standin import (
    APP_ID,
    APP_PASSWORD,
    APPROVALS,
    BOT_ID,
    ISSUER,
    SECURITY,
    TENANT,
    Message,
    TeamsStandIn,
    dm_of,
)

from app.audit.trail import AuditTrail
from app.bootstrap import Runtime
from app.channels.teams.app import TEAMS_ENDPOINTS
from app.channels.teams.auth import Endpoints
from app.connectors.sandbox import SandboxConnector, SandboxDirectory
from app.domain.models import Request
from app.notify import FanoutNotifier
from app.policy.loader import load_policy_text
from app.service import ServiceOptions, TwoKey
from app.settings import Settings
from app.store.keys import Keys
from app.store.redis_store import RedisRequestStore
from tests.helpers import policy_text


def teams_policy(request_ttl: str = "4h", approval_ttl: str = "30m") -> str:
    return policy_text(
        request_ttl,
        approval_ttl,
        "",
        "",
        velocity="",
        channels={"approvals": {"teams": APPROVALS}, "security": {"teams": SECURITY}},
    )


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def buttons(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every Action.Execute on a card (ShowCard sub-cards included), by verb."""
    return {n["verb"]: n for n in walk(card) if n.get("type") == "Action.Execute"}


@dataclass
class TeamsWorld:
    teams: TeamsStandIn
    http: TestClient
    runtime: Runtime
    connector: SandboxConnector
    redis: aioredis.Redis
    namespace: str

    # ---- raw HTTP ------------------------------------------------------------------------

    async def post(self, activity: dict[str, Any], token: str | None = "") -> ClientResponse:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.teams.token()}"
        return await self.http.post("/api/messages", json=activity, headers=headers)

    # ---- activities ----------------------------------------------------------------------

    def activity(
        self,
        kind: str,
        person: str,
        *,
        conversation: str | None = None,
        tenant: str = TENANT,
        **fields: Any,
    ) -> dict[str, Any]:
        conversation = conversation or dm_of(person)
        personal = conversation.startswith("a:")
        return {
            "type": kind,
            "id": "act-" + secrets.token_hex(8),
            "timestamp": "2026-01-01T00:00:00.000Z",
            "serviceUrl": self.teams.url + "/",
            "channelId": "msteams",
            "from": {
                "id": f"29:{person}",
                "name": person.capitalize(),
                "aadObjectId": f"aad-{person}",
            },
            "recipient": {"id": BOT_ID, "name": "twokey"},
            "conversation": {
                "id": conversation,
                "conversationType": "personal" if personal else "channel",
                "tenantId": tenant,
                "isGroup": not personal,
            },
            "channelData": {"tenant": {"id": tenant}},
            **fields,
        }

    def message(
        self, person: str, text: str, mentions: list[str] = (), **options: Any
    ) -> dict[str, Any]:  # type: ignore[assignment]
        entities = [
            {
                "type": "mention",
                "text": f"<at>{name.capitalize()}</at>" if name != "twokey" else "<at>twokey</at>",
                "mentioned": {
                    "id": BOT_ID if name == "twokey" else f"29:{name}",
                    "name": name.capitalize(),
                },
            }
            for name in mentions
        ]
        return self.activity("message", person, text=text, entities=entities, **options)

    async def say(
        self, person: str, text: str, mentions: list[str] = (), **options: Any
    ) -> ClientResponse:  # type: ignore[assignment]
        return await self.post(self.message(person, text, list(mentions), **options))

    async def install(self, *people: str) -> None:
        for person in people:
            activity = self.activity("installationUpdate", person, action="add")
            answer = await self.post(activity)
            assert answer.status == 200, await answer.text()

    def press_activity(
        self, who: str, message: Message, verb: str, *, trigger: str = "manual", **inputs: Any
    ) -> dict[str, Any]:
        button = buttons(message.card).get(verb)
        assert button is not None, f"no {verb} button on this card: a person could not press it"
        value = {
            "action": {
                "type": "Action.Execute",
                "verb": verb,
                "data": {**button["data"], **inputs},
            },
            "trigger": trigger,
        }
        return self.activity(
            "invoke",
            who,
            conversation=message.conversation,
            name="adaptiveCard/action",
            value=value,
            replyToId=message.id,
        )

    async def press(self, who: str, message: Message, verb: str, **options: Any) -> dict[str, Any]:
        answer = await self.post(self.press_activity(who, message, verb, **options))
        assert answer.status == 200, await answer.text()
        return dict(await answer.json())

    # ---- what people see -----------------------------------------------------------------

    async def card(self, conversation: str, *needles: str) -> Message:
        return await self.teams.until(lambda: self.teams.find(conversation, *needles))

    async def open_request(
        self,
        text: str = "reset-mfa <at>Alice</at> INC-1234 lost-device",
        by: str = "bob",
        mentions: tuple[str, ...] = ("alice",),
    ) -> Request:
        answer = await self.say(by, text, list(mentions))
        assert answer.status == 200, await answer.text()
        receipt = await self.card(dm_of(by), "Request TK-")
        request_id = "TK-" + receipt.text.split("Request TK-", 1)[1][:8]
        stored = await self.runtime.store.get(request_id)
        assert stored is not None, receipt.text
        await self.card(APPROVALS, request_id)
        return stored

    async def stored(self, request_id: str, check: Callable[[Request], bool]) -> Request:
        deadline = time.monotonic() + 8
        while True:
            found = await self.runtime.store.get(request_id)
            if found is not None and check(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{request_id} never got there: {found}")
            await asyncio.sleep(0.02)


def build_runtime(
    redis: aioredis.Redis,
    namespace: str,
    settings: Settings,
    policy: str,
    connector: SandboxConnector,
) -> Runtime:
    keys = Keys(namespace)
    store = RedisRequestStore(redis, keys)
    trail = AuditTrail(redis, keys, SecretStr("audit-key-for-teams-tests-" + secrets.token_hex(8)))
    loaded = load_policy_text(policy, "teams-test-policy.yaml")
    directory = SandboxDirectory.example()
    notifier = FanoutNotifier()
    service = TwoKey(store, directory, [connector], notifier, loaded, ServiceOptions())
    return Runtime(settings, redis, store, trail, loaded, directory, [connector], notifier, service)


def teams_settings(namespace: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "MICROSOFT_APP_ID": APP_ID,
        "MICROSOFT_APP_PASSWORD": APP_PASSWORD,
        "MICROSOFT_APP_TENANT_ID": TENANT,
        "MICROSOFT_APP_TYPE": "SingleTenant",
        "TWOKEY_NAMESPACE": namespace,
        "TWOKEY_PLAYGROUND": False,
        "TWOKEY_DEMO": True,
        **extra,
    }
    return Settings(**values)


def endpoints(teams: TeamsStandIn) -> Endpoints:
    return Endpoints(
        login_base=teams.url,
        openid_metadata=teams.url + "/openid",
        channel_issuer=ISSUER,
        oauth_scope="https://api.botframework.com",
        emulator_metadata=teams.url + "/emulator-openid",
    )


async def start_world(
    teams: TeamsStandIn,
    redis: aioredis.Redis,
    namespace: str,
    *,
    policy: str | None = None,
    connector: SandboxConnector | None = None,
    install: tuple[str, ...] = ("alice", "bob", "carol", "dave", "erin", "frank", "ivan"),
    **settings: Any,
) -> TeamsWorld:
    connector = connector or SandboxConnector()
    config = teams_settings(namespace, **settings)
    runtime = build_runtime(redis, namespace, config, policy or teams_policy(), connector)
    from app.web import create_app

    app = create_app(config, runtime=runtime, sweeper=False)
    app[TEAMS_ENDPOINTS] = endpoints(teams)
    http = TestClient(TestServer(app))
    await http.start_server()
    world = TeamsWorld(teams, http, runtime, connector, redis, namespace)
    await world.install(*install)
    return world


async def stop_world(world: TeamsWorld) -> None:
    await asyncio.sleep(0.05)
    await world.http.close()
    await asyncio.gather(*world.runtime.tasks, return_exceptions=True)
    await asyncio.gather(*(close() for close in world.runtime.closers), return_exceptions=True)
