"""The aiohttp server: health, readiness (Redis reachable) and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from app.bootstrap import Runtime, build_runtime
from app.settings import Settings
from app.store.keys import Keys
from app.store.redis_store import RedisRequestStore
from app.web import create_app
from tests.helpers import policy_text


def settings_for(redis_url: str, namespace: str) -> Settings:
    return Settings(
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_AUDIT_KEY="web-test-audit-key-long-enough",
        TWOKEY_ACCEPT_EVICTION_RISK=True,
        TWOKEY_PLAYGROUND=False,
    )


@pytest.fixture
async def runtime(redis_url: str, namespace: str) -> AsyncIterator[Runtime]:
    rt = await build_runtime(settings_for(redis_url, namespace))
    yield rt
    await rt.close()


async def client_for(settings: Settings, runtime: Runtime) -> TestClient:  # type: ignore[type-arg]
    client = TestClient(TestServer(create_app(settings, runtime=runtime, sweeper=False)))
    await client.start_server()
    return client


async def test_health_ready_and_metrics(runtime: Runtime, redis_url: str, namespace: str) -> None:
    client = await client_for(settings_for(redis_url, namespace), runtime)
    try:
        assert (await client.get("/healthz")).status == 200
        ready = await client.get("/readyz")
        assert ready.status == 200 and (await ready.json())["redis"] == "ok"
        metrics = await client.get("/metrics")
        assert metrics.status == 200
        assert "twokey_gate_scripts_total" in await metrics.text()
    finally:
        await client.close()


async def test_not_ready_when_redis_is_unreachable(
    runtime: Runtime, redis_url: str, namespace: str
) -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    runtime.store = RedisRequestStore(dead, Keys(namespace))
    client = await client_for(settings_for(redis_url, namespace), runtime)
    try:
        assert (await client.get("/healthz")).status == 200
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["redis"] == "unreachable"
    finally:
        await client.close()
        await dead.aclose()


async def test_own_redis_without_audit_key_refuses_to_start(redis_url: str) -> None:
    from app.bootstrap import StartupError

    settings = Settings(REDIS_URL=redis_url, TWOKEY_ACCEPT_EVICTION_RISK=True)
    with pytest.raises(StartupError, match="TWOKEY_AUDIT_KEY"):
        await build_runtime(settings)


@pytest.mark.parametrize(
    ("credential", "value"),
    [("SLACK_BOT_TOKEN", "xoxb-1"), ("SLACK_APP_TOKEN", "xapp-1"), ("MICROSOFT_APP_ID", "a-b-c")],
)
async def test_chat_credentials_on_demo_defaults_refuse_to_start_unless_told(
    redis_url: str, namespace: str, tmp_path: Path, credential: str, value: str
) -> None:
    from app.bootstrap import StartupError

    base = {
        "REDIS_URL": redis_url,
        "TWOKEY_NAMESPACE": namespace,
        "TWOKEY_AUDIT_KEY": "web-test-audit-key-long-enough",
        "TWOKEY_ACCEPT_EVICTION_RISK": True,
        "TWOKEY_DATA_DIR": str(tmp_path),
        credential: value,
    }
    with pytest.raises(StartupError, match="TWOKEY_POLICY is not set") as refused:
        await build_runtime(Settings(_env_file=None, **base))  # type: ignore[call-arg]
    assert "sandbox directory" in str(refused.value) and "TWOKEY_DEMO=true" in str(refused.value)
    assert value not in str(refused.value)

    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text())
    with pytest.raises(StartupError, match="sandbox directory of made-up people"):
        await build_runtime(Settings(_env_file=None, TWOKEY_POLICY=str(policy), **base))  # type: ignore[call-arg]

    runtime = await build_runtime(Settings(_env_file=None, TWOKEY_DEMO=True, **base))  # type: ignore[call-arg]
    await runtime.close()


@pytest.mark.parametrize(
    "credential",
    [
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "MICROSOFT_APP_ID",
        "MICROSOFT_APP_PASSWORD",
    ],
)
def test_any_chat_credential_turns_the_playground_off(credential: str) -> None:
    assert Settings(_env_file=None).playground_enabled  # type: ignore[call-arg]
    assert not Settings(_env_file=None, **{credential: "x"}).playground_enabled  # type: ignore[call-arg]
    assert Settings(_env_file=None, TWOKEY_PLAYGROUND=True, **{credential: "x"}).playground_enabled  # type: ignore[call-arg]
