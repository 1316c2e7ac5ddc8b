"""The Slack face of twokey: a Bolt ``AsyncApp`` on the shared aiohttp server, or Socket Mode.

``mount`` adds ``POST /slack/events`` (slash command, interactivity, options and events all
arrive there), registers the :class:`SlackNotifier` with the service's fan-out and, when
``SLACK_APP_TOKEN`` is set, keeps a Socket Mode connection open as a runtime task. It is handed
the running core as ``app.runtime.Runtime`` (the service, the MessageLedger port, the notifier
fan-out, the lifecycle) and never touches Redis or the composition root itself. The HTTP
adapter is two small translations around Bolt plus the signature check Bolt lacks (a 401, never
a 500, for a malformed timestamp); everything else is Bolt middleware, so Socket Mode deliveries
get the same tenancy and replay checks.

Every listener runs in a task Bolt starts and does not keep; each registers itself with the
runtime's :class:`InFlight`, so a stopping replica finishes the work Slack was answered for
before its clients close. Socket Mode stops receiving as soon as the replica stops accepting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Sequence
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from app.channels.common import ButtonAction
from app.channels.slack import blocks as bk
from app.channels.slack.acking import answer_at_ack
from app.channels.slack.guard import (
    REFUSED,
    Deliveries,
    Tenancy,
    TenancyGate,
    first_header,
    signature_problem,
)
from app.channels.slack.handlers import SlackHandlers
from app.channels.slack.identity import SlackPeople
from app.channels.slack.notifier import SlackNotifier
from app.domain.errors import TwokeyError
from app.logs import quiet_logger
from app.runtime import InFlight, Runtime, StartupError
from app.settings import Settings

log = structlog.get_logger("twokey.slack")

BUTTONS = re.compile(r"^twokey\.(" + "|".join(a.value for a in ButtonAction) + ")$")
"""Every twokey button, one listener: ``decode_button`` and ``press`` decide what it does."""
BOLT_LOGGER = "twokey.slack.bolt"
RETRY_AFTER_MOST_S = 30
"""A 429 asking to wait longer than this is not waited out inside a request: it is reported."""


class BoundedRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """Honour Slack's 429 ``Retry-After``, unless it is absurd or longer than we can wait."""

    def __init__(self, max_retry_count: int = 3, most_s: int = RETRY_AFTER_MOST_S) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.most_s = most_s

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        waits = [v for k, vs in response.headers.items() if k.lower() == "retry-after" for v in vs]
        if not waits:
            return True
        return waits[0].isdigit() and int(waits[0]) <= self.most_s


def web_client(settings: Settings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    if settings.slack_bot_token is None:
        raise StartupError(
            "Slack is configured but SLACK_BOT_TOKEN is not set: copy the Bot User OAuth Token "
            "(xoxb-...) from your Slack app's OAuth & Permissions page."
        )
    handlers: list[AsyncRetryHandler] = [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        BoundedRateLimitRetry(),
        AsyncServerErrorRetryHandler(max_retry_count=1),
    ]
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=10,
        session=session,
        logger=quiet_logger("twokey.slack.webapi"),
        retry_handlers=handlers,
    )


class SlackChannel:
    """The Bolt app, its Web API client and notifier, and the HTTP endpoint in front."""

    def __init__(self, runtime: Runtime, session: aiohttp.ClientSession | None = None) -> None:
        settings = runtime.settings
        self.settings = settings
        self.client = web_client(settings, session)
        self.tenancy = Tenancy(
            self.client,
            configured=frozenset(t.strip() for t in settings.slack_allowed_teams if t.strip()),
            app_id=settings.slack_app_id,
        )
        self.people = SlackPeople(
            self.client,
            runtime.directory,
            self.tenancy,
            require_confirmed_email=settings.slack_require_confirmed_email,
        )
        self.notifier = SlackNotifier(
            self.client, self.people, runtime.ledger, runtime.service, load=runtime.store.get
        )
        self.deliveries = Deliveries(runtime.ledger)
        self.inflight: InFlight = runtime.inflight
        self.handlers = SlackHandlers(
            runtime.service,
            self.people,
            self.client,
            self.deliveries,
            inflight=self.inflight,
            api_url=settings.slack_api_url,
        )
        secret = settings.slack_signing_secret
        self.signing_secret = secret.get_secret_value() if secret is not None else ""
        self.bolt = self._bolt()

    async def _tell_at_hook(self, url: str, text: str) -> None:
        """An ephemeral answer to whoever clicked, through the click's ``response_url``."""
        await self.handlers.answer_at_hook(url, text, bk.message(text))

    def _bolt(self) -> AsyncApp:
        bolt = AsyncApp(
            # Bolt sets the level of the logger named after the app on every request: "twokey"
            # would be the parent of all our loggers and silence their INFO lines.
            name=BOLT_LOGGER,
            client=self.client,
            signing_secret=self.signing_secret,
            # Bolt awaits each listener; answer_at_ack returns at its ack (acking.py)
            process_before_response=True,
            before_authorize=TenancyGate(self.tenancy, tell=self._tell_at_hook),
            # Bolt re-checks the signature and logs a failure *with the body* at INFO (reachable
            # when a request passes our check just inside the 5-minute bound): WARNING and up.
            logger=quiet_logger(BOLT_LOGGER, logging.WARNING),
        )
        handlers, deliveries, inflight = self.handlers, self.deliveries, self.inflight

        async def on_command(
            ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, request: AsyncBoltRequest
        ) -> None:
            retry = _retry(request)
            await answer_at_ack(
                ack, lambda acking: handlers.command(acking, body, respond, retry), inflight
            )

        async def on_button(ack: AsyncAck, body: dict[str, Any], request: AsyncBoltRequest) -> None:
            retry = _retry(request)
            await answer_at_ack(ack, lambda acking: handlers.button(acking, body, retry), inflight)

        async def on_form(
            ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], request: AsyncBoltRequest
        ) -> None:
            retry = _retry(request)
            await answer_at_ack(
                ack, lambda acking: handlers.form_submitted(acking, body, view, retry), inflight
            )

        async def on_deny(
            ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], request: AsyncBoltRequest
        ) -> None:
            retry = _retry(request)
            await answer_at_ack(
                ack, lambda acking: handlers.deny_submitted(acking, body, view, retry), inflight
            )

        async def on_nhi_search(ack: AsyncAck, body: dict[str, Any]) -> None:
            await handlers.nhi_options(ack, body)

        async def on_uninstalled(body: dict[str, Any], request: AsyncBoltRequest) -> None:
            inflight.track()
            try:
                if not await deliveries.first(body, _retry(request)):
                    return
            except TwokeyError:
                pass  # tell it anyway: a second log line is better than none
            log.error(
                "slack_app_removed",
                kind=(body.get("event") or {}).get("type"),
                note="twokey can no longer post or update cards in this workspace",
            )

        bolt.command(re.compile(r"^/[\w-]+$"))(on_command)
        bolt.action(BUTTONS)(on_button)
        bolt.view(bk.OPEN_FORM)(on_form)
        bolt.view(bk.DENY_FORM)(on_deny)
        bolt.options(bk.NHI_PICKER)(on_nhi_search)
        bolt.event("app_uninstalled")(on_uninstalled)
        bolt.event("tokens_revoked")(on_uninstalled)
        return bolt

    async def events(self, request: web.Request) -> web.Response:
        """POST /slack/events: verify, then hand to Bolt. Refusals never log the body."""
        body = await request.read()
        problem = signature_problem(
            self.signing_secret,
            request.headers.get("X-Slack-Request-Timestamp"),
            request.headers.get("X-Slack-Signature"),
            body,
            time.time(),
        )
        if problem is not None:
            REFUSED.labels(problem).inc()
            log.warning(
                "slack_request_refused",
                reason=problem,
                remote=request.remote,
                retry=request.headers.get("X-Slack-Retry-Num"),
                length=len(body),
            )
            return web.json_response({"ok": False, "error": "invalid_request"}, status=401)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return web.json_response({"ok": False, "error": "invalid_encoding"}, status=400)
        headers: dict[str, str | Sequence[str]] = {
            name: request.headers.getall(name) for name in request.headers
        }
        try:
            bolt_request = bolt_request_of(text, request.query_string, headers)
        except Exception:  # signed, yet no payload of Slack's (a JSON list, a bare string)
            REFUSED.labels("invalid_body").inc()
            log.warning("slack_request_refused", reason="invalid_body", length=len(body))
            return web.json_response({"ok": False, "error": "invalid_body"}, status=400)
        answer = await self.bolt.async_dispatch(bolt_request)
        return await to_aiohttp_response(answer)


def bolt_request_of(
    text: str, query: str, headers: dict[str, str | Sequence[str]]
) -> AsyncBoltRequest:
    """The Bolt request for a verified body; ValueError when it is neither a form nor JSON.

    Bolt reads any form whose bytes contain "payload" as an interaction (``payload=<json>``)
    and, finding no such field, as empty: a slash command from a channel, workspace or person
    whose name has "payload" in it, or with that word in its text, was dropped as if from
    another app. Such a form is read as the fields it has.
    """
    bolt_request = AsyncBoltRequest(body=text, query=query, headers=headers)
    if not isinstance(bolt_request.body, dict):
        raise ValueError("not an object")
    if not bolt_request.body and "payload" in text:
        fields = dict(parse_qsl(text, keep_blank_values=True))
        bolt_request.body = fields
        bolt_request.context = build_async_context(AsyncBoltContext({}), fields)
    return bolt_request


def _retry(request: AsyncBoltRequest) -> str | None:
    return first_header(request.headers.get("x-slack-retry-num"))


async def run_socket_mode(
    channel: SlackChannel, app_token: str, stopping: asyncio.Event | None = None
) -> None:
    """Keep one Socket Mode connection open, reconnecting with back-off, until ``stopping``:
    then close it, so a stopping replica takes no new deliveries (Slack sends them to others)."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    stopping = stopping if stopping is not None else asyncio.Event()
    delay = 1.0
    while not stopping.is_set():
        handler = AsyncSocketModeHandler(
            channel.bolt,
            app_token,
            logger=quiet_logger("twokey.slack.socket"),
            web_client=channel.client,
        )
        try:
            # slack_sdk retries a failed connection by itself, for as long as it takes: a
            # stopping replica does not wait for it (nothing was taken that must finish)
            if not await _until_stopping(handler.connect_async(), stopping):  # type: ignore[no-untyped-call]
                break
            log.info("slack_socket_mode_connected")
            delay = 1.0
            await stopping.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("slack_socket_mode_failed", error=type(exc).__name__, retry_in=delay)
        finally:
            await handler.close_async()  # type: ignore[no-untyped-call]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
        delay = min(delay * 2, 60.0)
    log.info("slack_socket_mode_closed")


async def _until_stopping(work: Awaitable[object], stopping: asyncio.Event) -> bool:
    """Run ``work`` unless ``stopping`` comes first (then cancel it): True when it finished."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if task.done():
        task.result()  # its failure is the caller's to report
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return False


async def mount(app: web.Application, runtime: Runtime) -> None:
    """Serve Slack on this server: /slack/events, the notifier, and Socket Mode if configured."""
    settings = runtime.settings
    session = aiohttp.ClientSession()
    try:
        channel = SlackChannel(runtime, session)
    except BaseException:  # a setting refused: close what was opened for it
        await session.close()
        raise
    runtime.closers.append(session.close)
    runtime.notifier.add(channel.notifier)
    runtime.closers.append(channel.notifier.close)
    app.router.add_post("/slack/events", channel.events)
    if not channel.signing_secret:
        log.warning(
            "slack_http_disabled",
            note="SLACK_SIGNING_SECRET is not set: every POST /slack/events is refused (401)",
        )
    if settings.slack_app_id is None:
        log.warning("slack_app_id_unset", note="set SLACK_APP_ID to refuse other apps' payloads")
    runtime.tasks.append(
        asyncio.create_task(channel.tenancy.learn(runtime.stopping), name="twokey-slack-workspace")
    )
    if settings.slack_app_token is not None:
        token = settings.slack_app_token.get_secret_value()
        runtime.tasks.append(
            asyncio.create_task(
                run_socket_mode(channel, token, runtime.stopping), name="twokey-slack-socket"
            )
        )
    log.info(
        "slack_mounted",
        api=settings.slack_api_url,
        socket_mode=settings.slack_app_token is not None,
    )
