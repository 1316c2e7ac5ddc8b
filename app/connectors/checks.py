"""`twokey connectors check`: what each connector can do, proven without changing anything.

An operator wiring twokey to an identity provider wants to know, before the first real request,
whether the credentials work and which permissions are missing. Each connector answers with a
list of :class:`CheckResult` lines from read-only calls (sign in, read one user, look up its
own token, ...). A change is never tried to find out whether it would be allowed: where a
read-only call cannot prove a permission, the line says so (``note``) and names what is needed.

Lines carry words only: never a token, a key or a password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog

log = structlog.get_logger(__name__)

CHECK_TIMEOUT = 60.0
"""The longest one connector's checks may take in all; the rest are reported as not answered."""


class CheckStatus(StrEnum):
    OK = "ok"
    """It works."""
    MISSING = "missing"
    """It does not work: the detail says what is missing and what to do."""
    NOTE = "note"
    """Not tested (a read-only check cannot prove it); the detail says what is needed."""


@dataclass(frozen=True)
class CheckResult:
    """One thing checked, whether it works, and in words what was seen or what is missing."""

    status: CheckStatus
    what: str
    detail: str = ""


def works(what: str, detail: str = "") -> CheckResult:
    return CheckResult(CheckStatus.OK, what, detail)


def missing(what: str, detail: str) -> CheckResult:
    return CheckResult(CheckStatus.MISSING, what, detail)


def note(what: str, detail: str) -> CheckResult:
    return CheckResult(CheckStatus.NOTE, what, detail)


def phone_note(attribute: str, lock: str) -> CheckResult:
    """The reminder for ``phone_of_record: true``: a read-only check cannot see who may edit
    the attribute, and a number the owner set themselves makes a texted code prove nothing."""
    return note(
        f"phone of record read from {attribute}",
        f"make sure people cannot edit it: {lock}",
    )


@dataclass(frozen=True)
class ConnectorReport:
    """Every line checked for one configured connector."""

    name: str
    kind: str
    role: str
    """What twokey uses it for, in words: ``directory; changes: reset-mfa, unlock``."""
    results: tuple[CheckResult, ...]

    @property
    def ready(self) -> bool:
        return all(result.status is not CheckStatus.MISSING for result in self.results)


async def run_checks(
    name: str, check: Awaitable[list[CheckResult]], limit_s: float = CHECK_TIMEOUT
) -> list[CheckResult]:
    """A connector's own read-only checks, bounded in time; a crash is a MISSING line, not a
    traceback.

    Only the exception's class is shown: its message could quote a credential.
    """
    try:
        results = await asyncio.wait_for(check, timeout=limit_s)
    except TimeoutError:
        return [missing("answer in time", f"the checks did not finish within {limit_s:g} s")]
    except Exception as exc:
        log.warning("connector_check_crashed", connector=name, error=type(exc).__name__)
        return [
            missing("run the checks", f"the check stopped on an unexpected {type(exc).__name__}")
        ]
    return results or [note("nothing to check", "this connector reported no checks")]


_MARKS = {CheckStatus.OK: "ok     ", CheckStatus.MISSING: "MISSING", CheckStatus.NOTE: "note   "}


def render_reports(reports: Sequence[ConnectorReport]) -> str:
    """The report printed by `twokey connectors check`, one block per connector."""
    lines: list[str] = []
    for report in reports:
        lines.append(f"{report.name} ({report.kind}): {report.role}")
        for result in report.results:
            detail = f": {result.detail}" if result.detail else ""
            lines.append(f"  {_MARKS[result.status]}  {result.what}{detail}")
        lines.append("")
    broken = [report.name for report in reports if not report.ready]
    total = f"{len(reports)} connector" + ("" if len(reports) == 1 else "s")
    if broken:
        lines.append(f"{total} checked; something is missing for: {', '.join(broken)}.")
    else:
        lines.append(f"{total} checked; everything a read-only check can prove works.")
    return "\n".join(lines)
