"""ServiceNow incidents through the Table API (basic auth), read before a request opens.

``GET /api/now/table/incident?sysparm_query=number=<n>&sysparm_fields=...`` with the caller
dot-walked (``caller_id.email``, ``caller_id.user_name``) and raw values
(``sysparm_display_value=false``: ``state`` as its number, ``opened_at`` in UTC as
``YYYY-MM-DD hh:mm:ss``). Logs carry the status only: never the credentials or the query.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from pydantic import SecretStr, ValidationError

from app.domain.tickets import Ticket

log = structlog.get_logger(__name__)

FIELDS = ("sys_id", "number", "state", "opened_at", "caller_id.email", "caller_id.user_name")
_NUMBER = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A ticket number that cannot change the encoded query (no ``^``, ``=``, ``,``...)."""


class TicketSystemDown(Exception):
    """ServiceNow did not give a documented answer; the message is safe to log."""


class ServiceNowTickets:
    """The ``TicketSystem`` port on a ServiceNow instance's ``incident`` table."""

    name = "ServiceNow"

    def __init__(
        self,
        instance_url: str,
        username: SecretStr,
        password: SecretStr,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=instance_url.rstrip("/"),
            auth=httpx.BasicAuth(username.get_secret_value(), password.get_secret_value()),
            timeout=timeout_s,
            headers={"Accept": "application/json"},
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def find(self, number: str) -> Ticket | None:
        """The incident with this number, None when ServiceNow has none."""
        if not _NUMBER.fullmatch(number):
            return None  # it could not be a number ServiceNow holds; never put it in a query
        params = {
            "sysparm_query": f"number={number}",
            "sysparm_fields": ",".join(FIELDS),
            "sysparm_limit": "1",
            "sysparm_display_value": "false",
            "sysparm_exclude_reference_link": "true",
        }
        try:
            response = await self._client.get("/api/now/table/incident", params=params)
        except httpx.HTTPError as exc:
            log.warning("ticket_system_unreachable", system=self.name, error=type(exc).__name__)
            raise TicketSystemDown(f"no answer ({type(exc).__name__})") from None
        log.info("ticket_lookup", system=self.name, status=response.status_code)
        if response.status_code == 404 and _no_record(response):
            return None  # older releases answer a query with no match this way
        if response.status_code in (401, 403):
            raise TicketSystemDown(f"credentials refused ({response.status_code})")
        if response.status_code != 200:
            raise TicketSystemDown(f"status {response.status_code}")
        try:
            rows = response.json()["result"]
            if not isinstance(rows, list):
                raise TypeError("result is not a list")
            return _ticket(rows[0]) if rows else None
        except (ValueError, KeyError, TypeError, IndexError, ValidationError) as exc:
            what = type(exc).__name__
            raise TicketSystemDown(f"an answer it does not document ({what})") from None


def _no_record(response: httpx.Response) -> bool:
    try:
        error = response.json().get("error", {})
        return "no record" in str(error.get("message", "")).lower()
    except (ValueError, AttributeError):
        return False


def _ticket(row: dict[str, Any]) -> Ticket:
    opened = str(row.get("opened_at") or "")
    return Ticket(
        number=str(row["number"]),
        state=str(row["state"]),
        opened_at=datetime.strptime(opened, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        if opened
        else None,
        caller_email=str(row.get("caller_id.email") or ""),
        caller_user_name=str(row.get("caller_id.user_name") or ""),
    )
