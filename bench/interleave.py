"""What bench/slack.py and bench/teams.py share: ABBA rounds of twokey between two copies of a
bare app against one stand-in, and the median of per-round p99 ratios beside the bare-vs-bare
noise floor from the same run.

Each bench supplies its own processes and a ``Bench`` (warm up, run one app's segment); the
labels of its three apps are passed in, so the lines printed name them as the bench does.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

CONCURRENCIES: tuple[int, ...] = (1, 32)
"""The loads each round runs (``--concurrency`` of each bench narrows it, e.g. to profile one)."""


def concurrencies(text: str) -> tuple[int, ...]:
    """``--concurrency 1,32``: positive whole numbers, comma-separated."""
    found = tuple(int(part) for part in text.split(",") if part.strip())
    if not found or min(found) < 1:
        raise ValueError("--concurrency takes positive whole numbers, e.g. 1,32")
    return found


@dataclass(frozen=True)
class Apps:
    """The three apps of a run: bare A, twokey, and a second bare copy A' (the floor)."""

    bare: str
    twokey: str
    bare2: str

    @property
    def order(self) -> tuple[str, ...]:
        """One round: A B A' A' B A. Each app has the same mean position: drift hits all alike."""
        return (self.bare, self.twokey, self.bare2, self.bare2, self.twokey, self.bare)


class Timed(Protocol):
    app: str
    concurrency: int
    latencies: list[float]
    sent_at: dict[str, float]


class Interleaved(Protocol):
    async def warm(self, concurrency: int) -> None: ...

    async def segment(self, app: str, n: int, concurrency: int) -> Any: ...


async def background_trips(
    trips: Any, calls_made: Callable[[], Awaitable[int]], seconds: float = 5.0
) -> float:
    """Redis commands per second the app sends with nobody acting (sweeper, audit sealer),
    measured once the stand-in is quiet: taken out of the per-action round-trip count."""
    import time

    await drained(calls_made)
    before, began = trips.value, time.perf_counter()
    await asyncio.sleep(seconds)
    return float((trips.value - before) / (time.perf_counter() - began))


def count_redis_trips(trips: Any) -> None:
    """In the app's process: count every command sent to Redis in ``trips`` (a shared
    ``multiprocessing.Value``; a pipeline or a script call counts once)."""
    import redis.asyncio.connection as connection

    sent = connection.AbstractConnection.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        trips.value += 1
        await sent(self, command, check_health)

    connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]


async def open_pending(service: Any, bob: Any, alice: Any, count: int) -> list[str]:
    """``count`` pending unlock requests bob opens for alice, 8 at a time: every click or press
    a benchmark sends is the first approval of its own request."""
    from app.domain.models import Action

    gate = asyncio.Semaphore(8)

    async def one() -> str:
        async with gate:
            decision = await service.open(bob, alice, Action.UNLOCK.value, "INC-1000", "locked-out")
            return str(decision.request.id)

    return list(await asyncio.gather(*(one() for _ in range(count))))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def pooled(segments: Sequence[Timed], app: str) -> list[float]:
    return [x for s in segments if s.app == app for x in s.latencies]


async def drained(calls_made: Callable[[], Awaitable[int]], quiet_s: float = 0.4) -> None:
    """Wait until work after the answers stops calling the stand-in."""
    last, still = -1, 0.0
    while still < quiet_s:
        calls = await calls_made()
        still = still + 0.1 if calls == last else 0.0
        last = calls
        await asyncio.sleep(0.1)


async def rounds(bench: Interleaved, apps: Apps, per_app: int, count: int) -> list[dict[str, Any]]:
    """``count`` rounds per concurrency; returns per round and concurrency the segments."""
    done: list[dict[str, Any]] = []
    half = per_app // 2
    for number in range(count):
        for concurrency in CONCURRENCIES:
            await bench.warm(concurrency)
            segments = [await bench.segment(app, half, concurrency) for app in apps.order]
            done.append({"round": number + 1, "concurrency": concurrency, "segments": segments})
            print(round_line(done[-1], apps), flush=True)
    return done


def round_line(done: dict[str, Any], apps: Apps) -> str:
    segments: list[Timed] = done["segments"]
    a, b, c = (p99(pooled(segments, app)) * 1000 for app in (apps.bare, apps.twokey, apps.bare2))
    return (
        f"round {done['round']} c={done['concurrency']:<2}  p99 ms: A {a:7.2f}  twokey {b:7.2f}"
        f"  A' {c:7.2f}   twokey/A {b / a:5.2f}x  floor A'/A {c / a:5.2f}x"
    )


def ratio_line(done: list[dict[str, Any]], apps: Apps, concurrency: int) -> str:
    """The figure: median per-round twokey/bare p99 ratio, beside the bare/bare floor."""
    ratios, floors = [], []
    for d in done:
        if d["concurrency"] != concurrency:
            continue
        a = p99(pooled(d["segments"], apps.bare))
        ratios.append(p99(pooled(d["segments"], apps.twokey)) / a)
        floors.append(p99(pooled(d["segments"], apps.bare2)) / a)
    return (
        f"c={concurrency}: twokey p99 / bare p99 = {statistics.median(ratios):.2f}x "
        f"(rounds {min(ratios):.2f}-{max(ratios):.2f}); noise floor bare/bare = "
        f"{statistics.median(floors):.2f}x (rounds {min(floors):.2f}-{max(floors):.2f})"
    )


def completions(
    segments: Sequence[Timed], twokey: str, updated: dict[str, float], concurrency: int
) -> list[float]:
    """Sent -> the approval card's update reached the stand-in, for every twokey action."""
    found = []
    for s in segments:
        if s.app == twokey and s.concurrency == concurrency:
            found += [updated[rid] - at for rid, at in s.sent_at.items() if rid in updated]
    return found


def completion_line(done_in: list[float], what: str, whats: str) -> str:
    done_in = sorted(done_in)
    return (
        f"  twokey completion ({what} -> approval card updated): {len(done_in)} {whats}, "
        f"p50 {statistics.median(done_in) * 1000:.1f} ms, p99 {p99(done_in) * 1000:.1f} "
        f"ms, max {done_in[-1] * 1000:.1f} ms"
    )
