"""The one failure every ticket adapter raises (its own module so the OAuth token cache and
the HTTP client can both raise it without importing each other)."""

from __future__ import annotations


class TicketSystemDown(Exception):
    """The ticket system did not give a documented answer; the message is safe to log."""
