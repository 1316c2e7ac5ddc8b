"""Step-up by Okta Verify push: the Okta connector against the stand-in org that checks every
request against Okta's published spec (specs/okta), then end to end through the service."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.connectors.okta import OktaConnector, build
from app.connectors.sandbox import SandboxDirectory
from app.domain.errors import NotAllowed
from app.domain.models import Action, Principal, RequestState
from app.ports import PushOutcome
from app.service import StepUpOptions
from app.store.keys import shard_of_request
from tests.connectors import RecordingSleep, request_for
from tests.connectors.okta_standin import OktaStandIn, load_okta_spec, okta_user
from tests.helpers import build_core, chat, policy_text

API_TOKEN = "00TESTssws-" + "push" * 8
ALICE_OKTA = okta_user("00ualice0001", "alice@example.com", "Alice", "Adams")
ALICE = Principal(id="alice", email="alice@example.com", display_name="Alice Adams")


@pytest.fixture
async def okta() -> AsyncIterator[OktaStandIn]:
    standin = OktaStandIn(load_okta_spec(), api_token=API_TOKEN)
    standin.add_user(json.loads(json.dumps(ALICE_OKTA)))
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()
    assert standin.violations == [], "requests outside Okta's documented API"


@pytest.fixture
async def connector(
    okta: OktaStandIn, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[OktaConnector, RecordingSleep]]:
    monkeypatch.setenv("OKTA_API_TOKEN", API_TOKEN)
    sleep = RecordingSleep()
    built = build(
        {"type": "okta", "org_url": okta.base_url, "api_token_env": "OKTA_API_TOKEN"},
        sleep=sleep,
    )
    try:
        yield built, sleep
    finally:
        await built.aclose()


@pytest.mark.parametrize(
    ("answers", "outcome"),
    [
        (["WAITING", "WAITING", "SUCCESS"], PushOutcome.APPROVED),
        (["WAITING", "REJECTED"], PushOutcome.REJECTED),
        (["TIMEOUT"], PushOutcome.TIMEOUT),
        (["WAITING"], PushOutcome.TIMEOUT),  # still waiting when our own wait ran out
    ],
)
async def test_a_push_is_issued_and_polled_as_okta_documents(
    okta: OktaStandIn,
    connector: tuple[OktaConnector, RecordingSleep],
    answers: list[str],
    outcome: PushOutcome,
) -> None:
    pusher, sleep = connector
    okta.enroll_push("00ualice0001", answers)
    request = request_for(Action.RESET_PASSWORD, ALICE)
    result = await pusher.push_step_up(ALICE, request, timeout_s=20)
    assert result.outcome is outcome
    assert okta.pushes_sent == ["00ualice0001"]
    issued = okta.calls("verifyFactor")
    assert len(issued) == 1 and issued[0].body == b""
    polls = okta.calls("getFactorTransactionStatus")
    assert 1 <= len(polls) <= 5 and sleep.waits == [4.0] * len(polls)  # 20 s at the 4 s pace


async def test_no_active_push_enrolment_sends_nothing(
    okta: OktaStandIn, connector: tuple[OktaConnector, RecordingSleep]
) -> None:
    pusher, _ = connector
    okta.enroll_push("00ualice0001", ["SUCCESS"], status="PENDING_ACTIVATION")
    result = await pusher.push_step_up(ALICE, request_for(Action.UNLOCK, ALICE), timeout_s=20)
    assert result.outcome is PushOutcome.UNAVAILABLE and "no active Okta Verify" in result.detail
    assert okta.calls("verifyFactor") == []


async def test_a_poll_link_elsewhere_is_never_followed(
    okta: OktaStandIn, connector: tuple[OktaConnector, RecordingSleep]
) -> None:
    pusher, _ = connector
    okta.enroll_push("00ualice0001", ["SUCCESS"])
    okta.answer_next(
        "verifyFactor",
        201,
        {
            "factorResult": "WAITING",
            "_links": {"poll": {"href": "https://evil.example/api/v1/steal"}},
        },
    )
    result = await pusher.push_step_up(ALICE, request_for(Action.UNLOCK, ALICE), timeout_s=20)
    assert result.outcome is PushOutcome.UNAVAILABLE
    assert okta.calls("getFactorTransactionStatus") == []


# ---- end to end through the service -----------------------------------------------------------

PUSH_TIER = (
    "    step_up:\n      owner: [okta_push, email_code]\n      actions: {reset-mfa: [email_code]}\n"
)


def push_policy() -> str:
    return (
        policy_text()
        .replace(
            "  standard:\n    label: Standard\n", "  standard:\n    label: Standard\n" + PUSH_TIER
        )
        .replace(
            "  strictest:\n    label: Flagged target\n",
            "  strictest:\n    label: Flagged target\n" + PUSH_TIER,
        )
    )


async def events(core: Any, rid: str) -> list[dict[str, Any]]:
    entries = await core.redis.xrange(core.keys.audit(shard_of_request(rid)))
    found = [json.loads(fields["e"]) for _, fields in entries]
    return [e for e in found if e["rid"] == rid]


async def test_the_owner_approves_the_push_and_only_then_the_change_runs(
    okta: OktaStandIn,
    connector: tuple[OktaConnector, RecordingSleep],
    redis_client: aioredis.Redis,
    namespace: str,
) -> None:
    pusher, _ = connector
    okta.enroll_push("00ualice0001", ["WAITING", "SUCCESS"])
    core = build_core(
        redis_client,
        namespace,
        policy=push_policy(),
        directory=SandboxDirectory.example(),
        step_up=StepUpOptions(code_key=b"p" * 32, push={"okta_push": pusher}),
    )
    opened = await core.service.open(
        chat("bob"), chat("alice"), "reset-password", "INC-1234", "forgotten-password"
    )
    rid = opened.request.id
    owner_dm = [t for what, _, t in core.notifier.sent if what == "notify_owner"]
    assert any("approve the push from Okta Verify on your phone" in t for t in owner_dm)
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    await core.service.settle_pushes()

    done = await core.store.get(rid)
    assert done is not None and done.state is RequestState.COMPLETED
    kinds = [e["kind"] for e in await events(core, rid)]
    assert kinds.index("step_up_passed") < kinds.index("execution_started")
    passed = next(e for e in await events(core, rid) if e["kind"] == "step_up_passed")
    assert (passed["actor"], passed["via"], passed["reason"]) == ("alice", "okta_push", "okta_push")


async def test_a_push_is_never_sent_for_reset_mfa_or_a_lost_device(
    okta: OktaStandIn,
    connector: tuple[OktaConnector, RecordingSleep],
    redis_client: aioredis.Redis,
    namespace: str,
) -> None:
    pusher, _ = connector
    okta.enroll_push("00ualice0001", ["SUCCESS"])
    core = build_core(
        redis_client,
        namespace,
        policy=push_policy(),
        directory=SandboxDirectory.example(),
        step_up=StepUpOptions(code_key=b"p" * 32, push={"okta_push": pusher}),
    )
    mfa = await core.open_mfa_reset()  # reset-mfa: its own list, without the push
    lost = await core.service.open(
        chat("bob"), chat("alice"), "reset-password", "INC-1235", "lost-device"
    )
    await core.service.settle_pushes()
    assert okta.pushes_sent == []
    for rid in (mfa, lost.request.id):
        request = await core.store.get(rid)
        assert request is not None and "okta_push" not in request.plan.owner_step_up


async def test_a_rejected_push_keeps_it_blocked_and_three_flag_the_account(
    okta: OktaStandIn,
    connector: tuple[OktaConnector, RecordingSleep],
    redis_client: aioredis.Redis,
    namespace: str,
) -> None:
    pusher, _ = connector
    okta.enroll_push("00ualice0001", ["REJECTED"])
    core = build_core(
        redis_client,
        namespace,
        policy=push_policy(),
        directory=SandboxDirectory.example(),
        step_up=StepUpOptions(code_key=b"p" * 32, push={"okta_push": pusher}),
    )
    opened = await core.service.open(chat("bob"), chat("alice"), "unlock", "INC-1234", "locked-out")
    rid = opened.request.id
    await core.service.settle_pushes()
    for _ in range(2):
        await core.service.new_code(chat("alice"), rid)  # `verify TK-...`: push again
        await core.service.settle_pushes()
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert request.step_up_failures == 3 and request.step_up_locked
    assert await core.redis.exists(core.keys.flag("alice"))
    alerts = [t for what, _, t in core.notifier.sent if what == "alert_security"]
    assert any("rejected the verification push" in t for t in alerts)
    with pytest.raises(NotAllowed, match="flagged"):
        await core.service.new_code(chat("alice"), rid)
    assert len(okta.pushes_sent) == 3


def test_serve_wires_the_okta_connector_as_the_push_verifier(
    connector: tuple[OktaConnector, RecordingSleep],
) -> None:
    from pydantic import SecretStr

    from app.bootstrap import step_up_options
    from app.settings import Settings

    pusher, _ = connector
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    options = step_up_options(settings, SecretStr("k" * 40), [pusher])
    assert options.push == {"okta_push": pusher} and options.mail is None
    assert options.code_key == step_up_options(settings, SecretStr("k" * 40), []).code_key
    assert options.code_key != step_up_options(settings, SecretStr("j" * 40), []).code_key


# ---- approver step-up: an approval counts once its approver passed a fresh Okta push ----------

CAROL_OKTA = okta_user("00ucarol0003", "carol@example.com", "Carol", "Chen")


def approver_policy(approval_ttl: str = "30m") -> str:
    return policy_text(approval_ttl=approval_ttl).replace(
        "  standard:\n    label: Standard\n",
        "  standard:\n    label: Standard\n    step_up: {approver: [okta_push]}\n",
    )


def approver_core(
    redis_client: aioredis.Redis, namespace: str, pusher: OktaConnector | None, ttl: str = "30m"
) -> Any:
    return build_core(
        redis_client,
        namespace,
        policy=approver_policy(ttl),
        directory=SandboxDirectory.example(),
        step_up=StepUpOptions(
            code_key=b"a" * 32, push={"okta_push": pusher} if pusher is not None else {}
        ),
    )


async def test_an_approval_counts_once_the_approver_approved_the_push(
    okta: OktaStandIn,
    connector: tuple[OktaConnector, RecordingSleep],
    redis_client: aioredis.Redis,
    namespace: str,
) -> None:
    pusher, _ = connector
    okta.add_user(json.loads(json.dumps(CAROL_OKTA)))
    okta.enroll_push("00ucarol0003", ["WAITING", "SUCCESS"])
    core = approver_core(redis_client, namespace, pusher)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    decided = await core.service.approve(chat("carol"), rid)
    assert "approve the push from Okta Verify" in decided.message
    # told privately too: a face may have answered the press with the card alone
    told = [t for _, r, t in core.notifier.said("notify_person") if r == rid]
    assert told == [f"carol: {decided.message}"]
    assert decided.request.state is RequestState.PENDING
    assert [a.approver_id for a in decided.request.approvals_unverified] == ["carol"]
    assert decided.request.approvals == ()
    again = await core.service.approve(chat("carol"), rid)  # no second push while one waits
    assert again.changed is False
    await core.service.settle_pushes()

    done = await core.store.get(rid)
    assert done is not None and done.state is RequestState.COMPLETED
    assert okta.pushes_sent == ["00ucarol0003"]
    kinds = [e["kind"] for e in await events(core, rid)]
    assert kinds[kinds.index("approved_unverified") :] == [
        "approved_unverified",
        "approver_verified",
        "execution_started",
        "executed",
    ]


async def test_a_rejected_approver_push_drops_the_approval(
    okta: OktaStandIn,
    connector: tuple[OktaConnector, RecordingSleep],
    redis_client: aioredis.Redis,
    namespace: str,
) -> None:
    pusher, _ = connector
    okta.add_user(json.loads(json.dumps(CAROL_OKTA)))
    okta.enroll_push("00ucarol0003", ["REJECTED"])
    core = approver_core(redis_client, namespace, pusher)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    await core.service.settle_pushes()
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert request.approvals == () and request.approvals_unverified == ()
    told = [t for what, _, t in core.notifier.sent if what == "notify_person"]
    assert any(t.startswith("carol: ") and "denied on your phone" in t for t in told)
    assert core.connector.changes == []


async def test_an_approver_push_answered_after_the_approval_expired_does_not_count(
    okta: OktaStandIn,
    redis_client: aioredis.Redis,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OKTA_API_TOKEN", API_TOKEN)
    slow = build(  # real sleeps: 2 polls a second apart outlive a 1 s approval
        {
            "type": "okta",
            "org_url": okta.base_url,
            "api_token_env": "OKTA_API_TOKEN",
            "push_poll_interval": 1.0,
        }
    )
    okta.add_user(json.loads(json.dumps(CAROL_OKTA)))
    okta.enroll_push("00ucarol0003", ["WAITING", "SUCCESS"])
    try:
        core = approver_core(redis_client, namespace, slow, ttl="1s")
        rid = await core.open_mfa_reset()
        await core.service.confirm_owner(chat("alice"), rid)
        await core.service.approve(chat("carol"), rid)
        await core.service.settle_pushes()
    finally:
        await slow.aclose()
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert request.approvals == ()
    failed = [e for e in await events(core, rid) if e["kind"] == "approver_step_up_failed"]
    assert [e["reason"] for e in failed] == ["late"]
    assert core.connector.changes == []


async def test_without_a_push_verifier_an_approval_needing_one_never_counts(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = approver_core(redis_client, namespace, None)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    with pytest.raises(NotAllowed, match="does not count"):
        await core.service.approve(chat("carol"), rid)
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert request.approvals == () and request.approvals_unverified == ()
