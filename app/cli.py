"""`twokey serve | audit verify | audit export | policy check | policy explain | requests | review`.

Each command builds what it needs through app.bootstrap and says plainly what went wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from pydantic import ValidationError

from app.audit.chain import ChainHead
from app.bootstrap import Runtime, StartupError, build_runtime
from app.domain.errors import TwokeyError
from app.domain.models import Action, Principal, Request
from app.domain.policy import Signals
from app.logs import configure_logging
from app.settings import Settings


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twokey", description=__doc__)
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

    policy = commands.add_parser("policy", help="check or explain a policy").add_subparsers(
        dest="policy_command", required=True
    )
    check = policy.add_parser("check", help="report every mistake in a policy file")
    check.add_argument("file")
    explain = policy.add_parser("explain", help="dry run: what would a request need?")
    explain.add_argument("--action", required=True, choices=[a.value for a in Action])
    explain.add_argument("--target", required=True, help="a directory id, email or nhi:<name>")
    explain.add_argument("--requester", help="a directory id or email")
    explain.add_argument("--breakglass", action="store_true")
    explain.add_argument("--flagged", action="store_true", help="as if the target were flagged")
    explain.add_argument("--policy", help="policy file (default: TWOKEY_POLICY or the example)")

    requests = commands.add_parser("requests", help="read requests").add_subparsers(
        dest="requests_command", required=True
    )
    requests.add_parser("list", help="open requests")
    show = requests.add_parser("show", help="one request in full")
    show.add_argument("request_id")

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"twokey: bad setting: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        if args.command == "serve":
            return serve(settings)
        if args.command == "policy" and args.policy_command == "check":
            from app.policy import check_file

            code, text = check_file(args.file)
            print(text)
            return code
        if args.command == "policy":
            return explain_command(settings, args)
        if args.command == "connectors":
            from app.connectors.registry import connectors_command

            code, text = asyncio.run(connectors_command(args, settings.policy_path))
            print(text, file=sys.stderr if code == 2 else sys.stdout)
            return code
        return asyncio.run(_with_runtime(settings, _COMMANDS[args.command], args))
    except (StartupError, TwokeyError) as exc:
        print(f"twokey: {exc}", file=sys.stderr)
        return 2


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT; 0 only if every in-flight piece of work finished."""
    from aiohttp import web

    from app.playground.web import is_loopback
    from app.web import STOPPED, create_app

    where = f"http://{settings.host}:{settings.port}"
    extras = ""
    if settings.playground_enabled:
        extras = (
            f" (playground, for trying twokey only: {where}/playground)"
            if is_loopback(settings.host)
            else " (playground off: HOST is not a loopback address)"
        )

    def started(_: object) -> None:
        print(f"twokey listening on {where}{extras}", flush=True)

    app = create_app(settings)
    # On SIGTERM aiohttp waits this long for requests still being answered (each is bounded by
    # Slack's 3 s ack); the work they were answered for then gets its own grace in the cleanup.
    web.run_app(app, host=settings.host, port=settings.port, print=started, shutdown_timeout=5.0)
    return 0 if app[STOPPED].clean else 1


async def _with_runtime(
    settings: Settings,
    command: Callable[[Runtime, argparse.Namespace], Awaitable[int]],
    args: argparse.Namespace,
) -> int:
    runtime = await build_runtime(settings)
    try:
        return await command(runtime, args)
    finally:
        await runtime.close()


def _read_anchor(source: str) -> list[ChainHead]:
    """Chain heads from a file or standard input (-); OSError when the file cannot be read."""
    from app.audit.chain import read_heads

    if source == "-":
        return read_heads(sys.stdin)
    with open(source, encoding="utf-8", errors="replace") as lines:
        return read_heads(lines)


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
        await runtime.trail.seal_all()
        report = await runtime.trail.verify(anchors)
        if report.anchors == 0:
            print(
                f"twokey: none of the {len(anchors or [])} chain heads in {where} belong to this "
                f"namespace ({runtime.settings.namespace}); nothing was checked against them.",
                file=sys.stderr,
            )
            return 2
        code, text = render_verify(report)
        print(text)
        return code
    if args.audit_command == "seal":
        sealed = await runtime.trail.seal_late(args.max_age)
        print(f"Sealed {sealed} events up to {args.max_age // 1000}s old; now run `audit verify`.")
        return 0
    if args.heads:
        for record in await runtime.trail.heads():
            print(json.dumps(record, sort_keys=True))
        return 0
    async for record in runtime.trail.export(args.since):
        print(json.dumps(record, sort_keys=True, ensure_ascii=False))
    return 0


def _request_line(request: Request) -> str:
    return (
        f"{request.id}  {request.state.value:<17} {request.action.value:<16} "
        f"{request.target_name:<20} tier={request.plan.tier} ticket={request.ticket} "
        f"by={request.requester_id}"
    )


async def requests_command(runtime: Runtime, args: argparse.Namespace) -> int:
    if args.requests_command == "list":
        for request in await runtime.store.open_requests():
            print(_request_line(request))
        return 0
    from app.domain.forms import parse_request_id

    found = await runtime.store.get(parse_request_id(args.request_id))
    if found is None:
        print(f"twokey: no request {args.request_id}", file=sys.stderr)
        return 1
    print(found.model_dump_json(indent=2))
    return 0


async def review_command(runtime: Runtime, args: argparse.Namespace) -> int:
    """List reviews, or close one as the operator running the CLI (see docs/DESIGN.md).

    A typed email proves nothing about who typed it, so the CLI never records a reviewer: it
    records the operator's OS account, which the machine vouches for.
    """
    if args.review_command == "list":
        for request in await runtime.store.open_reviews():
            print(_request_line(request) + f"  justification={request.justification!r}")
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
    print(decision.message)
    if decision.changed:
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


_COMMANDS: dict[str, Callable[[Runtime, argparse.Namespace], Awaitable[int]]] = {
    "audit": audit_command,
    "requests": requests_command,
    "review": review_command,
}


def explain_command(settings: Settings, args: argparse.Namespace) -> int:
    """A dry run on the configured (or given) policy and directory; creates nothing.

    The directory is the one `twokey serve` would use (the policy's directory connector, with
    the NHI inventory beside it), so the answer rests on the same people and NHIs.
    """
    from app.bootstrap import load_configured_policy, load_directory
    from app.connectors.base import ConnectorConfigError
    from app.connectors.registry import ConnectorWiring, entries_of, wire_connectors
    from app.policy.explain import explain, render_explanation
    from app.policy.loader import load_policy
    from app.ports import Directory

    policy = load_policy(args.policy) if args.policy else load_configured_policy(settings)
    source = args.policy or settings.policy_path

    async def run() -> int:
        wiring = ConnectorWiring()
        try:
            wiring = await wire_connectors(entries_of(policy.connectors, source))
            directory = load_directory(settings, wiring.directory, wiring.directory_name)
            return await explain_with(directory)
        except ConnectorConfigError as exc:
            raise StartupError(str(exc)) from None
        finally:
            await wiring.aclose()

    async def explain_with(directory: Directory) -> int:
        async def find(ref: str) -> Principal | None:
            if ref.startswith("nhi:"):
                return await directory.find_nhi(ref)
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
        result = explain(
            policy,
            Action(args.action),
            target,
            requester,
            Signals(target_flagged=args.flagged),
            breakglass=args.breakglass,
        )
        print(render_explanation(result))
        return 0

    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
