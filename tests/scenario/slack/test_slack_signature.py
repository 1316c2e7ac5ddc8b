"""Untrusted HTTP: forged, stale, missing or malformed signatures get 401 and change nothing;
a correctly signed request replayed (or retried by Slack) opens nothing twice; Slack's 3 s
window is met because slow work runs after the ack."""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlencode

import pytest
import structlog
from slack_world import SlackWorld, sign, signed_headers

MARKER = "do-not-log-this-body-7f3a"


def command_body(world: SlackWorld) -> bytes:
    form = world.command_form("U0BOB", f"reset-mfa <@U0ALICE> INC-1234 lost-device {MARKER}")
    return urlencode(form).encode()


def forged(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    headers = signed_headers(body, timestamp=stamp)
    headers["X-Slack-Signature"] = sign(body, stamp, secret="not-the-signing-secret")
    return headers


def stale(body: bytes, seconds: int) -> dict[str, str]:
    return signed_headers(body, timestamp=str(int(time.time()) + seconds))


def non_numeric(body: bytes) -> dict[str, str]:
    headers = signed_headers(body, timestamp="12ab")
    headers["X-Slack-Signature"] = sign(body, "12ab")
    return headers


def missing_timestamp(body: bytes) -> dict[str, str]:
    headers = signed_headers(body)
    del headers["X-Slack-Request-Timestamp"]
    return headers


def missing_signature(body: bytes) -> dict[str, str]:
    headers = signed_headers(body)
    del headers["X-Slack-Signature"]
    return headers


def tampered_body(body: bytes) -> dict[str, str]:
    return signed_headers(body.replace(b"INC-1234", b"INC-9999"))


@pytest.mark.parametrize(
    "headers",
    [
        forged,
        lambda b: stale(b, -301),
        lambda b: stale(b, 301),
        non_numeric,
        missing_timestamp,
        missing_signature,
        tampered_body,
        lambda b: {**signed_headers(b), "X-Slack-Request-Timestamp": "1e10"},
        lambda b: {**signed_headers(b), "X-Slack-Request-Timestamp": "-5"},
        lambda b: {**signed_headers(b), "X-Slack-Signature": "v0=" + "0" * 64},
        lambda b: {**signed_headers(b), "X-Slack-Signature": "v0=é"},
    ],
    ids=[
        "forged",
        "stale-past",
        "stale-future",
        "non-numeric-timestamp",
        "missing-timestamp",
        "missing-signature",
        "tampered-body",
        "exponent-timestamp",
        "negative-timestamp",
        "zero-signature",
        "non-ascii-signature",
    ],
)
async def test_an_unverifiable_request_gets_401_and_changes_nothing(
    world: SlackWorld, headers: object, caplog: pytest.LogCaptureFixture
) -> None:
    body = command_body(world)
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logged:
        response = await world.post(body, headers(body))  # type: ignore[operator]
        assert response.status == 401
        assert (await response.json())["ok"] is False
    await asyncio.sleep(0.2)
    assert world.slack.calls == []
    assert await world.keys_in_namespace() == []
    assert any(e["event"] == "slack_request_refused" for e in logged)
    assert MARKER not in repr(logged) + caplog.text


async def test_a_replayed_slash_command_opens_no_second_request(world: SlackWorld) -> None:
    form = world.command_form("U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device")
    first = await world.signed(form)
    await world.receipt(form)
    again = await world.signed(form)  # the same signed bytes, seconds later
    retried = await world.signed(
        form, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    assert (first.status, again.status, retried.status) == (200, 200, 200)
    await asyncio.sleep(0.3)
    assert len(await world.runtime.store.open_requests()) == 1
    assert len(world.slack.hook_posts(form["response_url"])) == 1
    assert len([m for m in world.slack.in_channel("C0APPROVALS")]) == 1


async def test_slack_gets_its_ack_before_the_slow_work(world: SlackWorld) -> None:
    """users.info is held: the command is answered anyway, and the work finishes later."""
    release = world.slack.hold("users.info")
    form = world.command_form("U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device")
    response = await asyncio.wait_for(world.signed(form), timeout=2.9)
    assert response.status == 200
    assert world.slack.hook_posts(form["response_url"]) == []
    assert await world.runtime.store.open_requests() == []
    release.set()
    assert "opened" in await world.receipt(form)


async def test_slack_gets_its_ack_before_a_slow_click_is_decided(world: SlackWorld) -> None:
    request = await world.open_request()
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    release = world.slack.hold("users.info")
    response = await asyncio.wait_for(world.click("U0ALICE", owner, "confirm"), timeout=2.9)
    assert response.status == 200
    stored = await world.runtime.store.get(request.id)
    assert stored is not None and stored.owner_confirmed_at is None
    release.set()
    confirmed = await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
    assert confirmed.state.value == "pending"
    assert "confirmation is recorded" in await world.ephemeral_to("U0ALICE")


def test_the_signature_check_itself() -> None:
    from app.channels.slack.guard import signature_problem

    body, now = b"token=x&text=hi", 1_700_000_000.0
    good = sign(body, "1700000000")
    assert (
        signature_problem("8f742231b10e8888abcd99yyyzzz85a5", "1700000000", good, body, now) is None
    )
    assert signature_problem("", "1700000000", good, body, now) == "no_signing_secret"
    assert signature_problem("s", None, good, body, now) == "missing_signature"
    assert signature_problem("s", "1700000000", None, body, now) == "missing_signature"
    assert signature_problem("s", "17e8", good, body, now) == "bad_timestamp"
    assert signature_problem("s", "١٧٠٠٠٠٠٠٠٠", good, body, now) == "bad_timestamp"
    assert signature_problem("s", "9" * 40, good, body, now) == "bad_timestamp"
    assert signature_problem("s", "1699999699", good, body, now) == "stale_timestamp"
    assert signature_problem("s", "1700000000", good, body, now) == "bad_signature"


async def test_bolts_own_signature_check_never_logs_the_body(
    world: SlackWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """Bolt checks the signature again; a request that passed ours a moment before the 5-minute
    bound and fails Bolt's a moment after must not put its body (or signature) in a log."""
    from slack_bolt.request.async_request import AsyncBoltRequest

    from app.channels.slack.app import SlackChannel

    body = command_body(world)
    headers = stale(body, -301)
    channel = SlackChannel(world.runtime)
    caplog.set_level(logging.DEBUG)
    answer = await channel.bolt.async_dispatch(
        AsyncBoltRequest(body=body.decode(), headers={k: [v] for k, v in headers.items()})
    )
    assert answer.status == 401
    assert MARKER not in caplog.text
    assert headers["X-Slack-Signature"] not in caplog.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("channel_name", "payload-team"),
        ("text", "reset-mfa <@U0ALICE> INC-1234 lost-device payload"),
    ],
    ids=["channel-name", "note"],
)
async def test_a_command_mentioning_payload_is_still_a_command(
    world: SlackWorld, field: str, value: str
) -> None:
    """Bolt reads any form whose bytes contain "payload" as an interaction, finds none and
    parses the command as empty: it was silently dropped (refused as "another app")."""
    form = world.command_form("U0BOB", "reset-mfa <@U0ALICE> INC-1234 lost-device")
    form[field] = value
    response = await world.signed(form)
    assert response.status == 200
    assert "opened" in await world.receipt(form)
    assert len(await world.runtime.store.open_requests()) == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"payload=not-json", "application/x-www-form-urlencoded"),
        (b"payload=", "application/x-www-form-urlencoded"),
        (b"token=x&command=%2Ftwokey&text=help", "application/json"),
        (b"{not json", "application/json"),
        (b"[1]", "application/json"),
        (b'"x"', "application/json"),
        (b"payload=%5B1%5D", "application/x-www-form-urlencoded"),
    ],
    ids=[
        "payload-not-json",
        "payload-empty",
        "form-sent-as-json",
        "broken-json",
        "json-list",
        "json-string",
        "payload-a-list",
    ],
)
async def test_a_signed_but_malformed_body_is_a_400_not_a_500(
    world: SlackWorld, body: bytes, content_type: str
) -> None:
    response = await world.post(body, {**signed_headers(body), "Content-Type": content_type})
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_body"
    await asyncio.sleep(0.1)
    assert world.slack.calls == []
    assert await world.keys_in_namespace() == []


@pytest.mark.parametrize(
    "odd",
    [
        {"type": "view_submission", "view": "x"},
        {"type": "block_actions", "team": ["T0TWOKEY"], "container": "x", "actions": "x"},
        {"type": "block_actions", "team_id": 5, "user": "U0CAROL"},
        {"type": "event_callback", "event": "x", "event_id": "Ev1"},
    ],
    ids=["view-not-an-object", "parts-not-objects", "team-a-number", "event-not-an-object"],
)
async def test_a_signed_payload_of_odd_shape_is_never_a_500_and_changes_nothing(
    world: SlackWorld, odd: dict[str, object]
) -> None:
    """Slack never sends these, but a signed body is still untrusted in its shape: refused
    or ignored, never a 500, nothing stored, nothing posted."""
    response = await world.interact({"api_app_id": "A0TWOKEY", **odd})
    assert response.status < 500
    await asyncio.sleep(0.1)
    assert world.slack.calls == []
    assert await world.runtime.store.open_requests() == []
