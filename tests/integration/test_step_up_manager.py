"""Step-up by the owner's manager of record, end to end through the service on a real Redis:
the manager attests they confirmed it with the owner by phone or in person; never the
requester or an approver of the same request."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from app.connectors.sandbox import SandboxDirectory
from app.domain.errors import BadInput, NotAllowed, SeparationOfDuties
from app.domain.models import Principal, RequestState
from app.mail import SmtpCodeSender
from app.service import StepUpOptions
from app.store.keys import shard_of_request
from tests.helpers import Core, build_core, chat, policy_text
from tests.smtp_inbox import Inbox


def manager_policy(verifiers: str = "[manager]") -> str:
    return (
        policy_text()
        .replace(
            "  standard:\n    label: Standard\n",
            f"  standard:\n    label: Standard\n    step_up: {{owner: {verifiers}}}\n",
        )
        .replace(
            "  strictest:\n    label: Flagged target\n",
            f"  strictest:\n    label: Flagged target\n    step_up: {{owner: {verifiers}}}\n",
        )
    )


def directory(manager: str = "dave") -> SandboxDirectory:
    people: list[Principal] = [
        p.model_copy(update={"manager_id": manager}) if p.id == "alice" else p
        for p in SandboxDirectory.example().principals
    ]
    return SandboxDirectory(people)


def core_with(
    redis_client: aioredis.Redis,
    namespace: str,
    *,
    manager: str = "dave",
    verifiers: str = "[manager]",
    port: int | None = None,
) -> Core:
    mail = None if port is None else SmtpCodeSender("127.0.0.1", port, starttls=False)
    return build_core(
        redis_client,
        namespace,
        policy=manager_policy(verifiers),
        directory=directory(manager),
        step_up=StepUpOptions(code_key=b"m" * 32, mail=mail),
    )


async def audit(core: Core, request_id: str) -> list[dict[str, object]]:
    entries = await core.redis.xrange(core.keys.audit(shard_of_request(request_id)))
    events = [json.loads(fields["e"]) for _, fields in entries]
    return [e for e in events if e["rid"] == request_id]


def said(core: Core, kind: str) -> list[str]:
    return [text for what, _, text in core.notifier.sent if what == kind]


async def test_the_manager_attests_and_only_then_the_change_runs(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = core_with(redis_client, namespace)
    rid = await core.open_mfa_reset()
    assert said(core, "ask_manager") == ["dave"]  # a card with Yes / No (app/channels/attest.py)
    assert any("your manager Dave Diaz" in t for t in said(core, "notify_owner"))

    await core.service.confirm_owner(chat("alice"), rid)
    pending = await core.service.approve(chat("carol"), rid)
    assert pending.request.state is RequestState.PENDING and core.connector.changes == []

    done = await core.service.attest(chat("dave"), rid, confirmed=True)
    assert done.request.state is RequestState.COMPLETED
    passed = next(e for e in await audit(core, rid) if e["kind"] == "step_up_passed")
    assert (passed["actor"], passed["role"], passed["reason"]) == ("dave", "manager", "manager")


async def test_the_manager_may_not_also_approve(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = core_with(redis_client, namespace)  # dave is a helpdesk lead: an approver too
    rid = await core.open_mfa_reset()
    with pytest.raises(SeparationOfDuties):
        await core.service.approve(chat("dave"), rid)


async def test_an_approver_of_the_request_may_not_attest(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = core_with(redis_client, namespace, manager="carol")
    rid = await core.open_mfa_reset()
    # carol is named as the manager: she may not approve, and nobody else may attest for her
    with pytest.raises(SeparationOfDuties):
        await core.service.approve(chat("carol"), rid)
    with pytest.raises(NotAllowed):
        await core.service.attest(chat("dave"), rid, confirmed=True)
    refused = [e for e in await audit(core, rid) if e["kind"] == "refused"]
    assert [(e["actor"], e["reason"]) for e in refused] == [
        ("carol", "sod:approve"),
        ("dave", "not_owner:attest"),
    ]


async def test_a_manager_who_is_the_requester_is_never_asked(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = core_with(redis_client, namespace, manager="bob")  # bob opens the request
    rid = await core.open_mfa_reset()
    assert said(core, "ask_manager") == []
    told = " ".join(said(core, "notify_requester"))
    assert "stays blocked" in told and "part of this request" in told
    with pytest.raises(NotAllowed):
        await core.service.attest(chat("bob"), rid, confirmed=True)
    await core.service.confirm_owner(chat("alice"), rid)
    blocked = await core.service.approve(chat("carol"), rid)
    assert blocked.request.state is RequestState.PENDING and core.connector.changes == []


async def test_when_the_manager_cannot_attest_the_next_verifier_is_used(
    redis_client: aioredis.Redis, namespace: str, inbox: tuple[Inbox, int]
) -> None:
    mails, port = inbox
    core = core_with(
        redis_client, namespace, manager="bob", verifiers="[manager, email_code]", port=port
    )
    rid = await core.open_mfa_reset()
    assert said(core, "ask_manager") == []
    request = await core.store.get(rid)
    assert request is not None and request.step_up_verifier == "email_code"
    assert mails.code_for(rid)


async def test_a_manager_who_says_no_keeps_it_blocked_and_alerts_security(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = core_with(redis_client, namespace)
    rid = await core.open_mfa_reset()
    with pytest.raises(NotAllowed, match="did not confirm"):
        await core.service.attest(chat("dave"), rid, confirmed=False)
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert request.step_up_failures == 1 and request.step_up_at is None
    assert any("did not confirm" in t for t in said(core, "alert_security"))
    with pytest.raises(BadInput, match="not waiting"):
        await core.service.attest(chat("dave"), rid, confirmed=True)


def test_the_sandbox_directory_refuses_a_manager_who_is_nobody_here() -> None:
    from app.connectors.sandbox import DirectoryFileError

    text = """
version: 1
people:
  - {id: alice, email: alice@example.com, manager: dave}
  - {id: erin, email: erin@example.com, manager: erin}
"""
    with pytest.raises(DirectoryFileError) as caught:
        SandboxDirectory.from_yaml(text)
    assert "field manager" in str(caught.value) and "'dave'" in str(caught.value)
    assert "people[1] 'erin', field manager" in str(caught.value)
    ok = SandboxDirectory.from_yaml(
        text.replace("manager: dave", "manager: erin").replace(
            "  - {id: erin, email: erin@example.com, manager: erin}\n",
            "  - {id: erin, email: erin@example.com}\n",
        )
    )
    assert ok.principals[0].manager_id == "erin"


async def test_an_unreachable_manager_is_never_promised_to_call(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """No chat reaches the manager: the owner is not told to expect their call (a promised
    call that never comes is one a caller could fake), the requester hears why it is blocked,
    and once the manager is reachable the owner's `verify` asks them again."""
    core = core_with(redis_client, namespace)
    core.notifier.unreachable.add("dave")
    rid = await core.open_mfa_reset()
    assert said(core, "ask_manager") == ["dave"]
    to_owner = said(core, "notify_owner")
    assert not any("Expect their call" in t for t in to_owner), to_owner
    assert any("nobody is calling you about it yet" in t for t in to_owner), to_owner
    assert any(
        "could not reach them in chat" in t and "stays blocked" in t
        for t in said(core, "notify_requester")
    )
    withdrawn = [e for e in await audit(core, rid) if e["kind"] == "step_up_not_sent"]
    assert [(e["reason"], e["outcome"]) for e in withdrawn] == [("manager:not_reached", "not_sent")]
    await core.service.confirm_owner(chat("alice"), rid)
    pending = await core.service.approve(chat("carol"), rid)
    assert pending.request.state is RequestState.PENDING and core.connector.changes == []

    core.notifier.unreachable.clear()
    await core.service.new_code(chat("alice"), rid)
    assert said(core, "ask_manager") == ["dave", "dave"]
    assert any("Expect their call" in t for t in said(core, "notify_owner"))
    done = await core.service.attest(chat("dave"), rid, confirmed=True)
    assert done.request.state is RequestState.COMPLETED


@pytest.mark.parametrize(
    ("who", "change", "words"),
    [
        ("dave", {"disabled": True}, "disabled in the directory"),
        ("alice", {"manager_id": "erin"}, "no longer the owner's manager of record"),
    ],
    ids=["manager-disabled", "manager-no-longer-theirs"],
)
async def test_an_attestation_stops_counting_when_the_manager_loses_standing(
    redis_client: aioredis.Redis,
    namespace: str,
    who: str,
    change: dict[str, object],
    words: str,
) -> None:
    """Invariant 3 for the step-up: dave attested, then left (or alice moved to another
    manager) before the change ran: his attestation is withdrawn at the claim, nothing runs,
    and alice verifies again (her manager of record now is asked)."""
    from tests.integration.test_execution_faults import LiveDirectory, events_of

    directory = LiveDirectory()
    directory.change("alice", manager_id="dave")
    core = build_core(
        redis_client,
        namespace,
        policy=manager_policy(),
        directory=directory,
        step_up=StepUpOptions(code_key=b"m" * 32),
    )
    rid = await core.open_mfa_reset()
    await core.service.attest(chat("dave"), rid, confirmed=True)
    await core.service.confirm_owner(chat("alice"), rid)
    directory.change(who, **change)
    await core.service.approve(chat("carol"), rid)  # the last gate: it would now run

    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert request.step_up_at is None and core.connector.changes == []
    assert words in request.gate_note
    assert "step_up_withdrawn" in await events_of(core, rid)
