"""Answer Slack the moment a listener acks, not at Bolt's next poll.

Bolt has two ways to run a listener. Without ``process_before_response`` it starts the listener
as a task and polls every 10 ms until ``ack()`` was called: every answer then waits for a poll
(at least 10 ms, a click's whole ack budget several times over on a quiet replica), and under a
burst each waiting request runs its own 10 ms timer. With ``process_before_response`` it awaits
the listener and answers once it returns, which would make Slack wait for the cards and messages
after the ack too.

:func:`answer_at_ack` takes the best of both: Bolt runs it inline (``process_before_response``)
and it returns as soon as the listener acks (an event, no polling); what the listener does after
its ack goes on in its own task, tracked by the replica's ``InFlight`` so a graceful stop
finishes it. A listener that has not acked within :data:`ACK_BUDGET_S` is acked empty, so Slack
still gets its answer in time and never retries a delivery that is being worked on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from slack_bolt.context.ack.async_ack import AsyncAck

from app.runtime import InFlight

log = structlog.get_logger("twokey.slack.acking")

ACK_BUDGET_S = 2.5
"""The latest Slack is answered, whatever the listener does (Slack gives up at 3 s)."""

Listener = Callable[[AsyncAck], Awaitable[None]]


async def answer_at_ack(
    ack: AsyncAck, listener: Listener, inflight: InFlight, *, budget_s: float = ACK_BUDGET_S
) -> None:
    """Run ``listener`` (given an ack that notes it was called) until it acks or ends."""
    acked = asyncio.Event()

    async def noting(*args: Any, **kwargs: Any) -> Any:
        try:
            return await ack(*args, **kwargs)
        finally:
            acked.set()

    def failed_after_ack(done: asyncio.Future[None]) -> None:
        """Failing after its ack, a listener has no one to answer: logged, by type only."""
        error = None if done.cancelled() else done.exception()
        if error is not None and acked.is_set():
            log.error("slack_listener_failed_after_ack", error=type(error).__name__)

    work = asyncio.ensure_future(listener(noting))  # type: ignore[arg-type]
    inflight.track(work)
    work.add_done_callback(failed_after_ack)
    if not work.done():
        waiting = asyncio.ensure_future(acked.wait())
        try:
            await asyncio.wait({work, waiting}, timeout=budget_s, return_when="FIRST_COMPLETED")
        finally:
            waiting.cancel()
    if not acked.is_set() and work.done() and not work.cancelled():
        error = work.exception()
        if error is not None:
            raise error  # failed before any ack: Bolt's error handler answers
    if not acked.is_set():
        log.warning("slack_acked_empty", after_s=budget_s)
        await ack()
