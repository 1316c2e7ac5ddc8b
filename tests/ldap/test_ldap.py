"""The LDAP / AD connector against a real slapd: resets, unlocks, look-ups, and what goes wrong.

The configuration and password tests need no server; the rest use the ``slapd`` fixture.
"""

from __future__ import annotations

import asyncio
import logging
import string
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from ldap3.utils import log as ldap3_log
from pydantic import ValidationError

from app.connectors.base import ConnectorConfigError
from app.connectors.checks import CheckStatus
from app.connectors.ldap import (
    IN_CHAIN,
    LdapConfig,
    LdapConnector,
    ad_groups_filter,
    ad_members_filter,
    ad_password_value,
    build,
    generate_password,
    member_of_any_filter,
)
from app.domain.errors import Unavailable
from app.domain.models import Action, Plan, Principal, PrincipalKind, Request
from app.ports import Outcome

from .conftest import (
    AD_USERS,
    GINA_DN,
    GROUPS,
    OLD_PASSWORD,
    PEOPLE,
    READER_DN,
    READER_PASSWORD,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
)

ENV = "TWOKEY_TEST_LDAP_BIND_PASSWORD"
ALICE_DN = f"uid=alice,{PEOPLE}"
BOB_DN = f"uid=bob,{PEOPLE}"
ERIN_DN = f"uid=erin,{PEOPLE}"
CAROL_DN = f"cn=Carol Jones,{AD_USERS}"
DAN_DN = f"cn=Dan Gone,{AD_USERS}"


@pytest.fixture
def service_password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV, SERVICE_PASSWORD)
    return SERVICE_PASSWORD


def openldap(slapd: Slapd, **overrides: Any) -> dict[str, Any]:
    """The policy-file entry for the test directory: StartTLS with the test CA."""
    return {
        "type": "ldap",
        "flavor": "openldap",
        "url": slapd.ldap_url,
        "ca_file": slapd.ca_file,
        "bind_dn": SERVICE_DN,
        "bind_password_env": ENV,
        "user_base": PEOPLE,
        "group_base": GROUPS,
        "operation_timeout": 5,
        **overrides,
    }


def active_directory(slapd: Slapd, **overrides: Any) -> dict[str, Any]:
    """AD-shaped accounts in the same slapd, which has no objectCategory and no in-chain rule."""
    return openldap(
        slapd,
        flavor="ad",
        user_base=AD_USERS,
        user_filter="(objectClass=user)",
        group_filter="(objectClass=groupOfNames)",
        nested_groups="walk",
        **overrides,
    )


def person(principal_id: str) -> Principal:
    return Principal(id=principal_id, display_name=principal_id.title())


def request_for(action: Action, target: Principal) -> Request:
    return Request(
        id="TK-0000ABCD",
        ticket="INC-1234",
        action=action,
        target_id=target.id,
        target_name=target.name,
        target_kind=target.kind,
        owner_id=target.id,
        requester_id="agent",
        reason_code="forgot-password",
        plan=Plan(rule="default", tier="standard"),
        created_at=0,
        expires_at=1,
    )


async def run(connector: LdapConnector, action: Action, principal_id: str) -> Any:
    target = person(principal_id)
    return await connector.execute(action, target, request_for(action, target))


# --------------------------------------------------------------------------------------------
# Configuration, passwords and filters (no server)


def minimal(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "ldap",
        "flavor": "openldap",
        "url": "ldaps://ldap.example.org",
        "bind_dn": "cn=twokey,dc=example,dc=org",
        "bind_password_env": "LDAP_BIND_PASSWORD",
        "user_base": "ou=people,dc=example,dc=org",
        "group_base": "ou=groups,dc=example,dc=org",
        **overrides,
    }


def test_flavour_fills_its_own_attribute_names_and_filters() -> None:
    openldap_config = LdapConfig.model_validate(minimal())
    ad_config = LdapConfig.model_validate(minimal(flavor="ad"))
    assert (openldap_config.id_attribute, openldap_config.group_filter) == (
        "uid",
        "(objectClass=groupOfNames)",
    )
    assert ad_config.id_attribute == "sAMAccountName"
    assert ad_config.user_filter == "(&(objectCategory=person)(objectClass=user))"
    assert (openldap_config.nested_groups, ad_config.nested_groups) == ("walk", "in_chain")
    assert (
        LdapConfig.model_validate(minimal(id_attribute="employeeID")).id_attribute == "employeeID"
    )


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"bind_password": "hunter2"}, "Extra inputs are not permitted"),
        ({"bind_password_env": "hunter2"}, "not an environment variable name"),
        ({"url": "https://ldap.example.org"}, "must start with ldaps:// or ldap://"),
        ({"url": "ldaps://"}, "names no host"),
        ({"url": "ldaps://ldap.example.org/dc=example"}, "no base DN"),
        ({"url": "ldap://u:p@ldap.example.org"}, "must not carry credentials"),
        ({"allow_insecure": True}, "allow_insecure applies only to ldap://"),
        ({"user_filter": "objectClass=user"}, "is not an LDAP filter"),
        ({"user_filter": "(objectClass=user))("}, "is not an LDAP filter"),
        ({"user_base": "people"}, "is not a distinguished name"),
        ({"mail_attribute": "mail)(uid=*"}, "is not an LDAP attribute name"),
        ({"flavor": "novell"}, "'openldap' or 'ad'"),
        ({"password_length": 12}, "greater than or equal to 16"),
        ({"ca_file": "/nonexistent/ca.pem"}, "cannot be read"),
    ],
)
def test_bad_configuration_is_refused_with_words(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        LdapConfig.model_validate(minimal(**overrides))
    assert words in str(refused.value)


def test_plain_ldap_needs_the_explicit_insecure_setting() -> None:
    starttls = LdapConfig.model_validate(minimal(url="ldap://ldap.example.org"))
    plain = LdapConfig.model_validate(minimal(url="ldap://ldap.example.org", allow_insecure=True))
    assert (starttls.encrypted, starttls.port) == (True, 389)
    assert (plain.encrypted, LdapConfig.model_validate(minimal()).port) == (False, 636)


def test_build_names_the_missing_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LDAP_BIND_PASSWORD", raising=False)
    with pytest.raises(ConnectorConfigError, match="LDAP_BIND_PASSWORD"):
        build(minimal())


def test_generated_passwords_are_long_mixed_and_avoid_the_account_name() -> None:
    drawn = {generate_password(16, avoid=["alice", "Alice Liddell"]) for _ in range(200)}
    assert len(drawn) == 200
    for password in drawn:
        assert len(password) == 16
        assert any(c in string.ascii_uppercase for c in password)
        assert any(c in string.ascii_lowercase for c in password)
        assert any(c in string.digits for c in password)
        assert any(c in string.punctuation for c in password)
        assert "alice" not in password.lower() and "liddell" not in password.lower()
    with pytest.raises(ValueError, match="at least 16"):
        generate_password(12)


def test_ad_password_value_is_the_quoted_password_in_utf16le() -> None:
    assert (
        ad_password_value("Pä55-word")
        == b'"\x00P\x00\xe4\x005\x005\x00-\x00w\x00o\x00r\x00d\x00"\x00'
    )


def test_group_filters_escape_the_member_dn() -> None:
    config = LdapConfig.model_validate(minimal(flavor="ad"))
    user_dn = "CN=Smith\\, John (IT),OU=Staff,DC=example,DC=org"
    assert ad_groups_filter(config, user_dn) == (
        f"(&(objectClass=group)(member:{IN_CHAIN}:=CN=Smith\\5c, John \\28IT\\29,OU=Staff,"
        "DC=example,DC=org))"
    )
    assert member_of_any_filter(LdapConfig.model_validate(minimal()), ["uid=a*", "uid=b"]) == (
        "(&(objectClass=groupOfNames)(|(member=uid=a\\2a)(member=uid=b)))"
    )
    assert ad_members_filter(config, "CN=Ops (*),OU=Groups,DC=example,DC=org") == (
        f"(&(&(objectCategory=person)(objectClass=user))(memberOf:{IN_CHAIN}:="
        "CN=Ops \\28\\2a\\29,OU=Groups,DC=example,DC=org))"
    )


def test_supports_reset_and_unlock_for_people_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LDAP_BIND_PASSWORD", "x")
    connector = build(minimal())
    alice, robot = person("alice"), Principal(id="svc-ci", kind=PrincipalKind.NHI, owner_id="a")
    assert connector.supports(Action.RESET_PASSWORD, alice)
    assert connector.supports(Action.UNLOCK, alice)
    for action in (Action.REVOKE_SESSIONS, Action.RESET_MFA, Action.ROTATE_SECRET):
        assert not connector.supports(action, alice)
    assert not connector.supports(Action.RESET_PASSWORD, robot)
    plain_ad = build(minimal(flavor="ad", url="ldap://dc.example.org", allow_insecure=True))
    assert not plain_ad.supports(Action.RESET_PASSWORD, alice)
    assert plain_ad.supports(Action.UNLOCK, alice)


# --------------------------------------------------------------------------------------------
# OpenLDAP: reset, unlock, force-change


async def test_reset_password_sets_a_new_one_the_owner_must_change(
    slapd: Slapd, service_password: str
) -> None:
    result = await run(build(openldap(slapd)), Action.RESET_PASSWORD, "alice")

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    new_password = result.secret.get_secret_value()
    assert len(new_password) >= 20
    assert slapd.can_bind(ALICE_DN, new_password)
    assert not slapd.can_bind(ALICE_DN, OLD_PASSWORD)
    stored = slapd.read(ALICE_DN, "pwdReset", "userPassword")
    assert stored["pwdReset"] == ["TRUE"]
    assert stored["userPassword"][0].startswith("{SSHA}")  # hashed by slapd, never in the clear
    assert new_password not in result.detail


async def test_a_reset_the_directory_will_not_force_to_change_is_made_but_needs_attention(
    slapd: Slapd, service_password: str
) -> None:
    """gina's pwdReset is not writable by twokey's bind account (a common ACL gap): the
    password is set and handed over, never called "must be changed at next logon", and the
    result asks for attention (security is alerted with it)."""
    result = await run(build(openldap(slapd)), Action.RESET_PASSWORD, "gina")

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    assert slapd.can_bind(GINA_DN, result.secret.get_secret_value())
    assert slapd.read(GINA_DN, "pwdReset").get("pwdReset") != ["TRUE"]
    assert "must be changed" not in result.secret_label
    assert "will not ask you to" in result.secret_label
    assert "refused to require a change at next logon" in result.attention
    assert result.secret.get_secret_value() not in result.attention + result.detail


async def test_reset_password_over_ldaps(slapd: Slapd, service_password: str) -> None:
    result = await run(build(openldap(slapd, url=slapd.ldaps_url)), Action.RESET_PASSWORD, "alice")

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    assert slapd.can_bind(ALICE_DN, result.secret.get_secret_value())


async def test_unlock_deletes_the_ppolicy_lock(slapd: Slapd, service_password: str) -> None:
    assert not slapd.can_bind(BOB_DN, OLD_PASSWORD)  # locked: the right password is refused

    result = await run(build(openldap(slapd)), Action.UNLOCK, "bob")

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is None
    assert "pwdAccountLockedTime" not in slapd.read(BOB_DN, "pwdAccountLockedTime")
    assert slapd.can_bind(BOB_DN, OLD_PASSWORD)


async def test_unlocking_an_unlocked_account_changes_nothing(
    slapd: Slapd, service_password: str
) -> None:
    before = slapd.read(ALICE_DN, "modifyTimestamp", "entryCSN")

    result = await run(build(openldap(slapd)), Action.UNLOCK, "alice")

    assert (result.outcome, result.detail) == (Outcome.COMPLETED, "the account was not locked")
    assert slapd.read(ALICE_DN, "modifyTimestamp", "entryCSN") == before


async def test_a_disabled_account_is_neither_unlocked_nor_reset(
    slapd: Slapd, service_password: str
) -> None:
    connector = build(openldap(slapd))

    unlock = await run(connector, Action.UNLOCK, "erin")
    reset = await run(connector, Action.RESET_PASSWORD, "erin")

    for result in (unlock, reset):
        assert result.outcome is Outcome.FAILED
        assert "disabled" in result.detail and "nothing was changed" in result.detail
        assert result.secret is None
    assert slapd.read(ERIN_DN, "pwdAccountLockedTime")["pwdAccountLockedTime"] == ["000001010000Z"]


async def test_an_unknown_account_fails_and_says_so(slapd: Slapd, service_password: str) -> None:
    result = await run(build(openldap(slapd)), Action.RESET_PASSWORD, "nobody")

    assert result.outcome is Outcome.FAILED
    assert "no account 'nobody'" in result.detail


async def test_a_refused_change_is_failed_with_the_directory_s_words(
    slapd: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, READER_PASSWORD)
    connector = build(openldap(slapd, bind_dn=READER_DN))

    reset = await run(connector, Action.RESET_PASSWORD, "alice")
    unlock = await run(connector, Action.UNLOCK, "bob")

    assert reset.outcome is Outcome.FAILED and reset.secret is None
    assert "insufficientAccessRights (50)" in reset.detail
    assert unlock.outcome is Outcome.FAILED
    assert "insufficientAccessRights (50)" in unlock.detail
    assert slapd.can_bind(ALICE_DN, OLD_PASSWORD)
    assert slapd.read(BOB_DN, "pwdAccountLockedTime")["pwdAccountLockedTime"]


# --------------------------------------------------------------------------------------------
# Look-ups and nested groups


async def test_user_by_mail_with_nested_groups(slapd: Slapd, service_password: str) -> None:
    found = await build(openldap(slapd)).find_by_email("ALICE@example.org")

    assert len(found) == 1
    alice = found[0]
    assert (alice.id, alice.display_name, alice.email) == (
        "alice",
        "Alice Liddell",
        "alice@example.org",
    )
    assert alice.kind is PrincipalKind.HUMAN and not alice.disabled
    # helpdesk <- it-staff <- everyone, and a loop-a <-> loop-b cycle that must end
    assert alice.groups == {"helpdesk", "it-staff", "everyone", "loop-a", "loop-b"}


async def test_get_by_id(slapd: Slapd, service_password: str) -> None:
    connector = build(openldap(slapd))

    bob = await connector.get("bob")
    erin = await connector.get("erin")

    assert bob is not None and bob.groups == {"everyone", "bob-only"}
    assert erin is not None and erin.disabled
    assert await connector.get("nobody") is None


async def test_ids_and_mails_are_matched_exactly_never_as_patterns(
    slapd: Slapd, service_password: str
) -> None:
    connector = build(openldap(slapd))

    star = await connector.get("star*")

    assert star is not None and star.id == "star*"
    assert await connector.find_by_email("*@example.org") == []
    assert await connector.get("*") is None
    assert await connector.get("alice)(uid=*") is None


async def test_several_accounts_for_one_mail_are_all_returned(
    slapd: Slapd, service_password: str
) -> None:
    found = await build(openldap(slapd)).find_by_email("shared@example.org")

    assert sorted(p.id for p in found) == ["twin1", "twin2"]


async def test_an_entry_with_two_ids_is_refused_not_guessed(
    slapd: Slapd, service_password: str
) -> None:
    connector = build(openldap(slapd))

    reset = await run(connector, Action.RESET_PASSWORD, "frank")

    assert await connector.get("frank") is None
    assert await connector.find_by_email("frank@example.org") == []
    assert reset.outcome is Outcome.FAILED and "several values of uid" in reset.detail
    assert slapd.can_bind(f"uid=frank,{PEOPLE}", OLD_PASSWORD)


async def test_search_for_pickers(slapd: Slapd, service_password: str) -> None:
    connector = build(openldap(slapd))

    found = await connector.search("star")
    limited = await connector.search("example.org", limit=2)

    assert sorted(p.id for p in found) == ["star*", "starlight"]
    assert len(limited) == 2
    assert await connector.find_nhi("alice") is None


async def test_mobile_is_no_phone_of_record_unless_the_operator_locked_it(
    slapd: Slapd, service_password: str
) -> None:
    """OpenLDAP ACLs often say ``by self write``: a number people set proves nothing."""
    connector = build(openldap(slapd))

    (by_mail,) = await connector.find_by_email("alice@example.org")
    by_id = await connector.get("alice")
    picked = await connector.search("alice")
    checked = await connector.check()

    assert slapd.read(ALICE_DN, "mobile")["mobile"] == ["+44 7700 900123"]
    assert by_id is not None and picked
    assert [by_mail.phone, by_id.phone, *(p.phone for p in picked)] == [None] * 3
    assert not [line for line in checked if "phone of record" in line.what]


async def test_mobile_is_the_phone_of_record(slapd: Slapd, service_password: str) -> None:
    connector = build(openldap(slapd, phone_of_record=True))

    (by_mail,) = await connector.find_by_email("alice@example.org")
    by_id = await connector.get("alice")
    picked = await connector.search("alice")

    assert by_id is not None
    assert [by_mail.phone, by_id.phone, *(p.phone for p in picked)] == ["+447700900123"] * 3
    assert "900123" not in repr(by_id)
    (reminder,) = [line for line in await connector.check() if "phone of record" in line.what]
    assert reminder.status is CheckStatus.NOTE and "by self write" in reminder.detail


async def test_several_mobiles_or_one_not_in_e164_give_no_phone_of_record(
    slapd: Slapd, service_password: str
) -> None:
    connector = build(openldap(slapd, phone_of_record=True))

    people = {p.id: p for p in await connector.find_by_email("shared@example.org")}
    bob = await connector.get("bob")
    starlight = await connector.get("starlight")

    assert bob is not None and bob.phone is None, "two different numbers are ambiguous"
    assert people["twin1"].phone is None, "no country code"
    assert people["twin2"].phone == "+447700900444", "one number written two ways is one"
    assert starlight is not None and starlight.phone is None, "no mobile at all"


async def test_nesting_deeper_than_allowed_is_an_error_not_a_partial_answer(
    slapd: Slapd, service_password: str
) -> None:
    with pytest.raises(Unavailable, match="max_group_depth"):
        await build(openldap(slapd, max_group_depth=2)).get("alice")
    alice = await build(openldap(slapd, max_group_depth=3)).get("alice")
    assert alice is not None and "everyone" in alice.groups


async def test_group_names_can_be_full_dns(slapd: Slapd, service_password: str) -> None:
    bob = await build(openldap(slapd, group_name_attribute="dn")).get("bob")

    assert bob is not None
    assert bob.groups == {f"cn=everyone,{GROUPS}", f"cn=bob-only,{GROUPS}"}


# --------------------------------------------------------------------------------------------
# Members of groups: who may approve


def ids(people: list[Principal]) -> list[str]:
    return sorted(p.id for p in people)


async def test_members_of_two_groups_are_each_listed_once_with_both(
    slapd: Slapd, service_password: str
) -> None:
    connector = build(openldap(slapd))

    found = await connector.members(["everyone", "bob-only"])

    # bob is in both; alice is in everyone through it-staff <- helpdesk (nested twice)
    assert ids(found) == ["alice", "bob"]
    by_id = {p.id: p for p in found}
    assert {"everyone", "bob-only"} <= by_id["bob"].groups
    assert {"everyone", "it-staff", "helpdesk"} <= by_id["alice"].groups
    assert found == [await connector.get(p.id) for p in found], "read as get() reads a person"


async def test_members_of_a_nested_group_and_of_a_cycle(
    slapd: Slapd, service_password: str
) -> None:
    connector = build(openldap(slapd))

    assert ids(await connector.members(["it-staff"])) == ["alice"]
    assert ids(await connector.members(["loop-b"])) == ["alice"]  # loop-b <-> loop-a ends
    assert ids(await connector.members(["loop-a", "loop-b", "helpdesk"])) == ["alice"]


async def test_members_are_people_under_user_base_only(slapd: Slapd, service_password: str) -> None:
    """A service, an entry outside user_base, a DN that is gone and the OU itself: nobody."""
    found = await build(openldap(slapd)).members(["mixed"])

    # starlight directly, twin1 through the nested ops*; erin is disabled and still listed
    assert ids(found) == ["erin", "starlight", "twin1"]
    assert next(p for p in found if p.id == "erin").disabled


async def test_an_unknown_group_has_nobody(slapd: Slapd, service_password: str) -> None:
    connector = build(openldap(slapd))

    assert await connector.members(["no-such-group"]) == []
    assert await connector.members([]) == []
    assert ids(await connector.members(["no-such-group", "bob-only"])) == ["bob"]
    # names are matched exactly, as the policy compares them with a person's groups
    assert await connector.members(["HELPDESK"]) == []


@pytest.mark.parametrize(
    "name",
    [
        "*",
        "ops",
        "help*",
        "*)(cn=*",
        "helpdesk)(cn=*",
        "bob-only)(|(cn=*)",
        "helpdesk)",
        "(",
        "\\2a",
    ],
)
async def test_group_names_are_never_filter_syntax(
    slapd: Slapd, service_password: str, name: str
) -> None:
    assert await build(openldap(slapd)).members([name]) == []


async def test_a_group_named_with_a_metacharacter_is_found_exactly(
    slapd: Slapd, service_password: str
) -> None:
    assert ids(await build(openldap(slapd)).members(["ops*"])) == ["twin1"]


async def test_members_stop_at_the_limit(slapd: Slapd, service_password: str) -> None:
    connector = build(openldap(slapd))
    groups = ["everyone", "bob-only", "mixed", "ops*"]

    everyone = await connector.members(groups)
    two = await connector.members(groups, limit=2)

    assert ids(everyone) == ["alice", "bob", "erin", "starlight", "twin1"]
    assert len(two) == 2 and set(ids(two)) <= set(ids(everyone))
    assert len(await connector.members(groups, limit=1)) == 1
    assert await connector.members(groups, limit=0) == []


async def test_members_nesting_deeper_than_allowed_is_an_error(
    slapd: Slapd, service_password: str
) -> None:
    with pytest.raises(Unavailable, match="max_group_depth"):
        await build(openldap(slapd, max_group_depth=2)).members(["everyone"])
    deep_enough = await build(openldap(slapd, max_group_depth=3)).members(["everyone"])
    assert ids(deep_enough) == ["alice", "bob"]


async def test_members_of_groups_named_by_dn(slapd: Slapd, service_password: str) -> None:
    connector = build(openldap(slapd, group_name_attribute="dn"))

    found = await connector.members([f"cn=everyone,{GROUPS}", f"cn=bob-only,{GROUPS}"])

    assert ids(found) == ["alice", "bob"]
    assert await connector.members(["everyone"]) == []
    assert await connector.members([ALICE_DN]) == [], "not a group, and not under group_base"
    assert await connector.members([f"cn=ghost,{GROUPS}", "not a dn"]) == []


async def test_members_when_the_directory_is_down_is_unavailable_never_nobody(
    slapd: Slapd, service_password: str
) -> None:
    connector = build(openldap(slapd))
    assert ids(await connector.members(["bob-only"])) == ["bob"]

    slapd.stop()

    with pytest.raises(Unavailable, match="cannot reach the directory"):
        await connector.members(["bob-only"])


async def test_members_with_a_wrong_bind_password_is_unavailable(
    slapd: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "not-the-service-password")

    with pytest.raises(Unavailable, match="bind refused"):
        await build(openldap(slapd)).members(["bob-only"])


async def never_answering(slapd: Slapd, proxy_factory: Any) -> LdapConnector:
    """The connector reaching slapd through a proxy that accepts and never answers."""
    _, port = await proxy_factory(slapd.port, silent=True)
    return build(
        openldap(
            slapd,
            url=f"ldap://127.0.0.1:{port}",
            allow_insecure=True,
            ca_file=None,
            operation_timeout=1,
        )
    )


async def test_members_from_a_directory_that_never_answers_is_unavailable(
    slapd: Slapd, service_password: str, proxy_factory: Any
) -> None:
    connector = await never_answering(slapd, proxy_factory)

    with pytest.raises(Unavailable):
        await connector.members(["bob-only"])


# --------------------------------------------------------------------------------------------
# Active Directory shapes (AD's attributes in slapd: the modify requests AD documents)


async def test_ad_reset_replaces_unicodepwd_and_forces_a_change(
    slapd: Slapd, service_password: str
) -> None:
    result = await run(build(active_directory(slapd)), Action.RESET_PASSWORD, "carol")

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    assert slapd.raw(CAROL_DN, "unicodePwd") == [
        ad_password_value(result.secret.get_secret_value())
    ]
    assert slapd.read(CAROL_DN, "pwdLastSet")["pwdLastSet"] == ["0"]


async def test_ad_unlock_sets_lockouttime_to_zero(slapd: Slapd, service_password: str) -> None:
    result = await run(build(active_directory(slapd)), Action.UNLOCK, "carol")

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert slapd.read(CAROL_DN, "lockoutTime")["lockoutTime"] == ["0"]
    again = await run(build(active_directory(slapd)), Action.UNLOCK, "carol")
    assert again.detail == "the account was not locked"


async def test_ad_look_ups_and_disabled_accounts(slapd: Slapd, service_password: str) -> None:
    connector = build(active_directory(slapd))

    carol = await connector.find_by_email("carol@ad.example.org")
    dan = await connector.get("dan")
    reset = await run(connector, Action.RESET_PASSWORD, "dan")

    assert [(p.id, p.display_name, p.disabled, p.groups) for p in carol] == [
        ("carol", "Carol Jones", False, frozenset({"ad-helpdesk", "ad-staff"}))
    ]
    assert dan is not None and dan.disabled
    assert reset.outcome is Outcome.FAILED and "disabled" in reset.detail
    assert slapd.raw(DAN_DN, "unicodePwd") == []


async def test_ad_mobile_is_the_phone_of_record_only_once_self_may_not_write_it(
    slapd: Slapd, service_password: str
) -> None:
    """AD lets SELF write Personal-Information (``mobile``) by default: off unless turned on."""
    default = await build(active_directory(slapd)).get("carol")
    connector = build(active_directory(slapd, phone_of_record=True))

    carol = await connector.get("carol")
    dan = await connector.get("dan")

    assert default is not None and default.phone is None
    assert carol is not None and carol.phone == "+14255550100"
    assert dan is not None and dan.phone is None
    (reminder,) = [line for line in await connector.check() if "phone of record" in line.what]
    assert reminder.status is CheckStatus.NOTE and "SELF" in reminder.detail


async def test_ad_members_through_nesting_and_only_under_user_base(
    slapd: Slapd, service_password: str
) -> None:
    """The AD stand-in walks (slapd has no in-chain rule; its filter is checked as a string)."""
    connector = build(active_directory(slapd))

    found = await connector.members(["ad-staff", "ad-helpdesk"])

    assert [(p.id, p.disabled) for p in sorted(found, key=lambda p: p.id)] == [
        ("carol", False),
        ("dan", True),
    ]
    assert all({"ad-helpdesk", "ad-staff"} <= p.groups for p in found)
    assert await connector.members(["helpdesk"]) == [], "alice is not under the AD user_base"
    assert await connector.members(["ad-staff*"]) == []


async def test_ad_never_sends_a_password_in_the_clear(slapd: Slapd, service_password: str) -> None:
    connector = build(active_directory(slapd, allow_insecure=True, ca_file=None))

    result = await run(connector, Action.RESET_PASSWORD, "carol")

    assert result.outcome is Outcome.FAILED and result.secret is None
    assert "only over LDAPS or StartTLS" in result.detail
    assert slapd.raw(CAROL_DN, "unicodePwd") == []


# --------------------------------------------------------------------------------------------
# Bind, TLS and network trouble


async def test_wrong_bind_password_is_a_clear_failure_and_changes_nothing(
    slapd: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "not-the-service-password"
    monkeypatch.setenv(ENV, wrong)
    connector = build(openldap(slapd))

    reset = await run(connector, Action.RESET_PASSWORD, "alice")
    unlock = await run(connector, Action.UNLOCK, "bob")
    with pytest.raises(Unavailable, match="bind refused") as lookup:
        await connector.get("alice")

    for result in (reset, unlock):
        assert result.outcome is Outcome.FAILED and result.secret is None
        assert "bind refused" in result.detail and "invalidCredentials" in result.detail
        assert ENV in result.detail and "nothing was changed" in result.detail
        assert wrong not in result.detail
    assert wrong not in str(lookup.value)
    assert slapd.can_bind(ALICE_DN, OLD_PASSWORD)
    assert "pwdReset" not in slapd.read(ALICE_DN, "pwdReset")
    assert slapd.read(BOB_DN, "pwdAccountLockedTime")["pwdAccountLockedTime"]


async def test_a_certificate_from_an_unknown_ca_is_refused_before_binding(
    slapd: Slapd, service_password: str
) -> None:
    for url in (slapd.ldap_url, slapd.ldaps_url):
        connector = build(openldap(slapd, url=url, ca_file=slapd.other_ca_file))

        result = await run(connector, Action.RESET_PASSWORD, "alice")

        assert result.outcome is Outcome.FAILED, url
        assert "nothing was changed" in result.detail
    assert slapd.can_bind(ALICE_DN, OLD_PASSWORD)


async def test_an_unreachable_directory_fails_closed(service_password: str) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = minimal(url=f"ldap://127.0.0.1:{port}", allow_insecure=True, bind_password_env=ENV)
    connector = build(config)

    result = await run(connector, Action.UNLOCK, "bob")
    with pytest.raises(Unavailable, match="cannot reach the directory"):
        await connector.find_by_email("bob@example.org")

    assert result.outcome is Outcome.FAILED
    assert "cannot reach the directory" in result.detail and "nothing was changed" in result.detail


class LdapProxy:
    """Forwards an LDAP session to slapd; from the first change request on, drops every answer.

    So the change really reaches the directory but its answer never comes back: the case where
    only "unknown" is truthful. With ``silent`` it answers nothing at all, not even the bind.
    """

    CHANGE_REQUESTS = frozenset({0x66, 0x77})  # ModifyRequest [APPLICATION 6], ExtendedRequest [23]

    def __init__(self, upstream_port: int, *, silent: bool = False) -> None:
        self.upstream_port = upstream_port
        self.dropping = silent
        self.silent = silent
        self.changes_forwarded = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        if self.silent:
            await client_r.read()  # read until the client gives up; answer nothing
            client_w.close()
            return
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        answers = asyncio.create_task(self._answers(server_r, client_w))
        self._tasks.add(answers)
        pending = b""
        while data := await client_r.read(65536):
            pending += data
            operations, complete, pending = split_ldap_messages(pending)
            if self.CHANGE_REQUESTS & set(operations):
                self.dropping = True
                self.changes_forwarded += 1
            server_w.write(complete)
            await server_w.drain()
        server_w.close()

    async def _answers(
        self, server_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        while data := await server_r.read(65536):
            if not self.dropping:
                client_w.write(data)
                await client_w.drain()


def split_ldap_messages(buffer: bytes) -> tuple[list[int], bytes, bytes]:
    """The protocolOp tags of the complete LDAPMessages in ``buffer``, those bytes, the rest."""
    operations, position = [], 0
    while len(buffer) - position >= 2:
        length_byte = buffer[position + 1]
        header, length = 2, length_byte
        if length_byte & 0x80:
            count = length_byte & 0x7F
            header = 2 + count
            if len(buffer) - position < header:
                break
            length = int.from_bytes(buffer[position + 2 : position + header], "big")
        end = position + header + length
        if len(buffer) < end:
            break
        message_id_length = buffer[position + header + 1]
        operations.append(buffer[position + header + 2 + message_id_length])
        position = end
    return operations, buffer[:position], buffer[position:]


@pytest.fixture
async def proxy_factory() -> AsyncIterator[Any]:
    proxies: list[LdapProxy] = []

    async def start(upstream_port: int, *, silent: bool = False) -> tuple[LdapProxy, int]:
        proxy = LdapProxy(upstream_port, silent=silent)
        proxies.append(proxy)
        return proxy, await proxy.start()

    yield start
    for proxy in proxies:
        await proxy.close()


async def test_a_lost_answer_after_the_change_was_sent_is_unknown(
    slapd: Slapd, service_password: str, proxy_factory: Any
) -> None:
    proxy, port = await proxy_factory(slapd.port)
    connector = build(
        openldap(
            slapd,
            url=f"ldap://127.0.0.1:{port}",
            allow_insecure=True,
            ca_file=None,
            operation_timeout=1,
        )
    )

    result = await run(connector, Action.RESET_PASSWORD, "alice")

    assert result.outcome is Outcome.UNKNOWN, result.detail
    assert "check the account before trying again" in result.detail
    assert proxy.changes_forwarded == 1
    # It did happen: that is why "failed" would have been a lie. The owner may need the secret.
    assert result.secret is not None
    assert slapd.can_bind(ALICE_DN, result.secret.get_secret_value())


async def test_a_directory_that_never_answers_fails_before_any_change(
    slapd: Slapd, service_password: str, proxy_factory: Any
) -> None:
    connector = await never_answering(slapd, proxy_factory)

    result = await run(connector, Action.UNLOCK, "bob")

    assert result.outcome is Outcome.FAILED
    assert "nothing was changed" in result.detail
    assert slapd.read(BOB_DN, "pwdAccountLockedTime")["pwdAccountLockedTime"]


# --------------------------------------------------------------------------------------------
# No secret reaches the logs


@pytest.fixture
def ldap3_library_logging() -> Iterator[Any]:
    """Lets a test turn ldap3's own logging up; puts it back afterwards."""
    level_now: Any = ldap3_log.get_library_log_detail_level
    before = level_now()
    yield ldap3_log.set_library_log_detail_level
    ldap3_log.set_library_log_detail_level(before)


async def test_no_password_reaches_the_logs(
    slapd: Slapd,
    service_password: str,
    caplog: pytest.LogCaptureFixture,
    ldap3_library_logging: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    ldap3_library_logging(ldap3_log.BASIC)
    connector = build(openldap(slapd))

    results = [
        await run(connector, Action.RESET_PASSWORD, "alice"),
        await run(build(active_directory(slapd)), Action.RESET_PASSWORD, "carol"),
        await run(connector, Action.UNLOCK, "bob"),
    ]
    await connector.find_by_email("alice@example.org")
    monkeypatch.setenv(ENV, "wrong-bind-password")
    results.append(await run(build(openldap(slapd)), Action.RESET_PASSWORD, "alice"))

    new_passwords = [r.secret.get_secret_value() for r in results if r.secret is not None]
    assert len(new_passwords) == 2
    assert caplog.records, "the capture must see something for this test to mean anything"
    logged = caplog.text + "".join(repr(r) + str(r) + r.model_dump_json() for r in results)
    for secret in [*new_passwords, SERVICE_PASSWORD, "wrong-bind-password"]:
        assert secret not in logged


async def test_reset_is_refused_while_ldap3_would_log_request_values(
    slapd: Slapd, service_password: str, ldap3_library_logging: Any
) -> None:
    ldap3_library_logging(ldap3_log.PROTOCOL)

    result = await run(build(openldap(slapd)), Action.RESET_PASSWORD, "alice")

    assert result.outcome is Outcome.FAILED and result.secret is None
    assert "ldap3 library logging" in result.detail
    assert slapd.can_bind(ALICE_DN, OLD_PASSWORD)
