"""The audit trail on Redis: seal each shard's new events, verify every shard, export for a SIEM.

The chain itself, and why it stays consistent under concurrent appends and sealers and on a
Cluster, is in app/audit/chain.py. This module only reads pages, calls ``seal.lua`` and feeds
the pure functions there. Every call touches the keys of one shard at a time (one hash slot).
Each seal logs the new chain head (``audit_sealed``: shard, chain, seq, mac) so it is recorded
outside Redis; never the key.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
import structlog
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.audit.chain import (
    SEAL_WINDOW_MS,
    BadEntry,
    ChainHead,
    ChainVerifier,
    ShardVerdict,
    StreamEntry,
    VerifyReport,
    counts_checked,
    entry_seq,
    genesis,
    head_record,
    is_seal,
    key_id,
    parse_entry,
    render_verify,
    seal_run,
    sealed_by,
    stream_entries,
    stream_id_ms,
    stream_text,
)
from app.domain.errors import Unavailable
from app.domain.models import AuditEvent
from app.metrics import AUDIT_FAULTS, AUDIT_UNSEALED_AGE
from app.store.connect import keyless
from app.store.keys import SHARDS, Keys
from app.store.redis_store import CLUSTER_MOVING

__all__ = ["MIN_KEY_LENGTH", "SEAL_WINDOW_MS", "AuditTrail", "VerifyReport", "render_verify"]

log = structlog.get_logger("twokey.audit")

MIN_KEY_LENGTH = 16
EXPORT_SLACK_MS = 60_000
UNAVAILABLE_MESSAGE = (
    "twokey cannot reach its database, so the audit trail could not be read or sealed. "
    "Check that Redis is up and REDIS_URL is right, then try again."
)


def _seal_script_text() -> str:
    return resources.files("app.store").joinpath("lua", "seal.lua").read_text()


_text = stream_text
_entries = stream_entries


def anchors_by_shard(keys: Keys, heads: Iterable[ChainHead]) -> dict[int, dict[int, set[str]]]:
    """shard -> seq -> macs recorded outside Redis, for this namespace's chains only."""
    found: dict[int, dict[int, set[str]]] = {}
    for head in heads:
        if not keys.holds_chain(head.shard, head.chain):
            continue
        found.setdefault(head.shard, {}).setdefault(head.seq, set()).add(head.mac)
    return found


def _count(text: str) -> int | None:
    """A non-negative decimal count as Redis stores it, else None (tampered with)."""
    return int(text) if text.isascii() and text.isdecimal() else None


def _stream_id_order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@contextmanager
def _fails_closed() -> Iterator[None]:
    """Invariant 6: Redis being down is one clear message, never a half-read report."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError, *CLUSTER_MOVING) as exc:
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
        seal_window_ms: int = SEAL_WINDOW_MS,
        previous_keys: Sequence[SecretStr] = (),
    ) -> None:
        """``previous_keys``: keys that sealed before ``key`` (TWOKEY_AUDIT_KEYS_PREVIOUS),
        newest first; only verified with, never sealed with (README, "Rotating the audit key")."""
        secret = key.get_secret_value()
        previous = [old.get_secret_value().encode() for old in previous_keys]
        if len(secret) < MIN_KEY_LENGTH:
            raise ValueError(
                f"TWOKEY_AUDIT_KEY must be at least {MIN_KEY_LENGTH} characters (use 32 random "
                "bytes, e.g. `openssl rand -hex 32`); it is what makes the audit trail "
                "tamper-evident, so twokey will not start without it"
            )
        if page_size < 1 or max_seal < 1 or seal_window_ms < 1:
            raise ValueError("page_size, max_seal and seal_window_ms must be at least 1")
        self._redis = redis
        self._keys = keys
        self._key = secret.encode()
        self._previous = [old for old in previous if old != self._key]
        self._kid = key_id(self._key)
        self._own_seal: dict[int, int] = {}
        """Per shard, a seal list length known to end with a seal of this key ring."""
        self._page = page_size
        self._max_seal = max_seal
        self._window = seal_window_ms
        self._seal_script = redis.register_script(_seal_script_text())
        self._sealed_high: dict[int, int] = {}
        """Per shard, the longest seal list this process has seen: a memory outside Redis."""
        self._reported: dict[int, tuple[str, int]] = {}
        self._kid_noted = False

    def __repr__(self) -> str:  # never show the key
        return f"AuditTrail(namespace={self._keys.ns!r})"

    @property
    def audit_keys(self) -> list[SecretStr]:
        """The key ring, newest first, for what checks seals elsewhere (the forwarder)."""
        return [SecretStr(k.decode()) for k in (self._key, *self._previous)]

    # --- sealing -------------------------------------------------------------------------------

    async def seal_all(self) -> int:
        """Seal what every shard has appended since the last seal; the number of events sealed.

        One round trip tells which shards have anything to do (events numbered past the seal
        list, or a seal list and mark that disagree): an idle replica reads no stream at all.
        A shard that cannot be sealed (an entry no reader can take) is a fault of its own: the
        others are sealed all the same.
        """
        total, oldest_ms = 0, 0
        for shard in await self._shards_to_look_at():
            try:
                total += await self.seal(shard)
            except Unavailable:
                raise
            except Exception as exc:
                self._fault(shard, "seal_failed", -1, f"sealing stopped ({type(exc).__name__})")
                continue
            with _fails_closed():
                oldest_ms = max(oldest_ms, await self._unsealed_age_ms(shard))
        AUDIT_UNSEALED_AGE.set(oldest_ms / 1000)
        return total

    async def _unsealed_age_ms(self, shard: int) -> int:
        """How long ago the oldest unsealed event of the shard was written (0: none)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self._keys.audit_seq(shard))
            pipe.llen(self._keys.seals(shard))
            counter, length = await pipe.execute()
        events = _count(_text(counter)) if counter is not None else 0
        if events is None or events <= int(length):
            return 0
        stream_id = await self._find_event(shard, int(length) + 1)
        if stream_id == "-":
            first = _entries(await self._redis.xrange(self._keys.audit(shard), count=1))
            stream_id = first[0][0] if first else None
        written = stream_id_ms(stream_id) if stream_id else None
        if written is None:
            return 0
        seconds, micros = await keyless(self._redis, "TIME", key=self._keys.audit(shard))
        return max(int(seconds) * 1000 + int(micros) // 1000 - written, 0)

    async def _shards_to_look_at(self) -> list[int]:
        with _fails_closed():
            async with self._redis.pipeline(transaction=False) as pipe:
                for shard in range(SHARDS):
                    pipe.get(self._keys.audit_seq(shard))
                    pipe.llen(self._keys.seals(shard))
                    pipe.get(self._mark_key(shard))
                found = await pipe.execute()
        busy = []
        for shard in range(SHARDS):
            counter, length, mark = found[3 * shard : 3 * shard + 3]
            events = _count(_text(counter)) if counter is not None else 0
            high = _count(_text(mark)) if mark is not None else 0
            nothing_new = events is not None and events <= int(length)
            agreed = high == int(length) and self._sealed_high.get(shard, 0) <= int(length)
            if not (nothing_new and agreed):
                busy.append(shard)
        return busy

    async def seal(self, shard: int) -> int:
        """Seal one shard's unsealed events; returns how many this call sealed (often 0).

        Safe to run from every replica at once: a sealer that loses the compare-and-set stops,
        since the winner has sealed the same events with the same macs and carries on. Events
        older than the sealing window are never sealed here (see app/audit/chain.py).
        """
        with _fails_closed():
            return await self._seal(shard, self._window)

    async def seal_late(self, max_age_ms: int) -> int:
        """An operator's decision: seal unsealed events up to ``max_age_ms`` old in every shard.

        For after an outage that stopped sealing for longer than the window, once someone has
        checked those events against the SIEM. Never the sweeper: it would bless forgeries.
        """
        if max_age_ms < 1:
            raise ValueError("max_age_ms must be at least 1")
        total = 0
        with _fails_closed():
            for shard in range(SHARDS):
                total += await self._seal(shard, max(max_age_ms, self._window))
        log.warning("audit_sealed_late", events=total, max_age_s=max_age_ms // 1000)
        return total

    def _mark_key(self, shard: int) -> str:
        """The sealed mark: the longest the shard's seal list ever was (same hash slot)."""
        return self._keys.seals(shard) + ":high"

    async def _seal(self, shard: int, window_ms: int) -> int:
        stream = self._keys.audit(shard)
        mark_text, length, last, now_ms = await self._seal_state(shard)
        if last is not None and not is_seal(last):
            self._fault(shard, "seal_list_damaged", length, "its last seal is not an HMAC")
            return 0
        mark = _count(mark_text)
        if mark is None:
            self._fault(shard, "seal_mark_damaged", length, "the sealed mark is not a count")
            return 0
        high = max(mark, self._sealed_high.get(shard, 0))
        if length < high:
            why = f"the seal list holds {length} seals but {high} events were sealed"
            self._fault(shard, "seal_list_shrank", length, why)
            return 0
        self._sealed_high[shard] = length
        if mark < length:  # a list sealed before the mark existed: record its length now
            await self._run_seal_script(shard, length, last, [])
        start = await self._find_event(shard, length + 1)
        if start is None:
            return 0
        if length and self._own_seal.get(shard) != length:
            if not await self._may_extend(shard, length, start, last):
                return 0
        prev, cursor, sealed = last or genesis(self._key, self._keys.tag(shard)), start, 0
        not_before = now_ms - window_ms
        while sealed < self._max_seal:
            page = _entries(await self._redis.xrange(stream, min=cursor, count=self._page))
            run = seal_run(self._key, prev, length + 1, page, not_before_ms=not_before)
            if run.macs:
                won = await self._run_seal_script(shard, length, last, run.macs)
                if won < 0:
                    why = "the seal list became shorter than the sealed mark while sealing"
                    self._fault(shard, "seal_list_shrank", length, why)
                    return sealed
                if won == 0:
                    return sealed
                sealed, length = sealed + won, length + won
                last = prev = run.macs[-1]
                self._sealed_high[shard] = max(self._sealed_high.get(shard, 0), length)
                self._reported.pop(shard, None)
                self._own_seal[shard] = length
                head = head_record(shard, self._keys.tag(shard), length, last)
                log.info("audit_sealed", **head, kid=self._kid)
                await self._note_key_id()
                cursor = f"({run.last_stream_id}"
            if run.too_old:
                self._fault(shard, "unsealable_old_events", length + 1, run.blocked or "")
                break
            if run.blocked:
                log.warning("audit_sealing_stopped", shard=shard, why=run.blocked)
                break
            if len(page) < self._page:
                break
        return sealed

    async def _may_extend(self, shard: int, length: int, start: str, last: str | None) -> bool:
        """Whether this key may seal after seal ``length``: its own key or an older one made it.

        During a key rotation, replicas still on the old key must not seal after a replica on
        the new key (verify would see a retired key used again): they leave it to the new ones.
        """
        if last is None:
            return True
        if start == "-":
            return True
        raw = await self._redis.xrevrange(self._keys.audit(shard), max=f"({start}", count=1)
        page = _entries(raw)
        if not page or entry_seq(page[0][1]) != length:
            return True  # damage: sealing stops further on, and verify names it
        try:
            _, event = parse_entry(page[0][1])
        except BadEntry:
            return True
        prev = None
        if length > 1:
            before = await self._redis.lindex(self._keys.seals(shard), length - 2)
            prev = _text(before) if before is not None else None
        ring = [self._key, *self._previous]
        if sealed_by(ring, prev, self._keys.tag(shard), event, last) is not None:
            self._own_seal[shard] = length  # checked: no need to look again at this length
            return True
        if self._reported.get(shard) != ("newer_key", length):
            self._reported[shard] = ("newer_key", length)
            log.warning(
                "audit_sealing_left_to_newer_key",
                shard=shard,
                seq=length,
                kid=self._kid,
                hint="another replica seals with a key this one does not hold (a rotation "
                "under way): finish rolling out the new TWOKEY_AUDIT_KEY",
            )
        return False

    async def _run_seal_script(
        self, shard: int, length: int, last: str | None, macs: list[str]
    ) -> int:
        keys = [self._keys.seals(shard), self._mark_key(shard)]
        return int(await self._seal_script(keys=keys, args=[str(length), last or "", *macs]))

    def _fault(self, shard: int, fault: str, seq: int, why: str) -> None:
        """Something a sealer must not paper over: counted on every pass, logged once."""
        AUDIT_FAULTS.labels(fault).inc()
        if self._reported.get(shard) == (fault, seq):
            return
        self._reported[shard] = (fault, seq)
        log.error(
            f"audit_{fault}",
            shard=shard,
            seq=seq,
            why=why,
            hint="treat as a security incident: run `twokey audit verify --anchor` against "
            "the chain heads in your SIEM",
        )

    async def _seal_state(self, shard: int) -> tuple[str, int, str | None, int]:
        """The sealed mark, the seal list's length and last seal, and Redis TIME (ms).

        Read without MULTI (fine on a Cluster), mark first: the mark never exceeds the list's
        length at the moment it is read and the list only grows, so a concurrent seal never
        looks like a shrunk list. If the compare-and-set later succeeds, the list did not grow
        in between, so length and last seal still hold.
        """
        seals_key = self._keys.seals(shard)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self._mark_key(shard))
            pipe.llen(seals_key)
            pipe.lindex(seals_key, -1)
            mark, length, last = await pipe.execute()
        # The clock of the node holding the shard (the one that wrote its stream ids).
        seconds, micros = await keyless(self._redis, "TIME", key=seals_key)
        mark_text = _text(mark) if mark is not None else "0"
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return mark_text, int(length), (_text(last) if last is not None else None), now_ms

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

    async def verify(self, anchors: Iterable[ChainHead] | None = None) -> VerifyReport:
        """Recompute every shard's chain and compare with its seals (read-only).

        ``anchors``: chain heads recorded outside Redis (seal log lines, exports); each one of
        this namespace must match the chain, and none may lie beyond the end of its seal list.
        """
        by_shard, applied = self._anchors_by_shard(anchors or ())
        with _fails_closed():
            now_ms = await self._now_ms()
            shards = [
                await self._verify_shard(shard, by_shard.get(shard), now_ms)
                for shard in range(SHARDS)
            ]
            sealers = await self._redis.smembers(self._keys.sealing_key_ids())
        ring = {key_id(k) for k in (self._key, *self._previous)}
        return VerifyReport(
            shards,
            anchors=applied if anchors is not None else None,
            key_id=self._kid,
            key_never_sealed=bool(sealers) and not ring & {_text(k) for k in sealers},
        )

    async def _note_key_id(self) -> None:
        """Record, once per process, that this key sealed here (its public id, never the key)."""
        if not self._kid_noted:
            await self._redis.sadd(self._keys.sealing_key_ids(), self._kid)
            self._kid_noted = True

    async def verify_shard(self, shard: int) -> ShardVerdict:
        with _fails_closed():
            return await self._verify_shard(shard, None, await self._now_ms())

    def _anchors_by_shard(
        self, heads: Iterable[ChainHead]
    ) -> tuple[dict[int, dict[int, set[str]]], int]:
        """shard -> seq -> recorded macs, for the heads of this namespace; and how many."""
        mine = [h for h in heads if self._keys.holds_chain(h.shard, h.chain)]
        return anchors_by_shard(self._keys, mine), len(mine)

    async def _now_ms(self) -> int:
        """Redis's clock, the one stream ids are written with."""
        seconds, micros = await self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def _verify_shard(
        self, shard: int, anchors: Mapping[int, set[str]] | None, now_ms: int
    ) -> ShardVerdict:
        keys = self._keys
        seals_key, stream = keys.seals(shard), keys.audit(shard)
        # Order matters: sealed mark, counter, then seal count, then the stream. Events and
        # seals appended while we read can then only add to what we see, never look like a
        # deletion (the mark never exceeds the list's length at the time it is read).
        raw_mark = await self._redis.get(self._mark_key(shard))
        raw_counter = await self._redis.get(keys.audit_seq(shard))
        sealed = int(await self._redis.llen(seals_key))
        mark_text = _text(raw_mark) if raw_mark is not None else "0"
        counter_text = _text(raw_counter) if raw_counter is not None else "0"
        counter = int(counter_text) if counter_text.isdecimal() else 0
        verifier = ChainVerifier(
            self._key,
            keys.tag(shard),
            sealed,
            sealed_mark=_count(mark_text) or 0,
            not_before_ms=now_ms - self._window,
            anchors=anchors,
            previous_keys=self._previous,
        )
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
        return counts_checked(verifier.finish(counter), counter_text, mark_text, sealed)

    async def heads(self) -> list[dict[str, Any]]:
        """Each sealed shard's chain head now, as JSON-ready records to keep outside Redis."""
        records: list[dict[str, Any]] = []
        with _fails_closed():
            for shard in range(SHARDS):
                seals_key = self._keys.seals(shard)
                length = int(await self._redis.llen(seals_key))
                last = await self._redis.lindex(seals_key, length - 1) if length else None
                if last is not None:
                    tag = self._keys.tag(shard)
                    records.append(head_record(shard, tag, length, _text(last)))
        return records

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
