"""Step-up verification of the owner by a one-time code to their recovery email, end to end:
the service on a real Redis, the code through a real SMTP server (aiosmtpd) on this machine."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import SecretStr
from structlog.testing import capture_logs

from app.bootstrap import StartupError, build_runtime, check_code_senders, step_up_options
from app.connectors.sandbox import SandboxDirectory
from app.domain.errors import BadInput, NotAllowed, Unavailable
from app.domain.models import Principal, RequestState
from app.mail import SmtpCodeSender
from app.policy.loader import load_policy_text
from app.ports import GateCode
from app.service import StepUpOptions
from app.settings import Settings
from app.store.keys import shard_of_request
from tests.helpers import Core, build_core, chat, policy_text
from tests.smtp_inbox import Inbox

RECOVERY = "alice.home@example.net"
CODE_KEY = b"k" * 32


def step_up_policy(ttl: str = "20m", fraud: str = "") -> str:
    text = policy_text().replace(
        "  standard:\n    label: Standard\n",
        f"  standard:\n    label: Standard\n    step_up: {{owner: [email_code], ttl: {ttl}}}\n",
    )
    # the strictest tier must demand every gate another tier demands
    text = text.replace(
        "  strictest:\n    label: Flagged target\n",
        "  strictest:\n    label: Flagged target\n    step_up: {owner: [email_code]}\n",
    )
    return text + fraud


def directory(recovery: str | None = RECOVERY) -> SandboxDirectory:
    people: list[Principal] = [
        p.model_copy(update={"recovery_email": recovery}) if p.id == "alice" else p
        for p in SandboxDirectory.example().principals
    ]
    return SandboxDirectory(people)


def core_with(
    redis_client: aioredis.Redis,
    namespace: str,
    port: int | None,
    *,
    ttl: str = "20m",
    recovery: str | None = RECOVERY,
) -> Core:
    mail = None if port is None else SmtpCodeSender("127.0.0.1", port, starttls=False)
    return build_core(
        redis_client,
        namespace,
        policy=step_up_policy(ttl),
        directory=directory(recovery),
        step_up=StepUpOptions(code_key=CODE_KEY, mail=mail),
    )


async def audit(core: Core, request_id: str) -> list[dict[str, object]]:
    entries = await core.redis.xrange(core.keys.audit(shard_of_request(request_id)))
    events = [json.loads(fields["e"]) for _, fields in entries]
    return [e for e in events if e["rid"] == request_id]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**8:08d}"


async def test_owner_verifies_with_the_emailed_code_and_only_then_the_change_runs(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    core = core_with(redis_client, namespace, port)
    rid = await core.open_mfa_reset()

    assert [m["To"] for m in mails.messages] == [RECOVERY]
    code = mails.code_for(rid)
    dm = [text for kind, *rest in core.notifier.sent if kind == "notify_owner" for text in rest]
    assert any("verify " + rid in str(t) and "a***@example.net" in str(t) for t in dm)
    assert all(code not in str(item) for item in core.notifier.sent)

    await core.service.confirm_owner(chat("alice"), rid)
    decided = await core.service.approve(chat("carol"), rid)
    assert decided.request.state is RequestState.PENDING  # both keys, but not the step-up
    assert decided.request.waiting_for(decided.request.last_change_at) == [
        "owner verification (step-up)"
    ]
    assert core.connector.changes == []

    done = await core.service.verify_code(chat("alice"), rid, code)
    assert done.request.state is RequestState.COMPLETED
    assert [c.request_id for c in core.connector.changes] == [rid]

    events = await audit(core, rid)
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["opened", "step_up_started"] and "step_up_passed" in kinds
    assert kinds.index("step_up_passed") < kinds.index("execution_started")
    passed = next(e for e in events if e["kind"] == "step_up_passed")
    assert (passed["actor"], passed["reason"], passed["outcome"]) == (
        "alice",
        "email_code",
        "passed",
    )
    # the code is nowhere in Redis: not in the trail, not in any key
    for key in await core.redis.keys(f"*{namespace}*"):
        kind = await core.redis.type(key)
        dump = await core.redis.dump(key)
        assert code.encode() not in (dump or b""), (key, kind)


async def test_a_code_is_single_use_and_bound_to_its_request(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    core = core_with(redis_client, namespace, port)
    first = await core.open_mfa_reset()
    second = await core.open_mfa_reset()
    code = mails.code_for(first)

    with pytest.raises(BadInput, match="not right"):  # another request's code does not fit
        await core.service.verify_code(chat("alice"), second, code)
    await core.service.verify_code(chat("alice"), first, code)
    replay = await core.service.verify_code(chat("alice"), first, code)
    assert replay.changed is False and "already verified" in replay.message


async def test_guessing_stops_at_five_tries_and_the_right_code_then_fails_too(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    core = core_with(redis_client, namespace, port)
    rid = await core.open_mfa_reset()
    code = mails.code_for(rid)

    for left in ("4", "3", "2", "1"):
        with pytest.raises(BadInput, match=f"Tries left for this code: {left}"):
            await core.service.verify_code(chat("alice"), rid, wrong(code))
    with pytest.raises(NotAllowed, match="typed wrong too often"):
        await core.service.verify_code(chat("alice"), rid, wrong(code))
    with pytest.raises(BadInput, match="No code is waiting"):
        await core.service.verify_code(chat("alice"), rid, code)

    request = await core.store.get(rid)
    assert request is not None and request.step_up_at is None and request.step_up_failures == 1
    kinds = [e["kind"] for e in await audit(core, rid)]
    assert kinds.count("step_up_attempt") == 4 and kinds.count("step_up_failed") == 1
    assert any("verification failed (1 of 3" in str(s) for s in core.notifier.sent)


async def test_only_the_owner_can_type_the_code_and_the_attempt_is_audited(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    core = core_with(redis_client, namespace, port)
    rid = await core.open_mfa_reset()
    with pytest.raises(NotAllowed):
        await core.service.verify_code(chat("bob"), rid, mails.code_for(rid))
    events = await audit(core, rid)
    assert events[-1]["kind"] == "refused" and events[-1]["actor"] == "bob"
    request = await core.store.get(rid)
    assert request is not None and request.step_up_at is None


async def test_three_failed_step_ups_flag_the_target_and_lock_the_request(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    core = core_with(redis_client, namespace, port)
    rid = await core.open_mfa_reset()
    for round_ in range(3):
        code = mails.code_for(rid)
        for _ in range(4):
            with pytest.raises(BadInput):
                await core.service.verify_code(chat("alice"), rid, wrong(code))
        with pytest.raises(NotAllowed) as failed:
            await core.service.verify_code(chat("alice"), rid, wrong(code))
        if round_ < 2:
            await core.service.new_code(chat("alice"), rid)
    assert "flagged" in str(failed.value)
    assert await core.redis.exists(core.keys.flag("alice"))
    assert any(kind == "alert_security" for kind, *_ in core.notifier.sent)
    with pytest.raises(NotAllowed, match="flagged"):
        await core.service.new_code(chat("alice"), rid)
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    last_failure = [e for e in await audit(core, rid) if e["kind"] == "step_up_failed"][-1]
    assert last_failure["outcome"] == "target_flagged"


async def fail_one_code(core: Core, mails: Inbox, rid: str) -> NotAllowed:
    """Type the request's live code wrong until it is used up: one failed step-up."""
    code = mails.code_for(rid)
    for _ in range(4):
        with pytest.raises(BadInput):
            await core.service.verify_code(chat("alice"), rid, wrong(code))
    with pytest.raises(NotAllowed) as failed:
        await core.service.verify_code(chat("alice"), rid, wrong(code))
    return failed.value


async def test_failures_count_per_target_so_a_fresh_request_does_not_reset_them(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    core = core_with(redis_client, namespace, port)
    first = await core.open_mfa_reset()
    await fail_one_code(core, mails, first)
    await core.service.new_code(chat("alice"), first)
    second_failure = await fail_one_code(core, mails, first)
    assert "flagged" not in str(second_failure)
    assert not await core.redis.exists(core.keys.flag("alice"))

    fresh = await core.open_mfa_reset()  # the attacker starts over on a new request
    third = await fail_one_code(core, mails, fresh)
    assert "flagged" in str(third)
    assert await core.redis.exists(core.keys.flag("alice"))
    failed = [e for e in await audit(core, fresh) if e["kind"] == "step_up_failed"]
    assert [(e["reason"], e["outcome"]) for e in failed] == [
        ("email_code:code_exhausted", "target_flagged")
    ]
    request = await core.store.get(fresh)
    assert request is not None and request.step_up_failures == 3
    assert request.state is RequestState.PENDING
    with pytest.raises(NotAllowed, match="flagged"):
        await core.service.new_code(chat("alice"), fresh)
    alerts = [text for kind, _, text in core.notifier.sent if kind == "alert_security"]
    assert any("failed too often" in text for text in alerts)
    # the count lives in the target's slot and lasts the fraud flag window (7d here)
    ttl_ms = await core.redis.pttl(core.keys.step_up_failures("alice"))
    assert 7 * 86400 * 1000 - 60_000 < ttl_ms <= 7 * 86400 * 1000


def rotated_core(
    redis_client: aioredis.Redis, namespace: str, port: int, key: str, previous: list[str]
) -> Core:
    """A replica as serve builds its step-up: code keys from the audit key ring."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, TWOKEY_AUDIT_KEY=key, TWOKEY_AUDIT_KEYS_PREVIOUS=previous
    )
    options = step_up_options(settings, SecretStr(key), [])
    options = replace(options, mail=SmtpCodeSender("127.0.0.1", port, starttls=False))
    return build_core(
        redis_client,
        namespace,
        policy=step_up_policy(),
        directory=directory(),
        step_up=options,
    )


async def test_a_code_issued_before_an_audit_key_rotation_still_works_after_it(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    old, new = "old-audit-key-" + "o" * 32, "new-audit-key-" + "n" * 32
    before = rotated_core(redis_client, namespace, port, old, [])
    rid = await before.open_mfa_reset()
    code = mails.code_for(rid)

    # the rollout: TWOKEY_AUDIT_KEY=new, TWOKEY_AUDIT_KEYS_PREVIOUS=[old]
    after = rotated_core(redis_client, namespace, port, new, [old])
    with pytest.raises(BadInput, match="Tries left for this code: 4"):
        await after.service.verify_code(chat("alice"), rid, wrong(code))
    passed = await after.service.verify_code(chat("alice"), rid, code)
    assert passed.request.step_up_at is not None

    # codes issued after it are made under the new key only: the old key alone cannot read them
    second = await after.open_mfa_reset()
    fresh = mails.code_for(second)
    retired = rotated_core(redis_client, namespace, port, old, [])
    with pytest.raises(BadInput, match="not right"):
        await retired.service.verify_code(chat("alice"), second, fresh)
    verified = await after.service.verify_code(chat("alice"), second, fresh)
    assert verified.request.step_up_at is not None


async def test_a_code_that_ran_out_is_a_failure_and_a_new_one_can_be_asked_for(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    core = core_with(redis_client, namespace, port)
    rid = await core.open_mfa_reset()
    old = mails.code_for(rid)
    with pytest.raises(BadInput, match="still live"):
        await core.service.new_code(chat("alice"), rid)
    await core.redis.pexpire(core.keys.step_up_code(rid), 1)  # Redis lets the code run out
    await asyncio.sleep(0.05)
    with pytest.raises(BadInput, match="No code is waiting"):
        await core.service.verify_code(chat("alice"), rid, old)

    await core.service.new_code(chat("alice"), rid)
    new = mails.code_for(rid)
    assert new != old and len(mails.messages) == 2
    failures = [e for e in await audit(core, rid) if e["kind"] == "step_up_failed"]
    assert [f["reason"] for f in failures] == ["email_code:timeout"]
    decided = await core.service.verify_code(chat("alice"), rid, new)
    assert decided.request.step_up_at is not None


async def test_a_passed_step_up_expires_like_any_gate(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    core = core_with(redis_client, namespace, port, ttl="1s")
    rid = await core.open_mfa_reset()
    await core.service.verify_code(chat("alice"), rid, mails.code_for(rid))
    await core.service.confirm_owner(chat("alice"), rid)
    await asyncio.sleep(1.2)
    decided = await core.service.approve(chat("carol"), rid)
    assert decided.request.state is RequestState.PENDING
    assert core.connector.changes == []


async def test_no_recovery_email_or_no_mail_server_keeps_the_request_blocked(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    _, port = inbox
    for core in (
        core_with(redis_client, namespace, port, recovery=None),
        core_with(redis_client, namespace + "b", None),
    ):
        rid = await core.open_mfa_reset()
        told = [str(s) for s in core.notifier.sent if s[0] == "notify_requester"]
        assert any("stays blocked" in t and "break-glass" in t for t in told)
        await core.service.confirm_owner(chat("alice"), rid)
        decided = await core.service.approve(chat("carol"), rid)
        assert decided.request.state is RequestState.PENDING
        assert core.connector.changes == []


def free_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on (until a test starts a server)
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RefusingInbox(Inbox):
    """A mail server that answers 451 (try later) while ``refusing``, as a failing relay does."""

    refusing = True

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refusing:
            return "451 4.3.0 Try again later"
        return await super().handle_DATA(server, session, envelope)


def told(core: Core, kind: str) -> list[str]:
    return [str(item) for item in core.notifier.sent if item[0] == kind]


async def assert_nothing_counted(core: Core, rid: str, verifier: str, outages: int) -> None:
    """Codes that never went out: each withdrawn with its audit event, none a failure."""
    events = await audit(core, rid)
    unsent = [e for e in events if e["kind"] == "step_up_not_sent"]
    assert [(e["reason"], e["outcome"]) for e in unsent] == [
        (f"{verifier}:not_sent", "not_sent")
    ] * outages
    assert not [e for e in events if e["kind"] == "step_up_failed"]
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert request.step_up_failures == 0 and request.step_up_at is None
    assert not await core.redis.exists(core.keys.flag(request.target_id))
    assert await core.redis.zcard(core.keys.step_up_failures(request.target_id)) == 0
    assert not await core.redis.exists(core.keys.step_up_code(rid))


async def test_mail_server_down_tells_owner_and_requester_and_changes_nothing(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = core_with(redis_client, namespace, 9)  # nothing listens on the discard port
    rid = await core.open_mfa_reset()
    owner, requester = told(core, "notify_owner"), told(core, "notify_requester")
    assert sum("No code was emailed" in t and "nothing counts against you" in t for t in owner) == 1
    assert sum(f"`verify {rid}` to ask for a new code now" in t for t in owner) == 1
    assert sum("stays blocked" in t and "at once" in t for t in requester) == 1
    assert not any("a***@example.net" in t for t in owner)  # no "we sent" DM
    await assert_nothing_counted(core, rid, "email_code", 1)


async def test_mail_server_down_three_times_counts_nothing_and_a_code_works_once_it_is_back(
    redis_client: aioredis.Redis, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    core = core_with(redis_client, namespace, port)
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        rid = await core.open_mfa_reset()  # nothing listens: not sent, withdrawn
        for _ in range(2):  # asked again at once, twice: no code's life to wait out
            with pytest.raises(Unavailable, match="nothing counts against you"):
                await core.service.new_code(chat("alice"), rid)
        with pytest.raises(BadInput, match="No code is waiting"):  # a guess is no attempt
            await core.service.verify_code(chat("alice"), rid, "12345678")
    await assert_nothing_counted(core, rid, "email_code", 3)
    assert len([t for t in told(core, "notify_requester") if "No code was emailed" in t]) == 3
    assert [e["event"] for e in logs].count("step_up_code_not_sent") == 3

    mails = Inbox()
    controller = Controller(mails, hostname="127.0.0.1", port=port)
    controller.start()  # the mail server is back
    try:
        restarted = await core.service.new_code(chat("alice"), rid)
        assert "on its way" in restarted.message and len(mails.messages) == 1
        code = mails.code_for(rid)
        await core.service.confirm_owner(chat("alice"), rid)
        await core.service.approve(chat("carol"), rid)
        done = await core.service.verify_code(chat("alice"), rid, code)
    finally:
        controller.stop()
    assert done.request.state is RequestState.COMPLETED
    assert [c.request_id for c in core.connector.changes] == [rid]
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]
    said = json.dumps(await audit(core, rid)) + str(logs) + str(ours) + str(core.notifier.sent)
    assert code not in said  # (aiosmtpd's own debug log, the stand-in server's, does hold it)


async def test_a_refusing_mail_server_is_not_sent_and_counts_nothing(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    mails = RefusingInbox()
    port = free_port()
    controller = Controller(mails, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        core = core_with(redis_client, namespace, port)
        rid = await core.open_mfa_reset()
        await assert_nothing_counted(core, rid, "email_code", 1)
        mails.refusing = False
        await core.service.new_code(chat("alice"), rid)
        decided = await core.service.verify_code(chat("alice"), rid, mails.code_for(rid))
    finally:
        controller.stop()
    assert decided.request.step_up_at is not None


async def test_only_the_code_whose_sending_failed_is_withdrawn(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    core = core_with(redis_client, namespace, port)
    rid = await core.open_mfa_reset()
    request = await core.store.get(rid)
    assert request is not None
    stale = await core.store.withdraw_unsent_code(
        request, "email_code", "0" * 64, flag_window_s=3600
    )
    assert (stale.code, stale.detail) == (GateCode.NOOP, "stale")
    assert await core.redis.exists(core.keys.step_up_code(rid))
    assert "step_up_not_sent" not in [e["kind"] for e in await audit(core, rid)]
    decided = await core.service.verify_code(chat("alice"), rid, mails.code_for(rid))
    assert decided.request.step_up_at is not None


# ---- start-up: email_code needs a mail server -----------------------------------------------


def test_start_up_refuses_email_code_without_a_mail_server() -> None:
    policy = load_policy_text(step_up_policy(), "p.yaml")
    with pytest.raises(StartupError, match="TWOKEY_SMTP_HOST") as refused:
        check_code_senders(policy, StepUpOptions(code_key=CODE_KEY))
    assert "email_code" in str(refused.value)
    mail = SmtpCodeSender("127.0.0.1", 25)
    check_code_senders(policy, StepUpOptions(code_key=CODE_KEY, mail=mail))
    check_code_senders(policy, StepUpOptions(code_key=CODE_KEY), simulated_mailbox=True)
    check_code_senders(load_policy_text(policy_text()), StepUpOptions(code_key=CODE_KEY))


def email_settings(tmp_path: Path, redis_url: str, namespace: str, **more: Any) -> Settings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(step_up_policy())
    return Settings(
        _env_file=None,
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_AUDIT_KEY="step-up-test-audit-key-long-enough",
        TWOKEY_ACCEPT_EVICTION_RISK=True,
        TWOKEY_POLICY=str(policy),
        TWOKEY_DATA_DIR=str(tmp_path / "data"),
        **more,
    )


@pytest.mark.parametrize(
    "more", [{"TWOKEY_PLAYGROUND": False}, {"HOST": "0.0.0.0"}], ids=["no-playground", "public"]
)
async def test_twokey_refuses_to_start_with_email_code_and_no_mail_server(
    tmp_path: Path, redis_url: str, namespace: str, more: dict[str, Any]
) -> None:
    with pytest.raises(StartupError, match="set TWOKEY_SMTP_HOST"):
        await build_runtime(email_settings(tmp_path, redis_url, namespace, **more))


async def test_the_playground_mailbox_or_a_mail_server_lets_it_start(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    """On loopback with no chat credentials the playground mounts and gives codes its simulated
    mailbox, so the same policy starts; so does any deployment with TWOKEY_SMTP_HOST set."""
    for more in ({}, {"TWOKEY_PLAYGROUND": False, "TWOKEY_SMTP_HOST": "127.0.0.1"}):
        runtime = await build_runtime(email_settings(tmp_path, redis_url, namespace, **more))
        await runtime.close()


async def test_asking_for_a_code_once_verified_sends_nothing(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    core = core_with(redis_client, namespace, port)
    rid = await core.open_mfa_reset()
    await core.service.verify_code(chat("alice"), rid, mails.code_for(rid))
    again = await core.service.new_code(chat("alice"), rid)
    assert again.changed is False and "already verified" in again.message
    assert len(mails.messages) == 1
