"""A twokey Runtime on the test Redis, built like app.bootstrap.build_runtime, for the playground.

Same pieces as `twokey serve` on its defaults (example policy, sandbox directory and connector,
the notifier fan-out), but on the test Redis under the test's own namespace, and with a fresh
audit key, so each test has its own world and leaves no key outside its namespace.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from app.audit.trail import AuditTrail
from app.bootstrap import Runtime
from app.connectors.sandbox import SandboxConnector, SandboxDirectory
from app.notify import FanoutNotifier
from app.playground.example import playground_policy
from app.policy.loader import load_policy_text
from app.ports import IdentityProvider
from app.service import ServiceOptions, StepUpOptions, TwoKey
from app.settings import Settings
from app.store.keys import Keys
from app.store.redis_store import RedisRequestStore
from app.web import create_app

SHUTDOWN_S = 5.0


def playground_settings(
    redis_url: str, namespace: str, *, host: str = "127.0.0.1", port: int = 3000
) -> Settings:
    """Settings as `twokey serve` reads them, minus any .env file or chat credentials."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        HOST=host,
        PORT=port,
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_PLAYGROUND=True,
        TWOKEY_SWEEP_INTERVAL=0.2,
        SLACK_BOT_TOKEN=None,
        SLACK_SIGNING_SECRET=None,
        SLACK_APP_TOKEN=None,
        MICROSOFT_APP_ID=None,
    )


def build_test_runtime(settings: Settings, *, policy: str | None = None) -> Runtime:
    assert settings.redis_url is not None
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5)
    keys = Keys(settings.namespace)
    store = RedisRequestStore(redis, keys, claim_grace_ms=settings.claim_grace * 1000)
    trail = AuditTrail(redis, keys, SecretStr(secrets.token_urlsafe(32)))
    # as serve on its defaults: the example with the playground's step-up tier
    chosen = load_policy_text(policy, "test-policy.yaml") if policy else playground_policy()
    directory = SandboxDirectory.example()
    connectors: list[IdentityProvider] = [SandboxConnector()]
    notifier = FanoutNotifier()
    service = TwoKey(
        store,
        directory,
        connectors,
        notifier,
        chosen,
        ServiceOptions(lease_s=settings.execution_lease),
        step_up=StepUpOptions(code_key=secrets.token_bytes(32)),  # as serve: no mail server
    )
    return Runtime(settings, redis, store, trail, chosen, directory, connectors, notifier, service)


@asynccontextmanager
async def serve_playground(
    redis_url: str,
    namespace: str,
    *,
    host: str = "127.0.0.1",
    policy: str | None = None,
    sweeper: bool = True,
) -> AsyncIterator[tuple[TestServer, Runtime]]:
    """The real app (create_app) on a free loopback port, with the playground mounted."""
    settings = playground_settings(redis_url, namespace, host=host)
    runtime = build_test_runtime(settings, policy=policy)
    app: web.Application = create_app(settings, runtime=runtime, sweeper=sweeper)
    server = TestServer(app, host="127.0.0.1")
    # A request still in flight at close is waited for this long, not aiohttp's 60 s.
    await server.start_server(shutdown_timeout=SHUTDOWN_S)
    try:
        yield server, runtime
    finally:
        await server.close()
        await runtime.close()
