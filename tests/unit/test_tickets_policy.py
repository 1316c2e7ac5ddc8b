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
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S) if "tickets:" in b]
    base = policy_text().replace("'^(INC|REQ|CHG)-\\\\d{3,8}$'", "'^INC\\\\d{7}$'")
    tickets = load_policy_text(base + block.split("\n", 1)[1]).tickets
    assert tickets.system == "servicenow" and tickets.write_back.notes
    assert tickets.checks_for("standard").assigned_to_requester
