"""The policy file: loading, locating every mistake, explaining, and what evaluation promises."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.domain.durations import MAX_SECONDS, format_duration, parse_duration
from app.domain.errors import BadInput, PolicyError, VelocityLimited
from app.domain.models import Action, Principal, PrincipalKind
from app.domain.policy import Policy, Signals, evaluate
from app.policy import (
    PolicyFileError,
    check_file,
    example_policy,
    explain,
    load_policy,
    load_policy_text,
    policy_warnings,
    render_explanation,
)
from app.policy.explain import Live

# A small valid policy; the mistake tests change one line and expect that line back.
BASE = """\
version: 1
reason_codes: [lost-device]
roles:
  helpdesk: [helpdesk]
  approver: [helpdesk-leads]
  security: [security]
tiers:
  standard:
    approvals: 1
    remind_after: 15m
  privileged:
    approvals: 2
    approver_role: security
rules:
  - name: admins
    when: {target_groups: [admins]}
    tier: privileged
  - name: default
    tier: standard
"""


def problems_in(text: str) -> list[str]:
    with pytest.raises(PolicyFileError) as caught:
        load_policy_text(text, "policy.yaml")
    return [str(problem) for problem in caught.value.problems]


def place_of(problem: str) -> tuple[str, ...]:
    """(line, column, path) of a reported problem."""
    found = re.match(r"policy\.yaml:(\d+):(\d+) (\S+):", problem)
    assert found is not None, problem
    return found.groups()


def changed(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


def person(pid: str, *groups: str) -> Principal:
    return Principal(id=pid, display_name=pid.title(), groups=frozenset(groups))


def nhi(pid: str, owner: str, *tags: str) -> Principal:
    return Principal(id=pid, kind=PrincipalKind.NHI, owner_id=owner, tags=frozenset(tags))


# ---- the example policy -----------------------------------------------------------------------


def test_the_example_policy_loads_with_what_the_readme_promises() -> None:
    policy = example_policy()

    policy.check_ticket("INC-1234")
    policy.check_ticket("CHG-12345678")
    for bad in ("INC-12", "ABC-1234", "inc-1234"):
        with pytest.raises(BadInput):
            policy.check_ticket(bad)
    assert "lost-device" in policy.reason_codes
    assert "scheduled-rotation" in policy.reason_codes
    assert policy.roles["approver"] == ["helpdesk-leads"]
    assert policy.roles["breakglass"] == ["security-oncall"]
    assert policy.tiers["privileged"].approvals == 2
    assert policy.tiers["privileged"].approver_role == "security"
    assert policy.tiers["standard"].escalate_to == "security"
    assert policy.strictest_tier == "strictest"
    assert policy.breakglass is not None and policy.breakglass.skip == ["approvals"]
    assert policy.channels.approvals["slack"] == "C0TWOKEYAPPROVALS"
    assert policy.retention == 30 * 86400


@pytest.mark.parametrize("ticket", ["INC-１２３４", "INC-١٢٣٤", "INC-१२३४"])
def test_a_ticket_id_with_non_ascii_digits_is_refused(ticket: str) -> None:
    """``\\d`` is any Unicode digit in Python: a look-alike ticket id must not pass."""
    for policy in (example_policy(), load_policy_text(BASE, "policy.yaml")):
        with pytest.raises(BadInput, match="does not look like a ticket id"):
            policy.check_ticket(ticket)
    custom = load_policy_text(BASE + "ticket_pattern: '^\\w+-\\d+$'\n", "policy.yaml")
    custom.check_ticket("INC-1234")
    with pytest.raises(BadInput):
        custom.check_ticket(ticket)


def test_every_rule_and_every_tier_of_the_example_is_reachable() -> None:
    policy = example_policy()
    cases = {
        "flagged-target": (person("alice"), Signals(target_flagged=True)),
        "privileged-account": (person("root", "admins"), Signals()),
        "production-nhi": (nhi("svc-billing", "bob", "production"), Signals()),
        "default": (person("alice"), Signals()),
    }
    assert set(cases) == {rule.name for rule in policy.rules}
    reached = set()
    for rule_name, (target, signals) in cases.items():
        action = Action.ROTATE_SECRET if target.kind is PrincipalKind.NHI else Action.RESET_MFA
        plan = evaluate(policy, action, target, signals)
        assert plan.rule == rule_name
        reached.add(plan.tier)
    reached.add(evaluate(policy, Action.UNLOCK, person("a"), Signals(), breakglass=True).tier)
    assert reached == set(policy.tiers)


def test_the_example_velocity_limits_refuse_then_escalate() -> None:
    policy = example_policy()
    alice = person("alice")
    with pytest.raises(VelocityLimited):
        evaluate(policy, Action.RESET_MFA, alice, Signals(target_count={"0": 2}))
    # Two resets of one person is the limit for MFA only.
    assert evaluate(policy, Action.UNLOCK, alice, Signals(target_count={"0": 2})).tier == "standard"
    escalated = evaluate(policy, Action.UNLOCK, alice, Signals(requester_count={"1": 20}))
    assert escalated.tier == "strictest" and escalated.alert_security


def test_connectors_are_accepted_and_passed_through_untouched() -> None:
    text = BASE + "connectors:\n  - kind: okta\n    domain: example.okta.com\n    retries: 3\n"
    policy = load_policy_text(text, "policy.yaml")
    assert policy.connectors == [{"kind": "okta", "domain": "example.okta.com", "retries": 3}]


def test_load_policy_reads_a_file_and_names_it_in_locations(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    assert load_policy(good).tiers["privileged"].approvals == 2

    bad = tmp_path / "bad.yaml"
    bad.write_text(changed("approvals: 2", "approvals: 9"))
    with pytest.raises(PolicyFileError) as caught:
        load_policy(bad)
    assert isinstance(caught.value, PolicyError)
    assert str(caught.value.problems[0]).startswith(f"{bad}:12:5 tiers.privileged.approvals:")


# ---- each kind of mistake, at its place -------------------------------------------------------


def test_the_base_policy_is_valid() -> None:
    assert load_policy_text(BASE, "policy.yaml").rules[-1].name == "default"


def test_an_unknown_tier_in_a_rule_is_reported_on_that_rule() -> None:
    assert problems_in(changed("tier: privileged", "tier: privilegd")) == [
        "policy.yaml:17:5 rules.0.tier: unknown tier 'privilegd'; "
        "tiers defined: privileged, standard"
    ]


def test_a_bad_duration_is_reported_on_its_key() -> None:
    assert problems_in(changed("remind_after: 15m", "remind_after: 15x")) == [
        "policy.yaml:10:5 tiers.standard.remind_after: "
        "'15x' is not a duration: write it like 90s, 15m, 4h or 7d"
    ]


def test_too_many_approvals_are_reported_on_the_key() -> None:
    assert problems_in(changed("approvals: 2", "approvals: 9")) == [
        "policy.yaml:12:5 tiers.privileged.approvals: Input should be less than or equal to 5"
    ]


def test_an_unknown_key_is_named_with_a_suggestion() -> None:
    (problem,) = problems_in(changed("approvals: 2\n", "approvals: 2\n    aproval_ttl: 10m\n"))
    assert problem.startswith(
        "policy.yaml:13:5 tiers.privileged.aproval_ttl: unknown setting 'aproval_ttl'; "
        "did you mean 'approval_ttl'?"
    )


def test_a_yaml_syntax_error_names_its_line() -> None:
    (problem,) = problems_in(changed("  security: [security]", "  security: [security"))
    assert problem.startswith("policy.yaml:7:6 not valid YAML: while parsing a flow sequence")
    assert "(it began on line 6)" in problem


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        (
            "  security: [security]",
            "\tsecurity: [security]",
            "a tab is used to indent this line; YAML takes spaces only",
        ),
        (
            "  security: [security]",
            "   security: [security]",
            "this line is indented differently from the lines it belongs with",
        ),
        (
            "reason_codes: [",
            "reason_codes: see: [",
            "a value holding ': ' needs quotes around it",
        ),
        (
            "  security: [security]",
            " security: [security]",
            "this line is indented differently from the lines it belongs with",
        ),
    ],
    ids=["tab", "indented-more", "indented-less", "colon-in-a-value"],
)
def test_the_common_yaml_mistakes_are_said_in_words(old: str, new: str, words: str) -> None:
    """PyYAML's "expected <block end>, but found '<block mapping start>'" told an operator
    nothing; its words stay, in brackets, after the sentence."""
    (problem,) = problems_in(changed(old, new))
    assert words in problem
    assert "[YAML: " in problem


def test_a_bad_ticket_pattern_is_reported() -> None:
    (problem,) = problems_in(BASE + "ticket_pattern: '(INC'\n")
    assert problem.startswith("policy.yaml:20:1 ticket_pattern: not a valid regular expression")


def test_a_last_rule_that_does_not_match_everything_is_reported() -> None:
    text = changed("  - name: default\n    tier: standard\n", "")
    assert problems_in(text) == [
        "policy.yaml:16:5 rules.0.when: the last rule must match everything (leave out `when`), "
        "so every request gets a tier; add a final rule such as "
        "`- {name: default, tier: standard}`"
    ]


def test_an_unknown_role_is_reported_on_the_tier_even_when_defaulted() -> None:
    text = changed("  approver: [helpdesk-leads]\n", "")
    assert problems_in(text) == [
        "policy.yaml:7:3 tiers.standard.approver_role: unknown role 'approver' "
        "(the default approver_role); roles defined: helpdesk, security"
    ]


def test_a_key_written_twice_is_reported_on_the_second() -> None:
    assert problems_in(
        changed("    remind_after: 15m\n", "    remind_after: 15m\n    approvals: 1\n")
    ) == [
        "policy.yaml:11:5 tiers.standard.approvals: 'approvals' is written twice here "
        "(first on line 9); only the last one would count, so remove one"
    ]


def test_a_key_overriding_a_yaml_merge_is_not_a_duplicate() -> None:
    text = changed(
        "  standard:\n    approvals: 1\n",
        "  base: &base\n    approvals: 2\n  standard:\n    <<: *base\n    approvals: 1\n",
    )
    assert load_policy_text(text, "policy.yaml").tiers["standard"].approvals == 1
    assert problems_in(text.replace("remind_after: 15m", "remind_after: 15x")) == [
        "policy.yaml:13:5 tiers.standard.remind_after: "
        "'15x' is not a duration: write it like 90s, 15m, 4h or 7d"
    ]


def test_a_missing_setting_is_reported() -> None:
    assert problems_in(changed("reason_codes: [lost-device]\n", "")) == [
        "policy.yaml:1:1 reason_codes: this setting is required but missing"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "policy.yaml:1:1 the policy file is empty"),
        ("# nothing but a comment\n", "policy.yaml:1:1 the policy file is empty"),
        ("- a\n- b\n", "policy.yaml:1:1 the policy file must be a mapping of settings"),
    ],
)
def test_a_file_that_is_not_a_policy_at_all(text: str, expected: str) -> None:
    (problem,) = problems_in(text)
    assert problem.startswith(expected)


def test_a_flagged_tier_weaker_than_another_tier_is_refused() -> None:
    (problem,) = problems_in(BASE + "fraud:\n  flagged_tier: standard\n")
    assert problem.startswith("policy.yaml:21:3 fraud.flagged_tier: tier 'standard' is used")
    assert "tier privileged asks for more" in problem


def test_a_timer_past_the_request_ttl_is_refused() -> None:
    (problem,) = problems_in(changed("remind_after: 15m", "remind_after: 5h"))
    assert problem == (
        "policy.yaml:8:3 tiers.standard: remind_after (5h) must be shorter than request_ttl "
        "(4h), or it would never happen"
    )


def test_several_mistakes_are_all_reported_in_file_order() -> None:
    text = (
        BASE.replace("remind_after: 15m", "remind_after: 15x")
        .replace("approvals: 2", "approvals: 9")
        .replace("approver_role: security", "approver_role: secu")
        .replace("tier: privileged", "tier: privilegd")
        + "unknown_setting: 1\n"
        + "ticket_pattern: '(INC'\n"
    )
    problems = problems_in(text)
    places = [place_of(problem) for problem in problems]
    assert places == [
        ("10", "5", "tiers.standard.remind_after"),
        ("12", "5", "tiers.privileged.approvals"),
        ("13", "5", "tiers.privileged.approver_role"),
        ("17", "5", "rules.0.tier"),
        ("20", "1", "unknown_setting"),
        ("21", "1", "ticket_pattern"),
    ]
    with pytest.raises(PolicyFileError) as caught:
        load_policy_text(text, "policy.yaml")
    assert "6 problems" in caught.value.message
    assert all(p in caught.value.message for p in problems)


def test_check_file_exit_codes(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(BASE)
    bad.write_text(changed("approvals: 2", "approvals: 9"))

    code, text = check_file(good)
    assert code == 0 and "OK" in text and "admins -> privileged" in text
    code, text = check_file(bad)
    assert code == 1 and f"{bad}:12:5 tiers.privileged.approvals" in text
    code, text = check_file(tmp_path / "missing.yaml")
    assert code == 2 and "cannot read the file" in text


# ---- explain ----------------------------------------------------------------------------------


def test_explain_says_which_rule_matched_and_why_earlier_ones_did_not() -> None:
    policy = example_policy()
    result = explain(
        policy, Action.RESET_MFA, person("root", "admins"), person("bob", "helpdesk"), Signals()
    )
    assert [(r.name, r.matched) for r in result.rules] == [
        ("flagged-target", False),
        ("privileged-account", True),
    ]
    assert result.rules[0].failed == ["target is not flagged after a fraud signal"]
    assert result.rules[1].held == ["target is in group admins"]
    assert result.not_reached == ["production-nhi", "default"]
    assert result.plan is not None
    assert (result.plan.tier, result.plan.approvals_needed) == ("privileged", 2)
    assert result.plan.approver_role == "security" and result.approver_groups == ["security"]
    assert result.plan.alert_security and result.would_open

    text = render_explanation(result)
    assert "MATCH privileged-account -> tier privileged: target is in group admins" in text
    assert "no    flagged-target -> tier strictest: target is not flagged" in text
    assert "2 approvals by role 'security' (groups: security)" in text
    assert "owner confirmation by root, the account's owner" in text
    assert "the request expires after 1h" in text and "valid for 15m" in text
    assert "Security is alerted: slack C0TWOKEYSECURITY" in text
    assert "Outcome: a request would open in tier privileged." in text


def test_explain_a_standard_request_shows_reminder_and_escalation() -> None:
    result = explain(example_policy(), Action.UNLOCK, person("alice"), None, Signals())
    text = render_explanation(result)
    assert result.matched_rule == "default" and result.escalation_groups == ["security"]
    assert "1 approval by role 'approver' (groups: helpdesk-leads)" in text
    assert "reminder once after 15m" in text
    assert "escalation after 1h to role 'security' (groups: security)" in text
    assert "Security is not alerted." in text
    assert result.requester is None and result.would_open


def test_explain_an_nhi_names_its_owner_and_refuses_the_owner_as_requester() -> None:
    svc = nhi("svc-billing", "bob", "production")
    result = explain(
        example_policy(), Action.ROTATE_SECRET, svc, person("bob", "helpdesk"), Signals()
    )
    assert result.plan is not None and result.plan.tier == "production-nhi"
    assert result.requester is not None and not result.requester.may_open
    assert not result.would_open
    text = render_explanation(result)
    assert "owner confirmation by bob, the owner of record of this non-human identity" in text
    assert "You own this identity" in text
    assert text.endswith(
        "Outcome: REFUSED. Bob would be told: You own this identity: someone else must open "
        "the request."
    )


def test_explain_refuses_a_requester_without_the_role_or_on_themself() -> None:
    policy = example_policy()
    outsider = explain(policy, Action.UNLOCK, person("alice"), person("eve"), Signals())
    assert outsider.requester is not None and not outsider.requester.may_open
    assert "does not hold role 'helpdesk': not a member of helpdesk" in outsider.requester.reasons

    agent = person("bob", "helpdesk")
    on_self = explain(policy, Action.UNLOCK, agent, agent, Signals())
    assert on_self.requester is not None and not on_self.requester.may_open
    assert "You cannot open a request on your own account." in on_self.requester.reasons


def test_explain_a_velocity_refusal_gives_the_message_and_the_plan_behind_it() -> None:
    result = explain(
        example_policy(), Action.RESET_MFA, person("alice"), None, Signals(target_count={"0": 2})
    )
    assert result.refused is not None and "Velocity limit" in result.refused
    assert result.plan is not None and result.plan.tier == "standard"
    assert not result.would_open
    text = render_explanation(result)
    assert "reset-mfa per target: 2 of 2 in 1d (reached: refused)" in text
    assert text.endswith(f"Outcome: REFUSED. The requester would be told: {result.refused}")


def test_explain_a_velocity_escalation_and_a_flagged_target() -> None:
    policy = example_policy()
    escalated = explain(
        policy, Action.UNLOCK, person("a"), None, Signals(requester_count={"1": 20})
    )
    assert escalated.plan is not None and escalated.plan.tier == "strictest"
    assert "escalated to the strictest tier" in render_explanation(escalated)

    flagged = explain(policy, Action.UNLOCK, person("a"), None, Signals(target_flagged=True))
    assert flagged.matched_rule == "flagged-target"
    assert flagged.plan is not None and flagged.plan.alert_security


def test_explain_break_glass() -> None:
    policy = example_policy()
    oncall, agent = person("carol", "security-oncall"), person("bob", "helpdesk")
    result = explain(policy, Action.RESET_MFA, person("alice"), oncall, Signals(), breakglass=True)
    assert result.rules == [] and result.plan is not None
    assert (result.plan.approvals_needed, result.plan.owner_confirmation) == (0, True)
    assert result.plan.alert_security and result.would_open
    assert "no approvals (skipped by break-glass)" in render_explanation(result)

    not_oncall = explain(policy, Action.RESET_MFA, person("alice"), agent, Signals(), True)
    assert not_oncall.requester is not None and not not_oncall.requester.may_open

    without = load_policy_text(BASE, "policy.yaml")
    refused = explain(without, Action.UNLOCK, person("alice"), None, Signals(), breakglass=True)
    assert refused.plan is None and refused.refused == "Break-glass is not enabled in this policy."


# ---- properties -------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=MAX_SECONDS))
def test_a_duration_survives_being_written_and_read(seconds: int) -> None:
    written = format_duration(seconds)
    assert re.fullmatch(r"(\d+d)?(\d+h)?(\d+m)?(\d+s)?", written)
    assert parse_duration(written) == seconds


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=99), st.sampled_from("smhd")),
        min_size=1,
        max_size=4,
    )
)
def test_any_written_duration_reads_back_to_its_canonical_form(
    parts: list[tuple[int, str]],
) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    try:
        seconds = parse_duration(text)
    except ValueError:
        total = sum(n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)
        assert total < 1 or total > MAX_SECONDS
        return
    assert parse_duration(format_duration(seconds)) == seconds
    assert format_duration(parse_duration(format_duration(seconds))) == format_duration(seconds)


GROUPS = ["admins", "finance", "staff"]
TAGS = ["production", "staging"]
TIER_NAMES = ["t0", "t1", "t2"]

tiers_strategy = st.fixed_dictionaries(
    {
        "approvals": st.integers(min_value=0, max_value=5),
        "owner_confirmation": st.booleans(),
        "alert_security": st.booleans(),
        "approver_role": st.sampled_from(["approver", "security"]),
    }
)
match_strategy = st.fixed_dictionaries(
    {},
    optional={
        "actions": st.lists(st.sampled_from([str(a) for a in Action]), min_size=1, unique=True),
        "target_kind": st.sampled_from(["human", "nhi"]),
        "target_groups": st.lists(st.sampled_from(GROUPS), min_size=1, unique=True),
        "target_tags": st.lists(st.sampled_from(TAGS), min_size=1, unique=True),
        "flagged": st.booleans(),
    },
)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    names = TIER_NAMES[: draw(st.integers(min_value=1, max_value=3))]
    tier = st.sampled_from(names)
    rules = [
        {"name": f"rule-{i}", "when": draw(match_strategy), "tier": draw(tier)}
        for i in range(draw(st.integers(min_value=0, max_value=3)))
    ]
    data: dict[str, Any] = {
        "reason_codes": ["lost-device"],
        "roles": {"helpdesk": ["hd"], "approver": ["leads"], "security": ["sec"], "bg": ["oc"]},
        "tiers": {name: draw(tiers_strategy) for name in names},
        "rules": [*rules, {"name": "default", "tier": draw(tier)}],
        "fraud": {"flagged_tier": draw(st.none() | tier)},
        "breakglass": {
            "role": "bg",
            "tier": draw(tier),
            "skip": draw(
                st.lists(st.sampled_from(["owner_confirmation", "approvals"]), unique=True)
            ),
        },
        "velocity": [
            {"per": "requester", "limit": 3, "window": "1h", "then": "escalate"},
            {"per": "target", "limit": 2, "window": "1d", "then": "escalate"},
        ],
    }
    try:
        return Policy.model_validate(data)
    except ValidationError:
        assume(False)
        raise  # unreachable: assume(False) stops this example


targets = st.builds(
    Principal,
    id=st.just("target"),
    kind=st.sampled_from(list(PrincipalKind)),
    groups=st.frozensets(st.sampled_from(GROUPS)),
    tags=st.frozensets(st.sampled_from(TAGS)),
    owner_id=st.just("owner"),
)
counts = st.fixed_dictionaries({"0": st.integers(0, 5), "1": st.integers(0, 5)})


@given(policies(), st.sampled_from(list(Action)), targets, counts, counts)
def test_a_fraud_flag_or_velocity_never_removes_a_gate(
    policy: Policy,
    action: Action,
    target: Principal,
    target_count: dict[str, int],
    requester_count: dict[str, int],
) -> None:
    calm = evaluate(policy, action, target, Signals())
    for signals in (
        Signals(target_flagged=True),
        Signals(target_count=target_count, requester_count=requester_count),
        Signals(target_flagged=True, target_count=target_count, requester_count=requester_count),
    ):
        worse = evaluate(policy, action, target, signals)
        assert worse.approvals_needed >= calm.approvals_needed, worse.reasons
        assert worse.owner_confirmation >= calm.owner_confirmation, worse.reasons
        if signals.target_flagged:
            assert worse.alert_security
    assert explain(policy, action, target, None, Signals()).matched_rule == calm.rule


@given(policies(), st.sampled_from(list(Action)), targets, st.booleans(), counts)
def test_break_glass_always_alerts(
    policy: Policy, action: Action, target: Principal, flagged: bool, target_count: dict[str, int]
) -> None:
    signals = Signals(target_flagged=flagged, target_count=target_count)
    plan = evaluate(policy, action, target, signals, breakglass=True)
    assert plan.breakglass and plan.alert_security


def test_the_documented_example_is_the_shipped_one() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
    documented = re.search(r"```yaml\n(.*?)```", doc, re.DOTALL)
    assert documented is not None
    assert load_policy_text(documented.group(1), "docs/policy.md") == example_policy()
    shipped = Path(__file__).parents[2] / "app" / "policy" / "example_policy.yaml"
    assert documented.group(1) == shipped.read_text(encoding="utf-8")  # comment for comment


def test_the_documented_explain_output_is_what_explain_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from app.cli import main

    doc = (Path(__file__).parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
    pattern = r"```console\n\$ twokey (policy explain --action reset-mfa[^\n]*)\n(.*?)```"
    shown = re.search(pattern, doc, re.DOTALL)
    assert shown is not None
    for name in ("TWOKEY_POLICY", "TWOKEY_DIRECTORY", "REDIS_URL", "TWOKEY_PLAYGROUND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TWOKEY_PLAYGROUND", "false")  # the shipped example, as documented
    monkeypatch.chdir(tmp_path)
    assert main(shown.group(1).split()) == 0
    assert capsys.readouterr().out == shown.group(2)


# ---- what `open` checks beyond the policy (issue 9) --------------------------------------------


class OnlyPeople:
    """A connector for people only, as an Okta or Entra one is."""

    name = "okta"

    def supports(self, action: Action, target: Principal) -> bool:
        return target.kind is PrincipalKind.HUMAN


def test_explain_refuses_an_nhi_whose_owner_of_record_has_left() -> None:
    svc = nhi("svc-billing", "alice", "production")
    gone = Principal(id="alice", disabled=True)
    agent = person("bob", "helpdesk")
    left = explain(
        example_policy(),
        Action.ROTATE_SECRET,
        svc,
        agent,
        Signals(),
        live=Live(owner=gone, connectors=[OnlyPeople()]),
    )
    assert not left.would_open
    text = render_explanation(left)
    assert "  - No identity provider configured here can rotate the secret for svc-billing." in text
    assert text.endswith(
        "Outcome: REFUSED. Bob would be told: No identity provider configured here can rotate "
        "the secret for svc-billing."
    )
    assert "The owner of record of svc-billing (alice) is not an active person" in text

    fine = explain(
        example_policy(),
        Action.UNLOCK,
        person("alice"),
        agent,
        Signals(),
        live=Live(owner=person("alice"), connectors=[OnlyPeople()]),
    )
    assert fine.would_open and fine.connector == "okta"
    assert "Connector that would make the change: okta" in render_explanation(fine)


def test_explain_counts_who_could_approve_and_says_when_too_few_could() -> None:
    """Two security approvals for an admin's MFA: with Erin and Frank in security, both can;
    when Frank is the target, only Erin could, and the request would wait until it expired."""
    pool = [person("erin", "security"), person("frank", "security", "admins")]
    agent = person("bob", "helpdesk")
    live = Live(owner=None, connectors=[OnlyPeople()], approver_pool=pool)

    def approving(target: Principal) -> str:
        result = explain(example_policy(), Action.RESET_MFA, target, agent, Signals(), live=live)
        assert result.plan is not None and result.plan.approvals_needed == 2
        return render_explanation(result)

    grace = person("grace", "admins")
    assert "    2 people in the directory could approve it\n" in approving(grace)
    frank = pool[1]
    assert (
        "    only 1 person in the directory could approve it: it would wait until it expires"
    ) in approving(frank)


def test_explain_without_the_directory_says_what_it_did_not_check() -> None:
    result = explain(example_policy(), Action.ROTATE_SECRET, nhi("svc", "bob"), None, Signals())
    assert result.would_open
    assert (
        "Note: not checked without the directory and connectors: whether a configured "
        "connector can make this change and whether the owner of record is an active person"
    ) in render_explanation(result)


def test_explain_of_a_disabled_nhi_refuses_it() -> None:
    retired = Principal(id="nhi:old", kind=PrincipalKind.NHI, owner_id="bob", disabled=True)
    result = explain(example_policy(), Action.ROTATE_SECRET, retired, None, Signals())
    assert result.refusals == ["nhi:old is disabled in the directory."]


# ---- `policy check` warns of rules and tiers that can never apply ------------------------------


def warnings_for(tmp_path: Path, rules: str, extra_tiers: str = "") -> tuple[int, list[str]]:
    path = tmp_path / "policy.yaml"
    path.write_text(BASE.split("rules:\n")[0].replace("tiers:\n", "tiers:\n" + extra_tiers) + rules)
    code, text = check_file(path)
    return code, [line.split(": ", 1)[1] for line in text.splitlines() if "warning:" in line]


def test_a_rule_repeating_an_earlier_rules_conditions_is_warned_of(tmp_path: Path) -> None:
    code, warnings = warnings_for(
        tmp_path,
        "rules:\n"
        "  - {name: admins, when: {target_groups: [admins]}, tier: privileged}\n"
        "  - {name: admins-again, when: {target_groups: [admins]}, tier: standard}\n"
        "  - {name: default, tier: standard}\n",
    )
    assert code == 0
    assert [w.split(" ", 1)[1] for w in warnings] == [
        "rules.1: rule 'admins-again' can never match: it repeats the conditions of rule "
        "'admins' above it, which wins"
    ]


def test_a_rule_narrower_than_an_earlier_one_is_warned_of(tmp_path: Path) -> None:
    _, warnings = warnings_for(
        tmp_path,
        "rules:\n"
        "  - {name: people, when: {target_kind: human}, tier: standard}\n"
        "  - {name: admin-mfa, when: {actions: [reset-mfa], target_groups: [admins]},"
        " tier: privileged}\n"
        "  - {name: nhi-keys, when: {actions: [rotate-secret]}, tier: privileged}\n"
        "  - {name: default, tier: standard}\n",
    )
    # rotate-secret applies to NHIs only, so 'people' never takes nhi-keys' requests
    assert [w.split(" ", 1)[1] for w in warnings] == [
        "rules.1: rule 'admin-mfa' can never match: every request it matches, rule 'people' "
        "above it matches too, and first; move 'admin-mfa' above 'people' or narrow it"
    ]


def test_a_rule_that_matches_nothing_and_a_tier_nothing_gives_are_warned_of(
    tmp_path: Path,
) -> None:
    _, warnings = warnings_for(
        tmp_path,
        "rules:\n"
        "  - {name: person-keys, when: {actions: [rotate-secret], target_kind: human},"
        " tier: standard}\n"
        "  - {name: nobody, when: {target_groups: []}, tier: standard}\n"
        "  - {name: default, tier: standard}\n",
        extra_tiers="  spare:\n    approvals: 1\n",
    )
    assert [w.split(" ", 1)[1] for w in warnings] == [
        "tiers.spare: tier 'spare' is never used: no rule names it, and flagged targets, "
        "velocity escalations and break-glass get other tiers",
        "rules.0: rule 'person-keys' can never match: none of its actions (rotate-secret) "
        "applies to a person",
        "rules.1: rule 'nobody' can never match: its `target_groups` list is empty",
    ]


def test_a_role_listing_no_group_is_warned_of(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BASE.replace("  approver: [helpdesk-leads]\n", "  approver: []\n"))
    code, text = check_file(path)
    assert code == 0
    warnings = [line.split(": ", 1)[1] for line in text.splitlines() if "warning:" in line]
    assert [w.split(" ", 1)[1] for w in warnings] == [
        "roles.approver: role 'approver' lists no group: nobody holds it, so nothing needing "
        "it can ever be asked for or decided"
    ]


def test_the_example_policy_draws_no_warning() -> None:
    assert policy_warnings(example_policy()) == []
