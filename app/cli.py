"""`twokey serve | audit verify | audit export | policy check | policy explain | requests | review
| connectors check | tickets check`.

Each command builds what it needs through app.bootstrap and says plainly what went wrong. The
commands are read by people: plain words on stdout, times in ISO-8601 UTC, and no log lines
unless asked for with --log-level (then structured, as `serve` writes them for a log pipeline).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError
from pydantic_settings import SettingsError

from app.audit.chain import ChainHead, VerifyReport
from app.bootstrap import Runtime, StartupError, build_runtime
from app.domain.errors import TwokeyError
from app.domain.models import Action, Principal, PrincipalKind, Request
from app.domain.policy import Signals
from app.logs import configure_logging, escape_controls, scrub_event
from app.settings import Settings, misspelt_settings, names_set, setting_problems

if TYPE_CHECKING:
    from app.audit.trail import AuditTrail

EXIT_REFUSED = 3
"""`policy explain`: the request would be refused (0: it would open; 1 and 2: cannot tell)."""
DESCRIPTION = (
    "twokey puts a two-person rule in front of help-desk identity changes. `twokey serve` runs "
    "the bot; the other commands check the policy, its connectors and ticket system, read "
    "requests, close break-glass reviews, and verify, export, forward or report on the audit "
    "trail. Settings come from the environment or a .env file (README.md: Settings; "
    "`twokey COMMAND --help` for each command)."
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _parse_since(text: str) -> int:
    """An ISO date/time (UTC when no zone) or a duration back from now (e.g. 24h)."""
    from app.domain.durations import parse_duration

    try:
        return int((datetime.now(tz=UTC).timestamp() - parse_duration(text)) * 1000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give an ISO time like 2026-11-01T00:00 or a duration like 24h"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _parse_duration(text: str) -> int:
    """A duration such as 90m or 2h, in milliseconds."""
    from app.domain.durations import parse_duration

    try:
        return int(parse_duration(text) * 1000)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration like 90m or 2h") from exc


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("twokey")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    """``1 request``, ``2 requests``, ``0 requests``."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _iso(ms: int | None, *, precise: bool = False) -> str:
    """Epoch milliseconds as ISO-8601 UTC (``2026-11-01T09:30:00Z``); ``-`` for none."""
    if ms is None:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds" if precise else "seconds").replace(
        "+00:00", "Z"
    )


def _with_log_level(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """--log-level on the main parser and on every command, so either place works."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=None if top else argparse.SUPPRESS,
        help="write log lines at this level and above to standard error, structured as "
        "`twokey serve` writes them (JSON when not on a terminal); by default a command writes "
        "none below ERROR",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _with_log_level(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twokey", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"twokey {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the bot (Slack, Teams, playground, sweeper)")

    audit = commands.add_parser("audit", help="verify or export the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser(
        "verify", help="exit non-zero and name the first bad event if tampered"
    )
    verify.add_argument(
        "--anchor",
        metavar="FILE",
        help="also check against chain heads recorded outside Redis: JSON lines as logged "
        "(audit_sealed) or exported (export, export --heads); - reads standard input",
    )
    seal = audit.add_parser(
        "seal", help="after an outage: seal events older than the sealing window (check first)"
    )
    seal.add_argument(
        "--max-age", required=True, type=_parse_duration, help="oldest events to seal, e.g. 2h"
    )
    export = audit.add_parser("export", help="stream events as JSON lines (for a SIEM)")
    export.add_argument(
        "--since",
        type=_parse_since,
        default=None,
        help="ISO time or duration back from now (24h, 7d)",
    )
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    export.add_argument(
        "--heads",
        action="store_true",
        help="only each shard's chain head (shard, seq, mac): keep them outside Redis",
    )
    forward = audit.add_parser(
        "forward", help="send sealed events to the SIEM named by TWOKEY_AUDIT_FORWARD_URL"
    )
    forward.add_argument(
        "--once",
        action="store_true",
        help="forward until caught up, then exit (cron); without it: until stopped",
    )

    report = commands.add_parser(
        "report", help="evidence for auditors: HTML, PDF or JSON from the verified audit trail"
    )
    report.add_argument(
        "--since", type=_parse_since, default="30d", help="ISO time or duration back (30d)"
    )
    report.add_argument(
        "--until", type=_parse_since, default=None, help="ISO time or duration back (now)"
    )
    report.add_argument("--format", choices=["html", "pdf", "json"], default="html")
    report.add_argument("--out", metavar="FILE", help="write here (standard output otherwise)")
    report.add_argument(
        "--anchor", metavar="FILE", help="also check chain heads recorded outside Redis"
    )

    policy = commands.add_parser("policy", help="check or explain a policy").add_subparsers(
        dest="policy_command", required=True
    )
    check = policy.add_parser(
        "check",
        help="report every mistake in a policy file, and warn of rules and tiers "
        "that can never apply",
    )
    check.add_argument("file")
    check.add_argument(
        "--strict", action="store_true", help="exit 1 on warnings too (for CI), not only mistakes"
    )
    directory = commands.add_parser(
        "directory", help="check a sandbox directory file"
    ).add_subparsers(dest="directory_command", required=True)
    directory.add_parser(
        "check", help="report every mistake in a sandbox directory file (TWOKEY_DIRECTORY)"
    ).add_argument("file")
    explain = policy.add_parser(
        "explain",
        help="dry run: what would a request need, and would it open? (exit 3: it would be refused)",
    )
    explain.add_argument("--action", required=True, choices=[a.value for a in Action])
    explain.add_argument(
        "--target", required=True, help="a directory id (or @id), email or nhi:<name>"
    )
    explain.add_argument("--requester", help="a directory id (or @id) or email")
    explain.add_argument("--breakglass", action="store_true")
    explain.add_argument("--flagged", action="store_true", help="as if the target were flagged")
    explain.add_argument(
        "--reason", help="the reason code (a device-lost reason rules out device-based step-up)"
    )
    explain.add_argument("--policy", help="policy file (default: TWOKEY_POLICY or the example)")

    requests = commands.add_parser("requests", help="read requests").add_subparsers(
        dest="requests_command", required=True
    )
    requests.add_parser("list", help="open requests")
    show = requests.add_parser("show", help="one request in full")
    show.add_argument("request_id")
    show.add_argument(
        "--json", action="store_true", help="the stored record as JSON (times in epoch ms)"
    )

    connectors = commands.add_parser(
        "connectors", help="check identity-provider connectors; AWS key clean-up"
    ).add_subparsers(dest="connectors_command", required=True)
    checked = connectors.add_parser(
        "check", help="test each connector's credentials and permissions, read-only"
    )
    checked.add_argument("--policy", help="policy file (default: TWOKEY_POLICY or the example)")
    cleanup = connectors.add_parser(
        "aws-cleanup", help="delete old AWS access keys whose grace period has passed"
    )
    cleanup.add_argument("--policy", help="policy file (default: TWOKEY_POLICY or the example)")
    cleanup.add_argument("--name", help="only the aws_iam connector with this name")

    tickets = commands.add_parser(
        "tickets", help="check the policy's ticket system (ServiceNow, Jira)"
    ).add_subparsers(dest="tickets_command", required=True)
    ticket_check = tickets.add_parser(
        "check", help="test the ticket system's credentials and permissions, read-only"
    )
    ticket_check.add_argument(
        "--policy", help="policy file (default: TWOKEY_POLICY or the example)"
    )
    ticket_check.add_argument("--ticket", help="also read this ticket (changes nothing)")

    review = commands.add_parser("review", help="break-glass reviews").add_subparsers(
        dest="review_command", required=True
    )
    review.add_parser("list", help="break-glass uses awaiting review")
    close = review.add_parser(
        "close", help="close a review as yourself, the operator (audited, security alerted)"
    )
    close.add_argument("request_id")
    close.add_argument("--note", required=True, help="what was checked, and with whom")
    close.add_argument("--reviewer", help=argparse.SUPPRESS)
    _with_log_level(parser, top=True)
    return parser


def _plain_words(_: object, __: str, event: MutableMapping[str, Any]) -> str:
    """A log record as one line a person reads: ``twokey: error: what (detail=...)``."""
    level = event.pop("level", "error")
    what = event.pop("event", "")
    trace = event.pop("exception", None)
    for noise in ("logger", "timestamp"):
        event.pop(noise, None)
    details = ", ".join(f"{key}={value}" for key, value in event.items())
    line = f"twokey: {level}: {what}" + (f" ({details})" if details else "")
    return f"{line}\n{trace}" if trace else line


def _setup_logging(settings: Settings, args: argparse.Namespace) -> None:
    """`serve` logs for a pipeline. A command logs only errors, in plain words for the person
    reading it, unless asked for the structured lines by --log-level or a LOG_LEVEL that is set
    (as where a log pipeline collects every command's standard error)."""
    asked = args.log_level is not None or "log_level" in settings.model_fields_set
    if args.command == "serve" or asked:
        configure_logging(args.log_level or settings.log_level)
        return
    configure_logging("ERROR", json=False)
    plain = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_event,
            escape_controls,  # the plain line goes to a terminal too
            _plain_words,
        ],
    )
    for handler in logging.getLogger().handlers:  # the one configure_logging installed
        if isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter):
            handler.setFormatter(plain)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        problems = misspelt_settings(names_set())
    except (ValidationError, SettingsError) as exc:
        problems = setting_problems(exc)
    if problems:
        for problem in problems:
            print(f"twokey: bad setting: {problem}.", file=sys.stderr)
        print(
            "twokey: settings come from the environment or .env (README: Settings).",
            file=sys.stderr,
        )
        return 2
    _setup_logging(settings, args)
    try:
        if args.command == "serve":
            return serve(settings)
        if args.command == "policy" and args.policy_command == "check":
            from app.connector_setup import check_policy_file

            code, text = check_policy_file(args.file, strict=args.strict)
            print(text)
            return code
        if args.command == "policy":
            return explain_command(settings, args)
        if args.command == "directory":
            return _said(*check_directory_file(args.file))
        if args.command == "connectors":
            from app.connector_setup import connectors_command

            code, text = asyncio.run(connectors_command(args, settings.policy_path))
            return _said(code, text)
        if args.command == "tickets":
            from app.tickets.check import tickets_command

            code, text = asyncio.run(tickets_command(args, settings.policy_path))
            return _said(code, text)
        return asyncio.run(_with_runtime(settings, _COMMANDS[args.command], args))
    except (StartupError, TwokeyError) as exc:
        print(f"twokey: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _reader_went_away()


def check_directory_file(path: str) -> tuple[int, str]:
    """`twokey directory check FILE`: 0 and what it holds, or 1 and every mistake, located.

    A file with ``nhis:`` and no ``people:`` is an NHI inventory (beside a directory
    connector: docs/directory.md) and is checked as one. A file that cannot be read: exit 2."""
    import yaml

    from app.connectors.sandbox import DirectoryFileError, SandboxDirectory, read_inventory
    from app.domain.models import PrincipalKind

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        return 2, f"cannot read {path}: {why}"
    try:
        shape = yaml.safe_load(text)
    except yaml.YAMLError:
        shape = None  # the directory reader says where and what
    try:
        if isinstance(shape, dict) and "people" not in shape and "nhis" in shape:
            nhis = read_inventory(text, path)
            owners = len({n.owner_id for n in nhis if n.owner_id})
            return 0, (
                f"{path}: a valid NHI inventory: "
                f"{_plural(len(nhis), 'non-human identity', 'non-human identities')}, owned by "
                f"{_plural(owners, 'person', 'people')} named by their id or login in the "
                "directory connector (checked there when twokey starts; `twokey connectors "
                "check` reads that directory)."
            )
        directory = SandboxDirectory.from_yaml(text, path)
    except DirectoryFileError as exc:
        return 1, str(exc)
    people = [p for p in directory.principals if p.kind is PrincipalKind.HUMAN]
    nhis = [p for p in directory.principals if p.kind is PrincipalKind.NHI]
    groups = sorted({g for p in people for g in p.groups})
    disabled = sum(p.disabled for p in directory.principals)
    held = f" ({disabled} disabled)" if disabled else ""
    nhi_count = _plural(len(nhis), "non-human identity", "non-human identities")
    return 0, (
        f"{path}: a valid sandbox directory: {_plural(len(people), 'person', 'people')}{held}, "
        f"{nhi_count}; groups: {', '.join(groups) or 'none'}."
    )


def _said(code: int, text: str) -> int:
    """A command's answer: on standard output, or (exit 2: it could not run) as an error line
    on standard error, like every other error of the command line."""
    if code == 2:
        print(text if text.startswith("twokey: ") else f"twokey: {text}", file=sys.stderr)
    else:
        print(text)
    return code


def _reader_went_away() -> int:
    """The output's reader stopped reading (``twokey audit export | head``): nothing went
    wrong here. Later writes (the flush at exit) go nowhere instead of raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT; 0 only if every in-flight piece of work finished."""
    from aiohttp import web

    from app.playground.web import is_loopback
    from app.web import STOPPED, create_app

    incomplete = settings.incomplete_chat_credentials()
    if incomplete is not None:
        print(f"twokey: {incomplete}", file=sys.stderr)
        return 2
    where = f"http://{settings.host}:{settings.port}"

    def started(_: object) -> None:
        # Said after start-up, from what was mounted: the playground may have stayed off.
        mounted = any(r.canonical == "/playground" for r in app.router.resources())
        extras = ""
        if mounted:
            extras = f" (playground, for trying twokey only: {where}/playground)"
        elif settings.playground_enabled and not is_loopback(settings.host):
            extras = " (playground off: HOST is not a loopback address)"
        print(f"twokey listening on {where}{extras}", flush=True)

    app = create_app(settings)
    # On SIGTERM aiohttp waits this long for requests still being answered (each is bounded by
    # Slack's 3 s ack); the work they were answered for then gets its own grace in the cleanup.
    try:
        web.run_app(
            app, host=settings.host, port=settings.port, print=started, shutdown_timeout=5.0
        )
    except OSError as exc:
        cannot = _cannot_listen(settings, exc)
        if cannot is None:
            raise
        print(f"twokey: {cannot}", file=sys.stderr)
        return 2
    return 0 if app[STOPPED].clean else 1


def _cannot_listen(settings: Settings, exc: OSError) -> str | None:
    """The server could not open its port (start-up already ran, and was undone): the reason
    in words naming HOST and PORT, or None for any other error."""
    import errno
    import socket

    where = f"{settings.host}:{settings.port}"
    if isinstance(exc, socket.gaierror):
        return (
            f"cannot listen on HOST={settings.host}: no such address here. Set HOST to an "
            "address of this machine: 127.0.0.1 (this machine only) or 0.0.0.0 (every network)."
        )
    if "bind" not in str(exc):
        return None
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the address is already in use (another twokey, or "
            "another program, listens there). Stop it, or set PORT to a free port."
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: HOST={settings.host} is not an address of this "
            "machine. Set HOST to 127.0.0.1 (this machine only) or 0.0.0.0 (every network)."
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: not allowed (ports below 1024 need privileges). Set "
            "PORT to 1024 or above, e.g. 3000."
        )
    return f"cannot listen on {where}: {exc.strerror or exc}. Check HOST and PORT."


async def _with_runtime(
    settings: Settings,
    command: Callable[[Runtime, argparse.Namespace], Awaitable[int]],
    args: argparse.Namespace,
) -> int:
    nothing_here = no_embedded_data(settings)
    if nothing_here is not None:
        print(f"twokey: {nothing_here}", file=sys.stderr)
        return 2
    runtime = await build_runtime(settings)
    try:
        return await command(runtime, args)
    finally:
        await runtime.close()


def no_embedded_data(settings: Settings) -> str | None:
    """On the embedded defaults, a command run where ``twokey serve`` never ran would start an
    empty store with a new audit key and report "intact, 0 events" or "no open requests":
    reassuring and wrong. Say where the data is looked for instead. None when there is some."""
    if settings.redis_url is not None:
        return None
    folder = settings.data_dir
    if (folder / "valkey").is_dir() or (folder / "audit.key").is_file():
        return None
    return (
        f"there is no twokey data in {folder.resolve()} (REDIS_URL is unset, so commands read "
        "the embedded store `twokey serve` keeps in TWOKEY_DATA_DIR, ./.twokey by default): run "
        "this in the folder where twokey serve runs, set TWOKEY_DATA_DIR to its data folder, "
        "or set REDIS_URL."
    )


def _read_anchor(source: str) -> list[ChainHead]:
    """Chain heads from a file or standard input (-); OSError when the file cannot be read."""
    from app.audit.chain import read_heads

    if source == "-":
        return read_heads(sys.stdin)
    with open(source, encoding="utf-8", errors="replace") as lines:
        return read_heads(lines)


def _cannot_write(path: Path) -> str:
    """Why a file cannot be written at ``path`` (said before the report is computed), or ""."""
    if path.is_dir():
        return "it is a folder; give a file name"
    folder = path.parent
    if not folder.is_dir():
        return f"there is no folder {folder}"
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "permission denied"
    return ""


async def _no_events_said(runtime: Runtime, code: int, text: str) -> tuple[int, str]:
    """A trail with no event at all: a wrong TWOKEY_NAMESPACE, a new deployment, or a trail
    wiped by someone. Requests stored without a single event can only be the last: broken."""
    namespace = runtime.settings.namespace
    pattern = f"{{{namespace}:s*}}:req:*"
    async for _ in runtime.redis.scan_iter(match=pattern, count=1000):
        return 1, (
            f"AUDIT TRAIL MISSING: namespace {namespace!r} holds requests but not one audit "
            "event: the trail was deleted. Treat this as a security incident: keep Redis as it "
            "is and compare with your SIEM (`twokey audit verify --anchor`)."
        )
    return code, (
        f"{text}\nNo audit event at all in namespace {namespace!r}: if twokey has run here, "
        "check TWOKEY_NAMESPACE and REDIS_URL."
    )


async def sealed_if_key_proven(
    trail: AuditTrail, anchors: list[ChainHead] | None
) -> tuple[VerifyReport, int]:
    """Seal what a sweep would seal now, only with a key that a seal already proves (or on a
    trail sealed nowhere yet), so a mistyped key seals nothing. The verification that decided
    it, and how many events were sealed (when some were, it no longer covers them)."""
    report = await trail.verify(anchors)
    return report, await trail.seal_all() if report.key_may_seal else 0


async def audit_command(runtime: Runtime, args: argparse.Namespace) -> int:
    from app.audit.trail import render_verify

    if args.audit_command == "verify":
        anchors = None
        where = "standard input" if args.anchor == "-" else str(args.anchor)
        if args.anchor is not None:
            try:
                anchors = _read_anchor(args.anchor)
            except OSError as exc:
                print(f"twokey: cannot read {where}: {exc.strerror or exc}", file=sys.stderr)
                return 2
            if not anchors:
                print(
                    f"twokey: no chain heads in {where}: give JSON lines as `twokey audit export "
                    "--heads` writes them, or the audit_sealed lines of twokey's log.",
                    file=sys.stderr,
                )
                return 2
        report, sealed = await sealed_if_key_proven(runtime.trail, anchors)
        if sealed:
            report = await runtime.trail.verify(anchors)
        if report.anchors == 0:
            print(
                f"twokey: none of the {len(anchors or [])} chain heads in {where} belong to this "
                f"namespace ({runtime.settings.namespace}); nothing was checked against them.",
                file=sys.stderr,
            )
            return 2
        code, text = render_verify(report)
        if report.events == 0 and report.ok:
            code, text = await _no_events_said(runtime, code, text)
        print(text)
        return code
    if args.audit_command == "forward":
        from app.audit.forward_cli import forward_command

        return await forward_command(runtime.redis, runtime.trail, runtime.settings, args.once)
    if args.audit_command == "seal":
        from app.domain.durations import format_duration

        sealed = await runtime.trail.seal_late(args.max_age)
        print(
            f"Sealed {_plural(sealed, 'event')} up to {format_duration(args.max_age // 1000)} "
            "old; now run `twokey audit verify`."
        )
        return 0
    if args.heads:
        for record in await runtime.trail.heads():
            print(json.dumps(record, sort_keys=True))
        return 0
    async for record in runtime.trail.export(args.since):
        print(export_line(_with_time(record)))
    return 0


UNICODE_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})
"""The line breaks JSON leaves raw, escaped in export lines: names from a directory may hold
them, and tools that split on every Unicode line break (Python's ``splitlines``, JavaScript)
would cut a record in two. JSON already escapes the rest (below U+0020)."""


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""Half of a UTF-16 pair, which JSON may carry escaped (``"\\ud800"``) but UTF-8 cannot write."""


def export_line(record: Mapping[str, Any]) -> str:
    """One JSON record on exactly one line, names readable, whatever people typed (or an
    insider wrote: a lone surrogate stays escaped, so the line can still be written)."""
    line = json.dumps(record, sort_keys=True, ensure_ascii=False).translate(UNICODE_LINE_BREAKS)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


def _with_time(record: Mapping[str, Any]) -> dict[str, Any]:
    """An exported event plus ``time``, its ``at`` in ISO-8601 UTC.

    ``at`` itself stays the epoch milliseconds the event was written and sealed with, so a
    SIEM holding the key can still re-check each line's ``mac`` over the event unchanged, and
    `audit verify --anchor` reads these lines' ``shard``, ``seq`` and ``mac`` as before.
    """
    at = record.get("at")
    if type(at) is not int:
        return dict(record)
    return {**record, "time": _iso(at, precise=True)}


def _request_line(request: Request) -> str:
    when = (
        f"expires {_iso(request.expires_at)}"
        if request.state.is_open
        else f"finished {_iso(request.finished_at or request.decided_at)}"
    )
    return (
        f"{request.id}  {request.state.value:<17} {request.action.value:<16} "
        f"{request.target_name:<20} tier {request.plan.tier}  ticket {request.ticket}  "
        f"by {request.requester_id}  {when}"
    )


async def requests_command(runtime: Runtime, args: argparse.Namespace) -> int:
    if args.requests_command == "list":
        found = await runtime.store.open_requests()
        if not found:
            print("No open requests.")
            return 0
        print(f"{_plural(len(found), 'open request')}:")
        for request in found:
            print(_request_line(request))
        return 0
    from app.domain.forms import parse_request_id

    shown = await runtime.store.get(parse_request_id(args.request_id))
    if shown is None:
        print(f"twokey: no request {args.request_id}", file=sys.stderr)
        return 1
    if args.json:
        print(shown.model_dump_json(indent=2))
    else:
        print(_request_in_words(shown, await runtime.store.now()))
    return 0


def _kind_words(kind: PrincipalKind) -> str:
    return "a non-human identity" if kind is PrincipalKind.NHI else "a person"


def _request_in_words(request: Request, now: int) -> str:
    """`requests show`: the request as a person reads it, times in ISO-8601 UTC."""
    r, plan = request, request.plan
    target = r.target_name if r.target_name == r.target_id else f"{r.target_name} ({r.target_id})"
    requester = r.requester_name or r.requester_id
    if requester != r.requester_id:
        requester = f"{requester} ({r.requester_id})"
    gates = []
    if plan.owner_confirmation:
        gates.append(f"confirmation by the owner of record, {r.owner_id}")
    if plan.approvals_needed:
        gates.append(f"{_plural(plan.approvals_needed, 'approval')} by role {plan.approver_role}")
    rows: list[tuple[str, str]] = [
        ("state", r.state.value),
        ("action", f"{r.action.value} ({r.action.label})"),
        ("target", f"{target}, {_kind_words(r.target_kind)}"),
        ("requested by", requester),
        ("ticket", f"{r.ticket}, reason {r.reason_code}"),
    ]
    if r.note:
        rows.append(("note", repr(r.note)))
    if r.justification:
        rows.append(("justification", repr(r.justification)))
    rows += [
        ("tier", f"{plan.tier} (rule {plan.rule})" + (", break-glass" if plan.breakglass else "")),
        ("needs", " and ".join(gates) or "nothing more (break-glass)"),
        ("opened", _iso(r.created_at)),
        ("expires", _iso(r.expires_at)),
    ]
    if r.state.is_open:
        rows.append(("waiting for", ", ".join(r.waiting_for(now)) or "nothing: ready to run"))
    if r.owner_confirmed_at is not None:
        until = _iso(r.owner_confirmation_valid_until)
        rows.append(("owner confirmed", f"{_iso(r.owner_confirmed_at)}, valid until {until}"))
    for approval in r.approvals:
        rows.append(
            (
                "approved",
                f"by {approval.approver_id} at {_iso(approval.approved_at)}, valid until "
                f"{_iso(approval.valid_until)}",
            )
        )
    if r.gate_note:
        rows.append(("gate withdrawn", r.gate_note))
    if r.decided_by is not None:
        reason = f": {r.decision_reason!r}" if r.decision_reason else ""
        rows.append(("decided", f"by {r.decided_by} at {_iso(r.decided_at)}{reason}"))
    if r.finished_at is not None:
        detail = f": {r.outcome_detail}" if r.outcome_detail else ""
        rows.append(("finished", f"{_iso(r.finished_at)}{detail}"))
    if plan.breakglass:
        review = "open" if r.review_open else f"closed by {r.reviewed_by or '-'}"
        rows.append(("review", review))
    if r.dispute_until is not None:
        rows.append(("owner may dispute until", _iso(r.dispute_until)))
    if r.disputed_at is not None:
        rows.append(("disputed", _iso(r.disputed_at)))
    rows.append(("audit events", str(r.events)))
    width = max(len(label) for label, _ in rows)
    return "\n".join([r.id, *(f"  {label:<{width}}  {value}" for label, value in rows)])


async def review_command(runtime: Runtime, args: argparse.Namespace) -> int:
    """List reviews, or close one as the operator running the CLI (see docs/DESIGN.md).

    A typed email proves nothing about who typed it, so the CLI never records a reviewer: it
    records the operator's OS account, which the machine vouches for.
    """
    if args.review_command == "list":
        reviews = await runtime.store.open_reviews()
        if not reviews:
            print("No open reviews.")
            return 0
        print(f"{_plural(len(reviews), 'break-glass use')} awaiting review:")
        for request in reviews:
            print(_request_line(request) + f"  justification {request.justification!r}")
        return 0
    from app.domain.forms import parse_request_id

    if args.reviewer is not None:
        print(
            "twokey: --reviewer is not accepted: the command line cannot verify who a reviewer "
            "is, so it never records one. Drop --reviewer to close the review as yourself: it is "
            "recorded as your operator account, and security is alerted.",
            file=sys.stderr,
        )
        return 2
    operator = _os_user()
    decision = await runtime.service.close_review_as_operator(
        operator, parse_request_id(args.request_id), args.note
    )
    if not decision.changed:  # nothing was closed: a script must not read success
        print(f"twokey: {decision.message}", file=sys.stderr)
        return 1
    print(decision.message)
    print(
        f"Recorded as operator:{operator} (audit event review_closed_by_operator), not as "
        "a security reviewer."
    )
    return 0


def _os_user() -> str:
    """The operator's account by real uid (not $USER, which anyone can set)."""
    import os
    import pwd

    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # containers often run as a uid with no passwd entry
        return f"uid-{uid}"


async def report_command(runtime: Runtime, args: argparse.Namespace) -> int:
    """`twokey report`: exit 1 when the chain is broken or a change ran without any gate."""
    from app.bootstrap import audit_key
    from app.report.build import Context, build_report, facts_from_policy
    from app.report.render import render_html, render_json, render_pdf
    from app.store.keys import Keys

    if args.format == "pdf" and not args.out:
        print("twokey: a PDF needs --out FILE", file=sys.stderr)
        return 2
    if args.out and (unwritable := _cannot_write(Path(args.out))):
        print(f"twokey: cannot write the report to {args.out}: {unwritable}", file=sys.stderr)
        return 2
    until = args.until if args.until is not None else await runtime.store.now()
    if args.since >= until:
        print("twokey: --since must be before --until", file=sys.stderr)
        return 2
    anchors = None
    if args.anchor is not None:
        try:
            anchors = _read_anchor(args.anchor)
        except OSError as exc:
            print(f"twokey: cannot read {args.anchor}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        keys = Keys(runtime.settings.namespace)
        given, anchors = len(anchors), [h for h in anchors if keys.holds_chain(h.shard, h.chain)]
        if not anchors:
            print(
                f"twokey: none of the {given} chain heads in {args.anchor} belong to this "
                f"namespace ({runtime.settings.namespace}); nothing was checked against them.",
                file=sys.stderr,
            )
            return 2
    await sealed_if_key_proven(runtime.trail, None)  # the report verifies what it reads itself
    report = await build_report(
        runtime.redis,
        Keys(runtime.settings.namespace),
        audit_key(runtime.settings, runtime.embedded is not None),
        facts_from_policy(runtime.policy),
        since_ms=args.since,
        until_ms=until,
        context=Context(runtime.directory, runtime.connectors, runtime.store.get),
        anchors=anchors,
        previous_keys=runtime.settings.audit_keys_previous,
    )
    if args.format == "json":
        data = (render_json(report) + "\n").encode()
    else:
        text = render_html(report)
        data = await asyncio.to_thread(render_pdf, text) if args.format == "pdf" else text.encode()
    if args.out:
        try:
            await asyncio.to_thread(Path(args.out).write_bytes, data)
        except OSError as exc:
            print(f"twokey: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    verified = report["verification"]["ok"]
    gateless = report["separation_of_duties"]["lacking_gate"]
    if args.out:
        chain = "chain verified" if verified else "AUDIT TRAIL BROKEN"
        requests = _plural(report["volume"]["requests"], "request")
        print(
            f"Report written to {args.out}: {chain}, {requests}, "
            f"{_plural(gateless, 'execution')} lacking any gate."
        )
    return 0 if verified and not gateless else 1


_COMMANDS: dict[str, Callable[[Runtime, argparse.Namespace], Awaitable[int]]] = {
    "audit": audit_command,
    "report": report_command,
    "requests": requests_command,
    "review": review_command,
}


def explain_command(settings: Settings, args: argparse.Namespace) -> int:
    """A dry run on the configured (or given) policy and directory; creates nothing.

    The directory and connectors are the ones `twokey serve` would use (the policy's directory
    connector with the NHI inventory beside it; the sandbox connector when none is configured),
    so the answer rests on the same people, NHIs and connectors as `open`'s. Exit 0 when the
    request would open, 3 when `open` would refuse it (its words are printed).
    """
    from app.bootstrap import load_configured_policy, load_directory
    from app.connector_setup import entries_of
    from app.connectors.base import ConnectorConfigError
    from app.connectors.registry import ConnectorWiring, wire_connectors
    from app.connectors.sandbox import SandboxConnector
    from app.policy.explain import Explanation, Live, explain, render_explanation
    from app.policy.loader import load_policy
    from app.ports import Directory, IdentityProvider

    policy = load_policy(args.policy) if args.policy else load_configured_policy(settings)
    source = args.policy or settings.policy_path

    async def run() -> int:
        wiring = ConnectorWiring()
        try:
            wiring = await wire_connectors(entries_of(policy.connectors, source))
            directory = load_directory(settings, wiring.directory, wiring.directory_name)
            connectors: list[IdentityProvider] = wiring.connectors or [SandboxConnector()]
            return await explain_with(directory, connectors)
        except ConnectorConfigError as exc:
            raise StartupError(str(exc)) from None
        finally:
            await wiring.aclose()

    async def explain_with(directory: Directory, connectors: list[IdentityProvider]) -> int:
        async def find(ref: str) -> Principal | None:
            ref = ref.strip().removeprefix("@")  # `@alice`, as a person is named in chat
            if ref[:4].lower() == "nhi:":
                return await directory.find_nhi(ref[4:])
            found = await directory.get(ref)
            if found is None:
                matches = await directory.find_by_email(ref)
                found = matches[0] if len(matches) == 1 else None
            return found

        target = await find(args.target)
        if target is None:
            print(
                f"twokey: {args.target!r} is not in the directory (or is ambiguous)",
                file=sys.stderr,
            )
            return 1
        requester = await find(args.requester) if args.requester else None
        if args.requester and requester is None:
            print(
                f"twokey: {args.requester!r} is not in the directory (or is ambiguous)",
                file=sys.stderr,
            )
            return 1
        owner_id = target.owner_of_record
        owner = target if owner_id == target.id else None
        if owner_id is not None and owner is None:
            owner = await directory.get(owner_id)

        def dry_run(live: Live) -> Explanation:
            return explain(
                policy,
                Action(args.action),
                target,
                requester,
                Signals(target_flagged=args.flagged),
                breakglass=args.breakglass,
                live=live,
                reason_code=args.reason or "",
                notes=[
                    "a dry run reads no request history: velocity counts start at 0, and the "
                    "target counts as flagged only with --flagged"
                ],
            )

        live = Live(owner=owner, connectors=connectors)
        result = dry_run(live)
        if result.plan is not None and result.plan.approvals_needed:
            groups = policy.groups_of([result.plan.approver_role])
            with contextlib.suppress(Exception):  # the directory could not say: no line
                pool = await directory.members(groups, limit=result.plan.approvals_needed + 10)
                result = dry_run(dataclasses.replace(live, approver_pool=pool))
        print(render_explanation(result))
        return 0 if result.would_open else EXIT_REFUSED

    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
