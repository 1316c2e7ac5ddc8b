"""answer_at_ack: Slack is answered at the listener's ack; what follows the ack goes on, tracked
so a graceful stop finishes it; a listener that never acks is acked empty; one that fails
before its ack reaches Bolt's error answer."""

from __future__ import annotations

import asyncio

import pytest
from slack_bolt.context.ack.async_ack import AsyncAck

from app.channels.slack.acking import answer_at_ack
from app.runtime import InFlight


async def test_slack_is_answered_at_the_ack_and_the_rest_goes_on_tracked() -> None:
    ack, inflight = AsyncAck(), InFlight()
    release, finished = asyncio.Event(), asyncio.Event()

    async def listener(acking: AsyncAck) -> None:
        await acking(text="on record")
        await release.wait()  # the cards and messages after the ack
        finished.set()

    await answer_at_ack(ack, listener, inflight)
    assert ack.response is not None and ack.response.status == 200
    assert "on record" in ack.response.body
    assert not finished.is_set() and len(inflight) == 1

    release.set()
    assert await inflight.drain(1.0)
    assert finished.is_set()


async def test_a_listener_that_never_acks_is_acked_empty_in_time() -> None:
    ack, inflight = AsyncAck(), InFlight()
    stuck = asyncio.Event()

    async def listener(acking: AsyncAck) -> None:
        await stuck.wait()

    await answer_at_ack(ack, listener, inflight, budget_s=0.05)
    assert ack.response is not None and ack.response.status == 200
    assert await inflight.drain(0.05) is False  # still stuck: cancelled at the stop


async def test_a_listener_failing_before_its_ack_reaches_bolts_error_answer() -> None:
    async def listener(acking: AsyncAck) -> None:
        raise RuntimeError("broken before the ack")

    ack = AsyncAck()
    with pytest.raises(RuntimeError, match="broken before the ack"):
        await answer_at_ack(ack, listener, InFlight())
    assert ack.response is None


async def test_a_listener_failing_after_its_ack_is_logged_not_raised() -> None:
    from structlog.testing import capture_logs

    async def listener(acking: AsyncAck) -> None:
        await acking()
        await asyncio.sleep(0)
        raise ValueError("after the ack")

    ack, inflight = AsyncAck(), InFlight()
    with capture_logs() as logs:
        await answer_at_ack(ack, listener, inflight)
        await inflight.drain(1.0)
    assert ack.response is not None and ack.response.status == 200
    assert [e["error"] for e in logs if e["event"] == "slack_listener_failed_after_ack"] == [
        "ValueError"
    ]
