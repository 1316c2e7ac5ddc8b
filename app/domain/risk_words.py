"""The risk statement of a request in plain words, once, for every face (Slack, Teams, playground).

It is built from why the request's tier was chosen (``Plan.risks``), so a flagged account is
called flagged and not "privileged", and a privileged account is called privileged only when the
rule that matched it said so.
"""

from __future__ import annotations

from app.domain.models import PrincipalKind, Request, Risk


def risk_lines(request: Request) -> list[tuple[Risk | str, str]]:
    """``(why, words)`` pairs, most serious first; empty for an everyday request."""
    plan = request.plan
    tier = plan.tier_label or plan.tier
    lines: list[tuple[Risk | str, str]] = []
    risks = plan.risks or _risks_of_older_requests(request)
    if Risk.BREAKGLASS in risks:
        lines.append(
            (
                Risk.BREAKGLASS,
                "BREAK-GLASS: opened on the emergency path; security reviews every use.",
            )
        )
    if Risk.FLAGGED in risks:
        lines.append(
            (
                Risk.FLAGGED,
                f"FLAGGED: {tier}. Its owner recently said a request was not theirs, so "
                "stricter rules apply: confirm with the owner by another channel.",
            )
        )
    if Risk.PRIVILEGED_ACCOUNT in risks:
        lines.append(
            (
                Risk.PRIVILEGED_ACCOUNT,
                f"PRIVILEGED: {tier}. A takeover here takes over admin rights.",
            )
        )
    if Risk.UNUSUAL_PACE in risks:
        lines.append(
            (
                Risk.UNUSUAL_PACE,
                f"UNUSUAL PACE: {tier}. Many recent requests on this account or by this agent.",
            )
        )
    if request.target_kind is PrincipalKind.NHI and plan.alert_security:
        lines.append(
            (
                "nhi",
                f"NON-HUMAN IDENTITY: {tier}. A production non-human identity: rotating its "
                "secret can stop a running service; its owner of record confirms for it.",
            )
        )
    if request.escalated:
        lines.append(("escalated", "ESCALATED: it waited too long for an approver."))
    if not lines and plan.alert_security:
        lines.append(("alerted", f"HIGH RISK: {tier}. Security has been alerted."))
    return lines


def _risks_of_older_requests(request: Request) -> tuple[Risk, ...]:
    """Requests opened before plans carried their risks: what their plan still tells."""
    if request.plan.breakglass:
        return (Risk.BREAKGLASS,)
    if any("flagged" in reason for reason in request.plan.reasons):
        return (Risk.FLAGGED,)
    return (Risk.PRIVILEGED_ACCOUNT,) if request.plan.privileged else ()
