"""The one aiohttp server: /slack/events, /api/messages, /healthz, /readyz, /metrics.

Resources live in AppKeys and are built and torn down in cleanup_ctx, so nothing is created at
import time and tests can build an app per test.

Stopping (SIGTERM, as every rollout sends): aiohttp stops listening and fires ``on_shutdown``,
where twokey stops accepting (new deliveries get 503, /readyz turns 503); aiohttp then waits for
requests under way; the cleanup finishes the work those requests were answered for (bounded)
before any client closes, and records whether it all finished (``STOPPED``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.audit.forward import ForwardConfig, ForwardConfigError, forward_until_stopped
from app.bootstrap import Runtime, StartupError, build_runtime, run_sweeper
from app.domain.errors import Unavailable
from app.metrics import HANDLER_SECONDS
from app.settings import Settings

log = structlog.get_logger("twokey.web")


@dataclass
class Stopped:
    """How the server stopped: ``clean`` is None while it runs, then whether every piece of
    in-flight work finished before the clients closed (``twokey serve`` exits 1 if not)."""

    clean: bool | None = None


RUNTIME = web.AppKey("runtime", Runtime)
SETTINGS = web.AppKey("settings", Settings)
STOPPED = web.AppKey("stopped", Stopped)
ALWAYS_ANSWERED = frozenset({"/healthz", "/metrics"})
"""Paths still served while stopping: liveness and metrics say nothing about new work."""

ChannelMount = Callable[[web.Application, Runtime], Awaitable[None]]


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Says nothing about Redis (that is /readyz)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready for work: accepting, Redis answers; with what policy and connectors were loaded.

    Only Redis decides readiness: a connector's provider being down must not take every
    replica out of service (denials, cancels and confirmations still work; an execution then
    fails closed and says so). `twokey connectors check` asks the providers themselves; the
    ticket system likewise (`twokey tickets check`).
    """
    runtime = request.app[RUNTIME]
    policy = runtime.policy
    body: dict[str, object] = {
        "status": "ready",
        "redis": "ok",
        "policy": {
            "status": "loaded",
            "file": str(runtime.settings.policy_path or "example policy"),
            "tiers": len(policy.tiers),
            "rules": len(policy.rules),
        },
        "connectors": {connector.name: "configured" for connector in runtime.connectors},
    }
    if policy.tickets.checked:  # reported, never a readiness condition (it fails closed alone)
        body["tickets"] = {
            "system": policy.tickets.system,
            "instance": _origin(policy.tickets.instance_url),
            "status": "configured" if runtime.service.tickets is not None else "not connected",
            "write_back": policy.tickets.write_back.notes,
        }
    if not runtime.inflight.accepting:
        return web.json_response({**body, "status": "stopping"}, status=503)
    try:
        await runtime.store.ping()
    except Unavailable:
        body.update(status="unavailable", redis="unreachable")
        return web.json_response(body, status=503)
    return web.json_response(body)


def _origin(url: str | None) -> str | None:
    """Scheme, host and port only: /readyz answers anyone who can reach the port, so no
    user:password a policy may have written into the URL."""
    if not url:
        return url
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}"


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def refuse_while_stopping(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A delivery that reaches a stopping replica is refused whole (Slack shows the person an
    error and they press again, reaching a running replica), never accepted and then dropped."""
    runtime = request.app.get(RUNTIME)
    if (
        runtime is not None
        and not runtime.inflight.accepting
        and request.path not in ALWAYS_ANSWERED
    ):
        return web.json_response(
            {"ok": False, "error": "shutting_down"}, status=503, headers={"Retry-After": "1"}
        )
    return await handler(request)


CHANNEL_PATHS = {"/slack/events": "slack", "/api/messages": "teams"}


@web.middleware
async def time_handlers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Slack and Teams deliveries over HTTP, timed (`twokey_handler_seconds`)."""
    channel = CHANNEL_PATHS.get(request.path)
    if channel is None:
        return await handler(request)
    started = time.monotonic()
    try:
        return await handler(request)
    finally:
        HANDLER_SECONDS.labels(channel).observe(time.monotonic() - started)


def create_app(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    sweeper: bool = True,
) -> web.Application:
    """Build the server. With `runtime` given (tests), it is used and not closed here."""
    app = web.Application(
        client_max_size=1024 * 1024, middlewares=[refuse_while_stopping, time_handlers]
    )
    app[SETTINGS] = settings
    app[STOPPED] = Stopped()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    forwarding = _audit_forwarding(settings)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        own = runtime is None
        rt = runtime if runtime is not None else await build_runtime(settings)
        app[RUNTIME] = rt
        for mount in _channel_mounts(settings):
            await mount(app, rt)
        _mount_approver_signin(app, rt)
        if sweeper:
            rt.tasks.append(asyncio.create_task(run_sweeper(rt), name="twokey-sweeper"))
        if sweeper and forwarding is not None:
            forward = forward_until_stopped(
                rt.redis, rt.store.keys, forwarding, rt.stopping, rt.trail.audit_keys
            )
            rt.tasks.append(asyncio.create_task(forward, name="twokey-audit-forward"))
        try:
            yield
        finally:
            log.info("server_stopping", in_flight=len(rt.inflight))
            clean = await (rt.close() if own else rt.stop())
            app[STOPPED].clean = clean
            log.info("server_stopped", clean=clean)

    async def stop_accepting(app: web.Application) -> None:
        if RUNTIME in app:
            app[RUNTIME].stop_accepting()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(stop_accepting)
    return app


def _audit_forwarding(settings: Settings) -> ForwardConfig | None:
    """The SIEM sink for sealed audit events, checked before anything is served."""
    try:
        return ForwardConfig.from_settings(settings)
    except ForwardConfigError as exc:
        raise StartupError(str(exc)) from None


def _mount_approver_signin(app: web.Application, runtime: Runtime) -> None:
    """/stepup/oidc/...: approvers sign in again (step_up.oidc), when the policy asks for it."""
    from app.stepup_oidc import OidcReauthLinks
    from app.stepup_oidc_web import mount

    step_up = runtime.service.step_up
    if step_up is not None and isinstance(step_up.reauth, OidcReauthLinks):
        mount(app, runtime, step_up.reauth)


def _channel_mounts(settings: Settings) -> list[ChannelMount]:
    """The chat channels this configuration enables; each adds its routes and notifier."""
    mounts: list[ChannelMount] = []
    if settings.slack_enabled or settings.slack_app_token is not None:
        from app.channels.slack.app import mount as mount_slack

        mounts.append(mount_slack)
    if settings.teams_enabled:
        from app.channels.teams.app import mount as mount_teams

        mounts.append(mount_teams)
    if settings.playground_enabled:
        from app.playground.web import mount as mount_playground

        mounts.append(mount_playground)
    return mounts
