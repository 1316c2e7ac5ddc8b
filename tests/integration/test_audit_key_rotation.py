"""Rotating TWOKEY_AUDIT_KEY (issue 13): the chain stays verifiable across the rotation.

New replicas seal with the new key and verify with the old one too (TWOKEY_AUDIT_KEYS_PREVIOUS);
replicas still on the old key leave sealing to them; a retired key used again after the new
one sealed fails verify; anchors recorded before the rotation still match.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from structlog.testing import capture_logs

from app.audit import AuditTrail
from app.audit.chain import ChainHead, key_id, next_mac, read_heads
from app.cli import main
from app.store.keys import Keys
from tests.helpers import build_core, chat
from tests.integration.test_audit_trail import SHARD, append

OLD = SecretStr("the-old-audit-key-0123456789abcdef")
NEW = SecretStr("the-new-audit-key-fedcba9876543210")


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace)


async def test_the_chain_verifies_across_a_rotation_and_old_anchors_hold(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    before = AuditTrail(redis_client, keys, OLD, page_size=4)
    await append(redis_client, keys, SHARD, 5)
    assert await before.seal(SHARD) == 5
    heads_before = [
        ChainHead(**{k: h[k] for k in ("shard", "seq", "mac", "chain")})
        for h in await before.heads()
    ]

    after = AuditTrail(redis_client, keys, NEW, page_size=4, previous_keys=[OLD])
    await append(redis_client, keys, SHARD, 3)
    assert await after.seal(SHARD) == 3
    report = await after.verify(anchors=heads_before)
    assert report.ok, report
    assert report.sealed == 8
    # Without the previous key the old seals cannot be checked: verify says so.
    assert not (await AuditTrail(redis_client, keys, NEW).verify()).ok
    # The old key alone cannot vouch for what the new key sealed.
    assert not (await before.verify()).ok


async def test_replicas_still_on_the_old_key_leave_sealing_to_the_new_ones(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    old_replica = AuditTrail(redis_client, keys, OLD, page_size=4)
    new_replica = AuditTrail(redis_client, keys, NEW, page_size=4, previous_keys=[OLD])
    await append(redis_client, keys, SHARD, 2)
    assert await old_replica.seal(SHARD) == 2
    await append(redis_client, keys, SHARD, 2)
    assert await new_replica.seal(SHARD) == 2  # the new key takes over from the old
    await append(redis_client, keys, SHARD, 2)
    with capture_logs() as logs:
        assert await old_replica.seal(SHARD) == 0  # mid-rollout: an old replica holds back
    assert any(e["event"] == "audit_sealing_left_to_newer_key" for e in logs)
    assert await new_replica.seal(SHARD) == 2
    assert (await new_replica.verify()).ok


async def test_a_retired_key_used_after_the_new_one_fails_verify(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    new_replica = AuditTrail(redis_client, keys, NEW, page_size=4, previous_keys=[OLD])
    await append(redis_client, keys, SHARD, 2)
    assert await new_replica.seal(SHARD) == 2
    await append(redis_client, keys, SHARD, 1)
    # Someone holding only the retired key seals the next event by hand.
    raw = await redis_client.xrange(keys.audit(SHARD))
    last_seal = await redis_client.lindex(keys.seals(SHARD), -1)
    forged = next_mac(OLD.get_secret_value().encode(), last_seal, json.loads(raw[-1][1]["e"]))
    await redis_client.rpush(keys.seals(SHARD), forged)
    report = await new_replica.verify()
    assert not report.ok
    assert "older key" in report.broken[0].problem.describe()


def test_key_ids_name_keys_without_showing_them() -> None:
    old, new = key_id(OLD.get_secret_value().encode()), key_id(NEW.get_secret_value().encode())
    assert old != new and len(old) == 12
    assert OLD.get_secret_value() not in old


async def test_twokey_audit_verify_with_the_previous_keys_setting(
    redis_client: aioredis.Redis,
    redis_url: str,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TWOKEY_NAMESPACE", namespace)
    monkeypatch.setenv("TWOKEY_ACCEPT_EVICTION_RISK", "true")
    core = build_core(redis_client, namespace)
    rid = await core.open_mfa_reset()
    await AuditTrail(redis_client, Keys(namespace), OLD).seal_all()  # serve, before the rotation
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", OLD.get_secret_value())
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0
    heads = io.StringIO()
    monkeypatch.setattr("sys.stdout", heads)
    assert await asyncio.to_thread(main, ["audit", "export", "--heads"]) == 0
    monkeypatch.undo()
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TWOKEY_NAMESPACE", namespace)
    monkeypatch.setenv("TWOKEY_ACCEPT_EVICTION_RISK", "true")

    monkeypatch.setenv("TWOKEY_AUDIT_KEY", NEW.get_secret_value())
    monkeypatch.setenv("TWOKEY_AUDIT_KEYS_PREVIOUS", json.dumps([OLD.get_secret_value()]))
    await core.service.confirm_owner(chat("alice"), rid)
    anchor = read_heads(heads.getvalue().splitlines())
    assert anchor
    monkeypatch.setattr("sys.stdin", io.StringIO(heads.getvalue()))
    assert await asyncio.to_thread(main, ["audit", "verify", "--anchor", "-"]) == 0
    monkeypatch.delenv("TWOKEY_AUDIT_KEYS_PREVIOUS")
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 1


async def test_the_report_takes_the_previous_keys_as_verify_does(
    redis_client: aioredis.Redis,
    redis_url: str,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """After a rotation `audit verify` passed while `report` called event 1 edited and kept
    every event sealed before the rotation out of the evidence."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TWOKEY_NAMESPACE", namespace)
    monkeypatch.setenv("TWOKEY_ACCEPT_EVICTION_RISK", "true")
    core = build_core(redis_client, namespace)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    assert await AuditTrail(redis_client, Keys(namespace), OLD).seal_all() > 0
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", NEW.get_secret_value())
    monkeypatch.setenv("TWOKEY_AUDIT_KEYS_PREVIOUS", json.dumps([OLD.get_secret_value()]))
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0
    out = tmp_path / "report.json"
    assert await asyncio.to_thread(main, ["report", "--format", "json", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["verification"]["ok"]
    assert report["volume"]["requests"] == 1
