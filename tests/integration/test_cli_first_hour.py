"""A newcomer's first hour with the command line (issue 9), as they would type it.

`policy explain` must answer what `open` would answer, in the same words and with an exit code a
script can test; the commands read as plain words (no log lines, ISO times, plurals, no chat
terms). Driven through `main()` against the test Redis; assertions are on what the user sees.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.cli import main
from app.domain.errors import TwokeyError
from app.domain.models import ChatUser
from app.store.keys import shard_of_request
from tests.helpers import build_core, chat, policy_text

AUDIT_KEY = "a-test-audit-key-that-is-long-enough"
ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
CHAT_WORDS = re.compile(r"\b(DM|DMs|direct message|cards?|slash command)\b", re.IGNORECASE)


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch, redis_url: str, namespace: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TWOKEY_NAMESPACE", namespace)
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", AUDIT_KEY)
    monkeypatch.setenv("TWOKEY_ACCEPT_EVICTION_RISK", "true")
    monkeypatch.delenv("LOG_LEVEL", raising=False)


@pytest.fixture
def test_policy(tmp_path: Path) -> Path:
    """The policy build_core's service runs on, as a file for `explain --policy`."""
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text())
    return path


async def twokey(*argv: str) -> int:
    """`twokey ARGV...` in a thread: main() runs its own event loop."""
    return await asyncio.to_thread(main, list(argv))


def outcome(out: str) -> str:
    """The last line of `policy explain`: its verdict."""
    return out.strip().splitlines()[-1]


# ---- policy explain gives open's answer -------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "requester", "target"),
    [
        ("unlock", "bob", "judy"),  # a disabled person
        ("reset-mfa", "bob", "nhi:billing-api"),  # a person's action on an NHI
        ("rotate-secret", "bob", "alice"),  # an NHI's action on a person
        ("unlock", "carol", "alice"),  # the requester lacks the helpdesk role
        ("unlock", "bob", "bob"),  # on their own account
    ],
)
async def test_explain_refuses_what_open_refuses_in_the_same_words(
    redis_client: aioredis.Redis,
    namespace: str,
    test_policy: Path,
    capsys: pytest.CaptureFixture[str],
    action: str,
    requester: str,
    target: str,
) -> None:
    core = build_core(redis_client, namespace)
    named: ChatUser | str = target if target.startswith("nhi:") else chat(target)
    with pytest.raises(TwokeyError) as refused:
        await core.service.open(chat(requester), named, action, "INC-1234", "lost-device")
    capsys.readouterr()

    argv = ["policy", "explain", "--policy", str(test_policy), "--action", action]
    code = await twokey(*argv, "--target", target, "--requester", requester)

    out = capsys.readouterr().out
    assert code == 3, out
    assert "would open" not in out
    assert outcome(out).startswith("Outcome: REFUSED.")
    assert outcome(out).endswith(f"would be told: {refused.value.message}"), out


async def test_explain_opens_what_open_opens_and_exits_0(
    redis_client: aioredis.Redis,
    namespace: str,
    test_policy: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    core = build_core(redis_client, namespace)
    opened = await core.service.open(
        chat("bob"), chat("grace"), "reset-mfa", "INC-1001", "locked-out"
    )
    capsys.readouterr()

    argv = ["policy", "explain", "--policy", str(test_policy), "--action", "reset-mfa"]
    assert await twokey(*argv, "--target", "grace", "--requester", "bob") == 0

    out = capsys.readouterr().out
    assert outcome(out) == f"Outcome: a request would open in tier {opened.request.plan.tier}."
    assert "Connector that would make the change: sandbox" in out


def test_explain_accepts_a_person_named_as_in_chat(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "explain", "--action", "reset-mfa", "--target", "@grace"]
    assert main([*argv, "--requester", "@bob"]) == 0
    out = capsys.readouterr().out
    assert "Grace Green (grace)" in out and "Requester Bob Brown (bob) may open this request" in out
    assert outcome(out) == "Outcome: a request would open in tier privileged."


def test_explain_says_nothing_in_chat_words(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", "--action", "unlock", "--target", "alice"]) == 0
    out = capsys.readouterr().out
    assert "Approval requests are posted to:" in out
    assert not CHAT_WORDS.search(out), CHAT_WORDS.search(out)


# ---- policy check warns of what can never apply -----------------------------------------------


CATCH_ALL_FIRST = """\
version: 1
reason_codes: [lost-device]
roles:
  helpdesk: [helpdesk]
  approver: [helpdesk-leads]
  security: [security]
tiers:
  standard:
    approvals: 1
  privileged:
    approvals: 2
    approver_role: security
  strictest:
    approvals: 2
    approver_role: security
rules:
  - name: default
    tier: standard
  - name: admins
    when: {target_groups: [admins]}
    tier: privileged
  - name: fallback
    tier: standard
fraud: {flagged_tier: strictest}
"""


def test_policy_check_warns_of_a_catch_all_rule_that_comes_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(CATCH_ALL_FIRST)

    assert main(["policy", "check", str(path)]) == 0  # valid: it works, wrongly
    out = capsys.readouterr().out
    assert "OK" not in out
    assert "3 warnings" in out
    assert (
        f"warning: {path}:19:5 rules.1: rule 'admins' can never match: rule 'default' above it "
        "has no conditions" in out
    )
    assert f"warning: {path}:22:5 rules.2: rule 'fallback' can never match" in out
    assert f"warning: {path}:10:3 tiers.privileged: tier 'privileged' is never used" in out

    assert main(["policy", "check", "--strict", str(path)]) == 1
    assert "3 warnings" in capsys.readouterr().out


# ---- reads well -------------------------------------------------------------------------------


async def test_commands_write_no_log_lines_unless_asked(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await build_core(redis_client, namespace).open_mfa_reset()
    capsys.readouterr()  # the setup's own logging is not the command's

    assert await twokey("requests", "list") == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("1 open request:\n")

    assert await twokey("--log-level", "info", "requests", "list") == 0
    assert '"event": "policy_loaded"' in capsys.readouterr().err
    assert await twokey("requests", "list", "--log-level", "INFO") == 0  # after the command too
    assert '"event": "policy_loaded"' in capsys.readouterr().err


async def test_an_error_is_told_in_one_plain_line_without_log_level(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    core = build_core(redis_client, namespace)
    rid = await core.open_mfa_reset()
    assert await twokey("audit", "verify") == 0  # seals the opening
    shard = shard_of_request(rid)
    await redis_client.ltrim(core.keys.seals(shard), 1, 0)  # someone cut the seals
    capsys.readouterr()

    assert await twokey("audit", "verify") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"twokey: error: audit_seal_list_shrank (shard={shard}, "), err
    assert "{" not in err.splitlines()[0]  # not JSON


async def test_a_set_log_level_setting_asks_for_the_log_lines_too(
    operator_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    assert await twokey("requests", "list") == 0
    captured = capsys.readouterr()
    assert captured.out == "No open requests.\n"
    assert '"event": "policy_loaded"' in captured.err


async def test_lists_say_plainly_when_empty_and_count_in_words(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await twokey("requests", "list") == 0
    assert capsys.readouterr().out == "No open requests.\n"
    assert await twokey("review", "list") == 0
    assert capsys.readouterr().out == "No open reviews.\n"

    core = build_core(redis_client, namespace)
    await core.open_mfa_reset("alice")
    await core.open_mfa_reset("grace")
    capsys.readouterr()
    assert await twokey("requests", "list") == 0
    out = capsys.readouterr().out
    assert out.startswith("2 open requests:\n")
    assert re.search(rf"tier standard .* expires {ISO_UTC}", out), out


async def test_requests_show_reads_as_words_with_iso_times(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    core = build_core(redis_client, namespace)
    rid = await core.open_mfa_reset()
    await core.service.approve(chat("carol"), rid)
    capsys.readouterr()

    assert await twokey("requests", "show", rid) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{rid}\n")
    assert re.search(rf"opened +{ISO_UTC}\n", out), out
    assert re.search(rf"approved +by carol at {ISO_UTC}, valid until {ISO_UTC}\n", out), out
    assert re.search(r"waiting for +owner confirmation\n", out), out
    assert re.search(r"needs +confirmation by the owner of record, alice and 1 approval\b", out)
    assert not re.search(r"\b1[0-9]{12}\b", out)  # no epoch milliseconds
    assert not CHAT_WORDS.search(out)

    assert await twokey("requests", "show", rid, "--json") == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["id"] == rid and isinstance(stored["created_at"], int)


async def test_audit_export_lines_carry_an_iso_time_and_still_anchor_verify(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    core = build_core(redis_client, namespace)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    await core.service.approve(chat("carol"), rid)
    assert await twokey("audit", "verify") == 0  # seals
    capsys.readouterr()

    assert await twokey("audit", "export") == 0
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]
    assert events and all(re.fullmatch(r"\d{4}-.*T.*\.\d{3}Z", e["time"]) for e in events)
    assert all(isinstance(e["at"], int) for e in events)  # what the mac covers, unchanged

    anchor = tmp_path / "export.jsonl"
    anchor.write_text("\n".join(lines) + "\n")
    assert await twokey("audit", "verify", "--anchor", str(anchor)) == 0
    assert "5 chain heads recorded outside Redis all match" in capsys.readouterr().out


def test_version_comes_from_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"twokey {version('twokey')}\n"


@pytest.mark.parametrize("where", ["missing-folder/report.html", "."])
async def test_a_report_that_cannot_be_written_is_said_before_it_is_made(
    operator_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """A folder that is not there, or a folder given as the file: one line, exit 2, not a
    traceback after the whole report was computed."""
    out = tmp_path / where
    assert await twokey("report", "--since", "1d", "--out", str(out)) == 2
    said = capsys.readouterr()
    assert said.err.startswith(f"twokey: cannot write the report to {out}: ")
    assert "Traceback" not in said.err + said.out
    assert not out.is_file()


def test_python_dash_m_app_takes_the_same_commands_as_twokey() -> None:
    """README: `twokey serve` (also: python -m app). `python -m app --help` started a server."""
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "app", "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0
    assert shown.stdout.startswith("usage: twokey")
