"""The checks a request must pass to open, pure, in the words the requester is told.

`TwoKey.open` runs them on the live directory and `twokey policy explain` runs them in a dry
run; keeping them here, once, is what lets the dry run promise the same answer as `open`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from app.domain.errors import BadInput, IdentityUnsure, NotAllowed
from app.domain.models import Action, Principal, PrincipalKind
from app.domain.policy import Breakglass, Policy


class Executor(Protocol):
    """Whatever can make a change (a connector): only what choosing one needs."""

    @property
    def name(self) -> str: ...

    def supports(self, action: Action, target: Principal) -> bool: ...


E = TypeVar("E", bound=Executor)


def enabled_breakglass(policy: Policy) -> Breakglass:
    """The policy's break-glass settings; without them nobody may use the emergency path."""
    if policy.breakglass is None:
        raise NotAllowed("Break-glass is not enabled in this deployment's policy.")
    return policy.breakglass


def opening_role(policy: Policy, *, breakglass: bool) -> str:
    """The role that may open: the break-glass role for the emergency path, else requester_role."""
    if breakglass and policy.breakglass is not None:
        return policy.breakglass.role
    return policy.requester_role


def check_active(principal: Principal, who: str) -> None:
    """A disabled directory account can neither ask for a change nor be named as a person."""
    if principal.disabled:
        raise IdentityUnsure(f"{who}: the directory account is disabled.")


def check_may_request(policy: Policy, requester: Principal, *, breakglass: bool) -> None:
    """An active directory person holding the role that opens requests (or break-glass ones)."""
    check_active(requester, "You")
    role = opening_role(policy, breakglass=breakglass)
    if policy.holds_role(requester, role):
        return
    if breakglass:
        raise NotAllowed(f"Break-glass needs the {role} role, which you do not hold.")
    raise NotAllowed(f"Opening requests needs the {role} role, which you do not hold.")


def check_action_fits(action: Action, target: Principal) -> None:
    """Secret rotation is for non-human identities; every other action is for people."""
    if action.for_nhi and target.kind is not PrincipalKind.NHI:
        raise BadInput(f"{action.value} is for non-human identities: name one as nhi:<name>.")
    if not action.for_nhi and target.kind is PrincipalKind.NHI:
        raise BadInput(f"{action.value} applies to people; for {target.name} use rotate-secret.")


def connector_for(connectors: Sequence[E], action: Action, target: Principal) -> E:
    """The first connector that can make this change; none means nothing could ever run it."""
    for connector in connectors:
        if connector.supports(action, target):
            return connector
    raise NotAllowed(f"No identity provider configured here can {action.label} for {target.name}.")


def owner_to_reach(target: Principal) -> str:
    """The owner of record who must confirm; a disabled or ownerless target cannot be changed."""
    if target.disabled:
        raise NotAllowed(f"{target.name} is disabled in the directory.")
    owner_id = target.owner_of_record
    if owner_id is None:
        raise NotAllowed(f"{target.name} has no owner of record in the directory.")
    return owner_id


def check_owner_active(target: Principal, owner: Principal | None) -> None:
    """An NHI's owner of record (``owner``, as the directory has them now) must be a live person."""
    if owner is None or owner.disabled:
        raise NotAllowed(
            f"The owner of record of {target.name} ({target.owner_of_record}) is not an active "
            "person in the directory, so nobody can confirm. Ask the directory team to fix it."
        )
