"""twokey on a real Redis Cluster (issue 13): three primaries started by the test.

Every script runs with keys of one hash slot (a Cluster refuses anything else with CROSSSLOT),
a whole workflow executes exactly once, the audit chain seals and `twokey audit verify` passes,
and REDIS_URL takes the cluster form.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.crc import key_slot

from app.audit.trail import AuditTrail
from app.cli import main
from app.domain.errors import Unavailable
from app.domain.models import Action, RequestState
from app.store.connect import BadRedisUrl, connect, is_cluster
from app.store.keys import SHARDS, Keys
from app.store.ledger import RedisMessageLedger
from tests.helpers import build_core, chat, policy_text
from tests.valkey_servers import start_cluster

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


def _migrate_slot(ports: list[int], slot: int, stop: threading.Event) -> int:
    """Move ``slot`` to another primary the classic way (IMPORTING/MIGRATING, MIGRATE key by
    key, SETSLOT NODE), slowly, while traffic runs. Returns the port that now holds it."""
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
        while True:
            keys = nodes[source].execute_command("CLUSTER GETKEYSINSLOT", slot, 1)
            if not keys:
                break
            nodes[source].execute_command(
                "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
            )
            time.sleep(0.1)
        for port in (target, source, *[p for p in ports if p not in (source, target)]):
            nodes[port].execute_command("CLUSTER SETSLOT", slot, "NODE", ids[target])
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
