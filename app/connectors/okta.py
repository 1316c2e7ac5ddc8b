"""Okta: the help desk's four changes, and directory look-ups, through the Management API.

Requests follow Okta's published OpenAPI spec (release 2026.06.3):

- reset-mfa        POST   /api/v1/users/{id}/lifecycle/reset_factors
- reset-password   POST   /api/v1/users/{id}/lifecycle/expire_password_with_temp_password
                   (answers ``{tempPassword}``: the one-time secret for the owner; Okta sends
                   no email, so nobody else ever sees it)
- unlock           POST   /api/v1/users/{id}/lifecycle/unlock
- revoke-sessions  DELETE /api/v1/users/{userId}/sessions?oauthTokens=true
- look-ups         GET    /api/v1/users?search=..., /api/v1/users/{id}, /api/v1/users/{id}/groups
- approvers        GET    /api/v1/groups?search=profile.name eq "...", /api/v1/groups/{id}/users

Before any change the user is read back by id, so a change lands on the person the request
names, by Okta id (``{userId}`` paths accept nothing else).

Two ways to authenticate: an SSWS API token, or an OAuth 2.0 service app that signs a
``private_key_jwt`` client assertion for the client-credentials grant at
``{org}/oauth2/v1/token`` (with a DPoP proof when the app requires one, as new apps do).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlsplit

import httpx
import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from app.connectors.base import (
    ConnectorConfigError,
    EnvVarName,
    completed,
    failed,
    only_supported,
    secret_from_env,
)
from app.connectors.checks import CheckResult, CheckStatus, missing, note, phone_note, works
from app.connectors.http import (
    Attempts,
    Clock,
    GroupMembersFound,
    HttpConnector,
    LimitsFromSettings,
    ProviderAnswer,
    ProviderCallError,
    ProviderHttp,
    ProviderUnreachable,
    ProviderUrl,
    RateLimited,
    RateLimitWait,
    RetryRule,
    Sleep,
    Timeout,
    http_plugin,
    one_line,
    parse_config,
)
from app.domain.errors import Unavailable
from app.domain.models import Action, Principal, PrincipalKind, Request, phone_of_record
from app.ports import MEMBERS_MAX, ExecutionResult, Outcome, PushOutcome, PushResult

log = structlog.get_logger(__name__)

OKTA_ACTIONS = frozenset(
    {Action.RESET_MFA, Action.RESET_PASSWORD, Action.UNLOCK, Action.REVOKE_SESSIONS}
)
DEFAULT_SCOPES = ("okta.users.read", "okta.users.manage")
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_TOKEN_REFRESH_MARGIN = 60.0
_GROUP_PAGES = 20
"""The most pages read for one list (a user's groups, groups of one name, a group's members)."""
_PAGE_SIZE = 200
"""Okta's recommended page size for group and group-member lists."""
_GROUPS_SCOPES = frozenset({"okta.groups.read", "okta.groups.manage"})
"""A service app reads groups and their members only with one of these scopes."""
_SIGNED_IN_STATUSES = {"ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"}
"""Statuses of a person who exists and can (again) sign in; the rest count as disabled."""
_PLAIN_EMAIL = re.compile(r"^[^\s\"\\@]+@[^\s\"\\@]+$")
_SEARCHABLE_GROUP_NAME = re.compile(r'[^"\\\x00-\x1f\x7f]{1,255}')
"""A group name that can be quoted in Okta's search expression as it is (no quote, backslash
or control character; Okta group names are at most 255 characters)."""


class OktaConfig(BaseModel, LimitsFromSettings):
    """The ``okta`` connector in the policy file; secrets by environment-variable name only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["okta"]
    name: str = Field(default="okta", pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    org_url: ProviderUrl
    """The org's own URL, e.g. https://acme.okta.com (not the -admin URL)."""
    api_token_env: EnvVarName | None = None
    client_id: str | None = Field(default=None, min_length=1, max_length=100)
    private_key_env: EnvVarName | None = None
    key_id: str | None = Field(default=None, min_length=1, max_length=200)
    """The ``kid`` of the service app's public key; required when the app has several."""
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    dpop: bool = True
    """Send DPoP proofs: on by default because Okta requires them for new service apps."""
    actions: frozenset[Action] = OKTA_ACTIONS
    revoke_sessions_on_password_reset: bool = True
    forget_devices: bool = True
    """revoke-sessions also clears the user's remembered factors on every device."""
    group_key: Literal["name", "id"] = "name"
    """What the policy file's group names mean: Okta group names or group ids."""
    group_types: frozenset[Literal["OKTA_GROUP", "APP_GROUP", "BUILT_IN"]] = frozenset(
        {"OKTA_GROUP", "BUILT_IN"}
    )
    """With ``group_key: name``, only groups of these Okta types carry a role. Okta keeps names
    unique among the groups it owns (OKTA_GROUP, and BUILT_IN such as Everyone) only: a group
    imported from a connected app (an AD, LDAP or Google group, APP_GROUP) may bear any name,
    an approvers' group's included, and whoever can create groups in that source could make
    themselves an approver. Add APP_GROUP only when every connected source's group names are
    as trusted as Okta's, or use ``group_key: id``."""
    timeout: Timeout = 10.0
    max_attempts: Attempts = 3
    max_rate_limit_wait: RateLimitWait = 30.0
    push_poll_interval: float = Field(default=4.0, ge=1.0, le=30.0)
    """Seconds between polls of an Okta Verify push transaction (step-up verifier okta_push)."""
    phone_of_record: bool = False
    """Read ``mobilePhone`` as the phone of record (step-up codes by text, ``sms_code``). Off by
    default: Okta lets people edit their own profile, so a code texted to a number the account
    holder (or whoever holds their session) typed in proves nothing. Turn on only once the
    profile attribute's user permission is read-only (Profile Editor, mobilePhone)."""
    recovery_email_of_record: bool = False
    """Read ``secondEmail`` as the recovery email of record (step-up codes by email,
    ``email_code``). Off by default for the same reason: people can set their own secondary
    email in Okta, and a code mailed to an address whoever holds their session just typed in
    proves nothing. Turn on only once ``secondEmail``'s user permission is read-only."""

    @field_validator("org_url")
    @classmethod
    def _org_origin_only(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.path or parts.query:
            raise ValueError("write the org URL alone, like https://acme.okta.com (no path)")
        if (parts.hostname or "").split(".")[0].endswith("-admin"):
            raise ValueError(
                "this is the Admin Console URL; use the org URL without -admin "
                "(https://acme.okta.com, not https://acme-admin.okta.com)"
            )
        return value

    @field_validator("actions")
    @classmethod
    def _only_okta_actions(cls, value: frozenset[Action]) -> frozenset[Action]:
        only_supported(value, OKTA_ACTIONS, "Okta")
        return value

    @field_validator("scopes")
    @classmethod
    def _okta_scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not all(re.fullmatch(r"okta\.[A-Za-z.]+", scope) for scope in value):
            raise ValueError("scopes are Okta API scopes such as okta.users.manage")
        return value

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> OktaConfig:
        token = self.api_token_env is not None
        service_app = self.client_id is not None or self.private_key_env is not None
        if token and service_app:
            raise ValueError(
                "choose one way to authenticate: api_token_env (SSWS token) or "
                "client_id + private_key_env (OAuth service app), not both"
            )
        if not token and not service_app:
            raise ValueError(
                "set api_token_env (SSWS token) or client_id + private_key_env "
                "(OAuth service app with private-key JWT)"
            )
        if service_app and (self.client_id is None or self.private_key_env is None):
            raise ValueError("an OAuth service app needs both client_id and private_key_env")
        return self


class NoAccessToken(ProviderCallError):
    """Okta issued no access token: nothing was sent to change anyone."""


class _Credentials(Protocol):
    can_refresh: bool

    async def sign(self, method: str, url: str) -> Mapping[str, str]: ...

    def forget(self) -> None: ...


class _ApiToken:
    """``Authorization: SSWS {token}``: the token acts with its admin's permissions."""

    can_refresh = False

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    async def sign(self, method: str, url: str) -> Mapping[str, str]:
        return {"Authorization": f"SSWS {self._token.get_secret_value()}"}

    def forget(self) -> None:
        """An API token cannot be renewed; a 401 is final."""


@dataclass(frozen=True)
class _SigningKey:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    algorithm: str
    key_id: str | None

    def __repr__(self) -> str:
        return f"_SigningKey(algorithm={self.algorithm!r}, key_id={self.key_id!r})"


@dataclass(frozen=True)
class _AccessToken:
    value: SecretStr
    scheme: Literal["Bearer", "DPoP"]
    renew_at: float


def load_signing_key(secret: SecretStr, key_id: str | None, env_name: str) -> _SigningKey:
    """The service app's private key, as PEM or as the JWK the Okta Admin Console generates."""
    text = secret.get_secret_value().strip()
    refused = ConnectorConfigError(
        f"environment variable {env_name} does not hold a private key Okta accepts: use the "
        "PEM or JWK of an RSA (2048 bits or more) or EC P-256/P-384/P-521 key"
    )
    try:
        if text.startswith("{"):
            jwk = json.loads(text)
            if not isinstance(jwk, dict):
                raise refused
            key: object = (
                RSAAlgorithm.from_jwk(jwk) if jwk.get("kty") == "RSA" else ECAlgorithm.from_jwk(jwk)
            )
            key_id = key_id or (jwk.get("kid") if isinstance(jwk.get("kid"), str) else None)
        else:
            key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError, KeyError, jwt.exceptions.InvalidKeyError):
        raise refused from None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return _SigningKey(key, "RS256", key_id)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(
            key.curve.name
        )
        if algorithm:
            return _SigningKey(key, algorithm, key_id)
    raise refused


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _ServiceApp:
    """OAuth 2.0 client credentials with a private-key JWT, as Okta documents for service apps.

    The client assertion (iss = sub = client id, aud = the token URL, short exp, one-use jti)
    is signed with the app's registered key. When DPoP is on, every token request and API call
    also carries a DPoP proof signed by a key pair made for this process only, and the token
    endpoint's ``use_dpop_nonce`` answer is followed once with the nonce it hands out.
    """

    can_refresh = True

    def __init__(
        self, config: OktaConfig, signing_key: _SigningKey, http: ProviderHttp, clock: Clock
    ) -> None:
        assert config.client_id is not None
        self._client_id = config.client_id
        self._scopes = " ".join(config.scopes)
        self._token_url = f"{config.org_url}/oauth2/v1/token"
        self._signing_key = signing_key
        self._use_dpop = config.dpop
        self._http = http
        self._clock = clock
        self._token: _AccessToken | None = None
        self._lock = asyncio.Lock()
        self._dpop_key: rsa.RSAPrivateKey | None = None
        self._dpop_jwk: dict[str, Any] = {}
        self._nonce: str | None = None

    async def sign(self, method: str, url: str) -> Mapping[str, str]:
        token = await self._current_token()
        value = token.value.get_secret_value()
        if token.scheme == "DPoP":
            return {
                "Authorization": f"DPoP {value}",
                "DPoP": self._dpop_proof(method, url, access_token=value, nonce=None),
            }
        return {"Authorization": f"Bearer {value}"}

    def forget(self) -> None:
        self._token = None

    async def _current_token(self) -> _AccessToken:
        async with self._lock:
            if self._token is None or self._clock() >= self._token.renew_at:
                self._token = await self._mint_token()
            return self._token

    async def _mint_token(self) -> _AccessToken:
        if self._use_dpop and self._dpop_key is None:
            self._dpop_key = await asyncio.to_thread(
                rsa.generate_private_key, public_exponent=65537, key_size=2048
            )
            self._dpop_jwk = dict(RSAAlgorithm.to_jwk(self._dpop_key.public_key(), as_dict=True))
        try:
            answer = await self._request_token()
            if self._asks_for_nonce(answer):
                answer = await self._request_token()
        except ProviderCallError as error:
            raise NoAccessToken(f"Okta's token endpoint did not answer: {error}") from None
        body = answer.json()
        if not answer.ok or not isinstance(body, dict) or not body.get("access_token"):
            raise NoAccessToken(_token_refusal(answer))
        scheme: Literal["Bearer", "DPoP"] = (
            "DPoP" if str(body.get("token_type", "")).lower() == "dpop" else "Bearer"
        )
        lifetime = body.get("expires_in")
        lifetime = float(lifetime) if isinstance(lifetime, int | float) else 300.0
        log.info("okta_token_issued", token_type=scheme, expires_in=lifetime)
        return _AccessToken(
            SecretStr(str(body["access_token"])),
            scheme,
            self._clock() + max(lifetime - _TOKEN_REFRESH_MARGIN, lifetime / 2),
        )

    async def _request_token(self) -> ProviderAnswer:
        return await self._http.call(
            "POST",
            self._token_url,
            rule=RetryRule.READ,
            form=self._token_form,
            headers={"Accept": "application/json"},
            sign=self._token_proof if self._use_dpop else None,
        )

    def _asks_for_nonce(self, answer: ProviderAnswer) -> bool:
        body = answer.json()
        nonce = answer.headers.get("dpop-nonce")
        if (
            self._use_dpop
            and answer.status in (400, 401)
            and isinstance(body, dict)
            and body.get("error") == "use_dpop_nonce"
            and nonce
        ):
            self._nonce = nonce
            return True
        return False

    def _token_form(self) -> Mapping[str, str]:
        now = int(self._clock())
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": self._token_url,
            "iat": now,
            "exp": now + 300,
            "jti": secrets.token_urlsafe(24),
        }
        headers = {"kid": self._signing_key.key_id} if self._signing_key.key_id else None
        assertion = jwt.encode(
            claims, self._signing_key.key, algorithm=self._signing_key.algorithm, headers=headers
        )
        return {
            "grant_type": "client_credentials",
            "scope": self._scopes,
            "client_assertion_type": _ASSERTION_TYPE,
            "client_assertion": assertion,
        }

    async def _token_proof(self, method: str, url: str) -> Mapping[str, str]:
        return {"DPoP": self._dpop_proof(method, url, access_token=None, nonce=self._nonce)}

    def _dpop_proof(
        self, method: str, url: str, *, access_token: str | None, nonce: str | None
    ) -> str:
        """RFC 9449 proof: this method and URL (no query), now, once; bound to the token."""
        assert self._dpop_key is not None
        parts = urlsplit(url)
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(24),
            "htm": method.upper(),
            "htu": f"{parts.scheme}://{parts.netloc}{parts.path}",
            "iat": int(self._clock()),
        }
        if nonce:
            claims["nonce"] = nonce
        if access_token:
            claims["ath"] = _b64url(hashlib.sha256(access_token.encode("ascii")).digest())
        return jwt.encode(
            claims,
            self._dpop_key,
            algorithm="RS256",
            headers={"typ": "dpop+jwt", "jwk": self._dpop_jwk},
        )


def _token_refusal(answer: ProviderAnswer) -> str:
    body = answer.json()
    if isinstance(body, dict) and body.get("error"):
        words = str(body["error"])
        if body.get("error_description"):
            words += f": {body['error_description']}"
        return f"Okta refused to issue an access token ({one_line(words)}, HTTP {answer.status})"
    return f"Okta refused to issue an access token (HTTP {answer.status})"


def okta_error_words(answer: ProviderAnswer) -> str:
    """Okta's error body (errorSummary, errorCauses, errorCode) in one line of words."""
    body = answer.json()
    if not isinstance(body, dict):
        return f"HTTP {answer.status}"
    summary = str(body.get("errorSummary") or "").strip()
    causes = [
        str(cause.get("errorSummary")).strip()
        for cause in body.get("errorCauses") or []
        if isinstance(cause, dict) and cause.get("errorSummary")
    ]
    words = "; ".join(part for part in [summary, *causes] if part) or "no reason given"
    code = f"{body['errorCode']}, " if body.get("errorCode") else ""
    return one_line(f"{words} ({code}HTTP {answer.status})")


class OktaConnector(HttpConnector[OktaConfig]):
    """Okta as both the identity provider that makes the change and the directory of people."""

    provider = "Okta"
    event = "okta_change"
    look = "Check the user in the Okta Admin Console"
    shown = ("org_url",)
    refusals = (NoAccessToken, ProviderUnreachable, RateLimited)

    verifier = "okta_push"
    """The step-up verifier this connector runs (app.ports.PushVerifier)."""

    def __init__(
        self,
        config: OktaConfig,
        http: ProviderHttp,
        credentials: _Credentials,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(config, http)
        self._org = config.org_url
        self._credentials = credentials
        self._sleep = sleep

    # -- step-up: an Okta Verify push to the owner's enrolled phone ----------------------------

    async def push_step_up(self, owner: Principal, request: Request, timeout_s: int) -> PushResult:
        """Okta's factors API as documented: find the owner's active Okta Verify ``push``
        factor, issue the challenge (``verify`` without a body), then poll the transaction
        from its ``poll`` link until it is no longer WAITING, or ``timeout_s`` ran out."""
        try:
            return await self._push(owner, timeout_s)
        except (ProviderCallError, Unavailable) as error:
            log.warning("okta_push_unavailable", request=request.id, error=type(error).__name__)
            return PushResult(outcome=PushOutcome.UNAVAILABLE, detail=f"Okta: {error}")

    async def _push(self, owner: Principal, timeout_s: int) -> PushResult:
        found = await self.find_by_email(owner.email or "")
        if len(found) != 1:
            return _push_unavailable("Okta has no single user with the owner's email")
        user_id = quote(found[0].id, safe="")
        answer = await self._send("GET", f"/api/v1/users/{user_id}/factors", RetryRule.READ)
        factors = answer.json() if answer.ok else None
        push = next(
            (
                f
                for f in factors or []
                if isinstance(f, dict)
                and f.get("factorType") == "push"
                and f.get("provider") == "OKTA"
                and f.get("status") == "ACTIVE"
            ),
            None,
        )
        if not isinstance(factors, list) or push is None:
            return _push_unavailable("the owner has no active Okta Verify push enrolment")
        factor = quote(str(push.get("id", "")), safe="")
        base = f"/api/v1/users/{user_id}/factors/{factor}"
        challenge = await self._send("POST", f"{base}/verify", RetryRule.CHANGE)
        body = challenge.json() if challenge.ok else None
        if not isinstance(body, dict) or body.get("factorResult") != "WAITING":
            return _push_unavailable(f"Okta did not send the push: {okta_error_words(challenge)}")
        poll = (((body.get("_links") or {}).get("poll") or {}).get("href")) or ""
        prefix = f"{self._org}{base}/transactions/"
        tail = str(poll)[len(prefix) :]
        if not str(poll).startswith(prefix) or not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", tail):
            return _push_unavailable("Okta's poll link is not a transaction of this factor")
        interval = self.config.push_poll_interval
        for _ in range(max(1, int(timeout_s / interval))):
            await self._sleep(interval)
            status = await self._send("GET", f"{base}/transactions/{tail}", RetryRule.READ)
            state = status.json() if status.ok else None
            result = state.get("factorResult") if isinstance(state, dict) else None
            if result == "SUCCESS":
                return PushResult(outcome=PushOutcome.APPROVED)
            if result == "REJECTED":
                return PushResult(outcome=PushOutcome.REJECTED, detail="rejected on the device")
            if result == "TIMEOUT":
                return PushResult(outcome=PushOutcome.TIMEOUT, detail="Okta's push timed out")
            if not (isinstance(result, str) and result.startswith("WAITING")):
                return _push_unavailable(f"Okta answered the poll with {okta_error_words(status)}")
        return PushResult(outcome=PushOutcome.TIMEOUT, detail="no answer in time")

    async def _change(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        user = await self._user_for_change(target)
        if isinstance(user, ExecutionResult):
            return user
        user_id = quote(str(user["id"]), safe="")
        if action is Action.RESET_MFA:
            return await self._reset_mfa(user_id, target)
        if action is Action.RESET_PASSWORD:
            return await self._reset_password(user_id, target)
        if action is Action.UNLOCK:
            return await self._unlock(user_id, target)
        return await self._revoke_sessions(user_id, target)

    async def _user_for_change(self, target: Principal) -> dict[str, Any] | ExecutionResult:
        """Read the user back first: the change must land on the person the request names."""
        try:
            answer = await self._send(
                "GET", f"/api/v1/users/{quote(target.id, safe='')}", RetryRule.READ
            )
        except NoAccessToken:
            raise
        except ProviderCallError as error:
            return failed(
                f"Okta could not be asked about {target.name}: {error}; nothing was changed"
            )
        body = answer.json()
        if not answer.ok or not isinstance(body, dict) or not body.get("id"):
            return self._refused(f"Okta could not find {target.name}", answer)
        email = (body.get("profile") or {}).get("email")
        if target.email and str(email or "").casefold() != target.email.casefold():
            return failed(
                f"Okta's user {target.id} no longer has the email {target.email} the "
                "request was opened for; nothing was changed. Open a new request."
            )
        return body

    async def _reset_mfa(self, user_id: str, target: Principal) -> ExecutionResult:
        answer = await self._send(
            "POST", f"/api/v1/users/{user_id}/lifecycle/reset_factors", RetryRule.CHANGE
        )
        if not answer.ok:
            return self._refused(
                f"Okta refused to {Action.RESET_MFA.label} for {target.name}", answer
            )
        return completed(
            f"Okta reset every MFA factor of {target.name}; they enrol again at their next sign-in."
        )

    async def _reset_password(self, user_id: str, target: Principal) -> ExecutionResult:
        revoke = self.config.revoke_sessions_on_password_reset
        answer = await self._send(
            "POST",
            f"/api/v1/users/{user_id}/lifecycle/expire_password_with_temp_password",
            RetryRule.CHANGE,
            params={"revokeSessions": "true" if revoke else "false"},
        )
        if not answer.ok:
            return self._refused(
                f"Okta refused to {Action.RESET_PASSWORD.label} for {target.name}", answer
            )
        body = answer.json()
        temporary = body.get("tempPassword") if isinstance(body, dict) else None
        if not isinstance(temporary, str) or not temporary:
            return ExecutionResult(
                outcome=Outcome.UNKNOWN,
                detail=f"Okta answered the password reset for {target.name} without a "
                "temporary password: the old password may be expired with no way in. Check "
                "the user in the Okta Admin Console.",
            )
        signed_out = " and signed them out everywhere" if revoke else ""
        return ExecutionResult(
            outcome=Outcome.COMPLETED,
            detail=f"Okta set a temporary password for {target.name}{signed_out}; they choose "
            "a new password at their next sign-in. The temporary password goes to them only.",
            secret=SecretStr(temporary),
            secret_label="Okta temporary password",  # noqa: S106 - a label, not a password
        )

    async def _unlock(self, user_id: str, target: Principal) -> ExecutionResult:
        answer = await self._send(
            "POST", f"/api/v1/users/{user_id}/lifecycle/unlock", RetryRule.CHANGE
        )
        if not answer.ok:
            return self._refused(f"Okta refused to {Action.UNLOCK.label} for {target.name}", answer)
        return completed(
            f"Okta unlocked {target.name}; they can sign in with their current password."
        )

    async def _revoke_sessions(self, user_id: str, target: Principal) -> ExecutionResult:
        forget = self.config.forget_devices
        answer = await self._send(
            "DELETE",
            f"/api/v1/users/{user_id}/sessions",
            RetryRule.CHANGE,
            params={"oauthTokens": "true", "forgetDevices": "true" if forget else "false"},
        )
        if not answer.ok:
            return self._refused(
                f"Okta refused to {Action.REVOKE_SESSIONS.label} for {target.name}", answer
            )
        devices = " and forgot their remembered devices" if forget else ""
        return completed(
            f"Okta ended every session of {target.name}, revoked their OAuth tokens{devices}."
        )

    def _refused(self, what: str, answer: ProviderAnswer) -> ExecutionResult:
        return failed(f"{what}: {okta_error_words(answer)}")

    # -- `twokey connectors check` ----------------------------------------------------------

    async def check(self) -> list[CheckResult]:
        """Read-only: sign in, read one user and their groups; nothing is changed."""
        results: list[CheckResult] = []
        if isinstance(self._credentials, _ServiceApp):
            signed_in = await self._check_sign_in()
            results.append(signed_in)
            if signed_in.status is not CheckStatus.OK:
                return results
        users, found = await self._check_read(
            "read users (GET /api/v1/users?limit=1)", "/api/v1/users", {"limit": "1"}
        )
        results.append(users)
        first = found[0] if isinstance(found, list) and found else None
        if isinstance(first, dict) and first.get("id"):
            user_id = quote(str(first["id"]), safe="")
            groups, _ = await self._check_read(
                "read a user's groups (GET /api/v1/users/{id}/groups)",
                f"/api/v1/users/{user_id}/groups",
                None,
            )
            results.append(groups)
        elif users.status is CheckStatus.OK:
            results.append(note("read a user's groups", "Okta lists no user to read groups of"))
        results.append(self._check_changes())
        if isinstance(self._credentials, _ServiceApp) and not _GROUPS_SCOPES & set(
            self.config.scopes
        ):
            results.append(
                note(
                    "find approvers (GET /api/v1/groups/{id}/users)",
                    "the connector does not ask for okta.groups.read, so it cannot list who "
                    "may approve: add it to scopes (and grant it to the app)",
                )
            )
        if self.config.phone_of_record:
            results.append(
                phone_note("mobilePhone", "its user permission must be read-only in Okta")
            )
        if self.config.recovery_email_of_record:
            results.append(
                note(
                    "recovery email of record read from secondEmail",
                    "make sure people cannot edit it: its user permission must be read-only "
                    "in Okta",
                )
            )
        return results

    async def _check_sign_in(self) -> CheckResult:
        what = f"sign in as the OAuth service app {self.config.client_id}"
        try:
            await self._credentials.sign("GET", f"{self._org}/api/v1/users")
        except NoAccessToken as error:
            return missing(what, f"{error}; nothing else can be checked")
        return works(what, f"access token issued for {', '.join(self.config.scopes)}")

    async def _check_read(
        self, what: str, path: str, params: Mapping[str, str] | None
    ) -> tuple[CheckResult, Any]:
        try:
            answer = await self._send("GET", path, RetryRule.READ, params)
        except ProviderCallError as error:
            return missing(what, str(error)), None
        if answer.ok:
            return works(what), answer.json()
        who = (
            "grant the app okta.users.read and an admin role"
            if isinstance(self._credentials, _ServiceApp)
            else "the token's admin needs a role"
        )
        advice = {
            401: "Okta refused the credentials: check the token (or the app's key and id)",
            403: f"the credentials may not read users: {who} that can see the users twokey serves",
        }.get(answer.status, "")
        words = okta_error_words(answer)
        return missing(what, f"{words}; {advice}" if advice else words), None

    def _check_changes(self) -> CheckResult:
        changes = ", ".join(sorted(self.config.actions))
        if not isinstance(self._credentials, _ServiceApp):
            return note(
                f"changes ({changes})",
                "not tried: a read-only check cannot prove them. The API token acts with the "
                "permissions of the admin who created it; that admin needs a role allowed to "
                "reset factors and passwords, unlock and clear sessions of these users",
            )
        if "okta.users.manage" not in self.config.scopes:
            return missing(
                f"changes ({changes})",
                "the connector does not ask for the okta.users.manage scope: add it to scopes "
                "(and grant it to the app)",
            )
        return works(
            f"scope okta.users.manage for changes ({changes})",
            "granted; the app's admin role must also allow these changes "
            "for the users twokey serves (not tried: this check changes nothing)",
        )

    # -- Directory ------------------------------------------------------------------------

    async def find_by_email(self, email: str) -> list[Principal]:
        """Every Okta user whose primary email is this one, deprovisioned users left out.

        An address that could not be a plain email is matched to nobody rather than
        spliced into Okta's search expression.
        """
        if len(email) > 254 or not _PLAIN_EMAIL.fullmatch(email):
            return []
        users = await self._read_list(
            "/api/v1/users", {"search": f'profile.email eq "{email}"', "limit": "10"}
        )
        found = [user for user in users if user.get("status") != "DEPROVISIONED"]
        return [await self._principal(user) for user in found]

    async def get(self, principal_id: str) -> Principal | None:
        """The Okta user with this id (or login), with their groups; None when Okta has none."""
        answer = await self._read(f"/api/v1/users/{quote(principal_id, safe='')}")
        if answer.status == 404:
            return None
        body = self._read_ok(answer)
        if not isinstance(body, dict) or not body.get("id"):
            raise Unavailable("the Okta directory answered a user look-up with no user")
        return await self._principal(body)

    async def find_nhi(self, name: str) -> Principal | None:
        """Okta holds the people here; non-human identities live in other connectors."""
        return None

    async def search(self, text: str, limit: int = 20) -> list[Principal]:
        """For pickers: users whose first name, last name or email starts with ``text``.

        Groups are not read here (one call per user would spend the rate limit on a picker):
        decide nothing from these; call :meth:`get` for the principal you act on.
        """
        text = text.strip()
        if not text:
            return []
        users = await self._read_list(
            "/api/v1/users", {"q": text, "limit": str(max(1, min(limit, 200)))}
        )
        return [self._person(user, frozenset()) for user in users]

    async def groups_of(self, user_id: str) -> frozenset[str]:
        """The user's Okta groups, by name or id as configured, following Okta's pages."""
        groups: set[str] = set()
        pages = self._pages(
            f"/api/v1/users/{quote(user_id, safe='')}/groups",
            None,
            what=f"groups for {user_id}",
        )
        async for page in pages:
            groups.update(key for key in map(self._group_key, page) if key)
        return frozenset(groups)

    async def members(self, groups: Sequence[str], limit: int = MEMBERS_MAX) -> list[Principal]:
        """The people in any of ``groups`` (who may approve), each once with the groups of these
        they were found in, at most ``limit`` of them.

        Each group is listed with ``GET /api/v1/groups/{id}/users`` (people only: Okta lists
        users there), one page after another; no per-user group read is needed. Reading stops
        at ``limit``, so a person may then lack a group read later (each still names one group
        that makes them a member). A group Okta does not know has nobody; a refusal raises
        Unavailable.
        """
        wanted = [key for key in dict.fromkeys(groups) if key]
        if limit <= 0 or not wanted:
            return []
        self._may_read_groups()
        found = GroupMembersFound(limit)
        for key in wanted:
            for group_id in await self._group_ids(key):
                if await self._collect_members(group_id, key, found):
                    return self._people_of(found)
        return self._people_of(found)

    def _may_read_groups(self) -> None:
        """A service app whose token cannot carry a groups scope would be refused by Okta:
        say which scope is missing instead of Okta's generic 403."""
        if isinstance(self._credentials, _ServiceApp) and not _GROUPS_SCOPES & set(
            self.config.scopes
        ):
            raise Unavailable(
                "the Okta connector cannot read group members: add okta.groups.read to its "
                "scopes (and grant it to the service app)"
            )

    async def _group_ids(self, key: str) -> list[str]:
        """The Okta groups the policy means by ``key``: the id itself, or every group whose
        name is exactly ``key`` (Okta's ``eq`` search, then an exact comparison, as
        :meth:`groups_of` reports names exactly; ``q`` would be a prefix match)."""
        if self.config.group_key == "id":
            return [key]
        if not _SEARCHABLE_GROUP_NAME.fullmatch(key):
            log.warning("okta_group_name_not_searchable", group=key)
            return []
        ids: list[str] = []
        pages = self._pages(
            "/api/v1/groups",
            {"search": f'profile.name eq "{key}"', "limit": str(_PAGE_SIZE)},
            what=f"groups named {key}",
        )
        async for page in pages:
            ids.extend(str(group["id"]) for group in page if self._group_key(group) == key)
        return ids

    async def _collect_members(
        self,
        group_id: str,
        key: str,
        found: GroupMembersFound,
    ) -> bool:
        """Add the group's members to ``found`` (by user id); True once it is full.
        The page that reaches the limit is still read to the end, so people already found
        get this group too."""
        pages = self._pages(
            f"/api/v1/groups/{quote(group_id, safe='')}/users",
            {"limit": str(_PAGE_SIZE)},
            what=f"members of group {key}",
            missing_is_empty=True,
        )
        async with aclosing(pages):
            async for page in pages:
                for user in page:
                    user_id = str(user["id"])
                    if not found.seen_again(user_id, key):
                        found.add(user_id, user, key)
                if found.full:
                    return True
        return False

    def _people_of(self, found: GroupMembersFound) -> list[Principal]:
        return [self._person(user, keys) for user, keys in found.people()]

    async def _pages(
        self,
        path: str,
        params: Mapping[str, str] | None,
        *,
        what: str,
        missing_is_empty: bool = False,
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Each page of an Okta list (its objects with an id), following ``Link: rel="next"``
        within the org, at most ``_GROUP_PAGES`` pages. A refusal raises Unavailable; with
        ``missing_is_empty`` a 404 on the first page is an empty list (no such group)."""
        url: str | None = None
        for page in range(_GROUP_PAGES):
            answer = await (self._read_url(url) if url else self._read(path, params))
            if page == 0 and missing_is_empty and answer.status == 404:
                return
            body = self._read_ok(answer)
            if not isinstance(body, list):
                raise Unavailable(f"the Okta directory answered a look-up of {what} with no list")
            yield [item for item in body if isinstance(item, dict) and item.get("id")]
            url = self._next_page(answer)
            if url is None:
                return
        raise Unavailable(f"Okta lists more than {_GROUP_PAGES} pages of {what}")

    def _group_key(self, group: Mapping[str, Any]) -> str | None:
        if self.config.group_key == "id":
            return str(group["id"]) if group.get("id") else None
        if group.get("type") not in self.config.group_types:
            return None  # a name another source chose: it carries no role (group_types)
        name = (group.get("profile") or {}).get("name")
        return str(name) if name else None

    def _next_page(self, answer: ProviderAnswer) -> str | None:
        """Okta's ``Link: <...>; rel="next"``, followed only within our org (it gets our token)."""
        for link in answer.headers.get_list("link"):
            for part in link.split(","):
                match = re.match(r'\s*<([^>]+)>\s*;.*rel="?next"?', part)
                if match:
                    target = urlsplit(match.group(1))
                    ours = urlsplit(self._org)
                    if (target.scheme, target.netloc) != (ours.scheme, ours.netloc):
                        raise Unavailable("Okta's next-page link points outside the org")
                    return match.group(1)
        return None

    async def _principal(self, user: Mapping[str, Any]) -> Principal:
        groups = await self.groups_of(str(user["id"]))
        return self._person(user, groups)

    def _person(self, user: Mapping[str, Any], groups: frozenset[str]) -> Principal:
        """The person, with the addresses of record this org made admin-only (config)."""
        return _principal_from(
            user,
            groups,
            read_phone=self.config.phone_of_record,
            read_recovery_email=self.config.recovery_email_of_record,
        )

    # -- calls ------------------------------------------------------------------------------

    async def _read_list(self, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        body = self._read_ok(await self._read(path, params))
        if not isinstance(body, list):
            raise Unavailable("the Okta directory answered a user search with no list")
        return [user for user in body if isinstance(user, dict) and user.get("id")]

    async def _read(self, path: str, params: Mapping[str, str] | None = None) -> ProviderAnswer:
        return await self._read_url(f"{self._org}{path}", params)

    async def _read_url(self, url: str, params: Mapping[str, str] | None = None) -> ProviderAnswer:
        try:
            return await self._send_url("GET", url, RetryRule.READ, params)
        except ProviderCallError as error:
            raise Unavailable(f"the Okta directory could not be read: {error}") from None

    def _read_ok(self, answer: ProviderAnswer) -> Any:
        if not answer.ok:
            raise Unavailable(f"the Okta directory refused a look-up: {okta_error_words(answer)}")
        return answer.json()

    async def _send(
        self,
        method: str,
        path: str,
        rule: RetryRule,
        params: Mapping[str, str] | None = None,
    ) -> ProviderAnswer:
        return await self._send_url(method, f"{self._org}{path}", rule, params)

    async def _send_url(
        self,
        method: str,
        url: str,
        rule: RetryRule,
        params: Mapping[str, str] | None = None,
    ) -> ProviderAnswer:
        """One API call; a 401 with an OAuth token renews the token and sends once more
        (an API token cannot be renewed)."""
        return await self._http.call_signed_in(
            method,
            url,
            self._credentials,
            rule=rule,
            params=params,
            renew=self._credentials.can_refresh,
        )


def _principal_from(
    user: Mapping[str, Any],
    groups: frozenset[str],
    *,
    read_phone: bool,
    read_recovery_email: bool = False,
) -> Principal:
    """The person; ``mobilePhone`` and ``secondEmail`` are read only when the operator made
    them admin-only (a code sent where the account holder chose proves nothing)."""
    profile = user.get("profile") or {}
    full_name = " ".join(
        str(part) for part in (profile.get("firstName"), profile.get("lastName")) if part
    )
    email = profile.get("email")
    return Principal(
        id=str(user["id"]),
        kind=PrincipalKind.HUMAN,
        display_name=str(profile.get("displayName") or full_name or profile.get("login") or ""),
        email=str(email) if email else None,
        groups=groups,
        disabled=user.get("status") not in _SIGNED_IN_STATUSES,
        # Okta's base profile: secondEmail (an address of record for step-up codes) and
        # managerId (the manager of record asked to attest a step-up)
        recovery_email=(
            str(profile["secondEmail"])
            if read_recovery_email and profile.get("secondEmail")
            else None
        ),
        manager_id=str(profile["managerId"]) if profile.get("managerId") else None,
        # mobilePhone is free text in Okta: only an unambiguous E.164 number is a phone of
        # record (step-up codes by text); anything else is left out, never guessed at
        phone=phone_of_record(profile.get("mobilePhone")) if read_phone else None,
    )


def _push_unavailable(detail: str) -> PushResult:
    return PushResult(outcome=PushOutcome.UNAVAILABLE, detail=detail)


def build(
    config: Mapping[str, Any],
    http_client: httpx.AsyncClient | None = None,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.time,
) -> OktaConnector:
    """An Okta connector from its policy settings; secrets are read from the environment now,
    so a missing or malformed one stops start-up with a clear message."""
    settings = parse_config(OktaConfig, config, "okta connector")
    http = ProviderHttp.open("Okta", settings.limits, http_client, sleep=sleep, clock=clock)
    credentials: _Credentials
    if settings.api_token_env is not None:
        credentials = _ApiToken(secret_from_env(settings.api_token_env))
    else:
        assert settings.private_key_env is not None
        key = load_signing_key(
            secret_from_env(settings.private_key_env), settings.key_id, settings.private_key_env
        )
        credentials = _ServiceApp(settings, key, http, clock)
    return OktaConnector(settings, http, credentials, sleep)


PLUGIN = http_plugin("okta", OktaConfig, build, directory=lambda connector: connector)
