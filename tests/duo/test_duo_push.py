"""Step-up by Duo Push against a local Duo Auth API that checks Duo's request signing, then end
to end through the service on a real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from app.connectors.sandbox import SandboxDirectory
from app.domain.models import Action, Principal, RequestState
from app.duo import DuoPush
from app.ports import PushOutcome
from app.service import StepUpOptions
from app.store.keys import shard_of_request
from tests.connectors import RecordingSleep, request_for
from tests.duo.duo_standin import API_HOST, IKEY, SKEY, DuoStandIn
from tests.helpers import Core, build_core, chat, policy_text

ALICE = Principal(id="alice", email="alice@example.com", display_name="Alice Adams")


@pytest.fixture
async def duo() -> AsyncIterator[DuoStandIn]:
    standin = DuoStandIn()
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()


def pusher(duo: DuoStandIn, skey: str = SKEY) -> DuoPush:
    return DuoPush(API_HOST, IKEY, SecretStr(skey), base_url=duo.base_url, sleep=RecordingSleep())


@pytest.mark.parametrize(
    ("answers", "outcome"),
    [
        (["waiting", "allow"], PushOutcome.APPROVED),
        (["waiting", "deny"], PushOutcome.REJECTED),
        (["timeout"], PushOutcome.TIMEOUT),
        (["waiting"], PushOutcome.TIMEOUT),
    ],
)
async def test_a_signed_async_push_is_polled_until_answered(
    duo: DuoStandIn, answers: list[str], outcome: PushOutcome
) -> None:
    duo.enroll("alice@example.com", answers)
    verifier = pusher(duo)
    try:
        result = await verifier.push_step_up(ALICE, request_for(Action.UNLOCK, ALICE), 30)
    finally:
        await verifier.aclose()
    assert result.outcome is outcome
    assert duo.refused == []
    [sent] = duo.pushes
    assert (sent["factor"], sent["device"], sent["async"]) == ("push", "auto", "1")
    assert "request=TK-" in sent["pushinfo"]


async def test_a_wrong_secret_key_is_refused_by_duo_and_passes_nothing(duo: DuoStandIn) -> None:
    duo.enroll("alice@example.com", ["allow"])
    verifier = pusher(duo, skey="not-the-secret-key-" + "x" * 21)
    try:
        result = await verifier.push_step_up(ALICE, request_for(Action.UNLOCK, ALICE), 30)
    finally:
        await verifier.aclose()
    assert result.outcome is PushOutcome.UNAVAILABLE
    assert duo.refused == ["/auth/v2/auth: bad signature"] and duo.pushes == []


def duo_core(redis_client: aioredis.Redis, namespace: str, verifier: DuoPush) -> Core:
    """The service with Duo Push first for the standard tier (email after it)."""
    policy = (
        policy_text()
        .replace(
            "  standard:\n    label: Standard\n",
            "  standard:\n    label: Standard\n    step_up: {owner: [duo_push, email_code], "
            "actions: {reset-mfa: [email_code]}}\n",
        )
        .replace(
            "  strictest:\n    label: Flagged target\n",
            "  strictest:\n    label: Flagged target\n    step_up: {owner: [email_code]}\n",
        )
    )
    return build_core(
        redis_client,
        namespace,
        policy=policy,
        directory=SandboxDirectory.example(),
        step_up=StepUpOptions(code_key=b"d" * 32, push={"duo_push": verifier}),
    )


async def test_the_owner_approves_a_duo_push_and_then_the_change_runs(
    duo: DuoStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    duo.enroll("alice@example.com", ["waiting", "allow"])
    verifier = pusher(duo)
    core = duo_core(redis_client, namespace, verifier)
    try:
        opened = await core.service.open(
            chat("bob"), chat("alice"), "unlock", "INC-1234", "locked-out"
        )
        rid = opened.request.id
        told = [t for what, _, t in core.notifier.sent if what == "notify_owner"]
        assert any("approve the push from Duo Mobile on your phone" in t for t in told)
        await core.service.confirm_owner(chat("alice"), rid)
        await core.service.approve(chat("carol"), rid)
        await core.service.settle_pushes()
    finally:
        await verifier.aclose()
    done = await core.store.get(rid)
    assert done is not None and done.state is RequestState.COMPLETED
    entries = await core.redis.xrange(core.keys.audit(shard_of_request(rid)))
    passed = [
        json.loads(f["e"])
        for _, f in entries
        if json.loads(f["e"])["rid"] == rid and json.loads(f["e"])["kind"] == "step_up_passed"
    ]
    assert [(e["actor"], e["reason"]) for e in passed] == [("alice", "duo_push")]
    assert duo.refused == []


async def test_a_push_still_waiting_when_twokey_stops_counts_for_nothing_and_can_be_asked_again(
    duo: DuoStandIn, redis_client: aioredis.Redis, namespace: str
) -> None:
    """The replica polling a push stops before the owner answers: the push is recorded as
    abandoned (no failure against the owner), both people are told, and the owner gets a new
    push at once, instead of waiting out a push nobody polls any more."""
    duo.enroll("alice@example.com", ["waiting"])
    verifier = DuoPush(API_HOST, IKEY, SecretStr(SKEY), base_url=duo.base_url, poll_interval=0.05)
    core = duo_core(redis_client, namespace, verifier)
    try:
        opened = await core.service.open(
            chat("bob"), chat("alice"), "unlock", "INC-1234", "locked-out"
        )
        rid = opened.request.id
        await core.service.stop_pushes(0.2)  # the owner has not answered yet

        request = await core.store.get(rid)
        assert request is not None and request.state is RequestState.PENDING
        assert request.step_up_failures == 0 and request.step_up_at is None
        entries = await core.redis.xrange(core.keys.audit(shard_of_request(rid)))
        events = [json.loads(f["e"]) for _, f in entries if json.loads(f["e"])["rid"] == rid]
        failed = [e for e in events if e["kind"] == "step_up_failed"]
        assert [(e["reason"], e["outcome"]) for e in failed] == [
            ("duo_push:unavailable", "unavailable")
        ]
        owner = [t for what, _, t in core.notifier.sent if what == "notify_owner"]
        assert any("no longer counts" in t and f"verify {rid}" in t for t in owner), owner
        requester = [t for what, _, t in core.notifier.sent if what == "notify_requester"]
        assert any("counts for nothing" in t for t in requester), requester

        duo.enroll("alice@example.com", ["allow"])
        again = await core.service.new_code(chat("alice"), rid)
        assert again.request.step_up_verifier == "duo_push"
        await core.service.confirm_owner(chat("alice"), rid)
        await core.service.approve(chat("carol"), rid)
        await core.service.settle_pushes()
    finally:
        await verifier.aclose()
    assert len(duo.pushes) == 2
    done = await core.store.get(rid)
    assert done is not None and done.state is RequestState.COMPLETED
