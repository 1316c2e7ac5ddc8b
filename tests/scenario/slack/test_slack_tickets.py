"""Tickets that are real, end to end on Slack: signed /twokey commands and clicks through the
whole server, the ticket read from a local ServiceNow Table API stand-in. A made-up, closed,
someone else's or reused ticket is refused in an ephemeral that says why, with nothing opened;
ServiceNow down refuses too; the approval card shows what the ticket says (escaped); a completed
request leaves work notes naming who confirmed and approved, and no secret."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from slack_standin import APPROVALS, SlackStandIn
from slack_world import SlackWorld, build_runtime, slack_policy, slack_settings, stop_world

from app.connectors.sandbox import SandboxConnector
from app.domain.models import RequestState
from app.policy.loader import load_policy_text
from app.tickets import ticket_system, write_back
from app.web import create_app
from tests.servicenow_standin import PASSWORD, USER, ServiceNowStandIn

TICKET = "INC0010001"


@dataclass
class TicketWorld:
    world: SlackWorld
    snow: ServiceNowStandIn

    async def refused(self, text: str, user: str = "U0BOB") -> str:
        """Run a /twokey command that must be refused: the ephemeral's words, nothing opened."""
        response, form = await self.world.command(user, text)
        assert response.status == 200
        receipt = await self.world.receipt(form)
        assert json.loads(receipt)["response_type"] == "ephemeral"
        assert "TK-" not in receipt, receipt
        assert self.world.slack.in_channel(APPROVALS) == [], "no approval card was posted"
        return receipt


def _policy(url: str) -> str:
    text = slack_policy().replace("'^(INC|REQ|CHG)-\\d{3,8}$'", "'^INC\\d{7}$'")
    return text + (
        "tickets:\n"
        "  system: servicenow\n"
        f"  instance_url: {url}\n"
        "  username_env: TWOKEY_TEST_SN_USER\n"
        "  password_env: TWOKEY_TEST_SN_PASSWORD\n"
        "  max_age: 24h\n"
        "  caller_must_be_target: true\n"
        "  write_back: {notes: true}\n"
    )


@pytest.fixture
async def tickets(
    slack: SlackStandIn,
    redis_client: aioredis.Redis,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[TicketWorld]:
    """The whole server as `twokey serve` wires it with tickets: the ServiceNow adapter in the
    service, the work notes on the notifier fan-out, Slack mounted on the same runtime."""
    monkeypatch.setenv("TWOKEY_TEST_SN_USER", USER)
    monkeypatch.setenv("TWOKEY_TEST_SN_PASSWORD", PASSWORD)
    snow = ServiceNowStandIn()
    server = TestServer(snow.app(), host="127.0.0.1")
    await server.start_server()
    text = _policy(str(server.make_url("")).rstrip("/"))
    policy = load_policy_text(text)
    system = ticket_system(policy.tickets)
    assert system is not None
    connector = SandboxConnector()
    config = slack_settings(slack, namespace)
    runtime = build_runtime(redis_client, namespace, config, text, connector)
    runtime.service.tickets = system
    notes = write_back(
        system,
        policy,
        runtime.notifier,
        redis_client,
        runtime.store.keys,
        runtime.service.names.of,
    )
    app = create_app(config, runtime=runtime, sweeper=False)
    http = TestClient(TestServer(app))
    await http.start_server()
    world = SlackWorld(slack, http, runtime, connector, redis_client, namespace)
    try:
        yield TicketWorld(world, snow)
    finally:
        await stop_world(world)
        await notes()
        await server.close()


OPEN = f"reset-mfa <@U0ALICE|alice> {TICKET} lost-device"


async def test_a_made_up_ticket_is_refused_and_nothing_opens(tickets: TicketWorld) -> None:
    said = await tickets.refused(OPEN)
    assert f"Ticket {TICKET} was not found in ServiceNow" in said
    assert tickets.world.connector.changes == []
    assert tickets.snow.problems == []


async def test_a_closed_ticket_is_refused_naming_its_state(tickets: TicketWorld) -> None:
    tickets.snow.add(TICKET, state="7")
    said = await tickets.refused(OPEN)
    assert f"Ticket {TICKET} is not open: its state is 7 (Closed)" in said


async def test_a_ticket_raised_by_someone_else_is_refused(tickets: TicketWorld) -> None:
    tickets.snow.add(TICKET, caller_email="mallory@evil.example", caller_user_name="mallory")
    said = await tickets.refused(OPEN)
    assert "caller (caller_id) is not Alice Adams" in said


async def test_servicenow_down_refuses_and_says_so(tickets: TicketWorld) -> None:
    tickets.snow.add(TICKET)
    tickets.snow.fail_with = 503
    said = await tickets.refused(OPEN)
    assert "ServiceNow cannot be reached right now" in said and "nothing was opened" in said


async def test_a_reused_ticket_is_refused_naming_the_request_it_backs(
    tickets: TicketWorld,
) -> None:
    tickets.snow.add(TICKET)
    first = await tickets.world.open_request(OPEN)
    response, form = await tickets.world.command("U0BOB", OPEN.replace("reset-mfa", "unlock"))
    assert response.status == 200
    said = await tickets.world.receipt(form)
    assert json.loads(said)["response_type"] == "ephemeral"
    assert f"already backs twokey request {first.id}" in said
    cards = [m for m in tickets.world.slack.in_channel(APPROVALS) if "TK-" in json.dumps(m.blocks)]
    assert len(cards) == 1, "only the first request has a card"


async def test_the_approval_card_shows_the_tickets_words_escaped(tickets: TicketWorld) -> None:
    tickets.snow.add(
        TICKET,
        short_description="<!channel> call <https://evil.example|the bank> & reset",
        caller_name="Alice Adams",
        assignment_group="Service Desk",
    )
    request = await tickets.world.open_request(OPEN)
    card = tickets.world.card(request.id, "approvers")
    assert card is not None
    shown = json.dumps(card.blocks)
    assert "<!channel>" not in shown and "<https://evil" not in shown
    assert "&lt;!channel&gt; call &lt;https://evil.example|the bank&gt; &amp; reset" in shown
    assert "Caller Alice Adams, assignment group Service Desk" in shown


async def test_a_completed_request_leaves_work_notes_naming_who_and_no_secret(
    tickets: TicketWorld,
) -> None:
    world, snow = tickets.world, tickets.snow
    snow.add(TICKET)
    request = await world.open_request(f"reset-password <@U0ALICE> {TICKET} forgotten-password")
    owner = await world.slack.until(lambda: world.card(request.id, "owner", "U0ALICE"))
    await world.click("U0ALICE", owner, "confirm")
    await world.stored(request.id, lambda r: r.owner_confirmed_at is not None)
    card = world.card(request.id, "approvers")
    assert card is not None
    await world.click("U0CAROL", card, "approve")
    done = await world.settled(request.id, "completed")
    assert done.state is RequestState.COMPLETED
    notes = await world.slack.until(
        lambda: len(snow.work_notes.get(TICKET, [])) >= 4 and snow.work_notes[TICKET]
    )
    final = notes[-1]
    assert f"twokey {request.id}" in final and "completed" in final
    assert "confirmed by Alice Adams (alice)" in final
    assert "approved by Carol Chen (carol)" in final
    alice_dm = world.slack.dm_of("U0ALICE")
    secrets = [
        b["elements"][0]["elements"][0]["text"]
        for m in world.slack.in_channel(alice_dm or "")
        for b in m.blocks
        if b.get("type") == "rich_text"
    ]
    assert len(secrets) == 1 and len(secrets[0]) >= 12, "the owner got her temporary password"
    assert all(secrets[0] not in note for note in notes)
    assert snow.problems == []
