"""The audit trail on a real Redis: appended as the gate scripts do, sealed, tampered with."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from app.audit import AuditTrail, ProblemKind, ShardVerdict, render_verify
from app.audit.chain import ChainHead, genesis, next_mac, read_heads
from app.domain.errors import Unavailable
from app.store.keys import Keys

AUDIT_KEY = SecretStr("integration-audit-key-0123456789")
SHARD = 5

# What the gate scripts do (app/store/lua/common.lua, append_event): INCR the shard's counter
# and XADD the event with a `*` id, in one script. `at` pins the event time and the stream id's
# millisecond part, so export's time filter can be tested without waiting on the clock.
APPEND_LIKE_A_GATE_SCRIPT = """
local seq = redis.call('INCR', KEYS[2])
local event = cjson.decode(ARGV[1])
event['seq'] = seq
local id = '*'
if ARGV[2] == '' then
  local t = redis.call('TIME')
  event['at'] = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  event['at'] = tonumber(ARGV[2])
  id = ARGV[2] .. '-*'
end
redis.call('XADD', KEYS[1], id, 'seq', seq, 'e', cjson.encode(event))
return seq
"""


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace)


@pytest.fixture
def trail(redis_client: aioredis.Redis, keys: Keys) -> AuditTrail:
    return AuditTrail(redis_client, keys, AUDIT_KEY, page_size=4)


async def append(
    redis: aioredis.Redis, keys: Keys, shard: int, count: int = 1, at: int | None = None
) -> None:
    script = redis.register_script(APPEND_LIKE_A_GATE_SCRIPT)
    for _ in range(count):
        event = {
            "rid": "TK-5ABCDEFG",
            "kind": "approved",
            "actor": "bob",
            "role": "approver",
            "ticket": "INC-1234",
            "action": "reset-mfa",
            "target": "alice",
            "tier": "standard",
            "from": "pending",
            "to": "ready",
            "reason": "lost-device",
            "outcome": "ready",
        }
        args = [json.dumps(event), "" if at is None else str(at)]
        await script(keys=[keys.audit(shard), keys.audit_seq(shard)], args=args)


async def entries(
    redis: aioredis.Redis, keys: Keys, shard: int
) -> list[tuple[str, dict[str, str]]]:
    return [(sid, dict(fields)) for sid, fields in await redis.xrange(keys.audit(shard))]


async def rewrite(
    redis: aioredis.Redis, keys: Keys, shard: int, new: list[tuple[str, dict[str, str]]]
) -> None:
    """Replace the stream with ``new``, keeping the stream ids given (an attacker's rewrite)."""
    stream = keys.audit(shard)
    await redis.delete(stream)
    for stream_id, fields in new:
        await redis.xadd(stream, fields, id=stream_id)


def sealer_back_then(redis: aioredis.Redis, keys: Keys) -> AuditTrail:
    """A sealer as it ran when old events were new: its window reaches back to 1970."""
    return AuditTrail(redis, keys, AUDIT_KEY, page_size=4, seal_window_ms=10**13)


async def sealed_trail(redis: aioredis.Redis, keys: Keys, trail: AuditTrail, count: int) -> None:
    await append(redis, keys, SHARD, count)
    assert await trail.seal(SHARD) == count


def expected_seals(keys: Keys, shard: int, stored: list[tuple[str, dict[str, str]]]) -> list[str]:
    key = AUDIT_KEY.get_secret_value().encode()
    macs, mac = [], genesis(key, keys.tag(shard))
    for _, fields in stored:
        mac = next_mac(key, mac, json.loads(fields["e"]))
        macs.append(mac)
    return macs


# --- sealing and verifying an intact trail -----------------------------------------------------


async def test_sealing_builds_the_chain_and_verify_passes(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await append(redis_client, keys, SHARD, 10)
    await append(redis_client, keys, 0, 3)

    assert await trail.seal_all() == 13
    assert await trail.seal_all() == 0

    stored = await entries(redis_client, keys, SHARD)
    assert await redis_client.lrange(keys.seals(SHARD), 0, -1) == expected_seals(
        keys, SHARD, stored
    )
    report = await trail.verify()
    assert report.ok
    assert (report.events, report.sealed, report.unsealed) == (13, 13, 0)
    assert render_verify(report)[0] == 0


async def test_new_events_are_reported_unsealed_then_sealed_onto_the_same_chain(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await sealed_trail(redis_client, keys, trail, 6)
    await append(redis_client, keys, SHARD, 5)

    before = await trail.verify()
    assert before.ok and before.unsealed == 5

    assert await trail.seal(SHARD) == 5
    stored = await entries(redis_client, keys, SHARD)
    seals = await redis_client.lrange(keys.seals(SHARD), 0, -1)
    assert seals == expected_seals(keys, SHARD, stored)
    assert (await trail.verify()).unsealed == 0


async def test_concurrent_sealers_on_separate_connections_make_one_chain(
    redis_url: str, keys: Keys, redis_client: aioredis.Redis
) -> None:
    clients = [aioredis.Redis.from_url(redis_url, decode_responses=True) for _ in range(4)]
    sealers = [AuditTrail(client, keys, AUDIT_KEY, page_size=7) for client in clients]
    try:
        total = 0
        for _ in range(5):
            await append(redis_client, keys, SHARD, 40)
            counts = await asyncio.gather(*(sealer.seal(SHARD) for sealer in sealers))
            total += sum(counts)
            # a loser stops; whoever is left sealed the rest
            total += await sealers[0].seal(SHARD)
        assert total == 200
        stored = await entries(redis_client, keys, SHARD)
        seals = await redis_client.lrange(keys.seals(SHARD), 0, -1)
        assert seals == expected_seals(keys, SHARD, stored)
        assert (await sealers[1].verify()).ok
    finally:
        for client in clients:
            await client.aclose()


async def test_a_sealer_never_seals_past_a_deleted_event(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await sealed_trail(redis_client, keys, trail, 5)
    await append(redis_client, keys, SHARD, 4)
    stored = await entries(redis_client, keys, SHARD)
    await redis_client.xdel(keys.audit(SHARD), stored[5][0])  # event 6, not sealed yet

    assert await trail.seal(SHARD) == 0
    assert await redis_client.llen(keys.seals(SHARD)) == 5
    shard = (await trail.verify()).shards[SHARD]
    assert shard.problem is not None
    assert (shard.problem.kind, shard.problem.seq) == (ProblemKind.MISSING, 6)
    assert shard.problem.stream_id == stored[6][0]


# --- tampering ---------------------------------------------------------------------------------


async def first_problem(trail: AuditTrail) -> tuple[ProblemKind, int, str | None, str]:
    report = await trail.verify()
    code, text = render_verify(report)
    assert code == 1
    problem = report.shards[SHARD].problem
    assert problem is not None
    assert [s.shard_tag for s in report.broken] == [report.shards[SHARD].shard_tag]
    return problem.kind, problem.seq, problem.stream_id, text


async def test_deleting_an_event_fails_verify_naming_it(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await sealed_trail(redis_client, keys, trail, 9)
    stored = await entries(redis_client, keys, SHARD)
    await rewrite(redis_client, keys, SHARD, stored[:3] + stored[4:])

    kind, seq, stream_id, text = await first_problem(trail)

    assert (kind, seq, stream_id) == (ProblemKind.MISSING, 4, stored[4][0])
    assert f"event 4 (gap just before stream id {stored[4][0]}): missing" in text


async def test_editing_an_event_fails_verify_naming_it(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await sealed_trail(redis_client, keys, trail, 9)
    stored = await entries(redis_client, keys, SHARD)
    stream_id, fields = stored[6]
    event = json.loads(fields["e"])
    event["actor"] = "mallory"
    stored[6] = (stream_id, {"seq": fields["seq"], "e": json.dumps(event)})
    await rewrite(redis_client, keys, SHARD, stored)

    kind, seq, where, text = await first_problem(trail)

    assert (kind, seq, where) == (ProblemKind.EDITED, 7, stream_id)
    assert "event 7" in text and "edited" in text


async def test_reordering_two_events_fails_verify_naming_them(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await sealed_trail(redis_client, keys, trail, 9)
    stored = await entries(redis_client, keys, SHARD)
    (id_a, fields_a), (id_b, fields_b) = stored[2], stored[3]
    stored[2], stored[3] = (id_a, fields_b), (id_b, fields_a)
    await rewrite(redis_client, keys, SHARD, stored)

    kind, seq, where, text = await first_problem(trail)

    assert (kind, seq, where) == (ProblemKind.REORDERED, 4, id_a)
    assert "before event 3" in text


async def test_deleting_the_newest_events_fails_verify(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await sealed_trail(redis_client, keys, trail, 9)
    await append(redis_client, keys, SHARD, 2)  # unsealed: deleting them must still show
    stored = await entries(redis_client, keys, SHARD)
    await redis_client.xdel(keys.audit(SHARD), *(sid for sid, _ in stored[-3:]))

    kind, seq, where, text = await first_problem(trail)

    assert (kind, seq, where) == (ProblemKind.TAIL_DELETED, 9, None)
    assert "events 9 to 11 were deleted" in text


async def test_removing_a_seal_fails_verify(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await sealed_trail(redis_client, keys, trail, 6)
    seals_key = keys.seals(SHARD)
    await redis_client.lset(seals_key, 1, "gone")
    await redis_client.lrem(seals_key, 1, "gone")

    kind, seq, _, _ = await first_problem(trail)

    assert (kind, seq) == (ProblemKind.SEAL_MISSING, 2)


async def test_a_changed_counter_fails_verify(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await sealed_trail(redis_client, keys, trail, 3)
    await redis_client.set(keys.audit_seq(SHARD), "reset")

    kind, seq, _, text = await first_problem(trail)

    assert (kind, seq) == (ProblemKind.COUNTER_CHANGED, 4)
    assert "counter holds 'reset'" in text


# --- sealed history cannot be rewritten and re-sealed (issue 16) -------------------------------


def forged(entries_: list[tuple[str, dict[str, str]]], index: int) -> None:
    """Edit one event in place as an attacker would: same stream id, same seq, new actor."""
    stream_id, fields = entries_[index]
    event = json.loads(fields["e"])
    event["actor"] = "mallory"
    entries_[index] = (stream_id, {"seq": fields["seq"], "e": json.dumps(event)})


def renumbered(
    entries_: list[tuple[str, dict[str, str]]], index: int
) -> list[tuple[str, dict[str, str]]]:
    """Delete one event and renumber the later ones so the seqs run on without a gap."""
    out = entries_[:index]
    for stream_id, fields in entries_[index + 1 :]:
        event = json.loads(fields["e"])
        event["seq"] -= 1
        out.append((stream_id, {"seq": str(event["seq"]), "e": json.dumps(event)}))
    return out


async def now_ms(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def old_sealed_trail(redis: aioredis.Redis, keys: Keys, count: int) -> None:
    """``count`` events written an hour ago and sealed then, by that day's sweeper."""
    start = await now_ms(redis) - 3_600_000
    for i in range(count):
        await append(redis, keys, SHARD, at=start + i * 1000)
    assert await sealer_back_then(redis, keys).seal(SHARD) == count


async def verdict_of(trail: AuditTrail, anchors: list[ChainHead] | None = None) -> ShardVerdict:
    report = await trail.verify(anchors)
    code, text = render_verify(report)
    shard = report.shards[SHARD]
    assert (code == 0) == shard.ok, text
    return shard


def logged_heads(logs: Sequence[Mapping[str, Any]]) -> list[ChainHead]:
    """The heads a SIEM would hold: every audit_sealed line, as JSON, read back."""
    lines = [json.dumps(entry) for entry in logs if entry["event"] == "audit_sealed"]
    return read_heads(lines)


async def test_the_reported_attack_edit_trim_and_one_sweep_is_not_resealed(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    """Same ids and seqs, edited actor, seals cut back to before the edit, one seal pass."""
    await sealed_trail(redis_client, keys, trail, 8)
    stored = await entries(redis_client, keys, SHARD)
    forged(stored, 3)
    await rewrite(redis_client, keys, SHARD, stored)
    await redis_client.ltrim(keys.seals(SHARD), 0, 2)

    another_replica = AuditTrail(redis_client, keys, AUDIT_KEY, page_size=4)
    with capture_logs() as logs:
        assert await another_replica.seal_all() == 0
        assert await trail.seal_all() == 0

    assert await redis_client.llen(keys.seals(SHARD)) == 3
    assert [e["event"] for e in logs] == ["audit_seal_list_shrank"] * 2
    assert all(e["log_level"] == "error" for e in logs)
    shard = await verdict_of(another_replica)
    assert shard.problem is not None
    assert (shard.problem.kind, shard.problem.seq) == (ProblemKind.SEALS_REMOVED, 4)
    assert "holds 3 seals but 8 events were sealed" in shard.problem.detail


async def test_xadd_after_xdel_of_old_sealed_events_is_never_resealed_and_fails_verify(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    """Old sealed events replaced by XDEL + XADD under old ids; seals and sealed mark cut."""
    await old_sealed_trail(redis_client, keys, 6)
    stream = keys.audit(SHARD)
    stored = await entries(redis_client, keys, SHARD)
    forged(stored, 4)
    await redis_client.xdel(stream, stored[4][0], stored[5][0])
    # Redis will not reuse a deleted id: the forgeries go in just after it, an hour old still
    last_ms = int(stored[5][0].split("-")[0])
    for n, (_, fields) in enumerate(stored[4:], start=1):
        await redis_client.xadd(stream, fields, id=f"{last_ms}-{n}")
    await redis_client.ltrim(keys.seals(SHARD), 0, 3)
    await redis_client.delete(keys.seals(SHARD) + ":high")

    with capture_logs() as logs:
        assert await trail.seal_all() == 0

    assert await redis_client.llen(keys.seals(SHARD)) == 4
    [fault] = [e for e in logs if e["log_level"] == "error"]
    assert (fault["event"], fault["shard"], fault["seq"]) == ("audit_unsealable_old_events", 5, 5)
    shard = await verdict_of(trail)
    assert shard.problem is not None
    assert (shard.problem.kind, shard.problem.seq) == (ProblemKind.TOO_OLD_TO_SEAL, 5)
    assert shard.problem.stream_id == f"{last_ms}-1"


@pytest.mark.parametrize("old", [False, True], ids=["recent", "old"])
async def test_deleting_and_renumbering_sealed_events_is_never_resealed(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail, old: bool
) -> None:
    if old:
        await old_sealed_trail(redis_client, keys, 8)
    else:
        await sealed_trail(redis_client, keys, trail, 8)
    stored = await entries(redis_client, keys, SHARD)
    await rewrite(redis_client, keys, SHARD, renumbered(stored, 2))
    await redis_client.set(keys.audit_seq(SHARD), 7)
    await redis_client.ltrim(keys.seals(SHARD), 0, 1)
    if old:  # an attacker who knows about the mark removes it too
        await redis_client.delete(keys.seals(SHARD) + ":high")

    assert await AuditTrail(redis_client, keys, AUDIT_KEY).seal_all() == 0

    shard = await verdict_of(trail)
    assert shard.problem is not None
    kind = ProblemKind.TOO_OLD_TO_SEAL if old else ProblemKind.SEALS_REMOVED
    assert (shard.problem.kind, shard.problem.seq) == (kind, 3)


async def test_a_shrunk_seal_list_fails_verify(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await sealed_trail(redis_client, keys, trail, 5)
    await redis_client.rpop(keys.seals(SHARD))

    shard = await verdict_of(AuditTrail(redis_client, keys, AUDIT_KEY))

    assert shard.problem is not None
    assert (shard.problem.kind, shard.problem.seq) == (ProblemKind.SEALS_REMOVED, 5)


async def test_a_shrunk_seal_list_without_its_mark_fails_once_events_are_old(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await old_sealed_trail(redis_client, keys, 5)
    await redis_client.ltrim(keys.seals(SHARD), 0, 1)
    await redis_client.delete(keys.seals(SHARD) + ":high")

    assert await trail.seal_all() == 0
    shard = await verdict_of(trail)

    assert shard.problem is not None
    assert (shard.problem.kind, shard.problem.seq) == (ProblemKind.TOO_OLD_TO_SEAL, 3)


async def test_a_damaged_sealed_mark_stops_sealing_and_fails_verify(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await sealed_trail(redis_client, keys, trail, 2)
    await append(redis_client, keys, SHARD, 1)
    await redis_client.set(keys.seals(SHARD) + ":high", "lots")

    assert await trail.seal_all() == 0
    shard = await verdict_of(trail)

    assert shard.problem is not None
    assert shard.problem.kind is ProblemKind.SEAL_MARK_CHANGED


async def test_a_running_sealer_remembers_what_it_sealed_even_when_the_mark_is_gone(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    with capture_logs() as sealing:
        await sealed_trail(redis_client, keys, trail, 6)
    stored = await entries(redis_client, keys, SHARD)
    forged(stored, 2)
    await rewrite(redis_client, keys, SHARD, stored)
    await redis_client.ltrim(keys.seals(SHARD), 0, 1)
    await redis_client.delete(keys.seals(SHARD) + ":high")

    with capture_logs() as logs:
        assert await trail.seal_all() == 0
    assert [e["event"] for e in logs] == ["audit_seal_list_shrank"]

    # Redis alone no longer shows it (recent events, no mark): the heads logged outside do.
    shard = await verdict_of(trail, logged_heads(sealing))
    assert shard.problem is not None
    assert (shard.problem.kind, shard.problem.seq) == (ProblemKind.ROLLED_BACK, 3)


async def test_anchor_catches_a_rewrite_resealed_by_a_new_sealer(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    with capture_logs() as sealing:
        await sealed_trail(redis_client, keys, trail, 6)
    stored = await entries(redis_client, keys, SHARD)
    forged(stored, 2)
    await rewrite(redis_client, keys, SHARD, stored)
    await redis_client.ltrim(keys.seals(SHARD), 0, 1)
    await redis_client.delete(keys.seals(SHARD) + ":high")
    fresh_process = AuditTrail(redis_client, keys, AUDIT_KEY, page_size=4)
    with capture_logs() as resealing:
        assert await fresh_process.seal_all() == 4  # the limit without an anchor

    shard = await verdict_of(fresh_process, logged_heads(sealing))
    assert shard.problem is not None
    assert (shard.problem.kind, shard.problem.seq) == (ProblemKind.REWRITTEN, 4)
    # the forger's own heads in the same log do not hide the original ones
    both = await verdict_of(fresh_process, logged_heads(sealing + resealing))
    assert both.problem is not None and both.problem.kind is ProblemKind.REWRITTEN


async def test_anchor_catches_a_whole_shard_rolled_back(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    with capture_logs() as sealing:
        await sealed_trail(redis_client, keys, trail, 5)
    heads = logged_heads(sealing)
    await redis_client.delete(
        keys.audit(SHARD), keys.seals(SHARD), keys.audit_seq(SHARD), keys.seals(SHARD) + ":high"
    )

    report = await trail.verify(heads)

    assert not report.ok and report.anchors == len(heads)
    problem = report.shards[SHARD].problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.ROLLED_BACK, 1)
    assert "says event 5 was sealed, but the seal list ends at event 0" in problem.detail


async def test_each_seal_logs_the_chain_head_and_heads_match_the_seal_list(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    with capture_logs() as logs:
        await sealed_trail(redis_client, keys, trail, 6)  # page size 4: two seal calls
    seals = [str(mac) for mac in await redis_client.lrange(keys.seals(SHARD), 0, -1)]

    logged = [e for e in logs if e["event"] == "audit_sealed"]
    assert [(e["shard"], e["chain"], e["seq"], e["mac"]) for e in logged] == [
        (SHARD, keys.tag(SHARD), 4, seals[3]),
        (SHARD, keys.tag(SHARD), 6, seals[5]),
    ]
    assert AUDIT_KEY.get_secret_value() not in json.dumps(logs)
    assert await trail.heads() == [
        {
            "type": "twokey_audit_head",
            "shard": SHARD,
            "chain": keys.tag(SHARD),
            "seq": 6,
            "mac": seals[5],
        }
    ]
    exported = [json.dumps(r) for r in await collect(trail.export())]
    assert read_heads(exported) == [ChainHead(SHARD, n + 1, seals[n]) for n in range(6)]


async def test_an_intact_trail_matches_its_anchors_and_ignores_other_namespaces(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    with capture_logs() as sealing:
        await sealed_trail(redis_client, keys, trail, 6)
    await append(redis_client, keys, SHARD, 2)  # not sealed yet: fine
    elsewhere = ChainHead(SHARD, 99, "0" * 64, "{other:s05}")

    report = await trail.verify([*logged_heads(sealing), elsewhere])

    assert report.ok and report.anchors == 2
    assert "2 chain heads recorded outside Redis all match" in render_verify(report)[1]


async def test_sealing_late_after_an_outage_is_an_operators_explicit_act(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    start = await now_ms(redis_client) - 600_000  # appended, then Redis was down 10 minutes
    await append(redis_client, keys, SHARD, 3, at=start)
    assert await trail.seal_all() == 0
    assert (await verdict_of(trail)).problem is not None

    assert await trail.seal_late(max_age_ms=3_600_000) == 3

    assert (await verdict_of(trail)).ok
    await append(redis_client, keys, SHARD, 2)
    assert await trail.seal_all() == 2


async def test_verify_while_sealers_race_never_sees_a_shrink(
    redis_url: str, keys: Keys, redis_client: aioredis.Redis
) -> None:
    clients = [aioredis.Redis.from_url(redis_url, decode_responses=True) for _ in range(3)]
    sealers = [AuditTrail(client, keys, AUDIT_KEY, page_size=3) for client in clients]
    try:
        for _ in range(6):
            await append(redis_client, keys, SHARD, 10)
            results = await asyncio.gather(
                sealers[0].seal(SHARD), sealers[1].seal(SHARD), sealers[2].verify_shard(SHARD)
            )
            verdict = results[2]
            assert isinstance(verdict, ShardVerdict) and verdict.ok, verdict.problem
        assert (await sealers[2].verify()).ok
    finally:
        for client in clients:
            await client.aclose()


# --- export ------------------------------------------------------------------------------------


async def collect(records: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record async for record in records]


async def test_export_merges_shards_in_time_order_and_filters_by_time(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    t = 10_000_000  # ms; events are hours apart, far beyond export's start-id slack
    plan = [(1, t), (9, 2 * t), (1, 3 * t), (2, 4 * t), (9, 5 * t), (9, 6 * t)]
    for shard, at in plan:
        await append(redis_client, keys, shard, at=at)
    # events from 1970: sealed by a sealer of back then (today's refuses events that old)
    assert await sealer_back_then(redis_client, keys).seal(9) == 3  # shards 1, 2 stay unsealed

    everything = await collect(trail.export())
    recent = await collect(trail.export(since_ms=3 * t))
    just_after = await collect(trail.export(since_ms=3 * t + 1))

    assert [(r["shard"], r["at"]) for r in everything] == plan
    assert [(r["shard"], r["at"]) for r in recent] == plan[2:]
    assert [(r["shard"], r["at"]) for r in just_after] == plan[3:]
    seals_9 = await redis_client.lrange(keys.seals(9), 0, -1)
    assert [r["mac"] for r in everything if r["shard"] == 9] == seals_9
    assert all("mac" not in r for r in everything if r["shard"] != 9)
    first = everything[0]
    assert first["stream_id"].startswith(f"{t}-")
    assert (first["seq"], first["ticket"], first["from"]) == (1, "INC-1234", "pending")
    for record in everything:  # one JSON line each, for a SIEM
        assert "\n" not in json.dumps(record)
    assert [e.at async for e in trail.events(since_ms=5 * t)] == [5 * t, 6 * t]


async def test_export_pages_through_a_large_shard(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await append(redis_client, keys, 3, 23)
    assert await trail.seal(3) == 23
    records = await collect(trail.export())
    assert [r["seq"] for r in records] == list(range(1, 24))
    assert all(len(r["mac"]) == 64 for r in records)


async def test_export_passes_a_tampered_entry_on_to_the_siem(
    redis_client: aioredis.Redis, keys: Keys, trail: AuditTrail
) -> None:
    await append(redis_client, keys, SHARD, 2)
    stored = await entries(redis_client, keys, SHARD)
    stored[1] = (stored[1][0], {"seq": "2", "e": "rewritten"})
    await rewrite(redis_client, keys, SHARD, stored)

    records = await collect(trail.export())

    assert records[1]["stream_id"] == stored[1][0]
    assert "not valid JSON" in records[1]["invalid"]


# --- failing closed ----------------------------------------------------------------------------


def test_a_short_audit_key_is_refused(redis_client: aioredis.Redis, keys: Keys) -> None:
    with pytest.raises(ValueError, match="TWOKEY_AUDIT_KEY must be at least 16"):
        AuditTrail(redis_client, keys, SecretStr("short"))


def test_the_trail_never_shows_its_key(trail: AuditTrail) -> None:
    assert AUDIT_KEY.get_secret_value() not in repr(trail)


async def test_redis_down_is_one_clear_error(keys: Keys) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    no_retry = Retry(NoBackoff(), retries=0)
    client = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True, retry=no_retry)
    trail = AuditTrail(client, keys, AUDIT_KEY)
    try:
        with pytest.raises(Unavailable, match="cannot reach its database"):
            await trail.verify()
        with pytest.raises(Unavailable):
            await trail.seal_all()
        with pytest.raises(Unavailable):
            await collect(trail.export())
    finally:
        await client.aclose()


async def test_an_idle_sealer_reads_no_stream(
    redis_client: aioredis.Redis, redis_url: str, keys: Keys, trail: AuditTrail, namespace: str
) -> None:
    """Issue 12: with events in every shard and nothing new, a pass is one round trip of
    counters; it reads no stream (the old sealer scanned every shard's tail every second)."""
    for shard in range(16):
        await append(redis_client, keys, shard, count=3)
    assert await trail.seal_all() == 48
    sentinel = f"{namespace}:idle-sentinel"
    watcher = aioredis.Redis.from_url(redis_url, decode_responses=True)
    seen: list[str] = []
    try:
        async with watcher.monitor() as monitor:

            async def watch() -> None:
                while True:
                    command = (await monitor.next_command())["command"]
                    if sentinel in command:
                        return
                    if namespace in command:
                        seen.append(command.split(" ", 1)[0].upper())

            watching = asyncio.create_task(watch())
            await asyncio.sleep(0.1)
            assert await trail.seal_all() == 0
            await redis_client.get(sentinel)
            await asyncio.wait_for(watching, 10)
    finally:
        await watcher.aclose()
    assert seen and set(seen) <= {"GET", "LLEN"}, seen
    assert len(seen) == 3 * 16
    await append(redis_client, keys, 7)
    assert await trail.seal_all() == 1  # a new event is still sealed on the next pass
