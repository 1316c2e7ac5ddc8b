"""Tickets that are real: a request opens only on an open, recent ServiceNow incident raised by
the target, used by no other request, assigned to the agent where the tier says so; the ticket
is read again when execution is claimed; each decision and the outcome are written back as work
notes. ServiceNow down refuses (fail closed). Real Redis, a local Table API stand-in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY
from pydantic import SecretStr
from structlog.testing import capture_logs

from app.domain.errors import (
    CredentialsRefused,
    NotAllowed,
    NotFound,
    PolicyError,
    Unavailable,
)
from app.domain.models import Action, Request, RequestState
from app.notify import FanoutNotifier, RecordingNotifier
from app.policy.loader import load_policy_text
from app.tickets import ServiceNowTickets, TicketNotes, ticket_system, write_back
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
    assert await _refused_opens(core) == [("bob", TICKET, "ticket")]


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
        with capture_logs() as logs, pytest.raises(CredentialsRefused) as refused:
            await open_on(core)
    finally:
        await system.aclose()
    # The agent is told the cause, not "cannot be reached": waiting will not fix it.
    words = refused.value.message
    assert words == (
        f"ServiceNow refused twokey's credentials, so ticket {TICKET} cannot be checked and "
        "nothing was opened. An operator must fix twokey's ServiceNow integration "
        "(`twokey tickets check` says what is wrong); trying again will not help until then."
    )
    assert "cannot be reached" not in words and "try again in a minute" not in words
    assert isinstance(refused.value, Unavailable)  # every fail-closed path still applies
    assert core.notifier.sent == []
    assert await _opened(core) == []
    assert PASSWORD not in repr(logs) + words
    (entry,) = [e for e in logs if e["event"] == "ticket_system_unavailable"]
    assert entry["why"] == "credentials_refused" and entry["detail"] == "credentials refused (401)"


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


# ---- re-checked when execution is claimed ---------------------------------------------------


async def _confirm_and_approve(core: Core, request_id: str) -> Request:
    await core.service.confirm_owner(chat("alice"), request_id)
    decision = await core.service.approve(chat("carol"), request_id)
    return decision.request


async def test_a_ticket_closed_before_the_claim_stops_the_change(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    snow, _ = standin
    snow.add(TICKET)
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, TICKET, "lost-device"
    )
    snow.incidents[TICKET]["state"] = "7"  # closed while the request waited for its keys
    final = await _confirm_and_approve(core, opened.request.id)
    assert final.state is RequestState.FAILED
    assert "ticket changed since the request opened" in final.outcome_detail
    assert "state is 7 (Closed)" in final.outcome_detail
    assert "nothing was changed" in final.outcome_detail
    assert core.connector.changes == []
    stored = await core.store.get(opened.request.id)
    assert stored is not None and stored.state is RequestState.FAILED
    assert ("update_request", opened.request.id, "failed") in core.notifier.sent


async def test_a_ticket_reassigned_before_the_claim_stops_the_change(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(TICKET)
    text = tickets_policy(url, "  tiers:\n    standard: {assigned_to_requester: true}\n")
    async with connected(redis_client, namespace, text) as core:
        opened = await core.service.open(
            chat("bob"), chat("alice"), Action.RESET_MFA.value, TICKET, "lost-device"
        )
        snow.incidents[TICKET]["assigned_to.email"] = "heidi@example.com"
        snow.incidents[TICKET]["assigned_to.user_name"] = "heidi"
        final = await _confirm_and_approve(core, opened.request.id)
    assert final.state is RequestState.FAILED
    assert "is not assigned to Bob" in final.outcome_detail
    assert "assigned_to or assignment_group" in final.outcome_detail
    assert core.connector.changes == []


async def test_servicenow_down_at_the_claim_stops_the_change(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    snow, _ = standin
    snow.add(TICKET)
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, TICKET, "lost-device"
    )
    snow.fail_with = 503
    final = await _confirm_and_approve(core, opened.request.id)
    assert final.state is RequestState.FAILED
    assert "ServiceNow could not be reached to re-check ticket" in final.outcome_detail
    assert core.connector.changes == []


async def test_a_slow_ticket_system_at_the_claim_cannot_push_the_change_past_the_lease(
    redis_client: aioredis.Redis,
    namespace: str,
    standin: tuple[ServiceNowStandIn, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The time budget starts at the claim: a ticket re-read slower than the lease used to be
    followed by a full budget for the provider, so the change landed after a sweeper could
    have declared the execution interrupted. Now it stops before acting, nothing changed."""
    snow, url = standin
    monkeypatch.setenv("TWOKEY_TEST_SN_USER", USER)
    monkeypatch.setenv("TWOKEY_TEST_SN_PASSWORD", PASSWORD)
    text = tickets_policy(url)
    system = ticket_system(load_policy_text(text).tickets)
    assert system is not None
    core = build_core(redis_client, namespace, policy=text, tickets=system, lease_s=2)
    try:
        snow.add(TICKET)
        opened = await core.service.open(
            chat("bob"), chat("alice"), Action.RESET_MFA.value, TICKET, "lost-device"
        )
        snow.read_delay_s = 2.5  # longer than the lease
        final = await _confirm_and_approve(core, opened.request.id)
    finally:
        await system.aclose()
    assert final.state is RequestState.FAILED, final.outcome_detail
    assert "could not be checked again in time" in final.outcome_detail
    assert core.connector.changes == []


async def test_a_ticket_still_open_at_the_claim_lets_the_change_run(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    snow, _ = standin
    snow.add(TICKET, age_s=23.9 * 3600)  # within max_age at opening; older by the claim is fine
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, TICKET, "lost-device"
    )
    final = await _confirm_and_approve(core, opened.request.id)
    assert final.state is RequestState.COMPLETED
    assert len(core.connector.changes) == 1
    assert [q["sysparm_query"] for q in snow.queries] == [f"number={TICKET}"] * 2


# ---- one ticket, one request ----------------------------------------------------------------


async def test_a_ticket_used_by_another_request_is_refused(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    standin[0].add(TICKET)
    first = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, TICKET, "lost-device"
    )
    with pytest.raises(NotAllowed, match=f"already backs twokey request {first.request.id}"):
        await core.service.open(
            chat("bob"), chat("alice"), Action.RESET_PASSWORD.value, TICKET, "lost-device"
        )
    assert [e[2] for e in await _refused_opens(core)] == ["ticket_reused"]


async def test_two_agents_quoting_one_ticket_at_once_open_one_request(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    standin[0].add(TICKET)
    outcomes = await asyncio.gather(
        core.service.open(
            chat("bob"), chat("alice"), Action.RESET_MFA.value, TICKET, "lost-device"
        ),
        core.service.open(
            chat("heidi"), chat("alice"), Action.RESET_PASSWORD.value, TICKET, "lost-device"
        ),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["Decision", "NotAllowed"]


async def test_a_refused_opening_gives_its_ticket_back(
    core: Core, standin: tuple[ServiceNowStandIn, str]
) -> None:
    snow, _ = standin
    snow.add(TICKET, state="3")
    snow.incidents[TICKET]["caller_id.email"] = "mallory@evil.example"
    with pytest.raises(NotAllowed, match="caller_id"):
        await open_on(core)
    snow.incidents[TICKET]["caller_id.email"] = "alice@example.com"  # the help desk fixed it
    assert await open_on(core) is RequestState.PENDING


async def test_reuse_may_be_allowed_by_the_policy(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(TICKET)
    async with connected(
        redis_client, namespace, tickets_policy(url, "  one_request_per_ticket: false\n")
    ) as core:
        assert await open_on(core) is RequestState.PENDING
        assert await open_on(core, target="alice") is RequestState.PENDING


# ---- assignment and the opened-within window, per tier --------------------------------------


async def test_a_ticket_assigned_to_someone_else_is_refused_naming_the_fields(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(TICKET, assigned_to_email="heidi@example.com", assigned_to_user_name="heidi")
    text = tickets_policy(url, "  assigned_to_requester: true\n")
    async with connected(redis_client, namespace, text) as core:
        with pytest.raises(
            NotAllowed,
            match=r"not assigned to Bob Brown: its assigned_to or assignment_group names",
        ):
            await open_on(core)
        assert [e[2] for e in await _refused_opens(core)] == ["ticket"]


async def test_a_ticket_assigned_to_the_agents_group_opens(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(TICKET, assigned_to_email="", assigned_to_user_name="", assignment_group="HelpDesk")
    text = tickets_policy(url, "  assigned_to_requester: true\n")
    async with connected(redis_client, namespace, text) as core:
        assert await open_on(core) is RequestState.PENDING


async def test_each_tier_chooses_its_own_checks(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(TICKET, age_s=3 * 86400, assigned_to_email="heidi@example.com")
    snow.add("INC0010002", age_s=3 * 86400, caller_email="grace@example.com")
    snow.incidents["INC0010002"]["assigned_to.email"] = "heidi@example.com"
    extra = (
        "  max_age: 24h\n"
        "  tiers:\n"
        "    standard: {max_age: off}\n"
        "    privileged: {assigned_to_requester: true}\n"
    )
    async with connected(redis_client, namespace, tickets_policy(url, extra)) as core:
        # standard: any age, and assignment is not checked
        assert await open_on(core) is RequestState.PENDING
        # privileged (grace is an admin): 24h applies again, and so does assignment
        with pytest.raises(NotAllowed, match="opened too long ago: its opened_at"):
            await open_on(core, "INC0010002", target="grace")


async def test_a_tier_the_policy_lacks_is_a_located_policy_error() -> None:
    text = tickets_policy("https://x.service-now.com", "  tiers:\n    standrad: {max_age: 1h}\n")
    with pytest.raises(PolicyError, match="unknown tier 'standrad'"):
        load_policy_text(text)


# ---- write-back -----------------------------------------------------------------------------


class KeepsSecrets(RecordingNotifier):
    """The recording witness, but it keeps the one-time secrets too: to prove none reached the
    ticket."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    async def deliver_secret(self, request: Request, secret: SecretStr, label: str) -> bool:
        self.secrets.append(secret.get_secret_value())
        return await super().deliver_secret(request, secret, label)


WRITE_BACK = "  write_back: {notes: true, completion_state: 6}\n"


async def test_each_decision_and_the_outcome_land_as_work_notes(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(TICKET)
    witness = KeepsSecrets()
    async with connected(redis_client, namespace, tickets_policy(url, WRITE_BACK), witness) as core:
        opened = await core.service.open(
            chat("bob"), chat("alice"), Action.RESET_PASSWORD.value, TICKET, "forgotten-password"
        )
        final = await _confirm_and_approve(core, opened.request.id)
    assert final.state is RequestState.COMPLETED
    notes = snow.work_notes[TICKET]
    rid = opened.request.id
    assert len(notes) == 4, notes
    assert notes[0].startswith(f"twokey {rid}: ") and "requested by Bob" in notes[0]
    assert "the account owner Alice" in notes[1] and "confirmed" in notes[1]
    assert "approved by Carol" in notes[2] and "UTC" in notes[2]
    assert "completed: the change was made" in notes[3]
    assert "approved by Carol" in notes[3] and "identity provider:" in notes[3]
    assert snow.incidents[TICKET]["state"] == "6"  # resolved on completion
    assert witness.secrets and all(s not in "\n".join(notes) for s in witness.secrets)
    assert snow.problems == []


async def test_a_denial_is_noted_with_its_reason_made_inert(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(TICKET)
    async with connected(redis_client, namespace, tickets_policy(url, WRITE_BACK)) as core:
        opened = await core.service.open(
            chat("bob"), chat("alice"), Action.RESET_MFA.value, TICKET, "lost-device"
        )
        await core.service.deny(chat("carol"), opened.request.id, "[code]<img src=x>[/code] no")
    last = snow.work_notes[TICKET][-1]
    assert "denied by Carol" in last
    assert "[code]" not in last and "(code)<img src=x>(/code) no" in last
    assert snow.incidents[TICKET]["state"] == "2"  # only a completed change resolves it


async def test_write_back_failing_never_blocks_the_change_and_is_counted(
    redis_client: aioredis.Redis, namespace: str, standin: tuple[ServiceNowStandIn, str], env: None
) -> None:
    snow, url = standin
    snow.add(TICKET)
    snow.fail_writes_with = 500
    failed = _failed_writes()
    async with connected(redis_client, namespace, tickets_policy(url, WRITE_BACK)) as core:
        with capture_logs() as logs:
            opened = await core.service.open(
                chat("bob"), chat("alice"), Action.RESET_MFA.value, TICKET, "lost-device"
            )
            final = await _confirm_and_approve(core, opened.request.id)
            await _settled(core)
    assert final.state is RequestState.COMPLETED
    assert snow.work_notes == {}
    assert _failed_writes() >= failed + 4
    assert any(e["event"] == "ticket_write_failed" for e in logs)
    assert PASSWORD not in repr(logs)


# ---- helpers --------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOKEY_TEST_SN_USER", USER)
    monkeypatch.setenv("TWOKEY_TEST_SN_PASSWORD", PASSWORD)


@asynccontextmanager
async def connected(
    redis_client: aioredis.Redis,
    namespace: str,
    text: str,
    notifier: RecordingNotifier | None = None,
) -> AsyncIterator[Core]:
    """A core on this policy with its ticket system and (if the policy writes back) its notes,
    wired as `twokey serve` wires them; notes under way are written before it closes."""
    policy = load_policy_text(text)
    system = ticket_system(policy.tickets)
    assert system is not None
    core = build_core(redis_client, namespace, policy=text, tickets=system, notifier=notifier)
    fanout = FanoutNotifier([core.notifier])
    close = write_back(system, policy, fanout, redis_client, core.keys, core.service.names.of)
    core.service.notifier = fanout
    try:
        yield core
    finally:
        await close()


async def _settled(core: Core) -> None:
    fanout = core.service.notifier
    assert isinstance(fanout, FanoutNotifier)
    for notifier in fanout.notifiers:
        if isinstance(notifier, TicketNotes):
            await notifier.settle()


def _failed_writes() -> float:
    return (
        REGISTRY.get_sample_value(
            "twokey_ticket_writes_total", {"kind": "note", "result": "failed"}
        )
        or 0.0
    )


async def _opened(core: Core) -> list[str]:
    """Every request the audit trail says was opened (any shard)."""
    opened = []
    for shard in range(16):
        for _, fields in await core.redis.xrange(core.keys.audit(shard)):
            event = json.loads(fields["e"])
            if event["kind"] in ("opened", "breakglass_opened"):
                opened.append(event["rid"])
    return opened


async def _refused_opens(core: Core) -> list[tuple[str, str, str]]:
    refused = []
    for shard in range(16):
        for _, fields in await core.redis.xrange(core.keys.audit(shard)):
            event = json.loads(fields["e"])
            if event["kind"] == "open_refused":
                refused.append((event["actor"], event["ticket"], event["reason"]))
    return refused
