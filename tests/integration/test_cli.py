"""The operator's commands, run as `twokey ...` would run them, against the test Redis."""

from __future__ import annotations

import json
import os
import pwd

import pytest
import redis.asyncio as aioredis

from app.cli import main
from app.store.keys import shard_of_request
from tests.helpers import build_core, chat

AUDIT_KEY = "a-test-audit-key-that-is-long-enough"


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, namespace: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TWOKEY_NAMESPACE", namespace)
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", AUDIT_KEY)
    monkeypatch.setenv("TWOKEY_ACCEPT_EVICTION_RISK", "true")


async def completed_request(redis_client: aioredis.Redis, namespace: str) -> str:
    core = build_core(redis_client, namespace)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    return rid


async def rewrite_stream(redis_client: aioredis.Redis, key: str, change: object) -> None:
    """Tamper as an attacker with Redis access would: rebuild the stream with the same ids."""
    entries = await redis_client.xrange(key)
    entries = change(entries)  # type: ignore[operator]
    await redis_client.delete(key)
    for entry_id, fields in entries:
        await redis_client.xadd(key, fields, id=entry_id)


def edit_first(entries: list) -> list:  # type: ignore[type-arg]
    entry_id, fields = entries[0]
    event = json.loads(fields["e"])
    event["actor"] = "mallory"
    return [(entry_id, {**fields, "e": json.dumps(event)}), *entries[1:]]


def delete_second(entries: list) -> list:  # type: ignore[type-arg]
    return [entries[0], *entries[2:]]


def swap_two(entries: list) -> list:  # type: ignore[type-arg]
    (id1, f1), (id2, f2), *rest = entries
    return [(id1, f2), (id2, f1), *rest]


@pytest.mark.parametrize("tamper", [edit_first, delete_second, swap_two])
async def test_audit_verify_detects_tampering(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    tamper: object,
) -> None:
    rid = await completed_request(redis_client, namespace)
    # main() runs its own event loop; run it in a thread-free way via asyncio.to_thread
    import asyncio

    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0
    assert "events" in capsys.readouterr().out
    key = build_core(redis_client, namespace).keys.audit(shard_of_request(rid))
    await rewrite_stream(redis_client, key, tamper)
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "First bad event" in out, out
    assert "event 1 " in out or "event 2 " in out, out


async def test_audit_export_streams_jsonl(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    rid = await completed_request(redis_client, namespace)
    capsys.readouterr()  # the setup logs before any command configured logging: not the export
    assert await asyncio.to_thread(main, ["audit", "export", "--since", "1h"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["kind"] for e in lines if e.get("rid") == rid] == [
        "opened",
        "owner_confirmed",
        "approved",
        "execution_started",
        "executed",
    ]
    assert await asyncio.to_thread(main, ["audit", "export", "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out == ""


async def test_policy_check_reports_mistakes_with_locations(
    tmp_path: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "policy.yaml"
    bad.write_text(
        "version: 1\nreason_codes: [x]\nroles: {a: [b]}\ntiers: {t: {approvals: 9}}\n"
        "rules: [{name: d, tier: nope}]\n"
    )
    assert main(["policy", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "policy.yaml:4" in out and "policy.yaml:5" in out


def test_policy_explain_is_a_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "policy",
                "explain",
                "--action",
                "reset-mfa",
                "--target",
                "grace",
                "--requester",
                "bob",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "privileged" in out and "Nothing was created" in out


async def test_review_list_and_close(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    core = build_core(redis_client, namespace)
    decision = await core.service.breakglass(
        chat("erin"),
        chat("grace"),
        "unlock",
        "INC-4242",
        "locked out minutes before the board meeting",
    )
    rid = decision.request.id
    await core.service.confirm_owner(chat("grace"), rid)  # reviewed once it has finished
    assert await asyncio.to_thread(main, ["review", "list"]) == 0
    assert rid in capsys.readouterr().out
    # A typed email proves nothing: the CLI never records someone else as the reviewer.
    impersonate = ["review", "close", rid, "--reviewer", "frank@example.com", "--note", "ok"]
    assert await asyncio.to_thread(main, impersonate) == 2
    assert "--reviewer is not accepted" in capsys.readouterr().err
    assert (await core.store.get(rid)).review_open  # type: ignore[union-attr]
    close = ["review", "close", rid, "--note", "called the CEO"]
    assert await asyncio.to_thread(main, close) == 0
    assert "Review closed." in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["review", "list"]) == 0
    assert rid not in capsys.readouterr().out
    # Closing it again closes nothing: said on standard error, exit 1, not a success.
    assert await asyncio.to_thread(main, close) == 1
    assert capsys.readouterr().err == "twokey: That review is not open.\n"
    closed = await core.store.get(rid)
    operator = f"operator:{pwd.getpwuid(os.getuid()).pw_name}"
    assert closed is not None and closed.reviewed_by == operator
    entries = await redis_client.xrange(core.keys.audit(shard_of_request(rid)))
    last = json.loads(entries[-1][1]["e"])
    assert (last["kind"], last["actor"], last["role"]) == (
        "review_closed_by_operator",
        operator,
        "operator",
    )


def export_to_a_closed_pipe() -> tuple[int, str]:
    """`twokey audit export` whose reader is gone before the first line: (exit code, stderr)."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "audit", "export", "--since", "1h"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    code = process.wait(60)
    errors = process.stderr.read().decode()
    process.stderr.close()
    return code, errors


async def test_an_export_whose_reader_stops_reading_ends_quietly(
    operator_env: None, redis_client: aioredis.Redis, namespace: str
) -> None:
    """`twokey audit export | head -1`: no BrokenPipeError traceback, exit 0."""
    import asyncio

    await completed_request(redis_client, namespace)
    code, errors = await asyncio.to_thread(export_to_a_closed_pipe)
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors
    assert code == 0


async def test_audit_verify_with_another_key_says_so_before_crying_tampering(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator running the CLI with a key other than the replicas' is told to check it,
    not told at once that the trail was edited."""
    import asyncio

    from app.domain.models import Action

    core = build_core(redis_client, namespace)
    shards = set()
    for target in ("alice", "dave", "erin", "frank", "grace", "heidi", "ivan"):
        opened = await core.service.open(
            chat("bob"), chat(target), Action.RESET_MFA.value, "INC-1234", "lost-device"
        )
        shards.add(shard_of_request(opened.request.id))
        if len(shards) == 2:  # requests in two shards
            break
    assert len(shards) == 2
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", "another-key-than-the-replicas-use-0123")
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "NO SEAL MATCHES THIS KEY" in out and "kid=" in out, out
    assert "AUDIT TRAIL BROKEN" not in out


async def test_another_key_is_named_even_when_one_shard_holds_every_seal(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small deployment (one shard sealed) checked by a cron job with a stale key read "AUDIT
    TRAIL BROKEN ... security incident". The ids of the keys that sealed are on record, so a
    key that never sealed is named as such; an edit under the right key still reads broken."""
    import asyncio

    rid = await completed_request(redis_client, namespace)
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", "another-key-than-the-replicas-use-0123")
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "NO SEAL MATCHES THIS KEY" in out and "AUDIT TRAIL BROKEN" not in out, out

    monkeypatch.setenv("TWOKEY_AUDIT_KEY", AUDIT_KEY)
    key = build_core(redis_client, namespace).keys.audit(shard_of_request(rid))
    await rewrite_stream(redis_client, key, edit_first)
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "AUDIT TRAIL BROKEN" in out and "event 1 " in out, out
