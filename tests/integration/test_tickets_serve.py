"""The ticket system as `twokey serve` wires it (write-back notes on the fan-out, /readyz) and
`twokey tickets check`, against the local ServiceNow stand-in (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.bootstrap import build_runtime
from app.cli import main
from app.domain.models import Action, RequestState
from app.settings import Settings
from app.tickets import TicketNotes
from app.web import create_app
from tests.helpers import chat
from tests.integration.test_tickets import TICKET, tickets_policy
from tests.servicenow_standin import PASSWORD, USER, ServiceNowStandIn


@pytest.fixture
async def snow(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[ServiceNowStandIn, str]]:
    monkeypatch.setenv("TWOKEY_TEST_SN_USER", USER)
    monkeypatch.setenv("TWOKEY_TEST_SN_PASSWORD", PASSWORD)
    fake = ServiceNowStandIn()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def policy_file(folder: Path, url: str, extra: str = "") -> Path:
    path = folder / "policy.yaml"
    path.write_text(tickets_policy(url, extra))
    return path


async def test_serve_writes_notes_back_and_readyz_names_the_ticket_system(
    snow: tuple[ServiceNowStandIn, str], redis_url: str, namespace: str, tmp_path: Path
) -> None:
    fake, url = snow
    fake.add(TICKET)
    settings = Settings(
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_AUDIT_KEY="tickets-test-audit-key-long-enough",
        TWOKEY_ACCEPT_EVICTION_RISK=True,
        TWOKEY_PLAYGROUND=False,
        TWOKEY_POLICY=str(policy_file(tmp_path, url, "  write_back: {notes: true}\n")),
    )
    runtime = await build_runtime(settings)
    client = TestClient(TestServer(create_app(settings, runtime=runtime, sweeper=False)))
    await client.start_server()
    try:
        fake.fail_with = 503  # the ticket system being down never makes a replica unready
        ready = await client.get("/readyz")
        assert ready.status == 200
        assert (await ready.json())["tickets"] == {
            "system": "servicenow",
            "instance": url,
            "status": "configured",
            "write_back": True,
        }
        fake.fail_with = None
        service = runtime.service
        opened = await service.open(
            chat("bob"), chat("alice"), Action.RESET_MFA.value, TICKET, "lost-device"
        )
        await service.confirm_owner(chat("alice"), opened.request.id)
        final = (await service.approve(chat("carol"), opened.request.id)).request
        notes = [n for n in runtime.notifier.notifiers if isinstance(n, TicketNotes)]
        assert len(notes) == 1
        await notes[0].settle()
    finally:
        await client.close()
        await runtime.close()
    assert final.state is RequestState.COMPLETED
    assert len(fake.work_notes[TICKET]) == 4
    assert "completed" in fake.work_notes[TICKET][-1]


async def test_tickets_check_reads_and_changes_nothing(
    snow: tuple[ServiceNowStandIn, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = snow
    fake.add(TICKET)
    code = await asyncio.to_thread(
        main, ["tickets", "check", "--policy", str(policy_file(tmp_path, url)), "--ticket", TICKET]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "incident table readable" in out and f"ticket {TICKET}: found, state 2" in out
    assert fake.work_notes == {} and fake.problems == []
    assert PASSWORD not in out


async def test_tickets_check_says_the_credentials_are_refused(
    snow: tuple[ServiceNowStandIn, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWOKEY_TEST_SN_PASSWORD", "wrong")
    code = await asyncio.to_thread(
        main, ["tickets", "check", "--policy", str(policy_file(tmp_path, snow[1]))]
    )
    assert code == 1
    assert "NOT READY: credentials refused (401)" in capsys.readouterr().out


async def test_tickets_check_names_a_missing_variable(
    snow: tuple[ServiceNowStandIn, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TWOKEY_TEST_SN_PASSWORD")
    code = await asyncio.to_thread(
        main, ["tickets", "check", "--policy", str(policy_file(tmp_path, snow[1]))]
    )
    assert code == 1
    assert "TWOKEY_TEST_SN_PASSWORD is not set" in capsys.readouterr().out
