"""A stopping replica waits for the work people were answered for, within a bound, and says
whether it all finished (``twokey serve`` exits non-zero when it did not)."""

from __future__ import annotations

import asyncio

from app.bootstrap import InFlight


async def test_drain_waits_for_tracked_work_and_work_it_starts() -> None:
    inflight = InFlight()
    done: list[str] = []

    async def after_ack() -> None:
        await asyncio.sleep(0.05)
        done.append("after ack")

    async def listener() -> None:
        inflight.track()
        await asyncio.sleep(0.05)
        inflight.track(asyncio.create_task(after_ack()))
        done.append("listener")

    started = asyncio.create_task(listener())
    await asyncio.sleep(0)
    assert await inflight.drain(within=2) is True
    assert started.done() and done == ["listener", "after ack"]
    assert not inflight.accepting and len(inflight) == 0


async def test_drain_gives_up_after_its_bound_and_cancels_what_is_left() -> None:
    inflight = InFlight()
    stuck = asyncio.create_task(asyncio.Event().wait())
    inflight.track(stuck)
    assert await inflight.drain(within=0.05) is False
    assert stuck.cancelled()
