"""Start-up says which role has nobody in the directory (a typo in a group name, an approvers'
group never filled): twokey starts, but no request needing that role could ever be decided."""

from __future__ import annotations

from structlog.testing import capture_logs

from app.bootstrap import warn_of_empty_roles
from app.connectors.sandbox import SandboxDirectory
from app.policy.loader import example_policy, load_policy_text
from tests.helpers import policy_text


async def test_the_shipped_policy_and_directory_have_someone_in_every_role() -> None:
    with capture_logs() as logs:
        await warn_of_empty_roles(example_policy(), SandboxDirectory.example())
    assert not [e for e in logs if e["event"] == "role_has_nobody"]


async def test_an_approvers_group_nobody_is_in_is_named() -> None:
    text = policy_text().replace("[helpdesk-leads]", "[helpdesk-lead]", 1)
    assert text != policy_text()
    policy = load_policy_text(text, "typo.yaml")
    with capture_logs() as logs:
        await warn_of_empty_roles(policy, SandboxDirectory.example())
    warned = [e for e in logs if e["event"] == "role_has_nobody"]
    assert [(e["role"], e["groups"]) for e in warned] == [("approver", ["helpdesk-lead"])]
