"""A rollout stops a replica while approvals are in flight: nothing a person was answered for
is lost, nothing runs twice.

Three real ``twokey serve`` processes share one Redis (their own namespace) and the Slack
stand-in. Approvers click Approve on the real cards, spread over the replicas, while Slack is
slow to answer ``users.info`` (so the work each click starts is still running); one replica gets
SIGTERM, as every Kubernetes rollout sends. Every click answered 200 must end with its approval
on record, every request must execute exactly once, and the stopped process must finish its
work and exit 0 without a handler failure in its log.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import aiohttp
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from app.audit.trail import AuditTrail
from app.connectors.sandbox import SandboxConnector
from app.domain.models import Request, RequestState
from app.store.keys import Keys
from app.store.redis_store import RedisRequestStore
from tests.integration.test_serve import free_port

STANDIN = Path(__file__).resolve().parents[1] / "scenario" / "slack"
if str(STANDIN) not in sys.path:
    sys.path.insert(0, str(STANDIN))

from slack_standin import APP_ID, BOT_TOKEN, TEAM, SlackStandIn  # noqa: E402
from slack_world import SIGNING_SECRET, SlackWorld, signed_headers, slack_policy  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = 3
REQUESTS = 6
FAILURES = ("handler_failed", "notify_failed", "Traceback", "ClientConnectionError")

pytestmark = pytest.mark.timeout(90)


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_replica(tmp: Path, index: int, env: dict[str, str]) -> Replica:
    port = free_port()
    log = tmp / f"replica-{index}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=tmp,
        env={**env, "PORT": str(port)},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Replica(process, port, log)


async def until(check: Callable[[], Any], what: str, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    standin = SlackStandIn()
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()


@pytest.mark.parametrize(
    ("stop_at", "slack_back_at"),
    [
        pytest.param(0.6, 1.4, id="stopped-before-the-ack"),
        pytest.param(2.4, 3.2, id="stopped-after-the-ack"),
    ],
)
async def test_sigterm_mid_flow_loses_no_acknowledged_approval(
    stop_at: float,
    slack_back_at: float,
    tmp_path: Path,
    redis_url: str,
    redis_client: aioredis.Redis,
    namespace: str,
    slack: SlackStandIn,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(slack_policy())
    audit_key = secrets.token_urlsafe(48)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "TWOKEY_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        HOST="127.0.0.1",
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_AUDIT_KEY=audit_key,
        TWOKEY_POLICY=str(policy),
        TWOKEY_PLAYGROUND="false",
        TWOKEY_DEMO="true",  # the sandbox directory beside Slack credentials, on purpose
        TWOKEY_DATA_DIR=str(tmp_path / "data"),
        TWOKEY_SWEEP_INTERVAL="0.5",
        TWOKEY_CLAIM_GRACE="2",
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        SLACK_ALLOWED_TEAMS=json.dumps([TEAM]),
        SLACK_APP_ID=APP_ID,
    )
    replicas = [start_replica(tmp_path, i, env) for i in range(REPLICAS)]
    keys = Keys(namespace)
    store = RedisRequestStore(redis_client, keys)
    # Only the payload builders of the scenario world are used: the servers are the replicas.
    people = SlackWorld(
        slack, cast(Any, None), cast(Any, None), SandboxConnector(), redis_client, namespace
    )
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def post(replica: Replica, form: dict[str, str]) -> int:
        body = urlencode(form).encode()
        async with session.post(replica.url, data=body, headers=signed_headers(body)) as answer:
            await answer.read()
            return answer.status

    async def click(replica: Replica, user: str, request_id: str, role: str, action: str) -> int:
        card = people.card(request_id, role, None if role == "approvers" else user)
        assert card is not None, f"no {role} card for {request_id}"
        payload = people.click_payload(user, card, action)
        return await post(replica, {"payload": json.dumps(payload)})

    async def stored(request_id: str) -> Request:
        found = await store.get(request_id)
        assert found is not None, request_id
        return found

    try:
        for replica in replicas:

            async def ready(r: Replica = replica) -> bool:
                assert r.process.poll() is None, r.output()
                try:
                    async with session.get(f"http://127.0.0.1:{r.port}/readyz") as answer:
                        return answer.status == 200
                except aiohttp.ClientError:
                    return False

            await until(ready, f"replica on {replica.port} ready", within=40)

        # Six requests, opened and confirmed by their owner through the replicas in turn.
        forms = [
            people.command_form("U0BOB", f"reset-mfa <@U0ALICE|alice> INC-{2000 + i} lost-device")
            for i in range(REQUESTS)
        ]
        statuses = await asyncio.gather(
            *(post(replicas[i % REPLICAS], form) for i, form in enumerate(forms))
        )
        assert statuses == [200] * REQUESTS
        request_ids = []
        for form in forms:
            receipt = json.dumps(
                await slack.until(lambda f=form: slack.hook_posts(f["response_url"]), within=15)
            )
            request_ids.append(receipt.split("Request ", 1)[1].split(" ", 1)[0])
        for rid in request_ids:
            await slack.until(lambda r=rid: people.card(r, "approvers"), within=15)
            await slack.until(lambda r=rid: people.card(r, "owner", "U0ALICE"), within=15)
        statuses = await asyncio.gather(
            *(
                click(replicas[i % REPLICAS], "U0ALICE", rid, "owner", "confirm")
                for i, rid in enumerate(request_ids)
            )
        )
        assert statuses == [200] * REQUESTS
        for rid in request_ids:

            async def confirmed(r: str = rid) -> bool:
                return (await stored(r)).owner_confirmed_at is not None

            await until(confirmed, f"{rid} confirmed by its owner")

        # Slack turns slow; Carol approves all six, spread over the replicas; a rollout stops
        # replica 0 while that work is in flight (before its clicks are acked, or after they
        # were acked at the latest ack time, their gates still waiting), then Slack recovers.
        slow_slack = slack.hold("users.info")
        clicks = [
            asyncio.create_task(
                click(replicas[i % REPLICAS], "U0CAROL", rid, "approvers", "approve")
            )
            for i, rid in enumerate(request_ids)
        ]
        await asyncio.sleep(stop_at)
        stopped = replicas[0]
        stopped.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(slack_back_at - stop_at)
        slow_slack.set()
        answers = await asyncio.gather(*clicks, return_exceptions=True)
        acknowledged = [rid for rid, a in zip(request_ids, answers, strict=True) if a == 200]
        # Every click reached a replica before the stop: the stopping one answers its own too.
        assert answers == [200] * REQUESTS, answers

        code = await asyncio.to_thread(stopped.process.wait, 40)
        log = stopped.output()
        assert code == 0, log

        for rid in acknowledged:

            async def approved_and_done(r: str = rid) -> bool:
                request = await stored(r)
                return request.state is RequestState.COMPLETED and any(
                    a.approver_id == "carol" for a in request.approvals
                )

            await until(approved_and_done, f"{rid} approved by Carol and completed", within=20)

        trail = AuditTrail(redis_client, keys, SecretStr(audit_key))
        events = [e async for e in trail.events() if e.rid in request_ids]
        started = Counter(e.rid for e in events if e.kind == "execution_started")
        approved = Counter(e.rid for e in events if e.kind == "approved")
        for rid in acknowledged:
            assert started[rid] == 1, f"{rid} executed {started[rid]} times"
            assert approved[rid] == 1, f"{rid} approved {approved[rid]} times"
        failures = [line for line in log.splitlines() if any(f in line for f in FAILURES)]
        assert failures == [], log
    finally:
        for hold in slack.holds.values():
            hold.set()
        for replica in replicas:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in replicas:
            try:
                await asyncio.to_thread(replica.process.wait, 30)
            except subprocess.TimeoutExpired:
                replica.process.kill()
        await session.close()
    for replica in replicas[1:]:
        assert replica.process.returncode == 0, replica.output()
