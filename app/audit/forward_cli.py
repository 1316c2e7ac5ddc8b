"""`twokey audit forward [--once]`: the forwarder as a command, for cron or a sidecar.

`twokey serve` already forwards in the background when TWOKEY_AUDIT_FORWARD_URL is set; this
is for deployments that ship from a CronJob or a sidecar instead, or want to catch up by hand.
Both modes seal what is due first, as the sweeper does, so they work with no `serve` running.
It shares the checkpoint and the leases with every running replica, so it never sends what they
sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.audit.forward import ForwardConfig, ForwardConfigError, Forwarder
from app.audit.forward_sinks import SinkError
from app.audit.trail import UNAVAILABLE_MESSAGE, AuditTrail
from app.settings import Settings
from app.store.keys import Keys

NOT_SET = (
    "TWOKEY_AUDIT_FORWARD_URL is not set: set it to syslog+tls://host:6514, "
    "splunk-hec://host:8088 or https://host/path (README: Forwarding the audit trail to a SIEM)."
)


def _say(text: str) -> None:
    print(f"twokey: {text}", file=sys.stderr)


async def forward_command(
    redis: aioredis.Redis, trail: AuditTrail, settings: Settings, once: bool
) -> int:
    """0 caught up (or stopped); 1 the sink did not take the events; 2 bad setting or Redis."""
    try:
        config = ForwardConfig.from_settings(settings)
    except ForwardConfigError as exc:
        _say(str(exc))
        return 2
    if config is None:
        _say(NOT_SET)
        return 2
    forwarder = Forwarder.from_config(redis, Keys(settings.namespace), config, trail.audit_keys)
    if not once:
        # Seals what is due on every pass, as the sweeper does: a sidecar with no `twokey serve`
        # running must still seal, or nothing new would ever be forwarded (sealing is safe from
        # several processes at once: app/audit/trail.py, AuditTrail.seal).
        await forwarder.run(_stop_on_signal(), seal=trail.seal_all)
        return 0
    try:
        await trail.seal_all()  # what a sweep would seal now is forwarded now, too
        sent = await _catch_up(forwarder)
        waiting = await forwarder.lag_seconds()
    except SinkError as exc:
        _say(f"{config.target} did not take the events ({exc}); run again later.")
        return 1
    except RedisError:
        _say(UNAVAILABLE_MESSAGE)
        return 2
    finally:
        await forwarder.close()
    noun = "event" if sent == 1 else "events"
    print(f"Forwarded {sent} sealed {noun} to {config.target}.")
    if waiting:
        print(
            f"Still waiting: sealed events up to {waiting:.0f} s old (a replica holds their "
            "shard, or forwarding of a shard is blocked: see the log)."
        )
    return 0


async def _catch_up(forwarder: Forwarder) -> int:
    """Passes until one sends nothing: every shard caught up, or held by another forwarder."""
    total = 0
    while sent := await forwarder.forward_once():
        total += sent
    return total


def _stop_on_signal() -> asyncio.Event:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(number, stopping.set)
    return stopping
