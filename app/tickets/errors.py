"""The failures every ticket adapter raises (their own module so the OAuth token cache and
the HTTP client can both raise them without importing each other)."""

from __future__ import annotations

from app.domain.errors import CredentialsRefused


class TicketSystemDown(Exception):
    """The ticket system did not give a documented answer; the message is safe to log."""


class TicketCredentialsRefused(TicketSystemDown, CredentialsRefused):
    """The ticket system (or its token endpoint) refused twokey's credentials: 401 or 403.

    Still a TicketSystemDown (every caller fails closed on it as before), and a domain
    CredentialsRefused, so the service can tell the agent the cause without importing an
    adapter. The message names the status, never a credential."""
