"""twokey on a real Redis Cluster (issue 13): three primaries started by the test.

Every script runs with keys of one hash slot (a Cluster refuses anything else with CROSSSLOT),
a whole workflow executes exactly once, the audit chain seals and `twokey audit verify` passes,
and REDIS_URL takes the cluster form. On a Cluster with a replica per primary, a claim is
durable only once the replica of the node that holds it has it (WAIT on the claim's own
connection), also while its slot moves.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import cast

import pytest
import redis
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from app.audit.trail import AuditTrail
from app.cli import main
from app.domain.errors import Unavailable
from app.domain.models import Action, RequestState
from app.ports import GateCode
from app.store.connect import BadRedisUrl, connect, is_cluster
from app.store.keys import SHARDS, Keys
from app.store.ledger import RedisMessageLedger
from tests.helpers import Core, build_core, chat, policy_text
from tests.valkey_servers import Processes, start_cluster, wait_for

AUDIT_KEY = "a-test-audit-key-that-is-long-enough"


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    procs, ports = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield ports
    finally:
        procs.stop()


@pytest.fixture
def cluster_url(cluster_ports: list[int]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster_ports[:2]) + "/"


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(cluster_url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


def test_cluster_urls_are_checked_with_clear_words() -> None:
    with pytest.raises(BadRedisUrl, match="is not host:port"):
        connect("redis+cluster://127.0.0.1/")
    with pytest.raises(BadRedisUrl, match="only database 0"):
        connect("redis+cluster://127.0.0.1:7000/3")


def test_every_shard_key_shares_the_shard_slot() -> None:
    """keys.py: a shard's keys, and a person's, each land in one slot."""
    keys = Keys("tk")
    for shard in range(SHARDS):
        slots = {
            key_slot(k.encode())
            for k in (
                keys.due(shard),
                keys.open_requests(shard),
                keys.open_index(shard),
                keys.reviews(shard),
                keys.audit(shard),
                keys.audit_seq(shard),
                keys.seals(shard),
                keys.seals(shard) + ":high",
                keys.audit_forward_checkpoint(shard, "sink"),
                keys.audit_forward_lease(shard, "sink"),
            )
        }
        assert len(slots) == 1
    person = {
        key_slot(keys.requester_history("bob").encode()),
        key_slot(keys.refusals("bob").encode()),
    }
    assert len(person) == 1


async def test_a_workflow_runs_once_and_the_trail_verifies_on_a_cluster(
    cluster: aioredis.Redis, namespace: str
) -> None:
    assert is_cluster(cluster)
    core = build_core(cluster, namespace)
    persistence = await core.store.check_persistence()
    assert persistence.aof
    # Targets in several shards, hence several nodes.
    rids = []
    for target in ("alice", "dave"):
        rids.append(await core.open_mfa_reset(target=target))
    for rid, owner in zip(rids, ("alice", "dave"), strict=True):
        await core.service.confirm_owner(chat(owner), rid)
        decision = await core.service.approve(chat("carol"), rid)
        assert decision.request.state is RequestState.COMPLETED
        again = await core.service.approve(chat("carol"), rid)
        assert again.request.state is RequestState.COMPLETED
    assert len(core.connector.changes) == 2
    await core.service.expire_due()
    assert len(core.connector.changes) == 2
    # Listing walks every shard's index; refusals and requester history live in the person's slot.
    listed = await core.store.open_requests_for("bob", ["helpdesk-leads"])
    assert listed == []
    await core.store.note_refusal("mallory", rids[0], "not_allowed", 60_000)
    cancel = await core.service.open(
        chat("bob"), chat("erin"), Action.RESET_MFA.value, "INC-2000", "lost-device"
    )
    assert [r.id for r in await core.store.open_requests()] == [cancel.request.id]
    await core.service.cancel(chat("bob"), cancel.request.id)
    # The owner's "this wasn't me" (flag key), a denial, a dispute (and its automatic sign-out,
    # a request of its own): each a script on the target's shard.
    fraud = await core.service.open(
        chat("bob"), chat("erin"), Action.RESET_MFA.value, "INC-2001", "lost-device"
    )
    rejected = await core.service.reject_by_owner(chat("erin"), fraud.request.id)
    assert rejected.request.state is RequestState.REJECTED_BY_OWNER
    denied = await core.service.open(
        chat("bob"), chat("frank"), Action.RESET_MFA.value, "INC-2002", "lost-device"
    )
    assert (
        await core.service.deny(chat("carol"), denied.request.id, "not verified")
    ).request.state is RequestState.DENIED
    disputed = await core.service.dispute(chat("alice"), rids[0])
    assert disputed.request.disputed_at
    ledger = RedisMessageLedger(cluster, core.keys)
    assert await ledger.claim_once("test", rids[0], 60)

    trail = AuditTrail(cluster, core.keys, SecretStr(AUDIT_KEY))
    assert await trail.seal_all() > 0
    report = await trail.verify()
    assert report.ok, report
    assert len(await trail.heads()) >= 2


async def test_twokey_audit_verify_passes_on_a_cluster(
    cluster: aioredis.Redis,
    cluster_url: str,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    core = build_core(cluster, namespace)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    monkeypatch.setenv("REDIS_URL", cluster_url)
    monkeypatch.setenv("TWOKEY_NAMESPACE", namespace)
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", AUDIT_KEY)
    monkeypatch.setenv("TWOKEY_DATA_DIR", str(tmp_path))
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0


async def test_every_other_gate_script_names_keys_of_one_slot(
    cluster: aioredis.Redis, namespace: str
) -> None:
    """Scripts the workflow above does not reach, run on a Cluster (CROSSSLOT would raise)."""
    core = build_core(cluster, namespace)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    request = await core.store.get(rid)
    assert request is not None
    replies = [
        await core.store.tick(rid),
        await core.store.annotate(rid, "note", "twokey", "cluster test", "noted"),
        await core.store.withdraw_gates(rid, ["carol"], True, "left the company"),
        await core.store.close_review(rid, "ops", "cli", "checked", by_operator=True),
        await core.store.claim_lost(request, "not-the-token", "completed", "done", 3600),
    ]
    assert all(reply.code is not None for reply in replies)
    assert (await AuditTrail(cluster, core.keys, SecretStr(AUDIT_KEY)).verify()).ok


def _migrate_slot(
    ports: list[int],
    slot: int,
    stop: threading.Event,
    *,
    pause: float = 0.1,
    finish: bool = True,
    while_keys_move: Callable[[], AbstractContextManager[object]] = nullcontext,
    at_least: float = 0.0,
) -> int:
    """Move ``slot`` to another primary the classic way (IMPORTING/MIGRATING, MIGRATE key by
    key, SETSLOT NODE), slowly, while traffic runs. Returns the port that now holds it (or,
    without ``finish``, will: every key moved, both nodes still MIGRATING/IMPORTING).
    ``while_keys_move`` is entered while the keys move, for ``at_least`` seconds (SETSLOT
    itself waits for replicas on Valkey 8, so it stays outside)."""
    nodes = {
        port: redis.Redis(host="127.0.0.1", port=port, decode_responses=True) for port in ports
    }
    try:
        ids = {port: node.execute_command("CLUSTER MYID") for port, node in nodes.items()}
        source = next(
            int(primary[1])
            for first, last, primary, *_ in nodes[ports[0]].execute_command("CLUSTER SLOTS")
            if int(first) <= slot <= int(last)
        )
        target = next(port for port in ports if port != source)
        nodes[target].execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source])
        nodes[source].execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target])
        until = time.monotonic() + at_least
        with while_keys_move():
            while True:
                keys = nodes[source].execute_command("CLUSTER GETKEYSINSLOT", slot, 1)
                if not keys and time.monotonic() >= until:
                    break
                if keys:
                    nodes[source].execute_command(
                        "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
                    )
                time.sleep(pause)
        if finish:
            _finish_migration(ports, slot, target)
        return target
    finally:
        stop.set()
        for node in nodes.values():
            node.close()


async def test_requests_run_once_while_their_slot_moves_to_another_node(
    cluster: aioredis.Redis, cluster_ports: list[int], namespace: str
) -> None:
    """Resharding mid-traffic: the target's shard moves to another node (the classic way, key
    by key) while requests on it are opened, confirmed and approved. While its keys are split
    between nodes a script cannot run there (TRYAGAIN): twokey fails closed with its clear
    message; afterwards everything works, nothing ran twice, and the trail verifies."""
    core = build_core(cluster, namespace, policy=policy_text(velocity=""))
    target = "alice"
    slot = key_slot(core.keys.target_history(target).encode())
    attempted: list[str] = []

    async def one() -> bool:
        try:
            rid = await core.open_mfa_reset(target=target)
            attempted.append(rid)
            await core.service.confirm_owner(chat(target), rid)
            decision = await core.service.approve(chat("carol"), rid)
        except Unavailable as exc:
            assert "cannot reach its database" in str(exc)
            await asyncio.sleep(0.05)
            return False
        assert decision.request.state is RequestState.COMPLETED, decision.request
        return True

    for _ in range(3):  # the slot holds this namespace's keys before it moves
        assert await one()
    stop = threading.Event()
    mover = asyncio.create_task(asyncio.to_thread(_migrate_slot, cluster_ports, slot, stop))
    while_moving = []
    while not stop.is_set():
        while_moving.append(await one())
    moved_to = await mover
    assert while_moving, "the slot moved before any request was tried"
    print(f"while moving: {sum(while_moving)} completed, {while_moving.count(False)} refused")
    assert moved_to in cluster_ports
    for _ in range(3):  # on its new node
        assert await one()
    ran = [change.request_id for change in core.connector.changes]
    assert len(ran) == len(set(ran)), "a request ran twice"
    for rid in attempted:
        stored = await core.store.get(rid)
        if stored is not None and rid in ran:
            assert stored.state is RequestState.COMPLETED
    trail = AuditTrail(cluster, core.keys, SecretStr(AUDIT_KEY))
    await trail.seal_all()
    report = await trail.verify()
    assert report.ok, report


def _finish_migration(ports: list[int], slot: int, target: int) -> None:
    """SETSLOT NODE on every primary, the target first: ``slot`` now belongs to ``target``."""
    nodes = {
        port: redis.Redis(host="127.0.0.1", port=port, decode_responses=True) for port in ports
    }
    try:
        target_id = nodes[target].execute_command("CLUSTER MYID")
        for port in (target, *[p for p in ports if p != target]):
            wait_for(  # replicas just thawed may take a moment to acknowledge (Valkey 8)
                lambda n=nodes[port]: n.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id),
                20,
                "the slot's new owner is set",
            )
    finally:
        for node in nodes.values():
            node.close()


# ---- the claim is durable on a Cluster: WAIT on the claim's own connection, its own node ----


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """Three primaries, each with one replica (so WAIT 1 has someone to count)."""
    procs, _ = start_cluster(tmp_path_factory.mktemp("replicated"), replicas=True)
    try:
        yield procs
    finally:
        for process in procs.running:  # a test may have left one stopped
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
        procs.stop()


@pytest.fixture
async def replicated_cluster(replicated: Processes) -> AsyncIterator[aioredis.Redis]:
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in replicated.replica_of) + "/"
    client = connect(url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


@contextmanager
def replicas_paused(procs: Processes) -> Iterator[None]:
    """Every replica frozen (SIGSTOP): connected, so its primary still counts it, but it
    acknowledges nothing, as a replica stuck on a slow disk or a long GC pause would."""
    stopped = [procs.by_name[f"node-{port}"] for port in procs.replica_of.values()]
    for process in stopped:
        os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for process in stopped:
            os.kill(process.pid, signal.SIGCONT)


def _replica_has(procs: Processes, primary: int, key: str, field: str) -> str | None:
    replica = redis.Redis(host="127.0.0.1", port=procs.replica_of[primary], decode_responses=True)
    try:
        replica.execute_command("READONLY")
        return replica.hget(key, field)  # type: ignore[return-value]
    finally:
        replica.close()


def _owner_port(cluster: aioredis.Redis, key: str) -> int:
    return int(cast(RedisCluster, cluster).get_node_from_key(key).port)  # type: ignore[union-attr]


async def test_a_claim_is_durable_once_the_replica_of_its_node_has_it(
    replicated_cluster: aioredis.Redis, replicated: Processes, namespace: str
) -> None:
    core = build_core(replicated_cluster, namespace)
    persistence = await core.store.check_persistence()
    assert persistence.replicas == 1 and persistence.aof
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    decision = await core.service.approve(chat("carol"), rid)
    assert decision.request.state is RequestState.COMPLETED
    assert [change.request_id for change in core.connector.changes] == [rid]
    key = core.keys.request(rid)
    primary = _owner_port(replicated_cluster, key)
    # WAIT 1 returned only once the replica had the claim (it has the result by now too).
    await asyncio.sleep(0.2)
    assert await asyncio.to_thread(_replica_has, replicated, primary, key, "state") == "completed"


async def test_a_claim_no_replica_acknowledges_runs_nothing(
    replicated_cluster: aioredis.Redis, replicated: Processes, namespace: str
) -> None:
    """The replicas stop acknowledging (frozen, still connected): WAIT on the claim's own
    connection times out, so nothing runs and the request ends failed, nothing changed. (A
    WAIT on another, idle connection would have answered 1 at once.)"""
    core = build_core(replicated_cluster, namespace)
    assert (await core.store.check_persistence()).replicas == 1
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    with replicas_paused(replicated):
        decision = await core.service.approve(chat("carol"), rid)
    assert decision.request.state is RequestState.FAILED, decision.request
    assert "could not make its claim durable" in decision.request.outcome_detail
    assert "nothing was changed" in decision.request.outcome_detail
    assert core.connector.changes == []
    # Once the replicas answer again, the next request runs.
    again = await core.open_mfa_reset(target="dave")
    await core.service.confirm_owner(chat("dave"), again)
    assert (await core.service.approve(chat("carol"), again)).request.state is (
        RequestState.COMPLETED
    )
    assert [change.request_id for change in core.connector.changes] == [again]


async def _ready(core: Core, target: str) -> str:
    """A request approved by the store's gate script (READY), its claim not yet tried."""
    rid = await core.open_mfa_reset(target=target)
    await core.service.confirm_owner(chat(target), rid)
    opened = await core.store.get(rid)
    assert opened is not None
    reply = await core.store.approve(rid, "carol", "slack", [opened.plan.approver_role])
    assert reply.request is not None and reply.request.state is RequestState.READY, reply
    return rid


async def test_a_claim_follows_moved_and_ask_and_waits_on_the_node_that_took_it(
    replicated_cluster: aioredis.Redis, replicated: Processes, namespace: str
) -> None:
    """The client's slot map is stale when the claim is sent: MOVED (the slot moved for good)
    and ASK (its keys are already on the importing node) are followed on a pinned connection
    of the new node, and the wait runs there, after the claim: durable once that node's
    replica has it, NOT_DURABLE while that replica is frozen."""
    core = build_core(replicated_cluster, namespace)
    await core.store.check_persistence()
    ports = list(replicated.replica_of)
    for target, finish, frozen in (
        ("alice", True, False),
        ("dave", False, False),
        ("erin", False, True),
    ):
        rid = await _ready(core, target)
        key = core.keys.request(rid)
        slot = key_slot(key.encode())
        before = _owner_port(replicated_cluster, key)
        moved_to = await asyncio.to_thread(
            _migrate_slot, ports, slot, threading.Event(), pause=0, finish=finish
        )
        assert moved_to != before and _owner_port(replicated_cluster, key) == before  # stale
        if frozen:  # ASK followed, but no replica of the new node acknowledges: not durable
            with replicas_paused(replicated):
                reply = await core.store.claim(rid, "twokey", 60_000, "token-" + rid)
            assert reply.code is GateCode.NOT_DURABLE, reply
            await asyncio.to_thread(_finish_migration, ports, slot, moved_to)
            continue
        reply = await core.store.claim(rid, "twokey", 60_000, "token-" + rid)
        assert reply.code is GateCode.OK, reply
        assert reply.request is not None and reply.request.state is RequestState.EXECUTING
        if not finish:
            await asyncio.to_thread(_finish_migration, ports, slot, moved_to)
        stored = await core.store.get(rid)
        assert stored is not None and stored.state is RequestState.EXECUTING
        replica_state = await asyncio.to_thread(_replica_has, replicated, moved_to, key, "state")
        assert replica_state == "executing"
    assert core.connector.changes == []


async def test_while_a_slot_moves_nothing_runs_that_is_not_durable(
    replicated_cluster: aioredis.Redis, replicated: Processes, namespace: str
) -> None:
    """Resharding while approved requests execute, every replica frozen while the keys move:
    whatever the claim meets (TRYAGAIN while the keys are split, ASK once they are all on the
    importing node, a wait that times out), an execution tried wholly inside that window ends
    failed or refused, never with a connector run; afterwards the rest complete on the slot's
    new node, each once. (Opening a request in a slot mid-move is refused by the Cluster
    itself: a script that creates a key there gets TRYAGAIN.)"""
    core = build_core(replicated_cluster, namespace, policy=policy_text(velocity=""))
    await core.store.check_persistence()
    ready = [await _ready(core, "alice") for _ in range(8)]
    slot = key_slot(core.keys.request(ready[0]).encode())
    frozen = threading.Event()
    inside: list[str] = []
    outside: list[str] = []

    @contextmanager
    def frozen_replicas() -> Iterator[None]:
        with replicas_paused(replicated):
            frozen.set()
            try:
                yield
            finally:
                frozen.clear()

    async def execute(rid: str) -> str:
        started_frozen = frozen.is_set()
        ran_before = len(core.connector.changes)
        try:
            reply = await core.service.execute(rid)
            outcome = reply.request.state.value if reply.request else str(reply.code)
        except Unavailable as exc:
            assert "cannot reach its database" in str(exc)
            await asyncio.sleep(0.05)
            outcome = "refused"
        if started_frozen and frozen.is_set():
            inside.append(outcome)
            assert len(core.connector.changes) == ran_before, "ran while no replica could ack"
        else:
            outside.append(outcome)
        return outcome

    stop = threading.Event()
    mover = asyncio.create_task(
        asyncio.to_thread(
            _migrate_slot,
            list(replicated.replica_of),
            slot,
            stop,
            pause=0.1,
            while_keys_move=frozen_replicas,
            at_least=5.0,
        )
    )
    while not stop.is_set() and ready:
        if frozen.is_set():
            await execute(ready.pop())
        else:
            await asyncio.sleep(0.05)
    await mover
    print(f"replicas frozen: {inside}; afterwards: {outside}")
    assert inside and set(inside) <= {"failed", "refused"}, inside
    assert ready, "every request was tried while the slot moved"
    for rid in ready:  # on the slot's new node, replicas answering again
        assert await execute(rid) == "completed"
    ran = [change.request_id for change in core.connector.changes]
    assert len(ran) == len(set(ran)) == outside.count("completed")
