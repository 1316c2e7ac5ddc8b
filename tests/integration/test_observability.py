"""/metrics counts what happens where it happens; /readyz reports each part (issue 13)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from app.bootstrap import Runtime, build_runtime, report_backlog, run_sweeper
from app.domain.models import Action
from app.settings import Settings
from app.store.keys import Keys
from app.store.redis_store import RedisRequestStore
from app.web import create_app
from tests.helpers import build_core, chat


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def settings_for(redis_url: str, namespace: str) -> Settings:
    return Settings(
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_AUDIT_KEY="metrics-test-audit-key-long-enough",
        TWOKEY_ACCEPT_EVICTION_RISK=True,
        TWOKEY_PLAYGROUND=False,
    )


@pytest.fixture
async def runtime(redis_url: str, namespace: str) -> AsyncIterator[Runtime]:
    rt = await build_runtime(settings_for(redis_url, namespace))
    yield rt
    await rt.close()


async def test_a_workflow_is_counted_once_per_change(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace)
    opened = value("twokey_requests_opened_total", action="reset-mfa", tier="standard")
    approvals = value("twokey_gate_decisions_total", kind="approve")
    done = value("twokey_executions_total", connector="default", outcome="completed")
    timed = value("twokey_open_to_execution_seconds_count")
    flags = value("twokey_fraud_flags_total")

    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    await core.service.approve(chat("carol"), rid)  # a double click changes nothing
    other = await core.service.open(
        chat("bob"), chat("dave"), Action.RESET_MFA.value, "INC-2000", "lost-device"
    )
    await core.service.reject_by_owner(chat("dave"), other.request.id)

    assert value("twokey_requests_opened_total", action="reset-mfa", tier="standard") == opened + 2
    assert value("twokey_gate_decisions_total", kind="approve") == approvals + 1
    assert value("twokey_executions_total", connector="default", outcome="completed") == done + 1
    assert value("twokey_open_to_execution_seconds_count") == timed + 1
    assert value("twokey_fraud_flags_total") == flags + 1


async def test_redis_errors_are_counted(namespace: str) -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    before = sum(
        value("twokey_redis_errors_total", error=e) for e in ("ConnectionError", "OSError")
    )
    store = RedisRequestStore(dead, Keys(namespace))
    with pytest.raises(Exception, match="cannot reach its database"):
        await store.ping()
    after = sum(value("twokey_redis_errors_total", error=e) for e in ("ConnectionError", "OSError"))
    assert after == before + 1
    await dead.aclose()


async def test_the_sweeper_reports_its_duration_backlog_and_reviews(runtime: Runtime) -> None:
    passes = value("twokey_sweep_seconds_count")
    task = asyncio.create_task(run_sweeper(runtime))
    for _ in range(50):
        await asyncio.sleep(0.05)
        if value("twokey_sweep_seconds_count") > passes:
            break
    runtime.stopping.set()
    await task
    assert value("twokey_sweep_seconds_count") > passes
    assert value("twokey_last_sweep_timestamp_seconds") > 0
    await report_backlog(runtime)
    assert value("twokey_due_backlog") >= 0
    assert value("twokey_open_reviews") >= 0
    assert value("twokey_audit_unsealed_oldest_seconds") == 0


async def test_readyz_reports_redis_policy_and_connectors(
    runtime: Runtime, redis_url: str, namespace: str
) -> None:
    settings = settings_for(redis_url, namespace)
    client = TestClient(TestServer(create_app(settings, runtime=runtime, sweeper=False)))
    await client.start_server()
    try:
        ready = await client.get("/readyz")
        body = await ready.json()
        assert ready.status == 200
        assert body["redis"] == "ok"
        assert body["policy"]["status"] == "loaded" and body["policy"]["tiers"] > 0
        assert body["connectors"] == {c.name: "configured" for c in runtime.connectors}
        handled = value("twokey_handler_seconds_count", channel="slack")
        await client.post("/slack/events", data=b"{}")
        assert value("twokey_handler_seconds_count", channel="slack") == handled + 1
        assert (await client.get("/healthz")).status == 200

        dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
        runtime.store = RedisRequestStore(dead, Keys(namespace))
        down = await client.get("/readyz")
        body = await down.json()
        assert down.status == 503 and body["redis"] == "unreachable"
        assert body["policy"]["status"] == "loaded" and "connectors" in body
        assert (await client.get("/healthz")).status == 200
        await dead.aclose()
    finally:
        await client.close()


async def test_readyz_names_the_ticket_system_without_credentials_in_its_url(
    runtime: Runtime, redis_url: str, namespace: str
) -> None:
    """/readyz answers whoever reaches the port: a user:password written into the policy's
    instance_url stays out of it (scheme, host and port only)."""
    policy = runtime.policy
    tickets = policy.tickets.model_copy(
        update={
            "system": "servicenow",
            "instance_url": "https://svc-twokey:hunter2-secret@acme.service-now.com:8443",
        }
    )
    runtime.policy = policy.model_copy(update={"tickets": tickets})
    app = create_app(settings_for(redis_url, namespace), runtime=runtime, sweeper=False)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        ready = await client.get("/readyz")
        text = await ready.text()
        body = await ready.json()
    finally:
        await client.close()
        runtime.policy = policy
    assert ready.status == 200
    assert "hunter2" not in text and "svc-twokey" not in text
    assert body["tickets"]["instance"] == "https://acme.service-now.com:8443"
