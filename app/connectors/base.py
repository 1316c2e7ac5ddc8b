"""What every connector shares: secrets by env-var name, errors that never carry secrets, and
the words a change ends in."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import string
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Annotated, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import AfterValidator, SecretStr, ValidationError

from app.connectors.checks import CheckResult
from app.domain.models import Action, Principal, PrincipalKind, Request
from app.ports import ACT_BEFORE, ExecutionResult, Outcome
from app.settings import environment

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")


def _is_env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        # Never echo the value: someone may have pasted the secret itself here.
        raise ValueError(
            "this is not an environment variable name: secrets are never written in the "
            "policy file, only the NAME of the variable that holds them (e.g. OKTA_API_TOKEN)"
        )
    return value


EnvVarName = Annotated[str, AfterValidator(_is_env_name)]
"""A policy field that names the environment variable holding a secret."""


class ConnectorConfigError(Exception):
    """A connector cannot be built from its configuration; says which setting is wrong."""


def secret_from_env(name: str) -> SecretStr:
    """Read a secret named in the policy (environment or .env); a missing variable is a clear
    start-up error."""
    value = environment().get(name)
    if not value:
        raise ConnectorConfigError(f"environment variable {name} is not set (or empty)")
    return SecretStr(value)


def is_loopback(host: str) -> bool:
    """127.0.0.1, ::1 or localhost: the only hosts plain http may reach (local testing)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def only_supported(value: frozenset[Action], supported: frozenset[Action], provider: str) -> None:
    """A connector's ``actions`` setting lists only what the provider can do, and something."""
    cannot = value - supported
    if cannot:
        raise ValueError(
            f"{provider} cannot perform "
            + ", ".join(sorted(cannot))
            + "; it supports "
            + ", ".join(sorted(supported))
        )
    if not value:
        raise ValueError("list at least one action")


_PASSWORD_SYMBOLS = "-_.!@#%+=?"  # noqa: S105 - an alphabet, not a password


def temporary_password(length: int) -> str:
    """From :mod:`secrets`, printable ASCII with all four character classes, so the
    providers' complexity rules (Entra's, Google's) hold."""
    alphabet = string.ascii_letters + string.digits + _PASSWORD_SYMBOLS
    classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits, _PASSWORD_SYMBOLS)
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if all(any(c in group for c in candidate) for group in classes):
            return candidate


# ---- results of a change ---------------------------------------------------------------------


def completed(detail: str) -> ExecutionResult:
    return ExecutionResult(outcome=Outcome.COMPLETED, detail=detail)


def failed(detail: str) -> ExecutionResult:
    return ExecutionResult(outcome=Outcome.FAILED, detail=detail)


def unknown(detail: str) -> ExecutionResult:
    return ExecutionResult(outcome=Outcome.UNKNOWN, detail=detail)


def wrong_request(action: Action, target: Principal, request: Request) -> str | None:
    """Words when the request asks for another change or person than the one to be made."""
    if request.action is not action or request.target_id != target.id:
        return (
            f"request {request.id} is for {request.action.value} on {request.target_id}, "
            f"not {action.value} on {target.id}"
        )
    return None


# ---- non-human identities rotated through a blocking client (AWS IAM, Vault) ----------------


class Stopped(Exception):
    """A step could not be completed; ``words`` say what happened, never a secret."""

    def __init__(self, outcome: Outcome, words: str) -> None:
        super().__init__(words)
        self.outcome = outcome
        self.words = words


def time_to_change(step: str, slowest_s: float) -> None:
    """Before a changing call made from a worker thread: stop (FAILED, nothing more changed)
    unless the call, at its slowest, still ends before the service's deadline (ACT_BEFORE). A
    timeout in the service abandons the wait, not the thread: without this the change could
    land after a sweeper declared the execution interrupted, its new secret reaching no one."""
    act_before = ACT_BEFORE.get()
    if act_before is not None and time.monotonic() + slowest_s > act_before:
        raise Stopped(
            Outcome.FAILED,
            f"twokey's time to act ran out before it could {step} (the provider was slow), so "
            "it did not try",
        )


@contextmanager
def undoing() -> Iterator[None]:
    """Taking a half-done change back is never stopped by the time limit: it restores."""
    handed = ACT_BEFORE.set(None)
    try:
        yield
    finally:
        ACT_BEFORE.reset(handed)


def config_problem(kind: str, exc: ValidationError) -> ConnectorConfigError:
    """Every setting that is wrong, one a line, without repeating the values given."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        lines.append(f"  - {where}: {message}")
    return ConnectorConfigError(f"{kind} connector configuration:\n" + "\n".join(lines))


def refuse_inline_secrets(
    raw: Mapping[str, Any], names: frozenset[str], kind: str, instead: str
) -> None:
    """Secrets written into the policy file stop start-up; only their variables' names belong."""
    inline = sorted(key for key in raw if str(key).lower() in names)
    if inline:
        raise ConnectorConfigError(f"{kind} connector: remove {', '.join(inline)}: {instead}")


def nhi_refusal(
    where: str, system: str, action: Action, target: Principal, request: Request
) -> str:
    """Why a rotate-secret connector of ``system`` will not act, or "" when it may."""
    wrong = wrong_request(action, target, request)
    if wrong:
        return f"{where}: nothing done, {wrong}."
    if action is not Action.ROTATE_SECRET or target.kind is not PrincipalKind.NHI:
        return f"{where}: only rotate-secret for a non-human identity; not {action.value}."
    if target.system != system:
        return (
            f"{where}: {target.id} lives in {target.system or 'no system'}, not "
            f"{system}; nothing done."
        )
    return ""


async def rotate_in_thread(
    rotate: Callable[[], ExecutionResult],
    *,
    log: logging.Logger,
    kind: str,
    where: str,
    look: str,
    target: Principal,
    request: Request,
) -> ExecutionResult:
    """Run a blocking rotation in a worker thread; a surprise there is UNKNOWN, never fine."""
    try:
        result = await asyncio.to_thread(rotate)
    except Exception as exc:  # a bug or an answer nobody foresaw: never guess it was fine
        log.error("%s rotate-secret for %s stopped on %s", kind, target.id, type(exc).__name__)
        result = unknown(
            f"{where}: the rotation stopped on an unexpected {type(exc).__name__}; it may or "
            f"may not have happened. {look} before trying again."
        )
    log.info(
        "%s rotate-secret %s for %s (request %s): %s",
        kind,
        result.outcome.value,
        target.id,
        request.id,
        result.detail,
    )
    return result


def taken_back(
    prefix: str,
    done: list[str],
    stop: Stopped,
    undo: Callable[[], object],
    *,
    by_hand: str,
    undone: str,
) -> ExecutionResult:
    """A rotation stopped half-way: undo its new secret so no extra working one is left that
    its owner never got. FAILED either way; ``by_hand`` says what to do when the undo fails."""
    try:
        with undoing():
            undo()
    except Stopped as not_undone:
        return failed(prefix + "; ".join([*done, stop.words, not_undone.words]) + by_hand)
    return failed(prefix + "; ".join([*done, stop.words]) + undone)


class _NhiSettings(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def system(self) -> str: ...


NhiSettingsT = TypeVar("NhiSettingsT", bound=_NhiSettings)


class RotatingConnector(ABC, Generic[NhiSettingsT]):
    """The part both NHI rotators (AWS IAM, Vault) share, written once.

    They rotate one secret of a non-human identity of their ``system`` through a blocking
    client: ``execute`` refuses anything else before a call, runs :meth:`_rotate` in a worker
    thread (a surprise there is UNKNOWN, never fine) and logs how it ended; ``check`` runs
    :meth:`_check` in a worker thread too.
    """

    provider: ClassVar[str]
    """Who acts, in refusals' words: ``AWS IAM``."""
    kind: ClassVar[str]
    """The connector type, in the log: ``aws_iam``."""
    look: ClassVar[str]
    """Where a person looks after an unclear rotation."""

    def __init__(self, config: NhiSettingsT) -> None:
        self.config = config
        self.name = config.name

    def supports(self, action: Action, target: Principal) -> bool:
        """rotate-secret for an NHI of this system whose secret this connector knows."""
        return (
            action is Action.ROTATE_SECRET
            and target.kind is PrincipalKind.NHI
            and target.system == self.config.system
            and not self._not_known(target)
        )

    async def execute(self, action: Action, target: Principal, request: Request) -> ExecutionResult:
        """Rotate the NHI's secret; a refusal or error comes back as FAILED with words."""
        refusal = self._refusal(action, target, request)
        if refusal:
            return failed(refusal)
        return await rotate_in_thread(
            partial(self._rotate, target, request),
            log=logging.getLogger(type(self).__module__),
            kind=self.kind,
            where=self._where(target),
            look=self.look,
            target=target,
            request=request,
        )

    async def check(self) -> list[CheckResult]:
        """Read-only, in a worker thread: see :meth:`_check`."""
        return await asyncio.to_thread(self._check)

    def _refusal(self, action: Action, target: Principal, request: Request) -> str:
        return nhi_refusal(
            self.provider, self.config.system, action, target, request
        ) or self._not_known(target)

    @abstractmethod
    def _not_known(self, target: Principal) -> str:
        """Words when this connector cannot tell which secret is the target's, else ""."""

    @abstractmethod
    def _where(self, target: Principal) -> str:
        """The secret being rotated, in words for an unclear outcome."""

    @abstractmethod
    def _rotate(self, target: Principal, request: Request) -> ExecutionResult:
        """Rotate the target's secret (in a worker thread); the new one only in the result."""

    @abstractmethod
    def _check(self) -> list[CheckResult]:
        """Read-only checks of credentials and permissions (in a worker thread)."""
