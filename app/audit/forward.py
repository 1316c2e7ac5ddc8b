"""Forward sealed audit events to a SIEM: at least once, in order per shard, checkpointed.

Security teams keep evidence in their SIEM, not in twokey's Redis. This forwarder ships each
shard's *sealed* events (never one that could still change) to one sink (app/audit/forward_sinks.py)
and records how far it got in Redis, beside the shard's stream (same hash slot; the names are
built in app/store/keys.py like every other key):

* ``{ns:sNN}:audit:fwd:<sink>``: the checkpoint, a hash ``seq`` (last event the sink
  acknowledged) and ``sid`` (its stream id, where the next read starts).
* ``{ns:sNN}:audit:fwd:<sink>:lease``: which forwarder may send this shard now (a random token,
  expiring after ``LEASE_MS``), so a fleet of replicas does not multiply deliveries.

``<sink>`` is a short hash of the sink's URL: a new sink starts from the first event.

Per shard and batch: hold the lease, read the checkpoint (after the lease: never a stale one),
read the next sealed events, send them, and only after the sink acknowledged move the checkpoint
with a script that checks the lease is still ours. Hence:

* **Nothing lost**: the checkpoint never passes an event the sink did not acknowledge (syslog:
  flushed to the connection; see forward_sinks).
* **Repeats bounded**: a crash between the sink's acknowledgement and the checkpoint write (or
  a send abandoned because its lease could not be renewed) re-sends that one batch, at most
  TWOKEY_AUDIT_FORWARD_BATCH events per shard.
* **In order per shard**: one holder per shard, batches in seq order, and a batch is never
  sent before the previous one was acknowledged. A gap or a malformed seq stops that shard
  (logged, counted) rather than be skipped.

A send can outlast the lease (a slow SIEM), so while one is under way the lease is renewed every
third of it, only if still ours; a renewal that finds it taken stops, and that batch is not
committed. A send whose lease was not confirmed for ``SEND_UNCONFIRMED`` of it (Redis
unreachable) is abandoned before the lease can lapse, uncommitted; ``SEND_LIMIT_S`` bounds any
send.

Each record is the event as written plus ``shard``, ``chain`` (the shard tag), ``stream_id`` and
``mac``, its seal: a chain head, so the SIEM's copy anchors ``twokey audit verify --anchor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import SplitResult, urlsplit

import redis.asyncio as aioredis
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from redis.exceptions import RedisError

from app.audit.chain import (
    BadEntry,
    entry_seq,
    parse_entry,
    sealed_by,
    stream_entries,
    stream_id_ms,
    stream_text,
)
from app.audit.forward_sinks import (
    HecSink,
    Record,
    Sink,
    SinkError,
    SyslogSink,
    WebhookSink,
    tls_context,
)
from app.metrics import AUDIT_FORWARD_FAILURES, AUDIT_FORWARD_LAG, AUDIT_FORWARDED
from app.settings import Settings
from app.store.connect import keyless
from app.store.keys import SHARDS, Keys

log = structlog.get_logger("twokey.audit.forward")

LEASE_MS = 30_000
"""How long a forwarder keeps a shard without renewing it (renewed while a send is under way)."""
RENEW_EVERY = 1 / 3
"""Of the lease: how often a send under way renews it."""
SEND_UNCONFIRMED = 3 / 4
"""Of the lease: a send whose lease was not confirmed ours for this long is abandoned, so it ends
before the lease can lapse and another forwarder begin; this outlasts one failed renewal."""
SEND_LIMIT_S = 120.0
"""The longest one batch may take, lease renewed or not: a receiver slower than this is failing
(counted as ``unreachable``), not merely slow."""
INTERVAL_S = 1.0
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
MAX_BATCHES_PER_PASS = 20
"""Per shard and pass, so one busy shard cannot keep the others waiting."""
HEC_PATH = "/services/collector/event"
URL_HELP = (
    "use syslog+tls://host:6514 (RFC 5424 over TLS), splunk-hec://host:8088 (Splunk HEC, with "
    "TWOKEY_AUDIT_FORWARD_TOKEN) or https://host/path (a webhook, with "
    "TWOKEY_AUDIT_FORWARD_SECRET)"
)

# KEYS: lease. ARGV: token, lease ms. 1 if this forwarder holds the shard now.
_HOLD = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if owner then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS: lease, checkpoint. ARGV: token, seq, stream id, lease ms.
# 1 moved; 0 the lease is not ours (any more); -1 the checkpoint is already at or past seq.
_ADVANCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local current = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0') or 0
if tonumber(ARGV[2]) <= current then return -1 end
redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'sid', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
# KEYS: lease. ARGV: token, lease ms. 1 renewed; 0 the lease is not ours (any more): never retaken.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseUnconfirmed(RedisError):
    """A send was abandoned because its lease could not be renewed in time (Redis unreachable or
    too slow): failing closed, before the lease could lapse. A RedisError, so callers treat it
    as Redis trouble (``run`` counts it as ``redis``; the CLI says Redis is unavailable)."""


# --- configuration ------------------------------------------------------------------------------


class ForwardConfigError(ValueError):
    """A forwarding setting twokey cannot use; the message names it and says what to set."""


class ForwardConfig(BaseModel):
    """The TWOKEY_AUDIT_FORWARD_* settings, checked together (a sink needs its credential)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    token: SecretStr | None = None
    secret: SecretStr | None = None
    ca_file: Path | None = None
    batch: int = Field(default=100, ge=1, le=1000)

    @property
    def parts(self) -> SplitResult:
        return urlsplit(self.url)

    @property
    def kind(self) -> str:
        return {"syslog+tls": "syslog", "splunk-hec": "hec", "https": "webhook"}[self.parts.scheme]

    @property
    def port(self) -> int:
        default = {"syslog": 6514, "hec": 8088, "webhook": 443}[self.kind]
        return self.parts.port or default

    @property
    def target(self) -> str:
        """For log lines and the CLI: no path (a webhook's path may be its secret), no query."""
        return f"{self.parts.scheme}://{self.parts.hostname}:{self.port}"

    @property
    def sink_id(self) -> str:
        """Names the checkpoint: a new sink starts from the first event, never mid-way."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:12]

    @model_validator(mode="after")
    def _usable(self) -> ForwardConfig:
        _check_url(self.url)
        if self.kind == "hec" and not _filled(self.token):
            raise ValueError(
                "TWOKEY_AUDIT_FORWARD_TOKEN is not set: Splunk HEC needs its token "
                "(the HEC input's token, from your secret store)"
            )
        if self.kind == "webhook" and len(_text(self.secret)) < 16:
            raise ValueError(
                "TWOKEY_AUDIT_FORWARD_SECRET must be set to 16 or more characters: the webhook's "
                "receiver checks each batch's HMAC signature with it (`openssl rand -hex 32`)"
            )
        if self.ca_file is not None:
            try:
                tls_context(str(self.ca_file))
            except (OSError, ValueError):  # ssl.SSLError is an OSError
                raise ValueError(
                    f"TWOKEY_AUDIT_FORWARD_CA_FILE: {self.ca_file} is not a readable PEM file of "
                    "a CA certificate (give the CA that signed the receiver's certificate)"
                ) from None
        return self

    @classmethod
    def from_settings(cls, settings: Settings) -> ForwardConfig | None:
        """None when forwarding is off; ForwardConfigError says what is wrong."""
        if not settings.audit_forward_url:
            return None
        try:
            return cls(
                url=settings.audit_forward_url,
                token=settings.audit_forward_token,
                secret=settings.audit_forward_secret,
                ca_file=settings.audit_forward_ca_file,
                batch=settings.audit_forward_batch,
            )
        except ValidationError as exc:
            words = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise ForwardConfigError(words) from None

    def build_sink(self) -> Sink:
        context = tls_context(str(self.ca_file) if self.ca_file else None)
        host = self.parts.hostname or ""
        if self.kind == "syslog":
            return SyslogSink(host, self.port, context)
        if self.kind == "hec":
            path = self.parts.path or HEC_PATH
            url = f"https://{self.parts.netloc}{path}"
            assert self.token is not None  # checked by _usable
            return HecSink(url, self.target, context, self.token)
        assert self.secret is not None  # checked by _usable
        return WebhookSink(self.url, self.target, context, self.secret)


def _filled(value: SecretStr | None) -> bool:
    return bool(_text(value).strip())


def _text(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _check_url(url: str) -> None:
    """One clear sentence for each way TWOKEY_AUDIT_FORWARD_URL can be wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(
            f"TWOKEY_AUDIT_FORWARD_URL is not a URL with a valid port: {URL_HELP}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme == "http":
        raise ValueError(
            "TWOKEY_AUDIT_FORWARD_URL uses http://, which would send the audit trail in the "
            "clear: use https://"
        )
    if scheme in ("syslog", "syslog+tcp", "syslog+udp", "tcp", "udp"):
        raise ValueError(
            "TWOKEY_AUDIT_FORWARD_URL: syslog is only forwarded over TLS (RFC 5425): use "
            "syslog+tls://host:6514"
        )
    if scheme not in ("syslog+tls", "splunk-hec", "https") or scheme != parts.scheme:
        raise ValueError(f"TWOKEY_AUDIT_FORWARD_URL has the scheme {parts.scheme!r}: {URL_HELP}")
    if not parts.hostname:
        raise ValueError(f"TWOKEY_AUDIT_FORWARD_URL names no host: {URL_HELP}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "TWOKEY_AUDIT_FORWARD_URL must not carry a user or password: put the HEC token in "
            "TWOKEY_AUDIT_FORWARD_TOKEN, the webhook's secret in TWOKEY_AUDIT_FORWARD_SECRET"
        )
    if scheme == "syslog+tls" and (parts.path not in ("", "/") or parts.query):
        raise ValueError("TWOKEY_AUDIT_FORWARD_URL: a syslog+tls:// URL is only host:port")
    if port == 0:
        raise ValueError(f"TWOKEY_AUDIT_FORWARD_URL has port 0: {URL_HELP}")


# --- reading what to send -----------------------------------------------------------------------


class Progress(NamedTuple):
    """How far one shard got: events acknowledged (and the last one's stream id), sealed."""

    done: int
    stream_id: str | None
    sealed: int


@dataclass
class HeldLease:
    """One send's hold on its shard, shared with the task renewing it."""

    confirmed: float
    """Loop time at which the last successful hold or renewal was *issued*: the lease lasts at
    least until this plus the lease (Redis set it no earlier)."""
    lost: bool = False
    """A renewal found the lease not ours: whatever the send does, it is not committed."""


@dataclass(frozen=True)
class Batch:
    """The next sealed events of a shard after its checkpoint, as records ready to send."""

    records: list[Record]
    last_stream_id: str | None
    blocked: str | None = None
    """Why the shard cannot go on (a gap or a damaged entry): logged, never skipped."""


def forward_record(
    shard: int, chain: str, stream_id: str, fields: Mapping[str, str], mac: str
) -> dict[str, Any]:
    """The event as written plus where it sits in its chain: every record is a chain head.

    An entry that is not a valid event goes as ``invalid`` with its raw fields, as export does:
    tampering reaches the SIEM too."""
    base = {"shard": shard, "chain": chain, "stream_id": stream_id, "mac": mac}
    try:
        _, event = parse_entry(fields)
    except BadEntry as exc:
        return {**base, "seq": entry_seq(fields), "invalid": str(exc), "raw": dict(fields)}
    return {**event, **base}


_text_of = stream_text
_entries = stream_entries


# --- the forwarder ------------------------------------------------------------------------------


class Forwarder:
    """Ships sealed audit events to one sink; safe to run on every replica at once."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        sink: Sink,
        sink_id: str,
        *,
        audit_keys: Sequence[SecretStr],
        batch: int = 100,
        lease_ms: int = LEASE_MS,
        interval_s: float = INTERVAL_S,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        send_limit_s: float = SEND_LIMIT_S,
    ) -> None:
        self._redis, self._keys, self._sink, self._sink_id = redis, keys, sink, sink_id
        self._batch, self._lease_ms, self._interval = batch, lease_ms, interval_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._send_limit = send_limit_s
        self._token = secrets.token_hex(12)
        self._held: set[int] = set()
        self._hold = redis.register_script(_HOLD)
        self._advance = redis.register_script(_ADVANCE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._blocked: dict[int, int] = {}
        self._ring = [k.get_secret_value().encode() for k in audit_keys]
        """TWOKEY_AUDIT_KEY then the previous keys: each event is checked against its seal
        before it is sent, so an event edited after it was sealed never reaches the SIEM under
        a genuine seal."""
        if not self._ring:
            raise ValueError("the forwarder checks every event against its seal: give the keys")

    @classmethod
    def from_config(
        cls,
        redis: aioredis.Redis,
        keys: Keys,
        config: ForwardConfig,
        audit_keys: Sequence[SecretStr],
    ) -> Forwarder:
        return cls(
            redis,
            keys,
            config.build_sink(),
            config.sink_id,
            audit_keys=audit_keys,
            batch=config.batch,
        )

    def __repr__(self) -> str:
        return f"Forwarder({self._sink.target!r})"

    @property
    def sink(self) -> Sink:
        return self._sink

    def checkpoint_key(self, shard: int) -> str:
        return self._keys.audit_forward_checkpoint(shard, self._sink_id)

    def lease_key(self, shard: int) -> str:
        return self._keys.audit_forward_lease(shard, self._sink_id)

    # --- one pass ----------------------------------------------------------------------------

    async def forward_once(self) -> int:
        """Send what every shard has sealed since its checkpoint; the number of events sent.

        Raises SinkError (counted and logged) when the sink did not acknowledge: the rest waits
        for the next pass. Shards another forwarder holds are left to it."""
        sent = 0
        try:
            for shard in await self._shards_behind():
                sent += await self._forward_shard(shard)
        except SinkError as exc:
            AUDIT_FORWARD_FAILURES.labels(self._sink.kind, exc.reason).inc()
            log.warning(
                "audit_forward_failed",
                sink=self._sink.kind,
                target=self._sink.target,
                reason=exc.reason,
                detail=str(exc),
                retry_after_s=exc.retry_after,
            )
            raise
        finally:
            with contextlib.suppress(RedisError, OSError):
                AUDIT_FORWARD_LAG.labels(self._sink.kind).set(await self.lag_seconds())
        return sent

    async def _progress(self, shards: Sequence[int] = range(SHARDS)) -> list[Progress]:
        """Per shard: checkpoint seq, its stream id, and how many events are sealed."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.hmget(self.checkpoint_key(shard), ["seq", "sid"])
                pipe.llen(self._keys.seals(shard))
            found = await pipe.execute()
        progress = []
        for index in range(len(shards)):
            (seq, sid), sealed = found[2 * index], found[2 * index + 1]
            done = int(_text_of(seq)) if seq is not None and _text_of(seq).isdecimal() else 0
            progress.append(Progress(done, _text_of(sid) if sid is not None else None, int(sealed)))
        return progress

    async def _shards_behind(self) -> list[int]:
        return [s for s, (done, _, sealed) in enumerate(await self._progress()) if sealed > done]

    async def lag_seconds(self) -> float:
        """Age of the oldest sealed event not yet forwarded, over every shard (0: none)."""
        oldest_ms: int | None = None
        for shard, (done, sid, sealed) in enumerate(await self._progress()):
            if sealed <= done:
                continue
            start = "-" if done == 0 or sid is None else f"({sid}"
            first = _entries(await self._redis.xrange(self._keys.audit(shard), start, count=1))
            written = stream_id_ms(first[0][0]) if first else None
            if written is not None:
                oldest_ms = written if oldest_ms is None else min(oldest_ms, written)
        if oldest_ms is None:
            return 0.0
        seconds, micros = await keyless(self._redis, "TIME", key=self._keys.audit(0))
        return max(int(seconds) * 1000 + int(micros) // 1000 - oldest_ms, 0) / 1000

    async def _forward_shard(self, shard: int) -> int:
        """Batches of one shard, each acknowledged before the checkpoint moves past it."""
        sent = 0
        loop = asyncio.get_running_loop()
        for _ in range(MAX_BATCHES_PER_PASS):
            lease = HeldLease(confirmed=loop.time())
            if not await self._take(shard):
                return sent
            batch = await self._next_batch(shard)
            if batch.blocked is not None:
                self._report_blocked(shard, batch.blocked)
                return sent
            if not batch.records:
                return sent
            acknowledged = await self._send_holding(shard, batch.records, lease)
            if lease.lost:  # the holder now sends this batch; committing it here could skip one
                self._held.discard(shard)
                if acknowledged:
                    AUDIT_FORWARDED.labels(self._sink.kind).inc(len(batch.records))
                    sent += len(batch.records)
                return sent
            last = batch.records[-1]
            assert batch.last_stream_id is not None  # set with every non-empty batch
            moved = await self._advance(
                keys=[self.lease_key(shard), self.checkpoint_key(shard)],
                args=[self._token, last["seq"], batch.last_stream_id, self._lease_ms],
            )
            AUDIT_FORWARDED.labels(self._sink.kind).inc(len(batch.records))
            sent += len(batch.records)
            if int(moved) != 1:
                self._held.discard(shard)
                log.warning("audit_forward_lease_lost", shard=shard, seq=last["seq"])
                return sent
            if len(batch.records) < self._batch:
                return sent
        return sent

    async def _send_holding(self, shard: int, records: list[Record], lease: HeldLease) -> bool:
        """Send one batch while a task renews its lease; True once the receiver acknowledged it.

        False only when the lease was lost and the send then cut short. A send is cut when its
        lease went unconfirmed for ``SEND_UNCONFIRMED`` of it (raises LeaseUnconfirmed, unless
        lost) or after ``send_limit_s`` (raises SinkError): cut, it is never committed."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        unconfirmed_s = self._lease_ms * SEND_UNCONFIRMED / 1000

        def deadline() -> float:  # moves on with every renewal, up to the limit
            return min(lease.confirmed + unconfirmed_s, started + self._send_limit)

        sending = asyncio.create_task(self._sink.send(records))
        renewing = asyncio.create_task(self._keep_lease(shard, lease))
        try:
            while not sending.done() and loop.time() < deadline():
                await asyncio.wait([sending], timeout=deadline() - loop.time())
        finally:
            renewing.cancel()
            sending.cancel()  # no-op once done
            await asyncio.gather(renewing, sending, return_exceptions=True)
        if not sending.cancelled():
            sending.result()  # SinkError: not acknowledged
            return True
        if lease.lost:
            return False
        if loop.time() >= started + self._send_limit:
            raise SinkError(
                "unreachable", f"{self._sink.kind}: no answer within {self._send_limit:g} s"
            )
        log.warning(
            "audit_forward_send_abandoned",
            shard=shard,
            sink=self._sink.kind,
            why="the lease could not be renewed (Redis unreachable or slow)",
            unconfirmed_s=round(loop.time() - lease.confirmed, 3),
        )
        raise LeaseUnconfirmed(
            f"shard {shard}: lease not renewed for {unconfirmed_s:g} s; the send was abandoned"
        )

    async def _keep_lease(self, shard: int, lease: HeldLease) -> None:
        """Renew the lease every third of it, only while ours, until cancelled (the send ended).

        A failed renewal is tried again a third later (the send's deadline does not move); one
        that finds the lease taken marks it lost and stops: never take a shard back mid-send."""
        loop = asyncio.get_running_loop()
        every = self._lease_ms * RENEW_EVERY / 1000
        attempted = lease.confirmed
        while True:
            await asyncio.sleep(max(attempted + every - loop.time(), 0.0))
            attempted = loop.time()
            try:
                ours = await self._renew(
                    keys=[self.lease_key(shard)], args=[self._token, self._lease_ms]
                )
            except (RedisError, OSError) as exc:
                log.warning(
                    "audit_forward_lease_renew_failed", shard=shard, error=type(exc).__name__
                )
                continue
            if int(ours) != 1:
                lease.lost = True
                log.warning(
                    "audit_forward_lease_lost",
                    shard=shard,
                    during="send",
                    hint="this batch is not committed here; the shard's holder sends it",
                )
                return
            lease.confirmed = attempted

    async def _take(self, shard: int) -> bool:
        """Hold (or keep holding) the shard's lease; False when another forwarder has it."""
        held = int(
            await self._hold(keys=[self.lease_key(shard)], args=[self._token, self._lease_ms])
        )
        if held:
            self._held.add(shard)
        else:
            self._held.discard(shard)
        return bool(held)

    async def _next_batch(self, shard: int) -> Batch:
        """Up to ``batch`` sealed events after the checkpoint, read after taking the lease."""
        done, sid, sealed = (await self._progress([shard]))[0]
        count = min(self._batch, sealed - done)
        if count <= 0:
            return Batch([], None)
        if done and sid is None:
            return Batch([], None, f"its checkpoint at event {done} has no stream id")
        start = "-" if not done else f"({sid}"
        page = _entries(await self._redis.xrange(self._keys.audit(shard), start, count=count))
        seals_key = self._keys.seals(shard)
        first = max(done - 1, 0)  # the seal before the batch, when there is one
        macs = [_text_of(m) for m in await self._redis.lrange(seals_key, first, done + count - 1)]
        prev: str | None = None
        if done:
            prev, macs = macs[0] if macs else None, macs[1:]
            if prev is None:
                return Batch([], None, f"the seal of event {done} is gone")
        records: list[Record] = []
        last: str | None = None
        for index, (stream_id, fields) in enumerate(page[: len(macs)]):
            expected = done + 1 + index
            if entry_seq(fields) != expected:
                if records:
                    break  # send what runs on; the next batch stops here and says why
                why = f"expected event {expected} after the checkpoint, found {fields.get('seq')!r}"
                return Batch([], None, f"{why} at stream id {stream_id}")
            record = forward_record(shard, self._keys.tag(shard), stream_id, fields, macs[index])
            problem = self._not_as_sealed(shard, fields, prev, macs[index])
            if problem:  # sent marked, never as evidence under a genuine seal
                record.update(verified=False, problem=problem)
                self._report_unverified(shard, expected, problem)
            prev = macs[index]
            records.append(record)
            last = stream_id
        if not records:
            return Batch([], None, f"event {done + 1} is sealed but not in the stream")
        return Batch(records, last)

    def _not_as_sealed(
        self, shard: int, fields: Mapping[str, str], prev: str | None, mac: str
    ) -> str:
        """Why this entry is not the event its seal was made over ("" when it is)."""
        try:
            _, event = parse_entry(fields)
        except BadEntry as exc:
            return f"not an audit event as twokey writes them: {exc}"
        if sealed_by(self._ring, prev, self._keys.tag(shard), event, mac) is None:
            return "it does not match its seal: changed after it was sealed"
        return ""

    def _report_unverified(self, shard: int, seq: int, problem: str) -> None:
        AUDIT_FORWARD_FAILURES.labels(self._sink.kind, "unverified").inc()
        log.error(
            "audit_forward_unverified",
            shard=shard,
            seq=seq,
            why=problem,
            hint="sent marked verified=false; treat as a security incident and run "
            "`twokey audit verify --anchor` against the chain heads your SIEM holds",
        )

    def _report_blocked(self, shard: int, why: str) -> None:
        """Counted on every pass, logged once per place: a gap is for a person to look at."""
        AUDIT_FORWARD_FAILURES.labels(self._sink.kind, "blocked").inc()
        if self._blocked.get(shard) == hash(why):
            return
        self._blocked[shard] = hash(why)
        log.error(
            "audit_forward_blocked",
            shard=shard,
            why=why,
            hint="forwarding of this shard stopped: run `twokey audit verify`",
        )

    # --- running ---------------------------------------------------------------------------

    def backoff_s(self, failures: int, retry_after: float | None) -> float:
        """The receiver's Retry-After if it gave one, else exponential with jitter."""
        if retry_after is not None:
            return float(retry_after)
        base, cap = self._backoff
        ceiling = min(cap, base * float(2 ** min(failures - 1, 30)))
        return ceiling / 2 + ceiling / 2 * secrets.randbelow(1001) / 1000

    async def run(
        self, stopping: asyncio.Event, seal: Callable[[], Awaitable[int]] | None = None
    ) -> None:
        """Forward until ``stopping`` is set; then release the leases and close the sink.

        ``seal`` (`twokey audit forward` without serve: ``AuditTrail.seal_all``) runs first on
        every pass, so events are sealed within the window even with no sweeper running. It runs
        whether or not the sink answers (passes are at most ``backoff_cap_s`` apart, well inside
        the 5-minute window), and its failure never stops forwarding what is already sealed.
        """
        log.info("audit_forward_started", sink=self._sink.kind, target=self._sink.target)
        failures = 0
        try:
            while not stopping.is_set():
                delay = self._interval
                if seal is not None:
                    await _seal_due(seal)
                try:
                    await self.forward_once()
                    failures = 0
                except SinkError as exc:
                    failures += 1
                    delay = self.backoff_s(failures, exc.retry_after)
                except (RedisError, OSError) as exc:
                    failures += 1
                    delay = self.backoff_s(failures, None)
                    AUDIT_FORWARD_FAILURES.labels(self._sink.kind, "redis").inc()
                    log.warning("audit_forward_failed", reason="redis", error=type(exc).__name__)
                except Exception as exc:  # a background task must outlive any one bad pass
                    failures += 1
                    delay = self.backoff_s(failures, None)
                    AUDIT_FORWARD_FAILURES.labels(self._sink.kind, "error").inc()
                    log.error("audit_forward_failed", reason="error", error=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
        finally:
            await self.close()

    async def close(self) -> None:
        """Let another replica take the shards at once, and close the sink's connection."""
        for shard in sorted(self._held):
            with contextlib.suppress(RedisError, OSError):
                await self._release(keys=[self.lease_key(shard)], args=[self._token])
        self._held.clear()
        await self._sink.aclose()


async def _seal_due(seal: Callable[[], Awaitable[int]]) -> None:
    """One sealing step, as the sweeper runs it: a failure is logged, never raised."""
    try:
        await seal()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # Redis down, a script error: the next pass tries again
        log.error("audit_forward_seal_failed", error=type(exc).__name__)


async def forward_until_stopped(
    redis: aioredis.Redis,
    keys: Keys,
    config: ForwardConfig,
    stopping: asyncio.Event,
    audit_keys: Sequence[SecretStr],
) -> None:
    """The background task of `twokey serve` (app/web.py) when forwarding is configured."""
    await Forwarder.from_config(redis, keys, config, audit_keys).run(stopping)
