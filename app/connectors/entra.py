"""Microsoft Entra ID: the help desk's changes and directory look-ups, through Graph v1.0.

The connector signs in as an app registration with the OAuth 2.0 client-credentials grant
(``POST {login}/{tenant}/oauth2/v2.0/token``: client_id, client_secret, grant_type and
``scope=https://graph.microsoft.com/.default``) and calls Graph v1.0:

- temporary-access  POST  /users/{id}/authentication/temporaryAccessPassMethods
                    (answers 201 with ``temporaryAccessPass``: the one-time secret for the owner)
- reset-mfa         GET   /users/{id}/authentication/methods, then DELETE each method except the
                    password at its type's own path (``.../phoneMethods/{id}``, ...)
- reset-password    PATCH /users/{id} ``passwordProfile`` (password + change at next sign-in),
                    or, with ``password_reset: password-method``, POST
                    ``.../authentication/methods/{id}/resetPassword``: a long-running operation
                    that answers 202 and a ``Location`` twokey follows to its end
- revoke-sessions   POST  /users/{id}/revokeSignInSessions
- look-ups          GET   /users?$filter=mail eq '..' or userPrincipalName eq '..',
                    /users/{id}, /users/{id}/transitiveMemberOf (groups and directory roles)
- approvers         GET   /groups/{id}/transitiveMembers/microsoft.graph.user (with
                    ``group_key: name``, first GET /groups?$filter=displayName eq '..')

Before any change the user is read back by id, so the change lands on the person the request
names. The generated temporary password comes from :mod:`secrets`; one-time secrets go back to
the core for the owner only. Setup and permissions: docs/connectors-entra-google.md.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
import jwt
import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

from app.connectors.base import (
    EnvVarName,
    completed,
    failed,
    only_supported,
    secret_from_env,
    temporary_password,
)
from app.connectors.checks import CheckResult, CheckStatus, missing, note, phone_note, works
from app.connectors.http import (
    AnswerLost,
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
    rate_limit_wait,
)
from app.domain.errors import Unavailable
from app.domain.models import Action, Principal, PrincipalKind, Request, phone_of_record
from app.ports import MEMBERS_MAX, ExecutionResult, Outcome

log = structlog.get_logger(__name__)

ENTRA_ACTIONS = frozenset(
    {Action.TEMPORARY_ACCESS, Action.RESET_MFA, Action.RESET_PASSWORD, Action.REVOKE_SESSIONS}
)
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
_TOKEN_REFRESH_MARGIN = 120.0
_PAGES = 50
_USER_FIELDS = "id,displayName,mail,userPrincipalName,accountEnabled,userType,mobilePhone"
"""Graph returns only a default set of user properties: every one read here is asked for."""
_PLAIN_EMAIL = re.compile(r"^[^\s\"\\@]+@[^\s\"\\@]+$")
_GRAPH_PAGE_MAX = 999
"""The largest ``$top`` Graph accepts for directory objects."""
_GROUP_NAME_MAX = 256
"""Entra group display names are at most 256 characters: a longer name is no group's."""

# ---- configuration ----------------------------------------------------------------------------

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DOMAIN = re.compile(r"(?=.{1,253}$)[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+")


def _is_tenant(value: str) -> str:
    if value.lower() in {"common", "organizations", "consumers"}:
        raise ValueError(
            f"{value!r} is a multi-tenant alias; an app signing in on its own needs your "
            "tenant's id (a GUID) or its domain, e.g. contoso.onmicrosoft.com"
        )
    if not (_GUID.fullmatch(value) or _DOMAIN.fullmatch(value)):
        raise ValueError(
            "is not a tenant: use the Directory (tenant) ID from the Entra admin center (a "
            "GUID) or a verified domain such as contoso.onmicrosoft.com"
        )
    return value


def _is_client_id(value: str) -> str:
    if not _GUID.fullmatch(value):
        raise ValueError(
            "is not an Application (client) ID: copy the GUID from the app registration's "
            "Overview page"
        )
    return value


class EntraConfig(BaseModel, LimitsFromSettings):
    """The ``entra`` connector in the policy file; the client secret by env-var name only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["entra"]
    name: str = Field(default="entra", pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    tenant_id: Annotated[str, AfterValidator(_is_tenant)]
    client_id: Annotated[str, AfterValidator(_is_client_id)]
    client_secret_env: EnvVarName
    login_url: ProviderUrl = "https://login.microsoftonline.com"
    graph_url: ProviderUrl = "https://graph.microsoft.com/v1.0"
    actions: frozenset[Action] = ENTRA_ACTIONS
    tap_lifetime_minutes: int = Field(default=60, ge=10, le=43200)
    """Graph accepts 10 to 43200 minutes (30 days); the tenant's TAP policy may narrow it."""
    tap_usable_once: bool = True
    password_length: int = Field(default=20, ge=12, le=256)
    password_reset: Literal["password-profile", "password-method"] = "password-profile"  # noqa: S105
    """``password-profile``: PATCH the user's passwordProfile, which Graph allows an app signing
    in on its own. ``password-method``: the resetPassword long-running operation, which
    Microsoft documents for delegated (signed-in admin) calls only."""
    password_reset_checks: int = Field(default=10, ge=1, le=60)
    password_reset_check_interval: float = Field(default=2.0, ge=0, le=60)
    group_key: Literal["id", "name"] = "id"
    """What the policy's group names mean. ``id`` (object ids) by default: Entra display
    names are not unique, and ordinary users may be allowed to create groups."""
    phone_of_record: bool = False
    """Read ``mobilePhone`` as the phone of record (step-up codes by text, ``sms_code``). Off by
    default: Entra may let people edit their own mobilePhone, so a code texted to a number the
    account holder (or whoever holds their session) set proves nothing. Turn on only once users
    cannot edit it (tenant user settings, no role or app that writes it for them), or for users
    synced from on-premises AD (read-only in Entra) where SELF may not write ``mobile``."""
    timeout: Timeout = 15.0
    max_attempts: Attempts = 3
    max_rate_limit_wait: RateLimitWait = 30.0

    @field_validator("actions")
    @classmethod
    def _only_entra_actions(cls, value: frozenset[Action]) -> frozenset[Action]:
        only_supported(value, ENTRA_ACTIONS, "Entra")
        return value


_READ_USERS = (
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
)
_READ_MEMBERSHIPS = (
    "GroupMember.Read.All",
    "Group.Read.All",
    "GroupMember.ReadWrite.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
)
_ACTION_PERMISSIONS: dict[Action, tuple[str, ...]] = {
    Action.TEMPORARY_ACCESS: ("UserAuthenticationMethod.ReadWrite.All",),
    Action.RESET_MFA: ("UserAuthenticationMethod.ReadWrite.All",),
    Action.RESET_PASSWORD: ("User.ReadWrite.All",),
    Action.REVOKE_SESSIONS: (
        "User.RevokeSessions.All",
        "User.ReadWrite.All",
        "Directory.ReadWrite.All",
    ),
}
"""Graph application permissions, least privileged first, as docs/connectors-entra-google.md
lists them for each use."""


# ---- one-time secrets and Graph's words ------------------------------------------------------


def graph_error_words(answer: ProviderAnswer, *hidden: str) -> str:
    """Graph's error body ``{"error": {"code", "message"}}`` as one line of words.

    Anything we sent that must stay secret (a password) is cut out in case Graph echoes it.
    """
    body = answer.json()
    error = body.get("error") if isinstance(body, dict) else None
    message = code = ""
    if isinstance(error, dict):
        message = str(error.get("message") or "").strip()
        code = str(error.get("code") or "").strip()
    for value in hidden:
        message = message.replace(value, "[hidden]")
    where = f"{code}, HTTP {answer.status}" if code else f"HTTP {answer.status}"
    return one_line(f"{message or 'no reason given'} ({where})")


def _token_refusal(answer: ProviderAnswer) -> str:
    """The login service's ``error_description`` (its first line holds the AADSTS code)."""
    body = answer.json()
    words = ""
    if isinstance(body, dict):
        words = str(body.get("error_description") or body.get("error") or "")
    first = words.strip().splitlines()[0] if words.strip() else "no reason given"
    return (
        f"Microsoft Entra refused to sign twokey in ({one_line(first)}, HTTP {answer.status}); "
        "check the tenant, client id, client secret and the app's permissions"
    )


class NoAccessToken(ProviderCallError):
    """Entra issued no access token: nothing was sent to change anyone."""


class GraphRefused(ProviderCallError):
    """Graph refused a read the change depends on: nothing was changed."""


# ---- authentication methods: what they are and where Graph deletes them -----------------------

_PASSWORD_METHOD = "#microsoft.graph.passwordAuthenticationMethod"  # noqa: S105 - a type name
_EXTERNAL_METHOD = "#microsoft.graph.externalAuthenticationMethod"
_PHONE_METHOD = "#microsoft.graph.phoneAuthenticationMethod"
_METHOD_KINDS = {
    "#microsoft.graph.emailAuthenticationMethod": ("emailMethods", "email address"),
    "#microsoft.graph.fido2AuthenticationMethod": ("fido2Methods", "FIDO2 security key"),
    "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod": (
        "microsoftAuthenticatorMethods",
        "Microsoft Authenticator",
    ),
    "#microsoft.graph.softwareOathAuthenticationMethod": ("softwareOathMethods", "OATH app"),
    "#microsoft.graph.hardwareOathAuthenticationMethod": ("hardwareOathMethods", "OATH token"),
    "#microsoft.graph.temporaryAccessPassAuthenticationMethod": (
        "temporaryAccessPassMethods",
        "Temporary Access Pass",
    ),
    "#microsoft.graph.windowsHelloForBusinessAuthenticationMethod": (
        "windowsHelloForBusinessMethods",
        "Windows Hello for Business",
    ),
    "#microsoft.graph.platformCredentialAuthenticationMethod": (
        "platformCredentialMethods",
        "platform credential",
    ),
    _PHONE_METHOD: ("phoneMethods", "phone"),
}
_PHONE_ORDER = {
    "b6332ec1-7057-4abe-9331-3d72feddfe41": 0,  # alternateMobile: must go before mobile
    "e37fc753-ff3b-4958-9484-eaa9425c82bc": 1,  # office
    "3179e48a-750b-4051-897c-87b9720928f7": 2,  # mobile
}


@dataclass(frozen=True)
class AuthenticationMethod:
    """One method registered to a user, as ``GET .../authentication/methods`` lists it."""

    kind: str
    id: str

    @property
    def label(self) -> str:
        if self.kind == _EXTERNAL_METHOD:
            return "external MFA"
        known = _METHOD_KINDS.get(self.kind)
        return known[1] if known else self.kind.removeprefix("#microsoft.graph.")

    def delete_path(self, user: str) -> str | None:
        """Where Graph v1.0 deletes this kind of method; None for a kind we do not know."""
        method = quote(self.id, safe="")
        if self.kind == _EXTERNAL_METHOD:
            return f"/users/{user}/authentication/externalAuthenticationMethods/{method}/$ref"
        known = _METHOD_KINDS.get(self.kind)
        return f"/users/{user}/authentication/{known[0]}/{method}" if known else None

    @property
    def removal_order(self) -> tuple[int, int]:
        """Phones last (a default phone goes once it is alone); alternate before mobile."""
        if self.kind == _PHONE_METHOD:
            return (1, _PHONE_ORDER.get(self.id, 1))
        return (0, 0)


# ---- the connector -----------------------------------------------------------------------------


class _ClientCredentials:
    """An app-only Graph token, minted with the client secret and renewed before it expires."""

    def __init__(
        self, config: EntraConfig, client_secret: SecretStr, http: ProviderHttp, clock: Clock
    ) -> None:
        self._url = f"{config.login_url}/{quote(config.tenant_id, safe='')}/oauth2/v2.0/token"
        self._client_id = config.client_id
        self._secret = client_secret
        self._http = http
        self._clock = clock
        self._token: SecretStr | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"_ClientCredentials(client_id={self._client_id!r})"

    async def sign(self, method: str, url: str) -> Mapping[str, str]:
        async with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._token = await self._mint()
            return {"Authorization": f"Bearer {self._token.get_secret_value()}"}

    def forget(self) -> None:
        self._token = None

    def granted_roles(self) -> frozenset[str] | None:
        """The application permissions in the current token's ``roles`` claim, for `connectors
        check` only (decisions never rest on it); None when the token does not show them."""
        if self._token is None:
            return None
        try:
            claims = jwt.decode(self._token.get_secret_value(), options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        roles = claims.get("roles")
        if not isinstance(roles, list):
            return None
        return frozenset(str(role) for role in roles)

    async def _mint(self) -> SecretStr:
        try:
            answer = await self._http.call("POST", self._url, rule=RetryRule.READ, form=self._form)
        except ProviderCallError as error:
            raise NoAccessToken(f"the Microsoft login service did not answer: {error}") from None
        body = answer.json()
        token = body.get("access_token") if isinstance(body, dict) else None
        if not answer.ok or not isinstance(token, str) or not token:
            raise NoAccessToken(_token_refusal(answer))
        assert isinstance(body, dict)
        lifetime = body.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) else 600.0
        self._renew_at = self._clock() + max(seconds - _TOKEN_REFRESH_MARGIN, seconds / 2)
        log.info("entra_token_issued", expires_in=seconds)
        return SecretStr(token)

    def _form(self) -> Mapping[str, str]:
        return {
            "client_id": self._client_id,
            "scope": GRAPH_SCOPE,
            "client_secret": self._secret.get_secret_value(),
            "grant_type": "client_credentials",
        }


class EntraConnector(HttpConnector[EntraConfig]):
    """Entra as the identity provider that makes the change and as the directory of people."""

    provider = "Entra"
    event = "entra_change"
    look = "Check the user in the Entra admin center"
    shown = ("tenant_id",)
    refusals = (NoAccessToken, ProviderUnreachable, RateLimited, GraphRefused)

    def __init__(
        self,
        config: EntraConfig,
        http: ProviderHttp,
        credentials: _ClientCredentials,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(config, http)
        self._graph = config.graph_url
        self._credentials = credentials
        self._sleep = sleep

    async def _change(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        checked = await self._user_for_change(target)
        if checked is not None:
            return checked
        user = quote(target.id, safe="")
        if action is Action.TEMPORARY_ACCESS:
            return await self._issue_temporary_access_pass(user, target)
        if action is Action.RESET_MFA:
            return await self._reset_mfa(user, target)
        if action is Action.RESET_PASSWORD:
            return await self._reset_password(user, target)
        return await self._revoke_sessions(user, target)

    async def _user_for_change(self, target: Principal) -> ExecutionResult | None:
        """Read the user back by id: the change must land on the person the request names."""
        try:
            answer = await self._send(
                "GET",
                f"/users/{quote(target.id, safe='')}",
                RetryRule.READ,
                params={"$select": _USER_FIELDS},
            )
        except AnswerLost as error:
            raise GraphRefused(f"{error}; nothing was changed") from None
        body = answer.json()
        if not answer.ok or not isinstance(body, dict) or body.get("id") != target.id:
            return failed(
                f"Entra could not find {target.name} ({graph_error_words(answer)}); "
                "nothing was changed"
            )
        addresses = {str(body.get(k) or "").casefold() for k in ("mail", "userPrincipalName")}
        if target.email and target.email.casefold() not in addresses:
            return failed(
                f"Entra's user {target.id} no longer has the address {target.email} the request "
                "was opened for; nothing was changed. Open a new request."
            )
        return None

    async def _issue_temporary_access_pass(self, user: str, target: Principal) -> ExecutionResult:
        answer = await self._send(
            "POST",
            f"/users/{user}/authentication/temporaryAccessPassMethods",
            RetryRule.CHANGE,
            json_body={
                "lifetimeInMinutes": self.config.tap_lifetime_minutes,
                "isUsableOnce": self.config.tap_usable_once,
            },
        )
        if not answer.ok:
            return failed(
                f"Entra refused a Temporary Access Pass for {target.name}: "
                f"{graph_error_words(answer)}"
            )
        body = answer.json()
        tap = body.get("temporaryAccessPass") if isinstance(body, dict) else None
        if not isinstance(tap, str) or not tap:
            return ExecutionResult(
                outcome=Outcome.UNKNOWN,
                detail=f"Entra answered the Temporary Access Pass request for {target.name} "
                "without the pass, so nobody can use it. Check the user's authentication "
                "methods; a new pass replaces this one.",
            )
        use = "single-use" if self.config.tap_usable_once else "reusable"
        return ExecutionResult(
            outcome=Outcome.COMPLETED,
            detail=f"Entra issued a {use} Temporary Access Pass for {target.name}, valid for "
            f"{self.config.tap_lifetime_minutes} minutes. The pass goes to them only.",
            secret=SecretStr(tap),
            secret_label="Entra Temporary Access Pass",  # noqa: S106 - a label
        )

    async def _reset_mfa(self, user: str, target: Principal) -> ExecutionResult:
        """Delete every registered method but the password; the user registers MFA again."""
        methods = [
            AuthenticationMethod(str(item.get("@odata.type") or ""), str(item["id"]))
            async for item in self._collection(f"/users/{user}/authentication/methods")
            if item.get("id") and item.get("@odata.type") != _PASSWORD_METHOD
        ]
        if not methods:
            return completed(
                f"{target.name} had no authentication method in Entra besides the password; "
                "nothing needed removing."
            )
        removed: list[str] = []
        left: list[str] = []
        for method in sorted(methods, key=lambda m: m.removal_order):
            path = method.delete_path(user)
            if path is None:
                left.append(f"{method.label} (a kind twokey does not know how to remove)")
                continue
            try:
                answer = await self._send("DELETE", path, RetryRule.CHANGE)
            except (ProviderUnreachable, RateLimited, NoAccessToken) as error:
                left.append(f"{method.label} ({error})")
                continue
            except AnswerLost as error:
                raise AnswerLost(
                    f"{error} (while removing {method.label}; removed before that: "
                    f"{', '.join(removed) or 'nothing'})"
                ) from None
            if answer.ok or answer.status == 404:
                removed.append(method.label)
            else:
                left.append(f"{method.label} ({graph_error_words(answer)})")
        if left:
            return failed(
                f"Entra reset MFA for {target.name} only in part. Removed: "
                f"{', '.join(removed) or 'nothing'}. Still registered: {'; '.join(left)}."
            )
        return completed(
            f"Entra removed every authentication method of {target.name} except the password "
            f"({', '.join(removed)}); they register MFA again at their next sign-in."
        )

    async def _reset_password(self, user: str, target: Principal) -> ExecutionResult:
        """Set a temporary password. Whenever Entra may have set it (done, or the answer lost
        or unfinished), the owner gets it: dropped, a reset that went through would leave them
        locked out with a password nobody knows (invariant 5: never dropped)."""
        password = temporary_password(self.config.password_length)
        try:
            if self.config.password_reset == "password-method":  # noqa: S105 - a mode name
                outcome, detail = await self._reset_password_method(user, target, password)
            else:
                outcome, detail = await self._reset_password_profile(user, target, password)
        except AnswerLost as error:
            outcome, detail = (
                Outcome.UNKNOWN,
                (
                    f"it is unclear whether Entra did {Action.RESET_PASSWORD.label} for "
                    f"{target.name}: {error}. {self.look} before asking again."
                ),
            )
        if outcome is Outcome.FAILED:
            return ExecutionResult(outcome=outcome, detail=detail)
        label = "Entra temporary password"
        if outcome is Outcome.UNKNOWN:
            label += " (it works only if the reset went through)"
        return ExecutionResult(
            outcome=outcome,
            detail=detail,
            secret=SecretStr(password),
            secret_label=label,
        )

    async def _reset_password_profile(
        self, user: str, target: Principal, password: str
    ) -> tuple[Outcome, str]:
        answer = await self._send(
            "PATCH",
            f"/users/{user}",
            RetryRule.CHANGE,
            json_body={
                "passwordProfile": {"forceChangePasswordNextSignIn": True, "password": password}
            },
        )
        if not answer.ok:
            return Outcome.FAILED, (
                f"Entra refused to {Action.RESET_PASSWORD.label} for {target.name}: "
                f"{graph_error_words(answer, password)}"
            )
        return Outcome.COMPLETED, (
            f"Entra set a temporary password for {target.name}; they choose a new one at their "
            "next sign-in. The temporary password goes to them only."
        )

    async def _reset_password_method(
        self, user: str, target: Principal, password: str
    ) -> tuple[Outcome, str]:
        """resetPassword answers 202 and a Location; the operation there tells how it ended."""
        ids = [
            str(item["id"])
            async for item in self._collection(f"/users/{user}/authentication/passwordMethods")
            if item.get("id")
        ]
        method_id = ids[0] if ids else None
        if method_id is None:
            return Outcome.FAILED, (
                f"Entra lists no password for {target.name} to reset; nothing was changed"
            )
        answer = await self._send(
            "POST",
            f"/users/{user}/authentication/methods/{quote(method_id, safe='')}/resetPassword",
            RetryRule.CHANGE,
            json_body={"newPassword": password},
        )
        if not answer.ok:
            return Outcome.FAILED, (
                f"Entra refused to {Action.RESET_PASSWORD.label} for {target.name}: "
                f"{graph_error_words(answer, password)}"
            )
        location = answer.headers.get("location")
        if answer.status != 202 or not location:
            return Outcome.UNKNOWN, (
                f"Entra accepted the password reset for {target.name} without saying where to "
                "follow it; it may or may not have happened. Check the user before asking again."
            )
        return await self._follow_reset(location, target, password, answer)

    async def _follow_reset(
        self, location: str, target: Principal, password: str, accepted: ProviderAnswer
    ) -> tuple[Outcome, str]:
        """Poll the operation until succeeded or failed, within the configured checks."""
        unfinished = (
            f"Entra accepted the password reset for {target.name} but had not finished it after "
            f"{self.config.password_reset_checks} checks; it may still happen. Check the user "
            "before asking again."
        )
        if not self._is_graph_url(location):
            return Outcome.UNKNOWN, (
                f"Entra accepted the password reset for {target.name} but pointed to a progress "
                "URL outside the configured Graph URL, which twokey does not call; check the user."
            )
        previous = accepted
        for _ in range(self.config.password_reset_checks):
            await self._sleep(self._poll_wait(previous))
            try:
                previous = await self._send_url("GET", location, RetryRule.READ)
            except (ProviderCallError, NoAccessToken):
                continue
            body = previous.json()
            status = str(body.get("status") or "") if isinstance(body, dict) else ""
            if status == "succeeded":
                return Outcome.COMPLETED, (
                    f"Entra reset the password of {target.name}; they choose a new one at their "
                    "next sign-in. The temporary password goes to them only."
                )
            if status == "failed" and isinstance(body, dict):
                reason = str(body.get("statusDetail") or "no reason given").replace(
                    password, "[hidden]"
                )
                return Outcome.FAILED, (
                    f"Entra could not reset the password of {target.name}: {one_line(reason)}"
                )
        return Outcome.UNKNOWN, unfinished

    def _poll_wait(self, answer: ProviderAnswer) -> float:
        hinted = rate_limit_wait(answer.headers, self._http.clock())
        wait = hinted if hinted is not None else self.config.password_reset_check_interval
        return min(wait, self.config.max_rate_limit_wait)

    async def _revoke_sessions(self, user: str, target: Principal) -> ExecutionResult:
        answer = await self._send("POST", f"/users/{user}/revokeSignInSessions", RetryRule.CHANGE)
        if not answer.ok:
            return failed(
                f"Entra refused to {Action.REVOKE_SESSIONS.label} for {target.name}: "
                f"{graph_error_words(answer)}"
            )
        body = answer.json()
        if isinstance(body, dict) and body.get("value") is False:
            return failed(f"Entra answered that it did not revoke the sessions of {target.name}")
        return completed(
            f"Entra revoked every refresh token and browser session of {target.name}; apps "
            "may take a few minutes to notice."
        )

    # -- `twokey connectors check` --------------------------------------------------------------

    async def check(self) -> list[CheckResult]:
        """Read-only: sign in, compare the token's permissions, read one user's memberships."""
        what = f"sign in as app {self.config.client_id} (client credentials)"
        try:
            await self._credentials.sign("GET", f"{self._graph}/users")
        except NoAccessToken as error:
            return [missing(what, f"{error}; nothing else can be checked")]
        results = [works(what, f"tenant {self.config.tenant_id}")]
        results += self._check_permissions()
        users, body = await self._check_read(
            "read users (GET /users?$top=1)", "/users", {"$top": "1", "$select": "id"}
        )
        results.append(users)
        listed = body.get("value") if isinstance(body, dict) else None
        first = listed[0] if isinstance(listed, list) and listed else None
        if isinstance(first, dict) and first.get("id"):
            path = f"/users/{quote(str(first['id']), safe='')}/transitiveMemberOf"
            groups, _ = await self._check_read(
                "read a user's groups and roles (GET /users/{id}/transitiveMemberOf)",
                path,
                {"$top": "1"},
            )
            results.append(groups)
        elif users.status is CheckStatus.OK:
            results.append(note("read a user's groups", "Graph lists no user to read groups of"))
        if self.config.phone_of_record:
            results.append(
                phone_note(
                    "mobilePhone",
                    "users must not be allowed to edit it (or be synced from on-premises)",
                )
            )
        return results

    def _check_permissions(self) -> list[CheckResult]:
        needed = self._permissions_needed()
        granted = self._credentials.granted_roles()
        if granted is None:
            wanted = "; ".join(f"{use}: {options[0]}" for use, options in needed.items())
            return [
                note(
                    "application permissions",
                    "the access token does not list them; in the app registration, check "
                    f"that admin consent is granted for: {wanted}",
                )
            ]
        results = []
        for use, options in needed.items():
            held = sorted(set(options) & granted)
            if held:
                results.append(works(f"permission to {use}", ", ".join(held)))
            else:
                results.append(
                    missing(
                        f"permission to {use}",
                        f"grant the application permission {options[0]} (Microsoft Graph) "
                        "and admin consent",
                    )
                )
        return results

    def _permissions_needed(self) -> dict[str, tuple[str, ...]]:
        """What each use needs, least privileged first (Microsoft Graph permissions reference)."""
        needed = {
            "read users": _READ_USERS,
            "read group memberships": _READ_MEMBERSHIPS,
        }
        for action in sorted(self.config.actions):
            options = _ACTION_PERMISSIONS[action]
            by_method = self.config.password_reset == "password-method"  # noqa: S105
            if action is Action.RESET_PASSWORD and by_method:
                options = ("UserAuthenticationMethod.ReadWrite.All",)
            needed[str(action)] = options
        return needed

    async def _check_read(
        self, what: str, path: str, params: Mapping[str, str]
    ) -> tuple[CheckResult, Any]:
        try:
            answer = await self._send("GET", path, RetryRule.READ, params=params)
        except ProviderCallError as error:
            return missing(what, str(error)), None
        if answer.ok:
            return works(what), answer.json()
        words = graph_error_words(answer)
        if answer.status == 403:
            words += "; the app lacks a permission this needs (see the lines above)"
        return missing(what, words), None

    # -- Directory ----------------------------------------------------------------------------

    async def find_by_email(self, email: str) -> list[Principal]:
        """Every user whose mail or user principal name is this address.

        An address that could not be a plain email is matched to nobody rather than spliced
        into Graph's filter (quotes are doubled as OData requires, for the ones that remain).
        """
        if len(email) > 254 or not _PLAIN_EMAIL.fullmatch(email):
            return []
        literal = email.replace("'", "''")
        params = {
            "$filter": f"mail eq '{literal}' or userPrincipalName eq '{literal}'",
            "$select": _USER_FIELDS,
        }
        users = [user async for user in self._read_collection("/users", params)]
        return [await self._principal(user) for user in users]

    async def get(self, principal_id: str) -> Principal | None:
        """The user with this object id (or UPN), with groups and roles; None when unknown."""
        if not principal_id:
            return None
        answer = await self._read(
            f"{self._graph}/users/{quote(principal_id, safe='@')}", {"$select": _USER_FIELDS}
        )
        if answer.status == 404:
            return None
        body = self._read_ok(answer)
        if not isinstance(body, dict) or not body.get("id"):
            raise Unavailable("the Entra directory answered a user look-up with no user")
        return await self._principal(body)

    async def find_nhi(self, name: str) -> Principal | None:
        """Entra holds the people here; non-human identities live in other connectors."""
        return None

    async def search(self, text: str, limit: int = 20) -> list[Principal]:
        """For pickers: users whose name, mail or UPN starts with ``text`` (Graph's startswith).

        Groups are not read here (one call per user would spend the throttling budget on a
        picker): decide nothing from these; call :meth:`get` for the principal you act on.
        """
        text = text.strip()
        if not text or len(text) > 100 or limit <= 0:
            return []
        literal = text.replace("'", "''")
        params = {
            "$filter": " or ".join(
                f"startswith({field},'{literal}')"
                for field in ("displayName", "mail", "userPrincipalName")
            ),
            "$select": _USER_FIELDS,
            "$top": str(min(limit, 100)),
        }
        body = self._read_ok(await self._read(f"{self._graph}/users", params))
        users = body.get("value") if isinstance(body, dict) else None
        if not isinstance(users, list):
            raise Unavailable("the Entra directory answered a user search with no list")
        found = [user for user in users if isinstance(user, dict) and user.get("id")]
        read_phone = self.config.phone_of_record
        return [
            _principal_from(user, frozenset(), frozenset(), read_phone=read_phone)
            for user in found[:limit]
        ]

    async def memberships(self, user_id: str) -> tuple[frozenset[str], frozenset[str]]:
        """(groups, tags): every group and directory role, direct or through nested groups.

        Groups by object id or display name (``group_key``); directory roles as
        ``role:<name>``, and any role at all tags the user ``privileged``.
        """
        groups: set[str] = set()
        tags: set[str] = set()
        path = f"/users/{quote(user_id, safe='')}/transitiveMemberOf"
        async for item in self._read_collection(path, {}):
            kind = item.get("@odata.type")
            name = str(item.get("displayName") or "")
            if kind == "#microsoft.graph.group":
                key = name if self.config.group_key == "name" else str(item.get("id") or "")
                if key:
                    groups.add(key)
            elif kind == "#microsoft.graph.directoryRole":
                if name:
                    groups.add(f"role:{name}")
                tags.add("privileged")
        return frozenset(groups), frozenset(tags)

    async def members(self, groups: Sequence[str], limit: int = MEMBERS_MAX) -> list[Principal]:
        """The users in any of ``groups``, directly or through nested groups, each once.

        One ``transitiveMembers/microsoft.graph.user`` listing per group (every page, until
        ``limit`` people are found), so it agrees with :meth:`memberships`, which the gates
        read. Each principal's ``groups`` are the asked-for groups they were found in; no
        directory roles or ``privileged`` tag are read (one more call per person): decide
        nothing else from these, call :meth:`get` for a principal you act on. At ``limit``
        reading stops, so a person may then lack a later group they are also in.

        A group key that cannot be an object id (``group_key: id``), no group of that exact
        display name (``group_key: name``), a 404, or a ``role:`` key (directory roles are
        not listed here) has nobody. A display name that several groups share raises
        Unavailable rather than picking one or merging them: which group the policy means is
        then unknown (display names are not unique, and users may create groups), and the
        operator should hear it and switch to ``group_key: id`` instead of seeing approvers
        silently vanish or appear.
        """
        if limit <= 0:
            return []
        found = GroupMembersFound(limit)
        for key in dict.fromkeys(groups):
            group_id = await self._group_id(key)
            if group_id is None:
                continue
            path = f"/groups/{quote(group_id, safe='')}/transitiveMembers/microsoft.graph.user"
            params = {"$select": _USER_FIELDS, "$top": str(min(limit, _GRAPH_PAGE_MAX))}
            listing = self._read_collection(path, params, absent_is_empty=True)
            async with aclosing(listing) as users:
                async for user in users:
                    user_id = str(user.get("id") or "")
                    if not user_id or found.seen_again(user_id, key):
                        continue
                    found.add(user_id, user, key)
                    if found.full:
                        break
            if found.full:
                break
        read_phone = self.config.phone_of_record
        return [
            _principal_from(user, keys, frozenset(), read_phone=read_phone)
            for user, keys in found.people()
        ]

    async def _group_id(self, key: str) -> str | None:
        """The object id of the group the policy names ``key``; None when there is none."""
        if key.startswith("role:"):
            log.warning("entra_members_of_role_not_listed", group=key)
            return None
        if self.config.group_key == "id":
            return key if _GUID.fullmatch(key) else None
        if not key or len(key) > _GROUP_NAME_MAX:
            return None
        literal = key.replace("'", "''")
        params = {"$filter": f"displayName eq '{literal}'", "$select": "id,displayName"}
        # Graph's eq ignores case; the gates compare names exactly (memberships), so do we.
        matches = [
            str(group["id"])
            async for group in self._read_collection("/groups", params)
            if group.get("displayName") == key and group.get("id")
        ]
        if len(matches) > 1:
            raise Unavailable(
                f"the Entra directory has {len(matches)} groups named {key!r}, so who is in "
                "it is ambiguous; name groups by object id (group_key: id) in the policy"
            )
        return matches[0] if matches else None

    async def _principal(self, user: Mapping[str, Any]) -> Principal:
        groups, tags = await self.memberships(str(user["id"]))
        return _principal_from(user, groups, tags, read_phone=self.config.phone_of_record)

    # -- calls --------------------------------------------------------------------------------

    def _is_graph_url(self, url: str) -> bool:
        """Links Graph hands back are followed only under the configured Graph URL (they get
        our token)."""
        return url.startswith(self._graph + "/") or url.startswith(self._graph + "?")

    async def _collection(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """Every item of a collection a change depends on; a gap is a refusal, never a guess.

        Read before anything changes, so a lost answer here still means nothing changed.
        """
        try:
            answer = await self._send("GET", path, RetryRule.READ)
        except AnswerLost as error:
            raise GraphRefused(f"{error}; nothing was changed") from None
        for _ in range(_PAGES):
            body = answer.json()
            if (
                not answer.ok
                or not isinstance(body, dict)
                or not isinstance(body.get("value"), list)
            ):
                raise GraphRefused(f"Graph refused to list them ({graph_error_words(answer)})")
            for item in body["value"]:
                if isinstance(item, dict):
                    yield item
            link = body.get("@odata.nextLink")
            if not isinstance(link, str):
                return
            if not self._is_graph_url(link):
                raise GraphRefused("Graph's next-page link points outside the Graph URL")
            try:
                answer = await self._send_url("GET", link, RetryRule.READ)
            except AnswerLost as error:
                raise GraphRefused(f"{error}; nothing was changed") from None
        raise GraphRefused(f"Graph lists more than {_PAGES} pages")

    async def _read_collection(
        self, path: str, params: Mapping[str, str], *, absent_is_empty: bool = False
    ) -> AsyncGenerator[dict[str, Any]]:
        """Every item of a directory collection, all pages; anything less is Unavailable.

        ``absent_is_empty``: a 404 for the first page (the object the collection belongs to
        does not exist) is an empty collection rather than a refusal.
        """
        answer = await self._read(f"{self._graph}{path}", params)
        if absent_is_empty and answer.status == 404:
            return
        for _ in range(_PAGES):
            body = self._read_ok(answer)
            if not isinstance(body, dict) or not isinstance(body.get("value"), list):
                raise Unavailable("the Entra directory answered a look-up with no list")
            for item in body["value"]:
                if isinstance(item, dict):
                    yield item
            link = body.get("@odata.nextLink")
            if not isinstance(link, str):
                return
            if not self._is_graph_url(link):
                raise Unavailable("the Entra directory's next-page link points outside Graph")
            answer = await self._read(link)
        raise Unavailable(f"the Entra directory lists more than {_PAGES} pages")

    async def _read(self, url: str, params: Mapping[str, str] | None = None) -> ProviderAnswer:
        try:
            return await self._send_url("GET", url, RetryRule.READ, params)
        except ProviderCallError as error:
            raise Unavailable(f"the Entra directory could not be read: {error}") from None

    def _read_ok(self, answer: ProviderAnswer) -> Any:
        if not answer.ok:
            raise Unavailable(f"the Entra directory refused a look-up: {graph_error_words(answer)}")
        return answer.json()

    async def _send(
        self,
        method: str,
        path: str,
        rule: RetryRule,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> ProviderAnswer:
        return await self._send_url(method, f"{self._graph}{path}", rule, params, json_body)

    async def _send_url(
        self,
        method: str,
        url: str,
        rule: RetryRule,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> ProviderAnswer:
        """One Graph call; a 401 renews the token and sends once more (a 401 changed nothing)."""
        return await self._http.call_signed_in(
            method, url, self._credentials, rule=rule, params=params, json_body=json_body
        )


def _principal_from(
    user: Mapping[str, Any], groups: frozenset[str], tags: frozenset[str], *, read_phone: bool
) -> Principal:
    """The person; ``mobilePhone`` is read only when the operator made it admin-only."""
    if str(user.get("userType") or "") == "Guest":
        tags = tags | {"guest"}
    email = user.get("mail") or user.get("userPrincipalName")
    return Principal(
        id=str(user["id"]),
        kind=PrincipalKind.HUMAN,
        display_name=str(user.get("displayName") or ""),
        email=str(email) if email else None,
        groups=groups,
        tags=tags,
        disabled=user.get("accountEnabled") is False,
        # mobilePhone is free text (up to 64 characters) on the user resource; its
        # authentication phoneMethods are what the person registered for MFA, never read here.
        # Only an unambiguous E.164 number is a phone of record; anything else is left out.
        phone=phone_of_record(user.get("mobilePhone")) if read_phone else None,
    )


def build(
    config: Mapping[str, Any],
    http_client: httpx.AsyncClient | None = None,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.time,
) -> EntraConnector:
    """An Entra connector from its policy settings; the client secret is read from the
    environment now, so a missing one stops start-up with a clear message."""
    settings = parse_config(EntraConfig, config, "entra connector")
    secret = secret_from_env(settings.client_secret_env)
    http = ProviderHttp.open(
        "Microsoft Graph", settings.limits, http_client, sleep=sleep, clock=clock
    )
    credentials = _ClientCredentials(settings, secret, http, clock)
    return EntraConnector(settings, http, credentials, sleep=sleep)


PLUGIN = http_plugin("entra", EntraConfig, build, directory=lambda connector: connector)
