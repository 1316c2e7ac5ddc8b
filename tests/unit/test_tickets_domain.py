"""The ticket section's per-tier checks and the write-back note words (pure domain)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.domain.tickets import TicketSettings, plain

JIRA = {
    "system": "jira",
    "instance_url": "https://example.atlassian.net",
    "email_env": "JIRA_EMAIL",
    "api_token_env": "JIRA_TOKEN",
}


def test_a_tier_overrides_only_what_it_names() -> None:
    settings = TicketSettings.model_validate(
        {
            **JIRA,
            "max_age": "24h",
            "assigned_to_requester": True,
            "tiers": {"standard": {"max_age": "off"}, "privileged": {"max_age": "1h"}},
        }
    )
    assert settings.checks_for("standard").max_age is None
    assert settings.checks_for("standard").assigned_to_requester is True
    assert settings.checks_for("privileged").max_age == 3600
    assert settings.checks_for("other").max_age == 86400
    assert settings.checks_for("other").open_states == ("new", "indeterminate")


def test_jira_needs_its_own_credentials_named() -> None:
    with pytest.raises(ValidationError, match="system jira needs email_env, api_token_env"):
        TicketSettings.model_validate({"system": "jira", "instance_url": "https://x.atlassian.net"})


@given(st.text(max_size=600))
def test_note_text_is_inert_and_bounded(text: str) -> None:
    out = plain(text)
    assert "[" not in out and "]" not in out
    assert len(out) <= 300
    assert not any(ord(ch) < 32 for ch in out)
