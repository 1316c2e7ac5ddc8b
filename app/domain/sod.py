"""Separation of duties, by directory principal rather than by chat account.

Requester, target (or the NHI's owner of record) and every approver must be different people.
The Lua scripts check the same distinctness again at the instant of the change.
"""

from __future__ import annotations

from app.domain.errors import NotAllowed, SeparationOfDuties
from app.domain.models import Principal, Request


def check_may_open(requester: Principal, target: Principal) -> None:
    if requester.id == target.id:
        raise SeparationOfDuties("You cannot open a request on your own account.")
    if target.owner_of_record is None:
        raise NotAllowed(
            f"{target.name} has no owner of record in the directory, so nobody can confirm "
            "the request. Ask the directory team to record its owner."
        )
    if requester.id == target.owner_of_record:
        raise SeparationOfDuties("You own this identity: someone else must open the request.")


def check_may_approve(request: Request, approver_id: str) -> None:
    if approver_id == request.requester_id:
        raise SeparationOfDuties("You opened this request, so you cannot approve it.")
    if approver_id in (request.target_id, request.owner_id):
        raise SeparationOfDuties("This request is about your own account: you cannot approve it.")


def check_is_owner(request: Request, principal_id: str) -> None:
    if principal_id != request.owner_id:
        raise NotAllowed("Only the account's owner of record can answer this confirmation.")
