"""The two-key flow end to end on a real Redis: one test per invariant of DESIGN.md, and more."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from app.connectors.sandbox import SandboxConnector
from app.domain import messages as say
from app.domain.errors import (
    BadInput,
    Expired,
    IdentityUnsure,
    NotAllowed,
    SeparationOfDuties,
    Unavailable,
    VelocityLimited,
)
from app.domain.models import Action, Principal, Request, RequestState
from app.notify import RecordingNotifier
from app.ports import ExecutionResult
from app.service import Listing
from app.store.keys import shard_of_request
from tests.helpers import Core, build_core, chat, policy_text


@pytest.fixture
def core(redis_client: aioredis.Redis, namespace: str) -> Core:
    return build_core(redis_client, namespace)


async def audit_kinds(core: Core, request_id: str) -> list[str]:
    import json

    entries = await core.redis.xrange(core.keys.audit(shard_of_request(request_id)))
    return [
        json.loads(fields["e"])["kind"]
        for _, fields in entries
        if json.loads(fields["e"])["rid"] == request_id
    ]


async def test_happy_path_executes_once_and_tells_everyone(core: Core) -> None:
    rid = await core.open_mfa_reset()
    opened = await core.store.get(rid)
    assert opened is not None and opened.state is RequestState.PENDING
    assert opened.plan.tier == "standard"

    await core.service.confirm_owner(chat("alice"), rid)
    assert core.connector.changes == []
    decision = await core.service.approve(chat("carol"), rid)

    assert decision.request.state is RequestState.COMPLETED
    assert [c.request_id for c in core.connector.changes] == [rid]
    assert await audit_kinds(core, rid) == [
        "opened",
        "owner_confirmed",
        "approved",
        "execution_started",
        "executed",
    ]
    assert decision.request.events == 5
    said = [s[0] for s in core.notifier.sent]
    assert "post_request" in said and "notify_owner" in said and "update_request" in said


# ---- invariant 1: both keys, unexpired, at the instant of the claim ---------------------------


async def test_an_approval_that_lapsed_does_not_count(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, policy=policy_text(approval_ttl="1s"))
    rid = await core.open_mfa_reset()
    await core.service.approve(chat("carol"), rid)
    await asyncio.sleep(1.3)
    decision = await core.service.confirm_owner(chat("alice"), rid)

    assert decision.request.state is RequestState.PENDING
    assert decision.request.waiting_for(await core.store.now()) == ["1 approval"]
    assert core.connector.changes == []
    # a fresh approval now completes it
    final = await core.service.approve(chat("dave"), rid)
    assert final.request.state is RequestState.COMPLETED
    assert len(core.connector.changes) == 1


async def test_claim_rechecks_the_gates_at_redis_time(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """A request left ready whose approval lapsed is sent back to pending, not executed."""
    core = build_core(redis_client, namespace, policy=policy_text(approval_ttl="1s"))
    rid = await core.open_mfa_reset()
    # the owner confirms and an approver approves straight through the store: no execution yet
    await core.store.confirm_owner(rid, "alice", "test")
    reply = await core.store.approve(rid, "carol", "test", ["approver"])
    assert reply.request is not None and reply.request.state is RequestState.READY
    await asyncio.sleep(1.3)
    claim = await core.service.execute(rid)
    assert claim.code == "LAPSED"
    assert claim.request is not None and claim.request.state is RequestState.PENDING
    assert core.connector.changes == []


async def test_a_gate_after_the_request_expired_expires_it(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(
        redis_client,
        namespace,
        policy=policy_text(request_ttl="1s", remind_after="", escalate_after=""),
    )
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await asyncio.sleep(1.2)
    with pytest.raises(Expired):
        await core.service.approve(chat("carol"), rid)
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.EXPIRED
    assert core.connector.changes == []
    assert (await audit_kinds(core, rid))[-1] == "expired"


# ---- invariant 2: separation of duties by person ----------------------------------------------


async def test_requester_and_target_cannot_approve(core: Core) -> None:
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    with pytest.raises(SeparationOfDuties):
        await core.service.approve(chat("alice"), rid)  # the target (no approver role either)
    # the requester, even from another chat platform, is the same person
    with pytest.raises(NotAllowed):
        await core.service.approve(chat("bob", platform="teams"), rid)
    assert core.connector.changes == []


async def test_requester_with_approver_role_still_cannot_approve_own_request(core: Core) -> None:
    # carol (helpdesk-leads) cannot open; dave can't approve alice's request opened by... use
    # the store with carol as requester to prove the script refuses her approval
    rid = await core.open_mfa_reset(requester="bob")
    with pytest.raises(SeparationOfDuties):
        await _raise_sod(core, rid)


async def _raise_sod(core: Core, rid: str) -> None:
    reply = await core.store.approve(rid, "bob", "slack:UBOB", ["approver"])
    assert reply.code == "SOD"
    raise SeparationOfDuties("refused by the script")


async def test_approver_needs_the_tiers_role(core: Core) -> None:
    rid = await core.open_mfa_reset()
    with pytest.raises(NotAllowed, match="approver"):
        await core.service.approve(chat("heidi"), rid)  # a helpdesk agent, not a lead


async def test_unsure_identity_is_refused_never_guessed(core: Core) -> None:
    rid = await core.open_mfa_reset()
    for who in (
        chat("carol", is_guest=True),
        chat("carol", is_bot=True),
        chat("carol", deleted=True),
        chat("carol", email=None),
        chat("nobody"),
        chat("shared"),  # an email two directory entries share
    ):
        with pytest.raises(IdentityUnsure):
            await core.service.approve(who, rid)
    request = await core.store.get(rid)
    assert request is not None and request.approvals == () and request.events == 1


async def test_agent_cannot_open_on_themself_or_without_role(core: Core) -> None:
    with pytest.raises(SeparationOfDuties):
        await core.service.open(chat("bob"), chat("bob"), "reset-mfa", "INC-1234", "lost-device")
    with pytest.raises(NotAllowed, match="helpdesk"):
        await core.service.open(
            chat("alice"), chat("grace"), "reset-mfa", "INC-1234", "lost-device"
        )


async def test_only_the_owner_confirms(core: Core) -> None:
    rid = await core.open_mfa_reset()
    with pytest.raises(NotAllowed):
        await core.service.confirm_owner(chat("carol"), rid)
    request = await core.store.get(rid)
    assert request is not None and request.owner_confirmed_at is None


# ---- invariant 3: at most once ---------------------------------------------------------------


async def test_double_clicks_and_retries_execute_once(core: Core) -> None:
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    results = await asyncio.gather(
        *(core.service.approve(chat("carol"), rid) for _ in range(5)),
        *(core.service.confirm_owner(chat("alice"), rid) for _ in range(5)),
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, BaseException)]
    assert len(core.connector.changes) == 1
    again = await core.service.approve(chat("dave"), rid)
    assert again.changed is False
    assert len(core.connector.changes) == 1


async def test_a_crash_mid_execution_ends_interrupted_and_is_never_rerun(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, lease_s=1)
    rid = await core.open_mfa_reset()
    await core.store.confirm_owner(rid, "alice", "test")
    await core.store.approve(rid, "carol", "test", ["approver"])
    claim = await core.store.claim(rid, "replica-that-dies", 1000, "token-of-the-dead")
    assert claim.code == "OK"
    # the process dies here; the sweeper finds the lease expired
    await asyncio.sleep(1.2)
    await core.service.expire_due()
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.INTERRUPTED
    assert core.connector.changes == []
    assert any("interrupted" in text for _, _, text in core.notifier.said("alert_security"))
    # the owner and the agent hear the final outcome too (README: every final outcome)
    assert any(
        r == rid and text.startswith("Interrupted:")
        for _, r, text in core.notifier.said("notify_owner")
    )
    assert any(
        r == rid and "was interrupted" in text
        for _, r, text in core.notifier.said("notify_requester")
    )
    # another sweep, another claim: nothing re-runs it
    await core.service.expire_due()
    assert (await core.service.execute(rid)).code == "DECIDED"
    assert core.connector.changes == []


async def test_a_ready_request_whose_process_died_is_claimed_by_the_sweeper(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, claim_grace_ms=200)
    rid = await core.open_mfa_reset()
    await core.store.confirm_owner(rid, "alice", "test")
    await core.store.approve(rid, "carol", "test", ["approver"])  # ready; nobody claims
    await asyncio.sleep(0.4)
    sweeps = await asyncio.gather(*(core.service.expire_due() for _ in range(3)))
    assert sum(s.changes.get("CLAIMABLE", 0) for s in sweeps) >= 1
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.COMPLETED
    assert len(core.connector.changes) == 1


# ---- invariant 4: every change audited in the same step --------------------------------------


async def test_refusals_change_nothing_and_each_step_writes_one_event(core: Core) -> None:
    rid = await core.open_mfa_reset()
    with pytest.raises(SeparationOfDuties):
        await core.service.approve(chat("alice"), rid)
    with pytest.raises(NotAllowed):
        await core.service.confirm_owner(chat("carol"), rid)
    # Refused attempts are security events: audited, the request untouched.
    assert await audit_kinds(core, rid) == ["opened", "refused", "refused"]
    untouched = await core.store.get(rid)
    assert untouched is not None and untouched.state is RequestState.PENDING
    assert untouched.approvals == () and untouched.owner_confirmed_at is None
    await core.service.deny(chat("carol"), rid, "caller could not verify employee id")
    assert await audit_kinds(core, rid) == ["opened", "refused", "refused", "denied"]
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.DENIED and request.events == 4


# ---- invariant 5: secrets to the owner only ----------------------------------------------------


class SecretWitness(RecordingNotifier):
    """A notifier that remembers the delivered secret, so the test can hunt for leaks of it."""

    def __init__(self) -> None:
        super().__init__()
        self.secret_values: list[str] = []

    async def deliver_secret(self, request: Request, secret: SecretStr, label: str) -> bool:
        self.secret_values.append(secret.get_secret_value())
        return await super().deliver_secret(request, secret, label)


async def test_one_time_secret_goes_to_the_owner_and_nowhere_else(
    redis_client: aioredis.Redis,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    witness = SecretWitness()
    core = build_core(redis_client, namespace, notifier=witness)
    decision = await core.service.open(
        chat("bob"), chat("alice"), "reset-password", "INC-2001", "forgotten-password"
    )
    rid = decision.request.id
    await core.service.confirm_owner(chat("alice"), rid)
    done = await core.service.approve(chat("carol"), rid)
    assert done.request.state is RequestState.COMPLETED
    assert witness.secrets_delivered == [(rid, "alice")]
    [secret] = witness.secret_values
    assert len(secret) >= 12
    everything = [str(witness.sent), caplog.text, capsys.readouterr().out, done.model_dump_json()]
    async for key in core.redis.scan_iter(match=f"*{core.keys.ns}*"):
        kind = await core.redis.type(key)
        if kind == "hash":
            everything.append(str(await core.redis.hgetall(key)))
        elif kind == "stream":
            everything.append(str(await core.redis.xrange(key)))
        elif kind == "zset":
            everything.append(str(await core.redis.zrange(key, 0, -1)))
    assert len(everything) > 5
    assert not [place for place in everything if secret in place]


async def test_secret_that_cannot_be_delivered_is_dropped_and_alerted(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, notifier=RecordingNotifier(accept_secrets=False))
    decision = await core.service.open(
        chat("bob"), chat("alice"), "reset-password", "INC-2001", "forgotten-password"
    )
    rid = decision.request.id
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    assert "secret_undelivered" in await audit_kinds(core, rid)
    assert any("could not be delivered" in t for _, _, t in core.notifier.said("alert_security"))


# ---- invariant 6: fail closed, lose nothing ---------------------------------------------------


async def test_redis_down_every_use_case_answers_clearly(namespace: str) -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    core = build_core(dead, namespace)
    calls = [
        core.service.open(chat("bob"), chat("alice"), "reset-mfa", "INC-1234", "lost-device"),
        core.service.confirm_owner(chat("alice"), "TK-00000000"),
        core.service.approve(chat("carol"), "TK-00000000"),
        core.service.deny(chat("carol"), "TK-00000000", "no"),
        core.service.cancel(chat("bob"), "TK-00000000"),
        core.service.status(chat("bob"), "TK-00000000"),
        core.service.list_for(chat("bob")),
        core.service.expire_due(),
        core.service.execute("TK-00000000"),
    ]
    for call in calls:
        with pytest.raises(Unavailable, match="nothing was changed"):
            await call
    assert core.connector.changes == []
    await dead.aclose()


async def test_connector_failure_and_unknown_are_truthful_and_alerted(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    from app.connectors.sandbox import SandboxConnector

    connector = SandboxConnector(fail_actions=["reset-mfa"], unknown_actions=["unlock"])
    core = build_core(redis_client, namespace, connector=connector)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    failed = await core.service.approve(chat("carol"), rid)
    assert failed.request.state is RequestState.FAILED
    decision = await core.service.open(
        chat("bob"), chat("alice"), "unlock", "INC-1235", "locked-out"
    )
    await core.service.confirm_owner(chat("alice"), decision.request.id)
    unknown = await core.service.approve(chat("carol"), decision.request.id)
    assert unknown.request.state is RequestState.UNKNOWN
    assert "outcome_unknown" in str(
        await core.redis.xrange(core.keys.audit(shard_of_request(decision.request.id)))
    )
    alerts = [t for _, _, t in core.notifier.said("alert_security")]
    assert any("failed" in t for t in alerts) and any("could not be confirmed" in t for t in alerts)
    told_owner = [
        t for _, rid, t in core.notifier.said("notify_owner") if rid == decision.request.id
    ]
    assert any("could not confirm whether it happened" in t for t in told_owner)


# ---- fraud signals, velocity, break-glass, disputes -------------------------------------------


async def test_this_wasnt_me_rejects_flags_and_tightens_the_next_request(core: Core) -> None:
    rid = await core.open_mfa_reset()
    decision = await core.service.reject_by_owner(chat("alice"), rid)
    assert decision.request.state is RequestState.REJECTED_BY_OWNER
    assert any("flagged" in t for _, _, t in core.notifier.said("alert_security"))
    again = await core.service.open(
        chat("heidi"), chat("alice"), "reset-mfa", "INC-1299", "lost-device"
    )
    assert again.request.plan.tier == "strictest"
    assert again.request.plan.approvals_needed == 2


async def test_velocity_limit_refuses_and_alerts(core: Core) -> None:
    for _ in range(2):
        rid = await core.open_mfa_reset()
        await core.service.cancel(chat("bob"), rid)
    with pytest.raises(VelocityLimited):
        await core.open_mfa_reset()
    assert any("Velocity" in t for _, _, t in core.notifier.said("alert_security"))


async def test_an_open_that_is_refused_does_not_use_up_the_requesters_limit(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    velocity = (
        "  - {per: target, actions: [reset-mfa], limit: 1, window: 24h, then: refuse}\n"
        "  - {per: requester, limit: 2, window: 1h, then: refuse}\n"
    )
    core = build_core(redis_client, namespace, policy=policy_text(velocity=velocity))
    await core.open_mfa_reset()
    with pytest.raises(VelocityLimited, match="this account"):
        await core.open_mfa_reset()  # refused for alice's sake: bob's place is given back
    second = await core.service.open(chat("bob"), chat("dave"), "unlock", "INC-1301", "locked-out")
    assert second.request.state is RequestState.PENDING
    with pytest.raises(VelocityLimited, match="requests for you"):
        await core.service.open(chat("bob"), chat("carol"), "unlock", "INC-1302", "locked-out")
    assert len((await core.service.list_for(chat("bob"))).mine) == 2


async def test_breakglass_skips_approvals_alerts_and_opens_a_review(core: Core) -> None:
    with pytest.raises(NotAllowed):
        await core.service.breakglass(
            chat("bob"),
            chat("grace"),
            "reset-mfa",
            "INC-9999",
            "the CEO is locked out before the board call",
        )
    with pytest.raises(BadInput):
        await core.service.breakglass(
            chat("erin"), chat("grace"), "reset-mfa", "INC-9999", "urgent"
        )
    decision = await core.service.breakglass(
        chat("erin"),
        chat("grace"),
        "reset-mfa",
        "INC-9999",
        "the CEO is locked out before the board call",
    )
    rid = decision.request.id
    assert decision.request.plan.breakglass and decision.request.plan.approvals_needed == 0
    assert any(rid == r for _, r, _ in core.notifier.said("alert_security"))
    await core.service.confirm_owner(chat("grace"), rid)
    done = await core.store.get(rid)
    assert done is not None and done.state is RequestState.COMPLETED and done.review_open
    assert [r.id for r in await core.store.open_reviews()] == [rid]
    with pytest.raises(SeparationOfDuties):
        await core.service.close_review(chat("erin"), rid, "I used it myself")
    closed = await core.service.close_review(chat("frank"), rid, "verified with the CEO by phone")
    assert not closed.request.review_open
    assert await core.store.open_reviews() == []


async def test_owner_disputes_a_completed_change(core: Core) -> None:
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    with pytest.raises(NotAllowed):
        await core.service.dispute(chat("carol"), rid)
    decision = await core.service.dispute(chat("alice"), rid)
    assert decision.request.disputed_at is not None
    kinds = await audit_kinds(core, rid)
    assert kinds[-2:] == ["disputed", "auto_revoke_sessions"]
    assert [c.action for c in core.connector.changes] == [Action.RESET_MFA, Action.REVOKE_SESSIONS]
    assert (await core.service.dispute(chat("alice"), rid)).changed is False
    assert await core.redis.exists(core.keys.flag("alice"))


async def test_the_owners_no_just_after_the_change_is_a_dispute_not_dropped(core: Core) -> None:
    """alice presses "No, this wasn't me" on the question still open in her chat a moment
    after the change ran: it was answered "already completed", nothing flagged or audited."""
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    decision = await core.service.reject_by_owner(chat("alice", platform="teams"), rid)
    assert decision.message == say.DISPUTED
    assert decision.request.disputed_at is not None
    assert (await audit_kinds(core, rid))[-2:] == ["disputed", "auto_revoke_sessions"]
    assert [c.action for c in core.connector.changes] == [Action.RESET_MFA, Action.REVOKE_SESSIONS]
    assert await core.redis.exists(core.keys.flag("alice"))


class Slow(SandboxConnector):
    """A provider that holds each change until released."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def execute(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        self.started.set()
        await self.release.wait()
        return await super().execute(action, target, request)


async def test_the_owners_no_while_the_change_runs_is_a_dispute_once_it_ends(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """Someone holding alice's chat session said yes; the real alice says no while the change
    is being made. It cannot be stopped, but the account is flagged and security told at once,
    and once the change has ended alice is signed out, as after any dispute."""
    provider = Slow()
    core = build_core(redis_client, namespace, connector=provider)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    running = asyncio.create_task(core.service.approve(chat("carol"), rid))
    await provider.started.wait()
    answer = await core.service.reject_by_owner(chat("alice", platform="teams"), rid)
    assert answer.message == say.DISPUTED_RUNNING
    assert await core.redis.exists(core.keys.flag("alice"))
    alerts = [text for kind, _, text in core.notifier.sent if kind == "alert_security"]
    assert any("this wasn't me" in text and "being made" in text for text in alerts)
    provider.release.set()
    await running
    final = await core.store.get(rid)
    assert final is not None and final.state is RequestState.COMPLETED
    assert final.disputed_at is not None
    assert (await audit_kinds(core, rid))[-3:] == ["disputed", "executed", "auto_revoke_sessions"]
    assert [c.action for c in core.connector.changes] == [Action.RESET_MFA, Action.REVOKE_SESSIONS]
    assert (await core.service.dispute(chat("alice"), rid)).changed is False


async def test_a_request_on_an_account_flagged_since_it_opened_is_stopped_not_run(
    core: Core,
) -> None:
    """Two requests on alice; someone in her chat session confirms B, the real alice says no
    to A, so alice is flagged and a new request would need the strictest tier. B, opened
    before on the standard tier, must not run on one lead's approval: it is stopped."""
    a = await core.open_mfa_reset()
    b = (
        await core.service.open(
            chat("bob"), chat("alice"), Action.UNLOCK.value, "INC-1235", "locked-out"
        )
    ).request.id
    await core.service.confirm_owner(chat("alice"), b)
    await core.service.reject_by_owner(chat("alice", platform="teams"), a)
    decision = await core.service.approve(chat("carol"), b)
    stopped = await core.store.get(b)
    assert stopped is not None and stopped.state is RequestState.CANCELLED
    assert decision.request.state is RequestState.CANCELLED
    assert core.connector.changes == []
    events = await audit_events(core, b)
    assert (events[-1]["kind"], events[-1]["reason"]) == ("stopped", "target_flagged")
    told = [text for kind, rid, text in core.notifier.sent if rid == b]
    assert say.stopped_as_flagged(stopped) in told
    assert any(say.STOPPED_AS_FLAGGED in text for text in told)
    fresh = await core.service.open(
        chat("heidi"), chat("alice"), Action.UNLOCK.value, "INC-1236", "locked-out"
    )
    assert fresh.request.plan.tier == "strictest"


async def test_bad_input_is_specific_and_creates_nothing(core: Core) -> None:
    cases = [
        ("reset-everything", "INC-1234", "lost-device", "action"),
        ("reset-mfa", "not a ticket", "lost-device", "Ticket"),
        ("reset-mfa", "INC-1234", "because", "Reason code"),
        ("rotate-secret", "INC-1234", "lost-device", "non-human"),
    ]
    for action, ticket, reason, words in cases:
        with pytest.raises(BadInput, match=words):
            await core.service.open(chat("bob"), chat("alice"), action, ticket, reason)
    assert await core.store.open_requests() == []


# ---- sweeper: expiry, reminders and escalation happen once ------------------------------------


async def test_sweeper_expires_reminds_and_escalates_once_across_replicas(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(
        redis_client,
        namespace,
        policy=policy_text(request_ttl="3s", remind_after="1s", escalate_after="2s"),
    )
    rid = await core.open_mfa_reset()
    replicas = [build_core(redis_client, namespace) for _ in range(3)]
    for _ in range(14):
        await asyncio.gather(*(r.service.expire_due() for r in replicas))
        await asyncio.sleep(0.25)
    kinds = await audit_kinds(core, rid)
    assert kinds == ["opened", "reminded", "escalated", "expired"]
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.EXPIRED
    assert await core.redis.zscore(core.keys.due(shard_of_request(rid)), rid) is None


async def test_escalation_lets_the_escalation_role_decide(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, policy=policy_text(escalate_after="1s"))
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    with pytest.raises(NotAllowed):
        await core.service.approve(chat("frank"), rid)  # security, before escalation
    await asyncio.sleep(1.1)
    await core.service.expire_due()
    decision = await core.service.approve(chat("frank"), rid)
    assert decision.request.state is RequestState.COMPLETED


async def test_list_shows_mine_and_what_waits_for_me(core: Core) -> None:
    rid = await core.open_mfa_reset()
    assert [r.id for r in (await core.service.list_for(chat("bob"))).mine] == [rid]
    assert [r.id for r in (await core.service.list_for(chat("carol"))).to_approve] == [rid]
    assert [r.id for r in (await core.service.list_for(chat("alice"))).to_confirm] == [rid]
    assert (await core.service.list_for(chat("heidi"))).to_approve == []


def ids(requests: list[Request]) -> set[str]:
    return {r.id for r in requests}


async def test_list_finds_each_persons_requests_through_the_index(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, policy=policy_text(escalate_after="1s"))
    everyday = await core.open_mfa_reset()  # bob asks, alice owns, approver role, escalates
    admin = (
        await core.service.open(chat("heidi"), chat("grace"), "unlock", "INC-2001", "locked-out")
    ).request.id  # privileged: security decides
    nhi = (
        await core.service.open(
            chat("bob"), "nhi:billing-api", "rotate-secret", "CHG-2002", "scheduled-rotation"
        )
    ).request.id  # owned by alice, decided by security
    listing = await core.service.list_for(chat("bob"))
    assert ids(listing.mine) == {everyday, nhi} and listing.to_approve == []
    assert ids((await core.service.list_for(chat("heidi"))).mine) == {admin}
    assert ids((await core.service.list_for(chat("alice"))).to_confirm) == {everyday, nhi}
    assert ids((await core.service.list_for(chat("grace"))).to_confirm) == {admin}
    assert ids((await core.service.list_for(chat("carol"))).to_approve) == {everyday}
    assert ids((await core.service.list_for(chat("frank"))).to_approve) == {admin, nhi}
    assert await core.service.list_for(chat("ivan")) == Listing(
        mine=[], to_approve=[], to_confirm=[]
    )
    # Once escalated, the escalation role (security) sees the everyday request too.
    await asyncio.sleep(1.1)
    await core.service.expire_due()
    assert ids((await core.service.list_for(chat("frank"))).to_approve) == {admin, nhi, everyday}
    # Finished requests leave every list.
    await core.service.cancel(chat("bob"), everyday)
    await core.service.deny(chat("erin"), admin, "not verified")
    assert ids((await core.service.list_for(chat("bob"))).mine) == {nhi}
    assert ids((await core.service.list_for(chat("frank"))).to_approve) == {nhi}
    assert (await core.service.list_for(chat("carol"))).to_approve == []
    assert (await core.service.list_for(chat("heidi"))).mine == []


async def test_list_reads_only_the_requests_it_shows(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    """2,000 pending requests made `list` take seconds: it read every one of them."""
    core = build_core(redis_client, namespace, policy=policy_text(velocity=""))
    for n, target in enumerate(["alice", "carol", "dave", "erin", "frank", "ivan"] * 5):
        await core.service.open(
            chat("heidi"), chat(target), "unlock", f"INC-{3000 + n}", "locked-out"
        )
    mine = await core.open_mfa_reset()
    watcher = aioredis.Redis.from_url(redis_url, decode_responses=True)
    sentinel = f"{namespace}:list-done"
    read: list[str] = []
    try:
        async with watcher.monitor() as monitor:

            async def watch() -> None:
                while True:
                    command = (await monitor.next_command())["command"]
                    if sentinel in command:
                        return
                    if command.startswith("HGETALL") and namespace in command:
                        read.append(command.rpartition(":req:")[2])

            watching = asyncio.create_task(watch())
            await asyncio.sleep(0.1)
            listing = await core.service.list_for(chat("bob"))
            await core.redis.get(sentinel)
            await asyncio.wait_for(watching, 10)
    finally:
        await watcher.aclose()
    assert ids(listing.mine) == {mine}
    assert read == [mine]


class DirectoryDown:
    """A Directory port whose backend is unreachable (a fake of the port, not of our code)."""

    async def find_by_email(self, email: str) -> list[object]:
        raise ConnectionError("directory unreachable")

    async def get(self, principal_id: str) -> None:
        raise ConnectionError("directory unreachable")

    async def find_nhi(self, name: str) -> None:
        raise ConnectionError("directory unreachable")

    async def search(self, text: str, limit: int = 20) -> list[object]:
        raise ConnectionError("directory unreachable")


async def test_directory_down_nothing_changes_and_people_are_told(core: Core) -> None:
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    core.service.directory = DirectoryDown()  # type: ignore[assignment]
    for call in (
        core.service.approve(chat("carol"), rid),
        core.service.open(chat("bob"), chat("alice"), "unlock", "INC-1234", "locked-out"),
        core.service.cancel(chat("bob"), rid),
    ):
        with pytest.raises(Unavailable, match="directory cannot be reached"):
            await call
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert request.approvals == () and core.connector.changes == []


async def test_directory_down_at_execution_fails_truthfully(core: Core) -> None:
    rid = await core.open_mfa_reset()
    await core.store.confirm_owner(rid, "alice", "test")
    await core.store.approve(rid, "carol", "test", ["approver"])
    core.service.directory = DirectoryDown()  # type: ignore[assignment]
    reply = await core.service.execute(rid)
    assert reply.request is not None and reply.request.state is RequestState.FAILED
    assert "nothing was changed" in reply.request.outcome_detail
    assert core.connector.changes == []
    executed = [e for e in await audit_events(core, rid) if e["kind"] == "executed"]
    assert [(e["reason"], e["outcome"]) for e in executed] == [("directory_unreachable", "failed")]


async def test_requester_velocity_escalates_to_the_strictest_tier(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(
        redis_client,
        namespace,
        policy=policy_text(velocity="  - {per: requester, limit: 1, window: 1h, then: escalate}\n"),
    )
    first = await core.service.open(chat("bob"), chat("alice"), "unlock", "INC-1234", "locked-out")
    assert first.request.plan.tier == "standard"
    second = await core.service.open(chat("bob"), chat("grace"), "unlock", "INC-1235", "locked-out")
    assert second.request.plan.tier == "strictest"
    assert any("velocity" in reason for reason in second.request.plan.reasons)
    assert any(second.request.id == r for _, r, _ in core.notifier.said("alert_security"))
    # another agent is not slowed down by bob's pace
    other = await core.service.open(
        chat("heidi"), chat("alice"), "unlock", "INC-1236", "locked-out"
    )
    assert other.request.plan.tier == "standard"


async def test_nhi_rotation_goes_through_its_human_owner(core: Core) -> None:
    decision = await core.service.open(
        chat("bob"), "NHI:billing-api", "rotate-secret", "CHG-2002", "scheduled-rotation"
    )
    request = decision.request
    assert request.target_id == "nhi:billing-api" and request.owner_id == "alice"
    assert request.plan.tier == "production-nhi" and request.plan.alert_security
    with pytest.raises(NotAllowed):
        await core.service.approve(chat("carol"), request.id)  # a lead, not security
    with pytest.raises(SeparationOfDuties):
        await core.service.approve(chat("alice"), request.id)  # the owner of record
    await core.service.confirm_owner(chat("alice"), request.id)
    done = await core.service.approve(chat("frank"), request.id)
    assert done.request.state is RequestState.COMPLETED
    assert core.notifier.secrets_delivered == [(request.id, "alice")]
    with pytest.raises(BadInput, match="non-human"):
        await core.service.open(
            chat("bob"), chat("alice"), "rotate-secret", "CHG-2003", "scheduled-rotation"
        )


# ---- hostile review: holes found and closed ---------------------------------------------------


async def test_a_party_to_the_request_cannot_cancel_it_under_the_approver_role(core: Core) -> None:
    """Carol leads the help desk, but this request is about her own account: like deny, a
    cancel by her goes through "this wasn't me" (which flags and alerts), not her role."""
    rid = await core.open_mfa_reset(target="carol")
    with pytest.raises(SeparationOfDuties):
        await core.service.cancel(chat("carol"), rid)
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert await audit_kinds(core, rid) == ["opened", "refused"]
    # an uninvolved approver still may, and so may the requester
    assert (await core.service.cancel(chat("dave"), rid)).request.state is RequestState.CANCELLED


async def _breakglass_on(core: Core, target: str) -> str:
    decision = await core.service.breakglass(
        chat("erin"), chat(target), "reset-mfa", "INC-9999", "the CEO is locked out before the call"
    )
    return decision.request.id


async def test_a_breakglass_review_is_closed_only_after_the_change_by_someone_not_in_it(
    core: Core,
) -> None:
    rid = await _breakglass_on(core, "grace")
    with pytest.raises(NotAllowed, match="finished"):
        await core.service.close_review(chat("frank"), rid, "looks fine to me, go ahead")
    with pytest.raises(SeparationOfDuties):
        await core.service.close_review(chat("erin"), rid, "I used it myself, all fine")
    await core.service.confirm_owner(chat("grace"), rid)
    own = await _breakglass_on(core, "frank")  # erin breaks glass on frank's account
    await core.service.confirm_owner(chat("frank"), own)
    done = await core.store.get(own)
    assert done is not None and done.state is RequestState.COMPLETED and done.review_open
    with pytest.raises(SeparationOfDuties):
        await core.service.close_review(chat("frank"), own, "it was my own account, fine")
    assert {r.id for r in await core.store.open_reviews()} == {rid, own}
    assert (await audit_kinds(core, own))[-2:] == ["executed", "refused"]
    closed = await core.service.close_review(chat("frank"), rid, "verified with grace by phone")
    assert not closed.request.review_open
    assert (await audit_kinds(core, rid))[-1] == "review_closed"


async def audit_events(core: Core, request_id: str) -> list[dict[str, object]]:
    import json

    entries = await core.redis.xrange(core.keys.audit(shard_of_request(request_id)))
    events = [json.loads(fields["e"]) for _, fields in entries]
    return [e for e in events if e["rid"] == request_id]


APPROVED_BREAKGLASS = policy_text().replace("skip: [approvals]", "skip: []")
"""Break-glass that still needs one security approval (the shipped test policy skips it)."""


async def test_whoever_approved_or_denied_a_breakglass_use_cannot_review_it(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, policy=APPROVED_BREAKGLASS)
    approved = await _breakglass_on(core, "alice")
    await core.service.confirm_owner(chat("alice"), approved)
    done = await core.service.approve(chat("frank"), approved)
    assert done.request.state is RequestState.COMPLETED and done.request.review_open
    denied = await _breakglass_on(core, "alice")
    assert (await core.service.deny(chat("frank"), denied, "no emergency here")).request.state is (
        RequestState.DENIED
    )
    for rid in (approved, denied):
        with pytest.raises(SeparationOfDuties, match="opened or decided it"):
            await core.service.close_review(chat("frank"), rid, "all fine, I checked it myself")
        with pytest.raises(SeparationOfDuties):
            await core.service.close_review(chat("erin"), rid, "I used it myself, all fine")
    assert {r.id for r in await core.store.open_reviews()} == {approved, denied}
    assert "review_closed" not in await audit_kinds(core, approved)


async def test_holding_the_breakglass_role_is_not_enough_to_review(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """Carol may break glass too; she must not clear Erin's emergency (nor Erin hers) unless
    she is a security reviewer."""
    policy = policy_text().replace(
        "breakglass: [security-oncall]", "breakglass: [security-oncall, helpdesk-leads]"
    )
    core = build_core(redis_client, namespace, policy=policy)
    rid = await _breakglass_on(core, "grace")
    await core.service.confirm_owner(chat("grace"), rid)
    with pytest.raises(NotAllowed, match="needs the security role"):
        await core.service.close_review(chat("carol"), rid, "my fellow on-call, looks fine")
    assert [r.id for r in await core.store.open_reviews()] == [rid]
    refused = [e for e in await audit_events(core, rid) if e["kind"] == "review_refused"]
    assert [(e["actor"], e["outcome"]) for e in refused] == [("carol", "refused")]
    alerts = [t for _, _, t in core.notifier.said("alert_security")]
    assert any("tried to close this break-glass review" in t for t in alerts), alerts
    closed = await core.service.close_review(chat("frank"), rid, "verified with grace by phone")
    assert not closed.request.review_open


async def test_an_operator_closes_a_review_as_themselves_and_security_hears_of_it(
    core: Core,
) -> None:
    rid = await _breakglass_on(core, "grace")
    await core.service.confirm_owner(chat("grace"), rid)
    with pytest.raises(BadInput, match="note is required"):
        await core.service.close_review_as_operator("ops-jo", rid, "   ")
    closed = await core.service.close_review_as_operator("ops-jo", rid, "called grace back")
    assert not closed.request.review_open and closed.request.reviewed_by == "operator:ops-jo"
    last = (await audit_events(core, rid))[-1]
    assert (last["kind"], last["actor"], last["role"], last["via"]) == (
        "review_closed_by_operator",
        "operator:ops-jo",
        "operator",
        "cli",
    )
    assert any(
        r == rid and "operator:ops-jo" in t and "not by a security reviewer" in t
        for _, r, t in core.notifier.said("alert_security")
    )
    again = await core.service.close_review_as_operator("ops-jo", rid, "called grace back")
    assert not again.changed


async def test_retention_never_drops_an_open_review_or_a_dispute_still_allowed(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, policy=policy_text() + "retention: 1s\n")
    glass = await _breakglass_on(core, "grace")
    await core.service.confirm_owner(chat("grace"), glass)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    assert (await core.service.approve(chat("carol"), rid)).request.state is (
        RequestState.COMPLETED
    )
    await asyncio.sleep(1.3)
    assert [r.id for r in await core.store.open_reviews()] == [glass]
    assert (await core.service.dispute(chat("alice"), rid)).request.disputed_at is not None
    closed = await core.service.close_review(chat("frank"), glass, "verified with grace by phone")
    assert not closed.request.review_open
    # once reviewed it expires like any finished request (here after its dispute window)
    assert await core.redis.pttl(core.keys.request(glass)) > 0


class PeopleCachedBackendDown:
    """A Directory port whose email answers are still cached but whose backend is down."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    async def find_by_email(self, email: str) -> list[object]:
        return await self.inner.find_by_email(email)  # type: ignore[attr-defined,no-any-return]

    async def get(self, principal_id: str) -> None:
        raise ConnectionError("directory unreachable")

    async def find_nhi(self, name: str) -> None:
        raise ConnectionError("directory unreachable")

    async def search(self, text: str, limit: int = 20) -> list[object]:
        raise ConnectionError("directory unreachable")


async def test_a_dispute_is_kept_and_audited_when_the_directory_fails_during_it(
    core: Core,
) -> None:
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    core.service.directory = PeopleCachedBackendDown(core.service.directory)  # type: ignore[assignment]
    decision = await core.service.dispute(chat("alice"), rid)
    assert decision.request.disputed_at is not None
    entries = await core.redis.xrange(core.keys.audit(shard_of_request(rid)))
    import json

    last = json.loads(entries[-1][1]["e"])
    assert last["kind"] == "auto_revoke_sessions" and last["outcome"] == "failed"
    assert "directory" in last["reason"]
    assert [c.action for c in core.connector.changes] == [Action.RESET_MFA]
    assert any("DISPUTED" in t for _, _, t in core.notifier.said("alert_security"))
    assert any("by hand" in t for _, _, t in core.notifier.said("alert_security"))


class RedisLink:
    """A real TCP hop between twokey and Redis that the test can cut: a network outage."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, up_writer]

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


class CutsRedisWhileActing:
    """An identity provider that makes the change, during which twokey loses Redis."""

    def __init__(self, inner: object, link: RedisLink) -> None:
        self.inner, self.link = inner, link
        self.name = "sandbox"

    def supports(self, action: Action, target: object) -> bool:
        return self.inner.supports(action, target)  # type: ignore[attr-defined,no-any-return]

    async def execute(self, action: Action, target: object, request: Request) -> object:
        result = await self.inner.execute(action, target, request)  # type: ignore[attr-defined]
        await self.link.cut()
        return result


async def test_losing_redis_after_the_change_is_told_truthfully_and_the_secret_still_delivered(
    redis_client: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    from urllib.parse import urlsplit

    from app.connectors.sandbox import SandboxConnector

    where = urlsplit(redis_url)
    link = RedisLink(where.hostname or "127.0.0.1", where.port or 6379)
    port = await link.start()
    through_link = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    sandbox = SandboxConnector()
    core = build_core(through_link, namespace, lease_s=1, connector=sandbox)
    core.service.connectors = [CutsRedisWhileActing(sandbox, link)]  # type: ignore[list-item]
    rid = (
        await core.service.open(
            chat("bob"), chat("alice"), "reset-password", "INC-2001", "forgotten-password"
        )
    ).request.id
    await core.service.confirm_owner(chat("alice"), rid)
    with pytest.raises(Unavailable) as told:
        await core.service.approve(chat("carol"), rid)
    assert "nothing was changed" not in told.value.message
    assert "carried out" in told.value.message
    assert [c.request_id for c in sandbox.changes] == [rid]
    assert core.notifier.secrets_delivered == [(rid, "alice")]
    assert any("could not record" in t for _, _, t in core.notifier.said("alert_security"))
    # once Redis is back, the sweeper ends it truthfully as interrupted: never re-run
    await asyncio.sleep(1.2)
    after = build_core(redis_client, namespace)
    await after.service.expire_due()
    request = await after.store.get(rid)
    assert request is not None and request.state is RequestState.INTERRUPTED
    assert len(sandbox.changes) == 1
    await through_link.aclose()


async def test_a_malformed_request_id_is_a_clear_refusal_from_every_use_case(core: Core) -> None:
    bad = "TK-<!channel>"
    calls = [
        core.service.confirm_owner(chat("alice"), bad),
        core.service.reject_by_owner(chat("alice"), bad),
        core.service.approve(chat("carol"), bad),
        core.service.deny(chat("carol"), bad, "no"),
        core.service.cancel(chat("bob"), bad),
        core.service.dispute(chat("alice"), bad),
        core.service.close_review(chat("frank"), bad, "checked"),
        core.service.status(chat("bob"), bad),
        core.service.execute(bad),
    ]
    for call in calls:
        with pytest.raises(BadInput, match="is not a request id"):
            await call


class SlowPeopleLookup(PeopleCachedBackendDown):
    """A Directory port whose lookups by id hang (an overloaded directory)."""

    async def get(self, principal_id: str) -> None:
        await asyncio.sleep(2.5)
        return await self.inner.get(principal_id)  # type: ignore[attr-defined,no-any-return]


async def test_a_slow_directory_cannot_push_the_change_past_the_execution_lease(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """The lease (2 s) bounds the whole execution, the directory lookup included: otherwise
    the change could land after a sweeper declared the execution interrupted."""
    core = build_core(redis_client, namespace, lease_s=2)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    core.service.directory = SlowPeopleLookup(core.service.directory)  # type: ignore[assignment]
    decision = await core.service.approve(chat("carol"), rid)
    assert decision.request.state is RequestState.FAILED
    assert "nothing was changed" in decision.request.outcome_detail
    assert core.connector.changes == []


async def test_requests_opened_before_the_index_existed_are_listed_after_start_up(
    core: Core,
) -> None:
    rid = await core.open_mfa_reset()
    index = core.keys.open_index(shard_of_request(rid))
    await core.redis.delete(index)  # what a request opened by an older twokey looks like
    assert (await core.service.list_for(chat("bob"))).mine == []

    await core.store.index_open_requests()  # build_runtime does this at start-up

    listing = await core.service.list_for(chat("bob"))
    assert [r.id for r in listing.mine] == [rid]
    assert [r.id for r in (await core.service.list_for(chat("carol"))).to_approve] == [rid]
    assert [r.id for r in (await core.service.list_for(chat("alice"))).to_confirm] == [rid]
