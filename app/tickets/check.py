"""`twokey tickets check`: whether the policy's ticket system answers with its credentials,
read-only (nothing is written to any ticket), like `twokey connectors check`."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.domain.errors import PolicyError
from app.domain.tickets import TicketSettings
from app.policy.loader import example_policy, load_policy
from app.tickets import TicketAdapter, TicketConfigError, ticket_system
from app.tickets.common import TicketSystemDown


async def tickets_command(args: argparse.Namespace, default_policy: Path | None) -> tuple[int, str]:
    """Exit code and text: 0 it answers (or nothing to check), 1 it does not, 2 no policy."""
    source = args.policy or default_policy
    try:
        settings = (load_policy(source) if source else example_policy()).tickets
    except PolicyError as exc:
        return 2, str(exc)
    if not settings.checked:
        return 0, "tickets are not looked up (tickets.system: none): only ticket_pattern applies."
    try:
        system = ticket_system(settings)
    except TicketConfigError as exc:
        return 1, f"{settings.system_name}: NOT READY: {exc}"
    assert system is not None
    try:
        return await _check(system, settings, args.ticket)
    finally:
        await system.aclose()


async def _check(
    system: TicketAdapter, settings: TicketSettings, number: str | None
) -> tuple[int, str]:
    lines = [f"{settings.system_name} at {settings.instance_url}:"]
    if settings.auth_method == "oauth":
        lines.append(f"  OAuth client credentials, tokens from {settings.oauth_token_url}")
        if settings.system == "jira":
            lines.append(f"  calls through {settings.jira_api_base}")
    try:
        lines += [f"  {line}" for line in await system.check()]
        if number:
            found = await system.find(number)
            lines.append(
                f"  ticket {number}: not found"
                if found is None
                else f"  ticket {number}: found, state {found.state}"
            )
    except TicketSystemDown as exc:
        lines.append(f"  NOT READY: {exc}")
        return 1, "\n".join(lines)
    lines.append(f"  checks: {settings.in_words()}")
    return 0, "\n".join(lines)
