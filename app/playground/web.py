"""The local playground: the whole two-key flow in one browser page, no chat workspace needed.

Three panes (help desk agent, account owner, approver) and a strip with the request's state and
its audit trail. The agent types the same commands as in Slack and Teams (``parse_command``);
the owner and approver see the very Adaptive Cards Teams would get (``app.channels.teams.cards``)
rendered by Microsoft's renderer, bundled in ``static/vendor`` (nothing comes from a CDN). Every
button and command is ONE call into the same service the real channels use, as
``ChatUser(platform="playground", ...)``, so every rule holds here too.

It is for trying twokey, never for production: it is mounted only on a loopback address, and
every API call checks that it came from this page (loopback Host, same Origin, JSON body).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from app.channels.actions import press, verify
from app.channels.commands import HELP_TEXT, MAX_COMMAND, PLAIN_USAGE, USAGE, parse_command
from app.channels.common import decode_button
from app.channels.teams import cards
from app.domain.errors import (
    AlreadyDecided,
    BadInput,
    Conflict,
    Expired,
    IdentityUnsure,
    NotAllowed,
    NotFound,
    PolicyError,
    TwokeyError,
    Unavailable,
    VelocityLimited,
)
from app.domain.forms import NOTE_MAX, REASON_MAX, parse_request_id
from app.domain.messages import DIRECTORY_DOWN
from app.domain.models import Action, ChatUser, Principal, PrincipalKind, Request, RequestState
from app.domain.policy import Policy
from app.domain.stepup import Verifier
from app.domain.words import headline, shown_state, status_sentence, when
from app.playground.notifier import PANES, PlaygroundMailbox, PlaygroundNotifier, RevealedSecret
from app.playground.phone import PUSH_ID, PendingPush, SimulatedPhones, SimulatedPush
from app.runtime import Runtime, check_playground, production_wiring
from app.same_origin import from_own_page
from app.service import Decision
from app.settings import Settings

log = structlog.get_logger("twokey.playground")

NOT_FOR_PRODUCTION = (
    "The playground is for trying twokey on this computer, never for production: anyone who "
    "can open it can act as anyone in the directory."
)
PLATFORM = "playground"
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
STATIC_FILES = {
    "playground.js": "text/javascript",
    "playground.css": "text/css",
    "vendor/adaptivecards.min.js": "text/javascript",
    "vendor/adaptivecards.css": "text/css",
    "vendor/LICENSE-adaptivecards.txt": "text/plain",
    "vendor/LICENSE-swiper.txt": "text/plain",
    "vendor/adaptivecards.min.js.LICENSE.txt": "text/plain",
    "favicon.svg": "image/svg+xml",
}
"""The only files served: nothing else under static/ is reachable."""
AUDIT_MAX = 200
LISTED_MAX = 50
"""The request picker shows at most this many requests."""
REVEALED = "secret_revealed"
"""Audit event: the owner was shown the one-time secret (the secret itself is never in it)."""

STATUS_OF: list[tuple[type[TwokeyError], int]] = [
    (IdentityUnsure, 403),
    (NotAllowed, 403),
    (NotFound, 404),
    (AlreadyDecided, 409),
    (Conflict, 409),
    (Expired, 409),
    (VelocityLimited, 429),
    (Unavailable, 503),
    (BadInput, 400),
    (PolicyError, 400),
]

M = TypeVar("M", bound=BaseModel)


# ---- input ----------------------------------------------------------------------------------

PersonId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+:-]*$",
    ),
]
Short = Annotated[str, StringConstraints(max_length=64)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    viewer: PersonId = Field(alias="as")
    """Who the pane says it is: a directory id picked in its "who am I" list."""


class CommandBody(_Body):
    text: Annotated[str, StringConstraints(max_length=MAX_COMMAND)]


class OpenBody(_Body):
    action: Short
    target: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=210)]
    ticket: Short
    reason_code: Short
    note: Annotated[str, StringConstraints(max_length=NOTE_MAX)] = ""


class ButtonBody(_Body):
    button: Short
    reason: Annotated[str, StringConstraints(max_length=REASON_MAX)] = ""


class RevealBody(_Body):
    request: Annotated[str, StringConstraints(max_length=20)]


class PushBody(_Body):
    push: Annotated[str, StringConstraints(pattern=PUSH_ID)]
    """Which push on the simulated phone (as the state listed it)."""
    approve: bool
    """Approve (true) or Deny (false), as the phone's two buttons."""


class StateQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    request: Annotated[str, StringConstraints(max_length=20)]
    agent: PersonId | None = None
    owner: PersonId | None = None
    approver: PersonId | None = None
    """Who each pane says it is: a pane shows only what that person would have received.
    Left out, the pane shows what its channel received, whoever looks."""


class Refused(Exception):
    """An HTTP-level refusal (not JSON, wrong origin, bad fields): nothing was done."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _validation_words(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "input"
        lines.append(f"{field}: {error['msg']}")
    return "; ".join(lines)


# ---- where it may run -----------------------------------------------------------------------


def why_not_mounted(settings: Settings, policy: Policy) -> str | None:
    """Why the playground does not mount on this server (words for the log); None when it
    does. The one rule: ``mount`` follows it, and start-up asks it whether one-time codes will
    have the playground's simulated mailbox (bootstrap.playground_mailbox)."""
    if not settings.playground_enabled:
        return "TWOKEY_PLAYGROUND is off, or chat credentials are set"
    real = production_wiring(settings, policy)
    if real:
        return (
            f"this deployment is wired to production ({'; '.join(real)}); the playground runs "
            "only without chat credentials and with sandbox connectors."
        )
    if not is_loopback(settings.host):
        return (
            "the playground lets anyone act as anyone; it runs on a loopback address only "
            "(HOST=127.0.0.1). Set TWOKEY_PLAYGROUND=false to silence this."
        )
    return None


FORWARDED = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP")
"""Headers only a proxy adds: a request carrying one came from somewhere else."""


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost; anything else could be reached from another machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check_caller(request: web.Request) -> None:
    """The API answers its own page only: another origin or site gets nothing, read or write.

    Browsers send ``Origin`` on cross-origin reads and on every post, and ``Sec-Fetch-Site`` on
    every fetch; a client that sends neither (curl on this computer) is not a web page.
    """
    if not from_own_page(request, f"{request.scheme}://{request.host}", typed_url=True):
        raise Refused(403, "The playground only takes requests from its own page.")


def _state_query(request: web.Request) -> StateQuery:
    try:
        return StateQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise Refused(400, _validation_words(exc)) from None


def _host_name(host_header: str) -> str:
    """The name in a Host header: ``127.0.0.1:3000`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``.

    Anything after the name other than ``:<port>`` (``[::1].evil.example``) leaves the header
    whole, which no loopback check accepts."""
    if host_header.startswith("["):
        name, _, rest = host_header[1:].partition("]")
    elif host_header.count(":") == 1:
        name, rest = host_header.split(":")
        rest = ":" + rest
    else:
        return host_header
    return name if rest == "" or (rest[:1] == ":" and rest[1:].isdecimal()) else host_header


# ---- the handlers ---------------------------------------------------------------------------


class Playground:
    """The page and its JSON API over one runtime; every action is one service call."""

    def __init__(
        self, runtime: Runtime, notifier: PlaygroundNotifier, phones: SimulatedPhones | None = None
    ) -> None:
        self.runtime = runtime
        self.phones = phones or SimulatedPhones()
        """The simulated phones push step-ups arrive on (owner's and approver's panes)."""
        self.service = runtime.service
        self.directory = runtime.directory
        self.notifier = notifier
        self.page_html = _static_bytes("index.html")
        self.files = {name: _static_bytes(name) for name in STATIC_FILES}
        """Read once at mount: no disk access per request, and nothing outside the list."""
        self.restored: list[str] | None = None
        """Requests opened before this process started and still actionable (read once)."""

    def routes(self, app: web.Application) -> None:
        add_get, add_post = app.router.add_get, app.router.add_post
        add_get("/playground", self.page)
        add_get("/playground/", self.page)
        add_get("/playground/static/{name:.+}", self.static)
        add_get("/playground/api/setup", self.setup)
        add_get("/playground/api/requests", self.requests)
        add_get("/playground/api/state", self.state)
        add_post("/playground/api/command", self.command)
        add_post("/playground/api/open", self.open_form)
        add_post("/playground/api/button", self.button)
        add_post("/playground/api/secret", self.reveal_secret)
        add_post("/playground/api/push", self.answer_push)

    # -- the page ---------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_host(request)
        except Refused as exc:
            return web.Response(status=exc.status, text=exc.message)
        return web.Response(body=self.page_html, content_type="text/html", headers=PAGE_HEADERS)

    async def static(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_host(request)
        except Refused as exc:
            return web.Response(status=exc.status, text=exc.message)
        name = request.match_info["name"]
        if name not in self.files:
            raise web.HTTPNotFound(text="No such playground file.")
        return web.Response(
            body=self.files[name],
            content_type=STATIC_FILES[name],
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )

    # -- reading ----------------------------------------------------------------------------

    async def setup(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, None, self._setup)

    async def _setup(self) -> dict[str, Any]:
        policy = self.runtime.policy
        everyone = await self._everyone()
        people = [p for p in everyone if p.kind is PrincipalKind.HUMAN]
        nhis = [p for p in everyone if p.kind is PrincipalKind.NHI]

        def roles_of(principal: Principal) -> list[str]:
            return sorted(r for r in policy.roles if policy.holds_role(principal, r))

        default_tier = policy.tiers.get(policy.rules[-1].tier)
        approver_role = default_tier.approver_role if default_tier else ""
        agent = _first(people, lambda p: policy.holds_role(p, policy.requester_role))
        approver = _first(people, lambda p: policy.holds_role(p, approver_role))
        owner = _first(people, lambda p: not roles_of(p))
        return {
            "notice": NOT_FOR_PRODUCTION,
            "people": [
                {
                    "id": p.id,
                    "name": p.name,
                    "email": p.email or "",
                    "roles": roles_of(p),
                    "disabled": p.disabled,
                }
                for p in people
            ],
            "nhis": [
                {"id": p.id, "name": p.name, "owner": p.owner_id or "", "system": p.system or ""}
                for p in nhis
            ],
            "actions": [{"value": a.value, "label": a.label, "nhi": a.for_nhi} for a in Action],
            "reason_codes": list(policy.reason_codes),
            "ticket_pattern": policy.ticket_pattern,
            "usage": HELP_TEXT,
            "connectors": [c.name for c in self.runtime.connectors],
            "defaults": {"agent": agent, "owner": owner, "approver": approver},
        }

    async def requests(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, None, self._requests)

    async def _requests(self) -> dict[str, Any]:
        now = await self.runtime.store.now()
        if self.restored is None:
            self.restored = await self._still_actionable(now)
        found: list[Request] = []
        for request_id in dict.fromkeys([*self.notifier.requests, *self.restored]):
            stored = await self.runtime.store.get(request_id)
            if stored is not None:
                found.append(stored)
        found.sort(key=lambda r: r.created_at, reverse=True)
        return {"requests": [_summary(r, now) for r in found[:LISTED_MAX]]}

    async def _still_actionable(self, now: int) -> list[str]:
        """Requests from before this process started that someone can still act on.

        The notifier only knows what this process saw; after a restart the open requests (and
        finished ones whose owner may still say "this wasn't me") must stay reachable.
        Read once, on the first listing: the audit trail is scanned back one dispute window.
        """
        store = self.runtime.store
        ids = [r.id for r in await store.open_requests()]
        since = now - self.runtime.policy.disputes.window * 1000
        seen: set[str] = set(ids)
        async for record in self.runtime.trail.export(since_ms=since):
            rid = str(record.get("rid") or "")
            if not rid or rid in seen or len(seen) >= 10 * LISTED_MAX:
                continue
            seen.add(rid)
            stored = await store.get(rid)
            if stored is not None and stored.dispute_open(now):
                ids.append(rid)
        return ids

    async def state(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, None, lambda: self._state(_state_query(request)))

    async def _state(self, query: StateQuery) -> dict[str, Any]:
        request_id = parse_request_id(query.request)
        stored = await self.runtime.store.get(request_id)
        if stored is None:
            raise NotFound(f"No request {request_id}.")
        now = await self.runtime.store.now()
        messages: dict[str, list[str]] = {pane: [] for pane in PANES}
        for message in self.notifier.messages(request_id):
            messages[message.pane].append(message.text)
        shown: dict[str, cards.Card | None] = {
            "agent": cards.requester_status_card(stored, now),
            "owner": cards.owner_card(stored, now),
            "approver": cards.approval_card(stored, now),
        }
        everyone = {p.id: p for p in await self._everyone()}
        asked = self.notifier.manager_of(request_id)
        manager = asked is not None and query.approver == asked[0]
        if asked is not None and manager:  # the owner's manager: their card, in this pane
            names = {pid: p.name for pid, p in everyone.items()}
            shown["approver"] = cards.manager_card(stored, now, names, asked[1])
        viewers = {"agent": query.agent, "owner": query.owner, "approver": query.approver}
        notes: dict[str, str] = {}
        for pane, viewer in viewers.items():
            if pane == "approver" and manager:
                continue
            note = self._not_for(pane, viewer, stored, everyone)
            if note:  # what this pane's person never received stays off their screen
                notes[pane], shown[pane], messages[pane] = note, None, []
        return {
            "request": _summary(stored, now),
            "approvers": self._eligible_approvers(stored, now, list(everyone.values())),
            "cards": shown,
            "notes": notes,
            "messages": messages,
            "secret": self.notifier.secret_waiting(request_id, query.owner or ""),
            "phone": {
                pane: [_push(p) for p in self.phones.waiting(viewer, request_id)]
                for pane, viewer in (("owner", query.owner), ("approver", query.approver))
                if viewer and pane not in notes
            },
            "audit": await self._audit(stored),
        }

    def _not_for(
        self, pane: str, viewer: str | None, request: Request, everyone: dict[str, Principal]
    ) -> str:
        """Why the person a pane stands for got nothing about this request ("" if they did)."""
        if viewer is None:
            return ""
        person = everyone.get(viewer)
        name = person.name if person else viewer

        def called(principal_id: str) -> str:
            known = everyone.get(principal_id)
            return f"{known.name} ({principal_id})" if known else principal_id

        if pane == "agent" and viewer != request.requester_id:
            return (
                f"Nothing here for {name}: {called(request.requester_id)} opened this request, "
                "so its status card and messages go to them."
            )
        if pane == "owner" and viewer != request.owner_id:
            return (
                f"Nothing here for {name}: the card goes to {called(request.owner_id)}, the "
                "owner of record, and to no one else."
            )
        if pane == "owner" and not request.plan.owner_confirmation and not request.state.is_final:
            return (
                f"Nothing asked of {name}: this request's tier needs no owner confirmation "
                "(break-glass, say); they are told once the change is made."
            )
        roles = self.service.deciding_roles(request)
        policy = self.runtime.policy
        if pane == "approver" and not (
            person is not None and any(policy.holds_role(person, r) for r in roles)
        ):
            return (
                f"Nothing here for {name}: the approval card goes to holders of the "
                f"{' or '.join(roles)} role."
            )
        return ""

    def _eligible_approvers(
        self, request: Request, now: int, everyone: list[Principal]
    ) -> list[str]:
        """Who may decide it (the service's one rule, ``may_decide``); those who have not
        approved yet first (the approver picker follows the request to one of them)."""
        approved = {a.approver_id for a in request.valid_approvals(now)}
        found = [p.id for p in everyone if self.service.may_decide(p, request)]
        return sorted(found, key=lambda pid: pid in approved)

    async def _audit(self, stored: Request) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async for record in self.runtime.trail.export(since_ms=stored.created_at):
            if record.get("rid") != stored.id:
                continue
            events.append(
                {
                    "seq": record.get("seq"),
                    "at": _clock(record.get("at")),
                    "kind": str(record.get("kind", "")),
                    "actor": str(record.get("actor", "")),
                    "role": str(record.get("role", "")),
                    "from": str(record.get("from", "")),
                    "to": str(record.get("to", "")),
                    "reason": str(record.get("reason", "")),
                    "outcome": str(record.get("outcome", "")),
                    "sealed": bool(record.get("mac")),
                }
            )
            if len(events) >= AUDIT_MAX:
                break
        return events

    # -- acting -----------------------------------------------------------------------------

    async def command(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, CommandBody, self._command)

    async def _command(self, body: CommandBody) -> dict[str, Any]:
        command = parse_command(body.text)
        if command.verb == "help":
            return _said(HELP_TEXT)
        if command.verb == "form":
            return _said("Type a command, or fill in the form below it.")
        who = await self._chat_user(body.viewer)
        if command.verb == "open":
            target = await self._target(command.target)
            decision = await self.service.open(
                who, target, command.action, command.ticket, command.reason_code, command.text
            )
            return _decided(decision)
        if command.verb == "breakglass":
            target = await self._target(command.target)
            decision = await self.service.breakglass(
                who, target, command.action, command.ticket, command.text
            )
            return _decided(decision)
        if command.verb == "cancel":
            return _decided(await self.service.cancel(who, command.request_id))
        if command.verb in ("verify", "attest"):
            return _decided(await verify(self.service, who, command))
        if command.verb == "status":
            found = await self.service.status(who, command.request_id)
            return _said(status_sentence(found, await self.runtime.store.now()), found.id)
        return _said(await self._listing(who))

    async def _listing(self, who: ChatUser) -> str:
        listing = await self.service.list_for(who)
        parts = [
            ("Opened by you", listing.mine),
            ("For you to approve", listing.to_approve),
            ("For you to confirm", listing.to_confirm),
        ]
        lines = [
            f"{title}: " + ", ".join(f"{r.id} ({r.state.value})" for r in found)
            for title, found in parts
            if found
        ]
        return " | ".join(lines) or "Nothing open involves you."

    async def open_form(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, OpenBody, self._open_form)

    async def _open_form(self, body: OpenBody) -> dict[str, Any]:
        who = await self._chat_user(body.viewer)
        target = await self._target(body.target)
        decision = await self.service.open(
            who, target, body.action, body.ticket, body.reason_code, body.note
        )
        return _decided(decision)

    async def button(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, ButtonBody, self._button)

    async def _button(self, body: ButtonBody) -> dict[str, Any]:
        """A card's button: only its action and request id count, as in Teams and Slack."""
        action, request_id = decode_button(body.button)
        who = await self._chat_user(body.viewer)
        return _decided(await press(self.service, action, who, request_id, body.reason))

    async def answer_push(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, PushBody, self._answer_push)

    async def _answer_push(self, body: PushBody) -> dict[str, Any]:
        """Approve or Deny on the simulated phone: only the person it was sent to, once. The
        service records the answer (as from Okta or Duo) and updates the cards."""
        who = await self._chat_user(body.viewer)
        caller = await self.service.identify(who)
        push = self.phones.answer(body.push, caller.id, body.approve)
        if push is None:
            raise NotFound(
                "This push is not waiting on your phone any more (answered, timed out, or sent "
                "to someone else); nothing changed."
            )
        said = "approved" if body.approve else "denied"
        return {  # the service records it as it would Okta's answer; the cards follow
            "message": f"You {said} the push on your phone for {push.request_id}.",
            "request": push.request_id,
            "changed": True,
            "kind": "done",
        }

    async def reveal_secret(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, RevealBody, self._reveal_secret)

    async def _reveal_secret(self, body: RevealBody) -> dict[str, Any]:
        """Invariant 5: only the owner of record, once; nobody else ever gets it."""
        request_id = parse_request_id(body.request)
        who = await self._chat_user(body.viewer)
        caller = await self.service.identify(who)
        revealed = self.notifier.reveal_secret(request_id, caller.id)
        if revealed is None:
            raise NotFound(
                "No one-time secret is waiting for you on this request: only the account's "
                "owner of record receives it, and only once."
            )
        await self._audit_reveal(request_id, caller.id, revealed)
        return {
            "ok": True,
            "message": f"Your {revealed.label}. It is shown once: copy it now.",
            "label": revealed.label,
            "secret": revealed.secret.get_secret_value(),
        }

    async def _audit_reveal(self, request_id: str, owner_id: str, revealed: RevealedSecret) -> None:
        """Who saw a one-time secret, and when, belongs in the trail (never the secret itself).

        Audited before it is handed over: if the trail cannot take the event, the owner gets
        nothing now and the secret stays held for another try.
        """
        try:
            reply = await self.runtime.store.annotate(
                request_id, REVEALED, owner_id, "", "shown once to the owner"
            )
        except Exception:
            self.notifier.hold_again(request_id, owner_id, revealed)
            raise
        if reply.code != "OK":
            self.notifier.hold_again(request_id, owner_id, revealed)
            raise Unavailable(
                "twokey could not record that you are seeing the secret, so it is not shown "
                "yet: try again in a moment."
            )

    # -- helpers ----------------------------------------------------------------------------

    async def _answer(
        self,
        request: web.Request,
        model: type[M] | None,
        work: Callable[..., Awaitable[dict[str, Any]]],
    ) -> web.StreamResponse:
        """Check where the call came from, validate its body, do the work, say what happened."""
        try:
            self._check_host(request)
            _check_caller(request)
            if model is None:
                result = await work()
            else:
                result = await work(await self._body(request, model))
        except Refused as exc:
            return _refusal(exc.status, exc.message)
        except TwokeyError as exc:
            words = exc.message.replace(USAGE, PLAIN_USAGE)  # shown as typed: no Markdown marks
            return _refusal(_status_of(exc), words, exc.code)
        except Exception as exc:
            log.error("playground_failed", path=request.path, error=type(exc).__name__)
            return _refusal(500, "Something went wrong inside twokey; nothing more was done.")
        return web.json_response({"ok": True, **result}, headers={"Cache-Control": "no-store"})

    def _check_host(self, request: web.Request) -> None:
        """Only a loopback Host: a name pointed at 127.0.0.1 (DNS rebinding) gets nothing; nor
        does anything a proxy forwarded (a reverse proxy on this machine would make another
        machine's request look local)."""
        if not is_loopback(_host_name(request.host)):
            raise Refused(403, "The playground answers on a loopback address only.")
        if any(name in request.headers for name in FORWARDED):
            raise Refused(403, "The playground answers this machine only, not through a proxy.")

    async def _body(self, request: web.Request, model: type[M]) -> M:
        if request.content_type != "application/json":
            raise Refused(415, "Send JSON (Content-Type: application/json).")
        try:
            data = await request.json()
        except ValueError:
            raise Refused(400, "The request body is not valid JSON.") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise Refused(400, _validation_words(exc)) from None

    async def _everyone(self) -> list[Principal]:
        try:
            return await self.directory.search("", limit=1000)
        except Exception as exc:
            log.warning("directory_unavailable", error=type(exc).__name__)
            raise Unavailable(DIRECTORY_DOWN) from exc

    async def _principal(self, principal_id: str) -> Principal | None:
        try:
            return await self.directory.get(principal_id)
        except Exception as exc:
            log.warning("directory_unavailable", error=type(exc).__name__)
            raise Unavailable(DIRECTORY_DOWN) from exc

    async def _chat_user(self, person_id: str) -> ChatUser:
        """The chat account a pane stands for: the person's directory email, as a chat would."""
        principal = await self._principal(person_id)
        if principal is None or principal.kind is not PrincipalKind.HUMAN:
            raise BadInput(
                f"No person called {person_id[:40]!r} is in the sandbox directory: pick someone "
                "from the list."
            )
        return ChatUser(
            platform=PLATFORM,
            user_id=principal.id,
            email=principal.email,
            display_name=principal.name,
        )

    async def _target(self, token: str) -> ChatUser | str:
        """``@alice`` / ``alice`` for a person, ``nhi:billing-api`` for a non-human identity."""
        word = token.strip()
        if word.lower().startswith("nhi:"):
            return word
        name = word.removeprefix("@")
        principal = await self._principal(name)
        if principal is None:
            hint = " Name a person by id (@alice) or an NHI as nhi:<name>."
            if await self._is_nhi(name):
                hint = f" For the non-human identity, write nhi:{name}."
            raise BadInput(f"No one called {name[:40]!r} is in the sandbox directory.{hint}")
        if principal.kind is PrincipalKind.NHI:
            return principal.id
        return ChatUser(
            platform=PLATFORM,
            user_id=principal.id,
            email=principal.email,
            display_name=principal.name,
        )

    async def _is_nhi(self, name: str) -> bool:
        try:
            return await self.directory.find_nhi(name) is not None
        except Exception:
            return False


# ---- small pure helpers ---------------------------------------------------------------------


def _static_bytes(name: str) -> bytes:
    return resources.files("app.playground").joinpath("static", *name.split("/")).read_bytes()


def _first(people: list[Principal], test: Callable[[Principal], bool]) -> str:
    for person in people:
        if not person.disabled and test(person):
            return person.id
    return people[0].id if people else ""


def _said(message: str, request_id: str = "") -> dict[str, Any]:
    """An answer that changed nothing and refused nothing (help, status, list)."""
    return {"message": message, "request": request_id, "changed": False, "kind": "info"}


def _decided(decision: Decision) -> dict[str, Any]:
    """``kind`` tells the page how to show it: an unchanged decision ("already denied") is a
    refusal, never a green success."""
    return {
        "message": decision.message,
        "request": decision.request.id,
        "changed": decision.changed,
        "kind": "done" if decision.changed else "refused",
    }


def _push(push: PendingPush) -> dict[str, str]:
    """A push as the phone shows it: which app, which request (nothing typed by anyone)."""
    return {"id": push.id, "app": push.app, "request": push.request_id}


def _summary(request: Request, now: int) -> dict[str, Any]:
    shown = shown_state(request, now)
    words = headline(shown)
    disputed = request.disputed_at is not None
    if disputed:
        words += ", then disputed by the owner: security incident"
    return {
        "id": request.id,
        "state": shown.value,
        "disputed": disputed,
        "words": words,
        "action": request.action.value,
        "target": request.target_name,
        "target_id": request.target_id,
        "owner": request.owner_id,
        "requester": request.requester_id,
        "ticket": request.ticket,
        "tier": request.plan.tier_label or request.plan.tier,
        "waiting_for": request.waiting_for(now) if shown.is_open else [],
        "expires": when(request.expires_at) if shown.is_open else "",
        "finished": _finished(request, shown),
    }


def _finished(request: Request, shown: RequestState) -> str:
    """When it ended, for a request that has: what a finished request shows, not "expires"."""
    if shown.is_open:
        return ""
    if shown is RequestState.EXPIRED:
        return when(request.expires_at)
    return when(request.finished_at or request.decided_at)


def _clock(at: object) -> str:
    if not isinstance(at, int):
        return ""
    return datetime.fromtimestamp(at / 1000, tz=UTC).strftime("%H:%M:%S UTC")


def _status_of(exc: TwokeyError) -> int:
    for kind, status in STATUS_OF:
        if isinstance(exc, kind):
            return status
    return 400


def _refusal(status: int, message: str, code: str = "refused") -> web.Response:
    return web.json_response(
        {"ok": False, "error": message, "code": code},
        status=status,
        headers={"Cache-Control": "no-store"},
    )


# ---- mounting -------------------------------------------------------------------------------


async def mount(app: web.Application, runtime: Runtime) -> None:
    """Add /playground and its notifier, on loopback only; elsewhere refuse, loudly.

    Never beside production wiring (chat credentials, real identity providers): asked for
    explicitly there, it is a StartupError; left unset, it stays off.
    """
    settings = runtime.settings
    check_playground(settings, runtime.policy)
    refused = why_not_mounted(settings, runtime.policy)
    if refused is not None:
        log.warning("playground_not_mounted", host=settings.host, reason=refused)
        return
    notifier = PlaygroundNotifier()
    runtime.notifier.add(notifier)
    step_up = runtime.service.step_up
    if step_up is not None and step_up.mail is None:  # no mail server: the simulated mailbox
        step_up = dataclasses.replace(step_up, mail=PlaygroundMailbox(notifier))
    phones = SimulatedPhones()
    if step_up is not None:  # pushes nobody else runs here arrive on the simulated phone
        simulated = {
            v.value: SimulatedPush(phones, v) for v in (Verifier.OKTA_PUSH, Verifier.DUO_PUSH)
        }
        step_up = dataclasses.replace(step_up, push={**simulated, **step_up.push})
    runtime.service.step_up = step_up
    app.on_shutdown.append(phones.hang_up)
    Playground(runtime, notifier, phones).routes(app)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.warning(
        "playground_mounted",
        url=f"http://{host}:{settings.port}/playground",
        note="for trying twokey only, never for production; served once twokey is listening",
    )
