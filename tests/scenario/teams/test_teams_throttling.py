"""Outbound Bot Connector calls under throttling (429 + Retry-After) and 5xx, through the
stand-in: the card update lands once, after the wait asked for; msrest adds at most one quiet
retry of its own; a wait too long is not waited for."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import Counter as Tally
from collections.abc import Callable

import pytest
import requests
from prometheus_client import REGISTRY
from teams_standin import APPROVALS, dm_of
from teams_world import TeamsWorld

from app.channels.teams.auth import SILENT_RETRIES
from app.channels.teams.notifier import THROTTLE_WAIT_S, retry_after
from app.domain.models import Request

WHAT = {
    APPROVALS: "update_approvers",
    dm_of("alice"): "update_owner",
    dm_of("bob"): "update_requester",
}


def failed_total(error: str) -> float:
    return sum(
        REGISTRY.get_sample_value("twokey_teams_calls_failed_total", {"what": w, "error": error})
        or 0.0
        for w in WHAT.values()
    )


async def confirm(world: TeamsWorld, request: Request) -> None:
    owner = await world.card(dm_of("alice"), request.id, "Did you ask for this?")
    answer = await world.press("alice", owner, "confirm")
    assert answer["statusCode"] == 200


async def settled(world: TeamsWorld, seconds: float = 0.3) -> None:
    """Until no card update was asked for during ``seconds``."""
    while True:
        seen = len(world.teams.update_attempts)
        await asyncio.sleep(seconds)
        if len(world.teams.update_attempts) == seen:
            return


async def test_a_429_is_waited_out_and_the_update_lands_once(world: TeamsWorld) -> None:
    request = await world.open_request()
    await world.card(APPROVALS, request.id)
    world.teams.throttle_updates = 1
    world.teams.retry_after = "1"
    await confirm(world, request)
    await world.teams.until(
        lambda: (m := world.teams.find(APPROVALS, request.id)) and "Alice Adams at" in m.text
    )
    attempts = world.teams.update_attempts
    throttled = [(cid, aid, at) for at, cid, aid, status in attempts if status == 429]
    assert len(throttled) == 1
    cid, aid, at = throttled[0]

    def after() -> list[tuple[float, int]]:
        return [(t, status) for t, c, a, status in attempts if (c, a) == (cid, aid) and t > at]

    await world.teams.until(after)
    await settled(world)
    assert after()[0][1] == 200
    assert after()[0][0] - at >= 0.95  # Retry-After: 1 was honoured
    landed = Tally((c, a) for _, c, a, status in attempts if status == 200)
    # every card of the request was updated as often as the others: the throttled one too
    assert len(set(landed.values())) == 1 and landed[(cid, aid)] >= 1, landed
    approval = world.teams.find(APPROVALS, request.id)
    assert approval is not None and "Alice Adams at" in approval.text


async def test_a_retry_after_past_the_bound_is_not_waited_for(world: TeamsWorld) -> None:
    request = await world.open_request()
    await world.card(APPROVALS, request.id)
    world.teams.throttle_updates = 1
    world.teams.retry_after = str(int(THROTTLE_WAIT_S) + 45)
    gave_up = failed_total("http_429")
    started = time.monotonic()
    await confirm(world, request)
    await world.teams.until(lambda: failed_total("http_429") > gave_up)
    assert time.monotonic() - started < 5
    await settled(world)
    attempts = world.teams.update_attempts
    (cid, aid) = next((c, a) for _, c, a, status in attempts if status == 429)
    assert [s for _, c, a, s in attempts if (c, a) == (cid, aid)] == [429]


async def test_a_date_in_retry_after_is_honoured(world: TeamsWorld) -> None:
    request = await world.open_request()
    await world.card(APPROVALS, request.id)
    world.teams.throttle_updates = 1
    world.teams.retry_after = email.utils.formatdate(time.time() + 2, usegmt=True)
    await confirm(world, request)
    attempts = world.teams.update_attempts
    at, cid, aid, _ = await world.teams.until(
        lambda: next((a for a in attempts if a[3] == 429), None)
    )

    def retried() -> list[float]:
        return [t for t, c, a, s in attempts if (c, a) == (cid, aid) and s == 200 and t > at]

    first = (await world.teams.until(retried))[0]
    assert first - at >= 0.5  # the date is whole seconds: at least 1 s later, less a rounding


async def test_msrest_retries_a_5xx_at_most_once_quietly(world: TeamsWorld) -> None:
    request = await world.open_request()
    await world.card(APPROVALS, request.id)
    world.teams.fail_updates = True
    failed = failed_total("http_502")
    await confirm(world, request)
    await world.teams.until(lambda: failed_total("http_502") > failed)
    await settled(world)
    per_card = Tally((c, a) for _, c, a, s in world.teams.update_attempts if s == 502)
    assert per_card and set(per_card.values()) <= {1 + SILENT_RETRIES}, per_card


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0", 0.0), ("-4", 0.0), ("1.5", 1.5), ("", 7.0), ("soon", 7.0)],
)
def test_retry_after_reads_seconds(header: str, expected: float) -> None:
    assert retry_after(answered_429(header), 7.0) == expected


def test_retry_after_reads_a_date_and_none() -> None:
    in_30_s = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= retry_after(answered_429(in_30_s), 1.0) <= 30
    assert retry_after(None, 2.0) == 2.0


def answered_429(retry_after_header: str) -> requests.Response:
    """The response msrest's exception carries (a requests.Response)."""
    answer = requests.Response()
    answer.status_code = 429
    answer.headers["Retry-After"] = retry_after_header
    return answer


def sends_to(world: TeamsWorld, conversation: str, status: int) -> list[tuple[float, str]]:
    """(when, JSON) of each new message to ``conversation`` the stand-in answered ``status``."""
    return [(t, b) for t, c, s, b in world.teams.send_attempts if c == conversation and s == status]


async def approved(world: TeamsWorld, before_approval: Callable[[], None]) -> None:
    """alice confirms and carol approves a new request; ``before_approval`` runs between."""
    request = await world.open_request()
    approval = await world.card(APPROVALS, request.id)
    await confirm(world, request)
    await settled(world)
    before_approval()
    answer = await world.press("carol", approval, "approve")
    assert answer["statusCode"] == 200
    await world.stored(request.id, lambda r: r.state.value == "completed")
    await world.teams.until(lambda: sends_to(world, dm_of("bob"), 200))
    await asyncio.sleep(1.5)


async def test_a_throttled_message_is_waited_out_and_sent_once(world: TeamsWorld) -> None:
    def throttle() -> None:
        world.teams.throttle_sends = 1
        world.teams.retry_after = "1"

    await approved(world, throttle)
    (throttled_at, message), *_ = [(t, b) for t, _c, s, b in world.teams.send_attempts if s == 429]
    landed = [t for t, _c, s, b in world.teams.send_attempts if s == 200 and b == message]
    assert len(landed) == 1
    assert landed[0] - throttled_at >= 0.9


async def test_a_new_message_answered_502_is_not_sent_again(world: TeamsWorld) -> None:
    """A POST may have reached Teams before the 502: sending it again could show it twice."""

    def fail_one() -> None:
        world.teams.fail_sends = 1

    failed_before = failed_total_sends("http_502")
    await approved(world, fail_one)
    ((_, message),) = [(t, b) for t, _c, s, b in world.teams.send_attempts if s == 502]
    assert not [b for _t, _c, s, b in world.teams.send_attempts if s == 200 and b == message]
    assert failed_total_sends("http_502") == failed_before + 1
    assert sends_to(world, dm_of("bob"), 200)  # the other messages still went


def failed_total_sends(error: str) -> float:
    """Failed new messages of every purpose (the notifier names each call)."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name != "twokey_teams_calls_failed":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("error") == error:
                if not sample.labels.get("what", "").startswith("update_"):
                    total += sample.value
    return total
