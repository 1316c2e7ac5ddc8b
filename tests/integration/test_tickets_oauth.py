"""Tickets read and written with OAuth 2.0 client credentials: ServiceNow (``/oauth_token.do``)
and Jira Cloud service accounts (``auth.atlassian.com/oauth/token``, calls through the API
gateway). One token serves many calls, a 401 renews it once, refused credentials fail closed,
and neither the secret nor a token reaches the logs. Real Redis, local stand-ins that issue and
check bearer tokens as the systems document."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from structlog.testing import capture_logs

from app.cli import main
from app.domain.errors import CredentialsRefused
from app.domain.models import Action, Request, RequestState
from app.notify import FanoutNotifier
from app.policy.loader import load_policy_text
from app.tickets import (
    JiraTickets,
    OAuthClient,
    ServiceNowTickets,
    TicketCredentialsRefused,
    TicketNotes,
    TicketSystemDown,
    ticket_system,
    write_back,
)
from tests.helpers import Core, build_core, chat, policy_text
from tests.jira_standin import CLOUD_ID, JiraStandIn
from tests.servicenow_standin import ServiceNowStandIn
from tests.token_issuer import CLIENT_ID, CLIENT_SECRET

INCIDENT = "INC0010001"
ISSUE = "HD-1042"
WRITE_BACK = "  write_back: {notes: true, completion_state: WHEN_DONE}\n"


def servicenow_policy(url: str) -> str:
    text = policy_text().replace("'^(INC|REQ|CHG)-\\d{3,8}$'", "'^INC\\d{7}$'")
    return text + (
        "tickets:\n"
        "  system: servicenow\n"
        f"  instance_url: {url}\n"
        "  auth: oauth\n"
        "  client_id_env: TWOKEY_TEST_OAUTH_ID\n"
        "  client_secret_env: TWOKEY_TEST_OAUTH_SECRET\n"
        "  caller_must_be_target: true\n" + WRITE_BACK.replace("WHEN_DONE", "6")
    )


def jira_policy(url: str) -> str:
    text = policy_text().replace("'^(INC|REQ|CHG)-\\d{3,8}$'", "'^HD-\\d{1,8}$'")
    return text + (
        "tickets:\n"
        "  system: jira\n"
        "  instance_url: https://example.atlassian.net\n"
        "  auth: oauth\n"
        f"  cloud_id: {CLOUD_ID}\n"
        "  client_id_env: TWOKEY_TEST_OAUTH_ID\n"
        "  client_secret_env: TWOKEY_TEST_OAUTH_SECRET\n"
        f"  token_url: {url}/oauth/token\n"  # for tests: the stand-in plays auth.atlassian.com
        f"  api_url: {url}\n"  # ... and api.atlassian.com
        "  caller_must_be_target: true\n" + WRITE_BACK.replace("WHEN_DONE", "'31'")
    )


@pytest.fixture(autouse=True)
def client_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOKEY_TEST_OAUTH_ID", CLIENT_ID)
    monkeypatch.setenv("TWOKEY_TEST_OAUTH_SECRET", CLIENT_SECRET)


@pytest.fixture
async def snow() -> AsyncIterator[tuple[ServiceNowStandIn, str]]:
    instance = ServiceNowStandIn()
    server = TestServer(instance.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield instance, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def jira() -> AsyncIterator[tuple[JiraStandIn, str]]:
    site = JiraStandIn()
    server = TestServer(site.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield site, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@asynccontextmanager
async def connected(redis_client: aioredis.Redis, namespace: str, text: str) -> AsyncIterator[Core]:
    """A core wired as `twokey serve` wires it: the policy's ticket system and its notes."""
    policy = load_policy_text(text)
    system = ticket_system(policy.tickets)
    assert system is not None
    core = build_core(redis_client, namespace, policy=text, tickets=system)
    fanout = FanoutNotifier([core.notifier])
    close = write_back(system, policy, fanout, redis_client, core.keys, core.service.names.of)
    core.service.notifier = fanout
    try:
        yield core
    finally:
        await close()


async def run_to_the_end(core: Core, ticket: str) -> Request:
    """Open (the ticket checked), confirm, approve (re-checked at the claim), notes written."""
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, ticket, "lost-device"
    )
    await core.service.confirm_owner(chat("alice"), opened.request.id)
    final = (await core.service.approve(chat("carol"), opened.request.id)).request
    fanout = core.service.notifier
    assert isinstance(fanout, FanoutNotifier)
    for notes in fanout.notifiers:
        if isinstance(notes, TicketNotes):
            await notes.settle()
    return final


def nothing_secret_in(logs: list[dict[str, Any]], tokens: list[str]) -> None:
    shown = repr(logs)
    assert tokens, "no token was issued: nothing was proved"
    assert CLIENT_SECRET not in shown
    assert all(token not in shown for token in tokens)


# ---- ServiceNow ----------------------------------------------------------------------------


async def test_servicenow_oauth_checks_the_ticket_and_writes_notes_on_one_token(
    redis_client: aioredis.Redis, namespace: str, snow: tuple[ServiceNowStandIn, str]
) -> None:
    instance, url = snow
    instance.add(INCIDENT)
    with capture_logs() as logs:
        async with connected(redis_client, namespace, servicenow_policy(url)) as core:
            final = await run_to_the_end(core, INCIDENT)
    assert final.state is RequestState.COMPLETED
    assert len(instance.work_notes[INCIDENT]) == 4  # opened, confirmed, approved, completed
    assert instance.incidents[INCIDENT]["state"] == "6"
    # reads at opening, at the claim and before notes, four notes, one state change: every
    # call a bearer call, one token for all of them
    assert instance.bearer_calls >= 7
    assert instance.oauth.requests == 1
    assert instance.problems == []
    assert any(e["event"] == "ticket_token_issued" for e in logs)
    nothing_secret_in(logs, instance.oauth.all_tokens())


async def test_concurrent_calls_ask_for_one_token(snow: tuple[ServiceNowStandIn, str]) -> None:
    instance, url = snow
    instance.add(INCIDENT)
    async with servicenow(url) as system:
        found = await asyncio.gather(*(system.find(INCIDENT) for _ in range(12)))
    assert all(t is not None and t.number == INCIDENT for t in found)
    assert instance.oauth.requests == 1 and instance.bearer_calls == 12


async def test_a_401_on_an_expired_token_renews_it_once_and_succeeds(
    snow: tuple[ServiceNowStandIn, str],
) -> None:
    instance, url = snow
    instance.add(INCIDENT)
    async with servicenow(url) as system:
        assert await system.find(INCIDENT) is not None
        instance.oauth.expire_all()  # revoked, or run out early by the instance's clock
        with capture_logs() as logs:
            again = await system.find(INCIDENT)
        assert again is not None and again.number == INCIDENT
        assert await system.find(INCIDENT) is not None  # the new token is kept
    assert instance.oauth.requests == 2
    assert instance.oauth.refused_bearers == 1
    assert [e["event"] for e in logs].count("ticket_token_refused") == 1
    nothing_secret_in(logs, instance.oauth.all_tokens())


async def test_a_token_about_to_end_is_renewed_before_it_is_used(
    snow: tuple[ServiceNowStandIn, str],
) -> None:
    instance, url = snow
    instance.add(INCIDENT)
    instance.oauth.lifetime_s = 1  # renewed at half its life when that is under the margin
    async with servicenow(url) as system:
        assert await system.find(INCIDENT) is not None
        await asyncio.sleep(0.6)
        assert await system.find(INCIDENT) is not None
    assert instance.oauth.requests == 2
    assert instance.oauth.refused_bearers == 0  # never sent a token the instance would refuse


async def test_a_second_401_is_the_credentials_refused_never_a_loop(
    snow: tuple[ServiceNowStandIn, str],
) -> None:
    instance, url = snow
    instance.add(INCIDENT)
    instance.oauth.lifetime_s = 0  # every token is dead on arrival
    async with servicenow(url) as system:
        with pytest.raises(TicketCredentialsRefused, match=r"credentials refused \(401\)"):
            await system.find(INCIDENT)
    assert instance.oauth.requests == 2  # the first token and one renewal, no more


async def test_servicenow_refusing_the_client_secret_fails_closed_naming_servicenow(
    redis_client: aioredis.Redis,
    namespace: str,
    snow: tuple[ServiceNowStandIn, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instance, url = snow
    instance.add(INCIDENT)
    monkeypatch.setenv("TWOKEY_TEST_OAUTH_SECRET", "not-the-" + CLIENT_SECRET)
    with capture_logs() as logs:
        async with connected(redis_client, namespace, servicenow_policy(url)) as core:
            with pytest.raises(CredentialsRefused) as refused:
                await core.service.open(
                    chat("bob"), chat("alice"), Action.RESET_MFA.value, INCIDENT, "lost-device"
                )
            assert core.notifier.sent == []
    words = refused.value.message
    assert words.startswith(
        f"ServiceNow refused twokey's credentials, so ticket {INCIDENT} cannot be checked and "
        "nothing was opened. An operator must fix twokey's ServiceNow integration"
    )
    assert "cannot be reached" not in words
    assert instance.bearer_calls == 0 and instance.oauth.requests == 1
    (entry,) = [e for e in logs if e["event"] == "ticket_system_unavailable"]
    assert entry["why"] == "credentials_refused"
    assert "credentials refused by the token endpoint (401" in entry["detail"]
    assert CLIENT_SECRET not in repr(logs) + words


async def test_tickets_check_says_servicenow_refused_the_client_credentials(
    snow: tuple[ServiceNowStandIn, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(servicenow_policy(snow[1]))
    assert await check(path) == 0
    assert "incident table readable" in capsys.readouterr().out
    monkeypatch.setenv("TWOKEY_TEST_OAUTH_SECRET", WRONG)
    assert await check(path) == 1
    out = capsys.readouterr().out
    assert "NOT READY: credentials refused by the token endpoint (401" in out
    assert "check the OAuth client id and secret" in out
    assert WRONG not in out and CLIENT_SECRET not in out


# ---- Jira ----------------------------------------------------------------------------------


async def test_jira_oauth_checks_the_issue_and_comments_through_the_gateway(
    redis_client: aioredis.Redis, namespace: str, jira: tuple[JiraStandIn, str]
) -> None:
    site, url = jira
    site.add(ISSUE)
    with capture_logs() as logs:
        async with connected(redis_client, namespace, jira_policy(url)) as core:
            final = await run_to_the_end(core, ISSUE)
    assert final.state is RequestState.COMPLETED
    assert len(site.comments[ISSUE]) == 4
    assert all(c["public"] is False for c in site.comments[ISSUE])
    assert site.transitions[ISSUE] == ["31"]
    assert site.gateway_calls >= 7  # reads, four comments, one transition
    assert site.oauth.requests == 1
    assert site.problems == []
    nothing_secret_in(logs, site.oauth.all_tokens())


async def test_jira_renews_an_expired_token_once(jira: tuple[JiraStandIn, str]) -> None:
    site, url = jira
    site.add(ISSUE)
    async with jira_oauth(url) as system:
        assert await system.find(ISSUE) is not None
        site.oauth.expire_all()
        found = await system.find(ISSUE)
        assert found is not None and found.number == ISSUE
        lines = await system.check()  # the new token serves the next calls too
    assert "signed in as the API user" in lines and "BROWSE_PROJECTS: yes" in lines
    assert site.oauth.requests == 2 and site.oauth.refused_bearers == 1
    assert site.problems == []


async def test_jira_refusing_the_client_secret_fails_closed_naming_jira(
    redis_client: aioredis.Redis,
    namespace: str,
    jira: tuple[JiraStandIn, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site, url = jira
    site.add(ISSUE)
    monkeypatch.setenv("TWOKEY_TEST_OAUTH_SECRET", "not-the-" + CLIENT_SECRET)
    with capture_logs() as logs:
        async with connected(redis_client, namespace, jira_policy(url)) as core:
            with pytest.raises(CredentialsRefused) as refused:
                await core.service.open(
                    chat("bob"), chat("alice"), Action.RESET_MFA.value, ISSUE, "lost-device"
                )
            assert core.notifier.sent == []
    assert refused.value.message.startswith(
        f"Jira Service Management refused twokey's credentials, so ticket {ISSUE} cannot be "
        "checked and nothing was opened. An operator must fix twokey's Jira Service Management "
        "integration"
    )
    assert site.gateway_calls == 0
    assert CLIENT_SECRET not in repr(logs) + refused.value.message
    async with jira_oauth(url, secret=WRONG) as system:
        with pytest.raises(TicketSystemDown, match=r"credentials refused .*401 access_denied"):
            await system.check()


async def test_tickets_check_says_jira_refused_the_client_credentials(
    jira: tuple[JiraStandIn, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(jira_policy(jira[1]))
    assert await check(path, "--ticket", ISSUE) == 0
    out = capsys.readouterr().out
    assert f"ticket {ISSUE}: not found" in out and "BROWSE_PROJECTS: yes" in out
    assert f"tokens from {jira[1]}/oauth/token" in out
    assert f"calls through {jira[1]}/ex/jira/{CLOUD_ID}" in out
    monkeypatch.setenv("TWOKEY_TEST_OAUTH_SECRET", WRONG)
    assert await check(path) == 1
    out = capsys.readouterr().out
    assert "NOT READY: credentials refused by the token endpoint (401 access_denied)" in out
    assert WRONG not in out


# ---- helpers -------------------------------------------------------------------------------

WRONG = "Wr0ng-client-s3cret"


async def check(path: Path, *more: str) -> int:
    """`twokey tickets check` as an operator runs it (its own event loop, in a thread)."""
    return await asyncio.to_thread(main, ["tickets", "check", "--policy", str(path), *more])


@asynccontextmanager
async def servicenow(url: str) -> AsyncIterator[ServiceNowTickets]:
    client = OAuthClient(f"{url}/oauth_token.do", _s(CLIENT_ID), _s(CLIENT_SECRET), "form")
    system = ServiceNowTickets(url, oauth=client)
    try:
        yield system
    finally:
        await system.aclose()


@asynccontextmanager
async def jira_oauth(url: str, secret: str = CLIENT_SECRET) -> AsyncIterator[JiraTickets]:
    client = OAuthClient(f"{url}/oauth/token", _s(CLIENT_ID), _s(secret), "json")
    system = JiraTickets(f"{url}/ex/jira/{CLOUD_ID}", oauth=client)
    try:
        yield system
    finally:
        await system.aclose()


def _s(value: str) -> SecretStr:
    return SecretStr(value)
