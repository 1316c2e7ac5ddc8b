"""`twokey audit verify | export` against history rewritten after it was sealed (issue 16).

Run as an operator runs them, against the test Redis; assertions are on exit codes and output.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.cli import main
from app.store.keys import Keys, shard_of_request
from tests.helpers import build_core, chat

AUDIT_KEY = "a-test-audit-key-that-is-long-enough"


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, namespace: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TWOKEY_NAMESPACE", namespace)
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", AUDIT_KEY)
    monkeypatch.setenv("TWOKEY_ACCEPT_EVICTION_RISK", "true")
    monkeypatch.setenv("LOG_LEVEL", "INFO")


async def completed_shard(redis_client: aioredis.Redis, namespace: str) -> int:
    """A request taken to completion: five events in its shard. Returns the shard."""
    core = build_core(redis_client, namespace)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    return shard_of_request(rid)


async def sealed_as_serve_does(redis_client: aioredis.Redis, namespace: str) -> None:
    """A sweep of `twokey serve` (command-line tools never start a shard's chain)."""
    from pydantic import SecretStr

    from app.audit import AuditTrail

    await AuditTrail(redis_client, Keys(namespace), SecretStr(AUDIT_KEY)).seal_all()


async def twokey(*argv: str) -> int:
    """`twokey ARGV...` in a thread: main() runs its own event loop."""
    return await asyncio.to_thread(main, list(argv))


def logged(err: str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines (stderr, not a terminal) of one event."""
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


async def rebuild_with_first_event_edited(redis_client: aioredis.Redis, stream: str) -> None:
    """The attacker's rewrite: same stream ids, same seqs, a different actor on event 1."""
    raw: Any = await redis_client.xrange(stream)
    entries = list(raw)
    entry_id, fields = entries[0]
    event = json.loads(fields["e"])
    event["actor"] = "mallory"
    entries[0] = (entry_id, {**fields, "e": json.dumps(event)})
    await redis_client.delete(stream)
    for entry_id, fields in entries:
        await redis_client.xadd(stream, fields, id=entry_id)


async def test_the_reported_attack_edit_trim_and_reseal_fails_audit_verify(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shard = await completed_shard(redis_client, namespace)
    keys = Keys(namespace)
    await sealed_as_serve_does(redis_client, namespace)
    assert await twokey("audit", "verify") == 0
    capsys.readouterr()

    await rebuild_with_first_event_edited(redis_client, keys.audit(shard))
    await redis_client.ltrim(keys.seals(shard), 1, 0)  # every seal gone: before the first edit
    assert await twokey("audit", "verify") == 1  # verify runs a seal pass first, as a sweep does

    captured = capsys.readouterr()
    assert "AUDIT TRAIL BROKEN" in captured.out
    assert f"First bad event: shard {keys.tag(shard)}, event 1: seals removed" in captured.out
    assert "holds 0 seals but 5 events were sealed" in captured.out
    assert await redis_client.llen(keys.seals(shard)) == 0  # nothing was re-sealed
    [fault] = logged(captured.err, "audit_seal_list_shrank")
    assert (fault["level"], fault["shard"]) == ("error", shard)


async def test_verify_anchor_catches_a_whole_shard_rolled_back(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    shard = await completed_shard(redis_client, namespace)
    keys = Keys(namespace)
    await sealed_as_serve_does(redis_client, namespace)
    assert await twokey("audit", "verify") == 0
    capsys.readouterr()
    assert await twokey("audit", "export", "--heads") == 0  # what the SIEM keeps
    heads = capsys.readouterr().out
    seals = await redis_client.lrange(keys.seals(shard), 0, -1)
    assert [
        (h["shard"], h["chain"], h["seq"], h["mac"]) for h in map(json.loads, heads.splitlines())
    ] == [(shard, keys.tag(shard), 5, seals[4])]
    anchor = tmp_path / "heads.jsonl"
    anchor.write_text(heads)

    await redis_client.delete(
        keys.audit(shard), keys.seals(shard), keys.seals(shard) + ":high", keys.audit_seq(shard)
    )
    assert await twokey("audit", "verify") == 1  # its request is still there: no event at all
    assert "AUDIT TRAIL MISSING" in capsys.readouterr().out
    assert await twokey("audit", "verify", "--anchor", str(anchor)) == 1

    out = capsys.readouterr().out
    assert f"First bad event: shard {keys.tag(shard)}, event 1: rolled back" in out
    assert "says event 5 was sealed, but the seal list ends at event 0" in out


async def test_export_heads_and_verify_anchor_from_standard_input(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shard = await completed_shard(redis_client, namespace)
    keys = Keys(namespace)
    await sealed_as_serve_does(redis_client, namespace)
    assert await twokey("audit", "verify") == 0
    capsys.readouterr()

    assert await twokey("audit", "export", "--heads") == 0
    heads_out = capsys.readouterr().out
    seals = await redis_client.lrange(keys.seals(shard), 0, -1)
    assert [json.loads(line) for line in heads_out.splitlines()] == [
        {"type": "twokey_audit_head", "shard": shard, "chain": keys.tag(shard), "seq": 5}
        | {"mac": seals[4]}
    ]
    assert await twokey("audit", "export") == 0
    exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["shard"], r["seq"], r["mac"]) for r in exported] == [
        (shard, n + 1, seals[n]) for n in range(5)
    ]

    monkeypatch.setattr("sys.stdin", io.StringIO(heads_out))
    assert await twokey("audit", "verify", "--anchor", "-") == 0
    assert "1 chain head recorded outside Redis matches" in capsys.readouterr().out

    # the attacker rewrites event 1 and gets it re-sealed from scratch (the mark removed too)
    await rebuild_with_first_event_edited(redis_client, keys.audit(shard))
    await redis_client.delete(keys.seals(shard), keys.seals(shard) + ":high")
    await sealed_as_serve_does(redis_client, namespace)  # the next sweep seals it from scratch
    assert await twokey("audit", "verify") == 0  # Redis alone cannot tell
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(heads_out))
    assert await twokey("audit", "verify", "--anchor", "-") == 1
    out = capsys.readouterr().out
    assert f"First bad event: shard {keys.tag(shard)}, event 5" in out
    assert "rewritten" in out


async def test_verify_anchor_that_checks_nothing_is_refused(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    await completed_shard(redis_client, namespace)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not a head\n")
    foreign = tmp_path / "foreign.jsonl"
    head = {"shard": 1, "chain": "{elsewhere:s01}", "seq": 3, "mac": "b" * 64}
    foreign.write_text(json.dumps(head) + "\n")

    assert await twokey("audit", "verify", "--anchor", str(empty)) == 2
    assert "no chain heads in" in capsys.readouterr().err
    assert await twokey("audit", "verify", "--anchor", str(tmp_path / "missing")) == 2
    assert "cannot read" in capsys.readouterr().err
    assert await twokey("audit", "verify", "--anchor", str(foreign)) == 2
    assert "none of the 1 chain heads" in capsys.readouterr().err


async def test_audit_seal_late_is_an_explicit_operator_command(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await completed_shard(redis_client, namespace)
    assert await twokey("audit", "seal", "--max-age", "2h") == 0
    captured = capsys.readouterr()
    assert "Sealed 5 events up to 2h old" in captured.out
    [late] = logged(captured.err, "audit_sealed_late")
    assert (late["level"], late["events"]) == ("warning", 5)
    assert await twokey("audit", "verify") == 0


async def not_utf8_entry(redis_url: str, namespace: str, shard: int) -> None:
    """An insider's XADD with bytes that are not UTF-8 (redis-cli takes any bytes)."""
    raw = aioredis.Redis.from_url(redis_url)  # no decoding, as redis-cli
    keys = Keys(namespace)
    try:
        seq = await raw.incr(keys.audit_seq(shard))
        entry = b'{"seq": %d, "kind": "x\xff\xfe"}' % seq
        await raw.xadd(keys.audit(shard), {b"seq": str(seq).encode(), b"e": entry})
    finally:
        await raw.aclose()


async def test_an_entry_that_is_not_utf8_is_named_and_stops_no_other_shard(
    operator_env: None,
    redis_url: str,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One unreadable entry stopped the sealer for every shard after it (so after the sealing
    window nothing new could be sealed anywhere) and made verify and export tracebacks."""
    from pydantic import SecretStr

    from app.audit import AuditTrail

    core = build_core(redis_client, namespace)
    rid = await core.open_mfa_reset()
    honest = shard_of_request(rid)
    poisoned = 0 if honest != 0 else 1
    await not_utf8_entry(redis_url, namespace, poisoned)
    sealer = AuditTrail(redis_client, Keys(namespace), SecretStr(AUDIT_KEY))
    await sealer.seal_all()
    assert await redis_client.llen(Keys(namespace).seals(honest)) == 1
    capsys.readouterr()
    assert await twokey("audit", "export") == 0
    exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {e.get("rid") for e in exported} >= {rid}
    assert await twokey("audit", "verify") == 1
    said = capsys.readouterr().out
    assert "AUDIT TRAIL BROKEN" in said
    tag = Keys(namespace).tag(poisoned)
    assert f"First bad event: shard {tag}, event 1 (stream id " in said
    assert "not UTF-8" in said


async def test_verify_with_a_mistyped_key_writes_nothing_to_the_trail(
    operator_env: None,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Verify seals first, as a sweep would. With a mistyped key it started the chain of any
    shard not sealed yet with that key, and the replicas with the right key could never seal
    that shard again. A key that no seal agrees with now seals nothing."""
    from pydantic import SecretStr

    from app.audit import AuditTrail

    core = build_core(redis_client, namespace)
    sealed_before = shard_of_request(await core.open_mfa_reset("alice"))
    await sealed_as_serve_does(redis_client, namespace)
    rid = await core.open_mfa_reset("grace")
    fresh = shard_of_request(rid)
    assert fresh != sealed_before
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", "a-mistyped-audit-key-long-enough-too")
    assert await twokey("audit", "verify") == 1
    assert "NO SEAL MATCHES THIS KEY" in capsys.readouterr().out
    assert await redis_client.llen(Keys(namespace).seals(fresh)) == 0
    right = AuditTrail(redis_client, Keys(namespace), SecretStr(AUDIT_KEY))
    assert await right.seal(fresh) == 1
    assert (await right.verify()).ok


async def test_a_wiped_trail_is_called_missing_and_an_empty_one_asks_about_the_namespace(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Deleting every shard's audit keys read "Audit trail intact: 0 events", exit 0."""
    assert await twokey("audit", "verify") == 0
    said = capsys.readouterr().out
    assert f"No audit event at all in namespace {namespace!r}" in said
    shard = await completed_shard(redis_client, namespace)
    keys = Keys(namespace)
    await sealed_as_serve_does(redis_client, namespace)
    await redis_client.delete(
        keys.audit(shard), keys.audit_seq(shard), keys.seals(shard), keys.seals(shard) + ":high"
    )
    assert await twokey("audit", "verify") == 1
    assert "AUDIT TRAIL MISSING" in capsys.readouterr().out
