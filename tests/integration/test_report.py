"""`twokey report` on a trail made by driving the real service through every outcome.

The numbers asserted are the ones a security lead reads, counted by hand from the script of
events below; the report is produced the way an operator runs it (`twokey report`, in-process,
against the test Redis), in JSON, HTML (rendered in headless Chromium) and PDF (pdftoppm).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.cli import main
from app.connectors.sandbox import SandboxConnector
from app.domain.errors import NotAllowed, SeparationOfDuties, VelocityLimited
from app.domain.models import RequestState
from app.store.keys import Keys, shard_of_request, shard_of_target
from tests.helpers import TARGET_VELOCITY, build_core, chat, policy_text

AUDIT_KEY = "a-test-audit-key-that-is-long-enough"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "report"
CHROMIUM = Path(os.environ.get("TWOKEY_CHROMIUM", "/usr/bin/chromium"))
JUSTIFICATION = "<script>alert(1)</script> the CEO is locked out before the board call"
REVIEW_NOTE = "verified with the CEO by phone <b>ok</b>"
SECTION_HEADINGS = [
    "1. Volume",
    "2. Speed",
    "3. Separation of duties",
    "4. Fraud and disputes",
    "5. Break-glass",
    "6. Privileged people and production NHIs",
    "7. NHI secrets",
    "8. Control mapping",
]


@pytest.fixture
def operator_env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text())
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TWOKEY_NAMESPACE", namespace)
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", AUDIT_KEY)
    monkeypatch.setenv("TWOKEY_ACCEPT_EVICTION_RISK", "true")
    monkeypatch.setenv("TWOKEY_POLICY", str(policy))
    monkeypatch.setenv("TWOKEY_DATA_DIR", str(tmp_path / "data"))


async def twokey(*argv: str) -> int:
    """`twokey ARGV...` in a thread: main() runs its own event loop."""
    return await asyncio.to_thread(main, list(argv))


@dataclass
class Script:
    """Request ids of the scripted trail, by what happened to them."""

    rids: dict[str, str]


async def drive_every_outcome(redis_client: aioredis.Redis, namespace: str) -> Script:
    """The script of events the report's numbers are checked against (one per outcome)."""
    connector = SandboxConnector(
        fail_actions=["reset-password"], unknown_actions=["temporary-access"]
    )
    core = build_core(redis_client, namespace, connector=connector)
    svc, rids = core.service, {}

    async def open_(requester: str, target: Any, action: str, ticket: str, reason: str) -> str:
        return (await svc.open(chat(requester), target, action, ticket, reason)).request.id

    # completed, after three refused attempts (audited as `refused`)
    rid = rids["completed"] = await open_("bob", chat("alice"), "unlock", "INC-1001", "locked-out")
    with pytest.raises(SeparationOfDuties):
        await svc.approve(chat("alice"), rid)  # the target: sod:approve
    with pytest.raises(NotAllowed):
        await svc.confirm_owner(chat("carol"), rid)  # not the owner: not_owner:confirm
    with pytest.raises(NotAllowed):
        await svc.approve(chat("heidi"), rid)  # no approver role: role:approve
    await svc.confirm_owner(chat("alice"), rid)
    assert (await svc.approve(chat("carol"), rid)).request.state is RequestState.COMPLETED
    # failed and unknown (the sandbox connector is told to)
    rid = rids["failed"] = await open_(
        "bob", chat("dave"), "reset-password", "INC-1002", "forgotten-password"
    )
    await svc.confirm_owner(chat("dave"), rid)
    assert (await svc.approve(chat("carol"), rid)).request.state is RequestState.FAILED
    rid = rids["unknown"] = await open_(
        "bob", chat("ivan"), "temporary-access", "INC-1003", "lost-device"
    )
    await svc.confirm_owner(chat("ivan"), rid)
    assert (await svc.approve(chat("carol"), rid)).request.state is RequestState.UNKNOWN
    # denied; rejected by the owner ("this wasn't me": heidi is flagged)
    rid = rids["denied"] = await open_("bob", chat("ivan"), "unlock", "INC-1004", "locked-out")
    await svc.deny(chat("dave"), rid, "caller could not verify employee id")
    rid = rids["rejected"] = await open_(
        "bob", chat("heidi"), "reset-password", "INC-1005", "forgotten-password"
    )
    await svc.reject_by_owner(chat("heidi"), rid)
    # expired: a request TTL of 1 s, owner confirmed, no approval
    short = build_core(
        redis_client,
        namespace,
        policy=policy_text(request_ttl="1s", remind_after="", escalate_after=""),
    )
    opened = await short.service.open(chat("bob"), chat("dave"), "unlock", "INC-1006", "locked-out")
    rid = rids["expired"] = opened.request.id
    await short.service.confirm_owner(chat("dave"), rid)
    await asyncio.sleep(1.2)
    await short.service.expire_due()
    assert (await core.store.get(rid)).state is RequestState.EXPIRED  # type: ignore[union-attr]
    # cancelled: a privileged account (grace is in admins)
    rid = rids["cancelled"] = await open_("bob", chat("grace"), "unlock", "INC-1007", "locked-out")
    await svc.cancel(chat("bob"), rid)
    # break-glass, reviewed; break-glass, review left open
    done = await svc.breakglass(chat("erin"), chat("grace"), "reset-mfa", "INC-1008", JUSTIFICATION)
    rid = rids["breakglass_reviewed"] = done.request.id
    await svc.confirm_owner(chat("grace"), rid)
    await svc.close_review(chat("frank"), rid, REVIEW_NOTE)
    done = await svc.breakglass(
        chat("erin"), chat("alice"), "unlock", "INC-1009", "payroll run blocked, owner on a plane"
    )
    rid = rids["breakglass_open"] = done.request.id
    await svc.confirm_owner(chat("alice"), rid)
    # velocity: two MFA resets of dave (cancelled), the third refused (audited, no request)
    for ticket in ("INC-1010", "INC-1011"):
        rid = await open_("bob", chat("dave"), "reset-mfa", ticket, "lost-device")
        await svc.cancel(chat("bob"), rid)
    with pytest.raises(VelocityLimited):
        await open_("bob", chat("dave"), "reset-mfa", "INC-1012", "lost-device")
    # velocity escalation: heidi's second request in an hour goes to the strictest tier
    paced = build_core(
        redis_client,
        namespace,
        policy=policy_text(
            velocity=TARGET_VELOCITY
            + "  - {per: requester, limit: 1, window: 1h, then: escalate}\n"
        ),
    )
    first = await paced.service.open(
        chat("heidi"), chat("ivan"), "unlock", "INC-1013", "locked-out"
    )
    second = await paced.service.open(
        chat("heidi"), chat("carol"), "unlock", "INC-1014", "locked-out"
    )
    assert (first.request.plan.tier, second.request.plan.tier) == ("standard", "strictest")
    # opened while flagged (heidi answered "this wasn't me" above)
    flagged = await open_("bob", chat("heidi"), "unlock", "INC-1015", "locked-out")
    assert (await core.store.get(flagged)).plan.tier == "strictest"  # type: ignore[union-attr]
    # an NHI rotation (production NHI: alerts security)
    rid = rids["rotation"] = await open_(
        "bob", "NHI:billing-api", "rotate-secret", "CHG-2001", "scheduled-rotation"
    )
    await svc.confirm_owner(chat("alice"), rid)
    await svc.approve(chat("frank"), rid)
    # completed, then disputed by the owner: flagged, and the automatic sign-out runs
    rid = rids["disputed"] = await open_(
        "bob", chat("alice"), "reset-mfa", "INC-1016", "lost-device"
    )
    await svc.confirm_owner(chat("alice"), rid)
    await svc.approve(chat("carol"), rid)
    await svc.dispute(chat("alice"), rid)
    return Script(rids)


async def json_report(tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "report.json"
    code = await twokey("report", "--since", "1h", "--format", "json", "--out", str(out), *extra)
    return code, json.loads(out.read_text())


async def test_report_numbers_are_exactly_the_scripted_events(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = await drive_every_outcome(redis_client, namespace)
    code, report = await json_report(tmp_path)
    assert code == 0
    said = capsys.readouterr().out
    assert "chain verified, 17 requests, 0 executions lacking any gate" in said

    v = report["verification"]
    assert v["ok"] and v["unverified"] == 0 and v["evidence"] == v["events"] > 0
    assert len(v["shards"]) == 16 and all(s["head_mac"] for s in v["shards"] if s["events"])

    volume = report["volume"]
    assert volume["requests"] == 17
    assert volume["by_outcome"] == {
        "completed": 6,  # unlock, 2 break-glass, rotation, disputed reset, automatic sign-out
        "failed": 1,
        "unknown": 1,
        "interrupted": 0,
        "denied": 1,
        "rejected_by_owner": 1,
        "expired": 1,
        "cancelled": 3,  # the privileged unlock and the two MFA resets of dave
        "open": 3,  # heidi's two (one escalated) and the one on flagged heidi
    }
    assert sum(b["completed"] for b in volume["per_bucket"]) == 6
    assert volume["by_action"]["reset-mfa"]["cancelled"] == 2
    assert volume["by_tier"]["breakglass"]["completed"] == 2
    assert volume["by_tier"]["auto_revoke"]["completed"] == 1

    speed = report["speed"]
    assert speed["by_tier"]["standard"]["execution"]["count"] == 4
    # confirmed by the owner: the 4 executed, and the expired one
    assert speed["by_tier"]["standard"]["owner"]["count"] == 5
    assert speed["by_tier"]["breakglass"]["owner"]["count"] == 2
    assert speed["expired"] == 1
    assert speed["stalled_at"] == {"approvals (0 of 1)": 1}
    assert [r["rid"] for r in speed["expired_requests"]] == [script.rids["expired"]]

    sod = report["separation_of_duties"]
    assert sod["executions"] == 8
    assert sod["lacking_gate"] == 0 and sod["sod_conflicts"] == 0
    assert sod["with_owner_confirmation"] == 7 and sod["with_approval"] == 5
    assert sod["by_gate"] == {
        "owner + approval": 5,
        "break-glass, owner only": 2,
        "owner's dispute": 1,
    }
    assert sod["by_outcome"] == {"completed": 6, "failed": 1, "unknown": 1, "interrupted": 0}
    row = next(r for r in sod["rows"] if r["rid"] == script.rids["completed"])
    assert (row["requester"], row["owner_confirmed_by"], row["approvers"]) == (
        "bob",
        "alice",
        ["carol"],
    )
    assert row["connector"] == "sandbox" and row["outcome"] == "completed"

    fraud = report["fraud"]
    assert fraud["owner_rejections"] == 1 and fraud["disputes"] == 1
    assert fraud["refusals_by_reason"] == {
        "not_owner:confirm": 1,
        "role:approve": 1,
        "sod:approve": 1,
    }
    assert fraud["flagged_accounts"] == ["alice", "heidi"]
    assert fraud["opened_while_flagged"] == 1 and fraud["velocity_escalations"] == 1
    assert fraud["velocity_refusals"] == 1  # refused before a request existed, audited anyway
    bob = next(r for r in fraud["by_agent"] if r["who"] == "bob")
    assert bob == {
        "who": "bob",
        "total": 3,
        "this wasn't me": 1,
        "disputed after change": 1,
        "open refused (velocity)": 1,
    }

    bg = report["breakglass"]
    assert (bg["uses"], bg["reviews_open"], bg["reviews_closed"]) == (2, 1, 1)
    first, second = bg["rows"]
    assert first["rid"] == script.rids["breakglass_open"] and first["review_open"]
    assert second["rid"] == script.rids["breakglass_reviewed"]
    assert (second["reviewer"], second["reviewed_as"]) == ("frank", "security reviewer")
    assert second["review_note"] == REVIEW_NOTE and second["justification"] == JUSTIFICATION

    privileged = report["privileged"]
    assert privileged["requests"] == 6 and privileged["security_alerted"] == 6
    kinds = {r["rid"]: r["target_kind"] for r in privileged["rows"]}
    assert kinds[script.rids["rotation"]] == "production NHI"
    assert kinds[script.rids["cancelled"]] == "privileged person"

    nhi = report["nhi_secrets"]
    assert nhi["rotations"] == 1 and nhi["by_system"] == {"aws": {"completed": 1}}
    (age,) = nhi["secret_age"]
    assert (age["nhi"], age["system"], age["owner"]) == ("nhi:billing-api", "aws", "alice")
    assert 0 <= age["age_ms"] < 3_600_000

    controls = {(c["control"], c["figure"]): c["count"] for c in report["controls"]}
    assert controls[("PR.AA-01", "separation_of_duties.executions")] == 8
    assert controls[("RS.AN-03", "breakglass.reviews_closed")] == 1
    assert controls[("NHI7", "nhi_secrets.rotations")] == 1
    assert report["names"]["alice"] == "Alice Adams"
    assert AUDIT_KEY not in json.dumps(report)


def _pdftoppm() -> str:
    found = shutil.which("pdftoppm")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("pdftoppm is missing: run scripts/install-report-tools.sh")
        pytest.skip("pdftoppm is missing: run scripts/install-report-tools.sh")
    return found


def _chromium() -> str:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: run scripts/install-chromium.sh")
        pytest.skip(f"{CHROMIUM} is missing: run scripts/install-chromium.sh")
    return str(CHROMIUM)


def _pdf_pages_and_text(pdf_file: Path) -> tuple[list[Path], str]:
    """Each page rendered to PNG by pdftoppm (kept as artefacts), and the PDF's text."""
    pdftoppm = _pdftoppm()
    for old in ARTIFACTS.glob("page-*.png"):
        old.unlink()
    subprocess.run(
        [pdftoppm, "-png", "-r", "40", str(pdf_file), str(ARTIFACTS / "page")],
        check=True,
        timeout=120,
    )
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf_file), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return sorted(ARTIFACTS.glob("page-*.png")), text


@pytest.mark.timeout(180)
async def test_html_in_chromium_and_pdf_pages_show_every_section_and_chart(
    operator_env: None, redis_client: aioredis.Redis, namespace: str, tmp_path: Path
) -> None:
    await drive_every_outcome(redis_client, namespace)
    html_file, pdf_file = tmp_path / "report.html", tmp_path / "report.pdf"
    assert await twokey("report", "--since", "1h", "--out", str(html_file)) == 0
    assert await twokey("report", "--since", "1h", "--format", "pdf", "--out", str(pdf_file)) == 0
    html = html_file.read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;ok&lt;/b&gt;" in html
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing fetched
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    # the HTML in headless Chromium
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("the playwright package is not installed")
    chromium = _chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            await page.goto(html_file.as_uri())
            headings = await page.locator("section > h2").all_inner_texts()
            assert headings == ["Verification of the audit trail", *SECTION_HEADINGS]
            charts = page.locator("svg.chart")
            assert await charts.count() == 7  # sections 1-7; the control mapping is a table
            box = await charts.first.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
            bars = page.locator('svg.chart g[id^="patch_"] path')
            assert await bars.count() > 20  # matplotlib draws each bar as a patch
            assert await page.locator(".alarm").count() == 0
            await page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            await browser.close()

    # the PDF's pages
    pages, text = await asyncio.to_thread(_pdf_pages_and_text, pdf_file)
    assert len(pages) >= 3
    for heading in SECTION_HEADINGS:
        assert heading in text
    assert "requests opened" in text and "Chain verified" in text
    assert "<script>alert(1)</script>" in text  # shown as text, never run
    assert "nothing in this period" not in text.split("2. Speed")[0]  # the volume chart drew


async def test_a_tampered_trail_is_said_first_and_kept_out_of_the_evidence(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    tmp_path: Path,
) -> None:
    assert shard_of_target("alice") != shard_of_target("dave")
    core = build_core(redis_client, namespace)
    rids = []
    for target in ("alice", "dave"):
        rid = await core.open_mfa_reset(target=target)
        await core.service.confirm_owner(chat(target), rid)
        await core.service.approve(chat("carol"), rid)
        rids.append(rid)
    assert await twokey("audit", "verify") == 0  # seals both shards
    # The attacker rewrites who approved alice's reset (event 3 of her shard), same ids.
    stream = Keys(namespace).audit(shard_of_request(rids[0]))
    entries = list(await redis_client.xrange(stream))
    entry_id, fields = entries[2]
    event = json.loads(fields["e"])
    assert event["kind"] == "approved"
    event["actor"] = "mallory"
    entries[2] = (entry_id, {**fields, "e": json.dumps(event)})
    await redis_client.delete(stream)
    for entry_id, fields in entries:
        await redis_client.xadd(stream, fields, id=entry_id)

    code, report = await json_report(tmp_path)
    assert code == 1
    v = report["verification"]
    assert not v["ok"] and v["unverified"] == 3  # approved, execution_started, executed
    (broken,) = [s for s in v["shards"] if not s["ok"]]
    assert broken["problem_kind"] == "edited" and broken["head_seq"] == 2
    assert [u["kind"] for u in v["unverified_events"]] == [
        "approved",
        "execution_started",
        "executed",
    ]
    # Only dave's change is evidence of an execution; alice's reset shows as still open.
    sod = report["separation_of_duties"]
    assert sod["executions"] == 1 and [r["rid"] for r in sod["rows"]] == [rids[1]]
    assert report["volume"]["by_outcome"]["completed"] == 1
    assert report["volume"]["by_outcome"]["open"] == 1
    assert "mallory" not in json.dumps({k: v for k, v in report.items() if k != "verification"})

    html_file = tmp_path / "report.html"
    assert await twokey("report", "--since", "1h", "--out", str(html_file)) == 1
    html = html_file.read_text()
    body = html.split("<body>", 1)[1]
    assert body.lstrip().startswith('<p class="alarm" id="tampered">AUDIT TRAIL BROKEN')
    assert "Events not used as evidence" in html and "mallory" not in html


@pytest.mark.parametrize(
    ("entry_id", "event"),
    [("*", "[" * 200_000), ("18446744073709551614-0", "{}")],
    ids=["nested-past-any-limit", "stream-id-no-calendar-holds"],
)
async def test_a_hostile_entry_is_listed_as_not_evidence_never_a_crash(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    tmp_path: Path,
    entry_id: str,
    event: str,
) -> None:
    """An insider's XADD of JSON nested 200,000 deep (a RecursionError) or with a stream id
    no calendar holds (a ValueError in the HTML): the evidence report could not be made."""
    await redis_client.xadd(Keys(namespace).audit(4), {"seq": "1", "e": event}, id=entry_id)
    code, report = await json_report(tmp_path)
    assert code == 1
    assert report["verification"]["unverified"] == 1
    html_out = tmp_path / "report.html"
    assert await twokey("report", "--format", "html", "--out", str(html_out)) == 1
    assert "AUDIT TRAIL BROKEN in " in html_out.read_text()


@pytest.mark.parametrize("what", ["counter", "mark"])
async def test_the_report_fails_what_verify_fails_a_count_that_is_not_one(
    operator_env: None,
    redis_client: aioredis.Redis,
    namespace: str,
    tmp_path: Path,
    what: str,
) -> None:
    """Its last event and seal cut and the counter set to a word: verify failed it, the report
    read the word as 0 and said "chain verified". Both now fail it."""
    core = build_core(redis_client, namespace)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    keys, shard = Keys(namespace), shard_of_request(rid)
    assert await twokey("audit", "verify") == 0
    if what == "counter":
        last_id = (await redis_client.xrevrange(keys.audit(shard), count=1))[0][0]
        await redis_client.xdel(keys.audit(shard), last_id)
        await redis_client.rpop(keys.seals(shard))
        await redis_client.set(keys.seals(shard) + ":high", "1")
        await redis_client.set(keys.audit_seq(shard), "n/a")
    else:
        await redis_client.rpop(keys.seals(shard))
        await redis_client.set(keys.seals(shard) + ":high", "n/a")
    assert await twokey("audit", "verify") == 1
    code, report = await json_report(tmp_path)
    assert code == 1 and not report["verification"]["ok"]


async def test_chain_heads_of_another_namespace_are_refused_not_counted(
    operator_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = {"type": "twokey_audit_head", "shard": 0, "chain": "{other:s00}", "seq": 9}
    anchor = tmp_path / "heads.jsonl"
    anchor.write_text(json.dumps({**head, "mac": "0" * 64}) + "\n")
    out = tmp_path / "report.json"
    argv = ("report", "--format", "json", "--anchor", str(anchor), "--out", str(out))
    assert await twokey(*argv) == 2
    assert "none of the 1 chain heads" in capsys.readouterr().err
    assert not out.exists()
