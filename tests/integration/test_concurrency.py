"""Several replicas (separate connections) race approve/confirm on one request: one execution."""

from __future__ import annotations

import asyncio
import random

import redis.asyncio as aioredis

from app.connectors.sandbox import SandboxConnector
from app.domain.errors import VelocityLimited
from app.domain.models import RequestState
from app.service import Decision
from tests.helpers import build_core, chat, policy_text

REPLICAS = 4
CALLS = 50
ROUNDS = 20


async def test_fifty_racing_gate_calls_execute_exactly_once(redis_url: str, namespace: str) -> None:
    connector = SandboxConnector()  # shared: it is the identity provider all replicas call
    clients = [aioredis.Redis.from_url(redis_url, decode_responses=True) for _ in range(REPLICAS)]
    replicas = [build_core(c, namespace, connector=connector) for c in clients]
    rng = random.Random(7)
    try:
        for round_ in range(ROUNDS):
            rid = (
                await replicas[0].service.open(
                    chat("bob"), chat("alice"), "unlock", f"INC-{1000 + round_}", "locked-out"
                )
            ).request.id
            calls = []
            for i in range(CALLS):
                core = replicas[i % REPLICAS]
                if rng.random() < 0.5:
                    calls.append(core.service.confirm_owner(chat("alice"), rid))
                else:
                    calls.append(core.service.approve(chat(rng.choice(["carol", "dave"])), rid))
            results = await asyncio.gather(*calls, return_exceptions=True)
            unexpected = [r for r in results if isinstance(r, BaseException)]
            assert unexpected == [], unexpected
            executed = [c for c in connector.changes if c.request_id == rid]
            assert len(executed) == 1, f"round {round_}: {len(executed)} executions"
            final = await replicas[1].store.get(rid)
            assert final is not None and final.state is RequestState.COMPLETED
    finally:
        for c in clients:
            await c.aclose()


REQUESTER_LIMIT = "  - {per: requester, limit: 3, window: 1h, then: refuse}\n"
TARGETS = ["alice", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan"]


async def test_a_requester_limit_holds_under_parallel_opens(redis_url: str, namespace: str) -> None:
    """One agent fires eight opens at once on eight accounts (eight shards, as it happens):
    the per-requester limit of three lets exactly three through, whatever the replicas."""
    clients = [aioredis.Redis.from_url(redis_url, decode_responses=True) for _ in range(REPLICAS)]
    replicas = [
        build_core(c, namespace, policy=policy_text(velocity=REQUESTER_LIMIT)) for c in clients
    ]
    try:
        results = await asyncio.gather(
            *(
                replicas[i % REPLICAS].service.open(
                    chat("bob"), chat(target), "unlock", f"INC-{2000 + i}", "locked-out"
                )
                for i, target in enumerate(TARGETS)
            ),
            return_exceptions=True,
        )
        opened = [r for r in results if isinstance(r, Decision)]
        refused = [r for r in results if isinstance(r, VelocityLimited)]
        assert len(opened) == 3 and len(refused) == 5, results
        assert "Velocity limit" in refused[0].message
        listing = await replicas[0].service.list_for(chat("bob"))
        assert {r.id for r in listing.mine} == {d.request.id for d in opened}
    finally:
        for c in clients:
            await c.aclose()
