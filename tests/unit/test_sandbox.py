"""The sandbox directory file format, its lookups, and the recording sandbox connector."""

from __future__ import annotations

import asyncio
import json
import re
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.connectors.base import ConnectorConfigError
from app.connectors.sandbox import (
    DirectoryFileError,
    SandboxConnector,
    SandboxDirectory,
)
from app.domain.models import Action, Plan, Principal, PrincipalKind, Request
from app.ports import Directory, IdentityProvider, Outcome

DOCS = Path(__file__).resolve().parents[2] / "docs" / "directory.md"

SMALL = """
version: 1
people:
  - id: alice
    display_name: Alice Adams
    email: Alice@Example.com
    groups: [staff]
  - id: bob
    email: bob@example.com
    groups: [helpdesk]
nhis:
  - name: billing-api
    owner: alice
    tags: [production]
    system: aws
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(DirectoryFileError) as caught:
        SandboxDirectory.from_yaml(text, "test.yaml")
    assert caught.value.source == "test.yaml"
    return [str(p) for p in caught.value.problems]


# ---- the file format ------------------------------------------------------------------------


def test_a_valid_file_gives_people_and_nhis_with_prefixed_ids() -> None:
    directory = SandboxDirectory.from_yaml(SMALL)

    ids = [p.id for p in directory.principals]
    assert ids == ["alice", "bob", "nhi:billing-api"]
    nhi = directory.principals[2]
    assert nhi.kind is PrincipalKind.NHI
    assert nhi.owner_id == "alice"
    assert nhi.owner_of_record == "alice"
    assert nhi.tags == {"production"}
    assert nhi.system == "aws"
    assert nhi.name == "billing-api"  # no display name: the bare name, not the prefixed id
    assert directory.principals[1].name == "bob"


def test_duplicate_person_id_names_both_entries() -> None:
    text = """
people:
  - {id: alice, email: a1@example.com}
  - {id: bob, email: bob@example.com}
  - {id: alice, email: a2@example.com}
"""
    assert problems_of(text) == [
        "people[2] 'alice', field id: 'alice' is already the id of people[0]; "
        "every person needs their own id"
    ]


def test_duplicate_nhi_name_names_both_entries() -> None:
    text = """
people: [{id: alice, email: a@example.com}]
nhis:
  - {name: billing-api, owner: alice}
  - {name: billing-api, owner: alice}
"""
    (problem,) = problems_of(text)
    assert problem.startswith("nhis[1] 'billing-api', field name:")
    assert "already the name of nhis[0]" in problem


def test_nhi_owner_must_be_a_known_person_and_a_near_miss_is_suggested() -> None:
    text = """
people: [{id: alice, email: a@example.com}]
nhis:
  - {name: billing-api, owner: alcie}
"""
    (problem,) = problems_of(text)
    assert problem.startswith("nhis[0] 'billing-api', field owner: 'alcie' is not the id of a")
    assert "Did you mean 'alice'?" in problem


def test_nhi_owner_cannot_be_another_nhi() -> None:
    text = """
people: [{id: alice, email: a@example.com}]
nhis:
  - {name: ci-deployer, owner: alice}
  - {name: billing-api, owner: "nhi:ci-deployer"}
"""
    (problem,) = problems_of(text)
    assert problem.startswith("nhis[1] 'billing-api', field owner: 'nhi:ci-deployer' is not a")


def test_every_shape_mistake_is_reported_at_once_with_its_place() -> None:
    text = """
people:
  - id: Bob
    email: not-an-email
    group: [helpdesk]
  - display_name: No Id
    email: noid@example.com
nhis:
  - name: billing-api
    owner: bob
    tags: [Production]
"""
    problems = problems_of(text)
    assert len(problems) == 5
    assert problems[0].startswith("people[0] 'Bob', field id: 'Bob' is not a usable id")
    assert problems[1].startswith(
        "people[0] 'Bob', field email: 'not-an-email' is not an email address"
    )
    assert problems[2] == (
        "people[0] 'Bob', field group: unknown field 'group' "
        "(allowed here: disabled, display_name, email, groups, id, manager, phone, recovery_email)"
    )
    assert problems[3] == "people[1], field id: required, but missing"
    assert problems[4].startswith("nhis[0] 'billing-api', field tags[0]: 'Production' must be")


def test_a_person_without_an_email_is_refused() -> None:
    """Chat users resolve by verified email: a person the directory has no email for is useless."""
    assert problems_of("people: [{id: guest}]") == [
        "people[0] 'guest', field email: required, but missing"
    ]


def test_a_key_written_twice_is_refused_rather_than_silently_keeping_the_last() -> None:
    text = "people:\n  - id: alice\n    email: a@example.com\n    email: b@example.com\n"
    assert problems_of(text) == [
        "line 4, column 5: the key 'email' is written twice here; keep one"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("- alice\n", "the top level must be a mapping with `people:` (and `nhis:`)"),
        ("people: []\n", "people: list at least one person"),
        ("people: [alice]\n", "people[0]: each entry is a mapping of fields"),
        ("version: 2\npeople: [{id: a, email: a@example.com}]\n", "version: must be 1"),
        ("people: [\n", "line 2, column 1: "),
        (
            "people: [{id: a, email: a@example.com}]\nteams: []\n",
            "teams: unknown field 'teams' (allowed here: nhis, people, version)",
        ),
    ],
)
def test_file_level_mistakes_are_named(text: str, expected: str) -> None:
    (problem,) = problems_of(text)
    assert problem.startswith(expected)


def test_the_error_message_lists_every_problem_and_is_a_config_error() -> None:
    with pytest.raises(ConnectorConfigError) as caught:
        SandboxDirectory.from_yaml("people: [{id: Bad, email: nope}]", "mine.yaml")
    message = str(caught.value)
    assert message.startswith("directory file mine.yaml has 2 problems:\n  - people[0] 'Bad'")
    assert message.count("\n  - ") == 2


def test_a_missing_file_says_to_check_the_setting(tmp_path: Path) -> None:
    with pytest.raises(DirectoryFileError) as caught:
        SandboxDirectory.from_file(tmp_path / "absent.yaml")
    assert "no such file (check TWOKEY_DIRECTORY)" in str(caught.value)


def test_from_file_reads_a_written_file(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(SMALL, encoding="utf-8")

    directory = SandboxDirectory.from_file(path)

    assert directory.source == str(path)
    assert len(directory.principals) == 3


# ---- lookups --------------------------------------------------------------------------------


async def test_find_by_email_ignores_case_on_both_sides() -> None:
    directory = SandboxDirectory.from_yaml(SMALL)

    assert [p.id for p in await directory.find_by_email("alice@example.com")] == ["alice"]
    assert [p.id for p in await directory.find_by_email("ALICE@EXAMPLE.COM")] == ["alice"]
    assert await directory.find_by_email("carol@example.com") == []
    assert await directory.find_by_email("alice@example.co") == []


async def test_a_shared_email_loads_and_returns_everyone_who_has_it() -> None:
    text = """
people:
  - {id: kim, email: shared@example.com}
  - {id: lee, email: Shared@example.com}
  - {id: max, email: max@example.com}
"""
    directory = SandboxDirectory.from_yaml(text)

    assert [p.id for p in await directory.find_by_email("shared@example.com")] == ["kim", "lee"]


async def test_get_tells_people_and_nhis_apart() -> None:
    directory = SandboxDirectory.from_yaml(SMALL)

    alice = await directory.get("alice")
    assert alice is not None and alice.kind is PrincipalKind.HUMAN
    nhi = await directory.get("nhi:billing-api")
    assert nhi is not None and nhi.kind is PrincipalKind.NHI
    assert await directory.get("billing-api") is None
    assert await directory.get("nobody") is None


async def test_find_nhi_takes_the_bare_name_or_the_principal_id_and_never_a_person() -> None:
    directory = SandboxDirectory.from_yaml(SMALL)

    by_name = await directory.find_nhi("billing-api")
    assert by_name is not None and by_name.id == "nhi:billing-api"
    assert await directory.find_nhi("nhi:billing-api") == by_name
    assert await directory.find_nhi("alice") is None
    assert await directory.find_nhi("unknown") is None


async def test_search_matches_id_name_and_email_ignoring_case_and_honours_the_limit() -> None:
    directory = SandboxDirectory.example()

    assert [p.id for p in await directory.search("ADAMS")] == ["alice"]
    assert [p.id for p in await directory.search("frank@")] == ["frank"]
    assert [p.id for p in await directory.search("billing")] == ["nhi:billing-api"]
    assert [p.id for p in await directory.search("shared@example")] == ["kim", "lee"]
    assert len(await directory.search("example.com", limit=3)) == 3
    assert await directory.search("example.com", limit=0) == []
    assert await directory.search("no such person") == []


async def test_disabled_people_are_found_and_marked() -> None:
    directory = SandboxDirectory.example()

    (judy,) = await directory.find_by_email("judy@example.com")
    assert judy.disabled


# ---- the packaged example -------------------------------------------------------------------


async def test_the_example_has_the_company_the_example_policy_expects() -> None:
    directory: Directory = SandboxDirectory.example()

    async def groups(pid: str) -> frozenset[str]:
        principal = await directory.get(pid)
        assert principal is not None, pid
        assert principal.email == f"{pid}@example.com"
        return principal.groups

    assert "helpdesk" in await groups("bob")
    assert "helpdesk-leads" in await groups("carol")
    assert "helpdesk-leads" in await groups("dave")
    assert {"security", "security-oncall"} <= await groups("erin")
    assert "security" in await groups("frank")
    assert "security-oncall" not in await groups("frank")
    assert "admins" in await groups("grace")
    assert not {"helpdesk", "helpdesk-leads", "security", "admins"} & await groups("alice")

    assert len(await directory.find_by_email("shared@example.com")) == 2

    billing = await directory.find_nhi("billing-api")
    assert billing is not None
    assert (billing.tags, billing.system, billing.owner_id) == (
        frozenset({"production"}),
        "aws",
        "alice",
    )
    deployer = await directory.find_nhi("ci-deployer")
    assert deployer is not None
    assert (deployer.tags, deployer.system) == (frozenset({"ci"}), "vault")
    assert await directory.get(deployer.owner_id or "") is not None


def test_the_example_says_it_is_not_for_production() -> None:
    directory = SandboxDirectory.example()

    assert "Not for production" in directory.description
    assert directory.source.startswith("packaged example")


def test_every_yaml_example_in_the_docs_loads() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "docs/directory.md should show a complete example"
    for block in blocks:
        SandboxDirectory.from_yaml(block, "docs/directory.md")


# ---- the connector --------------------------------------------------------------------------

ALICE = Principal(id="alice", display_name="Alice Adams", email="alice@example.com")
BILLING = Principal(id="nhi:billing-api", kind=PrincipalKind.NHI, owner_id="alice")
SECRET_ACTIONS = {Action.RESET_PASSWORD, Action.TEMPORARY_ACCESS, Action.ROTATE_SECRET}


def request_for(action: Action, target: Principal, rid: str = "TK-0000ABCD") -> Request:
    return Request(
        id=rid,
        ticket="INC-1234",
        action=action,
        target_id=target.id,
        target_name=target.name,
        target_kind=target.kind,
        owner_id=target.owner_of_record or "",
        requester_id="bob",
        reason_code="lost-device",
        plan=Plan(rule="default", tier="standard"),
        created_at=0,
        expires_at=1,
    )


def target_for(action: Action) -> Principal:
    return BILLING if action.for_nhi else ALICE


def test_supports_rotate_secret_for_nhis_only_and_the_rest_for_people_only() -> None:
    connector: IdentityProvider = SandboxConnector()

    assert connector.name == "sandbox"
    for action in Action:
        assert connector.supports(action, ALICE) is (action is not Action.ROTATE_SECRET)
        assert connector.supports(action, BILLING) is (action is Action.ROTATE_SECRET)


@pytest.mark.parametrize("action", list(Action))
async def test_execute_records_the_change_and_returns_a_secret_only_where_one_is_due(
    action: Action,
) -> None:
    connector = SandboxConnector()
    target = target_for(action)
    before = datetime.now(UTC).replace(microsecond=0)  # the record keeps milliseconds

    result = await connector.execute(action, target, request_for(action, target))

    assert result.outcome is Outcome.COMPLETED
    assert "no real system was changed" in result.detail
    (change,) = connector.changes
    assert (change.action, change.target_id, change.request_id, change.ticket) == (
        action,
        target.id,
        "TK-0000ABCD",
        "INC-1234",
    )
    assert change.outcome is Outcome.COMPLETED
    assert before <= datetime.fromisoformat(change.at) <= datetime.now(UTC)
    if action in SECRET_ACTIONS:
        assert result.secret is not None
        assert result.secret_label == change.secret_label != ""
    else:
        assert result.secret is None and result.secret_label == change.secret_label == ""


async def test_secret_labels_say_what_the_owner_receives() -> None:
    connector = SandboxConnector()
    labels = {}
    for action in SECRET_ACTIONS:
        target = target_for(action)
        labels[action] = (
            await connector.execute(action, target, request_for(action, target))
        ).secret_label
    assert labels == {
        Action.RESET_PASSWORD: "temporary password",
        Action.TEMPORARY_ACCESS: "temporary access pass",
        Action.ROTATE_SECRET: "new secret",
    }


async def test_secrets_are_strong_and_never_repeat() -> None:
    connector = SandboxConnector()
    seen: dict[Action, set[str]] = {a: set() for a in SECRET_ACTIONS}
    for _ in range(20):
        for action in SECRET_ACTIONS:
            target = target_for(action)
            result = await connector.execute(action, target, request_for(action, target))
            assert result.secret is not None
            seen[action].add(result.secret.get_secret_value())
    assert all(len(values) == 20 for values in seen.values())
    for password in seen[Action.RESET_PASSWORD]:
        assert len(password) >= 16
        for group in (string.ascii_lowercase, string.ascii_uppercase, string.digits):
            assert any(c in group for c in password)
    for access_pass in seen[Action.TEMPORARY_ACCESS]:
        assert re.fullmatch(r"[2-9A-HJKMNP-TV-Z]{4}(-[2-9A-HJKMNP-TV-Z]{4}){3}", access_pass)
    for key in seen[Action.ROTATE_SECRET]:
        assert len(key) >= 43  # 32 random bytes, URL-safe base64


async def test_secrets_never_reach_the_record_the_file_or_the_words(tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    connector = SandboxConnector(path)
    secrets_given = []
    for action in SECRET_ACTIONS:
        target = target_for(action)
        result = await connector.execute(action, target, request_for(action, target))
        assert result.secret is not None
        secret = result.secret.get_secret_value()
        secrets_given.append(secret)
        assert secret not in repr(result) and secret not in str(result)
        assert secret not in result.detail

    recorded = path.read_text(encoding="utf-8") + repr(connector.changes)
    recorded += "".join(c.model_dump_json() for c in connector.changes)
    for secret in secrets_given:
        assert secret not in recorded


async def test_each_change_is_appended_as_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    path.write_text('{"earlier": "line"}\n', encoding="utf-8")
    connector = SandboxConnector(path)

    await connector.execute(Action.RESET_MFA, ALICE, request_for(Action.RESET_MFA, ALICE, "TK-1"))
    await connector.execute(
        Action.ROTATE_SECRET, BILLING, request_for(Action.ROTATE_SECRET, BILLING, "TK-2")
    )

    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"earlier": "line"}'
    first, second = (json.loads(line) for line in lines[1:])
    assert first["action"] == "reset-mfa" and first["target_id"] == "alice"
    assert first["request_id"] == "TK-1" and first["outcome"] == "completed"
    assert second["action"] == "rotate-secret" and second["target_id"] == "nhi:billing-api"
    assert second["secret_label"] == "new secret"
    assert set(first) == {
        "at", "action", "target_id", "request_id", "ticket", "outcome", "detail", "secret_label"
    }  # fmt: skip


async def test_concurrent_changes_each_get_a_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    connector = SandboxConnector(path)

    await asyncio.gather(
        *(
            connector.execute(Action.UNLOCK, ALICE, request_for(Action.UNLOCK, ALICE, f"TK-{n}"))
            for n in range(25)
        )
    )

    ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    assert sorted(ids) == sorted(f"TK-{n}" for n in range(25))
    assert [c.request_id for c in connector.changes] == ids


async def test_fail_actions_end_failed_with_words_and_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "changes.jsonl"
    connector = SandboxConnector(path, fail_actions=["reset-password"])

    failed = await connector.execute(
        Action.RESET_PASSWORD, ALICE, request_for(Action.RESET_PASSWORD, ALICE)
    )
    other = await connector.execute(Action.UNLOCK, ALICE, request_for(Action.UNLOCK, ALICE))

    assert failed.outcome is Outcome.FAILED
    assert failed.secret is None and failed.secret_label == ""
    assert "refused to reset the password for Alice Adams (alice)" in failed.detail
    assert other.outcome is Outcome.COMPLETED
    assert [c.outcome for c in connector.changes] == [Outcome.FAILED, Outcome.COMPLETED]
    assert json.loads(path.read_text().splitlines()[0])["outcome"] == "failed"


async def test_unknown_actions_end_unknown_with_words_and_no_secret() -> None:
    connector = SandboxConnector(unknown_actions={Action.ROTATE_SECRET})

    result = await connector.execute(
        Action.ROTATE_SECRET, BILLING, request_for(Action.ROTATE_SECRET, BILLING)
    )

    assert result.outcome is Outcome.UNKNOWN
    assert result.secret is None
    assert "may or may not have happened" in result.detail
    assert connector.changes[0].outcome is Outcome.UNKNOWN


async def test_an_unsupported_action_fails_with_words_instead_of_raising() -> None:
    connector = SandboxConnector()

    on_nhi = await connector.execute(
        Action.RESET_MFA, BILLING, request_for(Action.RESET_MFA, BILLING)
    )
    on_person = await connector.execute(
        Action.ROTATE_SECRET, ALICE, request_for(Action.ROTATE_SECRET, ALICE)
    )

    assert on_nhi.outcome is on_person.outcome is Outcome.FAILED
    assert "does not apply to a non-human identity" in on_nhi.detail
    assert "does not apply to a person" in on_person.detail
    assert on_person.secret is None


async def test_a_target_that_is_not_the_requests_is_refused() -> None:
    connector = SandboxConnector()
    grace = Principal(id="grace", email="grace@example.com")

    result = await connector.execute(Action.UNLOCK, grace, request_for(Action.UNLOCK, ALICE))

    assert result.outcome is Outcome.FAILED
    assert "is for unlock on alice, not unlock on grace" in result.detail


def test_bad_connector_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConnectorConfigError, match=r"fail_actions: 'reboot' is not an action"):
        SandboxConnector(fail_actions=["reboot"])
    with pytest.raises(ConnectorConfigError, match=r"unlock cannot be in both"):
        SandboxConnector(fail_actions=["unlock"], unknown_actions=[Action.UNLOCK])
    with pytest.raises(ConnectorConfigError, match=r"does not exist"):
        SandboxConnector(tmp_path / "missing" / "changes.jsonl")


async def test_an_unwritable_record_file_fails_the_change_and_records_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "changes.jsonl"
    path.mkdir()  # a folder where the file should be: appending to it fails
    connector = SandboxConnector(path)

    result = await connector.execute(
        Action.RESET_PASSWORD, ALICE, request_for(Action.RESET_PASSWORD, ALICE)
    )

    assert result.outcome is Outcome.FAILED
    assert result.secret is None
    assert "record file could not be written" in result.detail
    assert connector.changes == []


def test_the_connector_says_it_is_not_for_production() -> None:
    assert "Not for production" in SandboxConnector.description
    assert "Not for production" in (SandboxConnector.__doc__ or "")


def test_a_mis_indented_line_is_said_in_words_with_where_it_is() -> None:
    """PyYAML's "expected <block end>, but found '<block mapping start>'", with no hint."""
    (problem,) = problems_of(SMALL.replace("    email: Alice@Example.com", "     email: x@y.z"))
    assert problem.startswith("line ")
    assert "this line is probably indented more than the line above it" in problem
    (tabbed,) = problems_of(SMALL.replace("    email: Alice@Example.com", "\temail: x@y.z"))
    assert "a tab is used to indent this line; YAML takes spaces only" in tabbed
