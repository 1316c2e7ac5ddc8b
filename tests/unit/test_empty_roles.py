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


async def test_a_role_listing_no_group_is_named() -> None:
    text = policy_text().replace("[helpdesk-leads]", "[]", 1)
    policy = load_policy_text(text, "empty.yaml")
    with capture_logs() as logs:
        await warn_of_empty_roles(policy, SandboxDirectory.example())
    warned = [e for e in logs if e["event"] == "role_has_nobody"]
    assert [(e["role"], e["groups"]) for e in warned] == [("approver", [])]
    assert "list no group" in warned[0]["note"]


async def test_a_tier_needing_more_approvers_than_its_role_holds_is_named() -> None:
    """Two security approvers, and only one person (Erin) in the group the role names."""
    text = policy_text().replace("  security: [security]\n", "  security: [security-oncall]\n", 1)
    assert text != policy_text()
    with capture_logs() as logs:
        await warn_of_empty_roles(load_policy_text(text, "p.yaml"), SandboxDirectory.example())
    warned = [e for e in logs if e["event"] == "tier_cannot_be_approved"]
    assert [(e["tier"], e["role"], e["approvals"], e["people"]) for e in warned] == [
        ("privileged", "security", 2, 1),
        ("strictest", "security", 2, 1),
    ]
    assert not [e for e in logs if e["event"] == "role_has_nobody"]
