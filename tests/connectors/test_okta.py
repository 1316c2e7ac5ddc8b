"""The Okta connector against a stand-in Okta org that validates every request against
Okta's published OpenAPI spec (see okta_standin.py); any undocumented request fails the test."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from openapi_core import OpenAPI

from app.connectors.base import ConnectorConfigError
from app.connectors.checks import CheckStatus
from app.connectors.okta import OktaConnector, build
from app.domain.errors import Unavailable
from app.domain.models import Action, Principal, PrincipalKind
from app.ports import Outcome
from tests.connectors import RecordingSleep, request_for
from tests.connectors.okta_standin import (
    OktaStandIn,
    load_okta_spec,
    okta_error,
    okta_group,
    okta_user,
)

API_TOKEN = "00TESTssws-" + "k3y" * 10
ALICE = okta_user("00ualice0001", "alice@example.com", "Alice", "Example")
BOB = okta_user("00ubob000002", "bob@example.com", "Bob", "Locked", status="LOCKED_OUT")
ENGINEERING = okta_group("00geng000001", "Engineering")
EVERYONE = okta_group("00gall000001", "Everyone")


def principal(user: dict[str, Any]) -> Principal:
    profile = user["profile"]
    return Principal(
        id=user["id"],
        display_name=f"{profile['firstName']} {profile['lastName']}",
        email=profile["email"],
    )


@pytest.fixture(scope="session")
def okta_spec() -> OpenAPI:
    return load_okta_spec()


StandInFactory = Callable[..., Awaitable[OktaStandIn]]


@pytest.fixture
async def make_standin(okta_spec: OpenAPI) -> AsyncIterator[StandInFactory]:
    """Start stand-in orgs seeded with Alice and Bob; afterwards, no request may have strayed
    from the spec."""
    started: list[OktaStandIn] = []

    async def start(**options: Any) -> OktaStandIn:
        standin = OktaStandIn(okta_spec, **options)
        standin.add_user(json.loads(json.dumps(ALICE)), [ENGINEERING, EVERYONE])
        standin.add_user(json.loads(json.dumps(BOB)), [EVERYONE])
        await standin.start()
        started.append(standin)
        return standin

    yield start
    for standin in started:
        await standin.close()
    for standin in started:
        assert standin.violations == [], "requests outside Okta's documented API"


@pytest.fixture
async def okta(make_standin: StandInFactory) -> OktaStandIn:
    return await make_standin(api_token=API_TOKEN)


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


ConnectorFactory = Callable[..., OktaConnector]


@pytest.fixture
async def connect(
    monkeypatch: pytest.MonkeyPatch, sleep: RecordingSleep
) -> AsyncIterator[ConnectorFactory]:
    """Build Okta connectors from policy settings (SSWS token unless told otherwise)."""
    monkeypatch.setenv("OKTA_API_TOKEN", API_TOKEN)
    built: list[OktaConnector] = []

    def make(standin: OktaStandIn, **settings: Any) -> OktaConnector:
        config: dict[str, Any] = {"type": "okta", "org_url": standin.base_url}
        if "client_id" not in settings:
            config["api_token_env"] = "OKTA_API_TOKEN"
        config.update(settings)
        connector = build(config, sleep=sleep)
        built.append(connector)
        return connector

    yield make
    for connector in built:
        await connector.aclose()


def change_calls(standin: OktaStandIn) -> list[str]:
    return [r.operation or "" for r in standin.requests if r.method != "GET"]


# -- the four changes ---------------------------------------------------------------------


async def test_reset_mfa_resets_the_factors_of_the_user_named(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)
    alice = principal(ALICE)

    result = await connector.execute(Action.RESET_MFA, alice, request_for(Action.RESET_MFA, alice))

    assert result.outcome is Outcome.COMPLETED
    assert "Alice Example" in result.detail and result.secret is None
    assert okta.changes == [("resetFactors", "00ualice0001")]
    assert [r.operation for r in okta.requests] == ["getUser", "resetFactors"]
    assert all(r.headers["Authorization"] == f"SSWS {API_TOKEN}" for r in okta.requests)


async def test_reset_password_hands_the_temporary_password_to_the_core_only(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)
    alice = principal(ALICE)

    result = await connector.execute(
        Action.RESET_PASSWORD, alice, request_for(Action.RESET_PASSWORD, alice)
    )

    assert result.outcome is Outcome.COMPLETED
    temporary = okta.temp_passwords[0]
    assert result.secret is not None and result.secret.get_secret_value() == temporary
    assert result.secret_label == "Okta temporary password"
    assert temporary not in result.detail and temporary not in repr(result)
    assert okta.users["00ualice0001"]["status"] == "PASSWORD_EXPIRED"
    [call] = okta.calls("expirePasswordWithTempPassword")
    assert call.query == {"revokeSessions": "true"}
    assert okta.calls("resetPassword") == [], "the emailing reset flow is never used"


async def test_reset_password_can_leave_sessions_alone(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta, revoke_sessions_on_password_reset=False)
    alice = principal(ALICE)

    result = await connector.execute(
        Action.RESET_PASSWORD, alice, request_for(Action.RESET_PASSWORD, alice)
    )

    assert result.outcome is Outcome.COMPLETED
    assert okta.calls("expirePasswordWithTempPassword")[0].query == {"revokeSessions": "false"}
    assert "00ualice0001" not in okta.sessions_revoked


async def test_unlock_unlocks_a_locked_out_user(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)
    bob = principal(BOB)

    result = await connector.execute(Action.UNLOCK, bob, request_for(Action.UNLOCK, bob))

    assert result.outcome is Outcome.COMPLETED
    assert okta.users["00ubob000002"]["status"] == "ACTIVE"
    assert okta.changes == [("unlockUser", "00ubob000002")]


async def test_revoke_sessions_also_revokes_oauth_tokens_and_remembered_devices(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)
    alice = principal(ALICE)

    result = await connector.execute(
        Action.REVOKE_SESSIONS, alice, request_for(Action.REVOKE_SESSIONS, alice)
    )

    assert result.outcome is Outcome.COMPLETED
    assert okta.sessions_revoked["00ualice0001"] == {"oauthTokens": True, "forgetDevices": True}
    [call] = okta.calls("revokeUserSessions")
    assert (call.method, call.path) == ("DELETE", "/api/v1/users/00ualice0001/sessions")


async def test_a_login_is_resolved_to_the_okta_id_before_a_change(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    """Sessions are addressed by id only ({userId}); the request may name the login."""
    connector = connect(okta)
    alice = Principal(id="alice@example.com", display_name="Alice Example")

    result = await connector.execute(
        Action.REVOKE_SESSIONS, alice, request_for(Action.REVOKE_SESSIONS, alice)
    )

    assert result.outcome is Outcome.COMPLETED
    assert okta.calls("revokeUserSessions")[0].path == "/api/v1/users/00ualice0001/sessions"


# -- refusals, lost answers, rate limits ----------------------------------------------------


async def test_an_okta_refusal_is_failed_in_oktas_words(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)
    alice = principal(ALICE)
    okta.answer_next(
        "resetFactors",
        403,
        okta_error("E0000006", "You do not have permission to perform the requested action"),
    )

    result = await connector.execute(Action.RESET_MFA, alice, request_for(Action.RESET_MFA, alice))

    assert result.outcome is Outcome.FAILED
    assert "You do not have permission to perform the requested action" in result.detail
    assert "E0000006" in result.detail and "HTTP 403" in result.detail
    assert len(okta.calls("resetFactors")) == 1, "a refusal is not repeated"


async def test_error_causes_are_part_of_the_words(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)
    alice = principal(ALICE)
    okta.answer_next(
        "expirePasswordWithTempPassword",
        403,
        okta_error("E0000014", "Update of credentials failed", ["Password policy forbids it"]),
    )

    result = await connector.execute(
        Action.RESET_PASSWORD, alice, request_for(Action.RESET_PASSWORD, alice)
    )

    assert result.outcome is Outcome.FAILED and result.secret is None
    assert "Update of credentials failed; Password policy forbids it" in result.detail


async def test_a_user_okta_does_not_know_fails_before_any_change(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)
    ghost = Principal(id="00ughost0009", display_name="Ghost")

    result = await connector.execute(Action.UNLOCK, ghost, request_for(Action.UNLOCK, ghost))

    assert result.outcome is Outcome.FAILED
    assert "could not find Ghost" in result.detail and "E0000007" in result.detail
    assert change_calls(okta) == []


async def test_a_user_whose_email_changed_is_not_touched(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)
    stale = Principal(id="00ualice0001", display_name="Alice", email="alice@old.example.com")

    result = await connector.execute(Action.RESET_MFA, stale, request_for(Action.RESET_MFA, stale))

    assert result.outcome is Outcome.FAILED and "nothing was changed" in result.detail
    assert change_calls(okta) == []


async def test_a_lost_answer_to_a_change_is_unknown_and_never_repeated(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta, timeout=0.5)
    bob = principal(BOB)
    okta.hang_next("unlockUser")

    result = await connector.execute(Action.UNLOCK, bob, request_for(Action.UNLOCK, bob))

    assert result.outcome is Outcome.UNKNOWN
    assert "unclear whether Okta did unlock the account" in result.detail
    assert "Okta Admin Console" in result.detail
    assert len(okta.calls("unlockUser")) == 1


async def test_a_lost_answer_to_a_read_is_asked_again(
    okta: OktaStandIn, connect: ConnectorFactory, sleep: RecordingSleep
) -> None:
    connector = connect(okta, timeout=0.5)
    okta.hang_next("getUser")

    found = await connector.get("00ualice0001")

    assert found is not None and found.email == "alice@example.com"
    assert len(okta.calls("getUser")) == 2 and len(sleep.waits) == 1


async def test_a_read_okta_could_not_serve_is_asked_again_but_a_change_is_not(
    okta: OktaStandIn, connect: ConnectorFactory, sleep: RecordingSleep
) -> None:
    connector = connect(okta)
    alice = principal(ALICE)
    okta.answer_next("getUser", 503, okta_error("E0000009", "Internal Server Error"))
    okta.answer_next("resetFactors", 503, okta_error("E0000009", "Internal Server Error"))

    result = await connector.execute(Action.RESET_MFA, alice, request_for(Action.RESET_MFA, alice))

    assert result.outcome is Outcome.FAILED and "HTTP 503" in result.detail
    assert len(okta.calls("getUser")) == 2 and sleep.waits == [0.5]
    assert len(okta.calls("resetFactors")) == 1


async def test_a_change_waits_for_the_rate_limit_reset_okta_announces(
    okta: OktaStandIn, connect: ConnectorFactory, sleep: RecordingSleep
) -> None:
    connector = connect(okta)
    alice = principal(ALICE)
    okta.rate_limit_next("resetFactors", reset_in=3)

    result = await connector.execute(Action.RESET_MFA, alice, request_for(Action.RESET_MFA, alice))

    assert result.outcome is Outcome.COMPLETED
    assert sleep.waits == [3.0], "X-Rate-Limit-Reset is measured against the answer's Date"
    assert len(okta.calls("resetFactors")) == 2
    assert okta.changes == [("resetFactors", "00ualice0001")]


async def test_retry_after_wins_over_the_reset_header(
    okta: OktaStandIn, connect: ConnectorFactory, sleep: RecordingSleep
) -> None:
    connector = connect(okta)
    bob = principal(BOB)
    okta.rate_limit_next("unlockUser", reset_in=20, retry_after="2")

    result = await connector.execute(Action.UNLOCK, bob, request_for(Action.UNLOCK, bob))

    assert result.outcome is Outcome.COMPLETED
    assert sleep.waits == [2.0]


async def test_a_rate_limit_longer_than_the_bound_fails_without_waiting(
    okta: OktaStandIn, connect: ConnectorFactory, sleep: RecordingSleep
) -> None:
    connector = connect(okta, max_rate_limit_wait=30)
    alice = principal(ALICE)
    okta.rate_limit_next("resetFactors", reset_in=3600)

    result = await connector.execute(Action.RESET_MFA, alice, request_for(Action.RESET_MFA, alice))

    assert result.outcome is Outcome.FAILED
    assert "rate limiting" in result.detail and "nothing changed" in result.detail
    assert sleep.waits == []
    assert okta.changes == []


async def test_rate_limit_retries_are_bounded(
    okta: OktaStandIn, connect: ConnectorFactory, sleep: RecordingSleep
) -> None:
    connector = connect(okta, max_attempts=3)
    alice = principal(ALICE)
    for _ in range(3):
        okta.rate_limit_next("resetFactors", reset_in=1)

    result = await connector.execute(Action.RESET_MFA, alice, request_for(Action.RESET_MFA, alice))

    assert result.outcome is Outcome.FAILED and "rate limiting" in result.detail
    assert sleep.waits == [1.0, 1.0]
    assert len(okta.calls("resetFactors")) == 3 and okta.changes == []


async def test_an_unreachable_org_fails_and_says_nothing_changed(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta, max_attempts=1)
    alice = principal(ALICE)
    await okta.close()

    result = await connector.execute(Action.RESET_MFA, alice, request_for(Action.RESET_MFA, alice))

    assert result.outcome is Outcome.FAILED
    assert "nothing was changed" in result.detail


async def test_actions_outside_the_configuration_are_refused_without_a_call(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta, actions=["unlock"])
    alice = principal(ALICE)
    service = Principal(id="svc-backup", kind=PrincipalKind.NHI, owner_id="00ualice0001")

    assert not connector.supports(Action.RESET_MFA, alice)
    assert not connector.supports(Action.UNLOCK, service)
    assert not connector.supports(Action.ROTATE_SECRET, alice)
    result = await connector.execute(Action.RESET_MFA, alice, request_for(Action.RESET_MFA, alice))

    assert result.outcome is Outcome.FAILED and okta.requests == []


# -- directory -----------------------------------------------------------------------------


async def test_find_by_email_gives_the_person_with_their_groups(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)

    [alice] = await connector.find_by_email("Alice@Example.com")

    assert alice.id == "00ualice0001" and alice.display_name == "Alice Example"
    assert alice.email == "alice@example.com" and not alice.disabled
    assert alice.groups == {"Engineering", "Everyone"}
    [search] = okta.calls("listUsers")
    assert search.query["search"] == 'profile.email eq "Alice@Example.com"'


async def test_find_by_email_shows_every_match_but_no_deprovisioned_account(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    okta.add_user(okta_user("00ushared001", "shared@example.com", "Sam", "One"))
    okta.add_user(okta_user("00ushared002", "shared@example.com", "Sam", "Two"))
    okta.add_user(
        okta_user("00ugone00003", "shared@example.com", "Sam", "Gone", status="DEPROVISIONED")
    )
    okta.add_user(
        okta_user("00ususpend04", "sus@example.com", "Sue", "Spended", status="SUSPENDED")
    )
    connector = connect(okta)

    shared = await connector.find_by_email("shared@example.com")
    [suspended] = await connector.find_by_email("sus@example.com")

    assert {p.id for p in shared} == {"00ushared001", "00ushared002"}
    assert suspended.disabled


async def test_an_email_that_could_break_the_search_expression_matches_nobody(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)

    assert await connector.find_by_email('x" or profile.email sw "a') == []
    assert await connector.find_by_email("not-an-email") == []
    assert okta.requests == []


async def test_get_by_id_or_login_and_none_for_a_stranger(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta, group_key="id")

    by_id = await connector.get("00ubob000002")
    by_login = await connector.get("alice@example.com")
    stranger = await connector.get("nobody@example.com")

    assert by_id is not None and by_id.groups == {"00gall000001"} and not by_id.disabled
    assert by_login is not None and by_login.id == "00ualice0001"
    assert stranger is None


async def test_search_is_for_pickers_and_reads_no_groups(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)

    found = await connector.search("ali", limit=5)

    assert [p.id for p in found] == ["00ualice0001"]
    assert okta.calls("listUsers")[0].query == {"q": "ali", "limit": "5"}
    assert okta.calls("listUserGroups") == []
    assert await connector.find_nhi("svc-backup") is None


async def test_mobile_phone_is_the_phone_of_record_only_when_the_operator_says_it_is_admin_only(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    """People may edit their own Okta profile: a number they typed proves nothing by default."""
    okta.users["00ualice0001"]["profile"]["mobilePhone"] = "+44 7700 900123"
    default, locked = connect(okta), connect(okta, phone_of_record=True)

    for connector, phone in ((default, None), (locked, "+447700900123")):
        by_id = await connector.get("00ualice0001")
        [by_email] = await connector.find_by_email("alice@example.com")
        [picked] = await connector.search("ali")
        assert by_id is not None
        assert [by_id.phone, by_email.phone, picked.phone] == [phone] * 3
    assert not [line for line in await default.check() if "phone of record" in line.what]
    (reminder,) = [line for line in await locked.check() if "phone of record" in line.what]
    assert reminder.status is CheckStatus.NOTE and "read-only" in reminder.detail


async def test_second_email_is_the_recovery_email_only_when_the_operator_says_it_is_admin_only(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    """Same as the phone: an emailed code to an address its owner typed in proves nothing."""
    okta.users["00ualice0001"]["profile"]["secondEmail"] = "alice.home@example.net"
    default = connect(okta)
    locked = connect(okta, recovery_email_of_record=True)

    for connector, address in ((default, None), (locked, "alice.home@example.net")):
        by_id = await connector.get("00ualice0001")
        [by_email] = await connector.find_by_email("alice@example.com")
        [picked] = await connector.search("ali")
        assert by_id is not None
        assert [by_id.recovery_email, by_email.recovery_email, picked.recovery_email] == [
            address
        ] * 3
    assert not [line for line in await default.check() if "secondEmail" in line.what]
    (reminder,) = [line for line in await locked.check() if "secondEmail" in line.what]
    assert reminder.status is CheckStatus.NOTE and "read-only" in reminder.detail


async def test_a_directory_refusal_is_unavailable_not_nobody(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    """Fail closed: a look-up Okta refused must not read as "no such person"."""
    connector = connect(okta)
    okta.answer_next(
        "listUsers",
        403,
        okta_error("E0000006", "You do not have permission to perform the requested action"),
    )

    with pytest.raises(Unavailable, match="You do not have permission"):
        await connector.find_by_email("alice@example.com")


async def test_a_next_page_outside_the_org_is_never_followed(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    """Okta paginates with Link headers; following one elsewhere would hand out our token."""
    connector = connect(okta)
    okta.answer_next(
        "listUserGroups",
        200,
        [EVERYONE],
        {"Link": '<https://evil.example.net/api/v1/users/00ualice0001/groups>; rel="next"'},
    )

    with pytest.raises(Unavailable, match="outside the org"):
        await connector.get("00ualice0001")


# -- members: who may approve -----------------------------------------------------------------

CAROL = okta_user("00ucarol0003", "carol@example.com", "Carol", "Manager")
DAN = okta_user("00udan000004", "dan@example.com", "Dan", "Lowercase")
ENGINEERING_MANAGERS = okta_group("00gengmgr001", "Engineering Managers")


async def test_members_of_two_groups_gives_each_person_once_with_their_groups(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)

    found = await connector.members(["Engineering", "Everyone"])

    assert {p.id: p.groups for p in found} == {
        "00ualice0001": {"Engineering", "Everyone"},
        "00ubob000002": {"Everyone"},
    }
    alice = next(p for p in found if p.id == "00ualice0001")
    assert alice.email == "alice@example.com" and alice.display_name == "Alice Example"
    bob = next(p for p in found if p.id == "00ubob000002")
    assert not bob.disabled, "LOCKED_OUT can sign in again; callers decide the rest"
    assert [r.query["search"] for r in okta.calls("listGroups")] == [
        'profile.name eq "Engineering"',
        'profile.name eq "Everyone"',
    ]
    assert [r.path for r in okta.calls("listGroupUsers")] == [
        "/api/v1/groups/00geng000001/users",
        "/api/v1/groups/00gall000001/users",
    ]
    assert okta.calls("listUserGroups") == [], "the group listed is the group matched"


def app_group(group_id: str, name: str) -> dict[str, Any]:
    """A group imported from a connected app (AD, Google...): its source chose the name."""
    return {**okta_group(group_id, name), "type": "APP_GROUP", "objectClass": ["okta:app_group"]}


async def test_an_imported_group_bearing_a_roles_name_carries_no_role(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    """Okta keeps names unique among its own groups only: Dan made a group named Engineering in
    a connected directory and is in it; he holds no Engineering role."""
    okta.add_user(DAN, [app_group("00gappeng001", "Engineering")])
    connector = connect(okta)

    [dan] = await connector.find_by_email("dan@example.com")
    found = await connector.members(["Engineering"])

    assert dan.groups == frozenset()
    assert found and DAN["id"] not in [p.id for p in found]
    trusting = connect(okta, group_types=["OKTA_GROUP", "APP_GROUP"])  # the operator's choice
    [trusted] = await trusting.find_by_email("dan@example.com")
    assert trusted.groups == {"Engineering"}


async def test_members_by_group_id_use_the_id_as_is(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta, group_key="id")

    found = await connector.members(["00geng000001", "00gall000001", "00geng000001"])

    assert {p.id: p.groups for p in found} == {
        "00ualice0001": {"00geng000001", "00gall000001"},
        "00ubob000002": {"00gall000001"},
    }
    assert okta.calls("listGroups") == []
    assert len(okta.calls("listGroupUsers")) == 2, "a group named twice is read once"


async def test_members_follow_oktas_pages_of_groups_and_of_members(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    """Okta's Link: rel="next" is followed for the group search and for each member list; an
    app group imported with the same name is on the second page of the search and is not read:
    its name carries no role (group_types)."""
    okta.page_size = 1
    okta.add_user(okta_user("00ucarol0003", "carol@example.com", "Carol", "C"), [EVERYONE])
    imported = okta_group("00gapp000001", "Everyone") | {"type": "APP_GROUP"}
    okta.add_user(json.loads(json.dumps(DAN)), [imported])
    connector = connect(okta)

    found = await connector.members(["Everyone"])

    assert [p.id for p in found] == ["00ualice0001", "00ubob000002", "00ucarol0003"]
    assert all(p.groups == {"Everyone"} for p in found)
    searches = okta.calls("listGroups")
    assert [r.query.get("after") for r in searches] == [None, "00gall000001"]
    assert all(r.query["search"] == 'profile.name eq "Everyone"' for r in searches)
    pages = [(r.path.split("/")[4], r.query.get("after")) for r in okta.calls("listGroupUsers")]
    assert pages == [
        ("00gall000001", None),
        ("00gall000001", "00ualice0001"),
        ("00gall000001", "00ubob000002"),
    ]


async def test_a_group_okta_does_not_know_has_nobody(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    by_name, by_id = connect(okta), connect(okta, group_key="id")

    assert await by_name.members(["Contractors"]) == []
    assert await by_id.members(["00gnone00001"]) == []
    assert okta.calls("listGroupUsers")[0].path == "/api/v1/groups/00gnone00001/users"


async def test_a_group_name_is_matched_exactly_never_as_a_prefix_or_without_case(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    okta.add_user(json.loads(json.dumps(CAROL)), [ENGINEERING_MANAGERS])
    okta.add_user(json.loads(json.dumps(DAN)), [okta_group("00glower0001", "engineering")])
    connector = connect(okta)

    assert [p.id for p in await connector.members(["Engineering"])] == ["00ualice0001"]
    assert await connector.members(["Eng"]) == []
    assert [p.id for p in await connector.members(["Engineering Managers"])] == ["00ucarol0003"]


async def test_a_group_name_that_could_break_the_search_expression_has_nobody(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)

    assert await connector.members(['x" or profile.name sw "E', "back\\slash", ""]) == []
    assert okta.requests == []


@pytest.mark.parametrize(
    ("operation", "status"),
    [("listGroups", 403), ("listGroupUsers", 403), ("listGroups", 500), ("listGroupUsers", 500)],
)
async def test_a_members_look_up_okta_refuses_is_unavailable_not_nobody(
    okta: OktaStandIn, connect: ConnectorFactory, operation: str, status: int
) -> None:
    connector = connect(okta)
    body = (
        okta_error("E0000006", "You do not have permission to perform the requested action")
        if status == 403
        else okta_error("E0000009", "Internal Server Error")
    )
    for _ in range(3):  # a read Okta could not serve is asked again, up to max_attempts
        okta.answer_next(operation, status, body)

    with pytest.raises(Unavailable, match=f"HTTP {status}"):
        await connector.members(["Engineering"])


async def test_a_members_page_outside_the_org_is_never_followed(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)
    okta.answer_next(
        "listGroupUsers",
        200,
        [ALICE],
        {"Link": '<https://evil.example.net/api/v1/groups/00geng000001/users>; rel="next"'},
    )

    with pytest.raises(Unavailable, match="outside the org"):
        await connector.members(["Engineering"])
    assert not [r for r in okta.requests if "evil" in r.path]


async def test_members_stop_at_the_limit(okta: OktaStandIn, connect: ConnectorFactory) -> None:
    okta.page_size = 1
    okta.add_user(json.loads(json.dumps(CAROL)), [EVERYONE])
    connector = connect(okta)

    found = await connector.members(["Everyone", "Engineering"], limit=2)
    nobody = await connector.members(["Everyone"], limit=0)

    assert [p.id for p in found] == ["00ualice0001", "00ubob000002"]
    assert nobody == []
    assert len(okta.calls("listGroupUsers")) == 2, "no page is read past the limit"


async def test_members_read_addresses_of_record_only_when_the_operator_says_so(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    profile = okta.users["00ualice0001"]["profile"]
    profile["mobilePhone"], profile["secondEmail"] = "+44 7700 900123", "alice.home@example.net"
    default = connect(okta)
    locked = connect(okta, phone_of_record=True, recovery_email_of_record=True)

    [plain] = await default.members(["Engineering"])
    [of_record] = await locked.members(["Engineering"])

    assert (plain.phone, plain.recovery_email) == (None, None)
    assert (of_record.phone, of_record.recovery_email) == (
        "+447700900123",
        "alice.home@example.net",
    )


async def test_a_service_app_reads_members_only_with_a_groups_scope(
    make_standin: StandInFactory,
    connect: ConnectorFactory,
    monkeypatch: pytest.MonkeyPatch,
    service_app_key: rsa.RSAPrivateKey,
) -> None:
    """Okta's spec puts listGroups and listGroupUsers under okta.groups.read; without it the
    connector says which scope is missing instead of asking Okta for a 403."""
    okta = await make_standin(
        client_id="0oaservice01",
        client_public_key=service_app_key.public_key(),
        granted_scopes=frozenset({"okta.users.read", "okta.users.manage", "okta.groups.read"}),
    )
    monkeypatch.setenv("OKTA_PRIVATE_KEY", pem(service_app_key))
    app = {"client_id": "0oaservice01", "private_key_env": "OKTA_PRIVATE_KEY"}
    without = connect(okta, **app)
    scoped = connect(
        okta, **app, scopes=["okta.users.read", "okta.users.manage", "okta.groups.read"]
    )

    with pytest.raises(Unavailable, match=r"okta\.groups\.read"):
        await without.members(["Engineering"])
    assert okta.requests == []
    (advice,) = [line for line in await without.check() if "approvers" in line.what]
    assert advice.status is CheckStatus.NOTE and "okta.groups.read" in advice.detail
    found = await scoped.members(["Engineering"])
    assert [p.id for p in found] == ["00ualice0001"]
    assert not [line for line in await scoped.check() if "approvers" in line.what]


# -- OAuth 2.0 service app -------------------------------------------------------------------


@pytest.fixture(scope="module")
def service_app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def test_a_service_app_signs_in_with_private_key_jwt_and_dpop(
    make_standin: StandInFactory,
    connect: ConnectorFactory,
    monkeypatch: pytest.MonkeyPatch,
    service_app_key: rsa.RSAPrivateKey,
) -> None:
    okta = await make_standin(
        client_id="0oaservice01", client_public_key=service_app_key.public_key()
    )
    monkeypatch.setenv("OKTA_PRIVATE_KEY", pem(service_app_key))
    connector = connect(okta, client_id="0oaservice01", private_key_env="OKTA_PRIVATE_KEY")
    alice, bob = principal(ALICE), principal(BOB)

    reset = await connector.execute(
        Action.RESET_PASSWORD, alice, request_for(Action.RESET_PASSWORD, alice)
    )
    unlock = await connector.execute(Action.UNLOCK, bob, request_for(Action.UNLOCK, bob))

    assert reset.outcome is Outcome.COMPLETED and unlock.outcome is Outcome.COMPLETED
    tokens = okta.calls("token")
    assert len(tokens) == 2, "the first token request learns the DPoP nonce, the second gets it"
    assert len(okta.access_tokens) == 1, "one token serves both changes"
    api_calls = [r for r in okta.requests if r.operation != "token"]
    assert all(r.headers["Authorization"].startswith("DPoP ") for r in api_calls)
    assert all("DPoP" in r.headers for r in api_calls)


async def test_a_service_app_key_as_jwk_with_kid_and_bearer_tokens(
    make_standin: StandInFactory,
    connect: ConnectorFactory,
    monkeypatch: pytest.MonkeyPatch,
    service_app_key: rsa.RSAPrivateKey,
) -> None:
    okta = await make_standin(
        client_id="0oaservice01",
        client_public_key=service_app_key.public_key(),
        client_key_id="key-2026",
        require_dpop=False,
    )
    jwk = RSAAlgorithm.to_jwk(service_app_key, as_dict=True) | {"kid": "key-2026"}
    monkeypatch.setenv("OKTA_PRIVATE_JWK", json.dumps(jwk))
    connector = connect(
        okta, client_id="0oaservice01", private_key_env="OKTA_PRIVATE_JWK", dpop=False
    )
    alice = principal(ALICE)

    result = await connector.execute(Action.RESET_MFA, alice, request_for(Action.RESET_MFA, alice))

    assert result.outcome is Outcome.COMPLETED
    assert [r.headers["Authorization"][:7] for r in okta.requests[1:]] == ["Bearer "] * 2


async def test_an_expired_token_is_renewed_once(
    make_standin: StandInFactory,
    connect: ConnectorFactory,
    monkeypatch: pytest.MonkeyPatch,
    service_app_key: rsa.RSAPrivateKey,
) -> None:
    okta = await make_standin(
        client_id="0oaservice01", client_public_key=service_app_key.public_key()
    )
    monkeypatch.setenv("OKTA_PRIVATE_KEY", pem(service_app_key))
    connector = connect(okta, client_id="0oaservice01", private_key_env="OKTA_PRIVATE_KEY")
    bob = principal(BOB)
    assert await connector.get("00ubob000002") is not None
    okta.answer_next("getUser", 401, okta_error("E0000011", "Invalid token provided"))

    result = await connector.execute(Action.UNLOCK, bob, request_for(Action.UNLOCK, bob))

    assert result.outcome is Outcome.COMPLETED
    assert len(okta.access_tokens) == 2


async def test_a_token_okta_refuses_fails_before_any_change(
    make_standin: StandInFactory,
    connect: ConnectorFactory,
    monkeypatch: pytest.MonkeyPatch,
    service_app_key: rsa.RSAPrivateKey,
) -> None:
    okta = await make_standin(
        client_id="0oaservice01",
        client_public_key=service_app_key.public_key(),
        granted_scopes=frozenset({"okta.users.read"}),
    )
    monkeypatch.setenv("OKTA_PRIVATE_KEY", pem(service_app_key))
    connector = connect(okta, client_id="0oaservice01", private_key_env="OKTA_PRIVATE_KEY")
    alice = principal(ALICE)

    result = await connector.execute(Action.RESET_MFA, alice, request_for(Action.RESET_MFA, alice))

    assert result.outcome is Outcome.FAILED
    assert "invalid_scope" in result.detail and "okta.users.manage" in result.detail
    assert {r.operation for r in okta.requests} == {"token"}


# -- configuration ---------------------------------------------------------------------------


def test_settings_are_checked_with_words_an_operator_can_act_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OKTA_API_TOKEN", API_TOKEN)
    base = {"type": "okta", "org_url": "https://acme.okta.com", "api_token_env": "OKTA_API_TOKEN"}

    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({**base, "org_url": "http://acme.okta.com"}, "plain http"),
        ({**base, "org_url": "https://acme-admin.okta.com"}, "without -admin"),
        ({**base, "org_url": "https://acme.okta.com/api/v1"}, "no path"),
        ({**base, "client_id": "0oa1", "private_key_env": "K"}, "not both"),
        ({"type": "okta", "org_url": "https://acme.okta.com"}, "set api_token_env"),
        ({**base, "actions": ["rotate-secret"]}, "Okta cannot perform rotate-secret"),
        ({**base, "api_token_env": "OKTA_API_TOKEN_MISSING"}, "OKTA_API_TOKEN_MISSING is not set"),
        ({**base, "phone_of_record": "maybe"}, "phone_of_record"),
        ({**base, "recovery_email_of_record": "maybe"}, "recovery_email_of_record"),
        ({**base, "phone_of_records": True}, "phone_of_records: Extra inputs are not permitted"),
    ]
    for config, words in cases:
        with pytest.raises(ConnectorConfigError, match=words):
            build(config)


def test_a_secret_pasted_into_the_policy_is_never_repeated_back() -> None:
    pasted = "00abcDEFghiJKLmnoPQRstu-vwxYZ0123456789"
    with pytest.raises(ConnectorConfigError) as raised:
        build({"type": "okta", "org_url": "https://acme.okta.com", "api_token_env": pasted})

    assert pasted not in str(raised.value)
    assert "NAME of the environment variable" in str(raised.value)


def test_a_malformed_private_key_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    garbage = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    )
    monkeypatch.setenv("OKTA_PRIVATE_KEY", garbage)
    with pytest.raises(ConnectorConfigError, match="does not hold a private key") as raised:
        build(
            {
                "type": "okta",
                "org_url": "https://acme.okta.com",
                "client_id": "0oa1",
                "private_key_env": "OKTA_PRIVATE_KEY",
            }
        )
    assert "MIIEvQ" not in str(raised.value)


# -- secrets never reach the logs -----------------------------------------------------------


async def test_tokens_keys_and_temporary_passwords_never_reach_the_logs(
    make_standin: StandInFactory,
    connect: ConnectorFactory,
    monkeypatch: pytest.MonkeyPatch,
    service_app_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    ssws = await make_standin(api_token=API_TOKEN)
    oauth = await make_standin(
        client_id="0oaservice01", client_public_key=service_app_key.public_key()
    )
    key_pem = pem(service_app_key)
    monkeypatch.setenv("OKTA_PRIVATE_KEY", key_pem)
    by_token = connect(ssws, timeout=0.5)
    by_app = connect(oauth, client_id="0oaservice01", private_key_env="OKTA_PRIVATE_KEY")
    alice = principal(ALICE)
    reset = request_for(Action.RESET_PASSWORD, alice)

    with structlog.testing.capture_logs() as events:
        results = [
            await by_token.execute(Action.RESET_PASSWORD, alice, reset),
            await by_app.execute(Action.RESET_PASSWORD, alice, reset),
        ]
        ssws.answer_next("resetFactors", 403, okta_error("E0000006", "Denied"))
        results.append(
            await by_token.execute(Action.RESET_MFA, alice, request_for(Action.RESET_MFA, alice))
        )
        ssws.hang_next("expirePasswordWithTempPassword")
        results.append(await by_token.execute(Action.RESET_PASSWORD, alice, reset))

    assert [r.outcome for r in results] == [
        Outcome.COMPLETED,
        Outcome.COMPLETED,
        Outcome.FAILED,
        Outcome.UNKNOWN,
    ]
    captured = capsys.readouterr()
    logged = "\n".join(
        [
            caplog.text,
            *(f"{r.getMessage()} {r.args!r} {r.__dict__!r}" for r in caplog.records),
            *(repr(event) for event in events),
            captured.out,
            captured.err,
            *(repr(result) for result in results),
        ]
    )
    assert events, "the connector logs its calls"
    secrets = [
        API_TOKEN,
        *ssws.temp_passwords,
        *oauth.temp_passwords,
        *oauth.access_tokens,
        *(line for line in key_pem.splitlines()[1:-1]),
    ]
    assert len(ssws.temp_passwords) == 1 and len(oauth.temp_passwords) == 1
    for secret in secrets:
        assert secret not in logged
    for recorded in oauth.requests:
        if recorded.operation == "token":
            assertion = dict(pair.split("=", 1) for pair in recorded.body.decode().split("&"))
            assert assertion["client_assertion"] not in logged


async def test_a_request_for_another_change_is_refused_before_any_call(
    okta: OktaStandIn, connect: ConnectorFactory
) -> None:
    connector = connect(okta)
    alice = principal(ALICE)

    result = await connector.execute(Action.UNLOCK, alice, request_for(Action.RESET_MFA, alice))

    assert result.outcome is Outcome.FAILED and "nothing was changed" in result.detail
    assert okta.requests == [] and okta.changes == []


# -- the whole flow: a dispute signs the account out in Okta ------------------------------

PEOPLE_IN_OKTA = """
version: 1
people:
  - {id: 00ualice0001, display_name: Alice Example, email: alice@example.com, groups: [staff]}
  - {id: bob, display_name: Bob Brown, email: bob@example.com, groups: [staff, helpdesk]}
  - {id: carol, display_name: Carol Chen, email: carol@example.com, groups: [helpdesk-leads]}
"""


async def test_a_dispute_signs_the_owner_out_of_okta_through_its_own_request(
    okta: OktaStandIn, connect: ConnectorFactory, redis_client: Any, namespace: str
) -> None:
    from app.connectors.sandbox import SandboxDirectory
    from app.domain.models import RequestState
    from tests.helpers import build_core, chat

    core = build_core(
        redis_client,
        namespace,
        directory=SandboxDirectory.from_yaml(PEOPLE_IN_OKTA),
        providers=[connect(okta)],
    )
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
    )
    rid = opened.request.id
    await core.service.confirm_owner(chat("alice"), rid)
    done = await core.service.approve(chat("carol"), rid)
    assert done.request.state is RequestState.COMPLETED
    assert "00ualice0001" not in okta.sessions_revoked

    await core.service.dispute(chat("alice"), rid)

    assert okta.sessions_revoked["00ualice0001"] == {"oauthTokens": True, "forgetDevices": True}
    alerts = [text for _, _, text in core.notifier.said("alert_security")]
    assert not any("sign the account out of every session by hand" in t for t in alerts)
