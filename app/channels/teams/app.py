"""The Teams face of twokey: ``POST /api/messages`` on the shared aiohttp server.

The HTTP adapter does in order: read the activity; authenticate its token (auth.py; any failure
is 401, before anything else happens); refuse a tenant not allowed (403, nothing opened); then
hand the authenticated activity to botbuilder's ``CloudAdapter.process_activity`` and write the
invoke response itself (stock ``process`` answers 500 to every ``adaptiveCard/action`` invoke,
and 500 to most bad tokens). A message or install is answered 200 once handled; an invoke is
answered 200 with its body, never a 5xx.

``TEAMS_ENDPOINTS`` lets a test point Bot Framework authentication at local stand-ins (OpenID
metadata, keys, login); production always uses the public cloud's.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity, ActivityTypes
from botframework.connector.auth import BotFrameworkAuthentication, ClaimsIdentity

from app.channels.teams.auth import (
    REFUSED,
    BotConfig,
    ConnectorClients,
    ConnectorTokens,
    Endpoints,
    TeamsAuthError,
    authenticate,
    authentication,
    bot_config,
)
from app.channels.teams.bot import TwokeyBot
from app.channels.teams.identity import PLATFORM, TeamsPeople, tenant_of
from app.channels.teams.notifier import SERVICE_KEY, TeamsNotifier
from app.domain.errors import TwokeyError
from app.runtime import Runtime, StartupError
from app.settings import Settings

log = structlog.get_logger("twokey.teams")

TEAMS_ENDPOINTS = web.AppKey("teams_endpoints", Endpoints)
MAX_ACTIVITY_BYTES = 256 * 1024


def allowed_tenants(settings: Settings) -> frozenset[str]:
    """TEAMS_ALLOWED_TENANTS, or the app's own tenant when the list is empty."""
    listed = [t.strip() for t in settings.teams_allowed_tenants if t.strip()]
    if not listed and settings.microsoft_app_tenant_id:
        listed = [settings.microsoft_app_tenant_id]
    return frozenset(listed)


def check_settings(settings: Settings) -> None:
    if not settings.microsoft_app_id:
        raise StartupError("Teams is configured but MICROSOFT_APP_ID is empty.")
    incomplete = settings.incomplete_teams_credentials()
    if incomplete is not None:  # the same rule `twokey serve` checks before anything starts
        raise StartupError(incomplete)
    if settings.microsoft_app_type != "MultiTenant" and not settings.microsoft_app_tenant_id:
        raise StartupError(
            f"MICROSOFT_APP_TYPE={settings.microsoft_app_type} needs MICROSOFT_APP_TENANT_ID "
            "(the Directory (tenant) ID of the app registration)."
        )
    if not allowed_tenants(settings):
        raise StartupError(
            "No Teams tenant is allowed: set MICROSOFT_APP_TENANT_ID, or TEAMS_ALLOWED_TENANTS "
            'to a JSON list of tenant ids, e.g. ["00000000-0000-0000-0000-000000000000"].'
        )


class TeamsChannel:
    """The adapter, the bot and the notifier, and the HTTP endpoint in front."""

    def __init__(
        self, runtime: Runtime, session: aiohttp.ClientSession, endpoints: Endpoints
    ) -> None:
        settings = runtime.settings
        check_settings(settings)
        self.config: BotConfig = bot_config(settings, endpoints)
        self.tenants = allowed_tenants(settings)
        self.tokens = ConnectorTokens(self.config, session)
        self.auth: BotFrameworkAuthentication = authentication(self.config, self.tokens)
        self.adapter = CloudAdapter(self.auth)
        self.ledger = runtime.ledger
        approvals = runtime.policy.channels.approvals.get(PLATFORM)
        self.people = TeamsPeople(runtime.directory, self.tenants, approvals)
        self.bot = TwokeyBot(
            runtime.service, self.people, self.ledger, self.config.APP_ID, runtime.inflight
        )
        self.home_tenant = settings.microsoft_app_tenant_id or sorted(self.tenants)[0]
        self.notifier = TeamsNotifier(
            self.auth,
            self.config.APP_ID,
            self.config.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE,
            self.home_tenant,
            self.ledger,
            runtime.directory,
            runtime.policy,
            clock=runtime.store.now,
            load=runtime.store.get,
            names=runtime.service.names.for_request,
        )
        self.inflight = runtime.inflight
        self._service_urls: dict[str, str] = {}

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """POST /api/messages: authenticate, check the tenant, then let the bot act."""
        self.inflight.track()
        if "application/json" not in request.headers.get("Content-Type", ""):
            return web.json_response({"error": "unsupported_media_type"}, status=415)
        body = await request.read()
        if len(body) > MAX_ACTIVITY_BYTES:
            return web.json_response({"error": "too_large"}, status=413)
        try:
            raw = json.loads(body)
            if not isinstance(raw, dict):
                raise ValueError("not an object")
            activity = Activity().deserialize(raw)
        except Exception:
            return web.json_response({"error": "bad_activity"}, status=400)
        if not activity.type:
            return web.json_response({"error": "bad_activity"}, status=400)
        try:
            result = await authenticate(
                self.auth, activity, request.headers.get("Authorization", "")
            )
        except TeamsAuthError as exc:
            reason = str(exc)[:40]
            REFUSED.labels("token").inc()
            log.warning("teams_request_refused", reason=reason, remote=request.remote)
            return web.json_response({"error": "unauthorized"}, status=401)
        if activity.channel_id != "msteams":
            REFUSED.labels("channel").inc()
            return web.json_response({"error": "not_teams"}, status=403)
        tenant = tenant_of(activity)
        if tenant not in self.tenants:
            REFUSED.labels("tenant").inc()
            log.warning("teams_tenant_refused", tenant=tenant[:64])
            return web.json_response({"error": "tenant_not_allowed"}, status=403)
        await self._learn_service_url(tenant, str(activity.service_url))
        try:
            answer = await self.adapter.process_activity(result, activity, self.bot.on_turn)
        except Exception as exc:
            log.error("teams_turn_failed", error=type(exc).__name__, kind=activity.type)
            if activity.type == ActivityTypes.invoke:
                return web.json_response(
                    {
                        "statusCode": 200,
                        "type": "application/vnd.microsoft.activity.message",
                        "value": "Something went wrong on twokey's side; nothing was changed.",
                    }
                )
            return web.Response(status=200)
        if activity.type == ActivityTypes.invoke:
            status = getattr(answer, "status", 200) or 200
            payload: Any = getattr(answer, "body", None)
            return web.json_response(payload if payload is not None else {}, status=status)
        return web.Response(status=200)

    async def close(self) -> None:
        """Close the kept connector clients (their HTTP sessions) as the server stops."""
        clients = self.auth.create_connector_factory(ClaimsIdentity({}, True))
        if isinstance(clients, ConnectorClients):
            await clients.close()

    async def _learn_service_url(self, tenant: str, service_url: str) -> None:
        """Remember the tenant's service URL, so twokey can post into channels proactively."""
        if self._service_urls.get(tenant) == service_url:
            return
        try:
            await self.ledger.remember_conversation(
                PLATFORM, SERVICE_KEY + tenant, {"service_url": service_url}
            )
            self._service_urls[tenant] = service_url
        except TwokeyError:
            log.warning("teams_service_url_not_remembered")


async def mount(app: web.Application, runtime: Runtime) -> None:
    """Serve Teams on this server: POST /api/messages and the notifier."""
    session = aiohttp.ClientSession()
    try:
        channel = TeamsChannel(runtime, session, app.get(TEAMS_ENDPOINTS) or Endpoints())
    except BaseException:  # a setting refused: close what was opened for it
        await session.close()
        raise
    runtime.closers.append(session.close)
    runtime.closers.append(channel.close)
    runtime.notifier.add(channel.notifier)
    app.router.add_post("/api/messages", channel.messages)
    log.info(
        "teams_mounted",
        app_type=runtime.settings.microsoft_app_type,
        tenants=len(channel.tenants),
    )
