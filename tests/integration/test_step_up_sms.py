"""Step-up verification of the owner by a one-time code texted to their phone of record, end to
end: the service on a real Redis, the code through the real `WebhookSmsSender` to a local HTTP
receiver standing in for the customer's SMS gateway, which checks the HMAC signature as a real
receiver would and keeps what it was asked to text."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from structlog.testing import capture_logs

from app.bootstrap import StartupError, check_code_senders
from app.connector_setup import check_policy_file
from app.connectors.okta import _principal_from
from app.connectors.sandbox import DirectoryFileError, SandboxDirectory, parse_directory
from app.domain.errors import BadInput, NotAllowed, Unavailable
from app.domain.models import Action, Principal, RequestState, phone_of_record
from app.domain.stepup import masked_phone
from app.mail import SmtpCodeSender
from app.policy.loader import load_policy_text
from app.service import StepUpOptions
from app.sms import WebhookSmsSender, sms_sender
from app.store.directory_cache import CachedDirectory
from app.store.keys import Keys, shard_of_request
from tests.helpers import Core, build_core, chat, policy_text
from tests.smtp_inbox import Inbox

PHONE = "+447700900789"
MASKED = "+44******789"
SECRET = "sms-webhook-secret-" + "s" * 24
CODE_KEY = b"k" * 32


@dataclass
class SmsGateway:
    """The customer's SMS webhook: refuses a bad or stale signature (401), keeps each text."""

    status: int = 200
    delay_s: float = 0.0
    texts: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get("X-Twokey-Timestamp", "")
        signature = request.headers.get("X-Twokey-Signature", "")
        mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
        if not (fresh and hmac.compare_digest(signature, "sha256=" + mac.hexdigest())):
            self.refused += 1
            return web.Response(status=401)
        if request.content_type != "application/json":
            return web.Response(status=415)
        await asyncio.sleep(self.delay_s)
        if self.status // 100 == 2:
            self.texts.append(json.loads(body))
        return web.Response(status=self.status)

    def code_for(self, request_id: str) -> str:
        for text in reversed(self.texts):
            found = re.search(rf"verify {request_id} (\d{{8}})", text["text"])
            if found and text["request"] == request_id:
                return found.group(1)
        raise AssertionError(f"no code texted for {request_id} in {len(self.texts)} texts")


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[SmsGateway, str]]:
    receiver = SmsGateway()
    app = web.Application()
    app.router.add_post("/send", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield receiver, f"http://127.0.0.1:{server.port}/send"
    finally:
        await server.close()


FALLBACK = "[sms_code, email_code]"
"""A text first, a code by email else: policy check wants a verifier that needs no phone."""
OWN_RESET = ", actions: {reset-mfa: [email_code]}"
"""reset-mfa never offers a text (policy check refuses it): its own list."""


def sms_policy(owner: str = FALLBACK, extra: str = OWN_RESET) -> str:
    """The test policy with an SMS step-up on the standard tier (email on the flagged one)."""
    text = policy_text().replace(
        "  standard:\n    label: Standard\n",
        f"  standard:\n    label: Standard\n    step_up: {{owner: {owner}{extra}}}\n",
    )
    return text.replace(
        "  strictest:\n    label: Flagged target\n",
        "  strictest:\n    label: Flagged target\n    step_up: {owner: [email_code]}\n",
    )


def directory(phone: str | None = PHONE, recovery: str | None = None) -> SandboxDirectory:
    people: list[Principal] = [
        p.model_copy(update={"phone": phone, "recovery_email": recovery}) if p.id == "alice" else p
        for p in SandboxDirectory.example().principals
    ]
    return SandboxDirectory(people)


def core_with(
    redis_client: aioredis.Redis,
    namespace: str,
    url: str | None,
    *,
    owner: str = FALLBACK,
    extra: str = OWN_RESET,
    phone: str | None = PHONE,
    mail_port: int | None = None,
    timeout_s: float = 5.0,
) -> Core:
    sms = None if url is None else WebhookSmsSender(url, SecretStr(SECRET), timeout_s)
    mail = None
    if mail_port is not None:
        mail = SmtpCodeSender("127.0.0.1", mail_port, starttls=False)
    return build_core(
        redis_client,
        namespace,
        policy=sms_policy(owner, extra),
        directory=directory(phone, "alice.home@example.net" if mail_port else None),
        step_up=StepUpOptions(code_key=CODE_KEY, mail=mail, sms=sms),
    )


async def open_unlock(core: Core, reason: str = "locked-out") -> str:
    """Unlock, not reset-mfa, and not a lost device: the only requests a text may go out for."""
    decision = await core.service.open(
        chat("bob"), chat("alice"), Action.UNLOCK.value, "INC-1234", reason
    )
    return decision.request.id


async def audit(core: Core, request_id: str) -> list[dict[str, Any]]:
    entries = await core.redis.xrange(core.keys.audit(shard_of_request(request_id)))
    events = [json.loads(fields["e"]) for _, fields in entries]
    return [e for e in events if e["rid"] == request_id]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**8:08d}"


def told(core: Core, *kinds: str) -> list[str]:
    return [str(item) for item in core.notifier.sent if item[0] in kinds]


# ---- through the service --------------------------------------------------------------------


async def test_owner_verifies_with_the_texted_code_and_only_then_the_change_runs(
    redis_client: aioredis.Redis,
    namespace: str,
    gateway: tuple[SmsGateway, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    texts, url = gateway
    core = core_with(redis_client, namespace, url)
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        rid = await open_unlock(core)
        code = texts.code_for(rid)
        await core.service.confirm_owner(chat("alice"), rid)
        decided = await core.service.approve(chat("carol"), rid)
        assert decided.request.state is RequestState.PENDING  # both keys, not the step-up
        assert core.connector.changes == []
        with pytest.raises(BadInput, match="Tries left for this code: 4"):
            await core.service.verify_code(chat("alice"), rid, wrong(code))
        done = await core.service.verify_code(chat("alice"), rid, code)

    assert done.request.state is RequestState.COMPLETED
    assert [c.request_id for c in core.connector.changes] == [rid]
    assert [(t["to"], t["request"]) for t in texts.texts] == [(PHONE, rid)]
    assert texts.refused == 0
    dm = told(core, "notify_owner")
    assert any(
        f"We texted a one-time code to your phone of record {MASKED}; type `verify {rid} <code>`"
        in t
        for t in dm
    ), dm
    assert any("texted to the owner's phone" in t for t in told(core, "notify_requester"))

    events = await audit(core, rid)
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["opened", "step_up_started"]
    assert kinds.index("step_up_passed") < kinds.index("execution_started")
    passed = next(e for e in events if e["kind"] == "step_up_passed")
    assert (passed["actor"], passed["reason"], passed["outcome"]) == ("alice", "sms_code", "passed")
    wrong_try = next(e for e in events if e["kind"] == "step_up_attempt")
    assert wrong_try["reason"] == "sms_code:wrong_code"

    # neither the code nor the phone is in the log, the trail, any message or any Redis key
    everything = json.dumps(events) + str(core.notifier.sent) + str(logs) + caplog.text
    assert code not in everything and PHONE not in everything
    assert any(e.get("event") == "step_up_started" for e in logs)
    for key in await core.redis.keys(f"*{namespace}*"):
        dump = await core.redis.dump(key) or b""
        assert code.encode() not in dump and PHONE.encode() not in dump, key


async def test_a_texted_code_is_single_use_and_bound_to_its_request(
    redis_client: aioredis.Redis, namespace: str, gateway: tuple[SmsGateway, str]
) -> None:
    texts, url = gateway
    core = core_with(redis_client, namespace, url)
    first = await open_unlock(core)
    second = await open_unlock(core)
    code = texts.code_for(first)

    with pytest.raises(BadInput, match="not right"):  # another request's code does not fit
        await core.service.verify_code(chat("alice"), second, code)
    await core.service.verify_code(chat("alice"), first, code)
    replay = await core.service.verify_code(chat("alice"), first, code)
    assert replay.changed is False and "already verified" in replay.message
    again = await core.service.new_code(chat("alice"), first)  # verified: nothing is texted
    assert again.changed is False and len(texts.texts) == 2


async def test_five_wrong_codes_use_the_code_up_and_three_such_rounds_lock_and_flag(
    redis_client: aioredis.Redis, namespace: str, gateway: tuple[SmsGateway, str]
) -> None:
    texts, url = gateway
    core = core_with(redis_client, namespace, url)
    rid = await open_unlock(core)
    for round_ in range(3):
        code = texts.code_for(rid)
        for left in ("4", "3", "2", "1"):
            with pytest.raises(BadInput, match=f"Tries left for this code: {left}"):
                await core.service.verify_code(chat("alice"), rid, wrong(code))
        with pytest.raises(NotAllowed) as failed:
            await core.service.verify_code(chat("alice"), rid, wrong(code))
        if round_ == 0:
            assert "typed wrong too often" in str(failed.value)
            with pytest.raises(BadInput, match="No code is waiting"):  # the right one is dead
                await core.service.verify_code(chat("alice"), rid, code)
        if round_ < 2:
            await core.service.new_code(chat("alice"), rid)
    assert "flagged" in str(failed.value)
    assert await core.redis.exists(core.keys.flag("alice"))
    with pytest.raises(NotAllowed, match="flagged"):
        await core.service.new_code(chat("alice"), rid)
    assert len(texts.texts) == 3
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert request.step_up_at is None
    failures = [e for e in await audit(core, rid) if e["kind"] == "step_up_failed"]
    assert [(e["reason"], e["outcome"]) for e in failures] == [
        ("sms_code:code_exhausted", "failed"),
        ("sms_code:code_exhausted", "failed"),
        ("sms_code:code_exhausted", "target_flagged"),
    ]


async def test_an_expired_code_fails_and_a_new_one_is_texted_on_request(
    redis_client: aioredis.Redis, namespace: str, gateway: tuple[SmsGateway, str]
) -> None:
    texts, url = gateway
    core = core_with(redis_client, namespace, url)
    rid = await open_unlock(core)
    old = texts.code_for(rid)
    with pytest.raises(BadInput, match="still live"):
        await core.service.new_code(chat("alice"), rid)

    # the code's own deadline passes before Redis drops the key: the right code fails
    await core.redis.hset(core.keys.step_up_code(rid), "until", 0)
    with pytest.raises(NotAllowed, match="ran out"):
        await core.service.verify_code(chat("alice"), rid, old)
    restarted = await core.service.new_code(chat("alice"), rid)
    assert "by text message" in restarted.message

    # and once Redis lets the key run out, nothing is waiting
    second = texts.code_for(rid)
    await core.redis.pexpire(core.keys.step_up_code(rid), 1)
    await asyncio.sleep(0.05)
    with pytest.raises(BadInput, match="No code is waiting"):
        await core.service.verify_code(chat("alice"), rid, second)
    await core.service.new_code(chat("alice"), rid)
    third = texts.code_for(rid)
    assert len({old, second, third}) == 3
    assert (await core.service.verify_code(chat("alice"), rid, third)).request.step_up_at
    failures = [e["reason"] for e in await audit(core, rid) if e["kind"] == "step_up_failed"]
    assert failures == ["sms_code:timeout", "sms_code:timeout"]


async def test_no_phone_of_record_falls_to_the_next_verifier(
    redis_client: aioredis.Redis,
    namespace: str,
    gateway: tuple[SmsGateway, str],
    inbox: tuple[Inbox, int],
) -> None:
    texts, url = gateway
    mails, port = inbox
    core = core_with(
        redis_client, namespace, url, owner="[sms_code, email_code]", phone=None, mail_port=port
    )
    rid = await open_unlock(core)
    assert texts.texts == [] and len(mails.messages) == 1
    request = await core.store.get(rid)
    assert request is not None and request.step_up_verifier == "email_code"
    await core.service.verify_code(chat("alice"), rid, mails.code_for(rid))


async def test_no_phone_of_record_and_nothing_else_refuses_plainly(
    redis_client: aioredis.Redis, namespace: str, gateway: tuple[SmsGateway, str]
) -> None:
    texts, url = gateway
    for core in (
        core_with(redis_client, namespace, url, phone=None),
        core_with(redis_client, namespace + "b", None),  # no SMS webhook configured
    ):
        rid = await open_unlock(core)
        waiting = told(core, "notify_requester")
        assert any("stays blocked" in t and "break-glass" in t for t in waiting), waiting
        with pytest.raises(NotAllowed, match=r"no phone of record|no SMS webhook"):
            await core.service.new_code(chat("alice"), rid)
        await core.service.confirm_owner(chat("alice"), rid)
        decided = await core.service.approve(chat("carol"), rid)
        assert decided.request.state is RequestState.PENDING
        assert core.connector.changes == []
    assert texts.texts == []


async def test_a_lost_device_reason_never_texts_the_phone(
    redis_client: aioredis.Redis,
    namespace: str,
    gateway: tuple[SmsGateway, str],
    inbox: tuple[Inbox, int],
) -> None:
    texts, url = gateway
    _, port = inbox
    core = core_with(
        redis_client,
        namespace,
        url,
        owner="[sms_code, email_code]",
        extra=", actions: {reset-mfa: [email_code]}",
        mail_port=port,
    )
    for action, reason in ((Action.UNLOCK, "lost-device"), (Action.RESET_MFA, "locked-out")):
        decision = await core.service.open(
            chat("bob"), chat("alice"), action.value, "INC-1234", reason
        )
        assert decision.request.plan.owner_step_up == ("email_code",)
        assert decision.request.step_up_verifier == "email_code"
    assert texts.texts == []


async def test_gateway_down_falls_back_to_the_emailed_code_and_counts_nothing(
    redis_client: aioredis.Redis,
    namespace: str,
    gateway: tuple[SmsGateway, str],
    inbox: tuple[Inbox, int],
) -> None:
    """[sms_code, email_code] with the SMS gateway down: the text is withdrawn (no failure) and
    the code goes by email instead, which the owner uses; nobody is told a text went out."""
    receiver, url = gateway
    mails, port = inbox
    receiver.status = 503
    core = core_with(redis_client, namespace, url, mail_port=port)
    rid = await open_unlock(core)
    assert receiver.texts == [] and len(mails.messages) == 1
    request = await core.store.get(rid)
    assert request is not None and request.step_up_verifier == "email_code"
    assert request.step_up_failures == 0
    unsent = [e for e in await audit(core, rid) if e["kind"] == "step_up_not_sent"]
    assert [e["reason"] for e in unsent] == ["sms_code:not_sent"]
    said = told(core, "notify_owner", "notify_requester")
    assert not any("We texted" in t or "No code was texted" in t for t in said), said
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    done = await core.service.verify_code(chat("alice"), rid, mails.code_for(rid))
    assert done.request.state is RequestState.COMPLETED
    assert [c.request_id for c in core.connector.changes] == [rid]


async def test_receiver_down_or_refusing_means_not_sent_said_plainly_and_nothing_passes(
    redis_client: aioredis.Redis, namespace: str, gateway: tuple[SmsGateway, str]
) -> None:
    receiver, url = gateway
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/send"
    receiver.status = 503
    for index, where in enumerate((dead, url)):
        core = core_with(redis_client, f"{namespace}{index}", where)
        with capture_logs() as logs:
            rid = await open_unlock(core)
        said = told(core, "notify_owner", "notify_requester")
        assert sum("No code was texted" in t and "nothing was sent" in t for t in said) == 2
        assert not any("We texted" in t for t in said)
        assert any(e["event"] == "sms_code_not_sent" for e in logs), logs
        assert PHONE not in str(logs)
        await core.service.confirm_owner(chat("alice"), rid)
        decided = await core.service.approve(chat("carol"), rid)
        assert decided.request.state is RequestState.PENDING
        assert decided.request.step_up_at is None and core.connector.changes == []
    assert receiver.texts == []


async def test_gateway_down_three_times_counts_nothing_and_a_code_works_once_it_is_back(
    redis_client: aioredis.Redis,
    namespace: str,
    gateway: tuple[SmsGateway, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An SMS gateway outage must never flag an innocent owner: three codes that did not go
    out (refused, rate-limited, no answer in time) are no attempts and no failures, though
    three failures flag the target; the owner asks again at once, and the fourth works."""
    receiver, url = gateway
    core = core_with(redis_client, namespace, url, timeout_s=0.3)
    caplog.set_level(logging.DEBUG)
    receiver.status = 503
    with capture_logs() as logs:
        rid = await open_unlock(core)
        for status, delay in ((429, 0.0), (503, 1.0)):  # asked again at once, each time
            receiver.status, receiver.delay_s = status, delay
            with pytest.raises(Unavailable, match="nothing counts against you") as refused:
                await core.service.new_code(chat("alice"), rid)
            assert "No code was texted" in str(refused.value)
        with pytest.raises(BadInput, match="No code is waiting"):  # a guess is no attempt
            await core.service.verify_code(chat("alice"), rid, "12345678")
    assert receiver.texts == []
    assert [e.get("reason") for e in logs if e["event"] == "sms_code_not_sent"] == [
        "the webhook answered 503",
        "the webhook answered 429",
        "timeout",
    ]

    events = await audit(core, rid)
    unsent = [e for e in events if e["kind"] == "step_up_not_sent"]
    assert [(e["actor"], e["reason"], e["outcome"]) for e in unsent] == [
        ("twokey", "sms_code:not_sent", "not_sent")
    ] * 3
    assert not [e for e in events if e["kind"] == "step_up_failed"]
    request = await core.store.get(rid)
    assert request is not None and request.step_up_failures == 0
    assert not await core.redis.exists(core.keys.flag("alice"))
    assert await core.redis.zcard(core.keys.step_up_failures("alice")) == 0
    assert not await core.redis.exists(core.keys.step_up_code(rid))
    owner = told(core, "notify_owner")
    assert sum(f"`verify {rid}` to ask for a new code now" in t for t in owner) == 1  # at open
    requester = [t for t in told(core, "notify_requester") if "No code was texted" in t]
    assert len(requester) == 3 and all("at once" in t and "break-glass" in t for t in requester)

    receiver.status, receiver.delay_s = 200, 0.0  # the gateway is back
    restarted = await core.service.new_code(chat("alice"), rid)
    assert "by text message" in restarted.message
    code = receiver.code_for(rid)
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    done = await core.service.verify_code(chat("alice"), rid, code)
    assert done.request.state is RequestState.COMPLETED
    assert [c.request_id for c in core.connector.changes] == [rid]
    said = json.dumps(await audit(core, rid)) + str(logs) + caplog.text + str(core.notifier.sent)
    assert code not in said and PHONE not in said


async def test_a_texted_code_never_typed_still_runs_out_as_a_failure_after_an_outage(
    redis_client: aioredis.Redis, namespace: str, gateway: tuple[SmsGateway, str]
) -> None:
    """Withdrawing unsent codes changes nothing for a code that went out: left unused, it runs
    out and counts as a failed step-up when the next one is asked for, as before."""
    receiver, url = gateway
    core = core_with(redis_client, namespace, url)
    receiver.status = 503
    rid = await open_unlock(core)  # not sent: withdrawn
    receiver.status = 200
    await core.service.new_code(chat("alice"), rid)  # sent
    receiver.code_for(rid)
    with pytest.raises(BadInput, match="still live"):
        await core.service.new_code(chat("alice"), rid)
    await core.redis.pexpire(core.keys.step_up_code(rid), 1)  # never typed: it runs out
    await asyncio.sleep(0.05)
    await core.service.new_code(chat("alice"), rid)
    request = await core.store.get(rid)
    assert request is not None and request.step_up_failures == 1
    assert await core.redis.zcard(core.keys.step_up_failures("alice")) == 1
    kinds = [(e["kind"], e["reason"]) for e in await audit(core, rid) if "step_up" in e["kind"]]
    assert kinds == [
        ("step_up_started", "sms_code"),
        ("step_up_not_sent", "sms_code:not_sent"),
        ("step_up_started", "sms_code"),
        ("step_up_failed", "sms_code:timeout"),
        ("step_up_started", "sms_code"),
    ]
    assert len(receiver.texts) == 2


async def test_a_receiver_that_does_not_answer_in_time_means_not_sent(
    redis_client: aioredis.Redis, namespace: str, gateway: tuple[SmsGateway, str]
) -> None:
    receiver, url = gateway
    receiver.delay_s = 2.0
    core = core_with(redis_client, namespace, url, timeout_s=0.3)
    with capture_logs() as logs:
        rid = await open_unlock(core)
    assert [e.get("reason") for e in logs if e["event"] == "sms_code_not_sent"] == ["timeout"]
    assert sum("No code was texted" in t for t in told(core, "notify_owner")) == 1
    request = await core.store.get(rid)
    assert request is not None and request.step_up_at is None


async def test_a_wrong_signing_secret_is_refused_by_the_receiver_and_not_sent(
    redis_client: aioredis.Redis, namespace: str, gateway: tuple[SmsGateway, str]
) -> None:
    receiver, url = gateway
    core = build_core(
        redis_client,
        namespace,
        policy=sms_policy(),
        directory=directory(),
        step_up=StepUpOptions(
            code_key=CODE_KEY, sms=WebhookSmsSender(url, SecretStr("another-secret-" + "x" * 20))
        ),
    )
    await open_unlock(core)
    assert receiver.refused == 1 and receiver.texts == []
    assert any("No code was texted" in t for t in told(core, "notify_owner"))


# ---- settings, policy check, directories ----------------------------------------------------


def test_the_sender_is_checked_at_start_up_without_echoing_a_value() -> None:
    assert sms_sender(None, None) is None
    secret = SecretStr("a-good-long-secret-value")
    assert sms_sender("https://sms.example.com/send", secret) is not None
    assert sms_sender("http://127.0.0.1:8080/send", secret) is not None
    cases = [
        ("http://sms.example.com/send", secret, "must use https"),
        ("https://sms.example.com/send", SecretStr("short-secret"), "at least 16 characters"),
        ("https://sms.example.com/send", None, "go together"),
        (None, secret, "go together"),
        ("https://user:pw@sms.example.com/send", secret, "no credentials"),
        ("ftp://sms.example.com", secret, "must be a URL"),
    ]
    for url, key, expected in cases:
        with pytest.raises(ValueError, match=expected) as refused:
            sms_sender(url, key)
        assert "short-secret" not in str(refused.value) and "pw@" not in str(refused.value)


def test_start_up_refuses_a_policy_that_texts_codes_without_the_webhook() -> None:
    policy = load_policy_text(sms_policy("[sms_code, email_code]"), "p.yaml")
    with pytest.raises(StartupError, match="TWOKEY_SMS_WEBHOOK_URL"):
        check_code_senders(policy, StepUpOptions(code_key=CODE_KEY))
    sender = WebhookSmsSender("https://sms.example.com/send", SecretStr(SECRET))
    mail = SmtpCodeSender("127.0.0.1", 25)
    check_code_senders(policy, StepUpOptions(code_key=CODE_KEY, sms=sender, mail=mail))
    with pytest.raises(StartupError, match="TWOKEY_SMTP_HOST"):  # its fallback needs one too
        check_code_senders(policy, StepUpOptions(code_key=CODE_KEY, sms=sender))
    email_only = load_policy_text(sms_policy("[email_code]"))
    check_code_senders(email_only, StepUpOptions(CODE_KEY), simulated_mailbox=True)


@pytest.mark.parametrize(
    ("owner", "extra", "expected"),
    [
        ("[sms_code, email_code]", "", "would be offered for reset-mfa"),
        ("[email_code]", ", actions: {reset-mfa: [sms_code, email_code]}", "reset-mfa"),
        ("[sms_code]", ", actions: {reset-mfa: [email_code]}", "only device-based"),
        ("[okta_push, sms_code]", ", actions: {reset-mfa: [email_code]}", "only device-based"),
        ("[email_code]", ", approver: [sms_code]", "cannot verify an approver"),
    ],
)
def test_policy_check_refuses_a_text_where_the_phone_is_what_is_at_stake(
    tmp_path: Path, owner: str, extra: str, expected: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(sms_policy(owner, extra))
    code, text = check_policy_file(path)
    assert code != 0 and expected in text, text


def test_policy_check_refuses_a_text_for_a_flagged_target(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        sms_policy("[email_code]").replace("flagged_tier:", "step_up: [sms_code]\n  flagged_tier:")
    )
    code, text = check_policy_file(path)
    assert code != 0 and "fraud.step_up" in text, text


def test_policy_check_accepts_a_text_with_a_fallback_and_reset_mfa_kept_apart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(sms_policy("[sms_code, email_code]", ", actions: {reset-mfa: [email_code]}"))
    code, text = check_policy_file(path)
    assert code == 0, text


def test_the_sandbox_directory_reads_a_phone_of_record_and_refuses_a_bad_one() -> None:
    person = {"id": "alice", "email": "alice@example.com"}
    people = parse_directory({"people": [{**person, "phone": "+447700900789"}]}, "d.yaml")
    assert people[0].phone == PHONE and PHONE not in repr(people[0])
    for bad, expected in (("07700 900789", "E.164"), (447700900789, "in quotes")):
        with pytest.raises(DirectoryFileError, match=expected) as refused:
            parse_directory({"people": [{**person, "phone": bad}]}, "d.yaml")
        assert "900789" not in str(refused.value)  # the number itself is never echoed
    example = {p.id: p for p in SandboxDirectory.example().principals}
    assert example["alice"].phone is not None and example["bob"].phone is None


def test_okta_mobile_phone_becomes_the_phone_of_record_only_when_unambiguous() -> None:
    def okta(mobile: object, read_phone: bool = True) -> Principal:
        profile = {"email": "a@example.com", "mobilePhone": mobile}
        user = {"id": "00u1", "status": "ACTIVE", "profile": profile}
        return _principal_from(user, frozenset(), read_phone=read_phone)

    assert okta("+44 7700 900-789").phone == PHONE
    assert okta("+44 7700 900-789", read_phone=False).phone is None  # phone_of_record off
    assert okta("(+44) 7700.900.789").phone == PHONE
    for unusable in ("07700 900789", "+44 7700 900789 ext 2", "", None, 447700900789):
        assert okta(unusable).phone is None
    assert phone_of_record("+1 (415) 555-0100") == "+14155550100"
    assert masked_phone(PHONE) == MASKED and masked_phone("+14155550100") == "+14******100"


async def test_the_directory_cache_keeps_the_phone_of_record(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """A phone of record read through the Redis directory cache comes back the same."""
    cached = CachedDirectory(directory(), redis_client, Keys(namespace), 60)
    first, second = await cached.get("alice"), await cached.get("alice")
    assert first is not None and second is not None and second.phone == PHONE
