"""Sealed audit events leave the cluster: syslog over TLS, Splunk HEC, an HMAC-signed webhook.

Every receiver is a real local server speaking TLS with a certificate from a throwaway CA (as in
test_redis_tls.py): an RFC 5425 syslog listener that parses the RFC 5424 messages it gets, a
Splunk HEC stand-in that checks ``Authorization: Splunk <token>`` and the event shape, and a
webhook that checks each batch's HMAC signature. Redis is the test Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import REGISTRY

from app.audit import AuditTrail
from app.audit.forward import ForwardConfig, ForwardConfigError, Forwarder
from app.audit.forward_sinks import SinkError
from app.cli import main
from app.settings import Settings
from app.store.keys import Keys
from tests.integration.test_audit_trail import AUDIT_KEY, append
from tests.valkey_servers import Tls, free_port, make_tls

HEC_TOKEN = "11111111-2222-3333-4444-555555555555"
WEBHOOK_SECRET = "webhook-secret-0123456789abcdef"
SECRETS = (HEC_TOKEN, WEBHOOK_SECRET, AUDIT_KEY.get_secret_value())


# --- receivers ----------------------------------------------------------------------------------


def server_tls(tls: Tls) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    return context


SYSLOG_LINE = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+) (?P<msgid>\S+) "
    rb"\[(?P<sdid>[^ \]]+) (?P<params>(?:[a-z]+=\"(?:[^\"\\\]]|\\.)*\" ?)+)\] (?P<msg>.*)\Z",
    re.DOTALL,
)
SD_PARAM = re.compile(rb'([a-z]+)="((?:[^"\\\]]|\\.)*)"')


def parse_syslog(message: bytes) -> dict[str, Any]:
    """One RFC 5424 message as twokey writes it: header, structured data, BOM + JSON."""
    found = SYSLOG_LINE.match(message)
    assert found, message[:200]
    assert found["pri"] == b"110" and found["app"] == b"twokey" and found["msgid"] == b"audit"
    assert found["sdid"] == b"twokey@32473"
    assert found["msg"].startswith(b"\xef\xbb\xbf")
    params = {k.decode(): re.sub(rb"\\(.)", rb"\1", v).decode() for k, v in SD_PARAM.findall(
        found["params"]
    )}  # fmt: skip
    record: dict[str, Any] = json.loads(found["msg"][3:])
    assert params == {k: str(record[k]) for k in ("shard", "seq", "chain", "mac")}
    assert found["ts"].endswith(b"Z")
    return record


@dataclass
class SyslogListener:
    """An RFC 5425 receiver: octet-counted RFC 5424 messages over TLS."""

    tls: Tls
    port: int = field(default_factory=free_port)
    records: list[dict[str, Any]] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    server: asyncio.Server | None = None
    connections: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"syslog+tls://localhost:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=server_tls(self.tls)
        )

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.connections):
            writer.close()
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            while True:
                length = await reader.readuntil(b" ")
                message = await reader.readexactly(int(length[:-1]))
                self.raw += length + message
                self.records.append(parse_syslog(message))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self.connections.discard(writer)
            writer.close()


@dataclass
class HttpReceiver:
    """An HTTPS receiver run by aiohttp; ``answer`` decides each reply after checking it."""

    tls: Tls
    check: Callable[[web.Request, bytes], list[dict[str, Any]]]
    port: int = field(default_factory=free_port)
    records: list[dict[str, Any]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    attempts: list[float] = field(default_factory=list)
    throttle: int = 0
    """Answer this many next requests 429 with Retry-After: 1."""
    hold: asyncio.Event | None = None
    """Record, then wait for this before answering (a forwarder crashing meanwhile)."""
    delay_s: float = 0.0
    """Record, then take this long to answer (a slow SIEM)."""
    received: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=server_tls(self.tls))
        await site.start()

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts.append(time.monotonic())
        body = await request.read()
        if self.throttle:
            self.throttle -= 1
            return web.Response(status=429, headers={"Retry-After": "1"})
        try:
            records = self.check(request, body)
        except PermissionError:
            return web.json_response({"text": "Invalid token", "code": 4}, status=401)
        self.bodies.append(body)
        self.records.extend(records)
        self.received.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.json_response({"text": "Success", "code": 0})


def check_hec(request: web.Request, body: bytes) -> list[dict[str, Any]]:
    """What Splunk's /services/collector/event takes: concatenated event objects."""
    if request.headers.get("Authorization") != f"Splunk {HEC_TOKEN}":
        raise PermissionError
    assert request.path == "/services/collector/event"
    decoder, text, position, records = json.JSONDecoder(), body.decode(), 0, []
    while position < len(text):
        envelope, end = decoder.raw_decode(text, position)
        assert set(envelope) == {"time", "host", "source", "sourcetype", "event"}
        assert envelope["sourcetype"] == "twokey:audit" and envelope["source"] == "twokey"
        assert envelope["time"] == envelope["event"]["at"] / 1000
        records.append(envelope["event"])
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return records


def check_webhook(request: web.Request, body: bytes) -> list[dict[str, Any]]:
    """The receiver's side of the signature: HMAC-SHA256 of ``timestamp.body``, fresh."""
    timestamp = request.headers["X-Twokey-Timestamp"]
    expected = hmac.new(WEBHOOK_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    signature = request.headers["X-Twokey-Signature"]
    if not hmac.compare_digest(signature, "sha256=" + expected.hexdigest()):
        raise PermissionError
    assert abs(time.time() - int(timestamp)) < 60
    payload = json.loads(body)
    assert payload["source"] == "twokey"
    events: list[dict[str, Any]] = payload["events"]
    return events


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path)


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace)


@pytest.fixture
async def syslog(tls: Tls) -> AsyncIterator[SyslogListener]:
    listener = SyslogListener(tls)
    await listener.start()
    yield listener
    if listener.server is not None:
        await listener.stop()


@pytest.fixture
async def hec(tls: Tls) -> AsyncIterator[HttpReceiver]:
    receiver = HttpReceiver(tls, check_hec)
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def webhook(tls: Tls) -> AsyncIterator[HttpReceiver]:
    receiver = HttpReceiver(tls, check_webhook)
    await receiver.start()
    yield receiver
    await receiver.stop()


def hec_url(receiver: HttpReceiver) -> str:
    return f"splunk-hec://localhost:{receiver.port}"


def webhook_url(receiver: HttpReceiver) -> str:
    return f"https://localhost:{receiver.port}/twokey/audit"


def forwarder(
    redis: aioredis.Redis, keys: Keys, tls: Tls, url: str, *, batch: int = 100, **options: Any
) -> Forwarder:
    config = ForwardConfig(
        url=url,
        token=HEC_TOKEN if url.startswith("splunk-hec") else None,
        secret=WEBHOOK_SECRET if url.startswith("https") else None,
        ca_file=tls.ca,
        batch=batch,
    )
    fast = {"interval_s": 0.05, "backoff_base_s": 0.05, "backoff_cap_s": 0.2}
    return Forwarder(
        redis,
        keys,
        config.build_sink(),
        config.sink_id,
        audit_keys=[AUDIT_KEY],
        batch=batch,
        **{**fast, **options},
    )


async def sealed_events(redis: aioredis.Redis, keys: Keys, counts: dict[int, int]) -> None:
    """Append ``counts[shard]`` events to each shard as the gate scripts do, and seal them."""
    trail = AuditTrail(redis, keys, AUDIT_KEY)
    for shard, count in counts.items():
        await append(redis, keys, shard, count)
        assert await trail.seal(shard) == count


def by_shard(records: list[dict[str, Any]]) -> dict[int, list[int]]:
    shards: dict[int, list[int]] = {}
    for record in records:
        shards.setdefault(record["shard"], []).append(record["seq"])
    return shards


async def assert_chain_heads(
    redis: aioredis.Redis, keys: Keys, records: list[dict[str, Any]]
) -> None:
    """Each record carries its shard, chain, seq and seal, exactly as Redis holds them."""
    for record in records:
        shard = record["shard"]
        assert record["chain"] == keys.tag(shard)
        assert record["mac"] == await redis.lindex(keys.seals(shard), record["seq"] - 1)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.02)


def no_secret_in(payload: bytes) -> None:
    for secret in SECRETS:
        assert secret.encode() not in payload


# --- each sink ----------------------------------------------------------------------------------


async def test_syslog_over_tls_gets_rfc5424_octet_counted_in_order_per_shard(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, syslog: SyslogListener
) -> None:
    await sealed_events(redis_client, keys, {3: 7, 9: 5})
    await append(redis_client, keys, 9, 2)  # written, not sealed yet: not forwarded
    sender = forwarder(redis_client, keys, tls, syslog.url, batch=3)
    try:
        assert await sender.forward_once() == 12
    finally:
        await sender.close()
    await until(lambda: len(syslog.records) == 12)
    assert by_shard(syslog.records) == {3: list(range(1, 8)), 9: list(range(1, 6))}
    await assert_chain_heads(redis_client, keys, syslog.records)
    assert all(r["kind"] == "approved" and r["actor"] == "bob" for r in syslog.records)
    no_secret_in(bytes(syslog.raw))
    assert metric("twokey_audit_forward_lag_seconds", sink="syslog") == 0


async def test_hec_gets_the_collector_shape_with_its_token_and_a_bad_token_moves_nothing(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, hec: HttpReceiver
) -> None:
    await sealed_events(redis_client, keys, {1: 4})
    config = ForwardConfig(url=hec_url(hec), token="not-the-token", ca_file=tls.ca)
    wrong = Forwarder(
        redis_client, keys, config.build_sink(), config.sink_id, audit_keys=[AUDIT_KEY]
    )
    before = metric("twokey_audit_forward_failures_total", sink="hec", reason="refused")
    with pytest.raises(SinkError):
        await wrong.forward_once()
    await wrong.close()
    assert metric("twokey_audit_forward_failures_total", sink="hec", reason="refused") > before
    assert hec.records == []

    sender = forwarder(redis_client, keys, tls, hec_url(hec), batch=2)
    try:
        assert await sender.forward_once() == 4
    finally:
        await sender.close()
    assert by_shard(hec.records) == {1: [1, 2, 3, 4]}
    assert len(hec.bodies) == 2  # batches of two
    await assert_chain_heads(redis_client, keys, hec.records)
    no_secret_in(b"".join(hec.bodies))


async def test_the_webhook_batches_are_signed_and_carry_no_secret(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, webhook: HttpReceiver
) -> None:
    await sealed_events(redis_client, keys, {0: 3, 15: 2})
    sender = forwarder(redis_client, keys, tls, webhook_url(webhook))
    try:
        assert await sender.forward_once() == 5
    finally:
        await sender.close()
    assert by_shard(webhook.records) == {0: [1, 2, 3], 15: [1, 2]}
    await assert_chain_heads(redis_client, keys, webhook.records)
    no_secret_in(b"".join(webhook.bodies))


# --- delivery guarantees ------------------------------------------------------------------------


async def test_a_restart_loses_nothing_and_repeats_at_most_the_batch_in_flight(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, hec: HttpReceiver
) -> None:
    await sealed_events(redis_client, keys, {4: 10})
    # A clean stop after catching up: the next forwarder repeats nothing.
    first = forwarder(redis_client, keys, tls, hec_url(hec), batch=4)
    stopping = asyncio.Event()
    running = asyncio.create_task(first.run(stopping))
    await until(lambda: len(hec.records) == 10)
    stopping.set()
    await running
    # A crash between the receiver taking a batch and the checkpoint: the receiver holds its
    # answer, the forwarder process dies (its task is cancelled), a new one starts.
    await sealed_events(redis_client, keys, {4: 10})
    hec.received.clear()
    hec.hold = asyncio.Event()
    crashed = forwarder(redis_client, keys, tls, hec_url(hec), batch=4)
    running = asyncio.create_task(crashed.run(asyncio.Event()))
    await asyncio.wait_for(hec.received.wait(), 10)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    hec.hold.set()
    hec.hold = None

    restarted = forwarder(redis_client, keys, tls, hec_url(hec), batch=4)
    stopping = asyncio.Event()
    running = asyncio.create_task(restarted.run(stopping))
    await until(lambda: {r["seq"] for r in hec.records} == set(range(1, 21)))
    await asyncio.sleep(0.2)  # would anything more arrive?
    stopping.set()
    await running
    seqs = [r["seq"] for r in hec.records]
    assert seqs == [*range(1, 15), *range(11, 21)]  # events 11-14 (one batch) twice, no more


async def test_a_receiver_down_then_up_gets_everything_in_order(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, syslog: SyslogListener
) -> None:
    sender = forwarder(redis_client, keys, tls, syslog.url, batch=5)
    stopping = asyncio.Event()
    running = asyncio.create_task(sender.run(stopping))
    await sealed_events(redis_client, keys, {2: 3})
    await until(lambda: len(syslog.records) == 3)
    await syslog.stop()

    failures = metric("twokey_audit_forward_failures_total", sink="syslog", reason="unreachable")
    await sealed_events(redis_client, keys, {2: 12, 7: 6})
    await until(
        lambda: (
            metric("twokey_audit_forward_failures_total", sink="syslog", reason="unreachable")
            >= failures + 2
        )
    )
    await asyncio.sleep(0.05)
    assert metric("twokey_audit_forward_lag_seconds", sink="syslog") > 0
    await syslog.start()
    await until(lambda: len(syslog.records) == 21)
    stopping.set()
    await running
    assert by_shard(syslog.records) == {2: list(range(1, 16)), 7: list(range(1, 7))}
    assert metric("twokey_audit_forward_lag_seconds", sink="syslog") == 0


async def test_a_throttling_receiver_is_asked_again_after_its_retry_after(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, hec: HttpReceiver
) -> None:
    await sealed_events(redis_client, keys, {6: 2})
    hec.throttle = 1
    sender = forwarder(redis_client, keys, tls, hec_url(hec))
    stopping = asyncio.Event()
    running = asyncio.create_task(sender.run(stopping))
    await until(lambda: len(hec.records) == 2)
    stopping.set()
    await running
    assert hec.attempts[1] - hec.attempts[0] >= 0.95  # Retry-After: 1, not the 0.05 s backoff
    assert metric("twokey_audit_forward_failures_total", sink="hec", reason="throttled") >= 1


async def test_two_forwarders_on_one_redis_deliver_each_event_once(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, webhook: HttpReceiver
) -> None:
    senders = [forwarder(redis_client, keys, tls, webhook_url(webhook), batch=3) for _ in "ab"]
    stopping = asyncio.Event()
    running = [asyncio.create_task(s.run(stopping)) for s in senders]
    for _ in range(5):
        await sealed_events(redis_client, keys, {0: 4, 5: 3, 11: 2})
        await asyncio.sleep(0.03)
    await until(lambda: len(webhook.records) >= 45)
    await asyncio.sleep(0.3)
    stopping.set()
    await asyncio.gather(*running)
    assert by_shard(webhook.records) == {
        0: list(range(1, 21)),
        5: list(range(1, 16)),
        11: list(range(1, 11)),
    }


async def test_a_gap_stops_its_shard_and_never_skips_it(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, hec: HttpReceiver
) -> None:
    await sealed_events(redis_client, keys, {8: 3})
    sender = forwarder(redis_client, keys, tls, hec_url(hec))
    assert await sender.forward_once() == 3
    await sealed_events(redis_client, keys, {8: 3})
    entries = await redis_client.xrange(keys.audit(8))
    await redis_client.xdel(keys.audit(8), entries[3][0])  # event 4 deleted after sealing
    before = metric("twokey_audit_forward_failures_total", sink="hec", reason="blocked")
    assert await sender.forward_once() == 0
    await sender.close()
    assert [r["seq"] for r in hec.records] == [1, 2, 3]
    assert metric("twokey_audit_forward_failures_total", sink="hec", reason="blocked") > before


async def test_an_event_changed_after_its_seal_reaches_the_siem_marked_never_as_evidence(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, webhook: HttpReceiver
) -> None:
    """An insider rewrites a sealed event while the SIEM is behind. It went out under its
    genuine seal; were the original put back later, verify --anchor would pass and the SIEM's
    copy be the forgery. Each event is now checked against its seal before it is sent."""
    await sealed_events(redis_client, keys, {6: 3})
    entries = list(await redis_client.xrange(keys.audit(6)))
    entry_id, fields = entries[1]
    event = json.loads(fields["e"])
    event["actor"] = "mallory"
    entries[1] = (entry_id, {**fields, "e": json.dumps(event)})
    await redis_client.delete(keys.audit(6))
    for entry_id, fields in entries:
        await redis_client.xadd(keys.audit(6), fields, id=entry_id)
    before = metric("twokey_audit_forward_failures_total", sink="webhook", reason="unverified")
    sender = forwarder(redis_client, keys, tls, webhook_url(webhook))
    try:
        assert await sender.forward_once() == 3
    finally:
        await sender.close()
    marked = [(r["seq"], r.get("verified"), r.get("actor")) for r in webhook.records]
    assert marked == [(1, None, "bob"), (2, False, "mallory"), (3, None, "bob")]
    assert "changed after it was sealed" in webhook.records[1]["problem"]
    after = metric("twokey_audit_forward_failures_total", sink="webhook", reason="unverified")
    assert after == before + 1


# --- the SIEM's copy anchors verify -------------------------------------------------------------


@pytest.fixture
def operator_env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TWOKEY_NAMESPACE", namespace)
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", AUDIT_KEY.get_secret_value())
    monkeypatch.setenv("TWOKEY_ACCEPT_EVICTION_RISK", "true")
    monkeypatch.setenv("TWOKEY_DATA_DIR", str(tmp_path / "data"))
    for name in ("URL", "TOKEN", "SECRET", "CA_FILE", "BATCH"):
        monkeypatch.delenv(f"TWOKEY_AUDIT_FORWARD_{name}", raising=False)


async def twokey(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_the_siem_copy_anchors_twokey_audit_verify(
    operator_env: None,
    redis_client: aioredis.Redis,
    keys: Keys,
    tls: Tls,
    hec: HttpReceiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await sealed_events(redis_client, keys, {3: 4, 12: 2})
    sender = forwarder(redis_client, keys, tls, hec_url(hec))
    assert await sender.forward_once() == 6
    await sender.close()
    siem = tmp_path / "siem.jsonl"
    siem.write_text("".join(json.dumps(r) + "\n" for r in hec.records))

    assert await twokey("audit", "verify", "--anchor", str(siem)) == 0
    assert "6 chain heads recorded outside Redis all match" in capsys.readouterr().out

    # Someone with Redis access rolls shard 12 back to nothing: the SIEM's copy says otherwise.
    await redis_client.delete(
        keys.audit(12), keys.audit_seq(12), keys.seals(12), keys.seals(12) + ":high"
    )
    assert await twokey("audit", "verify", "--anchor", str(siem)) == 1
    assert "rolled back" in capsys.readouterr().out


# --- the command and the settings ---------------------------------------------------------------


async def test_twokey_audit_forward_once_catches_up_for_cron(
    operator_env: None,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: aioredis.Redis,
    keys: Keys,
    tls: Tls,
    hec: HttpReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TWOKEY_AUDIT_FORWARD_URL", hec_url(hec))
    monkeypatch.setenv("TWOKEY_AUDIT_FORWARD_TOKEN", HEC_TOKEN)
    monkeypatch.setenv("TWOKEY_AUDIT_FORWARD_CA_FILE", str(tls.ca))
    monkeypatch.setenv("TWOKEY_AUDIT_FORWARD_BATCH", "2")
    await append(redis_client, keys, 10, 5)  # not sealed yet: the command seals first
    assert await twokey("audit", "forward", "--once") == 0
    out, err = capsys.readouterr()
    assert f"Forwarded 5 sealed events to splunk-hec://localhost:{hec.port}." in out
    assert by_shard(hec.records) == {10: [1, 2, 3, 4, 5]}
    assert await twokey("audit", "forward", "--once") == 0
    assert "Forwarded 0 sealed events" in capsys.readouterr().out

    await hec.stop()
    await append(redis_client, keys, 10, 1)
    assert await twokey("audit", "forward", "--once") == 1
    out, err = capsys.readouterr()
    assert "did not take the events" in err and HEC_TOKEN not in out + err
    await hec.start()


async def test_twokey_audit_forward_runs_until_sigterm_then_lets_go(
    operator_env: None,
    redis_client: aioredis.Redis,
    keys: Keys,
    namespace: str,
    tls: Tls,
    hec: HttpReceiver,
    tmp_path: Path,
) -> None:
    """`twokey audit forward` without --once, as a sidecar runs it: a process of its own that
    sends what is sealed while it runs, and on SIGTERM stops, releases its leases (another
    forwarder takes over at once, not after LEASE_MS) and exits 0, its output free of secrets."""
    await sealed_events(redis_client, keys, {4: 2})  # waiting before it starts
    env = {
        **os.environ,
        "TWOKEY_AUDIT_FORWARD_URL": hec_url(hec),
        "TWOKEY_AUDIT_FORWARD_TOKEN": HEC_TOKEN,
        "TWOKEY_AUDIT_FORWARD_CA_FILE": str(tls.ca),
        "TWOKEY_AUDIT_FORWARD_BATCH": "2",
        "LOG_LEVEL": "INFO",
    }
    output = tmp_path / "forward.log"
    with output.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "audit", "forward",
            cwd=tmp_path, env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    leases = f"{{{namespace}:s*}}:audit:fwd:*:lease"
    try:
        await until(lambda: len(hec.records) == 2, seconds=20)
        # Written and sealed while it runs (by a replica's sweeper, in a fleet): sent too.
        await sealed_events(redis_client, keys, {4: 3, 11: 2})
        await until(lambda: len(hec.records) == 7, seconds=20)
        held = [key async for key in redis_client.scan_iter(leases)]
        assert len(held) == 2, held  # shards 4 and 11, held by the running forwarder
        assert process.returncode is None
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert [key async for key in redis_client.scan_iter(leases)] == []
    assert by_shard(hec.records) == {4: [1, 2, 3, 4, 5], 11: [1, 2]}
    await assert_chain_heads(redis_client, keys, hec.records)
    text = output.read_bytes()
    assert b"audit_forward_started" in text
    no_secret_in(text)


async def test_twokey_audit_forward_alone_seals_what_is_due_with_no_serve_running(
    operator_env: None,
    redis_client: aioredis.Redis,
    keys: Keys,
    namespace: str,
    tls: Tls,
    hec: HttpReceiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A SIEM sidecar with no `twokey serve` replica (so no sweeper): events written while it
    runs are never sealed by anyone else. The command seals what is due on every pass, as the
    sweeper and --once do, so they reach the receiver; the chain it sealed then verifies."""
    await append(redis_client, keys, 6, 2)  # written, not sealed, before it starts
    env = {
        **os.environ,
        "TWOKEY_AUDIT_FORWARD_URL": hec_url(hec),
        "TWOKEY_AUDIT_FORWARD_TOKEN": HEC_TOKEN,
        "TWOKEY_AUDIT_FORWARD_CA_FILE": str(tls.ca),
        "TWOKEY_AUDIT_FORWARD_BATCH": "2",
        "LOG_LEVEL": "INFO",
    }
    output = tmp_path / "forward.log"
    with output.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "audit", "forward",
            cwd=tmp_path, env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        await until(lambda: len(hec.records) == 2, seconds=20)
        # Written while it runs, as the gate scripts write them; nobody else seals them.
        await append(redis_client, keys, 6, 3)
        await append(redis_client, keys, 14, 2)
        await until(lambda: len(hec.records) == 7, seconds=20)
        assert process.returncode is None
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert by_shard(hec.records) == {6: [1, 2, 3, 4, 5], 14: [1, 2]}
    assert await redis_client.llen(keys.seals(6)) == 5
    assert await redis_client.llen(keys.seals(14)) == 2
    await assert_chain_heads(redis_client, keys, hec.records)
    text = output.read_bytes()
    assert b"audit_sealed" in text  # the command sealed them itself
    no_secret_in(text)

    siem = tmp_path / "siem.jsonl"
    siem.write_text("".join(json.dumps(r) + "\n" for r in hec.records))
    assert await twokey("audit", "verify", "--anchor", str(siem)) == 0
    assert "7 chain heads recorded outside Redis all match" in capsys.readouterr().out


def test_the_checkpoint_and_lease_keep_their_names_beside_the_stream() -> None:
    """Named in keys.py now; the names must not change, or a restart would resend everything."""
    keys = Keys("tk")
    assert keys.audit_forward_checkpoint(3, "ab12cd") == "{tk:s03}:audit:fwd:ab12cd"
    assert keys.audit_forward_lease(3, "ab12cd") == "{tk:s03}:audit:fwd:ab12cd:lease"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"URL": "ftp://siem:21"}, "has the scheme 'ftp'"),
        ({"URL": "http://siem/hook", "SECRET": WEBHOOK_SECRET}, "in the clear"),
        ({"URL": "syslog://siem:514"}, "syslog+tls://host:6514"),
        ({"URL": "syslog+tls://:6514"}, "names no host"),
        ({"URL": "syslog+tls://siem:99999"}, "valid port"),
        ({"URL": "splunk-hec://siem:8088"}, "TWOKEY_AUDIT_FORWARD_TOKEN is not set"),
        ({"URL": "https://siem/hook"}, "TWOKEY_AUDIT_FORWARD_SECRET must be set"),
        ({"URL": "https://siem/hook", "SECRET": "short"}, "16 or more"),
        ({"URL": "https://u:p@siem/hook", "SECRET": WEBHOOK_SECRET}, "must not carry a user"),
        (
            {"URL": "splunk-hec://siem:8088", "TOKEN": HEC_TOKEN, "CA_FILE": "/nonexistent.pem"},
            "TWOKEY_AUDIT_FORWARD_CA_FILE: /nonexistent.pem is not a readable PEM",
        ),
    ],
)
def test_a_bad_forwarding_setting_gets_a_sentence_naming_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], words: str
) -> None:
    for name in ("URL", "TOKEN", "SECRET", "CA_FILE", "BATCH"):
        monkeypatch.delenv(f"TWOKEY_AUDIT_FORWARD_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(f"TWOKEY_AUDIT_FORWARD_{name}", value)
    with pytest.raises(ForwardConfigError) as refused:
        ForwardConfig.from_settings(Settings())
    assert words in str(refused.value)
    assert HEC_TOKEN not in str(refused.value) and WEBHOOK_SECRET not in str(refused.value)


def test_twokey_serve_refuses_a_bad_forwarding_setting_before_serving(
    operator_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TWOKEY_AUDIT_FORWARD_URL", "splunk-hec://siem:8088")
    assert main(["serve"]) == 2
    assert "TWOKEY_AUDIT_FORWARD_TOKEN is not set" in capsys.readouterr().err


# --- twokey serve -------------------------------------------------------------------------------


async def test_serve_forwards_in_the_background_and_lets_go_at_shutdown(
    operator_env: None,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: aioredis.Redis,
    keys: Keys,
    tls: Tls,
    syslog: SyslogListener,
) -> None:
    from aiohttp.test_utils import TestServer

    from app.web import STOPPED, create_app

    monkeypatch.setenv("TWOKEY_AUDIT_FORWARD_URL", syslog.url)
    monkeypatch.setenv("TWOKEY_AUDIT_FORWARD_CA_FILE", str(tls.ca))
    monkeypatch.setenv("TWOKEY_SWEEP_INTERVAL", "0.1")
    monkeypatch.setenv("TWOKEY_PLAYGROUND", "false")
    app = create_app(Settings())
    server = TestServer(app)
    await server.start_server()
    try:
        await append(redis_client, keys, 13, 3)  # the sweeper seals, the forwarder sends
        await until(lambda: len(syslog.records) == 3)
        leases = [k async for k in redis_client.scan_iter(f"{keys.tag(13)}:audit:fwd:*:lease")]
        assert len(leases) == 1
    finally:
        await server.close()
    assert app[STOPPED].clean is True
    assert await redis_client.exists(*leases) == 0  # released: another replica goes on at once
    assert by_shard(syslog.records) == {13: [1, 2, 3]}


def test_an_alert_fires_when_forwarding_stalls() -> None:
    import yaml

    rules_file = Path(__file__).resolve().parents[2] / "manifests/prometheus/twokey-alerts.yaml"
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load(rules_file.read_text())["groups"]
        for rule in group["rules"]
    }
    stalled = rules["TwokeyAuditForwardingStalled"]
    assert "twokey_audit_forward_lag_seconds" in stalled["expr"]
    assert stalled["labels"]["severity"] == "critical" and stalled["for"] == "5m"
