"""The playground shows the Teams approval card: with tickets checked, the ticket's own words
are on it, with Adaptive Card Markdown shown literally; a made-up ticket opens nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from app.bootstrap import Runtime
from app.channels.teams.cards import plain
from app.policy.loader import load_policy_text
from app.tickets import ticket_system
from tests.integration.test_tickets import TICKET, tickets_policy
from tests.playground.runtime import serve_playground
from tests.playground.test_playground_api import Client
from tests.servicenow_standin import PASSWORD, USER, ServiceNowStandIn

LINK = "[Approve now](https://evil.example) **urgent**"


@pytest.fixture
async def snow() -> AsyncIterator[tuple[ServiceNowStandIn, str]]:
    fake_instance = ServiceNowStandIn()
    server = TestServer(fake_instance.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield fake_instance, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def playground(
    redis_url: str,
    namespace: str,
    snow: tuple[ServiceNowStandIn, str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Client, Runtime]]:
    monkeypatch.setenv("TWOKEY_TEST_SN_USER", USER)
    monkeypatch.setenv("TWOKEY_TEST_SN_PASSWORD", PASSWORD)
    text = tickets_policy(snow[1])
    system = ticket_system(load_policy_text(text).tickets)
    assert system is not None
    try:
        async with (
            serve_playground(redis_url, namespace, policy=text, sweeper=False) as (server, rt),
            aiohttp.ClientSession() as session,
        ):
            rt.service.tickets = system
            yield Client(server, session), rt
    finally:
        await system.aclose()


async def test_the_approver_pane_shows_the_tickets_words_literally(
    playground: tuple[Client, Runtime], snow: tuple[ServiceNowStandIn, str]
) -> None:
    client, _ = playground
    snow[0].add(TICKET, short_description=LINK, assignment_group="Service Desk")
    status, body = await client.command("bob", f"reset-mfa @alice {TICKET} lost-device")
    assert status == 200, body
    state = await client.state(str(body["request"]))
    card = state["cards"]["approver"]
    facts = {
        f["title"]: f["value"]
        for node in card["body"]
        if node.get("type") == "FactSet"
        for f in node["facts"]
    }
    assert facts["Ticket says"] == plain(LINK, 300)
    assert facts["Caller"] == "Alice Adams"
    assert facts["Assignment group"] == "Service Desk"
    assert "[Approve now](https://evil.example)" not in json.dumps(card)


async def test_a_made_up_ticket_opens_nothing_in_the_playground(
    playground: tuple[Client, Runtime],
) -> None:
    client, _ = playground
    status, body = await client.command("bob", f"reset-mfa @alice {TICKET} lost-device")
    assert status != 200 or "request" not in body, body
    assert f"Ticket {TICKET} was not found in ServiceNow" in json.dumps(body)
