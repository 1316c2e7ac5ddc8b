"""Step-up verification: a second check of the owner on a channel an attacker is unlikely to hold.

A chat DM proves only that someone controls the owner's chat account, which is exactly what an
attacker who phished the owner or holds their laptop session has. For the tiers the policy marks
(and after a fraud signal) the owner's key counts only once a verifier on another channel passed.
Pure: the policy section, the choice of verifiers for one request, and the words; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.domain.durations import Duration
from app.domain.models import Action, Principal

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
    SMS_CODE = "sms_code"
    """A one-time code texted to the owner's phone of record (the customer's SMS gateway,
    through a signed webhook), typed back into the bot. The phone may be the lost device, or
    the number an attacker moved to their own SIM: judged like a push (``uses_owner_device``)."""
    MANAGER = "manager"
    """The owner's manager of record attests they confirmed it with the owner by phone or in
    person; never the requester or an approver of the same request."""
    OKTA_PUSH = "okta_push"
    """An Okta Verify push to the owner's enrolled phone (Okta factors verify API)."""
    DUO_PUSH = "duo_push"
    """A Duo Push to the owner's enrolled phone (Duo Auth API, asynchronous auth)."""
    OIDC_REAUTH = "oidc_reauth"
    """The approver signs in again at the identity provider through a short-lived,
    single-use link (OIDC code flow with PKCE, RFC 9470 step-up); approvers only."""

    @property
    def uses_owner_device(self) -> bool:
        """Whether it relies on the owner's phone (a push, a text message): useless, or worse,
        when the device is what the request is about (reset-mfa: a phone number is also what a
        SIM-swapping caller already holds) or is said to be lost (whoever found it reads it)."""
        return self in (Verifier.OKTA_PUSH, Verifier.DUO_PUSH, Verifier.SMS_CODE)

    @property
    def sends_code(self) -> bool:
        """A one-time code the owner types back (``verify <request> <code>``)."""
        return self in (Verifier.EMAIL_CODE, Verifier.SMS_CODE)

    @property
    def checks_at_the_idp(self) -> bool:
        """A fresh check by the identity provider (may verify an approver, not only an owner)."""
        return self in (Verifier.OKTA_PUSH, Verifier.DUO_PUSH, Verifier.OIDC_REAUTH)

    @property
    def approvers_only(self) -> bool:
        """A link the person opens in their own browser session: it proves who signed in,
        which for an owner the chat DM it arrives in cannot back up on a second channel."""
        return self is Verifier.OIDC_REAUTH

    @property
    def app(self) -> str:
        """The phone app a push arrives in, as people know it."""
        return "Duo Mobile" if self is Verifier.DUO_PUSH else "Okta Verify"

    @property
    def words(self) -> str:
        return _WORDS[self]


_WORDS = {
    Verifier.EMAIL_CODE: "a one-time code sent to the owner's recovery email",
    Verifier.SMS_CODE: "a one-time code texted to the owner's phone of record",
    Verifier.MANAGER: "the owner's manager confirming it with them by phone or in person",
    Verifier.OKTA_PUSH: "a push to Okta Verify on the owner's enrolled phone",
    Verifier.DUO_PUSH: "a Duo Push to the owner's enrolled phone",
    Verifier.OIDC_REAUTH: "signing in again at the identity provider through a single-use link",
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

    @field_validator("owner")
    @classmethod
    def _owner_verifiers(cls, value: list[Verifier]) -> list[Verifier]:
        return _owner_list(value, "owner")

    @field_validator("approver")
    @classmethod
    def _approvers_check_with_their_idp(cls, value: list[Verifier]) -> list[Verifier]:
        _unique(value)
        for verifier in value:
            if not verifier.checks_at_the_idp:
                raise ValueError(
                    f"{verifier.value} cannot verify an approver: use an IdP check "
                    "(okta_push, duo_push or oidc_reauth)"
                )
        return value

    @field_validator("actions")
    @classmethod
    def _unique_per_action(
        cls, value: dict[Action, list[Verifier]]
    ) -> dict[Action, list[Verifier]]:
        for action, verifiers in value.items():
            _owner_list(verifiers, f"actions.{action.value}")
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


def _owner_list(value: list[Verifier], where: str) -> list[Verifier]:
    _unique(value)
    problems = owner_problems(value, where)
    if problems:
        raise ValueError("; ".join(problems))
    return value


def owner_problems(verifiers: list[Verifier], where: str) -> list[str]:
    """Verifiers named for an owner that only verify approvers (empty: it's fine)."""
    wrong = [v.value for v in verifiers if v.approvers_only]
    if not wrong:
        return []
    return [
        f"{where}: {', '.join(wrong)} verifies approvers only (step_up.approver); give the "
        "owner a verifier on a second channel (okta_push, duo_push, manager, email_code, "
        "sms_code)"
    ]


def device_problems(
    verifiers: list[Verifier], offered_for_reset_mfa: bool, where: str
) -> list[str]:
    """Why this list would offer a device-based check when it makes no sense (empty: it's fine).

    A push or a text for reset-mfa goes to the very device being replaced (or the attacker's,
    once enrolled or once the number is ported to their SIM); for a "device lost" reason the
    list must hold something else to fall back on.
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
            f"{where}: only device-based verifiers ({', '.join(device)}, all reaching the "
            "owner's phone); add one that does not need it (e.g. email_code or manager) for "
            "reasons that say the device is lost"
        ]
    return []


_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_CLAIM = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_ACR = re.compile(r"[!#-~]{1,200}")
"""One ``acr_values`` entry: printable, no space (the request joins them with spaces)."""
OIDC_REQUIRED = ("issuer", "client_id", "client_secret_env")


class OidcReauth(BaseModel):
    """``step_up.oidc``: the identity provider an approver signs in again at (oidc_reauth).

    Authorization code flow with PKCE (S256), ``prompt=login``, ``max_age`` and
    ``acr_values`` as RFC 9470 describes; the ID token's ``person_claim`` must name the
    approver as the directory knows them (``matches``), or the sign-in counts for nothing.
    """

    model_config = _Strict

    issuer: str | None = None
    """The issuer URL; its /.well-known/openid-configuration is read at start-up."""
    client_id: str | None = Field(default=None, min_length=1, max_length=255)
    client_secret_env: str | None = None
    """The NAME of the environment variable holding the client secret, never the secret."""
    max_age: Duration = 5 * 60
    """The sign-in must be at most this old when twokey sees it (auth_time)."""
    acr_values: list[str] = Field(default_factory=list, max_length=10)
    """Asked for; when given, the ID token's ``acr`` must be one of them."""
    person_claim: str = "email"
    """The ID token claim that names the person (email, preferred_username, upn, ...)."""
    matches: Literal["email", "id"] = "email"
    """What of the approver's directory entry the claim must equal (email: any case)."""
    link_ttl: Duration = 5 * 60
    """How long an approver's link works (once)."""

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        local = parts.hostname in {"localhost", "127.0.0.1", "::1"}
        if not parts.hostname or parts.scheme not in {"https", "http"}:
            raise ValueError("issuer must be a URL such as https://example.okta.com")
        if parts.scheme == "http" and not local:
            raise ValueError("issuer must use https (plain http only to localhost)")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("issuer is the issuer URL only: no query, fragment or credentials")
        return value

    @field_validator("client_secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            # Never echo the value: someone may have pasted the secret itself here.
            raise ValueError(
                "this is not an environment variable name: the client secret is never written "
                "in the policy file, only the NAME of the variable holding it "
                "(e.g. TWOKEY_OIDC_CLIENT_SECRET)"
            )
        return value

    @field_validator("acr_values")
    @classmethod
    def _acr_words(cls, value: list[str]) -> list[str]:
        for acr in value:
            if not _ACR.fullmatch(acr):
                raise ValueError(f"{acr!r} is not an acr value: printable, no spaces")
        return value

    @field_validator("person_claim")
    @classmethod
    def _claim_name(cls, value: str) -> str:
        if not _CLAIM.fullmatch(value):
            raise ValueError("person_claim is a claim name such as email or preferred_username")
        return value

    @field_validator("max_age", "link_ttl")
    @classmethod
    def _short(cls, value: int) -> int:
        if not 30 <= value <= 15 * 60:
            raise ValueError("between 30s and 15m: the sign-in must be fresh")
        return value

    @model_validator(mode="after")
    def _complete(self) -> OidcReauth:
        missing = [name for name in OIDC_REQUIRED if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"the OIDC re-authentication is incomplete: set {', '.join(missing)} "
                "(the identity provider's issuer URL, twokey's client id there, and the NAME "
                "of the environment variable holding its client secret)"
            )
        return self


def same_person(settings: OidcReauth, approver: Principal, claimed: object) -> bool:
    """Whether the person the IdP signed in is this approver: an email in any case, an id
    exactly; a missing or non-text claim never matches."""
    if not isinstance(claimed, str) or not claimed.strip():
        return False
    if settings.matches == "id":
        return claimed == approver.id
    return approver.email is not None and claimed.strip().lower() == approver.email.lower()


def oidc_reference_problems(data: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Tiers whose approvers sign in again (oidc_reauth) while no ``step_up.oidc`` says where:
    refused, never accepted as an approval that could not count."""
    tiers = data.get("tiers")
    step_up = data.get("step_up")
    if isinstance(step_up, Mapping) and step_up.get("oidc") is not None:
        return []
    if not isinstance(tiers, Mapping):
        return []
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for name, tier in tiers.items():
        section = tier.get("step_up") if isinstance(tier, Mapping) else None
        approver = section.get("approver") if isinstance(section, Mapping) else None
        if isinstance(approver, list) and Verifier.OIDC_REAUTH.value in approver:
            problems.append(
                (
                    ("tiers", str(name), "step_up", "approver"),
                    "oidc_reauth needs the identity provider approvers sign in again at: set "
                    "step_up.oidc (issuer, client_id, client_secret_env)",
                )
            )
    return problems


class StepUpSettings(BaseModel):
    """Policy-wide step-up settings (`step_up:` at the top of the policy file)."""

    model_config = _Strict

    device_lost_reasons: list[str] = Field(default_factory=lambda: ["lost-device"])
    """Reason codes that say the owner's device is lost: device-based verifiers are skipped."""
    max_failures: int = Field(default=3, ge=1, le=10)
    """Failed step-ups of one target (over all its requests, within fraud.flag_window) before
    it is flagged, as "this wasn't me" does; the request where that happens locks."""
    code_ttl: Duration = CODE_TTL_MAX
    code_attempts: int = Field(default=CODE_ATTEMPTS_MAX, ge=1, le=CODE_ATTEMPTS_MAX)
    push_timeout: Duration = 2 * 60
    """How long a push waits for the owner's answer before it counts as timed out."""
    oidc: OidcReauth | None = None
    """Where approvers sign in again for the oidc_reauth verifier."""

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


def named_verifiers(
    step_ups: Iterable[StepUp | None], fraud_step_up: Iterable[Verifier] = ()
) -> set[Verifier]:
    """Every owner verifier a policy could ever offer (its tiers' lists and fraud.step_up):
    start-up refuses to run one that has nothing here to send it."""
    named = set(fraud_step_up)
    for step_up in step_ups:
        if step_up is not None:
            named.update(step_up.owner)
            named.update(v for listed in step_up.actions.values() for v in listed)
    return named


def code_digest(key: bytes, request_id: str, code: str) -> str:
    """How a one-time code is stored and compared: keyed and bound to its request, so the
    stored value neither reveals the code to someone reading Redis nor fits another request."""
    return hmac.new(key, f"{request_id}:{code}".encode(), hashlib.sha256).hexdigest()


def masked_phone(phone: str) -> str:
    """``+44******789``: the country code and last three digits, a fixed run of stars (the
    length is not told either); what the owner sees, and all a log line may ever hold."""
    return f"{phone[:3]}******{phone[-3:]}" if len(phone) >= 8 else "******"


def masked_email(address: str) -> str:
    """``a***@example.com``: enough for the owner to recognise, not to learn the address."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"
