"""Jira Service Management (Jira Cloud REST v3): issues read before a request opens and before
its change runs, with twokey's internal comments written back.

- read: ``GET /rest/api/3/issue/{key}?fields=summary,status,created,reporter,assignee`` (404:
  no such issue, or one the API user may not browse: both mean "not found" to Jira);
- note: ``POST /rest/servicedeskapi/request/{key}/comment`` with ``{"body": ..., "public":
  false}``, an internal comment the customer never sees (201);
- state: ``POST /rest/api/3/issue/{key}/transitions`` with ``{"transition": {"id": ...}}`` (204);
- check: ``GET /rest/api/3/myself`` and ``GET /rest/api/3/mypermissions`` (read-only).

Basic auth with the API user's email and an API token on the site; or a service account's OAuth
2.0 client credentials (a bearer token from ``https://auth.atlassian.com/oauth/token``), the
calls then going to ``https://api.atlassian.com/ex/jira/{cloudId}/rest/...``, the same paths
under the gateway. Logs carry the status only.
"""

from __future__ import annotations

import re
from datetime import datetime

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from app.domain.tickets import Ticket
from app.tickets.common import TicketHttp, TicketSystemDown, refuse_unless
from app.tickets.oauth import OAuthClient

FIELDS = ("summary", "status", "created", "reporter", "assignee")
_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,9}-[1-9][0-9]{0,9}")
"""An issue key (PROJECT-123): nothing else ever reaches a URL path."""
PERMISSIONS = ("BROWSE_PROJECTS", "ADD_COMMENTS", "TRANSITION_ISSUES")


class _User(BaseModel):
    model_config = ConfigDict(extra="ignore")

    accountId: str = ""
    emailAddress: str = ""  # empty when the user's privacy settings hide it
    displayName: str = ""  # for the approval card only, never matched on


class _Category(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str = ""


class _Status(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    statusCategory: _Category = _Category()


class _Fields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    summary: str = ""
    status: _Status
    created: str
    reporter: _User | None = None
    assignee: _User | None = None


class _Issue(BaseModel):
    """The part of an issue's documented shape the checks read."""

    model_config = ConfigDict(extra="ignore")

    id: str
    key: str
    fields: _Fields


class JiraTickets:
    """The ``TicketSystem`` port on a Jira Service Management (Cloud) site."""

    name = "Jira Service Management"

    def __init__(
        self,
        site_url: str,
        email: SecretStr | None = None,
        api_token: SecretStr | None = None,
        *,
        oauth: OAuthClient | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Basic auth on the site with ``email`` and ``api_token``; or, with ``oauth``,
        ``site_url`` is the gateway's ``https://api.atlassian.com/ex/jira/{cloudId}`` (Atlassian
        accepts OAuth tokens only there)."""
        auth: httpx.Auth | OAuthClient
        if oauth is not None:
            auth = oauth
        elif email is not None and api_token is not None:
            auth = httpx.BasicAuth(email.get_secret_value(), api_token.get_secret_value())
        else:
            raise ValueError("Jira needs an email and API token, or an OAuth client")
        self._http = TicketHttp(self.name, site_url, auth, timeout_s=timeout_s, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def find(self, number: str) -> Ticket | None:
        """The issue with this key, None when Jira has none the API user may see."""
        if not _KEY.fullmatch(number):
            return None  # it could not be an issue key; never put it in a URL
        params = {"fields": ",".join(FIELDS)}
        response = await self._http.call(
            "GET", f"/rest/api/3/issue/{number}", "ticket_lookup", params=params
        )
        if response.status_code == 404:
            return None
        refuse_unless(response, 200)
        try:
            return _ticket(_Issue.model_validate(response.json()))
        except (ValueError, ValidationError) as exc:
            what = type(exc).__name__
            raise TicketSystemDown(f"an answer it does not document ({what})") from None

    async def add_note(self, ticket: Ticket, text: str) -> None:
        """An internal comment (``public: false``): agents see it, the customer does not."""
        body = {"body": text, "public": False}
        path = f"/rest/servicedeskapi/request/{_key(ticket)}/comment"
        refuse_unless(await self._http.call("POST", path, "ticket_note", json=body), 201)

    async def set_state(self, ticket: Ticket, state: str) -> None:
        """Jira moves an issue by transition: ``state`` is the transition's id."""
        body = {"transition": {"id": state}}
        path = f"/rest/api/3/issue/{_key(ticket)}/transitions"
        refuse_unless(await self._http.call("POST", path, "ticket_state", json=body), 204)

    async def check(self) -> list[str]:
        """Who the credentials are and what they may do, changing nothing."""
        me = await self._http.call("GET", "/rest/api/3/myself", "ticket_check")
        refuse_unless(me, 200)
        params = {"permissions": ",".join(PERMISSIONS)}
        granted = await self._http.call(
            "GET", "/rest/api/3/mypermissions", "ticket_check", params=params
        )
        refuse_unless(granted, 200)
        try:
            held = granted.json()["permissions"]
            lines = [
                f"{name}: {'yes' if held[name]['havePermission'] else 'NO'}" for name in PERMISSIONS
            ]
        except (ValueError, KeyError, TypeError) as exc:
            what = type(exc).__name__
            raise TicketSystemDown(f"an answer it does not document ({what})") from None
        return ["signed in as the API user", *lines]


def _key(ticket: Ticket) -> str:
    if not _KEY.fullmatch(ticket.number):
        raise TicketSystemDown("not an issue key")
    return ticket.number


def _ticket(issue: _Issue) -> Ticket:
    fields = issue.fields
    reporter = fields.reporter or _User()
    assignee = fields.assignee or _User()
    return Ticket(
        number=issue.key,
        state=fields.status.name,
        state_category=fields.status.statusCategory.key,
        opened_at=_created(fields.created),
        caller_email=reporter.emailAddress,
        caller_name=reporter.displayName,
        assigned_to_email=assignee.emailAddress,
        short_description=fields.summary,
        ref=issue.id,
    )


def _created(text: str) -> datetime:
    """Jira writes ``2024-05-01T10:00:00.000+0000``."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")


__all__: list[str] = ["JiraTickets"]
