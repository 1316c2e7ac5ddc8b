"""Tickets that are real: the policy's ``tickets:`` section and the checks a ticket must pass.

Before a request opens, the ticket the agent quoted is read from the ticket system (a
:class:`Ticket`, through the ``TicketSystem`` port) and must exist, be open, be recent enough
and, where the policy says so, have been raised by the person whose account would change.
Pure: the adapter reads, this module decides, in words that name the ticket's field.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.domain.durations import Duration, format_duration
from app.domain.models import Principal

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")

INCIDENT_STATES = {
    "1": "New",
    "2": "In Progress",
    "3": "On Hold",
    "6": "Resolved",
    "7": "Closed",
    "8": "Canceled",
}
"""ServiceNow's incident states out of the box (the ``state`` field's values)."""


class TicketSettings(BaseModel):
    """The policy's ``tickets:`` section: whether and how quoted tickets are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: Literal["servicenow", "none"] = "none"
    """``none``: the ticket is only matched against ``ticket_pattern``."""
    instance_url: str | None = None
    """e.g. https://example.service-now.com"""
    username_env: str | None = None
    """The environment variable holding the API user's name (basic auth)."""
    password_env: str | None = None
    """The environment variable holding its password (never the password itself)."""
    open_states: list[str] = Field(default_factory=lambda: ["1", "2", "3"], min_length=1)
    """Incident ``state`` values that count as open (New, In Progress, On Hold)."""
    max_age: Duration | None = None
    """A ticket opened (``opened_at``) longer ago than this is refused; unset: any age."""
    caller_must_be_target: bool = False
    """The ticket's ``caller_id`` must be the target (for an NHI: its owner of record)."""

    @field_validator("open_states", mode="before")
    @classmethod
    def _states_as_words(cls, value: object) -> object:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("username_env", "password_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            # Never echo the value: someone may have pasted the secret itself here.
            raise ValueError(
                "this is not an environment variable name: credentials are never written in "
                "the policy file, only the NAME of the variable holding them (e.g. SN_PASSWORD)"
            )
        return value

    @field_validator("instance_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        local = parts.hostname in {"localhost", "127.0.0.1", "::1"}
        if not parts.hostname or parts.scheme not in {"https", "http"}:
            raise ValueError("instance_url must be a URL such as https://example.service-now.com")
        if parts.scheme == "http" and not local:
            raise ValueError("instance_url must use https (plain http only to localhost)")
        if parts.path.strip("/") or parts.query:
            raise ValueError("instance_url is the instance only, without a path")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _servicenow_is_complete(self) -> TicketSettings:
        if self.system == "servicenow":
            missing = [
                name
                for name in ("instance_url", "username_env", "password_env")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"system servicenow needs {', '.join(missing)}")
        return self

    @property
    def checked(self) -> bool:
        return self.system != "none"

    def in_words(self) -> str:
        """What is checked, for `policy check` and `policy explain`."""
        if not self.checked:
            return "not looked up (tickets.system: none); only ticket_pattern applies"
        states = ", ".join(_state_words(s) for s in self.open_states)
        parts = [f"must exist in ServiceNow ({self.instance_url})", f"state one of {states}"]
        if self.max_age is not None:
            parts.append(f"opened_at within {format_duration(self.max_age)}")
        if self.caller_must_be_target:
            parts.append("caller_id is the target (an NHI's owner)")
        return "; ".join(parts)


class Ticket(BaseModel):
    """A ticket as the ticket system holds it (only the fields the checks read)."""

    model_config = ConfigDict(frozen=True)

    number: str
    state: str
    opened_at: datetime | None = None
    caller_email: str = ""
    caller_user_name: str = ""


def _state_words(state: str) -> str:
    name = INCIDENT_STATES.get(state)
    return f"{state} ({name})" if name else state


def ticket_problem(
    settings: TicketSettings, ticket: Ticket, person: Principal, now: float
) -> str | None:
    """Why ``ticket`` cannot back a request about ``person`` (the target or an NHI's owner),
    in words naming the ticket's field; None when it can."""
    number = ticket.number
    if ticket.state not in settings.open_states:
        wanted = ", ".join(_state_words(s) for s in settings.open_states)
        return (
            f"Ticket {number} is not open: its state is {_state_words(ticket.state)}, and a "
            f"request needs one of {wanted}. Reopen it or quote an open ticket."
        )
    if settings.max_age is not None:
        if ticket.opened_at is None:
            return f"Ticket {number} has no opened_at, so its age cannot be checked."
        age = now - ticket.opened_at.timestamp()
        if age > settings.max_age:
            opened = ticket.opened_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            return (
                f"Ticket {number} was opened too long ago: its opened_at is {opened}, more than "
                f"{format_duration(settings.max_age)} ago. Quote a current ticket."
            )
    if settings.caller_must_be_target and not _same_person(ticket, person):
        return (
            f"Ticket {number}'s caller (caller_id) is not {person.name}, the person whose "
            "account would change: the ticket must have been raised by them."
        )
    return None


def _same_person(ticket: Ticket, person: Principal) -> bool:
    """The caller's email, or user name, equals the person's email (case-insensitive)."""
    email = (person.email or "").strip().casefold()
    if not email:
        return False
    known = {ticket.caller_email.strip().casefold(), ticket.caller_user_name.strip().casefold()}
    return email in known
