"""Which control each section gives evidence for: data, so a framework is a few more lines.

Each mapping names a figure of the report by its path (``section.figure``); its evidence count
is that figure (a number, or the length of a list). Add a framework or a control by adding a
``Control``; the HTML, PDF and JSON pick it up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Control:
    framework: str
    control: str
    title: str
    section: str
    evidence: str
    """Dotted path of the figure that counts the evidence, e.g. ``fraud.disputes``."""
    what: str
    """What the figure shows, in words an auditor reads."""


CSF = "NIST CSF 2.0"
NHI = "OWASP Non-Human Identities Top 10 (2025)"
SP80063B = "NIST SP 800-63B"

CONTROLS: tuple[Control, ...] = (
    Control(
        CSF,
        "PR.AA-01",
        "Identities and credentials are managed",
        "3. Separation of duties",
        "separation_of_duties.executions",
        "identity changes executed through the two-person rule",
    ),
    Control(
        CSF,
        "PR.AA-02",
        "Identities are proofed and bound to credentials",
        "3. Separation of duties",
        "separation_of_duties.with_owner_confirmation",
        "executions confirmed by the account's owner of record out of band",
    ),
    Control(
        CSF,
        "PR.AA-05",
        "Access authorizations enforce least privilege and separation of duties",
        "3. Separation of duties",
        "separation_of_duties.with_approval",
        "executions approved by an authorised person other than the requester and target",
    ),
    Control(
        CSF,
        "PR.AA-05",
        "Access authorizations enforce least privilege and separation of duties",
        "4. Fraud and disputes",
        "fraud.refused_attempts",
        "attempts refused and audited (self-approval, wrong role, not the owner)",
    ),
    Control(
        CSF,
        "DE.CM-03",
        "Personnel activity is monitored to find adverse events",
        "4. Fraud and disputes",
        "fraud.owner_rejections",
        'owners answering "this wasn\'t me"',
    ),
    Control(
        CSF,
        "DE.CM-03",
        "Personnel activity is monitored to find adverse events",
        "6. Privileged people and production NHIs",
        "privileged.security_alerted",
        "changes to privileged people or production NHIs alerted to security",
    ),
    Control(
        CSF,
        "RS.MA-01",
        "Incidents are handled once declared",
        "4. Fraud and disputes",
        "fraud.disputes",
        "changes disputed by the owner afterwards (account flagged)",
    ),
    Control(
        CSF,
        "RS.AN-03",
        "Analysis establishes what took place during an incident",
        "5. Break-glass",
        "breakglass.reviews_closed",
        "break-glass uses reviewed after the fact",
    ),
    Control(
        NHI,
        "NHI7",
        "Long-lived secrets",
        "7. NHI secrets",
        "nhi_secrets.rotations",
        "NHI secret rotations (and the age of each current secret)",
    ),
    Control(
        NHI,
        "NHI1",
        "Improper offboarding",
        "7. NHI secrets",
        "nhi_secrets.secret_age",
        "NHIs seen in the trail, each with the owner of record who confirms its changes",
    ),
    Control(
        NHI,
        "NHI2",
        "Secret leakage",
        "7. NHI secrets",
        "nhi_secrets.rotations",
        "new secrets delivered to the owner only, never shown to agent or approver",
    ),
    Control(
        SP80063B,
        "Account recovery",
        "Recovery bound to the subscriber, who is notified",
        "3. Separation of duties",
        "separation_of_duties.with_owner_confirmation",
        "resets confirmed by the owner before they ran; owners told of each outcome",
    ),
    Control(
        SP80063B,
        "Account recovery",
        "Recovery bound to the subscriber, who is notified",
        "4. Fraud and disputes",
        "fraud.disputes",
        "recoveries the owner disputed afterwards",
    ),
)


def figure(report: Mapping[str, Any], path: str) -> int:
    """The evidence count at ``path``: a number as is, a list or mapping by its length."""
    value: Any = report
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, list | dict):
        return len(value)
    return 0


def control_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "framework": c.framework,
            "control": c.control,
            "title": c.title,
            "section": c.section,
            "evidence": c.what,
            "figure": c.evidence,
            "count": figure(report, c.evidence),
        }
        for c in CONTROLS
    ]
