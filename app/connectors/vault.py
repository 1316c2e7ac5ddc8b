"""HashiCorp Vault: rotate an NHI's AppRole secret-id or a KV v2 secret value.

Which Vault object belongs to which NHI is written in the connector's ``targets`` (keyed by the
principal id, e.g. ``nhi:billing-api``); see docs/connectors-aws-vault.md:

- ``kind: approle``: issue a new secret-id for the role (``POST auth/<mount>/role/<role>/
  secret-id``), then destroy the old ones by accessor (``POST .../secret-id-accessor/destroy``).
  ``old_accessor_from: role`` destroys every secret-id the role had before (the role serves this
  NHI alone); ``metadata`` destroys only those twokey issued for this NHI, found by the
  ``twokey_nhi`` metadata it puts on every secret-id it issues (``.../secret-id-accessor/
  lookup``). If an old one cannot be destroyed, the new one is destroyed again: no half-rotation.
- ``kind: kv``: write a new random value into one field of a KV v2 secret, keeping its other
  fields, with check-and-set on the version read, so a concurrent writer is never overwritten.

The new secret-id or value is the owner's one-time secret. twokey signs in with a token from an
environment variable (``token_env``) or with its own AppRole (``role_id_env``/``secret_id_env``;
that login token is revoked when the rotation ends). Calls run in a thread (hvac is blocking),
with a timeout. A call that got no clear answer may have been applied: it is never repeated and
the outcome is ``unknown``. Only HTTP 429 (Vault's rate-limit quota, checked before anything is
done) is retried, after the Retry-After Vault sends, up to ``max_retry_wait`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal, Protocol, Self, TypeVar, cast
from urllib.parse import urlsplit

import hvac
import requests
from hvac.exceptions import (
    BadGateway,
    InternalServerError,
    InvalidPath,
    RateLimitExceeded,
    UnexpectedError,
    VaultError,
)
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ResponseError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from app.connectors.base import (
    EnvVarName,
    RotatingConnector,
    Stopped,
    config_problem,
    is_loopback,
    refuse_inline_secrets,
    secret_from_env,
    taken_back,
    time_to_change,
)
from app.connectors.checks import CheckResult, missing, works
from app.connectors.plugin import ConnectorPlugin, in_words
from app.domain.models import Action, Principal, Request
from app.ports import ExecutionResult, Outcome

log = logging.getLogger(__name__)

METADATA_NHI = "twokey_nhi"
"""Secret-id metadata key naming the NHI a secret-id was issued for."""
METADATA_REQUEST = "twokey_request"

_MOUNT = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
_ROLE = re.compile(r"[A-Za-z0-9 ._-]{1,4095}")
_KV_PATH = re.compile(r"[A-Za-z0-9._@+=-]+(/[A-Za-z0-9._@+=-]+)*")
_FIELD = re.compile(r"[\x21-\x7e]{1,128}")
_URL = re.compile(r"https?://[^\s/?#]+/?")
_INLINE_SECRETS = frozenset({"token", "role_id", "secret_id", "password", "vault_token"})
_UNCLEAR = (InternalServerError, BadGateway, UnexpectedError)
"""Answers after which a change may or may not have been made (500, 502, 504 and the like)."""
_HTTP_STATUS = {
    "InvalidRequest": "400 invalid request",
    "Unauthorized": "401 unauthorized",
    "Forbidden": "403 forbidden",
    "InvalidPath": "404 not found",
    "UnsupportedOperation": "405 unsupported operation",
    "PreconditionFailed": "412 precondition failed",
    "RateLimitExceeded": "429 rate limit exceeded",
    "InternalServerError": "500 internal error",
    "VaultNotInitialized": "501 not initialised",
    "BadGateway": "502 bad gateway",
    "VaultDown": "503 sealed or down",
}

T = TypeVar("T")


# ---- configuration ---------------------------------------------------------------------------


def _is_mount(value: str) -> str:
    if not _MOUNT.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Vault mount path: letters, digits, '_' and '-', segments "
            "joined by '/', no leading or trailing '/' (e.g. approle, secret, kv/team-a)"
        )
    return value


Mount = Annotated[str, AfterValidator(_is_mount)]


class AppRoleTarget(BaseModel):
    """Rotate the secret-id of an AppRole role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["approle"]
    role: str
    old_accessor_from: Literal["role", "metadata"] = "role"
    """``role``: destroy every earlier secret-id of the role; ``metadata``: only those twokey
    issued for this NHI (secret-id metadata ``twokey_nhi``)."""
    mount: Mount | None = None
    """The AppRole auth mount; the connector's ``approle_mount`` when absent."""

    @field_validator("role")
    @classmethod
    def _is_role(cls, value: str) -> str:
        if not _ROLE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an AppRole role name (letters, digits, space, '.', '_', '-')"
            )
        return value


class KvTarget(BaseModel):
    """Replace one field of a KV v2 secret with a new random value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["kv"]
    path: str
    """The secret's path inside the mount, without ``data/`` (e.g. ``apps/billing/db``)."""
    field: str = "value"
    length: int = Field(default=32, ge=16, le=128)
    """Random bytes in the new value (written URL-safe base64: 32 bytes -> 43 characters)."""
    mount: Mount | None = None
    """The KV v2 mount; the connector's ``mount`` when absent."""

    @field_validator("path")
    @classmethod
    def _is_path(cls, value: str) -> str:
        parts = value.split("/")
        if not _KV_PATH.fullmatch(value) or ".." in parts or "." in parts:
            raise ValueError(
                f"{value!r} is not a KV secret path: segments joined by '/', no leading or "
                "trailing '/', no '.' or '..' (e.g. apps/billing/db)"
            )
        return value

    @field_validator("field")
    @classmethod
    def _is_field(cls, value: str) -> str:
        if not _FIELD.fullmatch(value):
            raise ValueError(f"{value!r} is not a field name (1-128 visible characters)")
        return value


Target = Annotated[AppRoleTarget | KvTarget, Field(discriminator="kind")]


class VaultConfig(BaseModel):
    """The ``type: vault`` connector block of the policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["vault"]
    name: str = Field(default="vault", min_length=1, max_length=64)
    system: str = Field(default="vault", min_length=1, max_length=64)
    """The ``Principal.system`` value of the NHIs this connector rotates."""
    url: str
    namespace: str | None = None
    ca_cert: str | None = None
    """A PEM file of the CA that signed Vault's TLS certificate, when not a public one."""
    token_env: EnvVarName | None = None
    role_id_env: EnvVarName | None = None
    secret_id_env: EnvVarName | None = None
    approle_mount: Mount = "approle"
    mount: Mount = "secret"
    timeout: int = Field(default=10, ge=1, le=120)
    rate_limit_retries: int = Field(default=2, ge=0, le=5)
    max_retry_wait: int = Field(default=10, ge=0, le=120)
    targets: dict[str, Target] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _is_url(cls, value: str) -> str:
        if not _URL.fullmatch(value):
            raise ValueError(
                f"{value!r} is not Vault's address: scheme, host and port only "
                "(e.g. https://vault.example.com:8200)"
            )
        if value.startswith("http://") and not is_loopback(urlsplit(value).hostname or ""):
            raise ValueError(
                f"{value!r} uses plain http: tokens and secrets only travel over https "
                "(plain http is allowed for 127.0.0.1 and localhost, for local testing)"
            )
        return value.rstrip("/")

    @field_validator("ca_cert")
    @classmethod
    def _is_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"{value!r} is not a file (the CA certificate, PEM)")
        return value

    @field_validator("targets")
    @classmethod
    def _targets_are_principal_ids(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not 1 <= len(key) <= 200 or key != key.strip():
                raise ValueError(f"{key!r} is not a principal id (e.g. nhi:billing-api)")
        return value

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> Self:
        approle = (self.role_id_env, self.secret_id_env)
        if self.token_env and any(approle):
            raise ValueError(
                "choose one way to sign in to Vault: token_env, or role_id_env with secret_id_env"
            )
        if not self.token_env and not all(approle):
            raise ValueError(
                "say how twokey signs in to Vault: token_env (a variable holding a token), or "
                "role_id_env and secret_id_env (variables holding twokey's own AppRole)"
            )
        return self


class _Credentials(BaseModel):
    """What twokey signs in with, read from the environment at start-up."""

    model_config = ConfigDict(frozen=True)

    token: SecretStr | None = None
    role_id: SecretStr | None = None
    secret_id: SecretStr | None = None


def _reject_inline_secrets(raw: Mapping[str, Any]) -> None:
    refuse_inline_secrets(
        raw,
        _INLINE_SECRETS,
        "vault",
        "secrets are never written in the policy file. Name the environment variable that "
        "holds them instead: token_env, or role_id_env and secret_id_env.",
    )


# ---- the calls we make through hvac, typed --------------------------------------------------


class _AppRoleApi(Protocol):
    def login(
        self,
        role_id: str,
        secret_id: str | None = None,
        use_token: bool = True,
        *,
        mount_point: str,
    ) -> object: ...

    def list_secret_id_accessors(self, role_name: str, *, mount_point: str) -> object: ...

    def read_secret_id_accessor(
        self, role_name: str, secret_id_accessor: str, *, mount_point: str
    ) -> object: ...

    def generate_secret_id(
        self, role_name: str, metadata: dict[str, str] | None = None, *, mount_point: str
    ) -> object: ...

    def destroy_secret_id_accessor(
        self, role_name: str, secret_id_accessor: str, *, mount_point: str
    ) -> object: ...


class _KvV2Api(Protocol):
    def read_secret_version(
        self, path: str, *, mount_point: str, raise_on_deleted_version: bool
    ) -> object: ...

    def create_or_update_secret(
        self, path: str, secret: dict[str, Any], cas: int | None = None, *, mount_point: str
    ) -> object: ...


class _TokenApi(Protocol):
    def revoke_self(self) -> object: ...


class _HonourRetryAfter(Retry):
    """Retry HTTP 429 only, after the Retry-After Vault sends, if it is at most ``max_wait``.

    Vault checks its rate-limit quota before doing anything, so a 429 is safe to repeat.
    Connection and read errors are never retried: a request that may have arrived is not sent
    twice.
    """

    RETRY_AFTER_STATUS_CODES = frozenset({429})

    def __init__(self, *args: Any, max_wait: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_wait = max_wait

    def new(self, **kw: Any) -> Self:
        return super().new(max_wait=self.max_wait, **kw)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if response is not None and error is None:
            wait = self.get_retry_after(response)
            if wait is not None and wait > self.max_wait:
                reason = ResponseError(f"Retry-After {wait:.0f}s exceeds {self.max_wait:.0f}s")
                raise MaxRetryError(cast(ConnectionPool, _pool), url, reason)
        return super().increment(method, url, response, error, _pool, _stacktrace)


# ---- what a call can end in -------------------------------------------------------------------


def _never_sent(exc: requests.exceptions.RequestException) -> bool:
    """The connection was never made, so Vault cannot have received the request."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, ConnectTimeoutError)  # NewConnectionError is one too


class _Redirected(Exception):
    """Vault answered with a redirect: not followed (the token and the secret would travel to
    wherever it points, in the clear if it says http), and nothing was done where it was sent."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__(status)
        self.status = status
        self.elsewhere = urlsplit(location).netloc or "an address it did not give"


def _refuse_redirects(response: requests.Response, *args: object, **kwargs: object) -> None:
    """A response hook: any 3xx stops the call before anything could follow it."""
    if 300 <= response.status_code < 400:
        raise _Redirected(response.status_code, response.headers.get("Location", ""))


def _vault_said(exc: VaultError) -> str:
    """Vault's own words for a refusal: its HTTP status and ``errors`` list."""
    errors = exc.errors
    listed = [errors] if isinstance(errors, str) else list(errors or [])
    said = "; ".join(" ".join(str(e).split()) for e in listed if str(e).strip())
    if not said and errors is None and exc.args and isinstance(exc.args[0], str):
        said = " ".join(exc.args[0].split())  # not Vault's JSON: whatever text came back
    status = _HTTP_STATUS.get(type(exc).__name__, "an unexpected status")
    text = f"HTTP {status}" + (f": {said}" if said else "")
    return text if len(text) <= 300 else text[:299] + "…"


def _data(answer: object) -> dict[str, Any] | None:
    """The ``data`` object of a Vault JSON answer, or None when the answer has none."""
    if isinstance(answer, dict) and isinstance(answer.get("data"), dict):
        return cast(dict[str, Any], answer["data"])
    return None


def _list_or_none(approle: _AppRoleApi, role: str, mount: str) -> object:
    """LIST the role's secret-id accessors; Vault answers an empty list with 404 and no errors."""
    try:
        return approle.list_secret_id_accessors(role, mount_point=mount)
    except InvalidPath as exc:
        if exc.errors:
            raise
        return {"data": {"keys": []}}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


class _Vault:
    """One signed-in conversation with Vault, for one rotation (its own session and token)."""

    def __init__(self, config: VaultConfig, credentials: _Credentials) -> None:
        self.config = config
        self.known_secrets: list[str] = [
            s.get_secret_value()
            for s in (credentials.token, credentials.role_id, credentials.secret_id)
            if s is not None
        ]
        session = requests.Session()
        retry = _HonourRetryAfter(
            total=config.rate_limit_retries,
            connect=0,
            read=False,
            redirect=0,
            other=0,
            status=config.rate_limit_retries,
            status_forcelist=(429,),
            allowed_methods=None,
            backoff_factor=0.5,
            raise_on_status=False,
            max_wait=float(config.max_retry_wait),
        )
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.hooks["response"].append(_refuse_redirects)
        token = credentials.token.get_secret_value() if credentials.token else None
        self.client = hvac.Client(
            url=config.url,
            token=token,
            timeout=config.timeout,
            session=session,
            allow_redirects=False,
            namespace=config.namespace,
            verify=config.ca_cert or True,
            # LIST as `GET ?list=true`, which Vault documents as equivalent: proxies and load
            # balancers in front of Vault often refuse the non-standard LIST verb.
            strict_http=True,
        )
        self.approle = cast(_AppRoleApi, self.client.auth.approle)
        self.kv = cast(_KvV2Api, self.client.secrets.kv.v2)
        self.signed_in_here = False

    def sign_in(self, credentials: _Credentials) -> None:
        if credentials.role_id is None or credentials.secret_id is None:
            return
        role_id = credentials.role_id.get_secret_value()
        secret_id = credentials.secret_id.get_secret_value()
        self.call(
            "sign in with twokey's AppRole",
            lambda: self.approle.login(
                role_id, secret_id, use_token=True, mount_point=self.config.approle_mount
            ),
            changes=False,
        )
        self.signed_in_here = True
        self.known_secrets.append(self.client.token)

    def close(self) -> None:
        """Revoke the token this conversation signed in for (never an operator's token)."""
        if self.signed_in_here:
            token_api = cast(_TokenApi, self.client.auth.token)
            try:
                self.call("revoke twokey's login token", token_api.revoke_self, changes=True)
            except Stopped as stop:
                log.warning("vault: %s", self.scrub(stop.words))
        self.client.adapter.close()

    def scrub(self, text: str) -> str:
        for secret in self.known_secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "[redacted]")
        return text

    def call(self, step: str, call: Callable[[], T], *, changes: bool) -> T:
        """Make one Vault call; turn every failure into words and a truthful outcome.

        ``changes`` says whether the call changes anything: a change that got no clear answer
        is UNKNOWN (it may have happened), a read that failed is FAILED (nothing happened).
        """
        if changes:
            time_to_change(step, 2 * self.config.timeout)  # connect, then read
        try:
            return call()
        except _Redirected as exc:
            raise Stopped(
                Outcome.FAILED,
                f"Vault at {self.config.url} answered the request to {step} with a redirect "
                f"(HTTP {exc.status}) to {exc.elsewhere}; twokey sends its token and secrets "
                "only to the configured address, so nothing was done. Point the connector's url "
                "at the active Vault node, or at the load balancer that forwards to it",
            ) from None
        except RateLimitExceeded as exc:
            raise Stopped(
                Outcome.FAILED,
                f"Vault rate-limited the request to {step} ({self.scrub(_vault_said(exc))}); "
                f"twokey retries at most {self.config.rate_limit_retries} times and waits at "
                f"most {self.config.max_retry_wait}s when Vault asks, so it was not carried out. "
                "Try again later",
            ) from None
        except _UNCLEAR as exc:
            said = self.scrub(_vault_said(exc))
            if changes:
                raise Stopped(
                    Outcome.UNKNOWN,
                    f"Vault answered {said} to the request to {step}: it may or may not have "
                    "happened",
                ) from None
            raise Stopped(Outcome.FAILED, f"Vault could not {step} ({said})") from None
        except VaultError as exc:
            raise Stopped(
                Outcome.FAILED, f"Vault refused to {step} ({self.scrub(_vault_said(exc))})"
            ) from None
        except requests.exceptions.RequestException as exc:
            kind = type(exc).__name__
            if _never_sent(exc):
                raise Stopped(
                    Outcome.FAILED,
                    f"could not reach Vault at {self.config.url} to {step} ({kind}); nothing "
                    "was sent",
                ) from None
            if changes:
                raise Stopped(
                    Outcome.UNKNOWN,
                    f"no answer from Vault within {self.config.timeout}s to the request to "
                    f"{step} ({kind}): it may or may not have happened",
                ) from None
            raise Stopped(
                Outcome.FAILED,
                f"no answer from Vault within {self.config.timeout}s to {step} ({kind}); "
                "nothing was changed",
            ) from None


# ---- the connector ----------------------------------------------------------------------------


class VaultConnector(RotatingConnector[VaultConfig]):
    """The :class:`~app.ports.IdentityProvider` port for Vault secrets of NHIs (rotate-secret)."""

    provider = "Vault"
    kind = "vault"
    look = "Check the secret in Vault"

    def __init__(self, config: VaultConfig, credentials: _Credentials) -> None:
        super().__init__(config)
        self._credentials = credentials

    def _not_known(self, target: Principal) -> str:
        if target.id not in self.config.targets:
            return (
                f"Vault: no target is configured for {target.id}, so twokey does not know "
                "which secret is its own. Add it under `targets` of the vault connector; "
                "nothing done."
            )
        return ""

    def _where(self, target: Principal) -> str:
        return f"Vault: the rotation for {target.id}"

    # ---- `twokey connectors check` (in a worker thread) --------------------------------------

    def _check(self) -> list[CheckResult]:
        """Read-only: sign in, look up twokey's token, ask Vault what it may do on each target."""
        how = "its AppRole" if self._credentials.role_id is not None else "the token"
        what = f"sign in to Vault at {self.config.url} with {how} (token lookup-self)"
        with self._conversation() as vault:
            try:
                vault.sign_in(self._credentials)
                token_api: Any = vault.client.auth.token
                looked_up = _data(
                    vault.call("look up its own token", token_api.lookup_self, changes=False)
                )
            except Stopped as stop:
                return [missing(what, f"{stop.words}; nothing else can be checked")]
            results = [works(what, _token_words(looked_up or {}))]
            needed = self._capabilities_needed()
            try:
                sys_api: Any = vault.client.sys
                answer = vault.call(
                    "say what twokey may do on its targets",
                    partial(sys_api.get_capabilities, sorted(needed)),
                    changes=False,
                )
            except Stopped as stop:
                return [
                    *results,
                    missing("read its own capabilities (capabilities-self)", stop.words),
                ]
        held = _data(answer) or (answer if isinstance(answer, dict) else {})
        for path, wanted in sorted(needed.items()):
            has = held.get(path)
            granted = {str(c) for c in has} if isinstance(has, list) else set()
            lacking = set() if "root" in granted else wanted - granted
            where = f"{path} ({', '.join(sorted(wanted))})"
            if lacking:
                results.append(
                    missing(
                        where,
                        f"twokey's token lacks {', '.join(sorted(lacking))} here "
                        f"(it has: {', '.join(sorted(granted)) or 'nothing'}); add it to the "
                        "token's policy",
                    )
                )
            else:
                results.append(works(where))
        return results

    def _capabilities_needed(self) -> dict[str, set[str]]:
        """Each Vault path a rotation of a configured target uses, and what it does there."""
        needed: dict[str, set[str]] = {}
        for spec in self.config.targets.values():
            if isinstance(spec, AppRoleTarget):
                role = f"auth/{spec.mount or self.config.approle_mount}/role/{spec.role}"
                needed.setdefault(f"{role}/secret-id", set()).update({"list", "update"})
                needed.setdefault(f"{role}/secret-id-accessor/destroy", set()).add("update")
                if spec.old_accessor_from == "metadata":
                    needed.setdefault(f"{role}/secret-id-accessor/lookup", set()).add("update")
            else:
                path = f"{spec.mount or self.config.mount}/data/{spec.path}"
                needed.setdefault(path, set()).update({"read", "update"})
        return needed

    # ---- in a worker thread ------------------------------------------------------------------

    def _rotate(self, target: Principal, request: Request) -> ExecutionResult:
        spec = self.config.targets[target.id]
        with self._conversation() as vault:
            try:
                vault.sign_in(self._credentials)
                if isinstance(spec, AppRoleTarget):
                    return self._rotate_secret_id(vault, target, spec, request)
                return self._rotate_kv_value(vault, spec)
            except Stopped as stop:  # signing in failed: nothing was asked of Vault yet
                return ExecutionResult(outcome=stop.outcome, detail=f"Vault: {stop.words}.")

    @contextlib.contextmanager
    def _conversation(self) -> Iterator[_Vault]:
        vault = _Vault(self.config, self._credentials)
        try:
            yield vault
        finally:
            vault.close()

    def _rotate_secret_id(
        self, vault: _Vault, target: Principal, spec: AppRoleTarget, request: Request
    ) -> ExecutionResult:
        mount = spec.mount or self.config.approle_mount
        prefix = f"Vault AppRole role {spec.role!r}: "
        try:
            old = self._old_accessors(vault, target, spec, mount)
        except Stopped as stop:
            return ExecutionResult(outcome=stop.outcome, detail=prefix + stop.words + ".")
        metadata = {METADATA_NHI: target.id, METADATA_REQUEST: request.id}
        try:
            issued = _data(
                vault.call(
                    "issue a new secret-id",
                    lambda: vault.approle.generate_secret_id(
                        spec.role, metadata, mount_point=mount
                    ),
                    changes=True,
                )
            )
        except Stopped as stop:
            return ExecutionResult(outcome=stop.outcome, detail=prefix + stop.words + ".")
        secret_id = issued.get("secret_id") if issued else None
        accessor = issued.get("secret_id_accessor") if issued else None
        if not isinstance(secret_id, str) or not secret_id or not isinstance(accessor, str):
            return ExecutionResult(
                outcome=Outcome.UNKNOWN,
                detail=prefix + "Vault's answer to issuing a new secret-id had no secret_id "
                "and accessor: one may have been issued. Check the role's secret-id accessors.",
            )
        vault.known_secrets.append(secret_id)
        secret = SecretStr(secret_id)
        label = f"new Vault secret-id for AppRole role {spec.role}"
        issued_words = f"new secret-id issued (accessor {accessor})"
        destroyed: list[str] = []
        for old_accessor in old:
            try:
                vault.call(
                    f"destroy the old secret-id with accessor {old_accessor}",
                    partial(
                        vault.approle.destroy_secret_id_accessor,
                        spec.role,
                        old_accessor,
                        mount_point=mount,
                    ),
                    changes=True,
                )
            except Stopped as stop:
                so_far = [issued_words, *(f"destroyed old accessor {a}" for a in destroyed)]
                if stop.outcome is Outcome.UNKNOWN or destroyed:
                    # The new secret-id certainly exists and an old one is or may be gone:
                    # the owner needs the new one either way; a person finishes the job.
                    return ExecutionResult(
                        outcome=stop.outcome,
                        detail=prefix
                        + "; ".join([*so_far, stop.words])
                        + ". The new secret-id goes to the owner; destroy the old one by hand.",
                        secret=secret,
                        secret_label=label,
                    )
                return self._take_back(vault, spec, mount, accessor, prefix, so_far, stop)
            destroyed.append(old_accessor)
        if destroyed:
            whose = "the" if spec.old_accessor_from == "role" else f"{target.id}'s"
            retired = (
                f"destroyed {whose} {_plural(len(destroyed), 'previous secret-id')} by accessor "
                f"({', '.join(destroyed)})"
            )
        else:
            retired = "there was no previous secret-id to destroy"
        return ExecutionResult(
            outcome=Outcome.COMPLETED,
            detail=prefix + f"{issued_words}; {retired}.",
            secret=secret,
            secret_label=label,
        )

    def _old_accessors(
        self, vault: _Vault, target: Principal, spec: AppRoleTarget, mount: str
    ) -> list[str]:
        """The accessors of the secret-ids this rotation replaces, read before issuing."""
        listed = vault.call(
            "list the role's secret-id accessors",
            partial(_list_or_none, vault.approle, spec.role, mount),
            changes=False,
        )
        keys = (_data(listed) or {}).get("keys")
        accessors = [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []
        if spec.old_accessor_from == "role":
            return accessors
        mine = []
        for accessor in accessors:
            looked_up = _data(
                vault.call(
                    f"look up secret-id accessor {accessor}",
                    partial(
                        vault.approle.read_secret_id_accessor,
                        spec.role,
                        accessor,
                        mount_point=mount,
                    ),
                    changes=False,
                )
            )
            metadata = (looked_up or {}).get("metadata")
            if isinstance(metadata, dict) and metadata.get(METADATA_NHI) == target.id:
                mine.append(accessor)
        return mine

    def _take_back(
        self,
        vault: _Vault,
        spec: AppRoleTarget,
        mount: str,
        accessor: str,
        prefix: str,
        so_far: list[str],
        stop: Stopped,
    ) -> ExecutionResult:
        """An old secret-id could not be destroyed: destroy the new one again, so nothing
        half-done is left behind (an extra working secret-id that its owner never got)."""
        return taken_back(
            prefix,
            so_far,
            stop,
            lambda: vault.call(
                f"destroy the new secret-id (accessor {accessor}) again",
                lambda: vault.approle.destroy_secret_id_accessor(
                    spec.role, accessor, mount_point=mount
                ),
                changes=True,
            ),
            by_hand=f". Destroy the secret-id with accessor {accessor} by hand: nobody holds it.",
            undone=f"; the new secret-id (accessor {accessor}) was destroyed again.",
        )

    def _rotate_kv_value(self, vault: _Vault, spec: KvTarget) -> ExecutionResult:
        mount = spec.mount or self.config.mount
        where = f"{mount}/{spec.path}"
        prefix = f"Vault KV secret {where}: "
        try:
            current = vault.call(
                "read the secret",
                lambda: vault.kv.read_secret_version(
                    spec.path, mount_point=mount, raise_on_deleted_version=True
                ),
                changes=False,
            )
        except Stopped as stop:
            return ExecutionResult(outcome=stop.outcome, detail=prefix + stop.words + ".")
        envelope = _data(current) or {}
        fields, metadata = envelope.get("data"), envelope.get("metadata")
        version = metadata.get("version") if isinstance(metadata, dict) else None
        if not isinstance(fields, dict) or not isinstance(version, int):
            return ExecutionResult(
                outcome=Outcome.FAILED,
                detail=prefix + "Vault's answer had no data and version; is this a KV version 2 "
                "mount? Nothing was changed.",
            )
        vault.known_secrets.extend(str(v) for v in fields.values())
        if spec.field not in fields:
            return ExecutionResult(
                outcome=Outcome.FAILED,
                detail=prefix + f"has no field {spec.field!r} (it has "
                f"{_plural(len(fields), 'field')}); twokey only replaces a value that exists. "
                "Check the target's `field`. Nothing was changed.",
            )
        new_value = secrets.token_urlsafe(spec.length)
        vault.known_secrets.append(new_value)
        try:
            written = vault.call(
                f"write version {version + 1}",
                lambda: vault.kv.create_or_update_secret(
                    spec.path, {**fields, spec.field: new_value}, cas=version, mount_point=mount
                ),
                changes=True,
            )
        except Stopped as stop:
            return ExecutionResult(outcome=stop.outcome, detail=prefix + stop.words + ".")
        new_version = (_data(written) or {}).get("version", version + 1)
        kept = len(fields) - 1
        return ExecutionResult(
            outcome=Outcome.COMPLETED,
            detail=prefix + f"field {spec.field!r} replaced, version {new_version} written (was "
            f"{version})" + (f"; the other {_plural(kept, 'field')} kept." if kept else "."),
            secret=SecretStr(new_value),
            secret_label=f"new value of {spec.field} in Vault secret {where}",
        )


def _token_words(token: Mapping[str, Any]) -> str:
    """Policies and lifetime of twokey's token, never the token or its accessor."""
    policies = token.get("policies")
    named = ", ".join(str(p) for p in policies) if isinstance(policies, list) else "?"
    ttl = token.get("ttl")
    lasts = (
        "does not expire"
        if ttl == 0
        else f"expires in {int(ttl)} s"
        if isinstance(ttl, int | float)
        else "lifetime unknown"
    )
    return f"policies: {named}; {lasts}"


def build(config: VaultConfig | Mapping[str, Any]) -> VaultConnector:
    """The connector from its policy-file block; reads the sign-in secrets from the environment.

    A wrong setting or a missing variable is a clear start-up error.
    """
    if not isinstance(config, VaultConfig):
        _reject_inline_secrets(config)
        try:
            config = VaultConfig.model_validate(config)
        except ValidationError as exc:
            raise config_problem("vault", exc) from None
    if config.token_env:
        credentials = _Credentials(token=secret_from_env(config.token_env))
    else:
        assert config.role_id_env and config.secret_id_env  # the config validator checked
        credentials = _Credentials(
            role_id=secret_from_env(config.role_id_env),
            secret_id=secret_from_env(config.secret_id_env),
        )
    return VaultConnector(config, credentials)


PLUGIN = ConnectorPlugin(
    type="vault",
    config=VaultConfig,
    build=build,
    changes=lambda config: in_words({Action.ROTATE_SECRET}),
    check=VaultConnector.check,
    rotation=True,
)
