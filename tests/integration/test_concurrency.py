"""Several replicas (separate connections) race approve/confirm on one request: one execution."""

from __future__ import annotations

import asyncio
import random

import redis.asyncio as aioredis

from app.connectors.sandbox import SandboxConnector
from app.domain.models import RequestState
from tests.helpers import build_core, chat

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
