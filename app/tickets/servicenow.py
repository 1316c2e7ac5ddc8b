"""ServiceNow incidents and requested items through the Table API (basic auth, or OAuth client
credentials from ``/oauth_token.do``): read before a request opens and before its change runs,
with twokey's work notes written back.

``GET /api/now/table/<table>?sysparm_query=number=<n>&sysparm_fields=...`` with the caller and
assignee dot-walked (``caller_id.email``, ``assigned_to.user_name``, ``assignment_group.name``)
and raw values (``sysparm_display_value=false``: ``state`` as its number, ``opened_at`` in UTC as
``YYYY-MM-DD hh:mm:ss``). ``<table>`` is ``incident`` (INC...) or ``sc_req_item`` (RITM..., a
service catalog requested item, whose caller is ``requested_for``), as the policy's
``servicenow_tables`` allows. Notes: ``PATCH /api/now/table/<table>/<sys_id>`` with
``work_notes`` (internal, never shown to the caller). Logs carry the status only: never the
credentials, the query or a note.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from app.domain.tickets import SERVICENOW_TABLES, Ticket, servicenow_table
from app.tickets.common import TicketHttp, TicketSystemDown, refuse_unless
from app.tickets.oauth import OAuthClient

CALLER = {"incident": "caller_id", "sc_req_item": "requested_for"}
"""The field naming the person a record is for: an incident's caller, a requested item's
requested-for user (the Table API's names)."""


def fields_of(table: str) -> tuple[str, ...]:
    """The fields read from ``table``, its caller reference dot-walked to email, user name and
    display name (the name is for the approval card only, never matched on)."""
    caller = CALLER[table]
    return (
        "sys_id",
        "number",
        "state",
        "opened_at",
        "short_description",
        f"{caller}.email",
        f"{caller}.user_name",
        f"{caller}.name",
        "assigned_to.email",
        "assigned_to.user_name",
        "assignment_group.name",
    )


FIELDS = fields_of("incident")
_NUMBER = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A ticket number that cannot change the encoded query (no ``^``, ``=``, ``,``...)."""
_SYS_ID = re.compile(r"[0-9a-f]{32}")


class ServiceNowTickets:
    """The ``TicketSystem`` port on a ServiceNow instance's ``incident`` and (where the policy
    lists it) ``sc_req_item`` tables."""

    name = "ServiceNow"

    def __init__(
        self,
        instance_url: str,
        username: SecretStr | None = None,
        password: SecretStr | None = None,
        *,
        oauth: OAuthClient | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        tables: Sequence[str] = ("incident",),
    ) -> None:
        """Basic auth with ``username`` and ``password``, or OAuth client credentials."""
        unknown = [t for t in tables if t not in SERVICENOW_TABLES]
        if not tables or unknown:
            raise ValueError(f"ServiceNow tables must be some of {', '.join(SERVICENOW_TABLES)}")
        self._tables = tuple(tables)
        auth: httpx.Auth | OAuthClient
        if oauth is not None:
            auth = oauth
        elif username is not None and password is not None:
            auth = httpx.BasicAuth(username.get_secret_value(), password.get_secret_value())
        else:
            raise ValueError("ServiceNow needs a username and password, or an OAuth client")
        self._http = TicketHttp(
            self.name, instance_url, auth, timeout_s=timeout_s, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def find(self, number: str) -> Ticket | None:
        """The incident or requested item with this number, None when ServiceNow has none."""
        if not _NUMBER.fullmatch(number):
            return None  # it could not be a number ServiceNow holds; never put it in a query
        table = servicenow_table(number, self._tables)
        if table is None:
            return None  # a prefix of no table the policy reads: looked up nowhere
        params = {
            "sysparm_query": f"number={number}",
            "sysparm_fields": ",".join(fields_of(table)),
            "sysparm_limit": "1",
            "sysparm_display_value": "false",
            "sysparm_exclude_reference_link": "true",
        }
        path = f"/api/now/table/{table}"
        response = await self._http.call("GET", path, "ticket_lookup", params=params)
        if response.status_code == 404 and _no_record(response):
            return None  # older releases answer a query with no match this way
        refuse_unless(response, 200)
        try:
            rows = response.json()["result"]
            if not isinstance(rows, list):
                raise TypeError("result is not a list")
            return _ticket(rows[0], table) if rows else None
        except (ValueError, KeyError, TypeError, IndexError, ValidationError) as exc:
            what = type(exc).__name__
            raise TicketSystemDown(f"an answer it does not document ({what})") from None

    async def add_note(self, ticket: Ticket, text: str) -> None:
        """A work note: the incident's internal journal, not the caller-visible comments."""
        await self._update(ticket, {"work_notes": text}, "ticket_note")

    async def set_state(self, ticket: Ticket, state: str) -> None:
        await self._update(ticket, {"state": state}, "ticket_state")

    async def check(self) -> list[str]:
        """Read one record's number per table (read-only): proves the URL, credentials and
        read ACLs."""
        lines = []
        for table in self._tables:
            params = {"sysparm_fields": "number", "sysparm_limit": "1"}
            path = f"/api/now/table/{table}"
            response = await self._http.call("GET", path, "ticket_check", params=params)
            refuse_unless(response, 200)
            lines.append(f"{table} table readable with these credentials")
        return [*lines, "work_notes write-back not tried (this check changes nothing)"]

    async def _update(self, ticket: Ticket, body: dict[str, str], what: str) -> None:
        table = ticket.table or "incident"
        if not _SYS_ID.fullmatch(ticket.ref) or table not in self._tables:
            raise TicketSystemDown("the record's sys_id or table is unknown")
        path = f"/api/now/table/{table}/{ticket.ref}"
        response = await self._http.call("PATCH", path, what, json=body)
        refuse_unless(response, 200)


def _no_record(response: httpx.Response) -> bool:
    try:
        error = response.json().get("error", {})
        return "no record" in str(error.get("message", "")).lower()
    except (ValueError, AttributeError):
        return False


def _ticket(row: dict[str, Any], table: str) -> Ticket:
    opened = str(row.get("opened_at") or "")
    caller = CALLER[table]

    def text(name: str) -> str:
        return str(row.get(name) or "")

    return Ticket(
        number=str(row["number"]),
        state=str(row["state"]),
        opened_at=datetime.strptime(opened, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        if opened
        else None,
        caller_email=text(f"{caller}.email"),
        caller_user_name=text(f"{caller}.user_name"),
        caller_name=text(f"{caller}.name"),
        assigned_to_email=text("assigned_to.email"),
        assigned_to_user_name=text("assigned_to.user_name"),
        assignment_group=text("assignment_group.name"),
        short_description=text("short_description"),
        ref=text("sys_id"),
        table=table,
    )
