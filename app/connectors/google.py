"""Google Workspace: the help desk's changes, and directory look-ups, through the Admin SDK.

The connector is a service account with domain-wide delegation. It signs a JWT assertion (RS256,
``iss`` = the service account, ``sub`` = the admin it acts as, ``scope``, ``aud`` = the token URL)
and trades it at ``https://oauth2.googleapis.com/token`` with the
``urn:ietf:params:oauth:grant-type:jwt-bearer`` grant, then calls Directory API v1 (every path
and body checked in tests against Google's discovery document ``admin:directory_v1``):

- reset-password   PUT  users/{userKey} ``{password, hashFunction, changePasswordAtNextLogin}``
                   (directory.users.update; the password is generated from :mod:`secrets` and
                   sent as the hex SHA-1 hash Google recommends, so the clear text never
                   travels; it is the one-time secret for the owner)
- revoke-sessions  POST users/{userKey}/signOut                        (directory.users.signOut)
- reset-mfa        POST users/{userKey}/twoStepVerification/turnOff, then
                   POST users/{userKey}/verificationCodes/generate and
                   GET  users/{userKey}/verificationCodes: the new backup codes are the
                   one-time secret (generating them voids the old ones)
- look-ups         GET  users/{userKey} (by id or any of the user's addresses),
                   GET  groups?userKey=..., GET users?customer=...&query=...
- approvers        GET  groups/{groupKey}/members (direct members), then
                   GET  users/{userKey} for each user (with ``group_key: name``, first
                   GET  groups?customer=...&query=name='...')

Before any change the user is read back by id, so the change lands on the person the request
names. Setup, delegated scopes and the admin to act as: docs/connectors-entra-google.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from app.connectors.base import (
    ConnectorConfigError,
    EnvVarName,
    completed,
    failed,
    only_supported,
    secret_from_env,
    temporary_password,
)
from app.connectors.checks import CheckResult, CheckStatus, missing, note, works
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
)
from app.domain.errors import Unavailable
from app.domain.models import Action, Principal, PrincipalKind, Request, phone_of_record
from app.ports import MEMBERS_MAX, ExecutionResult, Outcome

log = structlog.get_logger(__name__)

GOOGLE_ACTIONS = frozenset({Action.RESET_PASSWORD, Action.REVOKE_SESSIONS, Action.RESET_MFA})
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE_USER = "https://www.googleapis.com/auth/admin.directory.user"
SCOPE_USER_READONLY = "https://www.googleapis.com/auth/admin.directory.user.readonly"
SCOPE_USER_SECURITY = "https://www.googleapis.com/auth/admin.directory.user.security"
SCOPE_GROUP_READONLY = "https://www.googleapis.com/auth/admin.directory.group.readonly"
_DIRECTORY = "/admin/directory/v1"
_ASSERTION_LIFETIME = 3600
_TOKEN_REFRESH_MARGIN = 120.0
_PAGES = 20
_PLAIN_EMAIL = re.compile(r"^[^\s\"\\@/?#%]+@[^\s\"\\@/?#%]+$")
_SEARCH_TERM = re.compile(r"^[\w.@+-]{1,100}$")
_GROUP_NAME_MAX = 256
"""The longest group name searched for: a bound on what reaches Google's query, not a claim."""
_RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"}


class GoogleConfig(BaseModel, LimitsFromSettings):
    """The ``google`` connector in the policy file; the service account key by env-var name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["google"]
    name: str = Field(default="google", pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    customer: str = Field(default="my_customer", pattern=r"^(my_customer|C[0-9A-Za-z]{4,20})$")
    """The Workspace customer id (Admin console > Account settings), or my_customer."""
    admin_subject: str = Field(pattern=r"^[^\s@]+@[^\s@]+\.[^\s@]+$", max_length=254)
    """The admin the service account acts as (``sub``): it needs the user-management and
    security admin privileges the actions use."""
    service_account_key_env: EnvVarName
    """Name of the environment variable holding the service account's JSON key."""
    token_url: ProviderUrl = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
    api_url: ProviderUrl = "https://admin.googleapis.com"
    actions: frozenset[Action] = GOOGLE_ACTIONS
    password_length: int = Field(default=20, ge=12, le=100)
    """Google accepts 8 to 100 ASCII characters; the domain's policy may ask for more."""
    send_password_as: Literal["sha1-hash", "clear-text"] = "sha1-hash"  # noqa: S105
    """``sha1-hash``: hex SHA-1 with hashFunction SHA-1, as Google recommends (the random
    password's entropy makes an unsalted hash safe). ``clear-text`` lets Google check the
    domain's password strength rules, which it cannot do on a hash."""
    group_key: Literal["email", "name"] = "email"
    """What the policy's group names mean: group email addresses (unique) or group names."""
    timeout: Timeout = 15.0
    max_attempts: Attempts = 3
    max_rate_limit_wait: RateLimitWait = 30.0

    @field_validator("actions")
    @classmethod
    def _only_google_actions(cls, value: frozenset[Action]) -> frozenset[Action]:
        only_supported(value, GOOGLE_ACTIONS, "Google Workspace")
        return value

    @property
    def scopes(self) -> tuple[str, ...]:
        """The OAuth scopes to delegate to the service account, and no more than the actions
        need: write access to users only when passwords are reset."""
        user = SCOPE_USER if Action.RESET_PASSWORD in self.actions else SCOPE_USER_READONLY
        wanted = [user, SCOPE_GROUP_READONLY]
        if self.actions & {Action.REVOKE_SESSIONS, Action.RESET_MFA}:
            wanted.append(SCOPE_USER_SECURITY)
        return tuple(wanted)


# ---- the service account ----------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAccountKey:
    """The parts of a service account's JSON key that sign the delegation assertion."""

    client_email: str
    key_id: str
    private_key: rsa.RSAPrivateKey

    def __repr__(self) -> str:
        return f"ServiceAccountKey(client_email={self.client_email!r}, key_id={self.key_id!r})"


def load_service_account_key(secret: SecretStr, env_name: str) -> ServiceAccountKey:
    """Parse the JSON key Google hands out for a service account; never echo any of it."""
    refused = ConnectorConfigError(
        f"environment variable {env_name} does not hold a service account JSON key: create a "
        "key for the service account (IAM & Admin > Service accounts > Keys > Add key > JSON) "
        "and put the whole file's content in the variable"
    )
    try:
        data = json.loads(secret.get_secret_value())
    except ValueError:
        raise refused from None
    if not isinstance(data, dict) or data.get("type") != "service_account":
        raise refused
    email, key_id, pem = (
        data.get("client_email"),
        data.get("private_key_id"),
        data.get("private_key"),
    )
    if not all(isinstance(v, str) and v for v in (email, key_id, pem)):
        raise refused
    assert isinstance(email, str) and isinstance(key_id, str) and isinstance(pem, str)
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise refused from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise refused
    return ServiceAccountKey(email, key_id, key)


class NoAccessToken(ProviderCallError):
    """Google issued no access token: nothing was sent to change anyone."""


class GoogleRefused(ProviderCallError):
    """Google refused a read the change depends on: nothing was changed."""


class _DelegatedCredentials:
    """A token for the admin the service account acts as, renewed before it expires."""

    def __init__(
        self, config: GoogleConfig, key: ServiceAccountKey, http: ProviderHttp, clock: Clock
    ) -> None:
        self._config = config
        self._key = key
        self._http = http
        self._clock = clock
        self._token: SecretStr | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"_DelegatedCredentials(service_account={self._key.client_email!r})"

    async def sign(self, method: str, url: str) -> Mapping[str, str]:
        async with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._token = await self._mint()
            return {"Authorization": f"Bearer {self._token.get_secret_value()}"}

    def forget(self) -> None:
        self._token = None

    async def _mint(self) -> SecretStr:
        try:
            answer = await self._http.call(
                "POST", self._config.token_url, rule=RetryRule.READ, form=self._form
            )
        except ProviderCallError as error:
            raise NoAccessToken(f"Google's token endpoint did not answer: {error}") from None
        body = answer.json()
        token = body.get("access_token") if isinstance(body, dict) else None
        if not answer.ok or not isinstance(token, str) or not token:
            raise NoAccessToken(_token_refusal(answer, self._config.admin_subject))
        assert isinstance(body, dict)
        lifetime = body.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) else 600.0
        self._renew_at = self._clock() + max(seconds - _TOKEN_REFRESH_MARGIN, seconds / 2)
        log.info("google_token_issued", expires_in=seconds)
        return SecretStr(token)

    async def delegated(self, scopes: tuple[str, ...]) -> bool:
        """Would Google issue a token for just these scopes? For `connectors check`: the token
        endpoint refuses an assertion if any scope asked for is not delegated."""
        try:
            answer = await self._http.call(
                "POST", self._config.token_url, rule=RetryRule.READ, form=lambda: self._form(scopes)
            )
        except ProviderCallError:
            return False
        body = answer.json()
        return answer.ok and isinstance(body, dict) and bool(body.get("access_token"))

    def _form(self, scopes: tuple[str, ...] | None = None) -> Mapping[str, str]:
        """A fresh assertion for every attempt: RFC 7523 with Google's claims."""
        now = int(self._clock())
        claims = {
            "iss": self._key.client_email,
            "sub": self._config.admin_subject,
            "scope": " ".join(scopes or self._config.scopes),
            "aud": self._config.token_url,
            "iat": now,
            "exp": now + _ASSERTION_LIFETIME,
        }
        assertion = jwt.encode(
            claims, self._key.private_key, algorithm="RS256", headers={"kid": self._key.key_id}
        )
        return {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}


def _token_refusal(answer: ProviderAnswer, admin: str) -> str:
    body = answer.json()
    words = ""
    if isinstance(body, dict):
        words = str(body.get("error_description") or body.get("error") or "")
    return (
        f"Google refused to let the service account act as {admin} "
        f"({one_line(words) or 'no reason given'}, HTTP {answer.status}); check the key, the "
        "admin and the scopes granted under domain-wide delegation"
    )


def google_error_words(answer: ProviderAnswer, *hidden: str) -> str:
    """Google's error body ``{"error": {"code", "message", "errors": [{"reason"}]}}`` in words.

    Anything we sent that must stay secret (a password, its hash) is cut out in case Google, or
    a gateway before it, echoes it: these words reach the agent, the channel and the trail."""
    body = answer.json()
    error = body.get("error") if isinstance(body, dict) else None
    message, reason = "", ""
    if isinstance(error, dict):
        message = str(error.get("message") or "").strip()
        details = error.get("errors")
        if isinstance(details, list) and details and isinstance(details[0], dict):
            reason = str(details[0].get("reason") or "")
    for value in hidden:
        message = message.replace(value, "[hidden]")
    where = f"{reason}, HTTP {answer.status}" if reason else f"HTTP {answer.status}"
    return one_line(f"{message or 'no reason given'} ({where})")


def _rate_limited(answer: ProviderAnswer) -> bool:
    """Google also answers 403 with a rate-limit reason: refused, nothing done."""
    body = answer.json()
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("errors") if isinstance(error, dict) else None
    return (
        answer.status == 403
        and isinstance(details, list)
        and any(isinstance(d, dict) and d.get("reason") in _RATE_LIMIT_REASONS for d in details)
    )


# ---- the connector -----------------------------------------------------------------------------


class GoogleConnector(HttpConnector[GoogleConfig]):
    """Google Workspace as the identity provider that makes the change and as the directory."""

    provider = "Google"
    event = "google_change"
    look = "Check the user in the Google Admin console"
    shown = ("customer",)
    refusals = (NoAccessToken, ProviderUnreachable, RateLimited, GoogleRefused)

    def __init__(
        self,
        config: GoogleConfig,
        http: ProviderHttp,
        credentials: _DelegatedCredentials,
    ) -> None:
        super().__init__(config, http)
        self._api = f"{config.api_url}{_DIRECTORY}"
        self._credentials = credentials

    async def _change(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        user = await self._user_for_change(target)
        if isinstance(user, ExecutionResult):
            return user
        key = quote(target.id, safe="")
        if action is Action.RESET_PASSWORD:
            return await self._reset_password(key, target)
        if action is Action.RESET_MFA:
            return await self._reset_mfa(key, target, enrolled=user.get("isEnrolledIn2Sv"))
        return await self._revoke_sessions(key, target)

    async def _user_for_change(self, target: Principal) -> dict[str, Any] | ExecutionResult:
        """Read the user back by id: the change must land on the person the request names."""
        try:
            answer = await self._send("GET", f"/users/{quote(target.id, safe='')}", RetryRule.READ)
        except AnswerLost as error:
            raise GoogleRefused(f"{error}; nothing was changed") from None
        body = answer.json()
        if not answer.ok or not isinstance(body, dict) or body.get("id") != target.id:
            return self._refused(f"Google could not find {target.name}", answer)
        if target.email and target.email.casefold() not in _addresses(body):
            return failed(
                f"Google's user {target.id} no longer has the address {target.email} the "
                "request was opened for; nothing was changed. Open a new request."
            )
        return body

    async def _reset_password(self, key: str, target: Principal) -> ExecutionResult:
        password = temporary_password(self.config.password_length)
        body: dict[str, Any] = {"changePasswordAtNextLogin": True}
        if self.config.send_password_as == "sha1-hash":  # noqa: S105 - a mode name
            body["password"] = hashlib.sha1(password.encode("ascii")).hexdigest()  # noqa: S324
            body["hashFunction"] = "SHA-1"
        else:
            body["password"] = password
        answer = await self._send("PUT", f"/users/{key}", RetryRule.CHANGE, json_body=body)
        if not answer.ok:
            return self._refused(
                f"Google refused to {Action.RESET_PASSWORD.label} for {target.name}",
                answer,
                password,
                str(body["password"]),
            )
        return ExecutionResult(
            outcome=Outcome.COMPLETED,
            detail=f"Google set a temporary password for {target.name}; they choose a new one "
            "at their next sign-in. The temporary password goes to them only.",
            secret=SecretStr(password),
            secret_label="Google temporary password",  # noqa: S106 - a label, not a password
        )

    async def _revoke_sessions(self, key: str, target: Principal) -> ExecutionResult:
        answer = await self._send("POST", f"/users/{key}/signOut", RetryRule.CHANGE)
        if not answer.ok:
            return self._refused(
                f"Google refused to {Action.REVOKE_SESSIONS.label} for {target.name}", answer
            )
        return completed(
            f"Google signed {target.name} out of every web and device session; they sign in "
            "again everywhere."
        )

    async def _reset_mfa(self, key: str, target: Principal, *, enrolled: object) -> ExecutionResult:
        """Turn off 2-Step Verification, then hand the owner fresh backup codes (the old
        ones stop working) so they can get back in and enrol again."""
        if enrolled is not False:
            answer = await self._send(
                "POST", f"/users/{key}/twoStepVerification/turnOff", RetryRule.CHANGE
            )
            if not answer.ok:
                return self._refused(
                    f"Google refused to turn off 2-Step Verification for {target.name}", answer
                )
            done = f"Google turned off 2-Step Verification for {target.name}"
        else:
            done = f"2-Step Verification was already off for {target.name}"
        try:
            answer = await self._send(
                "POST", f"/users/{key}/verificationCodes/generate", RetryRule.CHANGE
            )
        except (ProviderUnreachable, RateLimited, NoAccessToken) as error:
            return failed(f"{done}, but new backup codes could not be made: {error}")
        except AnswerLost as error:
            raise AnswerLost(f"{done}; then, making new backup codes: {error}") from None
        if not answer.ok:
            return failed(
                f"{done}, but Google refused to make new backup codes: {google_error_words(answer)}"
            )
        try:
            answer = await self._send("GET", f"/users/{key}/verificationCodes", RetryRule.READ)
        except ProviderCallError as error:
            return failed(f"{done} and made new backup codes, but they could not be read: {error}")
        body = answer.json()
        items = body.get("items") if isinstance(body, dict) else None
        codes = [
            str(item["verificationCode"])
            for item in items or []
            if isinstance(item, dict) and item.get("verificationCode")
        ]
        if not answer.ok or not codes:
            return failed(
                f"{done} and made new backup codes, but Google did not hand them over "
                f"({google_error_words(answer, *codes)}); make new ones in the Admin console"
            )
        return ExecutionResult(
            outcome=Outcome.COMPLETED,
            detail=f"{done} and made {len(codes)} new backup verification codes (the old ones "
            "no longer work). The codes go to them only.",
            secret=SecretStr("\n".join(codes)),
            secret_label="Google backup verification codes",  # noqa: S106 - a label
        )

    def _refused(self, what: str, answer: ProviderAnswer, *hidden: str) -> ExecutionResult:
        if _rate_limited(answer):
            what += " for now (rate limited, nothing changed; try again later)"
        return failed(f"{what}: {google_error_words(answer, *hidden)}")

    # -- `twokey connectors check` --------------------------------------------------------------

    async def check(self) -> list[CheckResult]:
        """Read-only: sign in (which proves the delegated scopes), read one user and groups."""
        what = (
            f"sign in as {self.config.admin_subject} through domain-wide delegation "
            f"with {', '.join(self.config.scopes)}"
        )
        try:
            await self._credentials.sign("GET", f"{self._api}/users")
        except NoAccessToken as error:
            return [missing(what, f"{error}; nothing else can be checked"), *await self._scopes()]
        results = [works(what)]
        users, body = await self._check_read(
            "read users (users.list maxResults=1)",
            f"{self._api}/users",
            {"customer": self.config.customer, "maxResults": "1"},
        )
        results.append(users)
        listed = body.get("users") if isinstance(body, dict) else None
        first = listed[0] if isinstance(listed, list) and listed else None
        if isinstance(first, dict) and first.get("id"):
            groups, _ = await self._check_read(
                "read a user's groups (groups.list userKey=...)",
                f"{self._api}/groups",
                {"userKey": str(first["id"]), "maxResults": "1"},
            )
            results.append(groups)
        elif users.status is CheckStatus.OK:
            results.append(note("read a user's groups", "Google lists no user to read groups of"))
        return results

    async def _scopes(self) -> list[CheckResult]:
        """After a refused sign-in: ask for each scope alone, to say which one is missing."""
        refused = [
            scope for scope in self.config.scopes if not await self._credentials.delegated((scope,))
        ]
        if not refused:
            return []
        if len(refused) == len(self.config.scopes):
            return [
                missing(
                    "any delegated scope",
                    f"Google refuses every scope: check that {self.config.admin_subject} is an "
                    "admin, that the key belongs to the service account, and that its client id "
                    "is listed under Security > API controls > Domain-wide delegation",
                )
            ]
        return [
            missing(
                f"delegated scope {scope}",
                "add it to the service account's client id "
                "under Security > API controls > Domain-wide delegation",
            )
            for scope in refused
        ]

    async def _check_read(
        self, what: str, url: str, params: Mapping[str, str]
    ) -> tuple[CheckResult, Any]:
        try:
            answer = await self._send_url("GET", url, RetryRule.READ, params)
        except ProviderCallError as error:
            return missing(what, str(error)), None
        if answer.ok:
            return works(what), answer.json()
        words = google_error_words(answer)
        if answer.status == 403:
            words += (
                f"; {self.config.admin_subject} needs an admin role that can read users and groups"
            )
        return missing(what, words), None

    # -- Directory ----------------------------------------------------------------------------

    async def find_by_email(self, email: str) -> list[Principal]:
        """The user who has this address as primary email or alias (Google allows one)."""
        if len(email) > 254 or not _PLAIN_EMAIL.fullmatch(email):
            return []
        user = await self._user(quote(email, safe="@"))
        if user is None:
            return []
        if email.casefold() not in _addresses(user):
            return []
        return [await self._principal(user)]

    async def get(self, principal_id: str) -> Principal | None:
        """The user with this id, with their groups; None when Google has none."""
        if not principal_id:
            return None
        user = await self._user(quote(principal_id, safe=""))
        return await self._principal(user) if user is not None else None

    async def find_nhi(self, name: str) -> Principal | None:
        """Google Workspace holds the people here; NHIs live in other connectors."""
        return None

    async def search(self, text: str, limit: int = 20) -> list[Principal]:
        """For pickers: users whose given name, family name or email match ``text``.

        Groups are not read here: decide nothing from these; call :meth:`get` for the
        principal you act on. Text that is not a plain search term matches nobody.
        """
        text = text.strip()
        if not _SEARCH_TERM.fullmatch(text) or limit <= 0:
            return []
        params = {
            "customer": self.config.customer,
            "query": text,
            "maxResults": str(min(limit, 500)),
        }
        body = self._read_ok(await self._read(f"{self._api}/users", params))
        users = body.get("users", []) if isinstance(body, dict) else None
        if not isinstance(users, list):
            raise Unavailable("the Google directory answered a user search with no list")
        found = [u for u in users if isinstance(u, dict) and u.get("id")]
        return [_principal_from(user, frozenset()) for user in found[:limit]]

    async def groups_of(self, user_id: str) -> frozenset[str]:
        """The groups the user belongs to, by email or name as configured, every page."""
        groups: set[str] = set()
        params = {"userKey": user_id, "maxResults": "200"}
        for _ in range(_PAGES):
            body = self._read_ok(await self._read(f"{self._api}/groups", params))
            if not isinstance(body, dict):
                raise Unavailable("the Google directory answered a group look-up with no list")
            for group in body.get("groups") or []:
                if isinstance(group, dict):
                    value = group.get(self.config.group_key)
                    if value:
                        groups.add(str(value))
            page = body.get("nextPageToken")
            if not isinstance(page, str) or not page:
                return frozenset(groups)
            params = {**params, "pageToken": page}
        raise Unavailable(f"Google lists more than {_PAGES} pages of groups for {user_id}")

    async def members(self, groups: Sequence[str], limit: int = MEMBERS_MAX) -> list[Principal]:
        """The users directly in any of ``groups``, each once.

        members.list (every page, until ``limit`` people are found), keeping members of type
        USER. Direct members only, as groups.list by userKey (what the gates read when someone
        acts) lists direct groups only: someone reached only through a nested group would be
        asked to approve and then refused. CUSTOMER (everyone in the account) is not listed
        person by person (logged). Member
        ``status`` is not filtered on: each user is read with users.get, as everywhere here,
        and suspended or archived people come back ``disabled`` for callers to decide. A
        member users.get does not know (someone outside the account) is skipped.

        Each principal's ``groups`` are the asked-for groups they were found in. At ``limit``
        reading stops, so a person may then lack a later group they are also in.

        A group Google does not know (404), a key that cannot be a group email, or no group
        with exactly that name (``group_key: name``; Google's search may take hours to see a
        new group) has nobody. A name that several groups share raises Unavailable rather
        than picking one: group names are not unique, so who is meant is unknown and the
        operator should switch to ``group_key: email``.
        """
        if limit <= 0:
            return []
        found = GroupMembersFound(limit)
        strangers: set[str] = set()
        for key in dict.fromkeys(groups):
            group_key = await self._group_key(key)
            if group_key is None:
                continue
            async with aclosing(self._user_members(group_key, key)) as member_ids:
                async for member_id in member_ids:
                    if found.seen_again(member_id, key) or member_id in strangers:
                        continue
                    user = await self._user(quote(member_id, safe=""))
                    if user is None:
                        strangers.add(member_id)
                        continue
                    found.add(member_id, user, key)
                    if found.full:
                        break
            if found.full:
                break
        return [_principal_from(user, keys) for user, keys in found.people()]

    async def _group_key(self, key: str) -> str | None:
        """What members.list takes as ``groupKey`` for the group the policy names ``key``
        (its email, quoted, or its unique id); None when no such group can exist."""
        if self.config.group_key == "email":
            if len(key) > 254 or not _PLAIN_EMAIL.fullmatch(key):
                return None
            return quote(key, safe="@")
        if not key or len(key) > _GROUP_NAME_MAX:
            return None
        if "\\" in key:
            raise Unavailable(
                f"the group name {key!r} cannot be searched for exactly in Google's query "
                "syntax; name groups by email (group_key: email) in the policy"
            )
        literal = key.replace("'", "\\'")
        params = {
            "customer": self.config.customer,
            "query": f"name='{literal}'",
            "maxResults": "200",
        }
        matches: list[str] = []
        for _ in range(_PAGES):
            body = self._read_ok(await self._read(f"{self._api}/groups", params))
            if not isinstance(body, dict):
                raise Unavailable("the Google directory answered a group search with no list")
            matches += [
                str(group["id"])
                for group in body.get("groups") or []
                if isinstance(group, dict) and group.get("name") == key and group.get("id")
            ]
            page = body.get("nextPageToken")
            if not isinstance(page, str) or not page:
                break
            params = {**params, "pageToken": page}
        else:
            raise Unavailable(f"Google lists more than {_PAGES} pages of groups named {key!r}")
        if len(matches) > 1:
            raise Unavailable(
                f"the Google directory has {len(matches)} groups named {key!r}, so who is in "
                "it is ambiguous; name groups by email (group_key: email) in the policy"
            )
        return quote(matches[0], safe="") if matches else None

    async def _user_members(self, group_key: str, name: str) -> AsyncGenerator[str]:
        """The ids of the group's direct USER members, every page; nothing for a group Google
        does not know; anything less than every page is Unavailable."""
        url = f"{self._api}/groups/{group_key}/members"
        params = {"maxResults": "200"}
        for page_number in range(_PAGES):
            answer = await self._read(url, params)
            if page_number == 0 and answer.status == 404:
                return
            body = self._read_ok(answer)
            if not isinstance(body, dict):
                raise Unavailable("the Google directory answered a member listing with no list")
            for member in body.get("members") or []:
                if not isinstance(member, dict):
                    continue
                if member.get("type") == "USER" and member.get("id"):
                    yield str(member["id"])
                elif member.get("type") == "CUSTOMER":
                    log.warning("google_members_of_customer_not_listed", group=name)
            page = body.get("nextPageToken")
            if not isinstance(page, str) or not page:
                return
            params = {**params, "pageToken": page}
        raise Unavailable(f"Google lists more than {_PAGES} pages of members of {name}")

    async def _user(self, key: str) -> dict[str, Any] | None:
        answer = await self._read(f"{self._api}/users/{key}")
        if answer.status == 404:
            return None
        body = self._read_ok(answer)
        if not isinstance(body, dict) or not body.get("id"):
            raise Unavailable("the Google directory answered a user look-up with no user")
        return body

    async def _principal(self, user: Mapping[str, Any]) -> Principal:
        return _principal_from(user, await self.groups_of(str(user["id"])))

    # -- calls --------------------------------------------------------------------------------

    async def _read(self, url: str, params: Mapping[str, str] | None = None) -> ProviderAnswer:
        try:
            return await self._send_url("GET", url, RetryRule.READ, params)
        except ProviderCallError as error:
            raise Unavailable(f"the Google directory could not be read: {error}") from None

    def _read_ok(self, answer: ProviderAnswer) -> Any:
        if not answer.ok:
            raise Unavailable(
                f"the Google directory refused a look-up: {google_error_words(answer)}"
            )
        return answer.json()

    async def _send(
        self, method: str, path: str, rule: RetryRule, *, json_body: Any = None
    ) -> ProviderAnswer:
        return await self._send_url(method, f"{self._api}{path}", rule, None, json_body)

    async def _send_url(
        self,
        method: str,
        url: str,
        rule: RetryRule,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> ProviderAnswer:
        """One API call; a 401 renews the token and sends once more (a 401 changed nothing)."""
        return await self._http.call_signed_in(
            method, url, self._credentials, rule=rule, params=params, json_body=json_body
        )


def _addresses(user: Mapping[str, Any]) -> set[str]:
    """Every address the user answers to: primary email, aliases and listed emails."""
    found = {str(user.get("primaryEmail") or "").casefold()}
    for alias in user.get("aliases") or []:
        found.add(str(alias).casefold())
    emails = user.get("emails")
    if isinstance(emails, list):
        for entry in emails:
            if isinstance(entry, dict) and entry.get("address"):
                found.add(str(entry["address"]).casefold())
    found.discard("")
    return found


def _mobile_of_record(user: Mapping[str, Any]) -> str | None:
    """The user's ``mobile`` entry of ``phones`` (the primary one when several), as E.164.

    ``phones`` is what an admin recorded (users cannot edit it); ``recoveryPhone`` is the
    user's own and is never read. Mobiles with different numbers and no primary among them,
    or a number that is not unambiguous E.164, give none: a code is never texted to a guess.
    """
    phones = user.get("phones")
    if not isinstance(phones, list):
        return None
    mobiles = [p for p in phones if isinstance(p, dict) and p.get("type") == "mobile"]
    chosen = [p for p in mobiles if p.get("primary") is True] or mobiles
    numbers = {phone_of_record(p.get("value")) for p in chosen}
    return numbers.pop() if len(numbers) == 1 else None


def _principal_from(user: Mapping[str, Any], groups: frozenset[str]) -> Principal:
    tags = set()
    if user.get("isAdmin"):
        tags |= {"privileged", "super-admin"}
    elif user.get("isDelegatedAdmin"):
        tags.add("privileged")
    name = user.get("name")
    full_name = str(name.get("fullName") or "") if isinstance(name, dict) else ""
    return Principal(
        id=str(user["id"]),
        kind=PrincipalKind.HUMAN,
        display_name=full_name,
        email=str(user.get("primaryEmail") or "") or None,
        groups=groups,
        tags=frozenset(tags),
        disabled=bool(user.get("suspended") or user.get("archived")),
        phone=_mobile_of_record(user),
    )


def build(
    config: Mapping[str, Any],
    http_client: httpx.AsyncClient | None = None,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.time,
) -> GoogleConnector:
    """A Google Workspace connector from its policy settings; the service account key is read
    and checked now, so a missing or malformed one stops start-up with a clear message."""
    settings = parse_config(GoogleConfig, config, "google connector")
    key = load_service_account_key(
        secret_from_env(settings.service_account_key_env), settings.service_account_key_env
    )
    http = ProviderHttp.open(
        "Google Workspace", settings.limits, http_client, sleep=sleep, clock=clock
    )
    credentials = _DelegatedCredentials(settings, key, http, clock)
    return GoogleConnector(settings, http, credentials)


PLUGIN = http_plugin("google", GoogleConfig, build, directory=lambda connector: connector)
