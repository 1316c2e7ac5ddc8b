"""Audit events for a report, each checked against its shard's chain as it streams past.

A report is evidence only if what it counts verifies, so it cannot read ``AuditTrail.export``
(which hands out whatever the stream holds) and then trust it. It reads each shard the way
``AuditTrail.verify`` does (sealed mark, counter, seal count, then stream and seal list page by
page, in that order so concurrent appends never look like deletions), feeds every entry to the
same ``ChainVerifier``, and passes an event on as evidence only when its mac matched its seal
while the chain up to it was intact. Everything else (not sealed yet, or at or after the first
bad event of its shard) goes to the sink as unverified, never counted. One shard at a time, one
page at a time: memory does not grow with the trail.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from pydantic import SecretStr

from app.audit.chain import (
    SEAL_WINDOW_MS,
    ChainHead,
    ChainVerifier,
    counts_checked,
    entry_seq,
    stream_entries,
    stream_text,
)
from app.audit.trail import anchors_by_shard
from app.store.keys import SHARDS, Keys

PAGE_SIZE = 2_000


@dataclass(frozen=True)
class ShardCheck:
    """What verifying one shard found, as the report states it."""

    shard: int
    chain: str
    events: int
    sealed: int
    evidence: int
    """Events whose seal verified: the only ones the report counts."""
    head_seq: int
    head_mac: str | None
    """The last verified event's seq and mac: compare with a copy (``--anchor``) later."""
    problem: str | None = None
    problem_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class EventSink(Protocol):
    """Where the verified events go (see app/report/aggregate.py)."""

    def evidence(self, shard: int, event: dict[str, Any]) -> None: ...

    def unverified(
        self, shard: int, stream_id: str, fields: Mapping[str, str], why: str
    ) -> None: ...

    def shard_done(self, shard: int) -> None: ...


_text = stream_text
_entries = stream_entries


def _count(raw: Any) -> int:
    text = _text(raw) if raw is not None else "0"
    return int(text) if text.isascii() and text.isdecimal() else 0


async def read_verified(
    redis: aioredis.Redis,
    keys: Keys,
    key: SecretStr,
    sink: EventSink,
    *,
    anchors: Iterable[ChainHead] | None = None,
    page_size: int = PAGE_SIZE,
    seal_window_ms: int = SEAL_WINDOW_MS,
    previous_keys: Sequence[SecretStr] = (),
) -> list[ShardCheck]:
    """Feed every shard's events to ``sink`` (evidence or not) and return each shard's check.
    ``previous_keys``: the keys that sealed before ``key`` (TWOKEY_AUDIT_KEYS_PREVIOUS), as
    `audit verify` takes them: a rotation leaves every earlier seal evidence."""
    secret = key.get_secret_value().encode()
    previous = [old.get_secret_value().encode() for old in previous_keys]
    previous = [old for old in previous if old != secret]
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    by_shard = anchors_by_shard(keys, anchors or ())
    checks = []
    for shard in range(SHARDS):
        checks.append(
            await _read_shard(
                redis,
                keys,
                secret,
                shard,
                sink,
                now_ms - seal_window_ms,
                by_shard.get(shard),
                page_size,
                previous,
            )
        )
        sink.shard_done(shard)
    return checks


async def _read_shard(
    redis: aioredis.Redis,
    keys: Keys,
    secret: bytes,
    shard: int,
    sink: EventSink,
    not_before_ms: int,
    anchors: Mapping[int, set[str]] | None,
    page_size: int,
    previous: Sequence[bytes] = (),
) -> ShardCheck:
    seals_key, stream = keys.seals(shard), keys.audit(shard)
    # The order AuditTrail.verify reads in (app/audit/trail.py): mark, counter, seal count,
    # then the stream; the mark key is the one seal.lua keeps beside the seal list.
    raw_mark, raw_counter = (
        await redis.get(seals_key + ":high"),
        await redis.get(keys.audit_seq(shard)),
    )
    mark_text = _text(raw_mark) if raw_mark is not None else "0"
    counter_text = _text(raw_counter) if raw_counter is not None else "0"
    mark, counter = _count(raw_mark), _count(raw_counter)
    sealed = int(await redis.llen(seals_key))
    verifier = ChainVerifier(
        secret,
        keys.tag(shard),
        sealed,
        sealed_mark=mark,
        not_before_ms=not_before_ms,
        anchors=anchors,
        previous_keys=previous,
    )
    cursor, position, evidence, head_seq = "-", 0, 0, 0
    head_mac: str | None = None
    while True:
        page = _entries(await redis.xrange(stream, min=cursor, count=page_size))
        seals: list[str] = []
        if page and verifier.checking:
            raw = await redis.lrange(seals_key, position, position + len(page))
            seals = [_text(s) for s in raw]
        for i, (stream_id, fields) in enumerate(page):
            seal = seals[i] if i < len(seals) else None
            verifier.add(stream_id, fields, seal, seals[i + 1] if i + 1 < len(seals) else None)
            if verifier.checking and seal is not None:
                # Its mac matched its seal (otherwise checking would be False): evidence.
                event = json.loads(fields["e"])
                evidence += 1
                head_seq, head_mac = event["seq"], seal
                sink.evidence(shard, event)
            elif verifier.checking:
                sink.unverified(shard, stream_id, fields, "not sealed yet")
            else:
                seq = entry_seq(fields)
                why = "at or after the first bad event of its shard"
                if seq is not None and seq <= head_seq:
                    why = "out of order, after the first bad event of its shard"
                sink.unverified(shard, stream_id, fields, why)
        position += len(page)
        if len(page) < page_size:
            break
        cursor = f"({page[-1][0]}"
    verdict = counts_checked(verifier.finish(counter), counter_text, mark_text, sealed)
    problem = verdict.problem
    return ShardCheck(
        shard=shard,
        chain=keys.tag(shard),
        events=verdict.events,
        sealed=sealed,
        evidence=evidence,
        head_seq=head_seq,
        head_mac=head_mac,
        problem=problem.describe() if problem else None,
        problem_kind=problem.kind.value if problem else None,
    )
