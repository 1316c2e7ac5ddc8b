"""The webhook connector against a local receiver that checks every signature, the way a
customer's automation would (with our verify function and with the documented formula)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.connectors.base import ConnectorConfigError
from app.connectors.webhook import (
    WebhookConnector,
    build,
    verify_webhook_signature,
    webhook_signature,
)
from app.domain.models import Action, Principal, PrincipalKind
from app.ports import Outcome
from tests.connectors import RecordingSleep, request_for

SIGNING_KEY = "whsec-" + "Zx9" * 12
SERVICE = Principal(
    id="svc-backup",
    kind=PrincipalKind.NHI,
    display_name="backup service account",
    owner_id="00ualice0001",
    system="aws",
)


@dataclass
class Receiver:
    """The customer's automation: checks signatures, records what came, answers as told."""

    answers: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    bad_signatures: list[str] = field(default_factory=list)
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.answers.append((status, body, headers or {}))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        self.received.append((headers, body))
        timestamp = request.headers.get("Twokey-Timestamp", "")
        signature = request.headers.get("Twokey-Signature", "")
        documented = hmac.new(
            SIGNING_KEY.encode(), b"v1:" + timestamp.encode() + b":" + body, hashlib.sha256
        ).hexdigest()
        if signature != f"v1={documented}" or not verify_webhook_signature(
            SIGNING_KEY, timestamp=timestamp, body=body, signature=signature
        ):
            self.bad_signatures.append(signature)
            return web.json_response({"detail": "bad signature"}, status=401)
        if self.hang:
            await self.release.wait()
        status, answer, answer_headers = (
            self.answers.pop(0) if self.answers else (200, {"outcome": "completed"}, {})
        )
        if isinstance(answer, bytes):
            return web.Response(status=status, body=answer, headers=answer_headers)
        return web.json_response(answer, status=status, headers=answer_headers)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiving = Receiver()
    app = web.Application()
    app.router.add_post("/twokey/hook", receiving.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    receiving.url = str(server.make_url("/twokey/hook"))
    yield receiving
    receiving.release.set()
    await server.close()
    assert receiving.bad_signatures == []


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


ConnectorFactory = Callable[..., WebhookConnector]


@pytest.fixture
async def connect(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver, sleep: RecordingSleep
) -> AsyncIterator[ConnectorFactory]:
    monkeypatch.setenv("TWOKEY_WEBHOOK_KEY", SIGNING_KEY)
    built: list[WebhookConnector] = []

    def make(**settings: Any) -> WebhookConnector:
        config = {
            "type": "webhook",
            "name": "rotator",
            "url": receiver.url,
            "secret_env": "TWOKEY_WEBHOOK_KEY",
            "actions": ["rotate-secret"],
            **settings,
        }
        connector = build(config, sleep=sleep)
        built.append(connector)
        return connector

    yield make
    for connector in built:
        await connector.aclose()


async def test_a_completed_answer_with_a_secret_is_the_outcome(
    receiver: Receiver, connect: ConnectorFactory
) -> None:
    receiver.answer(
        200,
        {
            "outcome": "completed",
            "detail": "Rotated the backup key; the old one stops working in 24 h.",
            "secret": "AKIA-new-key-material",
            "secret_label": "new AWS access key",
            "ignored": "extra fields are fine",
        },
    )
    connector = connect()

    result = await connector.execute(
        Action.ROTATE_SECRET, SERVICE, request_for(Action.ROTATE_SECRET, SERVICE)
    )

    assert result.outcome is Outcome.COMPLETED
    assert result.detail == "Rotated the backup key; the old one stops working in 24 h."
    assert result.secret is not None
    assert result.secret.get_secret_value() == "AKIA-new-key-material"
    assert result.secret_label == "new AWS access key"
    assert "AKIA-new-key-material" not in repr(result)


async def test_the_request_says_who_what_and_who_approved_and_nothing_secret(
    receiver: Receiver, connect: ConnectorFactory
) -> None:
    connector = connect()

    await connector.execute(
        Action.ROTATE_SECRET, SERVICE, request_for(Action.ROTATE_SECRET, SERVICE, ticket="CHG-42")
    )

    [(headers, body)] = receiver.received
    sent = json.loads(body)
    assert sent["request_id"] == "TK-7QX2M9AB" and sent["ticket"] == "CHG-42"
    assert sent["action"] == "rotate-secret" and sent["tier"] == "standard"
    assert sent["target"]["id"] == "svc-backup" and sent["target"]["kind"] == "nhi"
    assert sent["target"]["owner_id"] == "00ualice0001"
    assert sent["requester"] == {"id": "00uagent0001", "name": "Henry Helpdesk"}
    assert sent["approvers"] == ["00ulead00001"]
    assert headers["Content-Type"] == "application/json"
    assert SIGNING_KEY not in body.decode() and SIGNING_KEY not in json.dumps(headers)


async def test_a_secret_too_long_to_pass_on_is_said_never_silently_dropped(
    receiver: Receiver, connect: ConnectorFactory
) -> None:
    """The receiver rotated and made a credential over 4096 characters: it was read as an
    unreadable answer ("unclear what it did") and the credential dropped without a word."""
    receiver.answer(200, {"outcome": "completed", "secret": "k" * 5000})
    connector = connect()

    result = await connector.execute(
        Action.ROTATE_SECRET, SERVICE, request_for(Action.ROTATE_SECRET, SERVICE)
    )

    assert result.outcome is Outcome.COMPLETED
    assert result.secret is None
    assert "handed back a secret longer than 4096 characters" in result.attention
    assert "the owner does not have it" in result.attention
    assert "kkkk" not in result.attention + result.detail


async def test_a_failed_answer_is_failed_and_its_secret_is_dropped(
    receiver: Receiver, connect: ConnectorFactory
) -> None:
    receiver.answer(
        200, {"outcome": "failed", "detail": "Key is locked by a legal hold", "secret": "x1"}
    )
    connector = connect()

    result = await connector.execute(
        Action.ROTATE_SECRET, SERVICE, request_for(Action.ROTATE_SECRET, SERVICE)
    )

    assert result.outcome is Outcome.FAILED
    assert result.detail == "Key is locked by a legal hold" and result.secret is None


async def test_an_error_status_is_failed_with_the_receivers_words_only_from_json(
    receiver: Receiver, connect: ConnectorFactory
) -> None:
    receiver.answer(500, {"detail": "database down"})
    receiver.answer(400, b"<html>stack trace with who-knows-what</html>")
    connector = connect()
    request = request_for(Action.ROTATE_SECRET, SERVICE)

    words = await connector.execute(Action.ROTATE_SECRET, SERVICE, request)
    html = await connector.execute(Action.ROTATE_SECRET, SERVICE, request)

    assert words.outcome is Outcome.FAILED and words.detail.endswith("HTTP 500: database down")
    assert html.outcome is Outcome.FAILED and html.detail.endswith("answered HTTP 400")


async def test_an_unreadable_success_is_unknown(
    receiver: Receiver, connect: ConnectorFactory
) -> None:
    receiver.answer(200, {"status": "ok"})
    connector = connect()

    result = await connector.execute(
        Action.ROTATE_SECRET, SERVICE, request_for(Action.ROTATE_SECRET, SERVICE)
    )

    assert result.outcome is Outcome.UNKNOWN and "unclear" in result.detail


async def test_no_answer_in_time_is_unknown_and_never_resent(
    receiver: Receiver, connect: ConnectorFactory
) -> None:
    receiver.hang = True
    connector = connect(timeout=0.5)

    result = await connector.execute(
        Action.ROTATE_SECRET, SERVICE, request_for(Action.ROTATE_SECRET, SERVICE)
    )

    assert result.outcome is Outcome.UNKNOWN and "within 0.5 s" in result.detail
    assert len(receiver.received) == 1


async def test_a_gateway_timeout_is_unknown_but_unavailable_is_failed(
    receiver: Receiver, connect: ConnectorFactory
) -> None:
    receiver.answer(504, {"detail": "upstream timed out"})
    receiver.answer(503, {"detail": "maintenance"})
    connector = connect()
    request = request_for(Action.ROTATE_SECRET, SERVICE)

    gateway = await connector.execute(Action.ROTATE_SECRET, SERVICE, request)
    maintenance = await connector.execute(Action.ROTATE_SECRET, SERVICE, request)

    assert gateway.outcome is Outcome.UNKNOWN
    assert maintenance.outcome is Outcome.FAILED and "maintenance" in maintenance.detail
    assert len(receiver.received) == 2


async def test_429_is_resent_after_retry_after_with_a_fresh_signature(
    receiver: Receiver, connect: ConnectorFactory, sleep: RecordingSleep
) -> None:
    receiver.answer(429, {"detail": "slow down"}, {"Retry-After": "2"})
    connector = connect()

    result = await connector.execute(
        Action.ROTATE_SECRET, SERVICE, request_for(Action.ROTATE_SECRET, SERVICE)
    )

    assert result.outcome is Outcome.COMPLETED
    assert sleep.waits == [2.0]
    [(_, first), (_, second)] = receiver.received
    assert first == second, "the same document, so request_id works as an idempotency key"


async def test_retry_after_as_a_date_is_measured_against_the_answers_date(
    receiver: Receiver, connect: ConnectorFactory, sleep: RecordingSleep
) -> None:
    sent = 1_767_225_600
    receiver.answer(
        429,
        {},
        {"Date": formatdate(sent, usegmt=True), "Retry-After": formatdate(sent + 5, usegmt=True)},
    )
    connector = connect()

    result = await connector.execute(
        Action.ROTATE_SECRET, SERVICE, request_for(Action.ROTATE_SECRET, SERVICE)
    )

    assert result.outcome is Outcome.COMPLETED and sleep.waits == [5.0]


async def test_a_long_rate_limit_fails_without_sending_again(
    receiver: Receiver, connect: ConnectorFactory, sleep: RecordingSleep
) -> None:
    receiver.answer(429, {}, {"Retry-After": "600"})
    connector = connect(max_rate_limit_wait=30)

    result = await connector.execute(
        Action.ROTATE_SECRET, SERVICE, request_for(Action.ROTATE_SECRET, SERVICE)
    )

    assert result.outcome is Outcome.FAILED and "nothing changed" in result.detail
    assert sleep.waits == [] and len(receiver.received) == 1


async def test_an_unreachable_receiver_fails(
    monkeypatch: pytest.MonkeyPatch, sleep: RecordingSleep
) -> None:
    monkeypatch.setenv("TWOKEY_WEBHOOK_KEY", SIGNING_KEY)
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/hook"))
    await server.close()
    connector = build(
        {
            "type": "webhook",
            "url": url,
            "secret_env": "TWOKEY_WEBHOOK_KEY",
            "actions": ["rotate-secret"],
            "max_attempts": 1,
        },
        sleep=sleep,
    )

    result = await connector.execute(
        Action.ROTATE_SECRET, SERVICE, request_for(Action.ROTATE_SECRET, SERVICE)
    )
    await connector.aclose()

    assert result.outcome is Outcome.FAILED and "nothing changed" in result.detail


async def test_actions_it_was_not_given_are_not_sent(
    receiver: Receiver, connect: ConnectorFactory
) -> None:
    connector = connect()
    person = Principal(id="00ualice0001", display_name="Alice")

    assert not connector.supports(Action.RESET_MFA, person)
    result = await connector.execute(
        Action.RESET_MFA, person, request_for(Action.RESET_MFA, person)
    )

    assert result.outcome is Outcome.FAILED and receiver.received == []


def test_verify_accepts_only_our_signature_of_this_body_now() -> None:
    body = b'{"request_id":"TK-7QX2M9AB"}'
    now = 1_767_225_600
    signature = webhook_signature(SIGNING_KEY, str(now), body)

    def verify(**changes: Any) -> bool:
        arguments: dict[str, Any] = {
            "timestamp": str(now),
            "body": body,
            "signature": signature,
            "now": now + 10,
        } | changes
        key = arguments.pop("key", SIGNING_KEY)
        return verify_webhook_signature(key, **arguments)

    assert verify()
    assert not verify(body=body + b" ")
    assert not verify(key="another-key-of-sufficient-length-000000")
    assert not verify(now=now + 301), "a replay after five minutes is refused"
    assert not verify(now=now - 301), "so is a timestamp from the future"
    assert not verify(timestamp=str(now + 1))
    assert not verify(signature=signature.replace("v1=", "v0="))
    assert not verify(timestamp="not-a-time")
    assert not verify(timestamp="١٧٦٧٢٢٥٦٠٠"), "only ASCII digits are a timestamp"


def test_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHORT_KEY", "too-short")
    monkeypatch.setenv("TWOKEY_WEBHOOK_KEY", SIGNING_KEY)
    base = {
        "type": "webhook",
        "url": "https://automation.example.com/twokey",
        "secret_env": "TWOKEY_WEBHOOK_KEY",
        "actions": ["rotate-secret"],
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "secret_env": "SHORT_KEY"}, "shorter than 32 bytes"),
        ({**base, "url": "http://automation.example.com/twokey"}, "plain http"),
        ({**base, "actions": []}, "list the actions"),
        ({**base, "actions": ["make-coffee"]}, "actions"),
        ({**base, "secret": "inline"}, "secret: Extra inputs are not permitted"),
        ({**base, "secret_env": SIGNING_KEY}, "NAME of the environment variable"),
    ]
    for config, words in cases:
        with pytest.raises(ConnectorConfigError, match=words) as raised:
            build(config)
        assert SIGNING_KEY not in str(raised.value)


async def test_the_signing_key_and_returned_secrets_never_reach_the_logs(
    receiver: Receiver,
    connect: ConnectorFactory,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.answer(200, {"outcome": "completed", "secret": "new-secret-0000-aaaa"})
    receiver.answer(500, {"detail": "boom", "secret": "leaked-by-receiver-1111"})
    connector = connect()
    request = request_for(Action.ROTATE_SECRET, SERVICE)

    with structlog.testing.capture_logs() as events:
        results = [await connector.execute(Action.ROTATE_SECRET, SERVICE, request) for _ in "ab"]

    assert [r.outcome for r in results] == [Outcome.COMPLETED, Outcome.FAILED]
    captured = capsys.readouterr()
    logged = "\n".join(
        [
            caplog.text,
            *(f"{r.getMessage()} {r.args!r} {r.__dict__!r}" for r in caplog.records),
            *(repr(event) for event in events),
            captured.out,
            captured.err,
            *(repr(result) for result in results),
            *(result.detail for result in results),
        ]
    )
    assert events
    signatures = [headers["Twokey-Signature"] for headers, _ in receiver.received]
    for secret in [SIGNING_KEY, "new-secret-0000-aaaa", "leaked-by-receiver-1111", *signatures]:
        assert secret not in logged


async def test_a_request_for_another_change_is_not_sent(
    receiver: Receiver, connect: ConnectorFactory
) -> None:
    connector = connect(actions=["unlock"])
    person = Principal(id="00ualice0001", display_name="Alice")
    other = Principal(id="00ubob0002", display_name="Bob")
    assert connector.supports(Action.UNLOCK, person)

    result = await connector.execute(Action.UNLOCK, person, request_for(Action.UNLOCK, other))

    assert result.outcome is Outcome.FAILED and "nothing was sent" in result.detail
    assert receiver.received == []
