"""The policy's ``tickets:`` section: validated with locations, shown by check and explain."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.domain.models import Action, Principal
from app.domain.policy import Signals
from app.policy import PolicyFileError, check_file, explain, load_policy_text, render_explanation
from tests.helpers import policy_text

SERVICENOW = """tickets:
  system: servicenow
  instance_url: https://example.service-now.com
  username_env: SN_USER
  password_env: SN_PASSWORD
"""


def test_without_a_tickets_section_nothing_is_looked_up() -> None:
    tickets = load_policy_text(policy_text()).tickets
    assert tickets.system == "none"
    assert not tickets.checked


def test_servicenow_defaults_to_the_open_incident_states() -> None:
    tickets = load_policy_text(policy_text() + SERVICENOW + "  open_states: [1, 2]\n").tickets
    assert tickets.open_states == ["1", "2"]
    default = load_policy_text(policy_text() + SERVICENOW).tickets
    assert default.open_states == ["1", "2", "3"]
    assert default.max_age is None and default.caller_must_be_target is False


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ("tickets:\n  system: servicenow\n", "needs instance_url, username_env, password_env"),
        ("tickets:\n  system: zendesk\n", "tickets.system"),
        (SERVICENOW.replace("SN_PASSWORD", "hunter2!"), "not an environment variable name"),
        (SERVICENOW.replace("https://", "http://"), "must use https"),
        (SERVICENOW + "  max_age: soon\n", "tickets.max_age"),
        (
            SERVICENOW.replace("https://", "https://admin:hunter2@"),
            "must not carry a user name or password",
        ),
        (SERVICENOW.replace(".com\n", ".com#hunter2\n", 1), "must not carry a #fragment"),
        (
            SERVICENOW.replace("system: servicenow", "system: jira")
            .replace("username_env: SN_USER", "auth: oauth")
            .replace(
                "  password_env: SN_PASSWORD\n",
                "  cloud_id: 1324a887-45db-1bf4-1e99-ef0ff456d421\n",
            )
            + "  client_id_env: CID\n  client_secret_env: CS\n"
            + "  token_url: https://svc:hunter2@proxy.example.com/oauth/token\n",
            "must not carry a user name or password",
        ),
        (SERVICENOW + "  colour: red\n", "colour"),
    ],
)
def test_mistakes_in_the_section_are_located_and_named(section: str, words: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        load_policy_text(policy_text() + section, "p.yaml")
    assert words in caught.value.message
    assert "hunter2" not in caught.value.message


def test_policy_check_and_explain_say_how_tickets_are_checked(tmp_path: Path) -> None:
    text = policy_text() + SERVICENOW + "  max_age: 24h\n  caller_must_be_target: true\n"
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    code, shown = check_file(path)
    assert code == 0
    expected = (
        "tickets: must exist in ServiceNow (https://example.service-now.com); state one of "
        "1 (New), 2 (In Progress), 3 (On Hold); opened_at within 1d; caller_id is the target"
    )
    assert expected in shown
    alice = Principal(id="alice", email="alice@example.com")
    result = explain(load_policy_text(text), Action.RESET_MFA, alice, None, Signals())
    assert "Ticket (checked when it opens): must exist in ServiceNow" in render_explanation(result)


def test_the_readme_tickets_example_is_a_valid_section() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block, oauth = [
        b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S) if "tickets:" in b
    ]
    base = policy_text().replace("'^(INC|REQ|CHG)-\\\\d{3,8}$'", "'^INC\\\\d{7}$'")
    tickets = load_policy_text(base + block.split("\n", 1)[1]).tickets
    assert tickets.system == "servicenow" and tickets.write_back.notes
    assert tickets.checks_for("standard").assigned_to_requester
    with_oauth = load_policy_text(policy_text() + oauth).tickets
    assert with_oauth.system == "jira" and with_oauth.auth_method == "oauth"


SERVICENOW_OAUTH = """tickets:
  system: servicenow
  instance_url: https://example.service-now.com
  auth: oauth
  client_id_env: SN_CLIENT_ID
  client_secret_env: SN_CLIENT_SECRET
"""

JIRA_OAUTH = """tickets:
  system: jira
  instance_url: https://example.atlassian.net
  auth: oauth
  cloud_id: 1324A887-45db-1bf4-1e99-ef0ff456d421
  client_id_env: JIRA_CLIENT_ID
  client_secret_env: JIRA_CLIENT_SECRET
"""


def test_oauth_endpoints_default_to_the_documented_ones() -> None:
    snow = load_policy_text(policy_text() + SERVICENOW_OAUTH).tickets
    assert snow.auth_method == "oauth"
    assert snow.oauth_token_url == "https://example.service-now.com/oauth_token.do"
    jira = load_policy_text(policy_text() + JIRA_OAUTH).tickets
    assert jira.oauth_token_url == "https://auth.atlassian.com/oauth/token"
    assert jira.jira_api_base == (
        "https://api.atlassian.com/ex/jira/1324a887-45db-1bf4-1e99-ef0ff456d421"
    )
    assert "signs in with OAuth client credentials" in jira.in_words()
    basic = load_policy_text(policy_text() + SERVICENOW).tickets
    assert basic.auth_method == "basic" and "OAuth" not in basic.in_words()


def test_oauth_endpoints_may_be_moved_for_tests_and_proxies() -> None:
    moved = JIRA_OAUTH + (
        "  token_url: https://egress.example.com/atlassian/oauth/token\n"
        "  api_url: https://egress.example.com/atlassian-api/\n"
    )
    jira = load_policy_text(policy_text() + moved).tickets
    assert jira.oauth_token_url == "https://egress.example.com/atlassian/oauth/token"
    assert jira.jira_api_base.startswith("https://egress.example.com/atlassian-api/ex/jira/")


@pytest.mark.parametrize(
    ("section", "words"),
    [
        (
            SERVICENOW_OAUTH.replace("  client_secret_env: SN_CLIENT_SECRET\n", ""),
            "system servicenow with auth: oauth needs client_secret_env",
        ),
        (
            JIRA_OAUTH.replace("  cloud_id: 1324A887-45db-1bf4-1e99-ef0ff456d421\n", ""),
            "system jira with auth: oauth needs cloud_id",
        ),
        (SERVICENOW.replace("system: servicenow", "system: servicenow\n  auth: token"), "basic"),
        (JIRA_OAUTH.replace("auth: oauth", "auth: basic"), "token (email_env, api_token_env)"),
        (SERVICENOW + "  auth: oauth\n", "needs client_id_env, client_secret_env"),
        (SERVICENOW_OAUTH + "  username_env: SN_USER\n", "username_env not used by"),
        (SERVICENOW + "  client_id_env: SN_CLIENT_ID\n", "client_id_env not used by"),
        (SERVICENOW_OAUTH + f"  cloud_id: {'1' * 8}-1111-1111-1111-{'1' * 12}\n", "cloud_id"),
        (JIRA_OAUTH.replace("1324A887-45db", "example.atlassian.net/x"), "a UUID"),
        (SERVICENOW_OAUTH.replace("SN_CLIENT_SECRET", "hunter2/secret"), "environment variable"),
        (SERVICENOW_OAUTH + "  token_url: http://proxy.example.com/t\n", "must use https"),
        (SERVICENOW_OAUTH + "  auth: oauth\n", "auth"),
    ],
)
def test_oauth_mistakes_are_named(section: str, words: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        load_policy_text(policy_text() + section, "p.yaml")
    assert words in caught.value.message, caught.value.message
    assert "hunter2" not in caught.value.message


def test_the_documented_oauth_examples_are_valid_sections() -> None:
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", doc, flags=re.S) if "auth: oauth" in b]
    systems = {load_policy_text(policy_text() + b).tickets.system for b in blocks}
    assert systems == {"servicenow", "jira"}
