"""How every HTTP connector talks to a provider: bounded, truthful, and silent about secrets.

A help desk change must end in a truthful outcome. This module sorts every way a call can end:

- the provider answered (any status): the caller reads the answer;
- the connection never opened, or the provider said "not now" (429): nothing changed;
- the request went out and the answer was lost (timeout, broken connection, gateway
  timeout): it is *unknown* whether the change happened, so a change is never repeated.

Only reads are repeated after a lost answer; any call is repeated after a 429, because a
rate-limited request was refused before it did anything. Waits honour ``Retry-After`` and
Okta's ``X-Rate-Limit-Reset`` and are bounded. Logs carry method, path, status and attempt:
never headers, bodies or query strings, so tokens and one-time secrets never reach them; and a
path segment that is no plain word or id (a login, a UPN, an email: Okta, Graph and Google all
take one in the path) is logged as ``{redacted}``, so people's addresses stay out too.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, Protocol, TypeVar, cast
from urllib.parse import unquote, urlsplit

import httpx
import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from app.connectors.base import (
    ConnectorConfigError,
    failed,
    is_loopback,
    unknown,
    wrong_request,
)
from app.connectors.checks import CheckResult
from app.connectors.plugin import ConnectorPlugin, in_words
from app.domain.models import Action, Principal, PrincipalKind, Request
from app.ports import Directory, ExecutionResult

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
SignRequest = Callable[[str, str], Awaitable[Mapping[str, str]]]
"""(method, url) -> headers that prove who we are, made fresh for every attempt."""

_GATEWAY_LOST = {502, 504}
"""A gateway gave up on the provider: the request may have been carried out."""
_READ_RETRYABLE = {502, 503, 504}
_PLAIN_SEGMENT = re.compile(r"[\w.~$-]*")


def loggable_path(url: str) -> str:
    """The URL's path for the log: segments that are not plain words or ids are redacted."""
    segments = urlsplit(url).path.split("/")
    return "/".join(s if _PLAIN_SEGMENT.fullmatch(unquote(s)) else "{redacted}" for s in segments)


def _is_provider_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("is not a URL: write it as https://host/path")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            "uses plain http: credentials and one-time secrets only travel over https "
            "(plain http is allowed for 127.0.0.1/localhost, for local testing)"
        )
    if parts.username or parts.password:
        raise ValueError("the URL must not carry a user name or password")
    if parts.fragment:
        raise ValueError("the URL must not carry a #fragment")
    return value.rstrip("/")


ProviderUrl = Annotated[str, AfterValidator(_is_provider_url)]
"""An https URL (plain http only for loopback), without trailing slash."""


class GroupMembersFound:
    """The people ``Directory.members`` has found so far, by provider id, each with the asked-for
    groups they were found in, at most ``limit`` of them (the cloud connectors' shared part)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._found: dict[str, tuple[Mapping[str, Any], set[str]]] = {}

    def seen_again(self, person_id: str, group: str) -> bool:
        """True when ``person_id`` was found before: ``group`` is noted among theirs."""
        kept = self._found.get(person_id)
        if kept is None:
            return False
        kept[1].add(group)
        return True

    def add(self, person_id: str, user: Mapping[str, Any], group: str) -> None:
        """A person not found before, unless ``limit`` are found already."""
        if not self.full:
            self._found[person_id] = (user, {group})

    @property
    def full(self) -> bool:
        return len(self._found) >= self.limit

    def people(self) -> list[tuple[Mapping[str, Any], frozenset[str]]]:
        """Each person's provider record and groups, in the order they were found."""
        return [(user, frozenset(groups)) for user, groups in self._found.values()]


Timeout = Annotated[float, Field(gt=0, le=120)]
"""Seconds for one attempt to connect, send and read the answer."""
Attempts = Annotated[int, Field(ge=1, le=5)]
RateLimitWait = Annotated[float, Field(ge=0, le=300)]
"""The longest single wait for a rate limit to reset; longer means "try again later"."""


class HttpLimits(BaseModel):
    """How long to wait for a provider, and how hard to try."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: Timeout = 10.0
    max_attempts: Attempts = 3
    max_rate_limit_wait: RateLimitWait = 30.0


class _LimitSettings(Protocol):
    @property
    def timeout(self) -> float: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def max_rate_limit_wait(self) -> float: ...


class LimitsFromSettings:
    """For a connector's settings that carry the :class:`HttpLimits` fields at top level."""

    @property
    def limits(self: _LimitSettings) -> HttpLimits:
        return HttpLimits(
            timeout=self.timeout,
            max_attempts=self.max_attempts,
            max_rate_limit_wait=self.max_rate_limit_wait,
        )


class RetryRule(StrEnum):
    READ = "read"
    """Safe to repeat (HTTP GET, token minting): repeated after a lost answer or 5xx."""
    CHANGE = "change"
    """Changes something: repeated only when the provider refused it unprocessed (429)."""


class ProviderCallError(Exception):
    """A call that produced no usable answer; ``str()`` is words safe to show and audit."""


class ProviderUnreachable(ProviderCallError):
    """The connection never opened: the request was not sent, nothing changed."""


class AnswerLost(ProviderCallError):
    """The request went out and no answer came back: whether it took effect is unknown."""


class RateLimited(ProviderCallError):
    """The provider refused the call for now (429): nothing changed."""

    def __init__(self, message: str, retry_at: float | None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


@dataclass(frozen=True)
class ProviderAnswer:
    """What the provider answered; ``repr`` leaves the body out because it may hold a secret."""

    status: int
    headers: httpx.Headers
    content: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON, or None when it is empty or not JSON."""
        if not self.content:
            return None
        try:
            return json.loads(self.content)
        except ValueError:
            return None

    def __repr__(self) -> str:
        return f"ProviderAnswer(status={self.status}, bytes={len(self.content)})"


def rate_limit_wait(headers: httpx.Headers, now: float) -> float | None:
    """Seconds until the provider accepts calls again, from its own headers.

    ``Retry-After`` (seconds or an HTTP date) wins; otherwise Okta's ``X-Rate-Limit-Reset``
    (epoch seconds), measured against the answer's ``Date`` so a skewed local clock does not
    shorten the wait. None when the answer says nothing.
    """
    reference = _date_header(headers) or now
    retry_after = headers.get("retry-after", "").strip()
    if retry_after:
        if retry_after.isascii() and retry_after.isdigit():
            return float(retry_after)
        try:
            return max(0.0, parsedate_to_datetime(retry_after).timestamp() - reference)
        except (TypeError, ValueError):
            pass
    reset = headers.get("x-rate-limit-reset", "").strip()
    if reset.isascii() and reset.isdigit():
        return max(0.0, float(reset) - reference)
    return None


def _date_header(headers: httpx.Headers) -> float | None:
    value = headers.get("date")
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


FormData = Mapping[str, str] | Callable[[], Mapping[str, str]]


@dataclass(frozen=True, repr=False)
class _Outgoing:
    """One logical request, re-signed on every attempt."""

    method: str
    url: str
    params: Mapping[str, str] | None
    json_body: Any
    content: bytes | None
    form: FormData | None
    headers: Mapping[str, str] | None
    sign: SignRequest | None


class _Credentials(Protocol):
    async def sign(self, method: str, url: str) -> Mapping[str, str]: ...

    def forget(self) -> None: ...


class ProviderHttp:
    """One provider's HTTP calls with its timeouts, retry rules and quiet logs."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        provider: str,
        limits: HttpLimits,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.provider = provider
        self.limits = limits
        self.clock = clock
        self._sleep = sleep
        self._timeout = httpx.Timeout(limits.timeout, connect=min(limits.timeout, 5.0))
        self._owns_client = owns_client

    @classmethod
    def open(
        cls,
        provider: str,
        limits: HttpLimits,
        shared: httpx.AsyncClient | None,
        *,
        sleep: Sleep,
        clock: Clock,
    ) -> ProviderHttp:
        """Calls over the caller's shared client, or over a client of our own that
        :meth:`aclose` closes (a shared one is the caller's to close)."""
        client = shared or new_http_client(limits)
        return cls(client, provider, limits, sleep=sleep, clock=clock, owns_client=shared is None)

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def call_signed_in(
        self,
        method: str,
        url: str,
        credentials: _Credentials,
        *,
        rule: RetryRule,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        renew: bool = True,
    ) -> ProviderAnswer:
        """One JSON API call; with ``renew``, a 401 renews the token and sends once more.

        A 401 means the provider did nothing, so sending again is safe even for a change.
        """
        for attempt in (1, 2):
            answer = await self.call(
                method,
                url,
                rule=rule,
                params=params,
                json_body=json_body,
                headers={"Accept": "application/json"},
                sign=credentials.sign,
            )
            if answer.status != 401 or not renew or attempt == 2:
                return answer
            credentials.forget()
        raise AssertionError("unreachable")  # pragma: no cover

    async def call(
        self,
        method: str,
        url: str,
        *,
        rule: RetryRule,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        form: FormData | None = None,
        headers: Mapping[str, str] | None = None,
        sign: SignRequest | None = None,
    ) -> ProviderAnswer:
        """Send one logical call; answers with any status, raises only when there is none.

        ``sign`` and a callable ``form`` are asked again for every attempt, so one-use proofs
        (DPoP, JWT assertions with a ``jti``) are never replayed.
        """
        outgoing = _Outgoing(method, url, params, json_body, content, form, headers, sign)
        attempts = self.limits.max_attempts
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                answer = await self._send_once(outgoing, attempt)
            except ProviderUnreachable:
                if last:
                    raise
                await self._sleep(self._backoff(attempt))
                continue
            except AnswerLost:
                if rule is RetryRule.CHANGE or last:
                    raise
                await self._sleep(self._backoff(attempt))
                continue
            wait = self._wait_before_trying_again(answer, rule, attempt, last)
            if wait is None:
                return answer
            await self._sleep(wait)
        raise AssertionError("the last attempt always answers or raises")

    async def _send_once(self, outgoing: _Outgoing, attempt: int) -> ProviderAnswer:
        """One HTTP exchange, sorted into: an answer, never sent, or answer lost."""
        path = loggable_path(outgoing.url)
        headers = dict(outgoing.headers or {})
        if outgoing.sign is not None:
            headers.update(await outgoing.sign(outgoing.method, outgoing.url))
        form = outgoing.form() if callable(outgoing.form) else outgoing.form
        try:
            response = await self.client.request(
                outgoing.method,
                outgoing.url,
                params=outgoing.params,
                json=outgoing.json_body,
                content=outgoing.content,
                data=dict(form) if form is not None else None,
                headers=headers,
                timeout=self._timeout,
                follow_redirects=False,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            self._log_failure(outgoing.method, path, attempt, error)
            raise ProviderUnreachable(
                f"could not connect to {self.provider} ({type(error).__name__}); "
                "the request was not sent, nothing changed"
            ) from None
        except httpx.RequestError as error:
            self._log_failure(outgoing.method, path, attempt, error)
            raise AnswerLost(self._lost_words(error)) from None
        log.info(
            "provider_call",
            provider=self.provider,
            method=outgoing.method,
            path=path,
            status=response.status_code,
            attempt=attempt,
        )
        return ProviderAnswer(response.status_code, response.headers, response.content)

    def _wait_before_trying_again(
        self, answer: ProviderAnswer, rule: RetryRule, attempt: int, last: bool
    ) -> float | None:
        """Seconds to wait before sending again, or None when this answer is the one."""
        if answer.status == 429:
            return self._rate_limit_wait(answer, last)
        if answer.status in _GATEWAY_LOST and rule is RetryRule.CHANGE:
            raise AnswerLost(
                f"{self.provider} answered HTTP {answer.status} from a gateway: the request "
                "may or may not have been carried out"
            )
        if answer.status in _READ_RETRYABLE and rule is RetryRule.READ and not last:
            return self._backoff(attempt, answer)
        return None

    def _rate_limit_wait(self, answer: ProviderAnswer, last: bool) -> float:
        """How long to wait before trying again, or RateLimited when that is too long."""
        now = self.clock()
        wait = rate_limit_wait(answer.headers, now)
        retry_at = now + wait if wait is not None else None
        when = f"; try again after {_clock_time(retry_at)}" if retry_at is not None else ""
        if last:
            raise RateLimited(
                f"{self.provider} is rate limiting us and refused the request; nothing "
                f"changed{when}",
                retry_at,
            )
        if wait is None:
            return min(1.0, self.limits.max_rate_limit_wait)
        if wait > self.limits.max_rate_limit_wait:
            raise RateLimited(
                f"{self.provider} is rate limiting us for {wait:.0f} s, longer than the "
                f"{self.limits.max_rate_limit_wait:.0f} s we wait; nothing changed{when}",
                retry_at,
            )
        log.warning("provider_rate_limited", provider=self.provider, wait_seconds=round(wait, 3))
        return wait

    def _backoff(self, attempt: int, answer: ProviderAnswer | None = None) -> float:
        if answer is not None:
            hinted = rate_limit_wait(answer.headers, self.clock())
            if hinted is not None:
                return min(hinted, self.limits.max_rate_limit_wait)
        return min(0.5 * 2.0 ** (attempt - 1), self.limits.max_rate_limit_wait)

    def _lost_words(self, error: httpx.RequestError) -> str:
        if isinstance(error, httpx.TimeoutException):
            return (
                f"no answer from {self.provider} within {self.limits.timeout:g} s: the request "
                "may or may not have been carried out"
            )
        return (
            f"the connection to {self.provider} broke before it answered "
            f"({type(error).__name__}): the request may or may not have been carried out"
        )

    def _log_failure(self, method: str, path: str, attempt: int, error: Exception) -> None:
        log.warning(
            "provider_call_failed",
            provider=self.provider,
            method=method,
            path=path,
            attempt=attempt,
            error=type(error).__name__,
        )


def _clock_time(epoch: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch))


def new_http_client(limits: HttpLimits) -> httpx.AsyncClient:
    """A client for one connector when the caller shares none; the connector closes it."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(limits.timeout, connect=min(limits.timeout, 5.0)),
        follow_redirects=False,
        headers={"User-Agent": "twokey-connector/0.1"},
    )


def one_line(text: str, limit: int = 300) -> str:
    """Provider words made safe to show: one line, no control characters, bounded."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


ConfigModel = TypeVar("ConfigModel", bound=BaseModel)


def parse_config(model: type[ConfigModel], config: Mapping[str, Any], what: str) -> ConfigModel:
    """Validate a connector's policy settings into words an operator can act on.

    The offending values are never repeated back: someone may have pasted a secret where
    only the name of an environment variable belongs.
    """
    try:
        return model.model_validate(dict(config))
    except ValidationError as error:
        problems = []
        for item in error.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in item["loc"]) or "(settings)"
            message = item["msg"]
            if where.endswith("_env"):
                message = (
                    "must be the NAME of the environment variable that holds the secret "
                    "(for example OKTA_API_TOKEN), never the secret itself"
                )
            problems.append(f"{where}: {message}")
        raise ConnectorConfigError(
            f"{what} settings are not valid: " + "; ".join(problems)
        ) from None


# ---- a change through a provider --------------------------------------------------------------


async def outcome_of(
    change: Awaitable[ExecutionResult],
    action: Action,
    target: Principal,
    *,
    refusals: tuple[type[ProviderCallError], ...],
    who: str,
    unsure_who: str | None = None,
    look: str,
) -> ExecutionResult:
    """The change's own result; a call that was refused or never sent is FAILED in ``who``'s
    name, a lost answer UNKNOWN with where to ``look`` before asking again."""
    try:
        return await change
    except refusals as error:
        return failed(f"{who} did not {action.label} for {target.name}: {error}")
    except AnswerLost as error:
        return unknown(
            f"it is unclear whether {unsure_who or who} did {action.label} for {target.name}: "
            f"{error}. {look} before asking again."
        )


def record_change(
    log: Any,
    event: str,
    connector: str,
    request: Request,
    action: Action,
    target: Principal,
    result: ExecutionResult,
) -> ExecutionResult:
    """Log how a change ended: ids and outcome only, never its detail (it may quote a provider)."""
    log.info(
        event,
        connector=connector,
        request_id=request.id,
        action=str(action),
        target=target.id,
        outcome=str(result.outcome),
    )
    return result


class ActionSettings(Protocol):
    """What :class:`HttpConnector` reads from a connector's settings."""

    @property
    def name(self) -> str: ...
    @property
    def actions(self) -> frozenset[Action]: ...


SettingsT = TypeVar("SettingsT", bound=ActionSettings)


class HttpConnector(ABC, Generic[SettingsT]):
    """The part every HTTP connector (Okta, Entra, Google, webhook) shares, written once.

    ``execute`` refuses a mismatched or unsupported change before any call, makes it once
    through :meth:`_change`, maps refusals to FAILED and lost answers to UNKNOWN, and logs how
    it ended (ids and outcome, never details). A subclass names its provider and its refusals
    and makes the change; the one-time secret travels only in the result it returns.
    """

    provider: ClassVar[str]
    """Who acts, in results' words: ``Okta`` did not reset MFA for Alice."""
    event: ClassVar[str]
    """The log event of a change: ``okta_change``."""
    look: ClassVar[str]
    """Where a person looks after a lost answer: ``Check the user in the Okta Admin Console``."""
    shown: ClassVar[tuple[str, ...]]
    """Settings ``repr`` shows beside the name (never a secret: those live in the env)."""
    refusals: ClassVar[tuple[type[ProviderCallError], ...]] = (ProviderUnreachable, RateLimited)
    """Errors that mean the provider did not act: FAILED, "nothing was changed"."""
    people_only: ClassVar[bool] = True
    untouched: ClassVar[str] = "nothing was changed"

    def __init__(self, config: SettingsT, http: ProviderHttp) -> None:
        self.name = config.name
        self.config = config
        self._http = http

    def __repr__(self) -> str:
        shown = "".join(f", {key}={getattr(self.config, key)!r}" for key in self.shown)
        return f"{type(self).__name__}(name={self.name!r}{shown})"

    async def aclose(self) -> None:
        await self._http.aclose()

    def supports(self, action: Action, target: Principal) -> bool:
        return action in self.config.actions and (
            not self.people_only or target.kind is PrincipalKind.HUMAN
        )

    async def execute(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        """Make the change once; a refusal is FAILED in the provider's words, a lost answer
        UNKNOWN (never repeated: whether it happened is for a person to look up)."""
        wrong = wrong_request(action, target, request)
        if wrong:
            result = failed(f"{wrong}; {self.untouched}")
        elif not self.supports(action, target):
            result = self._unsupported(action, target)
        else:
            result = await outcome_of(
                self._change(action, target, request),
                action,
                target,
                refusals=self.refusals,
                who=self.provider,
                unsure_who=self._unsure_who(),
                look=self.look,
            )
        log = structlog.get_logger(type(self).__module__)
        return record_change(log, self.event, self.name, request, action, target, result)

    @abstractmethod
    async def check(self) -> list[CheckResult]:
        """Read-only: test the credentials and permissions; never change anything."""

    @abstractmethod
    async def _change(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        """Make the supported change for the request's own target (checked already)."""

    def _unsupported(self, action: Action, target: Principal) -> ExecutionResult:
        return failed(
            f"the {self.provider} connector {self.name!r} does not {action.label} for "
            f"{target.name}; {self.untouched}"
        )

    def _unsure_who(self) -> str | None:
        return None


HttpConnectorT = TypeVar("HttpConnectorT", bound=HttpConnector[Any])
ModelT = TypeVar("ModelT", bound=BaseModel)


def http_plugin(
    kind: str,
    config: type[ModelT],
    build: Callable[[Mapping[str, Any]], HttpConnectorT],
    *,
    directory: Callable[[HttpConnectorT], Directory] | None = None,
) -> ConnectorPlugin[HttpConnectorT, ModelT]:
    """The plugin of an HTTP connector: its checks, its HTTP client to close, the changes its
    ``actions`` setting lists, and (``directory``) the people it knows."""

    def changes(settings: ModelT) -> str:
        # Every HTTP connector's settings carry ``actions``: HttpConnector.supports reads them.
        return in_words(cast(ActionSettings, settings).actions)

    return ConnectorPlugin(
        type=kind,
        config=config,
        build=build,
        changes=changes,
        check=lambda connector: connector.check(),
        directory=directory,
        close=lambda connector: connector.aclose(),
    )
