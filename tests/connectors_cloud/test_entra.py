"""The Entra connector against a local Graph stand-in that checks every request's documented shape.

Each test drives the real connector (real httpx, real HTTP on 127.0.0.1) and asserts what it
sent (method, path, query, body) and what it concluded. The stand-in fails the test on any
request Graph does not document (see graph_standin.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable

import pytest
import structlog

from app.connectors.base import ConnectorConfigError
from app.connectors.checks import CheckStatus
from app.connectors.entra import EntraConnector, build
from app.domain.errors import Unavailable
from app.domain.models import Action, Plan, Principal, PrincipalKind, Request
from app.ports import ExecutionResult, Outcome
from tests.connectors_cloud.graph_standin import (
    ALTERNATE_MOBILE,
    MOBILE,
    PASSWORD_METHOD_ID,
    GraphStandIn,
    GraphUser,
    directory_role,
    group,
    method,
)
from tests.connectors_cloud.local_server import Waits

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
CLIENT_SECRET = "Qx8~client-secret-for-tests~7hF2"
ALICE_ID = "6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0"
HELPDESK_GROUP = "3f1e5a2b-0000-4000-8000-00000000a001"
ALICE_MOBILE = "+1 425 555 0109"
"""Alice's ``mobilePhone`` as an admin typed it; her phone of record is its E.164 form."""
ALICE_PHONE = "+14255550109"


@pytest.fixture
async def graph() -> AsyncIterator[GraphStandIn]:
    standin = GraphStandIn(TENANT, CLIENT_ID, CLIENT_SECRET)
    standin.add_user(
        GraphUser(
            id=ALICE_ID,
            display_name="Alice Adams",
            upn="alice@contoso.com",
            mail="alice@contoso.com",
            mobile_phone=ALICE_MOBILE,
            member_of=[group("Staff"), group("Helpdesk", HELPDESK_GROUP)],
            methods=[method("passwordAuthenticationMethod", PASSWORD_METHOD_ID)],
        )
    )
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()
    assert standin.violations == [], "requests Graph does not document"


def settings(graph: GraphStandIn, **overrides: object) -> dict[str, object]:
    return {
        "type": "entra",
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret_env": "TEST_ENTRA_CLIENT_SECRET",
        "login_url": graph.origin,
        "graph_url": graph.graph_url,
        "timeout": 0.5,
        **overrides,
    }


Make = Callable[..., EntraConnector]


@pytest.fixture
async def make(
    graph: GraphStandIn, waits: Waits, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Make]:
    """Build connectors from policy settings (plus overrides); closes them after the test."""
    monkeypatch.setenv("TEST_ENTRA_CLIENT_SECRET", CLIENT_SECRET)
    made: list[EntraConnector] = []

    def factory(**overrides: object) -> EntraConnector:
        made.append(build(settings(graph, **overrides), sleep=waits))
        return made[-1]

    yield factory
    for connector in made:
        await connector.aclose()


@pytest.fixture
def entra(make: Make) -> EntraConnector:
    return make()


ALICE = Principal(id=ALICE_ID, display_name="Alice Adams", email="alice@contoso.com")


def request_for(action: Action, target: Principal = ALICE) -> Request:
    return Request(
        id="TK-7K3M9Q2X",
        ticket="INC-1234",
        action=action,
        target_id=target.id,
        target_name=target.name,
        target_kind=PrincipalKind.HUMAN,
        owner_id=target.id,
        requester_id="bob",
        reason_code="lost-device",
        plan=Plan(rule="default", tier="standard"),
        created_at=1_700_000_000_000,
        expires_at=1_700_000_000_000 + 3_600_000,
    )


async def run(
    connector: EntraConnector, action: Action, target: Principal = ALICE
) -> ExecutionResult:
    return await connector.execute(action, target, request_for(action, target))


# ---- configuration ---------------------------------------------------------------------------


def test_settings_are_checked_with_words_people_can_act_on(
    graph: GraphStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_ENTRA_CLIENT_SECRET", raising=False)
    with pytest.raises(ConnectorConfigError, match="TEST_ENTRA_CLIENT_SECRET is not set"):
        build(settings(graph))
    monkeypatch.setenv("TEST_ENTRA_CLIENT_SECRET", CLIENT_SECRET)
    with pytest.raises(ConnectorConfigError, match="multi-tenant alias"):
        build(settings(graph, tenant_id="common"))
    with pytest.raises(ConnectorConfigError, match="Application \\(client\\) ID"):
        build(settings(graph, client_id="my-app"))
    with pytest.raises(ConnectorConfigError, match="plain http"):
        build(settings(graph, graph_url="http://graph.example.com/v1.0"))
    with pytest.raises(ConnectorConfigError, match="Entra cannot perform unlock"):
        build(settings(graph, actions=["unlock"]))
    with pytest.raises(ConnectorConfigError, match="client_secret_env") as refused:
        build(settings(graph, client_secret_env=CLIENT_SECRET))
    assert CLIENT_SECRET not in str(refused.value)


# ---- the four changes ------------------------------------------------------------------------


async def test_temporary_access_pass_goes_to_the_owner_as_the_one_time_secret(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    result = await run(entra, Action.TEMPORARY_ACCESS)

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    assert result.secret.get_secret_value() == graph.passes[-1]
    assert graph.passes[-1] not in result.detail
    token = next(r for r in graph.requests if r.operation == "token")
    assert token.body == {
        "client_id": CLIENT_ID,
        "scope": "https://graph.microsoft.com/.default",
        "client_secret": CLIENT_SECRET,
        "grant_type": "client_credentials",
    }
    assert token.path == f"/{TENANT}/oauth2/v2.0/token"
    read_back, create = graph.calls()
    assert (read_back.method, read_back.path) == ("GET", f"/v1.0/users/{ALICE_ID}")
    assert (create.method, create.path) == (
        "POST",
        f"/v1.0/users/{ALICE_ID}/authentication/temporaryAccessPassMethods",
    )
    assert create.body == {"lifetimeInMinutes": 60, "isUsableOnce": True}
    assert create.content_type == "application/json"
    assert create.authorization.startswith("Bearer ")


async def test_reset_mfa_removes_every_method_but_the_password(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    alice = graph.users[ALICE_ID]
    alice.methods += [
        method("phoneAuthenticationMethod", MOBILE, phoneType="mobile"),
        method("phoneAuthenticationMethod", ALTERNATE_MOBILE, phoneType="alternateMobile"),
        method("microsoftAuthenticatorAuthenticationMethod", displayName="Alice's phone"),
        method("fido2AuthenticationMethod", displayName="Red key"),
        method("softwareOathAuthenticationMethod"),
        method("emailAuthenticationMethod", emailAddress="alice@example.net"),
        method("temporaryAccessPassAuthenticationMethod"),
        method("windowsHelloForBusinessAuthenticationMethod"),
        method("platformCredentialAuthenticationMethod"),
        method("externalAuthenticationMethod", configurationId="ext-1"),
    ]

    result = await run(entra, Action.RESET_MFA)

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is None
    assert [m["id"] for m in alice.methods] == [PASSWORD_METHOD_ID]
    deletes = graph.calls("DELETE")
    assert len(deletes) == 10
    assert deletes[-2].path.endswith(f"/phoneMethods/{ALTERNATE_MOBILE}")
    assert deletes[-1].path.endswith(f"/phoneMethods/{MOBILE}")
    assert any(
        d.path.endswith("/$ref") and "externalAuthenticationMethods" in d.path for d in deletes
    )
    assert all(d.body is None for d in deletes)
    assert not any(PASSWORD_METHOD_ID in d.path for d in deletes)
    assert "except the password" in result.detail


async def test_reset_mfa_reports_a_method_it_cannot_remove_instead_of_claiming_success(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.users[ALICE_ID].methods += [
        method("qrCodePinAuthenticationMethod"),
        method("fido2AuthenticationMethod"),
    ]

    result = await run(entra, Action.RESET_MFA)

    assert result.outcome is Outcome.FAILED
    assert "only in part" in result.detail
    assert "Removed: FIDO2 security key" in result.detail
    assert "qrCodePinAuthenticationMethod" in result.detail


async def test_reset_mfa_with_nothing_registered_completes_without_deleting(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    result = await run(entra, Action.RESET_MFA)

    assert result.outcome is Outcome.COMPLETED
    assert graph.calls("DELETE") == []


async def test_reset_password_sets_a_generated_temporary_password_to_change_at_sign_in(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    result = await run(entra, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    password = result.secret.get_secret_value()
    assert len(password) == 20
    (patch,) = graph.calls("PATCH")
    assert patch.path == f"/v1.0/users/{ALICE_ID}"
    assert patch.body == {
        "passwordProfile": {"forceChangePasswordNextSignIn": True, "password": password}
    }
    assert graph.users[ALICE_ID].password == password
    assert graph.users[ALICE_ID].force_change is True
    second = await run(entra, Action.RESET_PASSWORD)
    assert second.secret is not None and second.secret.get_secret_value() != password


async def test_reset_password_method_follows_the_long_running_operation(
    make: Make, graph: GraphStandIn, waits: Waits
) -> None:
    entra = make(password_reset="password-method")

    result = await run(entra, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    assert len(graph.calls("GET", "/passwordMethods$")) == 1
    (reset,) = graph.calls("POST")
    assert reset.path == (
        f"/v1.0/users/{ALICE_ID}/authentication/methods/{PASSWORD_METHOD_ID}/resetPassword"
    )
    assert reset.body == {"newPassword": result.secret.get_secret_value()}
    polls = graph.calls("GET", "/authentication/operations/")
    assert len(polls) == 2
    assert polls[0].query == {"aadgdc": "DUB02P", "aadgsu": "ssprprod-a"}
    assert waits.seconds[0] == 1.0, "the 202's Retry-After sets the first wait"


async def test_reset_password_method_that_fails_is_failed_in_graphs_words(
    make: Make, graph: GraphStandIn
) -> None:
    entra = make(password_reset="password-method")
    graph.operation_statuses = ["running", "failed"]
    graph.operation_status_detail = "The password was rejected by on-premises policy."

    result = await run(entra, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.FAILED
    assert result.secret is None
    assert "rejected by on-premises policy" in result.detail


async def test_reset_password_method_that_never_finishes_is_unknown(
    make: Make, graph: GraphStandIn
) -> None:
    entra = make(password_reset="password-method", password_reset_checks=3)
    graph.operation_statuses = ["running"]

    result = await run(entra, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.UNKNOWN
    assert len(graph.calls("GET", "/authentication/operations/")) == 3
    # It may still happen: the owner gets the password it would set, said to be so (dropped,
    # a reset that went through would lock them out with a password nobody knows).
    (reset,) = graph.calls("POST", "/resetPassword")
    assert result.secret is not None
    assert reset.body == {"newPassword": result.secret.get_secret_value()}
    assert result.secret_label == (
        "Entra temporary password (it works only if the reset went through)"
    )


async def test_a_password_reset_whose_answer_is_lost_hands_the_password_over(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.hang("PATCH", f"/users/{ALICE_ID}$")

    result = await run(entra, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.UNKNOWN
    assert "it is unclear whether Entra did reset the password" in result.detail
    (patch,) = graph.calls("PATCH")
    assert result.secret is not None
    assert patch.body["passwordProfile"]["password"] == result.secret.get_secret_value()
    assert result.secret.get_secret_value() not in result.detail


async def test_reset_password_progress_outside_graph_is_not_followed(
    make: Make, graph: GraphStandIn
) -> None:
    entra = make(password_reset="password-method")
    graph.operation_location_base = "https://collector.example.net/v1.0"

    result = await run(entra, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.UNKNOWN
    assert "outside the configured Graph URL" in result.detail
    assert graph.calls("GET", "/authentication/operations/") == []


async def test_revoke_sessions_calls_revoke_sign_in_sessions(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    result = await run(entra, Action.REVOKE_SESSIONS)

    assert result.outcome is Outcome.COMPLETED, result.detail
    (revoke,) = graph.calls("POST")
    assert revoke.path == f"/v1.0/users/{ALICE_ID}/revokeSignInSessions"
    assert revoke.body is None
    assert graph.users[ALICE_ID].sessions_revoked == 1


# ---- refusals, timeouts, throttling ----------------------------------------------------------


async def test_provider_refusal_is_failed_with_graphs_message(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.fail(
        "POST",
        "/revokeSignInSessions$",
        403,
        {
            "error": {
                "code": "Authorization_RequestDenied",
                "message": "Insufficient privileges to complete the operation.",
            }
        },
    )

    result = await run(entra, Action.REVOKE_SESSIONS)

    assert result.outcome is Outcome.FAILED
    assert "Insufficient privileges to complete the operation." in result.detail
    assert "Authorization_RequestDenied" in result.detail
    assert graph.users[ALICE_ID].sessions_revoked == 0


async def test_a_password_graph_refuses_is_failed_and_never_handed_out(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.min_password_length = 64

    result = await run(entra, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.FAILED
    assert result.secret is None
    assert "does not comply with password complexity requirements" in result.detail
    (patch,) = graph.calls("PATCH")
    assert patch.body["passwordProfile"]["password"] not in result.detail


async def test_a_wrong_client_secret_fails_before_anything_reaches_graph(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.client_secret = "another-secret"

    result = await run(entra, Action.REVOKE_SESSIONS)

    assert result.outcome is Outcome.FAILED
    assert "AADSTS7000215" in result.detail
    assert "Trace ID" not in result.detail
    assert CLIENT_SECRET not in result.detail
    assert graph.calls() == []


async def test_a_change_that_times_out_is_unknown_and_not_sent_twice(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.hang("POST", "/revokeSignInSessions$")

    result = await run(entra, Action.REVOKE_SESSIONS)

    assert result.outcome is Outcome.UNKNOWN
    assert "unclear" in result.detail
    assert len(graph.calls("POST")) == 1


async def test_a_read_that_times_out_before_any_change_is_failed_not_unknown(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.hang("GET", "/authentication/methods$")

    result = await run(entra, Action.RESET_MFA)

    assert result.outcome is Outcome.FAILED
    assert "nothing was changed" in result.detail
    assert graph.calls("DELETE") == []


async def test_a_timeout_half_way_through_an_mfa_reset_is_unknown_and_says_what_went(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.users[ALICE_ID].methods += [
        method("fido2AuthenticationMethod"),
        method("phoneAuthenticationMethod", MOBILE, phoneType="mobile"),
    ]
    graph.hang("DELETE", "/phoneMethods/")

    result = await run(entra, Action.RESET_MFA)

    assert result.outcome is Outcome.UNKNOWN
    assert "FIDO2 security key" in result.detail
    assert len(graph.calls("DELETE", "/phoneMethods/")) == 1


async def test_throttling_waits_for_retry_after_then_succeeds(
    entra: EntraConnector, graph: GraphStandIn, waits: Waits
) -> None:
    graph.fail(
        "POST",
        "/temporaryAccessPassMethods$",
        429,
        {"error": {"code": "TooManyRequests", "message": "Please retry again later."}},
        headers={"Retry-After": "7"},
    )

    result = await run(entra, Action.TEMPORARY_ACCESS)

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert waits.seconds == [7.0]
    assert len(graph.calls("POST")) == 2


async def test_throttling_longer_than_we_wait_fails_without_retrying(
    entra: EntraConnector, graph: GraphStandIn, waits: Waits
) -> None:
    graph.fail(
        "POST",
        "/revokeSignInSessions$",
        429,
        {"error": {"code": "TooManyRequests", "message": "Please retry again later."}},
        headers={"Retry-After": "3600"},
    )

    result = await run(entra, Action.REVOKE_SESSIONS)

    assert result.outcome is Outcome.FAILED
    assert "nothing changed" in result.detail
    assert waits.seconds == []
    assert len(graph.calls("POST")) == 1


async def test_an_expired_token_is_renewed_once(entra: EntraConnector, graph: GraphStandIn) -> None:
    assert (await run(entra, Action.REVOKE_SESSIONS)).outcome is Outcome.COMPLETED
    graph.tokens.clear()

    result = await run(entra, Action.REVOKE_SESSIONS)

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert graph.tokens_issued == 2


async def test_a_target_whose_address_changed_is_not_touched(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.users[ALICE_ID].mail = graph.users[ALICE_ID].upn = "mallory@contoso.com"

    result = await run(entra, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.FAILED
    assert "no longer has the address" in result.detail
    assert graph.calls("PATCH") == []


# ---- the directory ---------------------------------------------------------------------------


async def test_find_by_email_returns_groups_and_directory_roles_across_pages(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.page_size = 2
    graph.users[ALICE_ID].member_of.append(directory_role("Global Administrator"))

    (alice,) = await entra.find_by_email("alice@contoso.com")

    assert alice.id == ALICE_ID
    assert alice.email == "alice@contoso.com"
    assert HELPDESK_GROUP in alice.groups
    assert "Helpdesk" not in alice.groups, "display names only with group_key: name"
    assert "role:Global Administrator" in alice.groups
    assert "privileged" in alice.tags
    search = graph.calls("GET", "^/v1.0/users$")[0]
    assert search.query["$filter"] == (
        "mail eq 'alice@contoso.com' or userPrincipalName eq 'alice@contoso.com'"
    )
    assert len(graph.calls("GET", "/transitiveMemberOf$")) == 2


async def test_group_names_when_the_policy_uses_names(make: Make, graph: GraphStandIn) -> None:
    entra = make(group_key="name")

    alice = await entra.get(ALICE_ID)

    assert alice is not None
    assert {"Staff", "Helpdesk"} <= alice.groups
    assert HELPDESK_GROUP not in alice.groups


async def test_find_by_email_matches_the_upn_escapes_quotes_and_keeps_every_match(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.add_user(GraphUser(id="b-1", display_name="Ann O'Brien", upn="ann.o'brien@contoso.com"))
    graph.add_user(
        GraphUser(
            id="b-2",
            display_name="Ann (guest)",
            upn="ann_partner.example#EXT#@contoso.onmicrosoft.com",
            mail="ann.o'brien@contoso.com",
            user_type="Guest",
            enabled=False,
        )
    )

    found = await entra.find_by_email("ann.o'brien@contoso.com")

    assert {p.id for p in found} == {"b-1", "b-2"}
    guest = next(p for p in found if p.id == "b-2")
    assert "guest" in guest.tags and guest.disabled
    assert (
        graph.calls("GET", "^/v1.0/users$")[0]
        .query["$filter"]
        .startswith("mail eq 'ann.o''brien@contoso.com'")
    )
    assert await entra.find_by_email("not an address") == []


async def test_get_unknown_is_none_and_search_skips_groups(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    assert await entra.get("00000000-0000-0000-0000-000000000000") is None
    assert await entra.find_nhi("billing-api") is None

    (alice,) = await entra.search("Ali", limit=5)

    assert alice.id == ALICE_ID and alice.groups == frozenset()
    query = graph.calls("GET", "^/v1.0/users$")[0].query
    assert query["$top"] == "5"
    assert "startswith(displayName,'Ali')" in query["$filter"]


async def test_mobile_phone_is_not_a_phone_of_record_unless_the_operator_locked_it(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    """People may edit their own mobilePhone by default: a code texted there proves nothing."""
    by_id = await entra.get(ALICE_ID)
    (by_email,) = await entra.find_by_email("alice@contoso.com")
    (picked,) = await entra.search("Ali")

    assert graph.users[ALICE_ID].mobile_phone == ALICE_MOBILE
    assert by_id is not None
    assert [by_id.phone, by_email.phone, picked.phone] == [None] * 3
    assert not [line for line in await entra.check() if "phone of record" in line.what]


async def test_mobile_phone_is_asked_for_and_becomes_the_phone_of_record(
    make: Make, graph: GraphStandIn
) -> None:
    entra = make(phone_of_record=True)
    by_id = await entra.get(ALICE_ID)
    (by_email,) = await entra.find_by_email("alice@contoso.com")
    (picked,) = await entra.search("Ali")

    assert by_id is not None
    assert by_id.phone == by_email.phone == picked.phone == ALICE_PHONE
    assert ALICE_PHONE not in repr(by_id)
    user_reads = graph.calls("GET", "^/v1.0/users(/[^/]+)?$")
    assert len(user_reads) == 3
    for call in user_reads:
        assert "mobilePhone" in call.query["$select"].split(",")
    (reminder,) = [line for line in await entra.check() if "phone of record" in line.what]
    assert reminder.status is CheckStatus.NOTE and "must not be allowed" in reminder.detail


@pytest.mark.parametrize(
    "mobile",
    ["425 555 0109", "+1 425 555 0109 x12", "+1 425 555 0109, +1 425 555 0110", "", None],
)
async def test_a_mobile_phone_that_is_not_plain_e164_gives_no_phone_of_record(
    make: Make, graph: GraphStandIn, mobile: str | None
) -> None:
    graph.users[ALICE_ID].mobile_phone = mobile

    alice = await make(phone_of_record=True).get(ALICE_ID)

    assert alice is not None and alice.phone is None


async def test_a_phone_registered_for_mfa_is_not_a_phone_of_record(
    make: Make, graph: GraphStandIn
) -> None:
    """The phone authentication method is the person's own registration: never read."""
    graph.users[ALICE_ID].mobile_phone = None
    graph.users[ALICE_ID].methods.append(
        method(
            "phoneAuthenticationMethod",
            MOBILE,
            phoneNumber="+1 4255550123",
            phoneType="mobile",
            smsSignInState="notAllowedByPolicy",
        )
    )

    alice = await make(phone_of_record=True).get(ALICE_ID)

    assert alice is not None and alice.phone is None
    assert graph.calls("GET", "/authentication/") == []


async def test_directory_trouble_is_unavailable_never_a_partial_answer(
    entra: EntraConnector, graph: GraphStandIn
) -> None:
    graph.page_size = 1
    graph.fail(
        "GET",
        "/transitiveMemberOf$",
        403,
        {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges."}},
    )
    with pytest.raises(Unavailable, match="Insufficient privileges"):
        await entra.find_by_email("alice@contoso.com")

    graph.hang("GET", "^/v1.0/users$")
    with pytest.raises(Unavailable, match="could not be read"):
        await entra.search("Ali")


# ---- members: who may approve ------------------------------------------------------------------

SECURITY_GROUP = "3f1e5a2b-0000-4000-8000-00000000a002"
LEADS_GROUP = "3f1e5a2b-0000-4000-8000-00000000a003"
UNKNOWN_GROUP = "3f1e5a2b-0000-4000-8000-00000000afff"
BOB_ID = "7fb0c1d2-0000-4000-8000-0000000000b0"
CAROL_ID = "7fb0c1d2-0000-4000-8000-0000000000c0"
DAVE_ID = "7fb0c1d2-0000-4000-8000-0000000000d0"
MEMBERS = re.escape("/transitiveMembers/microsoft.graph.user") + "$"


@pytest.fixture
def teams(graph: GraphStandIn) -> GraphStandIn:
    """Helpdesk: Alice, Carol. Security: Bob, Carol (disabled: returned all the same), and the
    nested Security Leads group with Dave."""
    for user_id, name in ((BOB_ID, "Bob Brown"), (CAROL_ID, "Carol Chen"), (DAVE_ID, "Dave Diaz")):
        first = name.split()[0].lower()
        graph.add_user(
            GraphUser(id=user_id, display_name=name, upn=f"{first}@contoso.com", mail=None)
        )
    graph.users[CAROL_ID].enabled = False
    graph.add_group(group("Helpdesk", HELPDESK_GROUP), [ALICE_ID, CAROL_ID])
    graph.add_group(group("Security Leads", LEADS_GROUP), [DAVE_ID])
    graph.add_group(group("Security", SECURITY_GROUP), [BOB_ID, CAROL_ID, LEADS_GROUP])
    return graph


async def test_members_of_two_groups_each_once_with_every_group_they_are_in(
    entra: EntraConnector, teams: GraphStandIn
) -> None:
    found = await entra.members([HELPDESK_GROUP, SECURITY_GROUP])

    by_id = {p.id: p for p in found}
    assert len(found) == len(by_id) == 4
    assert by_id[CAROL_ID].groups == {HELPDESK_GROUP, SECURITY_GROUP}
    assert by_id[CAROL_ID].disabled, "disabled people are returned; callers decide"
    assert by_id[ALICE_ID].groups == {HELPDESK_GROUP}
    assert by_id[BOB_ID].email == "bob@contoso.com", "the UPN when there is no mail"
    assert by_id[DAVE_ID].groups == {SECURITY_GROUP}, "a nested group's member (transitive)"
    assert by_id[ALICE_ID].phone is None, "mobilePhone only with phone_of_record"
    calls = teams.calls("GET", MEMBERS)
    assert [c.path for c in calls] == [
        f"/v1.0/groups/{HELPDESK_GROUP}/transitiveMembers/microsoft.graph.user",
        f"/v1.0/groups/{SECURITY_GROUP}/transitiveMembers/microsoft.graph.user",
    ]
    assert calls[0].query == {
        "$select": "id,displayName,mail,userPrincipalName,accountEnabled,userType,mobilePhone",
        "$top": "500",
    }
    assert teams.calls("GET", "/transitiveMemberOf$") == [], "no per-person calls"


async def test_members_follow_every_page_and_respect_phone_of_record(
    make: Make, teams: GraphStandIn
) -> None:
    teams.page_size = 1

    found = await make(phone_of_record=True).members([SECURITY_GROUP])

    assert {p.id for p in found} == {BOB_ID, CAROL_ID, DAVE_ID}
    calls = teams.calls("GET", MEMBERS)
    assert len(calls) == 3
    assert [c.query.get("$skiptoken") for c in calls] == [None, "1", "2"]
    assert all(c.query["$select"] == calls[0].query["$select"] for c in calls)
    (alice,) = await make(phone_of_record=True).members([HELPDESK_GROUP], limit=1)
    assert alice.phone == ALICE_PHONE


async def test_members_stop_at_the_limit(entra: EntraConnector, teams: GraphStandIn) -> None:
    teams.page_size = 1

    found = await entra.members([HELPDESK_GROUP, SECURITY_GROUP], limit=2)

    assert [p.id for p in found] == [ALICE_ID, CAROL_ID]
    calls = teams.calls("GET", MEMBERS)
    assert len(calls) == 2 and calls[0].query["$top"] == "2"
    assert all(SECURITY_GROUP not in c.path for c in calls), "nothing read past the limit"
    assert await entra.members([HELPDESK_GROUP], limit=0) == []


async def test_a_group_the_directory_does_not_know_has_nobody(
    entra: EntraConnector, teams: GraphStandIn
) -> None:
    assert await entra.members([UNKNOWN_GROUP]) == []
    assert await entra.members(["Helpdesk", "role:Global Administrator", ""]) == []
    assert await entra.members([]) == []

    assert len(teams.calls("GET", MEMBERS)) == 1, "only an object id is asked about"
    assert {p.id for p in await entra.members([UNKNOWN_GROUP, HELPDESK_GROUP])} == {
        ALICE_ID,
        CAROL_ID,
    }


@pytest.mark.parametrize(
    ("status", "code", "times"),
    [(403, "Authorization_RequestDenied", 1), (500, "UnknownError", 3)],
)
async def test_a_refused_member_listing_is_unavailable_never_nobody(
    entra: EntraConnector, teams: GraphStandIn, status: int, code: str, times: int
) -> None:
    teams.page_size = 1
    teams.fail(
        "GET",
        MEMBERS,
        status,
        {"error": {"code": code, "message": "Insufficient privileges to complete the operation."}},
        times=times,
    )
    with pytest.raises(Unavailable, match="Insufficient privileges"):
        await entra.members([HELPDESK_GROUP])


async def test_a_refusal_on_a_later_page_is_unavailable_never_a_partial_answer(
    entra: EntraConnector, teams: GraphStandIn
) -> None:
    teams.page_size = 1
    teams.fail("GET", MEMBERS, 200)  # the first page answers, with no body at all
    with pytest.raises(Unavailable, match="no list"):
        await entra.members([SECURITY_GROUP])

    outside = {"value": [], "@odata.nextLink": "https://graph.example.net/v1.0/groups?x=1"}
    teams.fail("GET", MEMBERS, 200, outside)
    with pytest.raises(Unavailable, match="outside Graph"):
        await entra.members([SECURITY_GROUP])
    assert all(c.path.startswith("/v1.0/") for c in teams.calls())


async def test_members_by_display_name_are_resolved_exactly(
    make: Make, teams: GraphStandIn
) -> None:
    entra = make(group_key="name")
    teams.add_group(group("helpdesk"), [BOB_ID])  # another case: not the group named Helpdesk
    teams.add_group(group("Ops O'Neil"), [DAVE_ID])

    found = await entra.members(["Helpdesk", "Ops O'Neil", "No Such Group"])

    assert {p.id: p.groups for p in found} == {
        ALICE_ID: {"Helpdesk"},
        CAROL_ID: {"Helpdesk"},
        DAVE_ID: {"Ops O'Neil"},
    }
    lookups = [c.query["$filter"] for c in teams.calls("GET", "^/v1.0/groups$")]
    assert lookups == [
        "displayName eq 'Helpdesk'",
        "displayName eq 'Ops O''Neil'",
        "displayName eq 'No Such Group'",
    ]
    assert len(teams.calls("GET", MEMBERS)) == 2


async def test_a_display_name_several_groups_share_is_unavailable(
    make: Make, teams: GraphStandIn
) -> None:
    """Display names are not unique (users may create groups): which one is meant is unknown,
    so the operator hears it rather than seeing approvers vanish or appear."""
    entra = make(group_key="name")
    teams.add_group(group("Helpdesk"), [BOB_ID])

    with pytest.raises(Unavailable, match=r"2 groups named 'Helpdesk'.*group_key: id"):
        await entra.members(["Security", "Helpdesk"])

    assert teams.calls("GET", MEMBERS)[-1].path.startswith(f"/v1.0/groups/{SECURITY_GROUP}/")


# ---- secrets never reach logs ----------------------------------------------------------------


async def test_no_secret_reaches_any_log(
    make: Make,
    graph: GraphStandIn,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    profile = make()
    method_reset = make(password_reset="password-method")
    graph.users[ALICE_ID].methods.append(method("fido2AuthenticationMethod"))
    graph.fail("POST", "/temporaryAccessPassMethods$", 429, None, {"Retry-After": "1"})
    with structlog.testing.capture_logs() as events:
        results = [
            await run(profile, Action.TEMPORARY_ACCESS),
            await run(profile, Action.RESET_PASSWORD),
            await run(method_reset, Action.RESET_PASSWORD),
            await run(profile, Action.RESET_MFA),
            await run(profile, Action.REVOKE_SESSIONS),
        ]
        graph.min_password_length = 64
        results.append(await run(profile, Action.RESET_PASSWORD))

    secrets_ = [CLIENT_SECRET, *graph.tokens, *graph.passes]
    secrets_ += [r.secret.get_secret_value() for r in results if r.secret is not None]
    secrets_ += [str(r.body["passwordProfile"]["password"]) for r in graph.calls("PATCH")]
    assert len(secrets_) >= 6
    logged = caplog.text + repr(events) + "".join(capsys.readouterr())
    logged += "".join(r.detail + repr(r) for r in results)
    assert events, "the connector logs its changes"
    for secret in secrets_:
        assert secret not in logged
    assert re.search(r"entra_change", repr(events))
