"""The audit trail on Redis: seal each shard's new events, verify every shard, export for a SIEM.

The chain itself, and why it stays consistent under concurrent appends and sealers and on a
Cluster, is in app/audit/chain.py. This module only reads pages, calls ``seal.lua`` and feeds
the pure functions there. Every call touches the keys of one shard at a time (one hash slot).
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
import structlog
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.audit.chain import (
    BadEntry,
    ChainVerifier,
    Problem,
    ProblemKind,
    ShardVerdict,
    StreamEntry,
    VerifyReport,
    entry_seq,
    genesis,
    is_seal,
    parse_entry,
    render_verify,
    seal_run,
)
from app.domain.errors import Unavailable
from app.domain.models import AuditEvent
from app.store.keys import SHARDS, Keys

__all__ = ["MIN_KEY_LENGTH", "AuditTrail", "VerifyReport", "render_verify"]

log = structlog.get_logger("twokey.audit")

MIN_KEY_LENGTH = 16
EXPORT_SLACK_MS = 60_000
UNAVAILABLE_MESSAGE = (
    "twokey cannot reach its database, so the audit trail could not be read or sealed. "
    "Check that Redis is up and REDIS_URL is right, then try again."
)


def _seal_script_text() -> str:
    return resources.files("app.store").joinpath("lua", "seal.lua").read_text()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(raw: Sequence[Any] | None) -> list[StreamEntry]:
    """XRANGE's reply with text ids and fields, whether or not the client decodes responses."""
    return [
        (_text(sid), {_text(name): _text(value) for name, value in fields.items()})
        for sid, fields in raw or []
    ]


def _stream_id_order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@contextmanager
def _fails_closed() -> Iterator[None]:
    """Invariant 6: Redis being down is one clear message, never a half-read report."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise Unavailable(UNAVAILABLE_MESSAGE) from exc


class AuditTrail:
    """Seal, verify and export the per-shard audit streams written by the gate scripts."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        key: SecretStr,
        *,
        page_size: int = 500,
        max_seal: int = 50_000,
    ) -> None:
        secret = key.get_secret_value()
        if len(secret) < MIN_KEY_LENGTH:
            raise ValueError(
                f"TWOKEY_AUDIT_KEY must be at least {MIN_KEY_LENGTH} characters (use 32 random "
                "bytes, e.g. `openssl rand -hex 32`); it is what makes the audit trail "
                "tamper-evident, so twokey will not start without it"
            )
        if page_size < 1 or max_seal < 1:
            raise ValueError("page_size and max_seal must be at least 1")
        self._redis = redis
        self._keys = keys
        self._key = secret.encode()
        self._page = page_size
        self._max_seal = max_seal
        self._seal_script = redis.register_script(_seal_script_text())

    def __repr__(self) -> str:  # never show the key
        return f"AuditTrail(namespace={self._keys.ns!r})"

    # --- sealing -------------------------------------------------------------------------------

    async def seal_all(self) -> int:
        """Seal what every shard has appended since the last seal; the number of events sealed."""
        total = 0
        for shard in range(SHARDS):
            total += await self.seal(shard)
        return total

    async def seal(self, shard: int) -> int:
        """Seal one shard's unsealed events; returns how many this call sealed (often 0).

        Safe to run from every replica at once: a sealer that loses the compare-and-set stops,
        since the winner has sealed the same events with the same macs and carries on.
        """
        with _fails_closed():
            return await self._seal(shard)

    async def _seal(self, shard: int) -> int:
        seals_key, stream = self._keys.seals(shard), self._keys.audit(shard)
        length, last = await self._seal_state(seals_key)
        if last is not None and not is_seal(last):
            log.error("audit_seal_list_damaged", shard=shard, hint="run `twokey audit verify`")
            return 0
        start = await self._find_event(shard, length + 1)
        if start is None:
            return 0
        prev, cursor, sealed = last or genesis(self._key, self._keys.tag(shard)), start, 0
        while sealed < self._max_seal:
            page = _entries(await self._redis.xrange(stream, min=cursor, count=self._page))
            run = seal_run(self._key, prev, length + 1, page)
            if run.macs:
                args = [str(length), last or "", *run.macs]
                won = int(await self._seal_script(keys=[seals_key], args=args))
                if won == 0:
                    return sealed
                sealed, length = sealed + won, length + won
                last = prev = run.macs[-1]
                cursor = f"({run.last_stream_id}"
            if run.blocked:
                log.warning("audit_sealing_stopped", shard=shard, why=run.blocked)
                break
            if len(page) < self._page:
                break
        return sealed

    async def _seal_state(self, seals_key: str) -> tuple[int, str | None]:
        """The seal list's length and last seal. Read without MULTI (fine on a Cluster): if the
        compare-and-set later succeeds, the list did not grow in between, so both still hold."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.llen(seals_key)
            pipe.lindex(seals_key, -1)
            length, last = await pipe.execute()
        return int(length), (_text(last) if last is not None else None)

    async def _find_event(self, shard: int, seq: int) -> str | None:
        """Stream id of event ``seq``, read backwards from the end (it is in the unsealed tail).

        None when there is nothing to seal, or when the event is missing (logged: a gap that
        ``verify`` reports; the sealer never seals past it).
        """
        if seq == 1:
            return "-"
        stream, cursor, newer = self._keys.audit(shard), "+", 0
        while True:
            raw = await self._redis.xrevrange(stream, max=cursor, min="-", count=self._page)
            page = _entries(raw)
            for stream_id, fields in page:
                found = entry_seq(fields)
                if found == seq:
                    return stream_id
                if found is not None and found < seq:
                    break
                newer += 1
            else:
                if len(page) == self._page:
                    cursor = f"({page[-1][0]}"
                    continue
            _warn_if_gap(shard, seq, newer)
            return None

    # --- verifying -----------------------------------------------------------------------------

    async def verify(self) -> VerifyReport:
        """Recompute every shard's chain and compare with its seals (read-only)."""
        with _fails_closed():
            return VerifyReport([await self._verify_shard(shard) for shard in range(SHARDS)])

    async def verify_shard(self, shard: int) -> ShardVerdict:
        with _fails_closed():
            return await self._verify_shard(shard)

    async def _verify_shard(self, shard: int) -> ShardVerdict:
        keys = self._keys
        seals_key, stream = keys.seals(shard), keys.audit(shard)
        # Order matters: counter, then seal count, then the stream. Events and seals appended
        # while we read can then only add to what we see, never look like a deletion.
        raw_counter = await self._redis.get(keys.audit_seq(shard))
        sealed = int(await self._redis.llen(seals_key))
        counter_text = _text(raw_counter) if raw_counter is not None else "0"
        counter = int(counter_text) if counter_text.isdecimal() else 0
        verifier = ChainVerifier(self._key, keys.tag(shard), sealed)
        cursor, position = "-", 0
        while True:
            page = _entries(await self._redis.xrange(stream, min=cursor, count=self._page))
            seals: list[str] = []
            if page and verifier.checking:
                raw = await self._redis.lrange(seals_key, position, position + len(page))
                seals = [_text(s) for s in raw]
            for i, (stream_id, fields) in enumerate(page):
                verifier.add(stream_id, fields, _at(seals, i), _at(seals, i + 1))
            position += len(page)
            if len(page) < self._page:
                break
            cursor = f"({page[-1][0]}"
        verdict = verifier.finish(counter)
        if verdict.ok and not counter_text.isdecimal():
            detail = f"the event counter holds {counter_text[:40]!r}, which is not a count"
            problem = Problem(ProblemKind.COUNTER_CHANGED, verdict.events + 1, None, detail)
            verdict = ShardVerdict(verdict.shard_tag, verdict.events, sealed, 0, problem)
        return verdict

    # --- exporting -----------------------------------------------------------------------------

    async def export(self, since_ms: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every event at or after ``since_ms`` (all when None), oldest first across shards.

        Each is the event as written, plus ``shard``, ``stream_id`` and, once sealed, ``mac``:
        one JSON line each for a SIEM, which can re-check the chain with the key. An entry that
        is not a valid event is exported as ``{"shard", "stream_id", "invalid", "raw"}``
        rather than skipped: tampering should reach the SIEM too.
        """
        with _fails_closed():
            shards = [self._shard_records(shard, since_ms) for shard in range(SHARDS)]
            async for record in _merge_by_stream_id(shards):
                yield record

    async def events(self, since_ms: int | None = None) -> AsyncIterator[AuditEvent]:
        """The ``AuditLog`` port: valid events as models, oldest first."""
        async for record in self.export(since_ms):
            if "invalid" not in record:
                yield AuditEvent.model_validate(record)

    async def _shard_records(
        self, shard: int, since_ms: int | None
    ) -> AsyncIterator[tuple[tuple[int, int], dict[str, Any]]]:
        # A stream id's time is when XADD ran: the same server and script that read `at`, and
        # never earlier than the stream's last id. Starting the range a little before
        # `since_ms` misses nothing; `at` then decides.
        stream = self._keys.audit(shard)
        cursor = "-" if since_ms is None else f"{max(since_ms - EXPORT_SLACK_MS, 0)}-0"
        while True:
            page = _entries(await self._redis.xrange(stream, min=cursor, count=self._page))
            macs = await self._macs_for(shard, page)
            for (stream_id, fields), mac in zip(page, macs, strict=True):
                record = _record(shard, stream_id, fields, mac)
                at = record.get("at")
                if since_ms is not None and isinstance(at, int) and at < since_ms:
                    continue
                yield _stream_id_order(stream_id), record
            if len(page) < self._page:
                return
            cursor = f"({page[-1][0]}"

    async def _macs_for(self, shard: int, page: list[StreamEntry]) -> list[str | None]:
        """The seal of each entry's seq: one LRANGE when the seqs run on, as they should."""
        if not page:
            return []
        seals_key = self._keys.seals(shard)
        seqs = [entry_seq(fields) for _, fields in page]
        first = seqs[0]
        if first is not None and seqs == list(range(first, first + len(seqs))):
            raw = await self._redis.lrange(seals_key, first - 1, first + len(seqs) - 2)
            found = [_text(s) for s in raw]
            return [_at(found, i) for i in range(len(seqs))]
        valid = [seq for seq in seqs if seq is not None]
        async with self._redis.pipeline(transaction=False) as pipe:
            for seq in valid:
                pipe.lindex(seals_key, seq - 1)
            by_seq = dict(zip(valid, await pipe.execute(), strict=True))
        macs = [by_seq.get(seq) if seq is not None else None for seq in seqs]
        return [_text(mac) if mac is not None else None for mac in macs]


def _warn_if_gap(shard: int, seq: int, newer: int) -> None:
    """Event ``seq`` is not in the stream: fine when nothing came after it, else a gap."""
    if newer:
        log.warning(
            "audit_event_missing",
            shard=shard,
            seq=seq,
            unsealed_after_it=newer,
            hint="run `twokey audit verify`",
        )


def _at(values: Sequence[str], index: int) -> str | None:
    return values[index] if index < len(values) else None


def _record(
    shard: int, stream_id: str, fields: Mapping[str, str], mac: str | None
) -> dict[str, Any]:
    try:
        _, event = parse_entry(fields)
    except BadEntry as exc:
        return {"shard": shard, "stream_id": stream_id, "invalid": str(exc), "raw": dict(fields)}
    record: dict[str, Any] = {**event, "shard": shard, "stream_id": stream_id}
    if mac is not None:
        record["mac"] = mac
    return record


async def _merge_by_stream_id(
    sources: list[AsyncIterator[tuple[tuple[int, int], dict[str, Any]]]],
) -> AsyncIterator[dict[str, Any]]:
    """K-way merge of per-shard streams (each already in stream id order), reading one page
    ahead per shard at most, so an export of any size runs in constant memory."""
    heap: list[tuple[tuple[int, int], int, dict[str, Any]]] = []
    for index, source in enumerate(sources):
        first = await anext(source, None)
        if first is not None:
            heapq.heappush(heap, (first[0], index, first[1]))
    while heap:
        _, index, record = heapq.heappop(heap)
        yield record
        following = await anext(sources[index], None)
        if following is not None:
            heapq.heappush(heap, (following[0], index, following[1]))
