"""The README is what operators and outside test suites write their files from: keep it true."""

from __future__ import annotations

import re
from pathlib import Path

from app.connectors.sandbox import SandboxDirectory
from app.policy.loader import load_policy_text
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README, flags=re.S)


def test_the_policy_example_is_a_complete_valid_policy() -> None:
    [block] = [b for b in yaml_blocks() if "tiers:" in b]
    policy = load_policy_text(block, "README.md")
    assert {"standard", "privileged", "production-nhi", "strictest"} <= set(policy.tiers)


def test_the_directory_example_is_a_complete_valid_directory() -> None:
    [block] = [b for b in yaml_blocks() if "people:" in b]
    directory = SandboxDirectory.from_yaml(block, "README.md")
    assert any(p.id == "nhi:billing-api" for p in directory.principals)


def test_every_tier_of_the_policy_example_can_be_approved_in_the_directory_example() -> None:
    """Whoever writes their files from the README gets tiers someone can approve: enough
    enabled people hold each tier's approver role (two security approvers, say)."""
    [policy_block] = [b for b in yaml_blocks() if "tiers:" in b]
    [people_block] = [b for b in yaml_blocks() if "people:" in b]
    policy = load_policy_text(policy_block, "README.md")
    people = SandboxDirectory.from_yaml(people_block, "README.md").principals
    for name, tier in policy.tiers.items():
        groups = set(policy.roles.get(tier.approver_role, ()))
        able = [p.id for p in people if not p.disabled and groups & set(p.groups)]
        assert len(able) >= tier.approvals, (name, tier.approver_role, able)


def test_the_connectors_example_is_valid_in_a_policy() -> None:
    from app.connector_setup import connector_problems
    from app.policy.loader import read_located_yaml

    [policy] = [b for b in yaml_blocks() if "tiers:" in b]
    [connectors] = [b for b in yaml_blocks() if b.startswith("connectors:")]
    document = read_located_yaml(policy + connectors, "README.md")
    assert connector_problems(document) == []


def test_every_setting_is_documented_in_readme_and_env_example() -> None:
    env_example = (ROOT / ".env.example").read_text()
    for field in Settings.model_fields.values():
        name = field.alias
        assert name is not None
        assert name in README, f"{name} is not in README.md"
        assert name in env_example, f"{name} is not in .env.example"
