"""LDAP and Active Directory: reset a password, unlock an account, and say who is who.

One connector, two flavours of directory:

* ``openldap``: the password modify extended operation (RFC 3062) sets the new password and the
  ppolicy overlay's ``pwdReset: TRUE`` makes the owner change it at next logon; unlocking deletes
  ``pwdAccountLockedTime``. Nested ``groupOfNames`` are found by walking up from the user.
* ``ad``: one modify replaces ``unicodePwd`` (the quoted password in UTF-16-LE, which AD accepts
  only over LDAPS or StartTLS) and sets ``pwdLastSet=0`` (change at next logon) in the same step;
  unlocking sets ``lockoutTime=0``. Nested groups come from the in-chain matching rule (or by
  walking, as for OpenLDAP, with ``nested_groups: walk``).

The principal id is the account name: ``uid`` (OpenLDAP) or ``sAMAccountName`` (AD), or whatever
``id_attribute`` names. An entry with no or several values of it is refused, never guessed.

ldap3 is synchronous, so each piece of work runs in a thread with socket timeouts, under an overall
deadline. Every call opens, binds and closes its own connection: nothing is shared between threads.
Nothing here logs or raises the bind password or a new password.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import ssl
import string
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from ldap3 import (
    BASE,
    MODIFY_DELETE,
    MODIFY_REPLACE,
    NONE,
    SIMPLE,
    SUBTREE,
    Connection,
    Server,
    Tls,
)
from ldap3.core.exceptions import LDAPException
from ldap3.utils import log as ldap3_log
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from app.connectors.base import ConnectorConfigError, EnvVarName, secret_from_env, wrong_request
from app.connectors.checks import CheckResult, missing, note, phone_note, works
from app.connectors.plugin import ConnectorPlugin, in_words
from app.domain.errors import IdentityUnsure, Unavailable
from app.domain.models import Action, Principal, PrincipalKind, Request, phone_of_record
from app.ports import MEMBERS_MAX, ExecutionResult, Outcome

log = logging.getLogger(__name__)
LDAP_ACTIONS = frozenset({Action.RESET_PASSWORD, Action.UNLOCK})
"""Password reset and unlock for people (AD takes a password only over TLS)."""

IN_CHAIN = "1.2.840.113556.1.4.1941"
"""AD's LDAP_MATCHING_RULE_IN_CHAIN: membership through any depth of nesting, in one search."""

_PAGED_RESULTS = "1.2.840.113556.1.4.319"
_AD_ACCOUNT_DISABLED = 0x2
_OPENLDAP_DISABLED = "000001010000Z"
"""ppolicy's "locked by an administrator, for good": how OpenLDAP disables an account."""
_PHONE_ATTRIBUTE = "mobile"
"""The phone of record: RFC 4524's ``mobile`` (inetOrgPerson), which AD's user class has too."""

_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_ATTRIBUTE = 16
_NO_SUCH_OBJECT = 32
_INVALID_DN_SYNTAX = 34
_BIND_REFUSALS = frozenset({7, 8, 13, 48, 49, 50, 53})
_PAGE_SIZE = 500
_OR_CHUNK = 50
_WORDS_LIMIT = 300

_SYMBOLS = "!#%+-.:=?@^_~"
_PASSWORD_ALPHABET = (
    "".join(c for c in string.ascii_letters + string.digits if c not in "Il1O0") + _SYMBOLS
)

_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
_OPTIONAL_UID = re.compile(r"#'[01]*'B$")
"""The optional bit-string UID that ends a ``uniqueMember`` value (RFC 4517 NameAndOptionalUID)."""

_FLAVOR_DEFAULTS: dict[str, dict[str, str]] = {
    "openldap": {
        "user_filter": "(objectClass=inetOrgPerson)",
        "id_attribute": "uid",
        "display_name_attribute": "cn",
        "group_filter": "(objectClass=groupOfNames)",
        "nested_groups": "walk",
    },
    "ad": {
        "user_filter": "(&(objectCategory=person)(objectClass=user))",
        "id_attribute": "sAMAccountName",
        "display_name_attribute": "displayName",
        "group_filter": "(objectClass=group)",
        "nested_groups": "in_chain",
    },
}

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Configuration


class LdapConfig(BaseModel):
    """The ``ldap`` connector as written in the policy file (secrets by env-var name only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["ldap"]
    name: str = Field(default="ldap", pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    flavor: Literal["openldap", "ad"]
    url: str
    """``ldaps://host[:port]``, or ``ldap://host[:port]`` which is upgraded with StartTLS."""
    allow_insecure: bool = False
    """Plain ``ldap://`` without StartTLS, for tests and development only."""
    ca_file: str | None = None
    """PEM file of the CA(s) that signed the directory's certificate; else the system store."""
    bind_dn: str
    bind_password_env: EnvVarName
    user_base: str
    group_base: str
    user_filter: str = ""
    id_attribute: str = ""
    mail_attribute: str = "mail"
    display_name_attribute: str = ""
    group_filter: str = ""
    group_name_attribute: str = "cn"
    """The attribute that names a group for the policy (``dn`` for the full DN)."""
    group_member_attribute: str = "member"
    nested_groups: Literal["", "in_chain", "walk"] = ""
    """``in_chain`` (AD's matching rule, one search) or ``walk`` (one search per level)."""
    max_group_depth: int = Field(default=10, ge=1, le=50)
    password_length: int = Field(default=20, ge=16, le=128)
    connect_timeout: float = Field(default=5.0, gt=0, le=60)
    operation_timeout: int = Field(default=10, ge=1, le=120)
    """Whole seconds to wait for each answer (ldap3 sets the socket option in whole seconds)."""
    phone_of_record: bool = False
    """Read ``mobile`` as the phone of record (step-up codes by text, ``sms_code``). Off by
    default: AD grants SELF write on Personal-Information (which holds ``mobile``) and many
    OpenLDAP ACLs say ``by self write``, so a code texted to a number the account holder (or
    whoever holds their session) set proves nothing. Turn on only once people cannot write
    their own ``mobile``: in AD, remove SELF's write on it; in OpenLDAP, no ``by self write``
    reaches it."""

    @model_validator(mode="before")
    @classmethod
    def _flavor_defaults(cls, data: Any) -> Any:
        """Fill filters and attribute names that depend on the flavour, unless written."""
        if isinstance(data, Mapping) and data.get("flavor") in _FLAVOR_DEFAULTS:
            filled = dict(data)
            for key, value in _FLAVOR_DEFAULTS[str(data["flavor"])].items():
                if not filled.get(key):
                    filled[key] = value
            return filled
        return data

    @field_validator("url")
    @classmethod
    def _url_is_ldap(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ldap", "ldaps"):
            raise ValueError(f"{value!r} must start with ldaps:// or ldap:// (StartTLS is used)")
        if not parts.hostname:
            raise ValueError(f"{value!r} names no host: write ldaps://dc1.example.com")
        if parts.username or parts.password:
            raise ValueError(
                "the url must not carry credentials: use bind_dn and bind_password_env"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{value!r} must be only scheme://host[:port]: no base DN or query")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"{value!r} has an invalid port") from exc
        return value

    @field_validator("bind_dn", "user_base", "group_base")
    @classmethod
    def _is_dn(cls, value: str) -> str:
        try:
            if not value.strip() or not parse_dn(value):
                raise ValueError
        except Exception as exc:
            raise ValueError(
                f"{value!r} is not a distinguished name (e.g. ou=people,dc=example,dc=org)"
            ) from exc
        return value

    @field_validator("user_filter", "group_filter")
    @classmethod
    def _is_filter(cls, value: str) -> str:
        if value and not _balanced_filter(value):
            raise ValueError(
                f"{value!r} is not an LDAP filter: write it in parentheses, e.g. (objectClass=user)"
            )
        return value

    @field_validator(
        "id_attribute", "mail_attribute", "display_name_attribute", "group_member_attribute"
    )
    @classmethod
    def _is_attribute(cls, value: str) -> str:
        if value and not _ATTRIBUTE.fullmatch(value):
            raise ValueError(f"{value!r} is not an LDAP attribute name (letters, digits, '-')")
        return value

    @field_validator("group_name_attribute")
    @classmethod
    def _is_group_name(cls, value: str) -> str:
        if value != "dn" and not _ATTRIBUTE.fullmatch(value):
            raise ValueError(f"{value!r} is not an LDAP attribute name (or 'dn' for the full DN)")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                with open(value, "rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"ca_file {value!r} cannot be read: {exc.strerror}") from exc
        return value

    @model_validator(mode="after")
    def _transport_is_explicit(self) -> LdapConfig:
        if self.allow_insecure and self.uses_ldaps:
            raise ValueError("allow_insecure applies only to ldap:// urls; ldaps:// is always TLS")
        return self

    @property
    def uses_ldaps(self) -> bool:
        return urlsplit(self.url).scheme == "ldaps"

    @property
    def encrypted(self) -> bool:
        """LDAPS or StartTLS: anything but the explicit plain-text test setting."""
        return not self.allow_insecure

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (636 if self.uses_ldaps else 389)


def _balanced_filter(value: str) -> bool:
    if not (value.startswith("(") and value.endswith(")")):
        return False
    depth = 0
    for char in value:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


# --------------------------------------------------------------------------------------------
# Passwords


def generate_password(length: int = 20, avoid: Iterable[str] = ()) -> str:
    """A password from ``secrets`` with upper, lower, digit and symbol, easy to read aloud.

    ``avoid`` lists account and display names: AD rejects a password that contains one of them
    (tokens of three characters or more), so such a draw is thrown away.
    """
    if length < 16:
        raise ValueError("a generated password has at least 16 characters")
    banned = {token.lower() for name in avoid for token in re.split(r"[\s,._#-]+", name)}
    banned = {token for token in banned if len(token) >= 3}
    while True:
        password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))
        if _complex_enough(password) and not any(t in password.lower() for t in banned):
            return password


def _complex_enough(password: str) -> bool:
    return (
        any(c.isupper() for c in password)
        and any(c.islower() for c in password)
        and any(c.isdigit() for c in password)
        and any(c in _SYMBOLS for c in password)
    )


def ad_password_value(password: str) -> bytes:
    """What AD expects in ``unicodePwd``: the password in double quotes, as UTF-16-LE."""
    return f'"{password}"'.encode("utf-16-le")


# --------------------------------------------------------------------------------------------
# Errors that stay inside this module; their words are safe to show and audit


class _DirectoryTrouble(Exception):
    def __init__(self, words: str) -> None:
        super().__init__(words)
        self.words = words


class _Unreachable(_DirectoryTrouble):
    """No usable connection (refused, TLS failure, timeout before anything was changed)."""


class _BindRefused(_DirectoryTrouble):
    """The directory refused our service account."""


class _Refused(_DirectoryTrouble):
    """The directory answered an operation with an error result."""


class _Abandoned(Exception):
    """The caller gave up waiting before the change was sent: do not send it now."""


class _Attempt:
    """Whether the change has been sent, shared between the worker thread and the caller.

    The caller's deadline and the worker's "about to send" are decided under one lock, so the
    caller never reports "nothing was changed" for a change the worker then sends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self.sent = False

    def about_to_change(self) -> None:
        with self._lock:
            if self._abandoned:
                raise _Abandoned
            self.sent = True

    def abandon(self) -> bool:
        """Stop the worker from sending; True if the change had already gone out."""
        with self._lock:
            self._abandoned = True
            return self.sent


def _result_words(result: Mapping[str, Any] | None) -> str:
    """``description (code): server message`` from an ldap3 result, bounded and printable."""
    if not result:
        return "no answer"
    words = f"{result.get('description') or 'error'} ({result.get('result')})"
    message = _printable(str(result.get("message") or ""))
    return _bounded(f"{words}: {message}" if message else words)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text).strip()


def _bounded(text: str) -> str:
    return text if len(text) <= _WORDS_LIMIT else text[: _WORDS_LIMIT - 1] + "…"


def _exception_words(exc: BaseException, secrets_: Sequence[str]) -> str:
    """The exception's class and message, with any secret cut out (belt and braces)."""
    text = _printable(str(exc))
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _bounded(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


# --------------------------------------------------------------------------------------------
# The connector


class LdapConnector:
    """The ``ldap`` connector: an IdentityProvider and a Directory over ldap3."""

    def __init__(self, config: LdapConfig, bind_password: SecretStr) -> None:
        self.config = config
        self.name = config.name
        self._bind_password = bind_password
        self._deadline = config.connect_timeout + 6 * config.operation_timeout + 1.0
        """Safety net over the socket timeouts (DNS and TLS handshakes are not covered by them)."""

    def __repr__(self) -> str:
        cfg = self.config
        return f"LdapConnector(name={self.name!r}, flavor={cfg.flavor!r}, url={cfg.url!r})"

    # ---- IdentityProvider

    def supports(self, action: Action, target: Principal) -> bool:
        """Password reset and unlock for people; AD takes a password only over TLS."""
        if target.kind is not PrincipalKind.HUMAN:
            return False
        if action is Action.UNLOCK:
            return True
        if action is Action.RESET_PASSWORD:
            return self.config.flavor == "openldap" or self.config.encrypted
        return False

    async def execute(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        """Reset or unlock the target's account; never raises for a directory refusal."""
        wrong = wrong_request(action, target, request)
        if wrong:
            return _failed(f"{wrong}; nothing was changed")
        if not self.supports(action, target):
            return _failed(self._why_not(action, target))
        attempt = _Attempt()
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._change, action, target.id, attempt),
                timeout=self._deadline,
            )
        except asyncio.CancelledError:
            attempt.abandon()  # the worker must not start a change nobody will hear about
            raise
        except TimeoutError:
            if attempt.abandon():
                log.warning(
                    "ldap change timed out after it was sent",
                    extra={
                        "connector": self.name,
                        "request_id": request.id,
                        "action": action.value,
                    },
                )
                return ExecutionResult(
                    outcome=Outcome.UNKNOWN,
                    detail=(
                        f"no answer from the directory within {self._deadline:.0f}s after the "
                        "change was sent: check the account before trying again"
                    ),
                )
            return _failed(
                f"the directory did not answer within {self._deadline:.0f}s; nothing was changed"
            )

    def _why_not(self, action: Action, target: Principal) -> str:
        if action is Action.RESET_PASSWORD and target.kind is PrincipalKind.HUMAN:
            return (
                "AD takes a password only over LDAPS or StartTLS, and this connector is set to "
                "allow_insecure; nothing was changed"
            )
        return f"the {self.name} connector cannot {action.label} for {target.name}"

    # ---- Directory

    async def find_by_email(self, email: str) -> list[Principal]:
        """Every account whose mail attribute is this address (callers refuse anything but 1)."""
        email = email.strip()
        if not email or len(email) > 254 or "@" not in email:
            return []
        return await self._look_up(self._find_by_attribute, self.config.mail_attribute, email)

    async def get(self, principal_id: str) -> Principal | None:
        principal_id = principal_id.strip()
        if not principal_id or len(principal_id) > 200:
            return None
        found = await self._look_up(self._find_by_attribute, self.config.id_attribute, principal_id)
        if len(found) > 1:
            raise IdentityUnsure(
                f"{len(found)} directory accounts have the id {principal_id!r}: fix the "
                "directory or the connector's user_filter; twokey will not guess"
            )
        return found[0] if found else None

    async def find_nhi(self, name: str) -> Principal | None:
        """LDAP accounts are people here; non-human identities live in their own systems."""
        return None

    async def search(self, text: str, limit: int = 20) -> list[Principal]:
        """For pickers: accounts whose id, name or mail contains ``text``."""
        text = text.strip()
        if not text or len(text) > 100 or limit < 1:
            return []
        return await self._look_up(self._search_accounts, text, min(limit, 100))

    async def members(self, groups: Sequence[str], limit: int = MEMBERS_MAX) -> list[Principal]:
        """The people in any of ``groups`` (named by ``group_name_attribute``), nested members
        included, each once, at most ``limit``; unknown groups have nobody; trouble is
        Unavailable. Each is read as ``get`` reads them (all their groups, disabled or not)."""
        names = [groups] if isinstance(groups, str) else list(dict.fromkeys(groups))
        names = [name for name in names if name]
        limit = min(limit, MEMBERS_MAX)
        if not names or limit < 1:
            return []
        return await self._look_up(self._members, names, limit)

    # ---- `twokey connectors check`

    async def check(self) -> list[CheckResult]:
        """Read-only: connect, bind, read the user and group bases and one account."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._check), timeout=self._deadline)
        except TimeoutError:
            return [
                missing(
                    f"reach {self.config.host}:{self.config.port}",
                    f"no answer within {self._deadline:.0f}s",
                )
            ]

    def _check(self) -> list[CheckResult]:
        cfg = self.config
        transport = (
            "LDAPS" if cfg.uses_ldaps else "plain LDAP" if cfg.allow_insecure else "StartTLS"
        )
        what = f"bind as {cfg.bind_dn} over {transport}"
        try:
            with self._bound() as conn:
                results = [works(what)]
                results.append(self._check_base(conn, "people", cfg.user_base))
                results.append(self._check_base(conn, "groups", cfg.group_base))
                results.append(self._check_accounts(conn))
        except _DirectoryTrouble as trouble:
            return [missing(what, trouble.words)]
        except Exception as exc:  # fail closed on anything ldap3 lets through
            return [missing(what, _exception_words(exc, [self._secret()]))]
        results.append(self._check_changes())
        if cfg.phone_of_record:
            lock = (
                "remove SELF's write on mobile (Personal-Information)"
                if cfg.flavor == "ad"
                else "no ACL may give `by self write` on mobile"
            )
            results.append(phone_note(_PHONE_ATTRIBUTE, lock))
        return results

    def _check_base(self, conn: Connection, label: str, base: str) -> CheckResult:
        what = f"read the {label} base {base}"
        try:
            conn.search(base, "(objectClass=*)", search_scope=BASE, attributes=["1.1"])
        except LDAPException as exc:
            return missing(what, _exception_words(exc, [self._secret()]))
        code = conn.result.get("result") if conn.result else None
        found = any(item.get("type") == "searchResEntry" for item in conn.response or [])
        if code == _SUCCESS and found:
            return works(what)
        return missing(
            what,
            f"{_result_words(conn.result)}: the entry does not exist or the bind account may "
            "not read it",
        )

    def _check_accounts(self, conn: Connection) -> CheckResult:
        cfg = self.config
        what = f"find people with {cfg.user_filter}"
        try:
            entries = self._entries(conn, cfg.user_base, cfg.user_filter, ["1.1"], size_limit=1)
        except _DirectoryTrouble as trouble:
            return missing(what, trouble.words)
        if not entries:
            return missing(
                what,
                f"no entry under {cfg.user_base} matches: check user_base and user_filter, and "
                "that the bind account may read them",
            )
        return works(what)

    def _check_changes(self) -> CheckResult:
        cfg = self.config
        if cfg.flavor == "ad":
            if not cfg.encrypted:
                return missing(
                    "changes (reset-password, unlock)",
                    "AD takes a password only over LDAPS or StartTLS: with allow_insecure "
                    "reset-password is refused; unlock still works",
                )
            needs = "the Reset Password right and write access to lockoutTime and pwdLastSet"
        else:
            needs = (
                "the right to change userPassword (password modify) and write pwdReset and "
                "pwdAccountLockedTime"
            )
        return note(
            "changes (reset-password, unlock)",
            f"not tried: a read-only check cannot prove them; the bind account needs {needs} "
            f"on the people under {cfg.user_base}",
        )

    # ---- running ldap3 in a thread

    async def _look_up(self, work: Callable[..., T], *args: Any) -> T:
        """Run a read in a thread; any trouble is Unavailable, so callers fail closed."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(work, *args), timeout=self._deadline)
        except TimeoutError:
            raise Unavailable(
                f"the directory ({self.config.host}) did not answer within "
                f"{self._deadline:.0f}s: try again shortly"
            ) from None

    # ---- connections (worker thread)

    @contextmanager
    def _bound(self) -> Iterator[Connection]:
        """An open connection, TLS unless allow_insecure, bound as the service account."""
        cfg = self.config
        tls = Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=cfg.ca_file,
            sni=cfg.host,
        )
        server = Server(
            cfg.host,
            port=cfg.port,
            use_ssl=cfg.uses_ldaps,
            tls=tls,
            get_info=NONE,
            connect_timeout=cfg.connect_timeout,
        )
        conn = Connection(
            server,
            user=cfg.bind_dn,
            password=self._bind_password.get_secret_value(),
            authentication=SIMPLE,
            auto_bind="NONE",
            client_strategy="SYNC",
            auto_referrals=False,
            raise_exceptions=False,
            receive_timeout=cfg.operation_timeout,
        )
        secret = self._bind_password.get_secret_value()
        try:
            try:
                conn.open()
                if not cfg.uses_ldaps and not cfg.allow_insecure and not conn.start_tls():
                    raise _Unreachable(f"StartTLS failed: {_result_words(conn.result)}")
            except LDAPException as exc:
                raise _Unreachable(
                    f"cannot reach the directory at {cfg.host}:{cfg.port} "
                    f"({_exception_words(exc, [secret])})"
                ) from None
            try:
                bound = conn.bind()
            except LDAPException as exc:
                raise _Unreachable(
                    f"the directory dropped the bind ({_exception_words(exc, [secret])})"
                ) from None
            if not bound:
                code = conn.result.get("result") if conn.result else None
                words = _result_words(conn.result)
                if code in _BIND_REFUSALS:
                    raise _BindRefused(
                        f"bind refused by the directory for {cfg.bind_dn}: {words}; check bind_dn "
                        f"and the password in ${cfg.bind_password_env}"
                    )
                raise _Unreachable(f"bind failed: {words}")
            yield conn
        finally:
            try:
                conn.unbind()
            except Exception:  # noqa: S110 - closing is best effort; nothing to tell anyone
                pass

    # ---- reads (worker thread)

    def _user_attributes(self) -> list[str]:
        cfg = self.config
        wanted = {
            cfg.id_attribute,
            cfg.mail_attribute,
            cfg.display_name_attribute,
            "cn",
        }
        if cfg.phone_of_record:
            wanted.add(_PHONE_ATTRIBUTE)
        if cfg.flavor == "ad":
            wanted |= {"userAccountControl", "lockoutTime"}
        else:
            wanted |= {"pwdAccountLockedTime"}
        return sorted(wanted)

    def _entries(
        self,
        conn: Connection,
        base: str,
        search_filter: str,
        attributes: list[str],
        *,
        size_limit: int = 0,
    ) -> list[dict[str, Any]]:
        """All entries a search returns, page by page; truncation is an error unless limited."""
        return list(self._each_entry(conn, base, search_filter, attributes, size_limit=size_limit))

    def _each_entry(
        self,
        conn: Connection,
        base: str,
        search_filter: str,
        attributes: list[str],
        *,
        size_limit: int = 0,
    ) -> Iterator[dict[str, Any]]:
        """As ``_entries``, a page at a time, so a caller with enough can stop reading."""
        cookie: bytes | None = None
        while True:
            try:
                conn.search(
                    base,
                    search_filter,
                    search_scope=SUBTREE,
                    attributes=attributes,
                    size_limit=size_limit,
                    paged_size=None if size_limit else _PAGE_SIZE,
                    paged_cookie=cookie,
                )
            except LDAPException as exc:
                raise _Unreachable(f"search failed ({_exception_words(exc, [])})") from None
            code = conn.result.get("result") if conn.result else None
            if code == _SIZE_LIMIT_EXCEEDED and not size_limit:
                raise _Refused(f"search under {base} returned too many entries to be sure")
            if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
                raise _Refused(f"search under {base} failed: {_result_words(conn.result)}")
            page = [
                {"dn": item["dn"], "attributes": item.get("attributes") or {}}
                for item in conn.response or []
                if item.get("type") == "searchResEntry"
            ]
            cookie = _next_page(conn.result)
            yield from page
            if not cookie or size_limit:
                return

    def _entry_at(
        self, conn: Connection, dn: str, search_filter: str, attributes: list[str]
    ) -> dict[str, Any] | None:
        """The entry at ``dn`` if it matches ``search_filter``; None if it does not or is gone."""
        try:
            conn.search(dn, search_filter, search_scope=BASE, attributes=attributes)
        except LDAPException as exc:
            raise _Unreachable(f"search failed ({_exception_words(exc, [])})") from None
        code = conn.result.get("result") if conn.result else None
        if code in (_NO_SUCH_OBJECT, _INVALID_DN_SYNTAX):
            return None
        if code != _SUCCESS:
            raise _Refused(f"reading {dn} failed: {_result_words(conn.result)}")
        return next(
            (
                {"dn": item["dn"], "attributes": item.get("attributes") or {}}
                for item in conn.response or []
                if item.get("type") == "searchResEntry"
            ),
            None,
        )

    def _accounts(self, conn: Connection, account_filter: str, limit: int = 0) -> list[Principal]:
        cfg = self.config
        entries = self._entries(
            conn,
            cfg.user_base,
            f"(&{cfg.user_filter}{account_filter})",
            self._user_attributes(),
            size_limit=limit,
        )
        principals = []
        for entry in entries:
            principal = self._principal(conn, entry)
            if principal is not None:
                principals.append(principal)
        return principals

    def _find_by_attribute(self, attribute: str, value: str) -> list[Principal]:
        return self._read(
            lambda conn: self._accounts(conn, f"({attribute}={escape_filter_chars(value)})")
        )

    def _search_accounts(self, text: str, limit: int) -> list[Principal]:
        cfg = self.config
        needle = escape_filter_chars(text)
        attributes = dict.fromkeys(
            [cfg.id_attribute, cfg.display_name_attribute, cfg.mail_attribute, "cn"]
        )
        any_of = "".join(f"({a}=*{needle}*)" for a in attributes)
        return self._read(lambda conn: self._accounts(conn, f"(|{any_of})", limit))

    # ---- members of groups (worker thread)

    def _members(self, names: list[str], limit: int) -> list[Principal]:
        return self._read(lambda conn: self._read_members(conn, names, limit))

    def _read_members(self, conn: Connection, names: list[str], limit: int) -> list[Principal]:
        """The members' entries first (reading stops at ``limit`` people), then each read as
        ``_principal`` reads a person: its own group searches never run while a paged search
        is open on the connection (OpenLDAP keeps one paged search per connection).

        An id held by two entries is left out, as ``get`` refuses it: twokey does not guess
        which of them would be asked to approve.
        """
        cfg = self.config
        groups = self._named_groups(conn, names)
        found = (
            self._members_in_chain(conn, groups)
            if cfg.nested_groups == "in_chain"
            else self._members_by_walking(conn, groups)
        )
        entries: dict[str, dict[str, Any]] = {}
        for entry in found:
            key = _dn_key(entry["dn"])
            if key in entries or not _within(entry["dn"], cfg.user_base):
                continue
            if len(_values(entry["attributes"], cfg.id_attribute)) != 1:
                log.warning(
                    "ldap member skipped: it has no or several values of %s",
                    cfg.id_attribute,
                    extra={"connector": self.name, "dn": entry["dn"]},
                )
                continue
            entries[key] = entry
            if len(entries) >= limit:
                break
        ids = [_values(entry["attributes"], cfg.id_attribute)[0] for entry in entries.values()]
        twice = {i for i in ids if ids.count(i) > 1}
        if twice:
            log.warning(
                "ldap members skipped: several entries share the id",
                extra={"connector": self.name, "ids": sorted(twice)},
            )
        people = (
            self._principal(conn, entry)
            for entry, principal_id in zip(entries.values(), ids, strict=True)
            if principal_id not in twice
        )
        return [person for person in people if person is not None]

    def _named_groups(self, conn: Connection, names: list[str]) -> list[dict[str, Any]]:
        """The groups under group_base whose name (as ``_group_name`` reads it) is one of
        ``names``, exactly: the directory's case-insensitive match alone could return a group
        that a person's ``groups`` would not name, so the policy would not count it."""
        cfg = self.config
        attributes = [cfg.group_name_attribute] if cfg.group_name_attribute != "dn" else []
        if cfg.nested_groups != "in_chain":
            attributes.append(cfg.group_member_attribute)
        attributes = attributes or ["1.1"]
        groups: dict[str, dict[str, Any]] = {}
        for name in names:
            if cfg.group_name_attribute == "dn":
                at = (
                    self._entry_at(conn, name, cfg.group_filter, attributes)
                    if _within(name, cfg.group_base)
                    else None
                )
                candidates = [at] if at else []
            else:
                named = f"({cfg.group_name_attribute}={escape_filter_chars(name)})"
                candidates = self._entries(
                    conn, cfg.group_base, f"(&{cfg.group_filter}{named})", attributes
                )
            for entry in candidates:
                if self._group_name(entry) == name:
                    groups.setdefault(_dn_key(entry["dn"]), entry)
        return list(groups.values())

    def _members_in_chain(
        self, conn: Connection, groups: list[dict[str, Any]]
    ) -> Iterator[dict[str, Any]]:
        """AD: the users in each group through any nesting, one paged search per group."""
        cfg = self.config
        for group in groups:
            yield from self._each_entry(
                conn, cfg.user_base, ad_members_filter(cfg, group["dn"]), self._user_attributes()
            )

    def _members_by_walking(
        self, conn: Connection, groups: list[dict[str, Any]]
    ) -> Iterator[dict[str, Any]]:
        """The users each group lists, then those of the groups it lists, level by level.

        Each member DN is read once: a group (under group_base, matching group_filter) is
        walked into, a user (under user_base, matching user_filter) is handed out, anything
        else is skipped. Nesting deeper than max_group_depth is an error, as for a user's
        groups; a cycle ends because no group is walked twice.
        """
        cfg = self.config
        member_attribute = cfg.group_member_attribute
        group_attributes = [member_attribute]
        if cfg.group_name_attribute != "dn":
            group_attributes.append(cfg.group_name_attribute)
        seen = {_dn_key(group["dn"]) for group in groups}
        level = groups
        for depth in range(1, cfg.max_group_depth + 1):
            nested: list[dict[str, Any]] = []
            for group in level:
                for value in _values(group["attributes"], member_attribute):
                    dn = _member_dn(value, member_attribute)
                    key = _dn_key(dn)
                    if key in seen:
                        continue
                    seen.add(key)
                    inner = (
                        self._entry_at(conn, dn, cfg.group_filter, group_attributes)
                        if _within(dn, cfg.group_base)
                        else None
                    )
                    if inner is not None:
                        if depth == cfg.max_group_depth:
                            raise _Refused(
                                f"members of {group['dn']} nest deeper than max_group_depth "
                                f"({cfg.max_group_depth}); raise it in the policy if that is "
                                "intended"
                            )
                        nested.append(inner)
                        continue
                    if _within(dn, cfg.user_base):
                        user = self._entry_at(conn, dn, cfg.user_filter, self._user_attributes())
                        if user is not None:
                            yield user
            if not nested:
                return
            level = nested

    def _read(self, work: Callable[[Connection], T]) -> T:
        try:
            with self._bound() as conn:
                return work(conn)
        except _DirectoryTrouble as trouble:
            raise Unavailable(f"directory look-up failed: {trouble.words}") from None
        except Exception as exc:  # fail closed on anything ldap3 lets through
            raise Unavailable(
                f"directory look-up failed: {_exception_words(exc, [self._secret()])}"
            ) from None

    def _secret(self) -> str:
        return self._bind_password.get_secret_value()

    def _principal(self, conn: Connection, entry: Mapping[str, Any]) -> Principal | None:
        cfg = self.config
        attrs = entry["attributes"]
        ids = _values(attrs, cfg.id_attribute)
        if len(ids) != 1:
            log.warning(
                "ldap entry skipped: it has %d values of %s",
                len(ids),
                cfg.id_attribute,
                extra={"connector": self.name, "dn": entry["dn"]},
            )
            return None
        mails = _values(attrs, cfg.mail_attribute)
        name = (_values(attrs, cfg.display_name_attribute) or _values(attrs, "cn") or [""])[0]
        return Principal(
            id=ids[0],
            kind=PrincipalKind.HUMAN,
            display_name=name,
            email=mails[0] if mails else None,
            groups=frozenset(self._groups(conn, entry["dn"])),
            disabled=self._disabled(attrs),
            phone=_phone_of_record(attrs) if cfg.phone_of_record else None,
        )

    def _disabled(self, attrs: Mapping[str, Any]) -> bool:
        if self.config.flavor == "ad":
            flags = _values(attrs, "userAccountControl")
            return bool(flags) and _as_int(flags[0]) & _AD_ACCOUNT_DISABLED != 0
        return _OPENLDAP_DISABLED in _values(attrs, "pwdAccountLockedTime")

    def _groups(self, conn: Connection, user_dn: str) -> set[str]:
        if self.config.nested_groups == "in_chain":
            return self._groups_in_chain(conn, user_dn)
        return self._groups_by_walking(conn, user_dn)

    def _group_attributes(self) -> list[str]:
        name = self.config.group_name_attribute
        return ["1.1"] if name == "dn" else [name]

    def _group_name(self, entry: Mapping[str, Any]) -> str | None:
        attribute = self.config.group_name_attribute
        if attribute == "dn":
            return str(entry["dn"])
        names = _values(entry["attributes"], attribute)
        return names[0] if names else None

    def _groups_in_chain(self, conn: Connection, user_dn: str) -> set[str]:
        """AD: every group the user is in, through any nesting, in one search."""
        cfg = self.config
        entries = self._entries(
            conn, cfg.group_base, ad_groups_filter(cfg, user_dn), self._group_attributes()
        )
        return {name for entry in entries if (name := self._group_name(entry))}

    def _groups_by_walking(self, conn: Connection, user_dn: str) -> set[str]:
        """The groups that list the user, then the groups that list those, and so on."""
        cfg = self.config
        seen: dict[str, str | None] = {}
        members = [user_dn]
        for depth in range(cfg.max_group_depth + 1):
            found: list[dict[str, Any]] = []
            for start in range(0, len(members), _OR_CHUNK):
                chunk = members[start : start + _OR_CHUNK]
                found += self._entries(
                    conn,
                    cfg.group_base,
                    member_of_any_filter(cfg, chunk),
                    self._group_attributes(),
                )
            fresh = {_dn_key(e["dn"]): e for e in found if _dn_key(e["dn"]) not in seen}
            if not fresh:
                break
            if depth == cfg.max_group_depth:
                raise _Refused(
                    f"groups of {user_dn} nest deeper than max_group_depth "
                    f"({cfg.max_group_depth}); raise it in the policy if that is intended"
                )
            seen.update((key, self._group_name(entry)) for key, entry in fresh.items())
            members = [entry["dn"] for entry in fresh.values()]
        return {name for name in seen.values() if name}

    # ---- changes (worker thread)

    def _change(self, action: Action, target_id: str, attempt: _Attempt) -> ExecutionResult:
        try:
            with self._bound() as conn:
                entry = self._account_entry(conn, target_id)
                if entry is None:
                    return _failed(
                        f"no account {target_id!r} in the directory; nothing was changed"
                    )
                if self._disabled(entry["attributes"]):
                    return _failed(
                        f"the account {target_id!r} is disabled in the directory: twokey does "
                        "not change disabled accounts; nothing was changed"
                    )
                if action is Action.RESET_PASSWORD:
                    return self._reset_password(conn, entry, attempt)
                return self._unlock(conn, entry, attempt)
        except _Abandoned:
            return _failed("the caller stopped waiting; nothing was changed")
        except _DirectoryTrouble as trouble:
            if attempt.sent:
                return _unknown(trouble.words)
            return _failed(f"{trouble.words}; nothing was changed")
        except Exception as exc:  # never raise: ldap3 lets socket and struct errors through
            words = _exception_words(exc, [self._secret()])
            if attempt.sent:
                return _unknown(words)
            return _failed(f"{words}; nothing was changed")

    def _account_entry(self, conn: Connection, target_id: str) -> dict[str, Any] | None:
        cfg = self.config
        entries = self._entries(
            conn,
            cfg.user_base,
            f"(&{cfg.user_filter}({cfg.id_attribute}={escape_filter_chars(target_id)}))",
            self._user_attributes(),
        )
        if len(entries) > 1:
            raise _Refused(
                f"{len(entries)} accounts have the id {target_id!r}; twokey will not guess"
            )
        if entries and len(_values(entries[0]["attributes"], cfg.id_attribute)) != 1:
            raise _Refused(
                f"the account {target_id!r} has several values of {cfg.id_attribute}; "
                "twokey will not guess which person it is"
            )
        return entries[0] if entries else None

    def _reset_password(
        self, conn: Connection, entry: Mapping[str, Any], attempt: _Attempt
    ) -> ExecutionResult:
        if _ldap3_logs_protocol():
            return _failed(
                "ldap3 library logging is at PROTOCOL detail or more, which would write the new "
                "password to the log; lower it and try again; nothing was changed"
            )
        attrs = entry["attributes"]
        avoid = _values(attrs, self.config.id_attribute) + _values(
            attrs, self.config.display_name_attribute
        )
        password = generate_password(self.config.password_length, avoid)
        try:
            if self.config.flavor == "ad":
                return self._reset_ad_password(conn, entry["dn"], password, attempt)
            return self._reset_openldap_password(conn, entry["dn"], password, attempt)
        except Exception as exc:
            words = _exception_words(exc, [password, self._secret()])
            if not attempt.sent:
                return _failed(f"{words}; nothing was changed")
            return _unknown(words, password)

    def _reset_ad_password(
        self, conn: Connection, dn: str, password: str, attempt: _Attempt
    ) -> ExecutionResult:
        """One modify: the new password and "change at next logon", together or not at all."""
        if not conn.tls_started and not self.config.uses_ldaps:
            return _failed("AD takes a password only over LDAPS or StartTLS; nothing was changed")
        changes = {
            "unicodePwd": [(MODIFY_REPLACE, [ad_password_value(password)])],
            "pwdLastSet": [(MODIFY_REPLACE, ["0"])],
        }
        attempt.about_to_change()
        if not _modify(conn, dn, changes):
            return _failed(f"the directory refused the new password: {_result_words(conn.result)}")
        return _reset_done(password, "password reset; a new one must be chosen at next logon")

    def _reset_openldap_password(
        self, conn: Connection, dn: str, password: str, attempt: _Attempt
    ) -> ExecutionResult:
        """RFC 3062 password modify, then ppolicy's pwdReset so the owner must change it."""
        attempt.about_to_change()
        conn.extend.standard.modify_password(user=dn, new_password=password)
        if not conn.result or conn.result.get("result") != _SUCCESS:
            return _failed(f"the directory refused the new password: {_result_words(conn.result)}")
        try:
            forced = _modify(conn, dn, {"pwdReset": [(MODIFY_REPLACE, ["TRUE"])]})
        except Exception as exc:
            words = _exception_words(exc, [password, self._secret()])
            return _reset_not_forced(
                password, f"unclear whether a change at next logon is required ({words})"
            )
        if not forced:
            return _reset_not_forced(
                password,
                "the directory refused to require a change at next logon: "
                + _result_words(conn.result),
            )
        return _reset_done(password, "password reset; a new one must be chosen at next logon")

    def _unlock(
        self, conn: Connection, entry: Mapping[str, Any], attempt: _Attempt
    ) -> ExecutionResult:
        attrs = entry["attributes"]
        if self.config.flavor == "ad":
            locked = any(_as_int(v) != 0 for v in _values(attrs, "lockoutTime"))
            changes: dict[str, Any] = {"lockoutTime": [(MODIFY_REPLACE, ["0"])]}
        else:
            locked = bool(_values(attrs, "pwdAccountLockedTime"))
            changes = {"pwdAccountLockedTime": [(MODIFY_DELETE, [])]}
        if not locked:
            return ExecutionResult(outcome=Outcome.COMPLETED, detail="the account was not locked")
        attempt.about_to_change()
        if _modify(conn, entry["dn"], changes):
            return ExecutionResult(outcome=Outcome.COMPLETED, detail="account unlocked")
        if conn.result and conn.result.get("result") == _NO_SUCH_ATTRIBUTE:
            return ExecutionResult(outcome=Outcome.COMPLETED, detail="the account was not locked")
        return _failed(f"the directory refused to unlock: {_result_words(conn.result)}")


# --------------------------------------------------------------------------------------------
# Filters (pure, so they can be read and tested)


def ad_groups_filter(config: LdapConfig, user_dn: str) -> str:
    """Groups holding ``user_dn`` at any depth, by AD's in-chain matching rule."""
    member = config.group_member_attribute
    return f"(&{config.group_filter}({member}:{IN_CHAIN}:={escape_filter_chars(user_dn)}))"


def ad_members_filter(config: LdapConfig, group_dn: str) -> str:
    """Users in ``group_dn`` at any depth: AD's in-chain rule on the ``memberOf`` back-link."""
    return f"(&{config.user_filter}(memberOf:{IN_CHAIN}:={escape_filter_chars(group_dn)}))"


def member_of_any_filter(config: LdapConfig, member_dns: Sequence[str]) -> str:
    """Groups that list any of ``member_dns`` directly."""
    member = config.group_member_attribute
    any_of = "".join(f"({member}={escape_filter_chars(dn)})" for dn in member_dns)
    return f"(&{config.group_filter}(|{any_of}))"


# --------------------------------------------------------------------------------------------
# Small helpers


def _values(attrs: Mapping[str, Any], name: str) -> list[str]:
    """An attribute's values as strings, whether ldap3 gave a list, a scalar or nothing."""
    value = next((v for k, v in attrs.items() if k.lower() == name.lower()), None)
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [
        item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in items
    ]


def _phone_of_record(attrs: Mapping[str, Any]) -> str | None:
    """``mobile`` as E.164 when every value is the same unambiguous number; else none.

    The attribute is multi-valued in RFC 4524: two different numbers (or one that is not
    E.164) leave the person without a phone of record rather than texting a guess.
    """
    numbers = {phone_of_record(value) for value in _values(attrs, _PHONE_ATTRIBUTE)}
    return numbers.pop() if len(numbers) == 1 else None


def _modify(conn: Connection, dn: str, changes: Mapping[str, Any]) -> bool:
    """ldap3's modify, typed: True when the directory answered success."""
    modify: Any = conn.modify
    return bool(modify(dn, dict(changes)))


def _ldap3_logs_protocol() -> bool:
    """True when ldap3's own logging would dump request values (and so a new password)."""
    level: Any = ldap3_log.get_library_log_detail_level
    return bool(level() >= ldap3_log.PROTOCOL)


def _as_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def _dn_key(dn: str) -> str:
    return dn.lower().replace(" ", "")


def _within(dn: str, base: str) -> bool:
    """Whether ``dn`` is ``base`` or below it, comparing RDNs without regard to case."""
    try:
        parts, base_parts = parse_dn(dn), parse_dn(base)
    except Exception:  # a member value that is no DN names nobody
        return False
    if not parts or len(parts) < len(base_parts):
        return False
    tail = parts[len(parts) - len(base_parts) :]
    return all(
        (a.lower(), v.strip().lower()) == (b.lower(), w.strip().lower())
        for (a, v, _), (b, w, _) in zip(tail, base_parts, strict=True)
    )


def _member_dn(value: str, attribute: str) -> str:
    """A member value as a DN: ``uniqueMember`` may end with an optional UID, cut off here."""
    if attribute.lower() == "uniquemember":
        return _OPTIONAL_UID.sub("", value)
    return value


def _next_page(result: Mapping[str, Any] | None) -> bytes | None:
    try:
        cookie = result["controls"][_PAGED_RESULTS]["value"]["cookie"] if result else None
    except (KeyError, TypeError):
        return None
    return cookie if isinstance(cookie, bytes) and cookie else None


def _failed(detail: str) -> ExecutionResult:
    return ExecutionResult(outcome=Outcome.FAILED, detail=_bounded(detail))


def _unknown(words: str, password: str | None = None) -> ExecutionResult:
    """The change went out and the answer did not come back: the owner may need the password."""
    detail = _bounded(
        f"the change was sent but its answer was lost ({words}): check the account before "
        "trying again"
    )
    if password is None:
        return ExecutionResult(outcome=Outcome.UNKNOWN, detail=detail)
    return ExecutionResult(
        outcome=Outcome.UNKNOWN,
        detail=detail,
        secret=SecretStr(password),
        secret_label="temporary password (it may not have been applied)",  # noqa: S106
    )


def _reset_done(password: str, detail: str) -> ExecutionResult:
    return ExecutionResult(
        outcome=Outcome.COMPLETED,
        detail=_bounded(detail),
        secret=SecretStr(password),
        secret_label="temporary password (must be changed at next logon)",  # noqa: S106
    )


def _reset_not_forced(password: str, why: str) -> ExecutionResult:
    """The password is set, but nothing makes its owner replace it: the temporary password
    (which travelled through chat) stays the account's real one until they do. Made, and said
    as needing attention, never as a clean reset."""
    return ExecutionResult(
        outcome=Outcome.COMPLETED,
        detail=_bounded(f"password reset, but {why}"),
        secret=SecretStr(password),
        secret_label="temporary password (change it yourself at your next sign-in: the "  # noqa: S106
        "directory will not ask you to)",
        attention=_bounded(
            f"{why}. The temporary password stays valid until its owner changes it: make sure "
            "they do, and give twokey's bind account write access to pwdReset"
        ),
    )


def build(config: LdapConfig | Mapping[str, Any]) -> LdapConnector:
    """The connector for one ``type: ldap`` entry of the policy; reads its bind password now."""
    cfg = config if isinstance(config, LdapConfig) else LdapConfig.model_validate(config)
    try:
        password = secret_from_env(cfg.bind_password_env)
    except ConnectorConfigError as exc:
        raise ConnectorConfigError(f"connector {cfg.name!r}: {exc}") from None
    return LdapConnector(cfg, password)


PLUGIN = ConnectorPlugin(
    type="ldap",
    config=LdapConfig,
    build=build,
    changes=lambda config: in_words(LDAP_ACTIONS),
    check=LdapConnector.check,
    directory=lambda connector: connector,
)
