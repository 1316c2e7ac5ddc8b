"""The playground's example policy: the packaged example plus a high-impact tier with a step-up,
so a newcomer can see one (a push on the simulated phone, a code in the simulated mailbox).

Used only where the playground runs on the packaged example (no TWOKEY_POLICY, loopback, no
chat credentials); a configured policy is never changed. Platform engineers (the sandbox's
``platform`` group: Ivan) get the tier: their accounts reach production.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from app.domain.policy import Policy
from app.policy.loader import EXAMPLE_POLICY, load_policy_text

SOURCE = "example policy with the playground's step-up tier"
TIER = "high-impact"
RULE: dict[str, Any] = {"name": "platform-engineers", "when": {"target_groups": ["platform"]}}
STEP_UP_TIER: dict[str, Any] = {
    "label": "High impact (step-up demo)",
    "owner_confirmation": True,
    "approvals": 1,
    "approver_role": "approver",
    "request_ttl": "4h",
    "approval_ttl": "30m",
    "step_up": {
        # A push to the owner's phone first; a code to their recovery email if no push can go.
        "owner": ["okta_push", "email_code"],
        # Never a push for reset-mfa: the device is the one being replaced.
        "actions": {"reset-mfa": ["email_code", "manager"]},
        # The approver approves the push on their own phone before the approval counts.
        "approver": ["okta_push"],
    },
}
FLAGGED_STEP_UP = {"owner": ["email_code", "manager"]}
"""The strictest tier must demand every gate another tier does, a step-up included."""


def playground_policy() -> Policy:
    """The packaged example with the step-up tier, its rule (before the default) and a
    step-up on the strictest tier; validated like any policy file."""
    text = resources.files("app.policy").joinpath(EXAMPLE_POLICY).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["tiers"][TIER] = STEP_UP_TIER
    data["tiers"][data["fraud"]["flagged_tier"]]["step_up"] = FLAGGED_STEP_UP
    data["rules"].insert(len(data["rules"]) - 1, {**RULE, "tier": TIER})
    return load_policy_text(yaml.safe_dump(data, sort_keys=False), SOURCE)
