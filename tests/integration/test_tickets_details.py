"""What the ticket says, kept with the request; the ticket system down with
``on_unavailable: strictest_tier``; ServiceNow requested items (``sc_req_item``) beside
incidents. Real Redis, the local Table API stand-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from app.domain.errors import NotAllowed, NotFound, PolicyError, Unavailable
from app.domain.models import Action, RequestState
from app.policy.loader import load_policy_text
from app.tickets import ServiceNowTickets
from tests.helpers import Core, build_core, chat
from tests.integration.test_tickets import (
    TICKET,
    _secret,
    _settled,
    connected,
    tickets_policy,
)
from tests.servicenow_standin import PASSWORD, USER, ServiceNowStandIn

ITEM = "RITM0010001"
FALLBACK = "  on_unavailable: strictest_tier\n  fallback_tier: strictest\n"
ITEMS = "  servicenow_tables: [incident, sc_req_item]\n"


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
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOKEY_TEST_SN_USER", USER)
    monkeypatch.setenv("TWOKEY_TEST_SN_PASSWORD", PASSWORD)


def policy(url: str, extra: str = "") -> str:
    text = tickets_policy(url, "  max_age: 24h\n  caller_must_be_target: true\n" + extra)
    return text.replace("'^INC\\d{7}$'", "'^(INC|RITM)\\d{7}$'")


async def _events(core: Core, kind: str) -> list[dict[str, str]]:
    found = []
    for shard in range(16):
        for _, fields in await core.redis.xrange(core.keys.audit(shard)):
            event = json.loads(fields["e"])
            if event["kind"] == kind:
                found.append(event)
    return found


async def _open(core: Core, ticket: str = TICKET) -> str:
    decision = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, ticket, "lost-device"
    )
    return decision.request.id


# ---- the ticket's words, kept with the request -----------------------------------------------


async def test_the_tickets_words_are_captured_and_stored_with_the_request(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(
        TICKET,
        short_description="<!channel> Lost\u202e phone\u0007, needs MFA " + "x" * 1000,
        caller_name="Alice Adams",
        assignment_group="Service Desk",
    )
    async with connected(redis_client, namespace, policy(url)) as core:
        request_id = await _open(core)
        stored = await core.store.get(request_id)
    assert stored is not None and stored.ticket_details is not None
    details = stored.ticket_details
    assert details.system == "ServiceNow"
    assert details.summary.startswith("<!channel> Lost phone, needs MFA xxx")
    assert len(details.summary) <= 300 and "\u202e" not in details.summary
    assert (details.caller, details.group, details.unchecked) == ("Alice Adams", "Service Desk", "")
    assert snow.problems == []


async def test_without_a_ticket_system_nothing_is_captured(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace)
    decision = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
    )
    stored = await core.store.get(decision.request.id)
    assert stored is not None and stored.ticket_details is None


# ---- the ticket system down: refuse (default) or the fallback tier ----------------------------


async def test_down_at_opening_refuses_by_default(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(TICKET)
    snow.fail_with = 503
    async with connected(redis_client, namespace, policy(url)) as core:
        with pytest.raises(Unavailable, match="cannot be reached right now"):
            await _open(core)
        assert core.notifier.sent == []
        assert await _events(core, "opened") == []


async def test_down_at_opening_opens_in_the_fallback_tier_audited_and_said(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.fail_with = 503  # even a made-up ticket could not be told apart now
    async with connected(redis_client, namespace, policy(url, FALLBACK)) as core:
        request_id = await _open(core)
        stored = await core.store.get(request_id)
        assert stored is not None
        assert stored.plan.tier == "strictest" and stored.plan.approvals_needed == 2
        assert stored.plan.alert_security
        assert "the ticket could not be checked: tier strictest" in stored.plan.reasons
        assert stored.ticket_details is not None
        assert "could not be checked" in stored.ticket_details.unchecked
        assert "fallback tier strictest" in stored.ticket_details.unchecked
        (event,) = await _events(core, "ticket_unchecked")
        assert event["rid"] == request_id and event["tier"] == "strictest"
        assert event["reason"] == "ticket_system_unavailable_at_open"
        assert event["outcome"] == "strictest"
        assert ("alert_security", request_id) in [s[:2] for s in core.notifier.sent]


async def test_a_ticket_that_backs_a_request_backs_no_second_one_while_the_system_is_down(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    """The first request marked the ticket by its ServiceNow sys_id; one opened during an
    outage could only mark the number as typed, met no mark, opened, and later ran too: one
    ticket, two changes. The number is now marked always, beside the record's id."""
    snow, url = standin
    snow.add(TICKET)
    async with connected(redis_client, namespace, policy(url, FALLBACK)) as core:
        await _open(core)
        snow.fail_with = 503
        with pytest.raises(NotAllowed, match=f"{TICKET} already backs twokey request"):
            await _open(core)
        reused = [e for e in await _events(core, "open_refused") if e["reason"] == "ticket_reused"]
        assert len(reused) == 1


async def test_refused_credentials_never_fall_back_even_with_a_fallback_tier(
    redis_client: aioredis.Redis,
    namespace: str,
    standin: tuple[ServiceNowStandIn, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outage may open in the fallback tier; a broken integration (credentials refused)
    would otherwise open every request unchecked until someone noticed: it refuses."""
    snow, url = standin
    snow.add(TICKET)
    monkeypatch.setenv("TWOKEY_TEST_SN_USER", USER)
    monkeypatch.setenv("TWOKEY_TEST_SN_PASSWORD", "not-" + PASSWORD)
    async with connected(redis_client, namespace, policy(url, FALLBACK)) as core:
        with pytest.raises(Unavailable, match="refused twokey's credentials"):
            await _open(core)
        assert await _events(core, "opened") == []
        assert await _events(core, "ticket_unchecked") == []


async def test_fallback_never_lets_a_made_up_ticket_through_once_servicenow_answers(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    async with connected(redis_client, namespace, policy(url, FALLBACK)) as core:
        with pytest.raises(NotFound, match="was not found in ServiceNow"):
            await _open(core)  # up: the check runs, the fallback is for outages only
        snow.fail_with = 503
        request_id = await _open(core)
        snow.fail_with = None  # back before the claim: the ticket is checked in full
        await core.service.confirm_owner(chat("alice"), request_id)
        await core.service.approve(chat("erin"), request_id)
        final = (await core.service.approve(chat("frank"), request_id)).request
    assert final.state is RequestState.FAILED
    assert f"ticket {TICKET} is no longer in ServiceNow" in final.outcome_detail
    assert core.connector.changes == []


async def test_a_ticket_first_read_at_the_claim_gets_every_check_its_age_included(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    """Opened unchecked (ServiceNow down); back at the claim with a ticket two days old: the
    age window (24 h here) is checked as of the request's opening, and the change stops."""
    snow, url = standin
    async with connected(redis_client, namespace, policy(url, FALLBACK)) as core:
        snow.fail_with = 503
        request_id = await _open(core)
        snow.fail_with = None
        snow.add(TICKET, age_s=2 * 86_400)
        await core.service.confirm_owner(chat("alice"), request_id)
        await core.service.approve(chat("erin"), request_id)
        final = (await core.service.approve(chat("frank"), request_id)).request
    assert final.state is RequestState.FAILED
    assert "opened too long ago" in final.outcome_detail
    assert core.connector.changes == []


async def test_fallback_request_still_unchecked_at_the_claim_runs_audited(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.fail_with = 503
    async with connected(redis_client, namespace, policy(url, FALLBACK)) as core:
        request_id = await _open(core)
        await core.service.confirm_owner(chat("alice"), request_id)
        await core.service.approve(chat("erin"), request_id)
        final = (await core.service.approve(chat("frank"), request_id)).request
        reasons = [e["reason"] for e in await _events(core, "ticket_unchecked")]
    assert final.state is RequestState.COMPLETED
    assert len(core.connector.changes) == 1
    assert reasons == ["ticket_system_unavailable_at_open", "ticket_system_unavailable_at_claim"]


async def test_a_request_opened_checked_is_still_stopped_when_down_at_the_claim(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(TICKET)
    async with connected(redis_client, namespace, policy(url, FALLBACK)) as core:
        request_id = await _open(core)
        snow.fail_with = 503
        await core.service.confirm_owner(chat("alice"), request_id)
        final = (await core.service.approve(chat("carol"), request_id)).request
    assert final.state is RequestState.FAILED
    assert "could not be reached to re-check ticket" in final.outcome_detail
    assert core.connector.changes == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "  on_unavailable: strictest_tier\n",
            "on_unavailable: strictest_tier needs fallback_tier",
        ),
        ("  fallback_tier: strictest\n", "fallback_tier is used only with on_unavailable"),
        (
            "  on_unavailable: strictest_tier\n  fallback_tier: strictst\n",
            "unknown tier 'strictst'",
        ),
        (
            "  on_unavailable: strictest_tier\n  fallback_tier: standard\n",
            "tier 'standard' opens requests whose ticket could not be checked, so it must demand "
            "at least the gates of every tier",
        ),
        ("  on_unavailable: skip\n", "on_unavailable"),
    ],
)
def test_the_fallback_is_validated_by_policy_check(extra: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy_text(policy("https://x.service-now.com", extra))


def test_policy_explain_says_what_an_outage_does() -> None:
    words = load_policy_text(policy("https://x.service-now.com", FALLBACK)).tickets.in_words()
    assert "ServiceNow unreachable: opens in tier strictest, audited" in words
    words = load_policy_text(policy("https://x.service-now.com")).tickets.in_words()
    assert "ServiceNow unreachable: refused" in words


# ---- ServiceNow requested items (sc_req_item) ------------------------------------------------


async def test_a_requested_item_is_read_from_sc_req_item_with_requested_for(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(ITEM, state="1", caller_name="Alice Adams", short_description="New laptop MFA")
    async with connected(redis_client, namespace, policy(url, ITEMS)) as core:
        request_id = await _open(core, ITEM)
        stored = await core.store.get(request_id)
    assert stored is not None and stored.state is RequestState.PENDING
    assert stored.ticket_details is not None
    assert stored.ticket_details.summary == "New laptop MFA"
    assert [(q["table"], q["sysparm_query"]) for q in snow.queries] == [
        ("sc_req_item", f"number={ITEM}")
    ]
    assert "requested_for.email" in snow.queries[0]["sysparm_fields"]
    assert snow.problems == []


async def test_a_requested_item_raised_for_someone_else_names_requested_for(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(ITEM, caller_email="mallory@evil.example", caller_user_name="mallory")
    async with connected(redis_client, namespace, policy(url, ITEMS)) as core:
        with pytest.raises(NotAllowed, match=r"caller \(requested_for\) is not Alice"):
            await _open(core, ITEM)


async def test_a_closed_requested_item_is_refused_in_its_own_states_words(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(ITEM, state="3")  # Closed Complete on a requested item (On Hold on an incident)
    async with connected(redis_client, namespace, policy(url, ITEMS)) as core:
        with pytest.raises(NotAllowed, match=r"its state is 3 \(Closed Complete\).*-5 \(Pending\)"):
            await _open(core, ITEM)


async def test_incidents_still_go_to_the_incident_table_beside_requested_items(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(TICKET, state="3")  # On Hold: open for an incident
    async with connected(redis_client, namespace, policy(url, ITEMS)) as core:
        await _open(core, TICKET)
    assert [q["table"] for q in snow.queries] == ["incident"]


async def test_requested_items_are_not_read_unless_the_policy_lists_the_table(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(ITEM)
    async with connected(redis_client, namespace, policy(url)) as core:
        with pytest.raises(NotFound, match=f"Ticket {ITEM} was not found in ServiceNow"):
            await _open(core, ITEM)
    assert [q["table"] for q in snow.queries] == ["incident"]


async def test_a_prefix_of_no_listed_table_is_looked_up_nowhere(
    standin: tuple[ServiceNowStandIn, str],
) -> None:
    snow, url = standin
    tables = ("incident", "sc_req_item")
    system = ServiceNowTickets(url, _secret(USER), _secret(PASSWORD), tables=tables)
    try:
        assert await system.find("CHG0010001") is None
        assert await system.check() == [
            "incident table readable with these credentials",
            "sc_req_item table readable with these credentials",
            "work_notes write-back not tried (this check changes nothing)",
        ]
    finally:
        await system.aclose()
    assert [q.get("sysparm_query") for q in snow.queries] == [None, None]


async def test_work_notes_on_a_requested_item_go_to_sc_req_item(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(ITEM)
    text = policy(url, ITEMS + "  write_back: {notes: true}\n")
    async with connected(redis_client, namespace, text) as core:
        request_id = await _open(core, ITEM)
        await core.service.confirm_owner(chat("alice"), request_id)
        await core.service.approve(chat("carol"), request_id)
        await _settled(core)
    notes = snow.work_notes[ITEM]
    assert "completed" in notes[-1] and "Carol" in notes[-1]
    assert snow.problems == []


async def test_break_glass_keeps_its_tier_when_the_ticket_cannot_be_checked(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.fail_with = 503
    async with connected(redis_client, namespace, policy(url, FALLBACK)) as core:
        decision = await core.service.breakglass(
            chat("erin"),
            chat("alice"),
            Action.RESET_MFA.value,
            TICKET,
            "Payroll run blocked: the CFO is locked out and the bank cut-off is at noon today.",
        )
        (event,) = await _events(core, "ticket_unchecked")
    plan = decision.request.plan
    assert plan.tier == "breakglass"
    assert "the ticket could not be checked (break-glass keeps its tier)" in plan.reasons
    details = decision.request.ticket_details
    assert details is not None and "its break-glass tier breakglass" in details.unchecked
    assert event["reason"] == "ticket_system_unavailable_at_open"
