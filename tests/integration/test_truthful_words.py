"""What people are told must be true (issue 9): what a request waits for after a confirmation
lapsed, the risk statement on a flagged account, log events named for what happened, and
refused attempts that reach the audit trail and, when repeated, the security team."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from app.channels.slack import blocks
from app.channels.teams import cards
from app.domain.errors import NotAllowed, SeparationOfDuties
from app.domain.models import Action, RequestState, Risk
from app.store.keys import shard_of_request
from tests.helpers import Core, build_core, chat, policy_text


@pytest.fixture
def core(redis_client: aioredis.Redis, namespace: str) -> Core:
    return build_core(redis_client, namespace)


async def audit_events(core: Core, rid: str) -> list[dict[str, object]]:
    entries = await core.redis.xrange(core.keys.audit(shard_of_request(rid)))
    events = [json.loads(fields["e"]) for _, fields in entries]
    return [e for e in events if e["rid"] == rid]


async def test_after_a_lapsed_confirmation_the_agent_hears_what_is_missing_and_the_owner_is_asked(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, policy=policy_text(approval_ttl="1s"))
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await asyncio.sleep(1.2)  # the confirmation lapses before the approval comes in
    await core.service.approve(chat("carol"), rid)

    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    told = [t for _, r, t in core.notifier.said("notify_requester") if r == rid]
    assert (
        told[-1] == f"Request {rid}: Carol Chen approved it; it still waits for owner confirmation."
    )
    assert not any("nothing" in t for t in told)
    asked = [t for _, r, t in core.notifier.said("notify_owner") if r == rid]
    assert any("lapsed" in t and "Yes, it was me" in t for t in asked)


async def test_a_flagged_account_is_called_flagged_not_privileged(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace)
    first = await core.open_mfa_reset()
    await core.service.reject_by_owner(chat("alice"), first)  # flags alice (not an admin)
    again = await core.service.open(
        chat("heidi"), chat("alice"), Action.UNLOCK.value, "INC-1300", "locked-out"
    )
    request = again.request
    assert request.plan.risks == (Risk.FLAGGED,)

    slack_text = json.dumps(blocks.tier_banner(request))
    teams_text = json.dumps(cards.approval_card(request, request.created_at))
    for text in (slack_text, teams_text):
        assert "FLAGGED" in text
        assert "admin rights" not in text and "PRIVILEGED" not in text

    admin = await core.service.open(
        chat("bob"), chat("grace"), Action.UNLOCK.value, "INC-1301", "locked-out"
    )
    assert admin.request.plan.risks == (Risk.PRIVILEGED_ACCOUNT,)
    assert "admin rights" in json.dumps(blocks.tier_banner(admin.request))


async def test_log_events_are_named_for_what_happened(core: Core) -> None:
    rid = await core.open_mfa_reset()
    with capture_logs() as logs:
        await core.service.reject_by_owner(chat("alice"), rid)
    names = [entry["event"] for entry in logs]
    assert "owner_rejected" in names and "gate_passed" not in names

    other = await core.open_mfa_reset(target="alice", requester="heidi")
    with capture_logs() as logs:
        await core.service.approve(chat("erin"), other)
    assert "approved" in [entry["event"] for entry in logs]


async def test_refused_attempts_are_audited_and_repeated_ones_alert_security(
    core: Core,
) -> None:
    rid = await core.open_mfa_reset()
    with pytest.raises(SeparationOfDuties):
        await core.service.approve(chat("bob"), rid)  # his own request
    with pytest.raises(NotAllowed):
        await core.service.confirm_owner(chat("bob"), rid)  # answering for alice
    assert not any("refused" in t for _, _, t in core.notifier.said("alert_security"))
    with pytest.raises(SeparationOfDuties):
        await core.service.deny(chat("bob"), rid, "no")

    refused = [e for e in await audit_events(core, rid) if e["kind"] == "refused"]
    assert [(e["actor"], e["reason"]) for e in refused] == [
        ("bob", "sod:approve"),
        ("bob", "not_owner:confirm"),
        ("bob", "sod:deny"),
    ]
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert request.approvals == () and request.owner_confirmed_at is None
    alerts = [t for _, r, t in core.notifier.said("alert_security") if r == rid]
    assert any("Bob Brown (bob" in t and "refused 3 times" in t for t in alerts)


async def test_an_approver_without_the_role_is_audited(core: Core) -> None:
    rid = await core.open_mfa_reset()
    with pytest.raises(NotAllowed):
        await core.service.approve(chat("heidi"), rid)  # an agent, not a lead
    refused = [e for e in await audit_events(core, rid) if e["kind"] == "refused"]
    assert [(e["actor"], e["reason"]) for e in refused] == [("heidi", "role:approve")]
