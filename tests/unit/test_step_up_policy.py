"""The policy's step-up section: validation, which verifiers a request gets, and explain."""

from __future__ import annotations

import pytest

from app.domain.models import Action, Principal
from app.domain.policy import Signals, evaluate
from app.policy import PolicyFileError, explain, load_policy_text, render_explanation

POLICY = """\
version: 1
reason_codes: [lost-device, locked-out]
roles:
  helpdesk: [helpdesk]
  approver: [helpdesk-leads]
  security: [security]
  oncall: [security-oncall]
tiers:
  standard:
    approvals: 1
  privileged:
    approvals: 2
    approver_role: security
    step_up:
      owner: [email_code]
      ttl: 10m
rules:
  - name: admins
    when: {target_groups: [admins]}
    tier: privileged
  - name: default
    tier: standard
fraud:
  flagged_tier: privileged
  step_up: [email_code]
step_up:
  max_failures: 3
  code_ttl: 10m
  code_attempts: 5
breakglass:
  role: oncall
  tier: privileged
  skip: [step_up]
"""
ALICE = Principal(id="alice", email="alice@example.com")
GRACE = Principal(id="grace", email="grace@example.com", groups=frozenset({"admins"}))


def problems_in(text: str) -> list[str]:
    with pytest.raises(PolicyFileError) as caught:
        load_policy_text(text, "policy.yaml")
    return [str(problem) for problem in caught.value.problems]


def test_the_tier_that_names_a_step_up_freezes_it_into_the_plan() -> None:
    policy = load_policy_text(POLICY)
    plan = evaluate(policy, Action.RESET_MFA, GRACE, Signals(), reason_code="lost-device")
    assert plan.owner_step_up == ("email_code",)
    assert (plan.step_up_ttl, plan.code_ttl, plan.code_attempts) == (600, 600, 5)
    assert plan.step_up_max_failures == 3
    assert "owner step-up: email_code" in plan.reasons
    assert evaluate(policy, Action.RESET_MFA, ALICE, Signals()).owner_step_up == ()


def test_a_fraud_signal_always_brings_a_step_up() -> None:
    policy = load_policy_text(
        POLICY.replace("    step_up:\n      owner: [email_code]\n      ttl: 10m\n", "")
    )
    plan = evaluate(policy, Action.UNLOCK, ALICE, Signals(target_flagged=True))
    assert plan.owner_step_up == ("email_code",)


def test_break_glass_may_skip_the_step_up() -> None:
    policy = load_policy_text(POLICY)
    plan = evaluate(policy, Action.RESET_MFA, GRACE, Signals(), breakglass=True)
    assert plan.owner_step_up == ()


def test_per_action_lists_override_the_tier_list() -> None:
    text = POLICY.replace(
        "      owner: [email_code]\n", "      owner: [email_code]\n      actions: {unlock: []}\n"
    )
    policy = load_policy_text(text)
    assert evaluate(policy, Action.UNLOCK, GRACE, Signals()).owner_step_up == ()
    assert evaluate(policy, Action.RESET_MFA, GRACE, Signals()).owner_step_up == ("email_code",)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("owner: [email_code]", "owner: [okta_sms]"), "okta_sms"),
        (("owner: [email_code]", "owner: [email_code, email_code]"), "name each verifier once"),
        (("  code_ttl: 10m", "  code_ttl: 30m"), "between 1m and 10m"),
        (("  code_attempts: 5", "  code_attempts: 50"), "less than or equal to 5"),
        (
            ("  max_failures: 3", "  max_failures: 3\n  device_lost_reasons: [lost-phone]"),
            "lost-phone",
        ),
    ],
)
def test_policy_check_refuses_a_step_up_that_cannot_work(
    change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in POLICY
    found = problems_in(POLICY.replace(old, new))
    assert any(expected in p for p in found), found


def test_the_tier_for_flagged_targets_must_step_up_if_any_tier_does() -> None:
    text = POLICY.replace("    step_up:\n      owner: [email_code]\n      ttl: 10m\n", "").replace(
        "  standard:\n    approvals: 1\n",
        "  standard:\n    approvals: 1\n    step_up: {owner: [email_code]}\n",
    )
    found = problems_in(text)
    assert any("step-up" in p and "flagged_tier" in p for p in found), found


def test_explain_says_which_step_up_a_request_needs() -> None:
    policy = load_policy_text(POLICY)
    text = render_explanation(
        explain(policy, Action.RESET_MFA, GRACE, None, Signals(), reason_code="lost-device")
    )
    assert "owner step-up (a second channel): a one-time code sent to the owner's recovery" in text
    assert "a pass counts for 10m" in text and "3 failed step-ups flag the account" in text
    plain = render_explanation(explain(policy, Action.UNLOCK, ALICE, None, Signals()))
    assert "no owner step-up" in plain


PUSH = POLICY.replace(
    "      owner: [email_code]\n",
    "      owner: [okta_push, email_code]\n      actions: {reset-mfa: [email_code]}\n",
)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("      actions: {reset-mfa: [email_code]}\n", "", "would be offered for reset-mfa"),
        ("{reset-mfa: [email_code]}", "{reset-mfa: [okta_push, email_code]}", "reset-mfa"),
        ("owner: [okta_push, email_code]", "owner: [okta_push]", "only device-based"),
        ("  step_up: [email_code]\n", "  step_up: [okta_push, email_code]\n", "fraud.step_up"),
    ],
)
def test_policy_check_refuses_a_push_where_the_device_is_what_is_at_stake(
    old: str, new: str, expected: str
) -> None:
    assert old in PUSH
    found = problems_in(PUSH.replace(old, new))
    assert any(expected in p for p in found), found


def test_a_lost_device_reason_takes_the_push_out_of_the_plan() -> None:
    policy = load_policy_text(PUSH)
    unlock = evaluate(policy, Action.UNLOCK, GRACE, Signals(), reason_code="locked-out")
    assert unlock.owner_step_up == ("okta_push", "email_code")
    lost = evaluate(policy, Action.UNLOCK, GRACE, Signals(), reason_code="lost-device")
    assert lost.owner_step_up == ("email_code",)
    mfa = evaluate(policy, Action.RESET_MFA, GRACE, Signals(), reason_code="locked-out")
    assert mfa.owner_step_up == ("email_code",)
    text = render_explanation(
        explain(policy, Action.UNLOCK, GRACE, None, Signals(), reason_code="locked-out")
    )
    assert "a push to Okta Verify on the owner's enrolled phone; else a one-time code" in text


def test_an_approver_step_up_is_an_idp_check_and_explain_says_so() -> None:
    with_approver = POLICY.replace(
        "      ttl: 10m\n", "      ttl: 10m\n      approver: [okta_push]\n"
    )
    policy = load_policy_text(with_approver)
    plan = evaluate(policy, Action.UNLOCK, GRACE, Signals())
    assert plan.approver_step_up == ("okta_push",)
    text = render_explanation(explain(policy, Action.UNLOCK, GRACE, None, Signals()))
    assert "approver step-up: an approval counts once its approver passed a push" in text
    found = problems_in(with_approver.replace("approver: [okta_push]", "approver: [email_code]"))
    assert any("cannot verify an approver" in p for p in found), found
