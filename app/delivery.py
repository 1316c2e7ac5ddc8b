"""A chat delivery acted on once, checked by the gate script that acts on it.

A face that knows which request a delivery (a Slack click's ``trigger_id``) is about hands the
delivery to the call with :func:`carried`; the first gate script that call runs on that request
sets the delivery's once-key in the request's own slot, atomically with the decision (one Redis
round trip, not a guard and then the script). A repeat changes nothing: the store raises
:class:`Repeated`, and the face answers nothing. If no gate script ran (the call was refused
before, e.g. an identity that is unsure), :attr:`Delivery.taken` stays False and the face claims
the same key itself (``MessageLedger.claim_once(..., near=request_id)``) before it answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from app.domain.errors import TwokeyError


@dataclass
class Delivery:
    """One delivery: its scope and key (as ``claim_once`` takes them) and the request it is
    about, whose slot its once-key shares."""

    scope: str
    key: str
    keep_s: int
    request_id: str
    taken: bool = False
    """Set once a gate script has checked (and set) the once-key."""


class Repeated(TwokeyError):
    """This delivery was acted on before: nothing was changed, nothing is said."""

    code = "repeated"


_CARRIED: ContextVar[Delivery | None] = ContextVar("twokey_delivery", default=None)


@contextmanager
def carried(delivery: Delivery | None) -> Iterator[None]:
    """Calls made inside this block (and tasks they start) carry ``delivery``."""
    token = _CARRIED.set(delivery)
    try:
        yield
    finally:
        _CARRIED.reset(token)


def pending_for(request_id: str) -> Delivery | None:
    """The delivery the current call carries for this request, if no gate script took it yet."""
    delivery = _CARRIED.get()
    if delivery is None or delivery.taken or delivery.request_id != request_id:
        return None
    return delivery
