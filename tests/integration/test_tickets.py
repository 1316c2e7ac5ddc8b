"""Tickets that are real: a request opens only on an open, recent ServiceNow incident raised by
the target; ServiceNow down refuses (fail closed). Real Redis, a local Table API stand-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from structlog.testing import capture_logs

from app.domain.errors import NotAllowed, NotFound, Unavailable
from app.domain.models import Action, RequestState
from app.policy.loader import load_policy_text
from app.tickets import ServiceNowTickets, ticket_system
from tests.helpers import Core, build_core, chat, policy_text
from tests.servicenow_standin import PASSWORD, USER, ServiceNowStandIn

TICKET = "INC0010001"


def tickets_policy(url: str, extra: str = "  max_age: 24h\n  caller_must_be_target: true\n") -> str:
    text = policy_text().replace("'^(INC|REQ|CHG)-\\d{3,8}$'", "'^INC\\d{7}$'")
    return text + (
        "tickets:\n"
        "  system: servicenow\n"
        f"  instance_url: {url}\n"
        "  username_env: TWOKEY_TEST_SN_USER\n"
        "  password_env: TWOKEY_TEST_SN_PASSWORD\n" + extra
    )


@pytest.fixture
async def standin() -> AsyncIterator[tuple[ServiceNowStandIn, str]]:
    fake_instance = ServiceNowStandIn()
    server = TestServer(fake_instance.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield fake_instance, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def core(
    redis_client: aioredis.Redis,
    namespace: str,
    standin: tuple[ServiceNowStandIn, str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Core]:
    monkeypatch.setenv("TWOKEY_TEST_SN_USER", USER)
    monkeypatch.setenv("TWOKEY_TEST_SN_PASSWORD", PASSWORD)
    text = tickets_policy(standin[1])
    system = ticket_system(load_policy_text(text).tickets)
    assert system is not None
    try:
        yield build_core(redis_client, namespace, policy=text, tickets=system)
    finally:
        await system.aclose()


async def open_on(core: Core, ticket: str = TICKET, target: str = "alice") -> RequestState:
    decision = await core.service.open(
        chat("bob"), chat(target), Action.RESET_MFA.value, ticket, "lost-device"
    )
    return decision.request.state


async def test_an_open_recent_ticket_raised_by_the_target_opens(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    snow, _ = standin
    snow.add(TICKET, state="1")
    assert await open_on(core) is RequestState.PENDING
    assert [q["sysparm_query"] for q in snow.queries] == [f"number={TICKET}"]
    assert snow.problems == []


async def test_the_caller_may_be_matched_by_user_name(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    snow, _ = standin
    snow.add(TICKET, caller_email="", caller_user_name="Alice@Example.com")
    assert await open_on(core) is RequestState.PENDING


async def test_an_nhi_ticket_must_be_raised_by_its_owner(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    snow, _ = standin
    snow.add(TICKET, caller_email="alice@example.com")  # alice owns nhi:billing-api
    decision = await core.service.open(
        chat("bob"), "nhi:billing-api", Action.ROTATE_SECRET.value, TICKET, "scheduled-rotation"
    )
    assert decision.request.state is RequestState.PENDING


async def test_a_ticket_servicenow_does_not_have_is_refused(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    with pytest.raises(NotFound, match=f"Ticket {TICKET} was not found in ServiceNow"):
        await open_on(core)
    assert core.notifier.sent == []
    assert standin[0].problems == []


async def test_a_resolved_ticket_is_refused_naming_its_state(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    standin[0].add(TICKET, state="6")
    with pytest.raises(NotAllowed, match=r"its state is 6 \(Resolved\)"):
        await open_on(core)
    assert core.notifier.sent == []
    # A ticket that does not hold up is a refused opening like any other: in the audit trail.
    refused = []
    for shard in range(16):
        for _, fields in await core.redis.xrange(core.keys.audit(shard)):
            event = json.loads(fields["e"])
            if event["kind"] == "open_refused":
                refused.append((event["actor"], event["ticket"], event["reason"]))
    assert refused == [("bob", TICKET, "ticket")]


async def test_a_ticket_opened_too_long_ago_is_refused_naming_opened_at(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    standin[0].add(TICKET, age_s=25 * 3600)
    with pytest.raises(NotAllowed, match=r"opened too long ago: its opened_at is .* more than 1d"):
        await open_on(core)


async def test_a_ticket_raised_by_someone_else_is_refused_naming_caller_id(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    standin[0].add(TICKET, caller_email="mallory@evil.example", caller_user_name="mallory")
    with pytest.raises(NotAllowed, match=r"caller \(caller_id\) is not Alice"):
        await open_on(core)
    assert core.notifier.sent == []


async def test_servicenow_unreachable_refuses_and_opens_nothing(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    closed = TestServer(ServiceNowStandIn().app(), host="127.0.0.1")
    await closed.start_server()
    url = str(closed.make_url("")).rstrip("/")
    await closed.close()  # nothing listens there any more
    system = ServiceNowTickets(url, _secret(USER), _secret(PASSWORD), timeout_s=2)
    core = build_core(redis_client, namespace, policy=tickets_policy(url), tickets=system)
    try:
        with pytest.raises(Unavailable, match=f"ServiceNow cannot be reached.*ticket {TICKET}"):
            await open_on(core)
    finally:
        await system.aclose()
    assert core.notifier.sent == []


@pytest.mark.parametrize("status", [500, 503])
async def test_servicenow_in_trouble_refuses(
    core: Core, standin: tuple[ServiceNowStandIn, str], status: int
) -> None:
    standin[0].add(TICKET)
    standin[0].fail_with = status
    with pytest.raises(Unavailable, match="nothing was opened"):
        await open_on(core)


async def test_refused_credentials_fail_closed_and_never_reach_the_logs(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str]
) -> None:
    snow, url = standin
    snow.add(TICKET)
    system = ServiceNowTickets(url, _secret(USER), _secret("wrong-" + PASSWORD))
    core = build_core(redis_client, namespace, policy=tickets_policy(url), tickets=system)
    try:
        with capture_logs() as logs, pytest.raises(Unavailable):
            await open_on(core)
    finally:
        await system.aclose()
    assert PASSWORD not in repr(logs)
    assert any(entry["event"] == "ticket_system_unavailable" for entry in logs)


async def test_a_policy_naming_a_system_with_none_connected_refuses(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, policy=tickets_policy("https://x.service-now.com"))
    with pytest.raises(Unavailable, match="no ticket system is connected"):
        await open_on(core)


async def test_a_number_that_would_change_the_query_is_never_sent(
    standin: tuple[ServiceNowStandIn, str],
) -> None:
    snow, url = standin
    snow.add(TICKET)
    system = ServiceNowTickets(url, _secret(USER), _secret(PASSWORD))
    try:
        assert await system.find(f"{TICKET}^ORnumberISNOTEMPTY") is None
    finally:
        await system.aclose()
    assert snow.queries == []


def _secret(value: str) -> SecretStr:
    return SecretStr(value)
