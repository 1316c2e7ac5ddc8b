"""The Google Workspace connector against a local Admin SDK stand-in that checks every request
against Google's discovery document for admin:directory_v1 (see google_standin.py)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.connectors.base import ConnectorConfigError
from app.connectors.google import (
    SCOPE_GROUP_READONLY,
    SCOPE_USER_READONLY,
    SCOPE_USER_SECURITY,
    GoogleConfig,
    GoogleConnector,
    build,
)
from app.domain.errors import Unavailable
from app.domain.models import Action, Plan, Principal, PrincipalKind, Request
from app.ports import ExecutionResult, Outcome
from tests.connectors_cloud.google_standin import GoogleStandIn, WorkspaceUser, workspace_group
from tests.connectors_cloud.local_server import Waits

SERVICE_ACCOUNT = "twokey@twokey-test.iam.gserviceaccount.com"
KEY_ID = "5f1c0ffee0ddba11ab1ec0de5eed5a1tfeed0001"
ADMIN = "twokey-admin@example.com"
ALICE_ID = "104857600000000000001"
ALICE = Principal(id=ALICE_ID, display_name="Alice Adams", email="alice@example.com")
ALICE_MOBILE = "+44 7700 900123"
"""Alice's mobile as her admin typed it into her profile; her phone of record is its E.164."""
ALICE_PHONE = "+447700900123"


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key_pem(private_key: rsa.RSAPrivateKey) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def key_json(key_pem: str) -> str:
    """A service account key file as the Cloud console hands it out."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "twokey-test",
            "private_key_id": KEY_ID,
            "private_key": key_pem,
            "client_email": SERVICE_ACCOUNT,
            "client_id": "109876543210987654321",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


@pytest.fixture
async def workspace(private_key: rsa.RSAPrivateKey) -> AsyncIterator[GoogleStandIn]:
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    standin = GoogleStandIn(SERVICE_ACCOUNT, public.decode(), KEY_ID)
    standin.admins.add(ADMIN)
    standin.add_user(
        WorkspaceUser(
            id=ALICE_ID,
            primary_email="alice@example.com",
            full_name="Alice Adams",
            aliases=["a.adams@example.com"],
            phones=[
                {"value": "+44 20 7946 0000", "type": "work"},
                {"value": ALICE_MOBILE, "type": "mobile", "primary": True},
            ],
            recovery_phone="+447700900999",
            groups=[
                workspace_group("staff@example.com", "Staff"),
                workspace_group("helpdesk@example.com", "Helpdesk"),
            ],
        )
    )
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()
    assert standin.violations == [], "requests the discovery document does not allow"


def settings(workspace: GoogleStandIn, **overrides: object) -> dict[str, object]:
    return {
        "type": "google",
        "admin_subject": ADMIN,
        "service_account_key_env": "TEST_GOOGLE_SA_KEY",
        "token_url": workspace.token_url,
        "api_url": workspace.origin,
        "timeout": 0.5,
        **overrides,
    }


Make = Callable[..., GoogleConnector]


@pytest.fixture
async def make(
    workspace: GoogleStandIn, waits: Waits, key_json: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Make]:
    monkeypatch.setenv("TEST_GOOGLE_SA_KEY", key_json)
    made: list[GoogleConnector] = []

    def factory(**overrides: object) -> GoogleConnector:
        made.append(build(settings(workspace, **overrides), sleep=waits))
        return made[-1]

    yield factory
    for connector in made:
        await connector.aclose()


@pytest.fixture
def google(make: Make) -> GoogleConnector:
    return make()


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
    connector: GoogleConnector, action: Action, target: Principal = ALICE
) -> ExecutionResult:
    return await connector.execute(action, target, request_for(action, target))


# ---- configuration and the stand-in itself ------------------------------------------------------


def test_settings_and_key_are_checked_without_echoing_the_key(
    workspace: GoogleStandIn, key_json: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_GOOGLE_SA_KEY", raising=False)
    with pytest.raises(ConnectorConfigError, match="TEST_GOOGLE_SA_KEY is not set"):
        build(settings(workspace))
    broken = json.loads(key_json) | {"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n"}
    monkeypatch.setenv("TEST_GOOGLE_SA_KEY", json.dumps(broken))
    with pytest.raises(ConnectorConfigError, match="service account JSON key") as refused:
        build(settings(workspace))
    assert "nope" not in str(refused.value)
    monkeypatch.setenv("TEST_GOOGLE_SA_KEY", key_json)
    with pytest.raises(ConnectorConfigError, match="Google Workspace cannot perform unlock"):
        build(settings(workspace, actions=["unlock"]))
    with pytest.raises(ConnectorConfigError, match="customer"):
        build(settings(workspace, customer="acme corp"))
    with pytest.raises(ConnectorConfigError, match="plain http"):
        build(settings(workspace, api_url="http://admin.example.com"))


def test_only_the_scopes_the_actions_need_are_asked_for() -> None:
    config = GoogleConfig.model_validate(
        {
            "type": "google",
            "admin_subject": ADMIN,
            "service_account_key_env": "K",
            "actions": ["revoke-sessions"],
        }
    )
    assert set(config.scopes) == {SCOPE_USER_READONLY, SCOPE_GROUP_READONLY, SCOPE_USER_SECURITY}


async def test_the_stand_in_refuses_what_the_discovery_document_does_not_allow(
    workspace: GoogleStandIn,
) -> None:
    async with httpx.AsyncClient(base_url=workspace.origin) as client:
        await client.put(
            f"/admin/directory/v1/users/{ALICE_ID}", json={"passwordHash": "x", "isAdmin": True}
        )
        await client.get("/admin/directory/v1/groups", params={"userKey": "a", "maxResults": 0})
        await client.post(f"/admin/directory/v1/users/{ALICE_ID}/resetPassword")
    found = list(workspace.violations)
    workspace.violations.clear()
    assert any("'passwordHash' is not a property" in v for v in found)
    assert any("isAdmin is read-only" in v for v in found)
    assert any("maxResults=0 is below the minimum 1" in v for v in found)
    assert any("is no method of admin:directory_v1" in v for v in found)


# ---- the three changes -------------------------------------------------------------------------


async def test_reset_password_sends_a_sha1_hash_and_forces_a_change_at_next_login(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    result = await run(google, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    password = result.secret.get_secret_value()
    assert len(password) == 20
    digest = hashlib.sha1(password.encode()).hexdigest()
    read_back, update = workspace.calls()
    assert read_back.method_id == "directory.users.get"
    assert update.method_id == "directory.users.update"
    assert (update.http_method, update.path) == ("PUT", f"/admin/directory/v1/users/{ALICE_ID}")
    assert update.body == {
        "changePasswordAtNextLogin": True,
        "password": digest,
        "hashFunction": "SHA-1",
    }
    alice = workspace.users[ALICE_ID]
    assert (alice.password, alice.hash_function) == (digest, "SHA-1")
    assert alice.change_password_at_next_login
    (token,) = workspace.token_requests
    assert token["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"


async def test_reset_password_in_clear_text_when_configured(
    make: Make, workspace: GoogleStandIn
) -> None:
    google = make(send_password_as="clear-text")

    result = await run(google, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    (update,) = workspace.calls("directory.users.update")
    assert update.body == {
        "changePasswordAtNextLogin": True,
        "password": result.secret.get_secret_value(),
    }


@pytest.mark.parametrize("status", [400, 500])
@pytest.mark.parametrize("mode", ["clear-text", "sha1-hash"])
async def test_a_refusal_quoting_the_password_sent_never_passes_it_on(
    make: Make, workspace: GoogleStandIn, mode: str, status: int
) -> None:
    """The words of a refusal reach the agent, the security channel and the audit trail: what
    twokey sent as the password (or its hash) is cut out of them."""
    workspace.quote_refused_passwords = status
    result = await run(make(send_password_as=mode), Action.RESET_PASSWORD)

    assert result.outcome is Outcome.FAILED
    (update,) = workspace.calls("directory.users.update")
    assert update.body["password"] not in result.detail
    assert f"Invalid Password: [hidden] (invalid, HTTP {status})" in result.detail


async def test_revoke_sessions_signs_the_user_out(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    result = await run(google, Action.REVOKE_SESSIONS)

    assert result.outcome is Outcome.COMPLETED, result.detail
    (sign_out,) = workspace.calls("directory.users.signOut")
    assert (sign_out.http_method, sign_out.path) == (
        "POST",
        f"/admin/directory/v1/users/{ALICE_ID}/signOut",
    )
    assert sign_out.body is None
    assert workspace.users[ALICE_ID].signed_out == 1


async def test_reset_mfa_turns_off_2sv_and_hands_over_fresh_backup_codes(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    result = await run(google, Action.RESET_MFA)

    assert result.outcome is Outcome.COMPLETED, result.detail
    alice = workspace.users[ALICE_ID]
    assert not alice.enrolled_2sv
    assert result.secret is not None
    assert result.secret.get_secret_value().split("\n") == alice.backup_codes
    assert len(alice.backup_codes) == 10
    assert [c.method_id for c in workspace.calls()] == [
        "directory.users.get",
        "directory.twoStepVerification.turnOff",
        "directory.verificationCodes.generate",
        "directory.verificationCodes.list",
    ]
    assert all(code not in result.detail for code in alice.backup_codes)


async def test_reset_mfa_when_2sv_is_already_off_still_renews_the_codes(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    workspace.users[ALICE_ID].enrolled_2sv = False

    result = await run(google, Action.RESET_MFA)

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert "already off" in result.detail
    assert workspace.calls("directory.twoStepVerification.turnOff") == []
    assert result.secret is not None


async def test_reset_mfa_that_stops_half_way_says_what_happened(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    workspace.fail(
        "directory.verificationCodes.generate",
        403,
        {
            "error": {
                "code": 403,
                "message": "Not Authorized to access this resource/api",
                "errors": [{"reason": "forbidden", "domain": "global", "message": "x"}],
            }
        },
    )

    result = await run(google, Action.RESET_MFA)

    assert result.outcome is Outcome.FAILED
    assert result.secret is None
    assert "turned off 2-Step Verification" in result.detail
    assert "Not Authorized to access this resource/api" in result.detail


# ---- refusals, timeouts, throttling ----------------------------------------------------------


async def test_provider_refusal_is_failed_with_googles_message(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    workspace.fail(
        "directory.users.signOut",
        403,
        {
            "error": {
                "code": 403,
                "message": "Not Authorized to access this resource/api",
                "errors": [
                    {
                        "message": "Not Authorized to access this resource/api",
                        "domain": "global",
                        "reason": "forbidden",
                    }
                ],
            }
        },
    )

    result = await run(google, Action.REVOKE_SESSIONS)

    assert result.outcome is Outcome.FAILED
    assert "Not Authorized to access this resource/api (forbidden, HTTP 403)" in result.detail
    assert workspace.users[ALICE_ID].signed_out == 0


async def test_an_admin_without_delegation_fails_before_anything_is_called(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    workspace.admins.clear()

    result = await run(google, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.FAILED
    assert f"act as {ADMIN}" in result.detail
    assert "Client is unauthorized to retrieve access tokens" in result.detail
    assert workspace.calls() == []


async def test_a_change_that_times_out_is_unknown_and_not_sent_twice(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    workspace.hang("directory.users.signOut")

    result = await run(google, Action.REVOKE_SESSIONS)

    assert result.outcome is Outcome.UNKNOWN
    assert "unclear" in result.detail
    assert len(workspace.calls("directory.users.signOut")) == 1


async def test_throttling_waits_for_retry_after_then_succeeds(
    google: GoogleConnector, workspace: GoogleStandIn, waits: Waits
) -> None:
    workspace.fail(
        "directory.users.update",
        429,
        {
            "error": {
                "code": 429,
                "message": "Quota exceeded for quota metric 'Queries'.",
                "errors": [{"reason": "rateLimitExceeded", "domain": "usageLimits"}],
                "status": "RESOURCE_EXHAUSTED",
            }
        },
        headers={"Retry-After": "5"},
    )

    result = await run(google, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert waits.seconds == [5.0]
    assert len(workspace.calls("directory.users.update")) == 2


async def test_a_403_rate_limit_is_failed_as_nothing_changed(
    google: GoogleConnector, workspace: GoogleStandIn, waits: Waits
) -> None:
    workspace.fail(
        "directory.users.signOut",
        403,
        {
            "error": {
                "code": 403,
                "message": "User Rate Limit Exceeded",
                "errors": [{"reason": "userRateLimitExceeded", "domain": "usageLimits"}],
            }
        },
    )

    result = await run(google, Action.REVOKE_SESSIONS)

    assert result.outcome is Outcome.FAILED
    assert "rate limited, nothing changed" in result.detail
    assert len(workspace.calls("directory.users.signOut")) == 1


async def test_a_target_whose_address_changed_is_not_touched(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    alice = workspace.users[ALICE_ID]
    alice.primary_email, alice.aliases = "mallory@example.com", []

    result = await run(google, Action.RESET_PASSWORD)

    assert result.outcome is Outcome.FAILED
    assert "no longer has the address" in result.detail
    assert workspace.calls("directory.users.update") == []


# ---- the directory ---------------------------------------------------------------------------


async def test_find_by_email_follows_aliases_and_reads_every_page_of_groups(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    workspace.group_page_size = 1
    workspace.users[ALICE_ID].is_delegated_admin = True

    (alice,) = await google.find_by_email("A.Adams@example.com")

    assert alice.id == ALICE_ID and alice.email == "alice@example.com"
    assert alice.groups == {"staff@example.com", "helpdesk@example.com"}
    assert "privileged" in alice.tags
    listings = workspace.calls("directory.groups.list")
    assert len(listings) == 2
    assert listings[0].query == {"userKey": ALICE_ID, "maxResults": "200"}
    assert listings[1].query["pageToken"] == "1"
    assert await google.find_by_email("nobody@example.com") == []
    assert await google.find_by_email("../users?x@example.com") == []


async def test_group_names_when_the_policy_uses_names(make: Make, workspace: GoogleStandIn) -> None:
    google = make(group_key="name")
    workspace.users[ALICE_ID].suspended = True

    alice = await google.get(ALICE_ID)

    assert alice is not None
    assert alice.groups == {"Staff", "Helpdesk"}
    assert alice.disabled
    assert await google.get("999") is None
    assert await google.find_nhi("billing-api") is None


async def test_search_asks_users_list_of_the_customer(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    (alice,) = await google.search("alice", limit=5)

    assert alice.id == ALICE_ID and alice.groups == frozenset()
    (listing,) = workspace.calls("directory.users.list")
    assert listing.query == {"customer": "my_customer", "query": "alice", "maxResults": "5"}
    assert await google.search("name:'x' OR isAdmin=true") == []
    assert len(workspace.calls("directory.users.list")) == 1


async def test_the_admin_recorded_mobile_is_the_phone_of_record_never_the_recovery_phone(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    by_id = await google.get(ALICE_ID)
    (by_email,) = await google.find_by_email("alice@example.com")
    (picked,) = await google.search("alice")

    assert by_id is not None
    assert by_id.phone == by_email.phone == picked.phone == ALICE_PHONE
    assert ALICE_PHONE not in repr(by_id)

    workspace.users[ALICE_ID].phones = [{"value": "+44 20 7946 0000", "type": "work"}]
    alice = await google.get(ALICE_ID)

    assert alice is not None and alice.phone is None, "the user's own recoveryPhone is not one"


def _mobile(value: str, primary: bool | None = None) -> dict[str, object]:
    entry: dict[str, object] = {"value": value, "type": "mobile"}
    if primary is not None:
        entry["primary"] = primary
    return entry


@pytest.mark.parametrize(
    ("phones", "expected"),
    [
        ([_mobile("+44 7700 900123"), _mobile("+44 7700 900456")], None),
        ([_mobile("+44 7700 900456"), _mobile("+44 7700 900123", primary=True)], ALICE_PHONE),
        ([_mobile("+44 7700 900123"), _mobile("+44 (7700) 900-123", primary=False)], ALICE_PHONE),
        ([_mobile("07700 900123")], None),
        ([_mobile("+44 7700 900123 ext. 4")], None),
        ([_mobile("07700 900123", primary=True), _mobile("+44 7700 900123")], None),
        ([{"value": "+44 7700 900123", "type": "custom", "customType": "mobile"}], None),
        ([{"value": "+44 7700 900123", "type": "work_mobile"}], None),
        ([], None),
    ],
    ids=[
        "two-mobiles-no-primary",
        "primary-mobile-wins",
        "one-number-written-twice",
        "no-country-code",
        "extension",
        "primary-not-e164",
        "custom-type",
        "work-mobile",
        "no-phones",
    ],
)
async def test_only_an_unambiguous_e164_mobile_is_a_phone_of_record(
    google: GoogleConnector,
    workspace: GoogleStandIn,
    phones: list[dict[str, object]],
    expected: str | None,
) -> None:
    workspace.users[ALICE_ID].phones = phones

    alice = await google.get(ALICE_ID)

    assert alice is not None and alice.phone == expected


async def test_directory_trouble_is_unavailable_never_a_partial_answer(
    google: GoogleConnector, workspace: GoogleStandIn
) -> None:
    workspace.group_page_size = 1
    workspace.fail(
        "directory.groups.list",
        403,
        {"error": {"code": 403, "message": "Not Authorized to access this resource/api"}},
    )
    with pytest.raises(Unavailable, match="Not Authorized"):
        await google.get(ALICE_ID)

    workspace.hang("directory.users.get")
    with pytest.raises(Unavailable, match="could not be read"):
        await google.find_by_email("alice@example.com")


# ---- members: who may approve ------------------------------------------------------------------

BOB_ID = "104857600000000000002"
CAROL_ID = "104857600000000000003"
DAVE_ID = "104857600000000000004"
CUSTOMER_MEMBER = {
    "kind": "admin#directory#member",
    "etag": '"c"',
    "id": "C01abc234",
    "role": "MEMBER",
    "type": "CUSTOMER",
}


@pytest.fixture
def teams(workspace: GoogleStandIn) -> GoogleStandIn:
    """helpdesk@: Alice, Carol (suspended: returned all the same). security@: Bob, Carol, the
    nested leads@ group with Dave, someone outside the account, and the whole customer."""
    for user_id, name in ((BOB_ID, "Bob Brown"), (CAROL_ID, "Carol Chen"), (DAVE_ID, "Dave Diaz")):
        first = name.split()[0].lower()
        workspace.add_user(
            WorkspaceUser(id=user_id, primary_email=f"{first}@example.com", full_name=name)
        )
    workspace.users[CAROL_ID].suspended = True
    workspace.add_group(workspace_group("helpdesk@example.com", "Helpdesk"), [ALICE_ID, CAROL_ID])
    workspace.add_group(workspace_group("leads@example.com", "Security Leads"), [DAVE_ID])
    workspace.add_group(
        workspace_group("security@example.com", "Security"),
        [BOB_ID, CAROL_ID, "leads@example.com", "partner@elsewhere.example", CUSTOMER_MEMBER],
    )
    return workspace


async def test_members_of_two_groups_each_once_with_every_group_they_are_in(
    google: GoogleConnector, teams: GoogleStandIn
) -> None:
    with structlog.testing.capture_logs() as events:
        found = await google.members(["helpdesk@example.com", "security@example.com"])

    by_id = {p.id: p for p in found}
    assert len(found) == len(by_id) == 3, "the outsider and the customer are no one here"
    assert by_id[CAROL_ID].groups == {"helpdesk@example.com", "security@example.com"}
    assert by_id[CAROL_ID].disabled, "suspended people are returned; callers decide"
    # Dave is in security@ only through leads@: groups.list by his userKey (what the gate reads
    # when he acts) would not name security@, so he is not asked to approve for it either
    assert DAVE_ID not in by_id
    assert by_id[ALICE_ID].phone == ALICE_PHONE, "read as users.get reads everyone"
    assert by_id[BOB_ID].email == "bob@example.com" and by_id[BOB_ID].name == "Bob Brown"
    listings = teams.calls("directory.members.list")
    assert [c.path for c in listings] == [
        "/admin/directory/v1/groups/helpdesk@example.com/members",
        "/admin/directory/v1/groups/security@example.com/members",
    ]
    assert listings[0].query == {"maxResults": "200"}
    reads = [c.path.rsplit("/", 1)[-1] for c in teams.calls("directory.users.get")]
    assert sorted(reads[:3]) == sorted([ALICE_ID, BOB_ID, CAROL_ID])
    assert len(reads) == 4, "each person read once, and the outsider once (404)"
    assert teams.calls("directory.groups.list") == [], "no per-person group look-ups"
    assert any(e["event"] == "google_members_of_customer_not_listed" for e in events)


async def test_members_follow_every_page(google: GoogleConnector, teams: GoogleStandIn) -> None:
    teams.member_page_size = 2

    found = await google.members(["security@example.com"])

    assert {p.id for p in found} == {BOB_ID, CAROL_ID}
    tokens = [c.query.get("pageToken") for c in teams.calls("directory.members.list")]
    assert tokens == [None, "2", "4"]


async def test_members_stop_at_the_limit(google: GoogleConnector, teams: GoogleStandIn) -> None:
    found = await google.members(["helpdesk@example.com", "security@example.com"], limit=2)

    assert [p.id for p in found] == [ALICE_ID, CAROL_ID]
    assert len(teams.calls("directory.users.get")) == 2
    assert len(teams.calls("directory.members.list")) == 1, "nothing read past the limit"
    assert await google.members(["helpdesk@example.com"], limit=0) == []


async def test_a_group_the_directory_does_not_know_has_nobody(
    google: GoogleConnector, teams: GoogleStandIn
) -> None:
    assert await google.members(["nobody@example.com"]) == []
    assert await google.members(["Helpdesk", "../users@example.com", ""]) == []
    assert await google.members([]) == []

    assert len(teams.calls("directory.members.list")) == 1, "only a group email is asked about"


@pytest.mark.parametrize(("status", "times"), [(403, 1), (500, 3)])
async def test_a_refused_member_listing_is_unavailable_never_nobody(
    google: GoogleConnector, teams: GoogleStandIn, status: int, times: int
) -> None:
    teams.fail(
        "directory.members.list",
        status,
        {"error": {"code": status, "message": "Not Authorized to access this resource/api"}},
        times=times,
    )
    with pytest.raises(Unavailable, match="Not Authorized"):
        await google.members(["helpdesk@example.com"])


async def test_a_refusal_on_a_later_page_or_person_is_unavailable_never_a_partial_answer(
    google: GoogleConnector, teams: GoogleStandIn
) -> None:
    first_page = {"kind": "admin#directory#members", "members": [], "nextPageToken": "1"}
    teams.fail("directory.members.list", 200, first_page)
    teams.fail("directory.members.list", 503, None, times=3)
    with pytest.raises(Unavailable, match="HTTP 503"):
        await google.members(["security@example.com"])

    teams.fail("directory.users.get", 403, {"error": {"code": 403, "message": "Forbidden"}})
    with pytest.raises(Unavailable, match="Forbidden"):
        await google.members(["helpdesk@example.com"])


async def test_members_by_group_name_are_resolved_exactly(make: Make, teams: GoogleStandIn) -> None:
    google = make(group_key="name")
    other = teams.add_group(workspace_group("hd-old@example.com", "helpdesk"), [BOB_ID])
    oneil = teams.add_group(workspace_group("ops@example.com", "Ops O'Neil"), [DAVE_ID])

    found = await google.members(["Helpdesk", "Ops O'Neil", "No Such Group"])

    assert {p.id: p.groups for p in found} == {
        ALICE_ID: {"Helpdesk"},
        CAROL_ID: {"Helpdesk"},
        DAVE_ID: {"Ops O'Neil"},
    }
    searches = teams.calls("directory.groups.list")
    assert [c.query for c in searches] == [
        {"customer": "my_customer", "query": "name='Helpdesk'", "maxResults": "200"},
        {"customer": "my_customer", "query": "name='Ops O\\'Neil'", "maxResults": "200"},
        {"customer": "my_customer", "query": "name='No Such Group'", "maxResults": "200"},
    ]
    listed = [c.path for c in teams.calls("directory.members.list")]
    helpdesk = teams.groups[0].resource["id"]
    assert listed == [
        f"/admin/directory/v1/groups/{helpdesk}/members",
        f"/admin/directory/v1/groups/{oneil.resource['id']}/members",
    ]
    assert other.resource["id"] not in "".join(listed)


async def test_a_group_name_several_groups_share_is_unavailable(
    make: Make, teams: GoogleStandIn
) -> None:
    google = make(group_key="name")
    teams.add_group(workspace_group("helpdesk-2@example.com", "Helpdesk"), [BOB_ID])

    with pytest.raises(Unavailable, match=r"2 groups named 'Helpdesk'.*group_key: email"):
        await google.members(["Helpdesk"])
    with pytest.raises(Unavailable, match="cannot be searched for exactly"):
        await google.members(["Help\\desk"])
    assert teams.calls("directory.members.list") == []


# ---- secrets never reach logs ----------------------------------------------------------------


async def test_no_secret_reaches_any_log(
    make: Make,
    workspace: GoogleStandIn,
    key_pem: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    hashed = make()
    clear = make(send_password_as="clear-text")
    workspace.fail("directory.users.signOut", 429, None, {"Retry-After": "1"})
    with structlog.testing.capture_logs() as events:
        results = [
            await run(hashed, Action.RESET_PASSWORD),
            await run(clear, Action.RESET_PASSWORD),
            await run(hashed, Action.RESET_MFA),
            await run(hashed, Action.REVOKE_SESSIONS),
        ]
        workspace.admins.clear()
        results.append(await run(make(), Action.RESET_PASSWORD))

    secrets_ = [*workspace.tokens, *workspace.users[ALICE_ID].backup_codes]
    secrets_ += [r.secret.get_secret_value() for r in results if r.secret is not None]
    secrets_ += [str(c.body["password"]) for c in workspace.calls("directory.users.update")]
    secrets_ += [form["assertion"] for form in workspace.token_requests]
    key_body = "".join(key_pem.splitlines()[1:-1])
    assert len(secrets_) >= 12
    logged = caplog.text + repr(events) + "".join(capsys.readouterr())
    logged += "".join(r.detail + repr(r) for r in results)
    assert any(e.get("event") == "google_change" for e in events)
    for secret in secrets_:
        assert secret not in logged
    for line in key_pem.splitlines()[1:-1]:
        assert line not in logged
    assert key_body[:40] not in logged
