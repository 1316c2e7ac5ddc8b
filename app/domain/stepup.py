"""Step-up verification: a second check of the owner on a channel an attacker is unlikely to hold.

A chat DM proves only that someone controls the owner's chat account, which is exactly what an
attacker who phished the owner or holds their laptop session has. For the tiers the policy marks
(and after a fraud signal) the owner's key counts only once a verifier on another channel passed.
Pure: the policy section, the choice of verifiers for one request, and the words; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.domain.durations import Duration
from app.domain.models import Action

_Strict = ConfigDict(extra="forbid", frozen=True)

CODE_DIGITS = 8
"""Digits of a one-time code: 10^8 codes against at most 5 guesses per code."""
CODE_TTL_MAX = 10 * 60
CODE_ATTEMPTS_MAX = 5


class Verifier(StrEnum):
    """A way to check that the owner, not someone holding their chat account, asked.

    Only verifiers twokey can run end to end are listed: a policy naming anything else is
    refused by `twokey policy check`, never accepted and silently skipped.
    """

    EMAIL_CODE = "email_code"
    """A one-time code to the owner's recovery email of record, typed back into the bot."""
    MANAGER = "manager"
    """The owner's manager of record attests they confirmed it with the owner by phone or in
    person; never the requester or an approver of the same request."""
    OKTA_PUSH = "okta_push"
    """An Okta Verify push to the owner's enrolled phone (Okta factors verify API)."""
    DUO_PUSH = "duo_push"
    """A Duo Push to the owner's enrolled phone (Duo Auth API, asynchronous auth)."""

    @property
    def uses_owner_device(self) -> bool:
        """Whether it relies on the owner's enrolled device (a push): useless, or worse, when
        the device is what the request is about (reset-mfa) or is said to be lost."""
        return self in (Verifier.OKTA_PUSH, Verifier.DUO_PUSH)

    @property
    def checks_at_the_idp(self) -> bool:
        """A fresh check by the identity provider (may verify an approver, not only an owner)."""
        return self in (Verifier.OKTA_PUSH, Verifier.DUO_PUSH)

    @property
    def app(self) -> str:
        """The phone app a push arrives in, as people know it."""
        return "Duo Mobile" if self is Verifier.DUO_PUSH else "Okta Verify"

    @property
    def words(self) -> str:
        return _WORDS[self]


_WORDS = {
    Verifier.EMAIL_CODE: "a one-time code sent to the owner's recovery email",
    Verifier.MANAGER: "the owner's manager confirming it with them by phone or in person",
    Verifier.OKTA_PUSH: "a push to Okta Verify on the owner's enrolled phone",
    Verifier.DUO_PUSH: "a Duo Push to the owner's enrolled phone",
}


def _unique(value: list[Verifier]) -> list[Verifier]:
    if len(set(value)) != len(value):
        raise ValueError("name each verifier once; the list is tried in order")
    return value


class StepUp(BaseModel):
    """A tier's step-up of the owner: the verifiers to use, in order, and how long a pass counts.

    ``owner`` applies to every action of the tier unless ``actions`` names the action.
    """

    model_config = _Strict

    owner: list[Verifier] = Field(default_factory=list, max_length=5)
    actions: dict[Action, list[Verifier]] = Field(default_factory=dict)
    ttl: Duration | None = None
    """How long a passed step-up counts (default: the tier's approval_ttl)."""
    approver: list[Verifier] = Field(default_factory=list, max_length=3)
    """An approval counts only once its approver passed one of these (a fresh IdP check)
    within the approval's TTL; until then cards say it waits for their verification."""

    _unique_owner = field_validator("owner")(_unique)

    @field_validator("approver")
    @classmethod
    def _approvers_check_with_their_idp(cls, value: list[Verifier]) -> list[Verifier]:
        _unique(value)
        for verifier in value:
            if not verifier.checks_at_the_idp:
                raise ValueError(
                    f"{verifier.value} cannot verify an approver: use an IdP check (okta_push)"
                )
        return value

    @field_validator("actions")
    @classmethod
    def _unique_per_action(
        cls, value: dict[Action, list[Verifier]]
    ) -> dict[Action, list[Verifier]]:
        for verifiers in value.values():
            _unique(verifiers)
        return value

    @model_validator(mode="after")
    def _never_a_push_for_a_lost_or_reset_device(self) -> StepUp:
        problems = list(device_problems(self.owner, Action.RESET_MFA not in self.actions, "owner"))
        for action, verifiers in self.actions.items():
            problems += device_problems(
                verifiers, action is Action.RESET_MFA, f"actions.{action.value}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def for_action(self, action: Action) -> tuple[Verifier, ...]:
        return tuple(self.actions.get(action, self.owner))

    @property
    def any(self) -> bool:
        """Whether it asks anything of the owner."""
        return bool(self.owner) or any(self.actions.values())


def device_problems(
    verifiers: list[Verifier], offered_for_reset_mfa: bool, where: str
) -> list[str]:
    """Why this list would offer a device-based check when it makes no sense (empty: it's fine).

    A push for reset-mfa goes to the very device being replaced (or the attacker's, once
    enrolled); for a "device lost" reason the list must hold something else to fall back on.
    """
    device = [v.value for v in verifiers if v.uses_owner_device]
    if not device:
        return []
    if offered_for_reset_mfa:
        return [
            f"{where}: {', '.join(device)} would be offered for reset-mfa, whose device is the "
            "one being replaced; give reset-mfa its own list under actions without it"
        ]
    if all(v.uses_owner_device for v in verifiers):
        return [
            f"{where}: only device-based verifiers ({', '.join(device)}); add one that does not "
            "need the device (e.g. email_code) for reasons that say the device is lost"
        ]
    return []


class StepUpSettings(BaseModel):
    """Policy-wide step-up settings (`step_up:` at the top of the policy file)."""

    model_config = _Strict

    device_lost_reasons: list[str] = Field(default_factory=lambda: ["lost-device"])
    """Reason codes that say the owner's device is lost: device-based verifiers are skipped."""
    max_failures: int = Field(default=3, ge=1, le=10)
    """Failed step-ups of one request before its target is flagged, as "this wasn't me" does."""
    code_ttl: Duration = CODE_TTL_MAX
    code_attempts: int = Field(default=CODE_ATTEMPTS_MAX, ge=1, le=CODE_ATTEMPTS_MAX)
    push_timeout: Duration = 2 * 60
    """How long a push waits for the owner's answer before it counts as timed out."""

    @field_validator("push_timeout")
    @classmethod
    def _push_wait(cls, value: int) -> int:
        if not 10 <= value <= 5 * 60:
            raise ValueError("a push waits between 10s and 5m (Okta's own push expires in 5m)")
        return value

    @field_validator("code_ttl")
    @classmethod
    def _short_code_life(cls, value: int) -> int:
        if not 60 <= value <= CODE_TTL_MAX:
            raise ValueError("a one-time code lives between 1m and 10m")
        return value


def choose(
    verifiers: tuple[Verifier, ...], action: Action, reason_code: str, lost: list[str]
) -> tuple[Verifier, ...]:
    """The verifiers a request may use, in the policy's order: never a device-based one for
    reset-mfa or when the reason says the device is lost (validation already refuses most)."""
    device_out = action is Action.RESET_MFA or reason_code in lost
    return tuple(v for v in verifiers if not (device_out and v.uses_owner_device))


def code_digest(key: bytes, request_id: str, code: str) -> str:
    """How a one-time code is stored and compared: keyed and bound to its request, so the
    stored value neither reveals the code to someone reading Redis nor fits another request."""
    return hmac.new(key, f"{request_id}:{code}".encode(), hashlib.sha256).hexdigest()


def masked_email(address: str) -> str:
    """``a***@example.com``: enough for the owner to recognise, not to learn the address."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"
