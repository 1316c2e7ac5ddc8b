"""The whole twokey server with Slack on, driven by correctly signed Slack payloads.

``SlackWorld`` runs the real aiohttp app (``create_app`` -> ``mount``) against real Redis and
the Slack stand-in. Payloads follow Slack's published shapes (slash command form, block_actions,
view_submission, block_suggestion) and are signed like Slack signs them: HMAC-SHA256 over
``v0:<timestamp>:<body>`` with the signing secret. Clicks press the buttons that are really on
the card the stand-in holds, so a test can only click what a person could.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import redis.asyncio as aioredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from slack_standin import (
    APP_ID,
    APPROVALS,
    BOT_TOKEN,
    BOT_USER,
    HELPDESK,
    SECURITY,
    TEAM,
    Message,
    SlackStandIn,
)

from app.audit.trail import AuditTrail
from app.bootstrap import Runtime
from app.connectors.sandbox import SandboxConnector, SandboxDirectory
from app.domain.models import Request
from app.notify import FanoutNotifier
from app.policy.loader import load_policy_text
from app.service import ServiceOptions, TwoKey
from app.settings import Settings
from app.store.keys import Keys
from app.store.redis_store import RedisRequestStore
from app.web import create_app
from tests.helpers import policy_text

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def slack_policy(
    request_ttl: str = "4h",
    approval_ttl: str = "30m",
    remind_after: str = "15m",
    escalate_after: str = "1h",
    dm_approvers: bool = False,
) -> str:
    """The shared test policy, with no velocity limits and the stand-in's Slack channels."""
    return policy_text(
        request_ttl,
        approval_ttl,
        remind_after,
        escalate_after,
        velocity="",
        dm_approvers=dm_approvers,
        channels={"approvals": {"slack": APPROVALS}, "security": {"slack": SECURITY}},
    )


def sign(body: bytes, timestamp: str, secret: str = SIGNING_SECRET) -> str:
    """Slack's v0 request signature."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, *, timestamp: str | None = None, **extra: str) -> dict[str, str]:
    stamp = timestamp if timestamp is not None else str(int(time.time()))
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(body, stamp),
        "Content-Type": "application/x-www-form-urlencoded",
        **extra,
    }


def slack_user(user_id: str, team: str = TEAM) -> dict[str, str]:
    name = user_id[2:].lower()
    return {"id": user_id, "username": name, "name": name, "team_id": team}


@dataclass
class SlackWorld:
    slack: SlackStandIn
    http: TestClient
    runtime: Runtime
    connector: SandboxConnector
    redis: aioredis.Redis
    namespace: str
    sent: list[bytes] = field(default_factory=list)

    # ---- raw HTTP ------------------------------------------------------------------------

    async def post(self, body: bytes, headers: dict[str, str]) -> ClientResponse:
        self.sent.append(body)
        return await self.http.post("/slack/events", data=body, headers=headers)

    async def signed(self, form: dict[str, str], **headers: str) -> ClientResponse:
        body = urlencode(form).encode()
        return await self.post(body, signed_headers(body, **headers))

    # ---- what people do ------------------------------------------------------------------

    def command_form(
        self,
        user: str,
        text: str,
        *,
        channel: str = HELPDESK,
        team: str = TEAM,
        app: str = APP_ID,
        trigger: str | None = None,
    ) -> dict[str, str]:
        """A slash command exactly as Slack posts it (application/x-www-form-urlencoded)."""
        return {
            "token": "gIkuvaNzQIHg97ATvDxqgjtO",
            "team_id": team,
            "team_domain": "twokey-test",
            "channel_id": channel,
            "channel_name": "helpdesk",
            "user_id": user,
            "user_name": user[2:].lower(),
            "command": "/twokey",
            "text": text,
            "api_app_id": app,
            "is_enterprise_install": "false",
            "response_url": self.slack.response_url(),
            "trigger_id": trigger or self.slack.trigger(),
        }

    async def command(
        self, user: str, text: str, **options: Any
    ) -> tuple[ClientResponse, dict[str, str]]:
        form = self.command_form(user, text, **options)
        return await self.signed(form), form

    async def receipt(self, form: dict[str, str]) -> str:
        """The reply twokey sent to a slash command's response_url (after its ack)."""
        posts = await self.slack.until(lambda: self.slack.hook_posts(form["response_url"]))
        return json.dumps(posts[-1], ensure_ascii=False)

    async def open_request(
        self, text: str = "reset-mfa <@U0ALICE|alice> INC-1234 lost-device", user: str = "U0BOB"
    ) -> Request:
        """Open a request through /twokey and return it as stored."""
        response, form = await self.command(user, text)
        assert response.status == 200
        receipt = await self.receipt(form)
        request_id = receipt.split("Request ", 1)[1].split(" ", 1)[0]
        stored = await self.runtime.store.get(request_id)
        assert stored is not None, receipt
        await self.slack.until(lambda: self.card(stored.id, "approvers"))
        return stored

    def card(self, request_id: str, role: str, user: str | None = None) -> Message | None:
        """The card of this role for a request, as the stand-in holds it now."""
        channel = {"approvers": APPROVALS}.get(role) or self.slack.dm_of(user or "")
        for message in self.slack.in_channel(channel or "", thread=False):
            if request_id in json.dumps(message.blocks) and _role_of(message) == role:
                return message
        return None

    def click_payload(
        self,
        user: str,
        message: Message,
        action: str,
        *,
        user_team: str = TEAM,
        team: str = TEAM,
        value: str | None = None,
    ) -> dict[str, Any]:
        """A block_actions payload for pressing the button ``twokey.<action>`` on a card."""
        pressed = _button(message, f"twokey.{action}")
        if value is not None:
            pressed = {**pressed, "value": value}
        return {
            "type": "block_actions",
            "user": slack_user(user, user_team),
            "api_app_id": APP_ID,
            "token": "gIkuvaNzQIHg97ATvDxqgjtO",
            "container": {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": message.channel,
                "is_ephemeral": False,
            },
            "trigger_id": self.slack.trigger(),
            "team": {"id": team, "domain": "twokey-test"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": message.channel, "name": "approvals"},
            "message": {
                "type": "message",
                "user": BOT_USER,
                "ts": message.ts,
                "text": message.text,
                "blocks": message.blocks,
            },
            "state": {"values": {}},
            "response_url": self.slack.response_url(),
            "actions": [
                {
                    "action_id": pressed["action_id"],
                    "block_id": pressed["block_id"],
                    "text": pressed["text"],
                    "value": pressed["value"],
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                    **({"style": pressed["style"]} if "style" in pressed else {}),
                }
            ],
        }

    async def click(
        self, user: str, message: Message, action: str, **options: Any
    ) -> ClientResponse:
        payload = self.click_payload(user, message, action, **options)
        return await self.interact(payload)

    async def interact(self, payload: dict[str, Any], **headers: str) -> ClientResponse:
        return await self.signed({"payload": json.dumps(payload)}, **headers)

    def submission(
        self,
        user: str,
        view: dict[str, Any],
        values: dict[str, dict[str, dict[str, Any]]],
    ) -> dict[str, Any]:
        """A view_submission payload for a modal twokey opened, with the person's answers."""
        return {
            "type": "view_submission",
            "team": {"id": TEAM, "domain": "twokey-test"},
            "user": slack_user(user),
            "api_app_id": APP_ID,
            "token": "gIkuvaNzQIHg97ATvDxqgjtO",
            "trigger_id": self.slack.trigger(),
            "view": {
                **view,
                "state": {"values": values},
                "previous_view_id": None,
                "root_view_id": view["id"],
                "app_id": APP_ID,
                "external_id": "",
                "app_installed_team_id": TEAM,
                "bot_id": "B0TWOKEY",
            },
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    async def ephemeral_to(self, user: str, count: int = 1) -> str:
        """The text of the ``count``-th ephemeral twokey showed this person."""
        found = await self.slack.until(
            lambda: len(self.slack.ephemerals_to(user)) >= count and self.slack.ephemerals_to(user)
        )
        return json.dumps(found[count - 1], ensure_ascii=False)

    async def shown_on_card(self, message: Message, *needles: str) -> None:
        """Wait until a card twokey posted shows every needle (it is updated after the ack)."""
        await self.slack.until(lambda: all(n in json.dumps(message.blocks) for n in needles))

    async def settled(self, request_id: str, state: str) -> Request:
        """Wait until the stored request reaches a state (work after the ack is done)."""
        return await self.stored(request_id, lambda r: r.state.value == state)

    async def stored(self, request_id: str, check: Callable[[Request], bool]) -> Request:
        """Wait until the stored request passes ``check``."""
        deadline = time.monotonic() + 8
        while True:
            found = await self.runtime.store.get(request_id)
            if found is not None and check(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{request_id} never got there: {found}")
            await asyncio.sleep(0.02)

    async def keys_in_namespace(self) -> list[str]:
        return [k async for k in self.redis.scan_iter(match=f"*{self.namespace}*", count=500)]


def _role_of(message: Message) -> str:
    text = json.dumps(message.blocks)
    if "Did you ask for this?" in text:
        return "owner"
    if "Your request:" in text:
        return "requester"
    if message.channel == APPROVALS:
        return "approvers"
    return "approver-dm"


def _button(message: Message, action_id: str) -> dict[str, Any]:
    for block in message.blocks:
        if block.get("type") != "actions":
            continue
        for element in block.get("elements", []):
            if element.get("action_id") == action_id:
                return {**element, "block_id": block.get("block_id", "")}
    raise AssertionError(f"no {action_id} button on this card: a person could not press it")


def build_runtime(
    redis: aioredis.Redis,
    namespace: str,
    settings: Settings,
    policy: str,
    connector: SandboxConnector,
) -> Runtime:
    keys = Keys(namespace)
    store = RedisRequestStore(redis, keys)
    trail = AuditTrail(redis, keys, SecretStr("audit-key-for-slack-tests-" + secrets.token_hex(8)))
    loaded = load_policy_text(policy, "slack-test-policy.yaml")
    directory = SandboxDirectory.example()
    notifier = FanoutNotifier()
    service = TwoKey(store, directory, [connector], notifier, loaded, ServiceOptions())
    return Runtime(settings, redis, store, trail, loaded, directory, [connector], notifier, service)


def slack_settings(slack: SlackStandIn, namespace: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "SLACK_ALLOWED_TEAMS": [TEAM],
        "SLACK_APP_ID": APP_ID,
        "TWOKEY_NAMESPACE": namespace,
        "TWOKEY_PLAYGROUND": False,
        **extra,
    }
    return Settings(**values)


async def start_world(
    slack: SlackStandIn,
    redis: aioredis.Redis,
    namespace: str,
    *,
    policy: str | None = None,
    connector: SandboxConnector | None = None,
    **settings: Any,
) -> SlackWorld:
    connector = connector or SandboxConnector()
    config = slack_settings(slack, namespace, **settings)
    runtime = build_runtime(redis, namespace, config, policy or slack_policy(), connector)
    app = create_app(config, runtime=runtime, sweeper=False)
    http = TestClient(TestServer(app))
    await http.start_server()
    return SlackWorld(slack, http, runtime, connector, redis, namespace)


async def stop_world(world: SlackWorld) -> None:
    await asyncio.sleep(0.05)
    await world.http.close()
    await asyncio.gather(*world.runtime.tasks, return_exceptions=True)
    await asyncio.gather(*(close() for close in world.runtime.closers), return_exceptions=True)
