"""A pressed button -> the one use case it stands for, the same for every face.

Slack, Teams and the playground decode a button (``decode_button``: only the action and the
request id count, invariant 7), resolve who pressed it to a ``ChatUser`` and call :func:`press`.
Which verb runs which use case is written here once, so no face can wire a button differently.
"""

from __future__ import annotations

from app.channels.commands import Command
from app.channels.common import ATTEST, ButtonAction
from app.domain.errors import BadInput
from app.domain.models import ChatUser
from app.service import Decision, TwoKey


async def press(
    service: TwoKey,
    action: ButtonAction,
    who: ChatUser,
    request_id: str,
    reason: str | None = None,
) -> Decision:
    """Run the use case behind ``action`` for ``who``; Deny needs the ``reason`` its form asked.

    Raises the service's refusals (TwokeyError) for the face to show.
    """
    if action is ButtonAction.CONFIRM:
        return await service.confirm_owner(who, request_id)
    if action is ButtonAction.REJECT:
        return await service.reject_by_owner(who, request_id)
    if action is ButtonAction.APPROVE:
        return await service.approve(who, request_id)
    if action is ButtonAction.DENY:
        if reason is None:
            raise BadInput("Say why you deny it: the requester and the audit trail see the reason.")
        return await service.deny(who, request_id, reason)
    if action is ButtonAction.DISPUTE:
        return await service.dispute(who, request_id)
    if action in ATTEST:
        return await service.attest(who, request_id, action is ButtonAction.ATTEST_YES)
    return await service.cancel(who, request_id)


NEEDS_REASON = frozenset({ButtonAction.DENY})
"""Buttons whose face must first ask for a reason (a form), then call :func:`press` with it."""


async def verify(service: TwoKey, who: ChatUser, command: Command) -> Decision:
    """`verify <request-id> [code]` and `attest <request-id> yes|no`, the same for every face:
    check the owner's one-time code, or (no code) send a new one; record the manager's answer.
    The code is never logged or echoed back."""
    if command.verb == "attest":
        return await service.attest(who, command.request_id, command.text == "yes")
    if command.text:
        return await service.verify_code(who, command.request_id, command.text)
    return await service.new_code(who, command.request_id)
