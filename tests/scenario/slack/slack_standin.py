"""A stateful local stand-in of the Slack Web API, answering as Slack documents.

It is a real aiohttp server on 127.0.0.1 (free port). twokey's Web API client is pointed at it
with SLACK_API_URL, so every call goes over HTTP exactly as it would to slack.com: the bot token
in ``Authorization: Bearer``, arguments as a query string, a form or JSON. It keeps users,
channels and their members, DMs, messages with their threads, ephemerals, views and response
URLs, records every call, and answers with Slack's documented shapes and error codes
(``ok: false`` + ``error``; HTTP 429 with ``Retry-After`` when rate limited). It also checks the
Block Kit limits Slack enforces and refuses what breaks them with ``invalid_blocks``. Faults are
injected per method with :meth:`SlackStandIn.fail`. A websocket endpoint stands in for Socket
Mode (``apps.connections.open`` hands out its URL).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

TEAM = "T0TWOKEY"
OTHER_TEAM = "T0OTHERORG"
APP_ID = "A0TWOKEY"
BOT_TOKEN = "xoxb-standin-bot-token"
APP_TOKEN = "xapp-1-standin-app-token"
BOT_USER = "U0TWOKEYBOT"
APPROVALS = "C0APPROVALS"
SECURITY = "C0SECURITY"
HELPDESK = "C0HELPDESK"


@dataclass
class User:
    """A Slack user object (the fields twokey reads, as https://api.slack.com/types/user)."""

    id: str
    name: str
    real_name: str
    email: str | None
    team_id: str = TEAM
    is_bot: bool = False
    is_restricted: bool = False
    is_ultra_restricted: bool = False
    deleted: bool = False
    is_email_confirmed: bool = True
    is_stranger: bool = False

    def as_slack(self) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "real_name": self.real_name,
            "display_name": self.name,
            "team": self.team_id,
        }
        if self.email is not None:
            profile["email"] = self.email
        user: dict[str, Any] = {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "real_name": self.real_name,
            "deleted": self.deleted,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "is_restricted": self.is_restricted,
            "is_ultra_restricted": self.is_ultra_restricted,
            "is_email_confirmed": self.is_email_confirmed,
            "updated": 1700000000,
        }
        if self.is_stranger:
            user["is_stranger"] = True
        return user


def person(slug: str, real_name: str, **extra: Any) -> User:
    """The Slack account of a sandbox directory person: same email as the directory."""
    return User(
        id=f"U0{slug.upper()}", name=slug, real_name=real_name, email=f"{slug}@example.com", **extra
    )


def default_users() -> list[User]:
    return [
        person("alice", "Alice Adams"),
        person("bob", "Bob Brown"),
        person("heidi", "Heidi Hall"),
        person("carol", "Carol Chen"),
        person("dave", "Dave Diaz"),
        person("erin", "Erin Evans"),
        person("frank", "Frank Fischer"),
        person("grace", "Grace Green"),
        person("ivan", "Ivan Ito"),
        person("judy", "Judy Jones", deleted=True),
        User("U0KIM", "kim", "Kim Park", "shared@example.com"),
        User("U0GUEST", "gus", "Gus Guest", "gus@partner.example", is_restricted=True),
        User("U0SCG", "sally", "Sally Single", "sally@partner.example", is_ultra_restricted=True),
        User("U0HELPBOT", "helpbot", "Help Bot", None, is_bot=True),
        User("U0NOMAIL", "nomail", "No Mail", None),
        User(
            "U0MALLORY", "mallory", "Mallory (Other Org)", "carol@example.com", team_id=OTHER_TEAM
        ),
        User(BOT_USER, "twokey", "twokey", None, is_bot=True),
    ]


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    user: str = BOT_USER
    edits: int = 0


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int
    answer: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.answer.get("ok"))


@dataclass
class Fault:
    error: str
    status: int = 200
    retry_after: int | None = None
    times: int = 1


@dataclass
class Hook:
    """A response_url: usable 5 times within 30 minutes (Slack's documented bound)."""

    created: float
    posts: list[dict[str, Any]] = field(default_factory=list)


class SlackStandIn:
    def __init__(self, users: list[User] | None = None) -> None:
        self.users = {u.id: u for u in (users or default_users())}
        everyone = {u.id for u in self.users.values() if u.team_id == TEAM and not u.deleted}
        self.channels: dict[str, set[str]] = {
            APPROVALS: everyone | {"U0MALLORY"},
            SECURITY: {"U0ERIN", "U0FRANK", BOT_USER},
            HELPDESK: everyone,
        }
        self.ims: dict[str, str] = {}
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.triggers: dict[str, float] = {}
        self.used_triggers: set[str] = set()
        self.hooks: dict[str, Hook] = {}
        self.enterprise_id: str | None = None
        """The Enterprise Grid org the workspace belongs to (``auth.test`` names it)."""
        self.calls: list[Call] = []
        self.faults: dict[str, list[Fault]] = {}
        self.holds: dict[str, asyncio.Event] = {}
        self.socket_envelopes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.socket_acks: list[dict[str, Any]] = []
        self.socket_connected = asyncio.Event()
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/hooks/{hook}", self._hook)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    # ---- what tests use --------------------------------------------------------------------

    def trigger(self) -> str:
        """A trigger id as Slack puts in an interaction payload (valid 3 s, usable once)."""
        trigger = f"{next(self._ts)}.{secrets.randbelow(10**9)}.{secrets.token_hex(8)}"
        self.triggers[trigger] = time.monotonic()
        return trigger

    def response_url(self) -> str:
        hook = secrets.token_hex(8)
        self.hooks[hook] = Hook(created=time.monotonic())
        return f"{self.url}/hooks/{hook}"

    def hook_posts(self, url: str) -> list[dict[str, Any]]:
        return self.hooks[url.rsplit("/", 1)[1]].posts

    def fail(
        self,
        method: str,
        error: str,
        *,
        status: int = 200,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls of ``method`` answer with this error."""
        self.faults.setdefault(method, []).append(Fault(error, status, retry_after, times))

    def hold(self, method: str) -> asyncio.Event:
        """Calls of ``method`` wait until the returned event is set (a slow Slack or directory)."""
        self.holds[method] = asyncio.Event()
        return self.holds[method]

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def dm_of(self, user_id: str) -> str | None:
        return self.ims.get(user_id)

    def in_channel(self, channel: str, *, thread: bool | None = False) -> list[Message]:
        """Messages in a channel in posting order; thread=None for all, True for replies."""
        found = [m for (c, _), m in self.messages.items() if c == channel]
        if thread is None:
            return found
        return [m for m in found if (m.thread_ts is not None) == thread]

    def replies(self, channel: str, ts: str) -> list[Message]:
        return [m for m in self.in_channel(channel, thread=True) if m.thread_ts == ts]

    def ephemerals_to(self, user_id: str) -> list[dict[str, Any]]:
        return [e for e in self.ephemerals if e["user"] == user_id]

    def everything_sent(self) -> str:
        """Every argument twokey ever sent, as one string (for leak and injection checks)."""
        return json.dumps([c.params for c in self.calls], ensure_ascii=False) + json.dumps(
            [h.posts for h in self.hooks.values()], ensure_ascii=False
        )

    async def until(self, check: Callable[[], object], within: float = 8.0) -> Any:
        """Wait for work twokey does after its ack; fail plainly if it never happens."""
        deadline = time.monotonic() + within
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"stand-in never saw it; calls: {[c.method for c in self.calls]}"
                )
            await asyncio.sleep(0.02)

    # ---- the Web API -----------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        if method in self.holds:
            await self.holds[method].wait()
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        status, answer, headers = self._answer(method, params, token)
        self.calls.append(Call(method, params, status, answer))
        return web.json_response(answer, status=status, headers=headers)

    def _answer(
        self, method: str, params: dict[str, Any], token: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        wanted = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if not token:
            return 200, _error("not_authed"), {}
        if token != wanted:
            return 200, _error("invalid_auth"), {}
        fault = self._fault(method)
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            return fault.status, _error(fault.error), headers
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, _error("unknown_method"), {}
        return 200, handler(params), {}

    def _fault(self, method: str) -> Fault | None:
        queue = self.faults.get(method) or []
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault

    def m_auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://twokey-test.slack.com/",
            "team": "twokey test",
            "user": "twokey",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": "B0TWOKEY",
            "is_enterprise_install": False,
            **({"enterprise_id": self.enterprise_id} if self.enterprise_id else {}),
        }

    def m_users_info(self, p: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(p.get("user", "")))
        if user is None:
            return _error("user_not_found")
        return {"ok": True, "user": user.as_slack()}

    def m_users_lookupByEmail(self, p: dict[str, Any]) -> dict[str, Any]:
        email = str(p.get("email", "")).casefold()
        for user in self.users.values():
            if user.email and user.email.casefold() == email and user.team_id == TEAM:
                return {"ok": True, "user": user.as_slack()}
        return _error("users_not_found")

    def m_conversations_open(self, p: dict[str, Any]) -> dict[str, Any]:
        ids = [u for u in str(p.get("users", "")).split(",") if u]
        if len(ids) != 1:
            return _error("not_enough_users" if not ids else "too_many_users")
        user = self.users.get(ids[0])
        if user is None:
            return _error("user_not_found")
        if user.deleted:
            return _error("user_disabled")
        return {"ok": True, "channel": {"id": self._im(user.id)}}

    def _im(self, user_id: str) -> str:
        if user_id not in self.ims:
            self.ims[user_id] = "D" + user_id[1:]
            self.channels[self.ims[user_id]] = {user_id, BOT_USER}
        return self.ims[user_id]

    def _channel(self, channel: str) -> str | None:
        if channel.startswith(("U", "W")) and channel in self.users:
            return None if self.users[channel].deleted else self._im(channel)
        return channel if channel in self.channels else None

    def m_chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(str(p.get("channel", "")))
        if channel is None:
            return _error("channel_not_found")
        if BOT_USER not in self.channels[channel]:
            return _error("not_in_channel")
        problem = _message_problem(p)
        if problem is not None:
            return problem
        thread = p.get("thread_ts")
        if thread is not None and (channel, str(thread)) not in self.messages:
            return _error("thread_not_found")
        ts = f"{1700000000 + next(self._ts)}.{secrets.randbelow(10**6):06d}"
        message = Message(
            channel, ts, str(p.get("text", "")), _blocks(p), str(thread) if thread else None
        )
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": _as_slack(message)}

    def m_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        key = (str(p.get("channel", "")), str(p.get("ts", "")))
        message = self.messages.get(key)
        if message is None:
            return _error("message_not_found")
        if message.user != BOT_USER:
            return _error("cant_update_message")
        problem = _message_problem(p)
        if problem is not None:
            return problem
        message.text = str(p.get("text", message.text))
        message.blocks = _blocks(p) if "blocks" in p else message.blocks
        message.edits += 1
        return {"ok": True, "channel": key[0], "ts": key[1], "text": message.text}

    def m_chat_postEphemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(str(p.get("channel", "")))
        if channel is None:
            return _error("channel_not_found")
        user = self.users.get(str(p.get("user", "")))
        if user is None or user.deleted or user.id not in self.channels[channel]:
            return _error("user_not_in_channel")
        problem = _message_problem(p)
        if problem is not None:
            return problem
        self.ephemerals.append(
            {"channel": channel, "user": user.id, "text": p.get("text", ""), "blocks": _blocks(p)}
        )
        return {"ok": True, "message_ts": f"{time.time():.6f}"}

    def m_views_open(self, p: dict[str, Any]) -> dict[str, Any]:
        trigger = str(p.get("trigger_id", ""))
        if trigger in self.used_triggers:
            return _error("exchanged_trigger_id")
        issued = self.triggers.get(trigger)
        if issued is None:
            return _error("invalid_trigger_id")
        if time.monotonic() - issued > 3.0:
            return _error("expired_trigger_id")
        view = _json(p.get("view"))
        problem = _view_problem(view)
        if problem is not None:
            return problem
        self.used_triggers.add(trigger)
        view_id = f"V{next(self._ts):08d}"
        stored = {
            **view,
            "id": view_id,
            "team_id": TEAM,
            "state": {"values": {}},
            "hash": secrets.token_hex(6),
        }
        self.views[view_id] = stored
        return {"ok": True, "view": stored}

    def m_views_update(self, p: dict[str, Any]) -> dict[str, Any]:
        view_id = str(p.get("view_id", ""))
        if view_id not in self.views:
            return _error("not_found")
        view = _json(p.get("view"))
        problem = _view_problem(view)
        if problem is not None:
            return problem
        self.views[view_id] = {**self.views[view_id], **view}
        return {"ok": True, "view": self.views[view_id]}

    def m_apps_connections_open(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"{self.url.replace('http', 'ws', 1)}/socket?ticket={secrets.token_hex(4)}",
        }

    async def _stats(self, request: web.Request) -> web.Response:
        """How many calls so far (the benchmark waits for twokey's work to drain)."""
        return web.json_response({"calls": len(self.calls), "messages": len(self.messages)})

    # ---- response_url and Socket Mode ------------------------------------------------------

    async def _hook(self, request: web.Request) -> web.Response:
        hook = self.hooks.get(request.match_info["hook"])
        if hook is None:
            return web.Response(status=404, text="no_service")
        if len(hook.posts) >= 5 or time.monotonic() - hook.created > 1800:
            return web.Response(status=404, text="used_url")
        payload = await request.json()
        problem = _message_problem(payload)
        if problem is not None:
            return web.Response(status=400, text=str(problem["error"]))
        hook.posts.append(payload)
        return web.Response(text="ok")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "standin"},
                "connection_info": {"app_id": APP_ID},
            }
        )
        self.socket_connected.set()

        async def deliver() -> None:
            while True:
                envelope = await self.socket_envelopes.get()
                await ws.send_json(envelope)

        sender = asyncio.create_task(deliver())
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self.socket_acks.append(json.loads(frame.data))
        finally:
            sender.cancel()
        return ws


# ---- Slack's rules ---------------------------------------------------------------------------


def _error(code: str) -> dict[str, Any]:
    return {"ok": False, "error": code}


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        raw = await request.read()
        kind = request.content_type
        if kind == "application/json":
            params.update(json.loads(raw or b"{}"))
        elif raw:
            params.update(dict(parse_qsl(raw.decode(), keep_blank_values=True)))
    return params


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            loaded = json.loads(value)
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return value if isinstance(value, dict) else {}


def _blocks(p: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = p.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return list(blocks or [])


def _as_slack(message: Message) -> dict[str, Any]:
    return {
        "type": "message",
        "user": message.user,
        "text": message.text,
        "ts": message.ts,
        "blocks": message.blocks,
    }


def _message_problem(p: dict[str, Any]) -> dict[str, Any] | None:
    """chat.* argument checks: text or blocks present, sizes, and the Block Kit limits."""
    try:
        blocks = _blocks(p)
    except ValueError:
        return {"ok": False, "error": "invalid_blocks_format"}
    text = p.get("text")
    if not blocks and not text:
        return _error("no_text")
    if isinstance(text, str) and len(text) > 40000:
        return _error("msg_too_long")
    errors = block_kit_errors(blocks, most=50)
    if errors:
        return {"ok": False, "error": "invalid_blocks", "errors": errors}
    return None


def _view_problem(view: dict[str, Any]) -> dict[str, Any] | None:
    if view.get("type") != "modal":
        return {
            "ok": False,
            "error": "invalid_arguments",
            "response_metadata": {
                "messages": ["[ERROR] must be a modal [json-pointer:/view/type]"]
            },
        }
    errors = []
    for key in ("title", "submit", "close"):
        text = (view.get(key) or {}).get("text", "")
        if key == "title" and not text:
            errors.append("title is required [json-pointer:/view/title]")
        if len(text) > 24:
            errors.append(f"must be less than 25 characters [json-pointer:/view/{key}/text]")
    if len(str(view.get("private_metadata", ""))) > 3000:
        errors.append("must be less than 3001 characters [json-pointer:/view/private_metadata]")
    errors += block_kit_errors(view.get("blocks") or [], most=100, where="/view/blocks")
    if errors:
        return {
            "ok": False,
            "error": "invalid_arguments",
            "response_metadata": {"messages": errors},
        }
    return None


def block_kit_errors(
    blocks: list[dict[str, Any]], *, most: int, where: str = "/blocks"
) -> list[str]:
    """The Block Kit limits Slack enforces, written from Slack's reference, not from twokey."""
    errors: list[str] = []
    if len(blocks) > most:
        errors.append(f"no more than {most} items allowed [json-pointer:{where}]")

    def text_limit(obj: Any, limit: int, pointer: str) -> None:
        if isinstance(obj, dict):
            text = obj.get("text", "")
            if not isinstance(text, str) or not text:
                errors.append(f"must be more than 0 characters [json-pointer:{pointer}/text]")
            elif len(text) > limit:
                errors.append(
                    f"must be less than {limit + 1} characters [json-pointer:{pointer}/text]"
                )

    for i, block in enumerate(blocks):
        at = f"{where}/{i}"
        kind = block.get("type")
        if kind == "section":
            if "text" in block:
                text_limit(block["text"], 3000, f"{at}/text")
            found = block.get("fields") or []
            if len(found) > 10:
                errors.append(f"no more than 10 items allowed [json-pointer:{at}/fields]")
            for j, item in enumerate(found):
                text_limit(item, 2000, f"{at}/fields/{j}")
        elif kind == "header":
            if (block.get("text") or {}).get("type") != "plain_text":
                errors.append(f"must be plain_text [json-pointer:{at}/text]")
            text_limit(block.get("text"), 150, f"{at}/text")
        elif kind == "context":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= 10:
                errors.append(f"must have 1 to 10 items [json-pointer:{at}/elements]")
            for j, item in enumerate(elements):
                text_limit(item, 3000, f"{at}/elements/{j}")
        elif kind == "actions":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= 25:
                errors.append(f"must have 1 to 25 items [json-pointer:{at}/elements]")
            for j, item in enumerate(elements):
                if item.get("type") == "button":
                    text_limit(item.get("text"), 75, f"{at}/elements/{j}/text")
                    if len(str(item.get("value", ""))) > 2000:
                        errors.append(
                            "must be less than 2001 characters "
                            f"[json-pointer:{at}/elements/{j}/value]"
                        )
                    if len(str(item.get("action_id", ""))) > 255:
                        errors.append(
                            "must be less than 256 characters "
                            f"[json-pointer:{at}/elements/{j}/action_id]"
                        )
        elif kind == "input":
            text_limit(block.get("label"), 2000, f"{at}/label")
            element = block.get("element") or {}
            for j, option in enumerate(element.get("options") or []):
                text_limit(option.get("text"), 75, f"{at}/element/options/{j}/text")
        elif kind == "rich_text":
            if not block.get("elements"):
                errors.append(f"must have items [json-pointer:{at}/elements]")
        elif kind not in ("divider", "image", "video", "file", "markdown"):
            errors.append(f"unknown block type [json-pointer:{at}/type]")
        if len(str(block.get("block_id", ""))) > 255:
            errors.append(f"must be less than 256 characters [json-pointer:{at}/block_id]")
    return errors
