"""The one aiohttp server: /slack/events, /api/messages, /healthz, /readyz, /metrics.

Resources live in AppKeys and are built and torn down in cleanup_ctx, so nothing is created at
import time and tests can build an app per test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.bootstrap import Runtime, build_runtime, run_sweeper
from app.domain.errors import Unavailable
from app.settings import Settings

log = structlog.get_logger("twokey.web")

RUNTIME = web.AppKey("runtime", Runtime)
SETTINGS = web.AppKey("settings", Settings)

ChannelMount = Callable[[web.Application, Runtime], Awaitable[None]]


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Says nothing about Redis (that is /readyz)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        await runtime.store.ping()
    except Unavailable:
        return web.json_response({"status": "unavailable", "redis": "unreachable"}, status=503)
    return web.json_response({"status": "ready", "redis": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    sweeper: bool = True,
) -> web.Application:
    """Build the server. With `runtime` given (tests), it is used and not closed here."""
    app = web.Application(client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        own = runtime is None
        rt = runtime if runtime is not None else await build_runtime(settings)
        app[RUNTIME] = rt
        for mount in _channel_mounts(settings):
            await mount(app, rt)
        if sweeper:
            import asyncio

            rt.tasks.append(asyncio.create_task(run_sweeper(rt), name="twokey-sweeper"))
        try:
            yield
        finally:
            if own:
                await rt.close()
            else:
                for task in rt.tasks:
                    task.cancel()

    app.cleanup_ctx.append(lifecycle)
    return app


def _channel_mounts(settings: Settings) -> list[ChannelMount]:
    """The chat channels this configuration enables; each adds its routes and notifier."""
    mounts: list[ChannelMount] = []
    if settings.slack_enabled or settings.slack_app_token is not None:
        from app.channels.slack.app import mount as mount_slack

        mounts.append(mount_slack)
    if settings.playground_enabled:
        from app.playground.web import mount as mount_playground

        mounts.append(mount_playground)
    return mounts
