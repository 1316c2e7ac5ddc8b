"""The forward lease is kept while a send is under way, and a send never outlives it unconfirmed.

A slow SIEM must not let a second replica take a shard mid-send and send the same batch again;
a lease taken away mid-send must not be committed by the one that lost it; a send whose lease
cannot be renewed (Redis unreachable) is abandoned before the lease can lapse. The receivers
are the real TLS ones of test_audit_forward.py; Redis is the test Redis, reached through a real
TCP relay where a test needs it unreachable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from app.audit.forward import Forwarder, LeaseUnconfirmed
from app.audit.forward_sinks import SinkError
from app.store.keys import Keys
from tests.integration.test_audit_forward import (
    HttpReceiver,
    by_shard,
    forwarder,
    hec_url,
    metric,
    sealed_events,
    until,
    webhook_url,
)
from tests.integration.test_audit_forward import hec as hec
from tests.integration.test_audit_forward import keys as keys
from tests.integration.test_audit_forward import tls as tls
from tests.integration.test_audit_forward import webhook as webhook
from tests.valkey_servers import Tls, free_port


@dataclass
class StallingProxy:
    """A TCP relay to the test Redis that can stop relaying: commands hang, nothing errors, as
    in a network partition (the hardest way for Redis to be unreachable)."""

    host: str
    port: int
    listen: int = field(default_factory=free_port)
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    """Cleared: the relay holds what it reads (Redis unreachable); set: it passes it on."""
    server: asyncio.Server | None = None
    pumps: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, redis_url: str) -> str:
        parts = urlsplit(redis_url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@" if credentials else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.listen}"))

    async def start(self) -> None:
        self.flowing.set()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for pump in list(self.pumps):
            pump.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink))
            self.pumps.add(pump)
            pump.add_done_callback(self.pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self.flowing.wait()
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()


async def checkpoint(redis: aioredis.Redis, sender: Forwarder, shard: int) -> dict[str, str]:
    found = await redis.hgetall(sender.checkpoint_key(shard))
    return {str(name): str(value) for name, value in found.items()}


def logged(logs: Sequence[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def test_a_receiver_slower_than_the_lease_gets_each_event_once_with_two_forwarders(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, webhook: HttpReceiver
) -> None:
    """Each batch takes the receiver over twice the lease to answer, and a second replica on
    the same Redis tries the same shards all along: the sender renews its lease while it
    waits, so nobody else takes the shard mid-send and every event arrives once, in order."""
    await sealed_events(redis_client, keys, {5: 7, 12: 4})
    webhook.delay_s = 1.5
    before = metric("twokey_audit_forwarded_total", sink="webhook")
    senders = [
        forwarder(redis_client, keys, tls, webhook_url(webhook), batch=3, lease_ms=600)
        for _ in "ab"
    ]
    stopping = asyncio.Event()
    running = [asyncio.create_task(s.run(stopping)) for s in senders]
    try:
        for _ in range(300):
            done = [await checkpoint(redis_client, senders[0], s) for s in (5, 12)]
            if [d.get("seq") for d in done] == ["7", "4"]:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # over two leases: time for any second copy to arrive
    finally:
        stopping.set()
        await asyncio.gather(*running)
    assert by_shard(webhook.records) == {5: list(range(1, 8)), 12: list(range(1, 5))}
    for shard, last in ((5, "7"), (12, "4")):
        entries = await redis_client.xrevrange(keys.audit(shard), count=1)
        assert entries
        newest = entries[0][0]
        assert await checkpoint(redis_client, senders[0], shard) == {"seq": last, "sid": newest}
    assert metric("twokey_audit_forwarded_total", sink="webhook") - before == 11


@pytest.mark.parametrize("taken", ["deleted", "overwritten"])
async def test_a_lease_taken_away_mid_send_is_noticed_and_its_batch_not_committed(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, hec: HttpReceiver, taken: str
) -> None:
    """The lease expires or another replica takes it while the receiver holds its answer: the
    renewal notices it mid-send (and says so), never takes the lease back nor extends another's,
    and the batch it was sending is not committed by it."""
    await sealed_events(redis_client, keys, {9: 3})
    hec.hold = asyncio.Event()
    sender = forwarder(redis_client, keys, tls, hec_url(hec), lease_ms=3000)
    lease = sender.lease_key(9)
    try:
        with capture_logs() as logs:
            sending = asyncio.create_task(sender.forward_once())
            await asyncio.wait_for(hec.received.wait(), 10)
            if taken == "deleted":
                await redis_client.delete(lease)
            else:
                await redis_client.set(lease, "another-forwarder", px=60_000)
            await until(lambda: bool(logged(logs, "audit_forward_lease_lost")), seconds=5)
            hec.hold.set()  # the receiver acknowledges the batch after the lease was lost
            await asyncio.wait_for(sending, 10)
        assert [e["shard"] for e in logged(logs, "audit_forward_lease_lost")] == [9]
        assert await checkpoint(redis_client, sender, 9) == {}
        assert [r["seq"] for r in hec.records] == [1, 2, 3]
        if taken == "deleted":
            assert await redis_client.exists(lease) == 0
        else:
            assert await redis_client.get(lease) == "another-forwarder"
            assert await redis_client.pttl(lease) > 50_000  # not shortened to our lease either
            assert await sender.forward_once() == 0  # the shard is the other's now
            assert len(hec.records) == 3
    finally:
        hec.hold.set()
        await sender.close()


async def test_a_send_whose_lease_cannot_be_renewed_is_abandoned_before_the_lease_lapses(
    redis_url: str, redis_client: aioredis.Redis, keys: Keys, tls: Tls, hec: HttpReceiver
) -> None:
    """Redis becomes unreachable from the forwarder while the receiver holds its answer: the
    renewals hang, so the send is abandoned while the lease is still the forwarder's (nobody
    else can have begun sending), and the batch is not committed (fail closed)."""
    await sealed_events(redis_client, keys, {3: 2})
    target = urlsplit(redis_url)
    proxy = StallingProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    through = aioredis.Redis.from_url(proxy.url(redis_url), decode_responses=True)
    hec.hold = asyncio.Event()
    sender = forwarder(through, keys, tls, hec_url(hec), lease_ms=3000)
    lease = sender.lease_key(3)
    try:
        with capture_logs() as logs:
            sending = asyncio.create_task(sender.forward_once())
            await asyncio.wait_for(hec.received.wait(), 10)
            token = await redis_client.get(lease)
            assert token is not None
            proxy.flowing.clear()
            await until(lambda: bool(logged(logs, "audit_forward_send_abandoned")), seconds=5)
            assert await redis_client.get(lease) == token  # abandoned before the lease lapsed
            proxy.flowing.set()
            with pytest.raises(LeaseUnconfirmed):
                await asyncio.wait_for(sending, 10)
        assert await checkpoint(redis_client, sender, 3) == {}
        assert [r["seq"] for r in hec.records] == [1, 2]
    finally:
        proxy.flowing.set()
        hec.hold.set()
        await sender.close()
        await through.aclose()
        await proxy.stop()


async def test_a_send_over_its_limit_fails_and_is_not_committed(
    redis_client: aioredis.Redis, keys: Keys, tls: Tls, webhook: HttpReceiver
) -> None:
    """Renewals keep the lease as long as a send lasts, so one send is bounded on its own: a
    receiver slower than the limit fails the batch (counted), which goes again later."""
    await sealed_events(redis_client, keys, {7: 2})
    webhook.delay_s = 1.0
    sender = forwarder(redis_client, keys, tls, webhook_url(webhook), send_limit_s=0.3)
    failures = metric("twokey_audit_forward_failures_total", sink="webhook", reason="unreachable")
    try:
        with pytest.raises(SinkError) as failed:
            await sender.forward_once()
        assert failed.value.reason == "unreachable"
        assert metric(
            "twokey_audit_forward_failures_total", sink="webhook", reason="unreachable"
        ) == (failures + 1)
        assert await checkpoint(redis_client, sender, 7) == {}
        webhook.delay_s = 0.0
        assert await sender.forward_once() == 2
        assert [r["seq"] for r in webhook.records] == [1, 2, 1, 2]
        assert (await checkpoint(redis_client, sender, 7))["seq"] == "2"
    finally:
        await sender.close()
