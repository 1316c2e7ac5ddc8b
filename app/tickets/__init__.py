"""Ticket system adapters (the ``TicketSystem`` port) and building one from the policy."""

from __future__ import annotations

import os

from pydantic import SecretStr

from app.domain.tickets import TicketSettings
from app.tickets.servicenow import ServiceNowTickets


class TicketConfigError(Exception):
    """The policy's ``tickets:`` section cannot be used as configured (says which setting)."""


def ticket_system(settings: TicketSettings) -> ServiceNowTickets | None:
    """The adapter the policy asks for (None for ``system: none``); credentials from the
    environment variables it names, a missing one a clear start-up error."""
    if settings.system == "none":
        return None
    assert settings.instance_url and settings.username_env and settings.password_env
    return ServiceNowTickets(
        settings.instance_url,
        _from_env(settings.username_env),
        _from_env(settings.password_env),
    )


def _from_env(name: str) -> SecretStr:
    value = os.environ.get(name)
    if not value:
        raise TicketConfigError(f"tickets: environment variable {name} is not set (or empty)")
    return SecretStr(value)


__all__ = ["ServiceNowTickets", "TicketConfigError", "ticket_system"]
