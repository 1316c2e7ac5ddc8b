"""The audit trail's hash chain: canonical events, HMAC seals and verification. Pure, no I/O.

The problem
-----------
Invariant 4 wants every state change to write its audit event in the same atomic step as the
change, and wants the trail chained with HMAC-SHA256 under a key that never enters Redis. Those
two cannot meet in one place: the gate scripts run inside Redis (Lua has no SHA-256, and the key
must not go there), and on a Cluster one script only touches one hash slot, so one global chain
cannot be extended by scripts of requests that live in different slots.

The design: append now, seal afterwards, one chain per shard
------------------------------------------------------------
* **Append (in the gate script).** Each shard (see app/store/keys.py) has, in one hash slot, an
  audit stream, a counter and a seal list. The gate script that changes a request does
  ``INCR counter`` and ``XADD stream * seq <n> e <event JSON>`` in the same script as the change.
  Redis runs a script alone, so within a shard ``seq`` is 1, 2, 3, ... with no gap and no
  repeat, and stream order is seq order, however many replicas append at once. (Redis does
  not undo a script that fails half-way, so the gate scripts do INCR and XADD side by side,
  after every check that can refuse.) On a Cluster
  the request, the stream, the counter and the seals share the shard's hash tag, hence one slot,
  hence one node: the script is legal there, and a failover or a slot migration moves or loses
  them together, as a prefix of one replication stream.
* **Seal (in Python, any replica, any time).** ``mac_0 = HMAC(key, "twokey-audit-genesis:" +
  shard tag)`` and ``mac_n = HMAC(key, mac_{n-1} hex + "\\n" + canonical(event_n))``. Element
  i of the seal list is ``mac_{i+1}``. A sealer reads the list's length L and its last element
  (``mac_L``), reads events L+1, L+2, ... from the stream, computes their macs here and hands
  them to ``seal.lua``, which appends them only if the list still has length L and still ends
  with ``mac_L`` (compare-and-set). Correct under concurrency because:
  - the macs are a pure function of the key and the events, so every sealer computes the same
    values; the list only ever grows, so "length is still L" means nobody sealed in between and
    everything this sealer read (length, last mac, events after L) is still what it was;
  - exactly one of several racing sealers wins each length; the others change nothing and may
    simply stop (the winner carries on) - sealing is idempotent and may run everywhere at once;
  - a sealer seals only a run of events whose seqs follow L without a gap, so it never blesses
    a hole left by a deleted event: the hole stays unsealed and ``verify`` names it.
  The sealer finds event L+1 without an extra index: it reads the stream backwards from its
  end (``XREVRANGE``) until it meets seq L+1. The unsealed tail is what it must read anyway,
  so this costs no more than the sealing itself, and there is no hint that could go stale.
* **Verify.** Recompute the chain from genesis over the whole stream and compare with the seals:
  an edited event (or seal) breaks its mac; a deleted event leaves a gap in seq; moved events
  make seq go backwards; deleting the newest events leaves the counter ahead of the stream (the
  counter is read *before* the stream, so concurrent appends never look like deletions) or
  leaves seals without events. Events after the last seal are reported as "not sealed yet",
  which is not a failure; any gap, repeat or mismatch is, wherever it is.

Sealed is sealed: trimming seals cannot get history re-sealed
--------------------------------------------------------------
The sealer holds the key, so whatever it seals is blessed. Someone with write access to Redis
could otherwise edit sealed events (same ids, same seqs), cut the seal list back to before the
first edit and let the next sweep seal the forgeries. Three things stop that:
* **Sealed mark.** ``seal.lua`` keeps, beside the seal list (same hash slot), the highest length
  the list ever had, and refuses to append when the list is shorter than it; each sealer also
  remembers it in memory. A sealer never re-seals an event that was sealed before; ``verify``
  fails when the list is shorter than the mark. (The mark is in Redis, so it is a tripwire, not
  an anchor: the anchors below are what an attacker cannot reach.)
* **Sealing window.** The sealer only seals events whose stream id time (Redis's clock at XADD)
  is within ``SEAL_WINDOW_MS`` of Redis ``TIME``; the sweeper seals within a second or so.
  Older unsealed events are a fault (logged as ``audit_unsealable_old_events``, counted in
  ``twokey_audit_faults_total``), sealing of that shard stops there, and ``verify`` fails on
  them. Forging old events under their own ids therefore never gets them sealed.
* **Heads outside Redis.** Every seal logs the chain head (shard, seq, mac) as one JSON line, and
  ``twokey audit export`` carries each event's mac (``--heads``: just the heads). Shipped to a
  SIEM, these are the anchor: ``twokey audit verify --anchor FILE`` fails if any recorded head
  within the chain differs from the mac at its seq, or lies beyond the end of the seal list.

What it cannot see
------------------
Someone with write access to Redis can edit an event in the window before it is sealed (under a
second while the sweeper runs). Without ``--anchor``, a rewrite or rollback that also removes the
sealed mark, while no sealer that remembers the old length is running, is re-sealed unnoticed if
the events were forged with fresh stream ids or within the sealing window; ``verify --anchor``
against heads recorded since then catches it. Heads must be recorded outside Redis to count.
Likewise an event someone *appends* (the next seq, the counter bumped) within the sealing window
is sealed like any other: the seal proves an event was not changed after it was sealed, not
that twokey wrote it. Its request hash and state history will not agree with it (the report's
requests show only what the gate scripts did), and a SIEM that receives every event as it is
sealed holds the time it arrived.

Canonical form: the event JSON is parsed and re-serialised with sorted keys, so the key order
Lua's cjson happens to write does not matter. Entries with extra fields, duplicate JSON keys,
non-finite numbers or a ``seq`` that disagrees with the event's are rejected, so what a reader
or a SIEM sees is exactly what the mac covers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

GENESIS_PREFIX = b"twokey-audit-genesis:"
SEAL_WINDOW_MS = 5 * 60 * 1000
"""The automatic sealer seals only events this recent (stream id time vs Redis TIME), so events
forged under old ids never get sealed; it must exceed the sweep interval by a wide margin."""
HEAD_TYPE = "twokey_audit_head"
KEY_ID_MESSAGE = b"twokey-audit-key-id"
ENTRY_FIELDS = frozenset({"seq", "e"})
NOT_TEXT = "\x00not-utf-8"
"""Set by the reader on an entry whose bytes are not UTF-8: never one of ours."""
_SEQ = re.compile(r"^[1-9][0-9]{0,18}$")
_MAC = re.compile(r"^[0-9a-f]{64}$")

StreamEntry = tuple[str, Mapping[str, str]]
"""One stream entry as XRANGE returns it (decoded): its stream id and its fields."""


# --- the chain ---------------------------------------------------------------------------------


def canonical(event: Mapping[str, Any]) -> bytes:
    """The bytes a seal covers: sorted keys, no spaces, UTF-8 (lone surrogates kept, not lost)."""
    text = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def genesis(key: bytes, shard_tag: str) -> str:
    """mac_0 of a shard: binds its chain to the shard (and namespace) it belongs to."""
    return hmac.new(key, GENESIS_PREFIX + shard_tag.encode(), hashlib.sha256).hexdigest()


def next_mac(key: bytes, prev_mac: str, event: Mapping[str, Any]) -> str:
    """mac_n from mac_{n-1} (hex) and event n."""
    message = prev_mac.encode("ascii") + b"\n" + canonical(event)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def is_seal(value: str) -> bool:
    return bool(_MAC.fullmatch(value))


def key_id(key: bytes) -> str:
    """A short public name for a key (in seal log lines and verify's report); never the key."""
    return hmac.new(key, KEY_ID_MESSAGE, hashlib.sha256).hexdigest()[:12]


def sealed_by(
    ring: Sequence[bytes], prev_mac: str | None, shard_tag: str, event: Mapping[str, Any], seal: str
) -> int | None:
    """Which key of ``ring`` (newest first) made ``seal`` over ``event``; None if none did.

    ``prev_mac`` is the seal before it, None for a shard's first event (whose chain starts at
    the genesis of the key that sealed it)."""
    for rank, key in enumerate(ring):
        prev = prev_mac if prev_mac is not None else genesis(key, shard_tag)
        if hmac.compare_digest(next_mac(key, prev, event), seal):
            return rank
    return None


def stream_id_ms(stream_id: str) -> int | None:
    """The millisecond time part of a stream id (when XADD ran), None if it has none."""
    ms = stream_id.partition("-")[0]
    return int(ms) if ms.isdecimal() else None


# --- reading one stream entry ----------------------------------------------------------------


class BadEntry(ValueError):
    """A stream entry that is not an audit event as the gate scripts write them."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    event: dict[str, Any] = {}
    for name, value in pairs:
        if name in event:
            raise BadEntry(f"its event has the key {name!r} twice")
        event[name] = value
    return event


def _no_constants(name: str) -> Any:
    raise BadEntry(f"its event holds {name}, which is not a number")


def entry_seq(fields: Mapping[str, str]) -> int | None:
    """The entry's ``seq`` field, or None when it is not a positive decimal number."""
    raw = fields.get("seq")
    return int(raw) if raw is not None and _SEQ.fullmatch(raw) else None


def stream_text(value: str | bytes) -> str:
    """Stream text as twokey wrote it (UTF-8); bytes that are not, with replacement marks."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def stream_entries(raw: Sequence[Any] | None) -> list[StreamEntry]:
    """XRANGE's reply with text ids and fields, whether or not the client decodes responses.

    An entry holding bytes that are not UTF-8 was never written by twokey: it is kept, marked
    (``NOT_TEXT``), so sealing stops there and verify and the report name it, instead of a
    reader failing (one such entry stopped the sealing of every shard)."""
    found: list[StreamEntry] = []
    for sid, fields in raw or []:
        entry = {stream_text(name): stream_text(value) for name, value in fields.items()}
        if any(_not_utf8(part) for pair in fields.items() for part in pair):
            entry[NOT_TEXT] = ""
        found.append((stream_text(sid), entry))
    return found


def _not_utf8(value: object) -> bool:
    if not isinstance(value, bytes):
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def parse_entry(fields: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """The seq and the event of one stream entry; ``BadEntry`` says why it is not one of ours."""
    if NOT_TEXT in fields:
        raise BadEntry("it holds bytes that are not UTF-8 text (twokey writes only UTF-8)")
    if set(fields) != ENTRY_FIELDS:
        raise BadEntry(f"its fields are {sorted(fields)} instead of ['e', 'seq']")
    seq = entry_seq(fields)
    if seq is None:
        raise BadEntry(f"its seq field {fields['seq'][:40]!r} is not a positive number")
    try:
        event = json.loads(
            fields["e"], object_pairs_hook=_unique_keys, parse_constant=_no_constants
        )
    except BadEntry:
        raise
    except (ValueError, RecursionError) as exc:
        raise BadEntry("its event is not valid JSON") from exc
    if not isinstance(event, dict):
        raise BadEntry("its event is not a JSON object")
    inner = event.get("seq")
    if type(inner) is not int or inner != seq:
        raise BadEntry(f"its seq field says {seq} but its event says {inner!r}")
    return seq, event


# --- sealing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealRun:
    """The seals for a run of consecutive events, and why the run stopped early, if it did."""

    macs: list[str]
    last_stream_id: str | None
    blocked: str | None = None
    too_old: bool = False
    """It stopped at an event older than the sealing window: a fault, not a race."""


def seal_run(
    key: bytes,
    prev_mac: str,
    first_seq: int,
    entries: Iterable[StreamEntry],
    not_before_ms: int | None = None,
) -> SealRun:
    """Seals for events ``first_seq``, ``first_seq + 1``, ... at the start of ``entries``.

    Stops at the first entry that is not the next event (a gap, a repeat, a malformed entry):
    sealing past it would bless the damage instead of leaving it for ``verify`` to name. Stops
    too at an event whose stream id is older than ``not_before_ms``: a sealer blesses only what
    was just written, never history that may have been rewritten.
    """
    macs: list[str] = []
    mac, expected, last = prev_mac, first_seq, None
    for stream_id, fields in entries:
        try:
            seq, event = parse_entry(fields)
        except BadEntry as exc:
            return SealRun(macs, last, f"the entry at stream id {stream_id} is not valid: {exc}")
        if seq != expected:
            why = f"expected event {expected} but found event {seq} at stream id {stream_id}"
            return SealRun(macs, last, why)
        written = stream_id_ms(stream_id)
        if not_before_ms is not None and (written is None or written < not_before_ms):
            why = (
                f"event {seq} (stream id {stream_id}) is older than the sealing window: it "
                "should have been sealed long ago, so it is not sealed now"
            )
            return SealRun(macs, last, why, too_old=True)
        mac = next_mac(key, mac, event)
        macs.append(mac)
        last, expected = stream_id, expected + 1
    return SealRun(macs, last)


# --- chain heads recorded outside Redis -------------------------------------------------------


@dataclass(frozen=True)
class ChainHead:
    """A shard's chain at one moment, as recorded outside Redis: event ``seq`` sealed as ``mac``.

    ``chain`` is the shard tag (it holds the namespace) when the record says it; heads of
    another namespace are not ours to check.
    """

    shard: int
    seq: int
    mac: str
    chain: str | None = None


def head_record(shard: int, chain: str, seq: int, mac: str) -> dict[str, Any]:
    """One head as a JSON-ready record: what the seal log line and ``export --heads`` carry."""
    return {"type": HEAD_TYPE, "shard": shard, "chain": chain, "seq": seq, "mac": mac}


def read_heads(lines: Iterable[str]) -> list[ChainHead]:
    """Every head in JSON lines as logged (``audit_sealed``) or exported; other lines skipped.

    A line counts when it is a JSON object with an integer ``shard`` and ``seq`` and a
    hex ``mac``: a seal log line, an ``export --heads`` line, or any sealed exported event.
    """
    heads: list[ChainHead] = []
    for line in lines:
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            record = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if not isinstance(record, dict):
            continue
        shard, seq, mac, chain = (record.get(k) for k in ("shard", "seq", "mac", "chain"))
        if type(shard) is not int or type(seq) is not int or seq < 1 or shard < 0:
            continue
        if not isinstance(mac, str) or not is_seal(mac):
            continue
        heads.append(ChainHead(shard, seq, mac, chain if isinstance(chain, str) else None))
    return heads


# --- verifying ---------------------------------------------------------------------------------


class ProblemKind(StrEnum):
    EDITED = "edited"
    MISSING = "missing"
    REORDERED = "reordered"
    SEAL_MISSING = "seal_missing"
    EXTRA_SEALS = "extra_seals"
    TAIL_DELETED = "tail_deleted"
    COUNTER_CHANGED = "counter_changed"
    SEALS_REMOVED = "seals_removed"
    SEAL_MARK_CHANGED = "seal_mark_changed"
    TOO_OLD_TO_SEAL = "too_old_to_seal"
    REWRITTEN = "rewritten"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class Problem:
    """The first bad event of a shard: which one, where, and what is wrong with it."""

    kind: ProblemKind
    seq: int
    stream_id: str | None
    detail: str

    def describe(self) -> str:
        where = ""
        if self.stream_id and self.kind is ProblemKind.MISSING:
            where = f" (gap just before stream id {self.stream_id})"
        elif self.stream_id:
            where = f" (stream id {self.stream_id})"
        return f"event {self.seq}{where}: {self.kind.value.replace('_', ' ')}: {self.detail}"


@dataclass(frozen=True)
class ShardVerdict:
    """What verifying one shard found."""

    shard_tag: str
    events: int
    """Entries in the stream."""
    sealed: int
    """Seals in the seal list."""
    counter: int
    """The last seq the counter had handed out (read before the stream)."""
    problem: Problem | None = None
    head: str | None = None
    """mac of the last event checked against its seal: a value to record outside Redis."""

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def unsealed(self) -> int:
        """Events after the last seal: not a failure, they are checked once sealed."""
        return max(0, self.events - self.sealed) if self.ok else 0


@dataclass(frozen=True)
class VerifyReport:
    shards: list[ShardVerdict] = field(default_factory=list)
    anchors: int | None = None
    """Chain heads recorded outside Redis that were checked; None when none were given."""
    key_id: str = ""
    """The public name of the key this check used (never the key)."""
    key_never_sealed: bool = False
    """The keys that sealed here are on record, and neither this key nor a previous one is."""

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.shards)

    @property
    def no_seal_matches(self) -> bool:
        """Every shard that has seals (two at least, or one when the keys that sealed here are
        on record and this is not one of them) fails at its very first event as edited: far
        likelier a different TWOKEY_AUDIT_KEY than every shard edited at its start."""
        sealed = [s for s in self.shards if s.sealed and s.events]
        return len(sealed) >= (1 if self.key_never_sealed else 2) and all(
            s.problem is not None and s.problem.seq == 1 and s.problem.kind is ProblemKind.EDITED
            for s in sealed
        )

    @property
    def key_may_seal(self) -> bool:
        """Whether the key this check used may seal (a command-line tool's sweep): a seal it
        verified proves it, and a trail sealed nowhere yet has nothing to disprove it. A key
        no seal agrees with must not seal: a shard's first seal binds its chain to that key,
        and the replicas holding the right one could never seal that shard again."""
        sealed = [s for s in self.shards if s.sealed]
        return not sealed or any(s.ok for s in sealed)

    @property
    def events(self) -> int:
        return sum(s.events for s in self.shards)

    @property
    def sealed(self) -> int:
        return sum(min(s.sealed, s.events) for s in self.shards)

    @property
    def unsealed(self) -> int:
        return sum(s.unsealed for s in self.shards)

    @property
    def broken(self) -> list[ShardVerdict]:
        return [s for s in self.shards if not s.ok]


@dataclass(frozen=True)
class _Gap:
    """The stream jumped from event ``expected - 1`` to ``found``: missing, or moved later."""

    expected: int
    found: int
    stream_id: str


@dataclass(frozen=True)
class _Mismatch:
    """Event ``seq`` does not match its seal: edited, unless the seal list lost an element."""

    seq: int
    stream_id: str
    mac: str
    stored: str


class ChainVerifier:
    """Checks one shard's stream entry by entry, so a large stream is verified page by page.

    Feed entries in stream order with ``add``, passing the seal at the same list position as the
    entry's stream position (and the one after it); then ``finish``. While the chain is intact,
    position k holds event k and seal k, so pages of the stream and of the seal list line up.
    """

    def __init__(
        self,
        key: bytes,
        shard_tag: str,
        sealed: int,
        *,
        sealed_mark: int = 0,
        not_before_ms: int | None = None,
        anchors: Mapping[int, Set[str]] | None = None,
        previous_keys: Sequence[bytes] = (),
    ) -> None:
        """``sealed_mark``: the longest the seal list ever was (the sealer's record).
        ``not_before_ms``: unsealed events written before this can no longer be sealed.
        ``anchors``: seq -> macs recorded outside Redis for it (each must match).
        ``previous_keys``: keys that sealed before ``key`` (a rotation), newest first. A seal
        may be made by any of them, but never by a key older than one that sealed before it:
        once the new key seals, a retired key can no longer bless anything."""
        self._key = key
        self._ring = (key, *previous_keys)
        self._rank = len(self._ring) - 1
        self._tag = shard_tag
        self._sealed = sealed
        self._mark = sealed_mark
        self._not_before = not_before_ms
        self._anchors: Mapping[int, Set[str]] = anchors or {}
        self._stale: tuple[int, str] | None = None
        self._mac = genesis(key, shard_tag)
        self._head: str | None = None
        self._seq = 0
        self._events = 0
        self._problem: Problem | None = None
        self._gap: _Gap | None = None
        self._mismatch: _Mismatch | None = None

    def __repr__(self) -> str:  # never show the key
        return f"ChainVerifier({self._tag!r}, events={self._events})"

    @property
    def checking(self) -> bool:
        """False once the first problem is known: later entries are only counted."""
        return self._problem is None and self._gap is None and self._mismatch is None

    def add(
        self,
        stream_id: str,
        fields: Mapping[str, str],
        seal: str | None = None,
        next_seal: str | None = None,
    ) -> None:
        self._events += 1
        if self._gap is not None:
            self._resolve_gap(self._gap, stream_id, fields)
        elif self._mismatch is not None:
            self._resolve_mismatch(self._mismatch, fields)
        elif self._problem is None:
            self._check(stream_id, fields, seal, next_seal)

    def _fail(self, kind: ProblemKind, seq: int, stream_id: str | None, detail: str) -> None:
        self._problem = Problem(kind, seq, stream_id, detail)

    def _check(
        self, stream_id: str, fields: Mapping[str, str], seal: str | None, next_seal: str | None
    ) -> None:
        expected = self._seq + 1
        try:
            seq, event = parse_entry(fields)
        except BadEntry as exc:
            detail = f"it is not an audit event as twokey writes them: {exc}"
            self._fail(ProblemKind.EDITED, entry_seq(fields) or expected, stream_id, detail)
            return
        if seq > expected:
            self._gap = _Gap(expected, seq, stream_id)
            return
        if seq < expected:
            detail = (
                "it appears twice"
                if seq == self._seq
                else f"it comes after event {self._seq}: events were reordered"
            )
            self._fail(ProblemKind.REORDERED, seq, stream_id, detail)
            return
        mac = next_mac(self._key, self._mac, event)
        if seal is not None and len(self._ring) > 1:
            mac = self._rotated_mac(seq, event, seal, stream_id) or mac
            if self._problem is not None:
                return
        self._seq, self._mac = seq, mac
        if seal is None:
            if seq <= self._sealed:
                detail = f"the seal list holds {self._sealed} seals but has none for it"
                self._fail(ProblemKind.SEAL_MISSING, seq, stream_id, detail)
            elif self._stale is None and _older(stream_id, self._not_before):
                self._stale = (seq, stream_id)
        elif hmac.compare_digest(mac, seal):
            self._head = mac
            recorded = self._anchors.get(seq, ())
            if any(not hmac.compare_digest(mac, other) for other in recorded):
                detail = (
                    "its seal is not the one recorded outside Redis for it (--anchor): the trail "
                    "up to here was rewritten and sealed again"
                )
                self._fail(ProblemKind.REWRITTEN, seq, stream_id, detail)
        elif next_seal is not None and hmac.compare_digest(mac, next_seal):
            detail = "an extra seal was inserted in the seal list before its own"
            self._fail(ProblemKind.EXTRA_SEALS, seq, stream_id, detail)
        else:
            self._mismatch = _Mismatch(seq, stream_id, mac, seal)

    def _rotated_mac(
        self, seq: int, event: Mapping[str, Any], seal: str, stream_id: str
    ) -> str | None:
        """With a key ring: the seal if a key allowed here made it (None if none did)."""
        prev = None if seq == 1 else self._mac
        rank = sealed_by(self._ring, prev, self._tag, event, seal)
        if rank is None:
            return None
        if rank > self._rank:
            detail = (
                f"it was sealed with an older key ({key_id(self._ring[rank])}) after a newer "
                "one had sealed: a retired key was used again"
            )
            self._fail(ProblemKind.EDITED, seq, stream_id, detail)
            return None
        self._rank = rank
        return seal

    def _resolve_gap(self, gap: _Gap, stream_id: str, fields: Mapping[str, str]) -> None:
        if entry_seq(fields) == gap.expected:
            self._gap = None
            detail = (
                f"it comes before event {gap.expected} (found later, at stream id "
                f"{stream_id}): events were reordered"
            )
            self._fail(ProblemKind.REORDERED, gap.found, gap.stream_id, detail)

    def _resolve_mismatch(self, mismatch: _Mismatch, fields: Mapping[str, str]) -> None:
        """Seal list shifted left (a seal removed) if the stored seal is the next event's mac."""
        self._mismatch = None
        try:
            seq, event = parse_entry(fields)
        except BadEntry:
            seq, event = 0, {}
        if seq == mismatch.seq + 1 and any(
            hmac.compare_digest(next_mac(key, mismatch.mac, event), mismatch.stored)
            for key in self._ring
        ):
            detail = "its seal was removed from the seal list (the later seals moved up)"
            self._fail(ProblemKind.SEAL_MISSING, mismatch.seq, mismatch.stream_id, detail)
        else:
            self._fail_edited(mismatch)

    def _fail_edited(self, mismatch: _Mismatch) -> None:
        detail = "it does not match its seal: the event (or its seal) was changed"
        self._fail(ProblemKind.EDITED, mismatch.seq, mismatch.stream_id, detail)

    def finish(self, counter: int) -> ShardVerdict:
        """The verdict, given the counter as read *before* the stream."""
        if self._gap is not None:
            self._fail(
                ProblemKind.MISSING, self._gap.expected, self._gap.stream_id, _gap_detail(self._gap)
            )
        elif self._mismatch is not None:
            self._fail_edited(self._mismatch)
        elif self._problem is None:
            self._check_history()
        if self._problem is None:
            self._check_tail(counter)
        return ShardVerdict(
            shard_tag=self._tag,
            events=self._events,
            sealed=self._sealed,
            counter=counter,
            problem=self._problem,
            head=self._head,
        )

    def _check_history(self) -> None:
        """What only the sealer's records and outside anchors show: seals cut back, events
        left unsealed too long (history rewritten under old ids, or sealing stopped)."""
        first_unsealed = self._sealed + 1
        recorded = max(self._anchors, default=0)
        if self._mark > self._sealed:
            detail = (
                f"the seal list holds {self._sealed} seals but {self._mark} events were sealed: "
                "seals were removed, so the events after them may have been rewritten"
            )
            self._fail(ProblemKind.SEALS_REMOVED, first_unsealed, None, detail)
        elif recorded > self._sealed:
            detail = (
                f"a chain head recorded outside Redis (--anchor) says event {recorded} was sealed, "
                f"but the seal list ends at event {self._sealed}: the shard was rolled back or "
                "its seals removed"
            )
            self._fail(ProblemKind.ROLLED_BACK, first_unsealed, None, detail)
        elif self._stale is not None:
            seq, stream_id = self._stale
            detail = (
                "it is not sealed and was written longer ago than the sealing window, so it can "
                "no longer be sealed: seals were cut back (and it may be a forgery), or sealing "
                "was stopped (no sweeper running, or Redis down) for longer than the window"
            )
            self._fail(ProblemKind.TOO_OLD_TO_SEAL, seq, stream_id, detail)

    def _check_tail(self, counter: int) -> None:
        last = self._seq
        if last < counter:
            span = f"event {counter}" if last + 1 == counter else f"events {last + 1} to {counter}"
            detail = (
                f"the counter says {counter} events were written but the stream ends at event "
                f"{last}: {span} were deleted from the end"
            )
            self._fail(ProblemKind.TAIL_DELETED, last + 1, None, detail)
        elif self._sealed > last:
            detail = (
                f"the seal list holds {self._sealed} seals but the stream only {last} events: "
                "events were deleted from the end, or seals added"
            )
            self._fail(ProblemKind.EXTRA_SEALS, last + 1, None, detail)


def _older(stream_id: str, not_before_ms: int | None) -> bool:
    if not_before_ms is None:
        return False
    written = stream_id_ms(stream_id)
    return written is None or written < not_before_ms


def _gap_detail(gap: _Gap) -> str:
    if gap.found == gap.expected + 1:
        return f"it was deleted: the stream goes from event {gap.expected - 1} to event {gap.found}"
    return (
        f"events {gap.expected} to {gap.found - 1} were deleted: the stream goes from event "
        f"{gap.expected - 1} to event {gap.found}"
    )


def verify_chain(
    entries: Iterable[StreamEntry],
    seals: Sequence[str],
    key: bytes,
    shard_tag: str,
    last_seq: int,
    *,
    sealed_mark: int = 0,
    not_before_ms: int | None = None,
    anchors: Mapping[int, Set[str]] | None = None,
    previous_keys: Sequence[bytes] = (),
) -> ShardVerdict:
    """Verify one shard held in memory: its stream entries in order, its seals, its counter."""
    verifier = ChainVerifier(
        key,
        shard_tag,
        sealed=len(seals),
        sealed_mark=sealed_mark,
        not_before_ms=not_before_ms,
        anchors=anchors,
        previous_keys=previous_keys,
    )
    for position, (stream_id, fields) in enumerate(entries):
        seal = seals[position] if position < len(seals) else None
        after = seals[position + 1] if position + 1 < len(seals) else None
        verifier.add(stream_id, fields, seal, after)
    return verifier.finish(last_seq)


# --- telling people ----------------------------------------------------------------------------


def counts_checked(
    verdict: ShardVerdict, counter_text: str, mark_text: str, sealed: int
) -> ShardVerdict:
    """The verdict, failed when the shard's event counter or sealed mark is not a count (what
    either says is then unknowable: a tail cut and resealed would not show). Shared by
    `audit verify` and the report, so the report is never the kinder of the two."""
    if not verdict.ok:
        return verdict
    if not counter_text.isdecimal():
        detail = f"the event counter holds {counter_text[:40]!r}, which is not a count"
        problem = Problem(ProblemKind.COUNTER_CHANGED, verdict.events + 1, None, detail)
        return ShardVerdict(verdict.shard_tag, verdict.events, sealed, 0, problem)
    if not (mark_text.isascii() and mark_text.isdecimal()):
        detail = f"the sealed mark holds {mark_text[:40]!r}, which is not a count"
        problem = Problem(ProblemKind.SEAL_MARK_CHANGED, sealed + 1, None, detail)
        return ShardVerdict(verdict.shard_tag, verdict.events, sealed, int(counter_text), problem)
    return verdict


def render_verify(report: VerifyReport) -> tuple[int, str]:
    """Exit code and text for `twokey audit verify`: non-zero and the first bad event on failure."""
    lines: list[str] = []
    if report.ok:
        lines.append(
            f"Audit trail intact: {_count(report.events, 'event')} in "
            f"{_count(len(report.shards), 'shard')}, "
            f"{report.sealed} sealed and verified."
        )
        if report.unsealed:
            lines.append(f"{_count(report.unsealed, 'event')} not sealed yet; checked once sealed.")
        if report.anchors is not None:
            lines.append(
                f"{_count(report.anchors, 'chain head')} recorded outside Redis "
                f"{'matches' if report.anchors == 1 else 'all match'} (--anchor)."
            )
    elif report.no_seal_matches:
        lines.append(
            "NO SEAL MATCHES THIS KEY: not one shard's first event verifies with the "
            f"TWOKEY_AUDIT_KEY this command was given (key id {report.key_id or 'unknown'})."
        )
        lines.append(
            "What to do: first check that this command runs with the key the replicas use (their "
            "`audit_sealed` log lines name it as kid=...; a rotated key belongs in "
            "TWOKEY_AUDIT_KEYS_PREVIOUS). If the key is right, every shard was rewritten from "
            "its first event: treat it as a security incident, keep Redis as it is, and tell "
            "security."
        )
    else:
        first = report.broken[0]
        assert first.problem is not None
        lines.append(
            "AUDIT TRAIL BROKEN: events were deleted, edited, reordered or rolled back, or "
            "seals changed."
        )
        lines.append(f"First bad event: shard {first.shard_tag}, {first.problem.describe()}")
        lines.append(
            "What to do: treat this as a security incident. Keep Redis as it is (do not repair "
            "or reseal), compare with the events your SIEM already holds, and tell security."
        )
    lines.append("")
    for shard in report.shards:
        lines.append(f"  {shard.shard_tag}: {_shard_line(shard)}")
    return (0 if report.ok else 1), "\n".join(lines)


def _count(n: int, noun: str) -> str:
    """``1 event``, ``2 events``: plain English in what people read."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shard_line(shard: ShardVerdict) -> str:
    counts = f"{_count(shard.events, 'event')}, {shard.sealed} sealed"
    if shard.problem is not None:
        return f"{counts}; FAILED at {shard.problem.describe()}"
    if shard.unsealed:
        return f"{counts}, {shard.unsealed} not sealed yet; ok"
    return f"{counts}; ok"
