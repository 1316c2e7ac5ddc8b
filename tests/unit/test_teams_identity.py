"""Who a Teams roster entry is: the UPN (a domain its tenant proved it owns), never the mail."""

from __future__ import annotations

from botbuilder.schema.teams import TeamsChannelAccount

from app.channels.teams.identity import chat_user_from

TENANT = "tenant-home"


def member(**fields: str) -> TeamsChannelAccount:
    return TeamsChannelAccount().deserialize(
        {"id": "29:x", "aadObjectId": "aad-x", "tenantId": TENANT, "userRole": "user", **fields}
    )


def test_the_upn_is_who_they_are_whatever_the_mail_says() -> None:
    user = chat_user_from(
        member(email="carol@example.com", userPrincipalName="mallory@partner.example"), [TENANT]
    )
    assert user.email == "mallory@partner.example" and user.email_verified


def test_an_entry_without_a_upn_falls_back_to_its_email() -> None:
    user = chat_user_from(member(email="alice@example.com"), [TENANT])
    assert user.email == "alice@example.com"


def test_a_upn_that_is_no_address_names_nobody_and_the_mail_is_not_used() -> None:
    user = chat_user_from(member(email="carol@example.com", userPrincipalName="mallory"), [TENANT])
    assert user.email is None and not user.email_verified


def test_another_tenants_entry_is_not_verified() -> None:
    user = chat_user_from(member(userPrincipalName="dave@example.com"), ["tenant-other"])
    assert user.email == "dave@example.com" and not user.email_verified
