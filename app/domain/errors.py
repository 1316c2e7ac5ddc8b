"""Errors people see. Each says what went wrong and what to do next.

``code`` is stable (tests, metrics, audit reason codes); ``message`` is for the person.
"""

from __future__ import annotations


class TwokeyError(Exception):
    """Base of every refusal twokey answers with; never carries a secret."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(TwokeyError):
    """The typed command or form is malformed; nothing was created."""

    code = "bad_input"


class IdentityUnsure(TwokeyError):
    """A chat user resolves to no directory principal or to several: refused, never guessed."""

    code = "identity_unsure"


class NotAllowed(TwokeyError):
    """The person is known but may not do this (role, separation of duties, not the owner)."""

    code = "not_allowed"


class SeparationOfDuties(NotAllowed):
    """Requester, target/owner and approvers must be distinct people."""

    code = "separation_of_duties"


class NotFound(TwokeyError):
    code = "not_found"


class AlreadyDecided(TwokeyError):
    """The request has moved on (decided, expired, executed): a harmless no-op."""

    code = "already_decided"


class Expired(TwokeyError):
    code = "expired"


class VelocityLimited(TwokeyError):
    """Too many requests for this target or by this agent within the policy's window."""

    code = "velocity_limited"


class PolicyError(TwokeyError):
    code = "policy_error"


class Unavailable(TwokeyError):
    """Redis, the directory or the IdP cannot be reached: nothing was changed."""

    code = "unavailable"


class TrailDamaged(Unavailable):
    """The audit trail of one shard cannot take an event (its counter in Redis is not a count):
    nothing is changed there. Other shards go on."""

    code = "trail_damaged"


class CredentialsRefused(Unavailable):
    """A system twokey relies on answered, but refused twokey's own credentials (HTTP 401/403,
    an OAuth client refused): an operator must fix the integration, waiting will not. Still an
    Unavailable, so every path that fails closed on an outage fails closed on this too."""

    code = "credentials_refused"


class Conflict(TwokeyError):
    """Optimistic check failed (state moved under us); the caller may retry."""

    code = "conflict"
