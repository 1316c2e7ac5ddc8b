"""Random interleavings of every gate action by random people, checked after every step.

Hypothesis drives open / break-glass / confirm / reject / approve / deny / cancel / sweep /
wait (the clock advancing for real: approvals last 1 s) against the real store on Redis, each
person acting from Slack or from a Teams account whose email differs only in case (one person,
two chat accounts), on people and on an NHI. After each step: nothing executed without every
gate valid at the claim, no separation-of-duties violation (by person), at most one execution
per request, a secret only ever to the owner of record, one audit event per change, and the
audit chain verifies.
"""

from __future__ import annotations

import asyncio
import json
import secrets

import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from pydantic import SecretStr

from app.audit.trail import AuditTrail
from app.domain.errors import TwokeyError
from app.domain.models import ChatUser, RequestState, may_move
from app.store.keys import SHARDS
from tests.helpers import build_core, chat, policy_text

PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan"]
REQUESTERS = ["bob", "heidi", "carol"]
TARGETS = ["alice", "grace", "bob"]
NHIS = ["nhi:billing-api", "nhi:ci-deployer"]
ACTIONS = ["unlock", "reset-password", "reset-mfa", "revoke-sessions"]
PLATFORMS = ["slack", "teams"]
EXECUTED = {
    RequestState.EXECUTING,
    RequestState.COMPLETED,
    RequestState.FAILED,
    RequestState.INTERRUPTED,
}


def account(person: str, platform: str) -> ChatUser:
    """One person's chat account: on Teams with their email in upper case (same person)."""
    if platform == "teams":
        return ChatUser(platform="teams", user_id=f"aad-{person}", email=f"{person}@EXAMPLE.COM")
    return chat(person)


class TwoKeyMachine(RuleBasedStateMachine):
    requests = Bundle("requests")

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        namespace = "h" + secrets.token_hex(5)
        self.core = build_core(
            self.redis,
            namespace,
            claim_grace_ms=300,
            policy=policy_text(
                request_ttl="4s", approval_ttl="1s", remind_after="2s", escalate_after="3s"
            ),
        )
        self.trail = AuditTrail(self.redis, self.core.keys, SecretStr("k" * 32))
        self.ids: list[str] = []

    def run(self, coro: object) -> object:
        try:
            return self.loop.run_until_complete(coro)  # type: ignore[arg-type]
        except TwokeyError:
            return None

    def teardown(self) -> None:
        async def clean() -> None:
            async for key in self.redis.scan_iter(match=f"*{self.core.keys.ns}*"):
                await self.redis.delete(key)
            await self.redis.aclose()

        self.loop.run_until_complete(clean())
        self.loop.close()

    # ---- steps -------------------------------------------------------------------------------

    @rule(
        target=requests,
        requester=st.sampled_from(REQUESTERS),
        subject=st.sampled_from(TARGETS),
        action=st.sampled_from(ACTIONS),
        platform=st.sampled_from(PLATFORMS),
    )
    def open(self, requester: str, subject: str, action: str, platform: str) -> str:
        opened = self.run(
            self.core.service.open(
                chat(requester), account(subject, platform), action, "INC-1000", "locked-out"
            )
        )
        return self._opened(opened)

    @rule(
        target=requests,
        requester=st.sampled_from(REQUESTERS),
        nhi=st.sampled_from(NHIS),
        platform=st.sampled_from(PLATFORMS),
    )
    def open_nhi(self, requester: str, nhi: str, platform: str) -> str:
        opened = self.run(
            self.core.service.open(
                account(requester, platform), nhi, "rotate-secret", "INC-1001", "scheduled-rotation"
            )
        )
        return self._opened(opened)

    @rule(
        target=requests,
        requester=st.sampled_from(["erin", "bob"]),
        subject=st.sampled_from(TARGETS),
        platform=st.sampled_from(PLATFORMS),
    )
    def breakglass(self, requester: str, subject: str, platform: str) -> str:
        opened = self.run(
            self.core.service.breakglass(
                account(requester, platform),
                account(subject, "slack"),
                "unlock",
                "INC-1002",
                "production outage, the on-call engineer is locked out",
            )
        )
        return self._opened(opened)

    def _opened(self, decision: object) -> str:
        if decision is None:
            return "TK-00000000"
        rid: str = decision.request.id  # type: ignore[attr-defined]
        self.ids.append(rid)
        return rid

    @rule(rid=requests, who=st.sampled_from(PEOPLE), platform=st.sampled_from(PLATFORMS))
    def confirm(self, rid: str, who: str, platform: str) -> None:
        self.run(self.core.service.confirm_owner(account(who, platform), rid))

    @rule(rid=requests, who=st.sampled_from(PEOPLE), platform=st.sampled_from(PLATFORMS))
    def reject(self, rid: str, who: str, platform: str) -> None:
        self.run(self.core.service.reject_by_owner(account(who, platform), rid))

    @rule(rid=requests, who=st.sampled_from(PEOPLE), platform=st.sampled_from(PLATFORMS))
    def approve(self, rid: str, who: str, platform: str) -> None:
        self.run(self.core.service.approve(account(who, platform), rid))

    @rule(rid=requests, who=st.sampled_from(PEOPLE))
    def approve_twice_at_once(self, rid: str, who: str) -> None:
        """The same person at once from both chat accounts: one approval at most."""

        async def both() -> None:
            await asyncio.gather(
                self.core.service.approve(account(who, "slack"), rid),
                self.core.service.approve(account(who, "teams"), rid),
                return_exceptions=True,
            )

        self.run(both())

    @rule(rid=requests, who=st.sampled_from(PEOPLE), platform=st.sampled_from(PLATFORMS))
    def deny(self, rid: str, who: str, platform: str) -> None:
        self.run(self.core.service.deny(account(who, platform), rid, "not convinced"))

    @rule(rid=requests, who=st.sampled_from(PEOPLE), platform=st.sampled_from(PLATFORMS))
    def cancel(self, rid: str, who: str, platform: str) -> None:
        self.run(self.core.service.cancel(account(who, platform), rid))

    @rule()
    def sweep(self) -> None:
        self.run(self.core.service.expire_due())

    @rule(seconds=st.sampled_from([0.3, 0.6, 1.1]))
    def wait(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    # ---- what must always hold ---------------------------------------------------------------

    @invariant()
    def every_request_obeys_the_invariants(self) -> None:
        self.loop.run_until_complete(self._check())

    async def _check(self) -> None:
        executions: dict[str, int] = {}
        for change in self.core.connector.changes:
            executions[change.request_id] = executions.get(change.request_id, 0) + 1
        events: dict[str, list[dict[str, object]]] = {}
        for shard in range(SHARDS):
            for _, fields in await self.redis.xrange(self.core.keys.audit(shard)):
                event = json.loads(fields["e"])
                events.setdefault(str(event["rid"]), []).append(event)
        for rid in self.ids:
            request = await self.core.store.get(rid)
            assert request is not None
            # invariant 2: approvers are never requester, target or owner, and are distinct
            approvers = [a.approver_id for a in request.approvals]
            assert len(set(approvers)) == len(approvers)
            assert not {request.requester_id, request.target_id, request.owner_id} & set(approvers)
            # separation of duties at the opening too: never on one's own or owned account
            assert request.requester_id not in (request.target_id, request.owner_id)
            # invariant 3: at most one execution, and only after a claim
            assert executions.get(rid, 0) <= 1
            if executions.get(rid, 0):
                assert request.state in EXECUTED
            # invariant 1: at the claim, every gate was satisfied and unexpired
            if request.claimed_at is not None:
                at = request.claimed_at
                assert at < request.expires_at
                assert request.owner_gate_satisfied(at)
                assert request.approvals_gate_satisfied(at)
            else:
                assert request.state not in EXECUTED
            # invariant 5: a secret only ever to the request's owner of record
            for got, owner in self.core.notifier.secrets_delivered:
                if got == rid:
                    assert owner == request.owner_id
            # invariant 4: one event per change, in order, counted on the request
            mine = events.get(rid, [])
            assert request.events == len(mine)
            assert mine[0]["kind"] == ("breakglass_opened" if request.plan.breakglass else "opened")
            # every recorded state change is one the transition table allows
            for event in mine[1:]:
                source, target = RequestState(event["from"]), RequestState(event["to"])
                assert source == target or may_move(source, target), event
            assert mine[-1]["to"] == request.state.value or mine[-1]["kind"] in (
                "auto_revoke_sessions",
                "secret_undelivered",
                "late_result",
            )
        await self.trail.seal_all()
        report = await self.trail.verify()
        assert report.ok, report


def test_random_interleavings_keep_every_invariant(redis_url: str) -> None:
    run_state_machine_as_test(
        lambda: TwoKeyMachine(redis_url),
        settings=settings(
            max_examples=15,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
