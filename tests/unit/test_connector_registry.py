"""The `connectors:` list of the policy file: located mistakes, secrets, the directory, building."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.connector_setup import check_policy_file as check_file
from app.connector_setup import connector_problems, entries_of, read_entries
from app.connectors.base import ConnectorConfigError
from app.connectors.okta import OktaConnector
from app.connectors.registry import (
    ConnectorEntry,
    describe_connectors,
    directory_entry,
    missing_secrets,
    wire_connectors,
)
from app.connectors.sandbox import SandboxConnector
from app.connectors.webhook import WebhookConnector
from app.policy import PolicyFileError
from app.policy.loader import read_located_yaml
from tests.helpers import MINIMAL_POLICY

POLICY = MINIMAL_POLICY

OKTA = """\
  - type: okta
    org_url: https://acme.okta.com
    api_token_env: TK_TEST_OKTA_TOKEN
"""
WEBHOOK = """\
  - type: webhook
    url: https://automation.example.com/twokey
    secret_env: TK_TEST_WEBHOOK_KEY
    actions: [rotate-secret]
"""
LDAP = """\
  - type: ldap
    flavor: openldap
    url: ldaps://ldap.example.com
    bind_dn: cn=twokey,dc=example,dc=org
    bind_password_env: TK_TEST_LDAP_PASSWORD
    user_base: ou=people,dc=example,dc=org
    group_base: ou=groups,dc=example,dc=org
"""
WEBHOOK_KEY = "k" * 40


def policy_with(*entries: str) -> str:
    return POLICY + "connectors:\n" + "".join(entries)


def problems(text: str) -> list[str]:
    return [str(p) for p in connector_problems(read_located_yaml(text, "policy.yaml"))]


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the nth line containing ``needle``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[nth - 1]


def entries(text: str) -> list[ConnectorEntry]:
    return read_entries(read_located_yaml(text, "policy.yaml"))


# ---- mistakes, each at its line and column ----------------------------------------------------


def test_a_wrong_setting_is_reported_where_it_is_written() -> None:
    text = policy_with(OKTA.replace("https://acme.okta.com", "https://acme-admin.okta.com"))
    (problem,) = problems(text)
    line = line_of(text, "org_url")
    assert problem.startswith(f"policy.yaml:{line}:5 connectors.0.org_url: ")
    assert "Admin Console URL" in problem


def test_a_missing_setting_is_reported_at_its_entry() -> None:
    text = policy_with(WEBHOOK.replace("    actions: [rotate-secret]\n", ""))
    (problem,) = problems(text)
    assert problem == (
        f"policy.yaml:{line_of(text, 'type: webhook')}:5 connectors.0.actions: "
        "this setting is required but missing"
    )


def test_an_unknown_type_suggests_the_closest_one() -> None:
    text = policy_with("  - type: okt\n    org_url: https://acme.okta.com\n")
    (problem,) = problems(text)
    assert problem.startswith(f"policy.yaml:{line_of(text, 'okt')}:5 connectors.0.type: ")
    assert "did you mean 'okta'?" in problem


def test_an_unknown_setting_names_the_allowed_ones() -> None:
    text = policy_with(OKTA + "    orgurl: https://acme.okta.com\n")
    (problem,) = problems(text)
    assert f":{line_of(text, 'orgurl')}:5 connectors.0.orgurl: unknown setting" in problem
    assert "did you mean 'org_url'?" in problem


def test_a_secret_written_inline_is_refused_without_repeating_it() -> None:
    pasted = "00aBcDeF-pasted-okta-token-XYZ"
    text = policy_with(OKTA.replace("api_token_env: TK_TEST_OKTA_TOKEN", f"api_token: {pasted}"))
    found = problems(text)
    assert any(
        f":{line_of(text, 'api_token:')}:5 connectors.0.api_token: secrets are never written "
        "in the policy file; write api_token_env: NAME_OF_THE_VARIABLE instead" in p
        for p in found
    )
    assert all(pasted not in p for p in found)


def test_a_secret_pasted_where_its_variable_name_belongs_is_not_repeated() -> None:
    pasted = "whsec-9f8e7d6c5b4a-pasted"
    text = policy_with(WEBHOOK.replace("TK_TEST_WEBHOOK_KEY", pasted))
    (problem,) = problems(text)
    assert f":{line_of(text, 'secret_env')}:5 connectors.0.secret_env:" in problem
    assert "not an environment variable name" in problem
    assert pasted not in problem


def test_two_connectors_with_one_name_are_refused() -> None:
    second = OKTA.replace("acme.okta.com", "other.okta.com")
    text = policy_with(OKTA, second)
    (problem,) = problems(text)
    assert problem.startswith(f"policy.yaml:{line_of(text, 'type: okta', 2)}:5 connectors.1: ")
    assert "already called 'okta'" in problem


def test_only_one_connector_can_be_the_directory() -> None:
    text = policy_with(OKTA + "    directory: true\n", LDAP + "    directory: true\n")
    (problem,) = problems(text)
    line = line_of(text, "directory: true", 2)
    assert problem.startswith(f"policy.yaml:{line}:5 connectors.1.directory: ")
    assert "connectors.0 is already the directory" in problem


def test_a_connector_that_knows_no_people_cannot_be_the_directory() -> None:
    text = policy_with(WEBHOOK + "    directory: true\n")
    (problem,) = problems(text)
    assert "connectors.0.directory: a webhook connector cannot act as the directory" in problem


def test_every_mistake_of_the_file_is_listed_in_file_order() -> None:
    text = policy_with(
        OKTA.replace("https://acme.okta.com", "ftp://acme"), "  - type: nope\n", WEBHOOK
    )
    found = problems(text)
    assert [re.sub(r"^policy\.yaml:(\d+):.*", r"\1", p) for p in found] == [
        str(line_of(text, "ftp://")),
        str(line_of(text, "nope")),
    ]


# ---- `twokey policy check` reports them with the rest of the file ----------------------------


def test_policy_check_reports_connector_mistakes_with_the_others(tmp_path: Path) -> None:
    text = policy_with(OKTA.replace("https://acme.okta.com", "http://acme.okta.com"))
    text = text.replace("approvals: 1", "approvals: lots")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    code, report = check_file(path)
    assert code == 1
    assert f"{path}:{line_of(text, 'approvals')}:5 tiers.standard.approvals:" in report
    assert f"{path}:{line_of(text, 'org_url')}:5 connectors.0.org_url: uses plain http" in report
    assert report.index("approvals") < report.index("org_url")


def test_policy_check_says_which_connector_is_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_with(WEBHOOK, OKTA))
    code, report = check_file(path)
    assert code == 0, report
    assert "connectors: webhook (webhook), okta (okta, the directory)" in report


def test_policy_check_says_the_sandbox_is_used_without_connectors(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    code, report = check_file(path)
    assert code == 0
    assert "connectors: none (the sandbox directory and connector" in report


# ---- which connector is the directory ----------------------------------------------------------


def test_the_first_connector_that_knows_people_is_the_directory() -> None:
    found = entries(policy_with(WEBHOOK, LDAP, OKTA))
    chosen = directory_entry(found)
    assert chosen is not None and chosen.kind == "ldap"


def test_a_marked_connector_is_the_directory() -> None:
    found = entries(policy_with(LDAP, OKTA + "    directory: true\n"))
    chosen = directory_entry(found)
    assert chosen is not None and chosen.kind == "okta"


def test_a_connector_can_opt_out_of_being_the_directory() -> None:
    found = entries(policy_with(LDAP + "    directory: false\n", OKTA))
    chosen = directory_entry(found)
    assert chosen is not None and chosen.kind == "okta"


def test_without_a_connector_that_knows_people_the_sandbox_directory_stays() -> None:
    found = entries(policy_with(WEBHOOK))
    assert directory_entry(found) is None
    assert "people from the sandbox directory" in describe_connectors(found)


# ---- secrets and building -------------------------------------------------------------------


def test_every_missing_secret_is_named_before_anything_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TK_TEST_OKTA_TOKEN", raising=False)
    monkeypatch.setenv("TK_TEST_WEBHOOK_KEY", "")
    found = missing_secrets(entries(policy_with(OKTA, WEBHOOK)))
    assert found == [
        "connector 'okta' (connectors.0.api_token_env): environment variable TK_TEST_OKTA_TOKEN "
        "is not set (or empty); set it to the api token",
        "connector 'webhook' (connectors.1.secret_env): environment variable "
        "TK_TEST_WEBHOOK_KEY is not set (or empty); set it to the secret",
    ]


async def test_start_up_stops_on_a_missing_secret_and_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TK_TEST_WEBHOOK_KEY", WEBHOOK_KEY)
    monkeypatch.delenv("TK_TEST_LDAP_PASSWORD", raising=False)
    with pytest.raises(ConnectorConfigError) as caught:
        await wire_connectors(entries(policy_with(WEBHOOK, LDAP)))
    assert "TK_TEST_LDAP_PASSWORD is not set" in str(caught.value)
    assert "TK_TEST_WEBHOOK_KEY" not in str(caught.value)


async def test_connectors_are_built_and_the_directory_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TK_TEST_OKTA_TOKEN", "00okta-token-for-tests")
    monkeypatch.setenv("TK_TEST_WEBHOOK_KEY", WEBHOOK_KEY)
    wiring = await wire_connectors(entries(policy_with(WEBHOOK, OKTA)))
    webhook, okta = wiring.connectors
    assert isinstance(webhook, WebhookConnector) and isinstance(okta, OktaConnector)
    assert wiring.directory is okta and wiring.directory_name == "okta"
    assert len(wiring.closers) == 2
    await wiring.aclose()
    assert okta._http.client.is_closed and webhook._http.client.is_closed


async def test_a_sandbox_entry_is_built_with_its_settings(tmp_path: Path) -> None:
    record = tmp_path / "changes.jsonl"
    text = policy_with(
        f"  - type: sandbox\n    record_path: {record}\n    fail_actions: [unlock]\n"
        "    directory: true\n"
    )
    wiring = await wire_connectors(entries(text))
    (sandbox,) = wiring.connectors
    assert isinstance(sandbox, SandboxConnector)
    assert sandbox.record_path == record and {str(a) for a in sandbox.fail_actions} == {"unlock"}
    assert wiring.directory is None  # the sandbox directory, as without connectors


def test_a_policy_built_in_code_names_the_setting_without_a_line() -> None:
    bad = [{"type": "okta", "org_url": "https://acme.okta.com"}]
    with pytest.raises(PolicyFileError) as caught:
        entries_of(bad, None)
    (problem,) = caught.value.problems
    assert problem.line is None
    assert str(problem).startswith("policy connectors.0: ")
    assert "api_token_env" in str(problem)


def test_the_documented_example_is_a_valid_connectors_list() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "connectors.md").read_text()
    example = docs.split("## A complete example", 1)[1].split("```yaml\n", 1)[1].split("```")[0]
    text = POLICY + example
    assert problems(text) == []
    found = entries(text)
    assert [entry.kind for entry in found] == [
        "okta",
        "entra",
        "google",
        "ldap",
        "aws_iam",
        "vault",
        "webhook",
        "sandbox",
    ]
    chosen = directory_entry(found)
    assert chosen is not None and chosen.kind == "okta"
