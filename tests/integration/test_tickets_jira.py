"""Tickets in Jira Service Management: the same checks and write-back as ServiceNow, against a
local stand-in of Jira Cloud's REST v3 and the service desk API (real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from structlog.testing import capture_logs

from app.domain.errors import NotAllowed, NotFound, Unavailable
from app.domain.models import Action, RequestState
from app.notify import FanoutNotifier
from app.policy.loader import load_policy_text
from app.tickets import (
    JiraTickets,
    TicketCredentialsRefused,
    TicketSystemDown,
    ticket_system,
    write_back,
)
from tests.helpers import Core, build_core, chat, policy_text
from tests.jira_standin import API_TOKEN, EMAIL, JiraStandIn

KEY = "HD-1042"


def jira_policy(url: str, extra: str = "") -> str:
    text = policy_text().replace("'^(INC|REQ|CHG)-\\d{3,8}$'", "'^HD-\\d{1,8}$'")
    return text + (
        "tickets:\n"
        "  system: jira\n"
        f"  instance_url: {url}\n"
        "  email_env: TWOKEY_TEST_JIRA_EMAIL\n"
        "  api_token_env: TWOKEY_TEST_JIRA_TOKEN\n"
        "  max_age: 24h\n"
        "  caller_must_be_target: true\n"
        "  write_back: {notes: true, completion_state: '31'}\n" + extra
    )


@pytest.fixture
async def jira() -> AsyncIterator[tuple[JiraStandIn, str]]:
    site = JiraStandIn()
    server = TestServer(site.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield site, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def core(
    redis_client: aioredis.Redis,
    namespace: str,
    jira: tuple[JiraStandIn, str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Core]:
    monkeypatch.setenv("TWOKEY_TEST_JIRA_EMAIL", EMAIL)
    monkeypatch.setenv("TWOKEY_TEST_JIRA_TOKEN", API_TOKEN)
    text = jira_policy(jira[1])
    policy = load_policy_text(text)
    system = ticket_system(policy.tickets)
    assert isinstance(system, JiraTickets)
    built = build_core(redis_client, namespace, policy=text, tickets=system)
    fanout = FanoutNotifier([built.notifier])
    close = write_back(system, policy, fanout, redis_client, built.keys, built.service.names.of)
    built.service.notifier = fanout
    try:
        yield built
    finally:
        await close()


async def open_on(core: Core, key: str = KEY, target: str = "alice") -> RequestState:
    decision = await core.service.open(
        chat("bob"), chat(target), Action.RESET_MFA.value, key, "lost-device"
    )
    return decision.request.state


async def test_an_open_issue_raised_by_the_target_opens_and_each_step_is_commented(
    core: Core, jira: tuple[JiraStandIn, str]
) -> None:
    site, _ = jira
    site.add(KEY)
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, KEY, "lost-device"
    )
    await core.service.confirm_owner(chat("alice"), opened.request.id)
    final = (await core.service.approve(chat("carol"), opened.request.id)).request
    fanout = core.service.notifier
    assert isinstance(fanout, FanoutNotifier)
    for notes in fanout.notifiers[1:]:
        await notes.settle()  # type: ignore[attr-defined]
    assert final.state is RequestState.COMPLETED
    bodies = [c["body"] for c in site.comments[KEY]]
    assert len(bodies) == 4
    assert all(c["public"] is False for c in site.comments[KEY])
    assert "approved by Carol" in bodies[2] and "completed" in bodies[3]
    assert site.transitions[KEY] == ["31"]
    assert site.problems == []


async def test_a_moved_issue_backs_one_request_under_either_key(
    core: Core, jira: tuple[JiraStandIn, str]
) -> None:
    site, _ = jira
    site.add(KEY)
    assert await open_on(core) is RequestState.PENDING
    moved = "HD-2077"  # moved within the pattern the policy accepts
    site.move(KEY, moved)
    with pytest.raises(NotAllowed, match="already backs twokey request"):
        await open_on(core, moved)  # the same issue, quoted by its new key
    assert site.problems == []


async def test_a_done_issue_is_refused_naming_its_status(
    core: Core, jira: tuple[JiraStandIn, str]
) -> None:
    jira[0].add(KEY, status="Resolved")
    with pytest.raises(NotAllowed, match=r"its status is Resolved"):
        await open_on(core)


async def test_an_issue_reported_by_someone_else_is_refused_naming_reporter(
    core: Core, jira: tuple[JiraStandIn, str]
) -> None:
    jira[0].add(KEY, reporter_email="mallory@evil.example")
    with pytest.raises(NotAllowed, match=r"caller \(reporter\) is not Alice"):
        await open_on(core)


async def test_an_old_issue_is_refused_naming_created(
    core: Core, jira: tuple[JiraStandIn, str]
) -> None:
    jira[0].add(KEY, age_s=2 * 86400)
    with pytest.raises(NotAllowed, match=r"its created is .* more than 1d ago"):
        await open_on(core)


async def test_an_issue_jira_does_not_have_is_refused(
    core: Core, jira: tuple[JiraStandIn, str]
) -> None:
    with pytest.raises(NotFound, match=f"Ticket {KEY} was not found in Jira Service Management"):
        await open_on(core)
    assert jira[0].problems == []


@pytest.mark.parametrize(
    ("trouble", "why"), [("forbid", "403"), ("rate_limited", "retry after 17s")]
)
async def test_jira_refusing_fails_closed(
    core: Core, jira: tuple[JiraStandIn, str], trouble: str, why: str
) -> None:
    site, url = jira
    site.add(KEY)
    setattr(site, trouble, True)
    with capture_logs() as logs, pytest.raises(Unavailable, match="nothing was opened"):
        await open_on(core)
    assert core.notifier.sent == []
    assert API_TOKEN not in repr(logs)
    system = JiraTickets(url, SecretStr(EMAIL), SecretStr(API_TOKEN))
    try:
        with pytest.raises(TicketSystemDown, match=why):
            await system.find(KEY)
    finally:
        await system.aclose()


async def test_credentials_refused_at_the_claim_stop_the_change_saying_so(
    core: Core, jira: tuple[JiraStandIn, str]
) -> None:
    """Jira stops accepting twokey's API user (403) after the request opened: the re-check at
    the claim fails closed, and the cards say the credentials were refused, not "unreachable"."""
    site, _ = jira
    site.add(KEY)
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, KEY, "lost-device"
    )
    site.forbid = True
    await core.service.confirm_owner(chat("alice"), opened.request.id)
    with capture_logs() as logs:
        final = (await core.service.approve(chat("carol"), opened.request.id)).request
    assert final.state is RequestState.FAILED
    assert final.outcome_detail == (
        f"Jira Service Management refused twokey's credentials when ticket {KEY} was "
        "re-checked, so the change was stopped: an operator must fix twokey's Jira Service "
        "Management integration; nothing was changed"
    )
    assert core.connector.changes == []
    assert API_TOKEN not in repr(logs) + final.outcome_detail


async def test_a_wrong_token_is_refused_with_401(jira: tuple[JiraStandIn, str]) -> None:
    site, url = jira
    site.add(KEY)
    system = JiraTickets(url, SecretStr(EMAIL), SecretStr("not-the-token"))
    try:
        with pytest.raises(TicketCredentialsRefused, match=r"credentials refused \(401\)"):
            await system.find(KEY)
        with pytest.raises(TicketSystemDown, match="401"):
            await system.check()
    finally:
        await system.aclose()


async def test_the_read_only_check_reports_permissions(jira: tuple[JiraStandIn, str]) -> None:
    site, url = jira
    site.permissions["TRANSITION_ISSUES"] = False
    system = JiraTickets(url, SecretStr(EMAIL), SecretStr(API_TOKEN))
    try:
        lines = await system.check()
    finally:
        await system.aclose()
    assert "BROWSE_PROJECTS: yes" in lines and "TRANSITION_ISSUES: NO" in lines
    assert site.comments == {} and site.transitions == {} and site.problems == []


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(min_size=1, max_size=30))
async def test_a_key_that_is_not_an_issue_key_never_reaches_a_url(
    jira: tuple[JiraStandIn, str], text: str
) -> None:
    site, url = jira
    system = JiraTickets(url, SecretStr(EMAIL), SecretStr(API_TOKEN))
    try:
        found = await system.find(text)
    finally:
        await system.aclose()
    assert found is None  # the stand-in holds no issues
    assert site.problems == []


async def test_the_issues_summary_and_reporter_are_kept_for_the_approval_card(
    core: Core, jira: tuple[JiraStandIn, str]
) -> None:
    jira[0].add(KEY)
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, KEY, "lost-device"
    )
    stored = await core.store.get(opened.request.id)
    assert stored is not None and stored.ticket_details is not None
    details = stored.ticket_details
    assert details.system == "Jira Service Management"
    assert (details.summary, details.caller, details.group) == (
        "Lost phone, needs MFA reset",
        "Alice",  # the reporter's displayName
        "",  # Jira has no assignment group
    )
