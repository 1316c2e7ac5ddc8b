"""Ticket system adapters (the ``TicketSystem`` port), building one from the policy, and the
write-back notifier that leaves each decision and outcome on the ticket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from pydantic import SecretStr

from app.domain.policy import Policy
from app.domain.tickets import TicketSettings
from app.notify import FanoutNotifier
from app.settings import environment
from app.store.keys import Keys
from app.store.ledger import RedisMessageLedger
from app.tickets.common import TicketCredentialsRefused, TicketSystemDown
from app.tickets.jira import JiraTickets
from app.tickets.notes import NamesOf, TicketNotes
from app.tickets.oauth import OAuthClient
from app.tickets.servicenow import ServiceNowTickets

TicketAdapter = ServiceNowTickets | JiraTickets


class TicketConfigError(Exception):
    """The policy's ``tickets:`` section cannot be used as configured (says which setting)."""


def ticket_system(settings: TicketSettings) -> TicketAdapter | None:
    """The adapter the policy asks for (None for ``system: none``); credentials from the
    environment variables it names, a missing one a clear start-up error."""
    if settings.system == "none":
        return None
    assert settings.instance_url
    oauth = _oauth_client(settings) if settings.auth_method == "oauth" else None
    if settings.system == "jira":
        if oauth is not None:
            return JiraTickets(settings.jira_api_base, oauth=oauth)
        assert settings.email_env and settings.api_token_env
        return JiraTickets(
            settings.instance_url,
            _from_env(settings.email_env),
            _from_env(settings.api_token_env),
        )
    if oauth is not None:
        return ServiceNowTickets(
            settings.instance_url, oauth=oauth, tables=settings.servicenow_tables
        )
    assert settings.username_env and settings.password_env
    return ServiceNowTickets(
        settings.instance_url,
        _from_env(settings.username_env),
        _from_env(settings.password_env),
        tables=settings.servicenow_tables,
    )


def _oauth_client(settings: TicketSettings) -> OAuthClient:
    """Client credentials from the variables the policy names; ServiceNow's token endpoint
    takes a form, Atlassian's JSON (as each documents)."""
    assert settings.client_id_env and settings.client_secret_env
    return OAuthClient(
        token_url=settings.oauth_token_url,
        client_id=_from_env(settings.client_id_env),
        client_secret=_from_env(settings.client_secret_env),
        encoding="json" if settings.system == "jira" else "form",
    )


def write_back(
    tickets: TicketAdapter,
    policy: Policy,
    notifier: FanoutNotifier,
    redis: aioredis.Redis,
    keys: Keys,
    names: NamesOf,
) -> Callable[[], Awaitable[None]]:
    """Join the write-back notes to the fan-out (when the policy writes back); returns the
    closer that lets notes under way finish before the ticket system's client closes."""
    notes: TicketNotes | None = None
    wanted = policy.tickets.write_back
    if wanted.notes or wanted.completion_state:
        keep_s = max(policy.retention, 86_400) + 86_400
        ledger = RedisMessageLedger(redis, keys)
        notes = TicketNotes(tickets, wanted, ledger, names, keep_s=keep_s)
        notifier.add(notes)

    async def close() -> None:
        if notes is not None:
            await notes.settle()
        await tickets.aclose()

    return close


def _from_env(name: str) -> SecretStr:
    value = environment().get(name)
    if not value:
        raise TicketConfigError(f"tickets: environment variable {name} is not set (or empty)")
    return SecretStr(value)


__all__ = [
    "JiraTickets",
    "OAuthClient",
    "ServiceNowTickets",
    "TicketConfigError",
    "TicketCredentialsRefused",
    "TicketNotes",
    "TicketSystemDown",
    "ticket_system",
    "write_back",
]
