"""Connector tests: each connector against a local stand-in of its provider.

Shared here: a help desk request to execute, and a sleep that records waits instead of
waiting, so rate-limit tests check how long a connector would wait without timing anything.
"""

from __future__ import annotations

from app.domain.models import Action, Approval, Plan, Principal, Request


def request_for(action: Action, target: Principal, *, ticket: str = "INC-1234") -> Request:
    """An approved request (owner confirmed, one approval) as the core hands it to a connector."""
    return Request(
        id="TK-7QX2M9AB",
        ticket=ticket,
        action=action,
        target_id=target.id,
        target_name=target.name,
        target_kind=target.kind,
        target_system=target.system,
        owner_id=target.owner_of_record or target.id,
        requester_id="00uagent0001",
        requester_name="Henry Helpdesk",
        reason_code="lost-device",
        plan=Plan(rule="standard-reset", tier="standard", tier_label="Standard"),
        created_at=1_767_225_600_000,
        expires_at=1_767_240_000_000,
        owner_confirmed_at=1_767_225_700_000,
        approvals=(
            Approval(
                approver_id="00ulead00001",
                approved_at=1_767_225_800_000,
                valid_until=1_767_227_600_000,
            ),
        ),
    )


class RecordingSleep:
    """Stands in for asyncio.sleep: remembers each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
