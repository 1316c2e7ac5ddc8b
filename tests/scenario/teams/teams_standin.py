"""A stateful local stand-in of the Bot Framework around a Teams bot, over real HTTP.

It plays three services twokey talks to, at their documented paths:

* the channel's OpenID metadata and signing keys (``/openid``, ``/keys``): a key this stand-in
  makes, published with the ``msteams`` endorsement, so tests can sign real RS256 activity
  tokens (:meth:`TeamsStandIn.token`) that botbuilder verifies as it would Microsoft's;
* the Entra token endpoint (``/<tenant>/oauth2/v2.0/token``, client credentials): it checks the
  bot's id and secret and issues opaque connector tokens, counting each;
* the Bot Connector (``/v3/conversations/...``): create a 1:1 conversation, send, reply, update,
  and roster look-ups (``members/{id}``, 404 for someone not in a 1:1 chat). Every call must carry
  a token this stand-in issued; anything else is answered 401 and recorded.

Messages are kept per conversation with every version, so tests read what people would see.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

APP_ID = "11111111-2222-3333-4444-555555555555"
APP_PASSWORD = "bot-client-secret-for-tests"
TENANT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"
ISSUER = "https://api.botframework.com"
BOT_ID = f"28:{APP_ID}"
APPROVALS = "19:approvals@thread.tacv2"
SECURITY = "19:security@thread.tacv2"
HELPDESK = "19:helpdesk@thread.tacv2"
PEOPLE = ("alice", "bob", "heidi", "carol", "dave", "erin", "frank", "grace", "ivan")

T = TypeVar("T")


def b64url(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def dm_of(person: str) -> str:
    return f"a:dm-{person}"


def activity_problem(activity: Any) -> str:
    """What the Bot Connector would refuse in an activity a bot sends (its REST reference: an
    Activity object with a ``type``; each attachment a ``contentType``); "" when none."""
    if not isinstance(activity, dict):
        return "the body is not an Activity object"
    if activity.get("type") != "message":
        return "type must be 'message'"
    attachments = activity.get("attachments", [])
    if not isinstance(attachments, list):
        return "attachments must be a list"
    for attachment in attachments:
        if not isinstance(attachment, dict) or not attachment.get("contentType"):
            return "each attachment needs a contentType"
    return ""


@dataclass
class Message:
    conversation: str
    id: str
    activity: dict[str, Any]
    versions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def card(self) -> dict[str, Any]:
        for attachment in self.activity.get("attachments") or []:
            if attachment.get("contentType") == "application/vnd.microsoft.card.adaptive":
                return dict(attachment["content"])
        return {}

    @property
    def text(self) -> str:
        return json.dumps(self.card, ensure_ascii=False) + str(self.activity.get("text") or "")


class TeamsStandIn:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "kid-" + secrets.token_hex(4)
        self.keys_fetched = 0
        """How many times the signing keys were asked for."""
        self.other_keys: list[dict[str, Any]] = []
        """Published beside the signing key (keys of other kinds a JWKS may hold)."""
        self.issued: set[str] = set()
        self.tokens_issued = 0
        self.unauthorized: list[str] = []
        self.messages: dict[str, list[Message]] = {}
        self.updates: list[tuple[str, str]] = []
        self.created: list[str] = []
        self.member_lookups: list[tuple[str, str]] = []
        self.people: dict[str, dict[str, Any]] = {
            name: {
                "id": f"29:{name}",
                "name": name.capitalize(),
                "aadObjectId": f"aad-{name}",
                "email": f"{name}@example.com",
                "userPrincipalName": f"{name}@example.com",
                "tenantId": TENANT,
                "userRole": "user",
            }
            for name in PEOPLE
        }
        self.server: TestServer | None = None
        self.fail_updates = False
        self.throttle_updates = 0
        """Answer this many card updates 429 with ``Retry-After: retry_after`` (then as usual)."""
        self.retry_after = "1"
        self.update_attempts: list[tuple[float, str, str, int]] = []
        """Every card update asked for: (monotonic time, conversation, activity, status)."""
        self.throttle_sends = 0
        """Answer this many new messages 429 with ``Retry-After: retry_after``."""
        self.fail_sends = 0
        """Answer this many new messages 502 (the message is not kept)."""
        self.send_attempts: list[tuple[float, str, int, str]] = []
        """Every new message asked for: (monotonic time, conversation, status, its JSON)."""

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/openid", self._openid)
        app.router.add_get("/emulator-openid", self._openid)
        app.router.add_get("/keys", self._keys)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_post("/v3/conversations", self._create)
        app.router.add_post("/v3/conversations/{cid}/activities", self._send)
        app.router.add_post("/v3/conversations/{cid}/activities/{aid}", self._reply)
        app.router.add_put("/v3/conversations/{cid}/activities/{aid}", self._update)
        app.router.add_get("/v3/conversations/{cid}/members/{mid}", self._member)
        self.server = TestServer(app)
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    # ---- tokens ------------------------------------------------------------------------------

    def token(self, **changes: Any) -> str:
        """A channel token for an activity, as the Bot Framework signs it; ``changes`` override
        claims (None removes one); ``_headers``, ``_key`` and ``_alg`` bend the signature."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": APP_ID,
            "serviceurl": self.url + "/",
            "nbf": now - 10,
            "exp": now + 3600,
        }
        headers = {"kid": self.kid, **changes.pop("_headers", {})}
        key = changes.pop("_key", self.key)
        alg = changes.pop("_alg", "RS256")
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return jwt.encode(claims, key, algorithm=alg, headers=headers)

    async def _openid(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": ISSUER,
                "jwks_uri": self.url + "/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    def rotate_key(self) -> None:
        """Sign from now on with a new key under a new key id, as the channel does when it
        rotates its keys; only the new key is published."""
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "kid-" + secrets.token_hex(4)

    async def _keys(self, request: web.Request) -> web.Response:
        self.keys_fetched += 1
        public = self.key.public_key().public_numbers()
        key = {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": b64url(public.n),
            "e": b64url(public.e),
            "endorsements": ["msteams"],
        }
        return web.json_response({"keys": [*self.other_keys, key]})

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != APP_ID or form.get("client_secret") != APP_PASSWORD:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = "cx-" + secrets.token_urlsafe(16)
        self.issued.add(token)
        self.tokens_issued += 1
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": 3599}
        )

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        ok = header.startswith("Bearer ") and header[7:] in self.issued
        if not ok:
            self.unauthorized.append(f"{request.method} {request.path}")
        return ok

    # ---- the connector -----------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        body = await request.json()
        member = (body.get("members") or [{}])[0].get("id", "")
        person = member.removeprefix("29:")
        conversation = dm_of(person)
        self.created.append(conversation)
        return web.json_response({"id": conversation})

    def _store(self, conversation: str, activity: dict[str, Any]) -> Message:
        message = Message(conversation, "m" + secrets.token_hex(6), activity, [activity])
        self.messages.setdefault(conversation, []).append(message)
        return message

    async def _send(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        cid = request.match_info["cid"]
        activity = await request.json()
        sent = json.dumps(activity, sort_keys=True)
        if self.throttle_sends > 0:
            self.throttle_sends -= 1
            self.send_attempts.append((time.monotonic(), cid, 429, sent))
            return web.json_response(
                {"error": {"code": "Throttled"}},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        if self.fail_sends > 0:
            self.fail_sends -= 1
            self.send_attempts.append((time.monotonic(), cid, 502, sent))
            return web.json_response({"error": {"code": "ServiceError"}}, status=502)
        problem = activity_problem(activity)
        if problem:
            self.send_attempts.append((time.monotonic(), cid, 400, sent))
            return web.json_response({"error": {"code": "BadArgument", "message": problem}}, 400)
        self.send_attempts.append((time.monotonic(), cid, 200, sent))
        message = self._store(cid, activity)
        return web.json_response({"id": message.id})

    async def _reply(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        message = self._store(request.match_info["cid"], await request.json())
        return web.json_response({"id": message.id})

    async def _update(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        cid, aid = request.match_info["cid"], request.match_info["aid"]
        if self.throttle_updates > 0:
            self.throttle_updates -= 1
            self.update_attempts.append((time.monotonic(), cid, aid, 429))
            return web.json_response(
                {"error": {"code": "Throttled"}},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        if self.fail_updates:
            self.update_attempts.append((time.monotonic(), cid, aid, 502))
            return web.json_response({"error": {"code": "ServiceError"}}, status=502)
        activity = await request.json()
        problem = activity_problem(activity)
        if problem:
            self.update_attempts.append((time.monotonic(), cid, aid, 400))
            return web.json_response({"error": {"code": "BadArgument", "message": problem}}, 400)
        self.update_attempts.append((time.monotonic(), cid, aid, 200))
        for message in self.messages.get(cid, []):
            if message.id == aid:
                message.activity = activity
                message.versions.append(activity)
                self.updates.append((cid, aid))
                return web.json_response({"id": aid})
        return web.json_response({"error": {"code": "NotFound"}}, status=404)

    async def _member(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"code": "Unauthorized"}}, status=401)
        cid, mid = request.match_info["cid"], request.match_info["mid"]
        self.member_lookups.append((cid, mid))
        person = next((p for p in self.people.values() if mid in (p["id"], p["aadObjectId"])), None)
        if person is None:
            return web.json_response({"error": {"code": "NotFound"}}, status=404)
        if cid.startswith("a:") and cid != dm_of(person["id"].removeprefix("29:")):
            return web.json_response({"error": {"code": "NotFound"}}, status=404)
        return web.json_response(person)

    # ---- reading -----------------------------------------------------------------------------

    def in_conversation(self, conversation: str) -> list[Message]:
        return list(self.messages.get(conversation, []))

    def find(self, conversation: str, *needles: str) -> Message | None:
        for message in self.in_conversation(conversation):
            if all(n in message.text for n in needles):
                return message
        return None

    async def until(self, check: Callable[[], T | None], within: float = 8.0) -> T:
        deadline = time.monotonic() + within
        while True:
            found = check()
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError("the stand-in never saw it")
            await asyncio.sleep(0.02)
