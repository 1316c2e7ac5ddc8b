"""What stands between the internet and the Bolt app: signature, tenancy, replay.

* :func:`signature_problem` checks ``X-Slack-Signature`` the way Slack computes it (HMAC-SHA256
  of ``v0:<timestamp>:<body>`` with the signing secret) *before* Bolt sees the request, so a
  missing, non-numeric or stale (more than 5 minutes either way) timestamp is a 401, not the
  500 stock Bolt answers a non-numeric timestamp with.
* :class:`Tenancy` knows the workspaces / enterprise and the app this deployment serves.
* :class:`TenancyGate` refuses any payload from another workspace or app before authorisation.
* :class:`Deliveries` lets each ``trigger_id`` (or ``event_id``) be acted on once (a claim on
  the MessageLedger port): a replayed signed request, a Slack retry (``X-Slack-Retry-Num``) or
  a double submit opens nothing twice.
* :func:`is_slack_hook` says which ``response_url`` a reply may be POSTed to (Slack's only).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client import Counter
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.delivery import Delivery
from app.domain.errors import Unavailable
from app.ports import MessageLedger

log = structlog.get_logger("twokey.slack.guard")

MAX_SKEW_S = 5 * 60
"""Slack's replay bound: a request timestamped more than 5 minutes away is refused."""
AUTH_TEST_S = 1.5
"""Learning the bot's own workspace happens before the ack: Slack's 3 s must still be met."""
REPLAY_KEEP_S = 2 * MAX_SKEW_S + 60
"""A trigger id is remembered for longer than any signed copy of it can stay acceptable."""

REFUSED = Counter(
    "twokey_slack_refused_total",
    "Slack requests refused before any work, by reason.",
    ["reason"],
)

NOT_SERVED = "This Slack workspace is not served by this twokey deployment; nothing was changed."
UNCONFIRMED = (
    "twokey could not confirm with Slack which workspace it serves just now, so nothing was "
    "changed. Please try again in a minute."
)
"""For a payload from our own workspace too: the bot's workspace is learned from Slack
(``auth.test``), and until Slack has answered once no payload is served."""
RELEARN_S = (2.0, 5.0, 15.0, 30.0)
"""Waits between start-up attempts to learn the workspace (the last one repeats)."""
STORE_DOWN = (
    "twokey cannot reach its database right now, so nothing was changed. Please try again in "
    "a minute."
)


def signature_problem(
    signing_secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
) -> str | None:
    """Why this request is not provably from Slack and fresh, or None when it is."""
    if not signing_secret:
        return "no_signing_secret"
    if not timestamp or not signature:
        return "missing_signature"
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return "bad_timestamp"
    if abs(now - int(timestamp)) > MAX_SKEW_S:
        return "stale_timestamp"
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return "bad_signature"
    return None


@dataclass(frozen=True)
class Origin:
    """Who a payload says it comes from (all optional: shapes differ per payload type)."""

    team_id: str | None = None
    enterprise_id: str | None = None
    app_id: str | None = None
    user_team_id: str | None = None


def origin_of(body: dict[str, Any]) -> Origin:
    """Read team, enterprise, app and the acting user's team from any Slack payload shape."""
    team = body.get("team")
    enterprise = body.get("enterprise")
    user = body.get("user")
    event = _object(body.get("event"))
    team_id = (
        (team.get("id") if isinstance(team, dict) else team)
        or body.get("team_id")
        or _object(body.get("view")).get("team_id")
    )
    enterprise_id = (
        (enterprise.get("id") if isinstance(enterprise, dict) else enterprise)
        or body.get("enterprise_id")
        or (team.get("enterprise_id") if isinstance(team, dict) else None)
    )
    user_team = (user.get("team_id") if isinstance(user, dict) else None) or (
        event.get("user_team") if event else None
    )
    return Origin(
        team_id=_text(team_id),
        enterprise_id=_text(enterprise_id),
        app_id=_text(body.get("api_app_id")),
        user_team_id=_text(user_team),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _object(value: object) -> dict[str, Any]:
    """A payload part that should be an object, or an empty one (a signed but odd shape)."""
    return value if isinstance(value, dict) else {}


@dataclass
class Tenancy:
    """The workspaces / enterprise and the app served; unset teams mean the bot's own one."""

    client: AsyncWebClient
    configured: frozenset[str] = frozenset()
    app_id: str | None = None
    _learned: frozenset[str] | None = field(default=None, init=False)

    async def allowed(self) -> frozenset[str]:
        """The allow-list; empty configuration means "the workspace the bot token belongs to"
        (the bot's own workspace only, not every workspace of its Enterprise Grid org; for an
        org-wide install, the org). Empty when Slack has not said yet."""
        if self.configured:
            return self.configured
        if self._learned is None:
            try:
                answer = await asyncio.wait_for(self.client.auth_test(), AUTH_TEST_S)
            except (SlackApiError, OSError, TimeoutError) as exc:
                log.error("slack_auth_test_failed", error=type(exc).__name__)
                return frozenset()
            org_wide = answer.get("is_enterprise_install") is True
            ours = answer.get("enterprise_id") if org_wide else answer.get("team_id")
            self._learned = frozenset({ours} if isinstance(ours, str) and ours else ())
            log.info("slack_workspace_learned", teams=sorted(self._learned))
        return self._learned

    async def learn(self, stopping: asyncio.Event) -> None:
        """At start-up: ask Slack which workspace the bot is in until it says, so the first
        person to use twokey is not the one who finds Slack slow (or briefly unreachable)."""
        attempt = 0
        while not (self.configured or stopping.is_set() or await self.allowed()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), RELEARN_S[min(attempt, len(RELEARN_S) - 1)])
            attempt += 1

    async def serves(self, origin: Origin) -> str | None:
        """Why this payload's workspace or app is not served, or None when it is."""
        if self.app_id and origin.app_id != self.app_id:
            return "other_app"
        allowed = await self.allowed()
        if not allowed:
            return "workspace_unconfirmed"
        if origin.team_id not in allowed and origin.enterprise_id not in allowed:
            return "other_workspace"
        return None

    async def is_member_team(self, *ids: str | None) -> bool:
        """Whether any of these team / enterprise ids is one of ours (Slack Connect check)."""
        allowed = await self.allowed()
        return any(i in allowed for i in ids if i)


class TenancyGate(AsyncMiddleware):
    """Before authorisation: only our workspace(s) and our app get any further."""

    def __init__(
        self, tenancy: Tenancy, tell: Callable[[str, str], Awaitable[object]] | None = None
    ) -> None:
        self.tenancy = tenancy
        self.tell = tell
        """Posts words to a click's ``response_url`` (an ephemeral to the one who clicked)."""

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse:
        body = req.body if isinstance(req.body, dict) else {}
        if body.get("type") == "url_verification" or body.get("ssl_check") == "1":
            # only what Bolt answers itself (the challenge, the ssl check) and no listener sees:
            # any other "ssl_check" value would carry a command past the allow-list
            return await next()
        origin = origin_of(body)
        problem = await self.tenancy.serves(origin)
        if problem is None:
            return await next()
        REFUSED.labels(problem).inc()
        log.warning(
            "slack_request_refused",
            reason=problem,
            team=origin.team_id,
            enterprise=origin.enterprise_id,
            app=origin.app_id,
        )
        if problem == "workspace_unconfirmed":
            return await self._unconfirmed(body)
        if "command" in body:
            return BoltResponse(status=200, body=NOT_SERVED)
        return BoltResponse(status=200, body="")

    async def _unconfirmed(self, body: dict[str, Any]) -> BoltResponse:
        """Our workspace, maybe, but Slack has not confirmed it: the person who typed, clicked
        or submitted hears so (a silent 200 would read as done), and nothing is served."""
        if "command" in body:
            return BoltResponse(status=200, body=UNCONFIRMED)
        if body.get("type") == "view_submission":
            blocks = list(_object(_object(_object(body.get("view")).get("state")).get("values")))
            if blocks:
                errors = {"response_action": "errors", "errors": {blocks[0]: UNCONFIRMED[:150]}}
                return BoltResponse(
                    status=200,
                    body=json.dumps(errors),
                    headers={"content-type": "application/json"},
                )
        hook = body.get("response_url")
        if self.tell is not None and isinstance(hook, str):
            try:
                await asyncio.wait_for(self.tell(hook, UNCONFIRMED), AUTH_TEST_S)
            except Exception as exc:  # the click is refused all the same
                log.warning("slack_unconfirmed_not_told", error=type(exc).__name__)
        return BoltResponse(status=200, body="")


def delivery_key(body: dict[str, Any]) -> str | None:
    """What makes one delivery unique: its trigger id, or an event's id."""
    for name in ("trigger_id", "event_id"):
        value = body.get(name)
        if isinstance(value, str) and 0 < len(value) <= 200:
            return f"{name}:{value}"
    return None


class Deliveries:
    """Each delivery is acted on once: a once-only claim on its trigger id / event id.

    Checked before any work (for a decision, as its first step before the ack), so a replayed
    signed request, a Slack retry or a double submit is answered like the first but changes
    nothing.
    """

    def __init__(self, ledger: MessageLedger) -> None:
        self.ledger = ledger

    def carried(self, body: dict[str, Any], request_id: str) -> Delivery | None:
        """This delivery, for the gate script of ``request_id`` to check with its decision (one
        round trip); None when it has no trigger or event id."""
        key = delivery_key(body)
        if key is None:
            return None
        return Delivery(scope="slack", key=key, keep_s=REPLAY_KEEP_S, request_id=request_id)

    async def first(
        self, body: dict[str, Any], retry: str | None = None, *, near: str | None = None
    ) -> bool:
        """True the first time this delivery is seen; raises Unavailable if it cannot tell.
        ``near``: the request a decision is about (the claim its gate script checks)."""
        key = delivery_key(body)
        if key is None:
            return True
        try:
            fresh = await self.ledger.claim_once("slack", key, REPLAY_KEEP_S, near=near)
        except Exception as exc:  # whatever the ledger's trouble: refuse rather than repeat
            log.error("slack_replay_check_failed", error=type(exc).__name__)
            raise Unavailable(STORE_DOWN) from exc
        if fresh:
            return True
        self.repeated(body, retry)
        return False

    def repeated(self, body: dict[str, Any], retry: str | None) -> None:
        """Count and log a delivery seen before (it changes nothing and is not answered)."""
        REFUSED.labels("duplicate").inc()
        log.info(
            "slack_duplicate_delivery",
            retry=retry,
            kind=body.get("type") or ("command" if "command" in body else None),
        )


SLACK_HOOK_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})
"""Where Slack's ``response_url``s point (commercial Slack and GovSlack)."""


def is_slack_hook(url: object, api_url: str) -> bool:
    """Whether a payload's ``response_url`` may be followed: https to Slack's hooks host, or the
    origin of ``SLACK_API_URL`` (a proxy, the test stand-in). Anything else is never POSTed to:
    the payload names it, and twokey must not be made to send a reply (with request details) to
    an arbitrary host, inside its network or out of it."""
    if not isinstance(url, str) or len(url) > 2000:
        return False
    try:
        to, api = urlsplit(url), urlsplit(api_url)
        port, api_port = to.port, api.port
    except ValueError:
        return False
    if to.username is not None or to.password is not None or not to.hostname:
        return False
    if to.scheme == "https" and to.hostname in SLACK_HOOK_HOSTS and port in (None, 443):
        return True
    return (to.scheme, to.hostname, port) == (api.scheme, api.hostname, api_port)


def first_header(values: Iterable[str] | None) -> str | None:
    for value in values or ():
        return value
    return None
