"""Step-up verification of the owner by a one-time code to their recovery email, end to end:
the service on a real Redis, the code through a real SMTP server (aiosmtpd) on this machine."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from app.bootstrap import step_up_options
from app.connectors.sandbox import SandboxDirectory
from app.domain.errors import BadInput, NotAllowed
from app.domain.models import Principal, RequestState
from app.mail import SmtpCodeSender
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


async def test_mail_server_down_tells_owner_and_requester_and_changes_nothing(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = core_with(redis_client, namespace, 9)  # nothing listens on the discard port
    rid = await core.open_mfa_reset()
    told = [str(s) for s in core.notifier.sent if s[0] in ("notify_owner", "notify_requester")]
    assert sum("could not be sent" in t for t in told) == 2
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING


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
