"""A local ServiceNow Table API for the ``incident`` and ``sc_req_item`` tables, answering as
ServiceNow documents.

It checks what twokey sends against the published shape (basic auth, or a bearer token from
``POST /oauth_token.do`` with a form-encoded client credentials grant; ``sysparm_query`` of
``number=<n>``, the fields asked for, raw values; ``PATCH /api/now/table/<table>/<sys_id>``
with a JSON body of writable fields) and records anything else as a problem, so a test fails if
the adapter drifts from the real API. A requested item names its person in ``requested_for``
(an incident in ``caller_id``); both are references to ``sys_user`` dot-walked to ``email``,
``user_name`` and ``name``. Work notes land in the record's journal, as on an instance, where a
test reads them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.token_issuer import TokenIssuer

USER = "twokey.api"
PASSWORD = "s3cret-Pa55word!"
_QUERY = re.compile(r"number=([A-Za-z0-9_-]+)")
CALLER = {"incident": "caller_id", "sc_req_item": "requested_for"}
"""Each table's reference to the person the record is for."""


def _needed(table: str) -> set[str]:
    caller = CALLER[table]
    return {
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
    }


_WRITABLE = {"work_notes", "state"}


def opened(seconds_ago: float) -> str:
    """``opened_at`` as the Table API gives raw values: UTC, ``YYYY-MM-DD hh:mm:ss``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - seconds_ago))


@dataclass
class ServiceNowStandIn:
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Requested items (``sc_req_item``, numbers RITM...)."""
    queries: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    work_notes: dict[str, list[str]] = field(default_factory=dict)
    """Incident number -> its work notes, oldest first."""
    fail_with: int | None = None
    """Answer every request with this status (an instance in trouble)."""
    fail_writes_with: int | None = None
    """Answer every PATCH with this status (reads still work)."""
    retry_after_s: int = 30
    read_delay_s: float = 0.0
    """How long each table read takes (an instance under load)."""
    oauth: TokenIssuer = field(default_factory=TokenIssuer)
    """OAuth client credentials: the tokens ``/oauth_token.do`` issued, checked on each call."""
    bearer_calls: int = 0
    """Table API calls that came with a bearer token (accepted or not)."""

    def add(
        self,
        number: str,
        *,
        state: str = "2",
        age_s: float = 600,
        caller_email: str = "alice@example.com",
        caller_user_name: str = "alice",
        assigned_to_email: str = "bob@example.com",
        assigned_to_user_name: str = "bob",
        assignment_group: str = "",
        caller_name: str = "Alice Adams",
        short_description: str = "Lost phone, needs MFA reset",
    ) -> None:
        """An incident, or a requested item when the number starts RITM."""
        table = "sc_req_item" if number.startswith("RITM") else "incident"
        caller = CALLER[table]
        rows = self.table(table)
        rows[number] = {
            "sys_id": f"{len(self.incidents) + len(self.items) + 1:032x}",
            "number": number,
            "state": state,
            "opened_at": opened(age_s),
            "short_description": short_description,
            f"{caller}.email": caller_email,
            f"{caller}.user_name": caller_user_name,
            f"{caller}.name": caller_name,
            "assigned_to.email": assigned_to_email,
            "assigned_to.user_name": assigned_to_user_name,
            "assignment_group.name": assignment_group,
        }

    def table(self, name: str) -> dict[str, dict[str, Any]]:
        return self.items if name == "sc_req_item" else self.incidents

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/now/table/{table}", self._list)
        app.router.add_patch("/api/now/table/{table}/{sys_id}", self._update)
        app.router.add_post("/oauth_token.do", self._token)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        """``POST /oauth_token.do``: form-encoded only (ServiceNow errors on JSON there)."""
        if request.content_type != "application/x-www-form-urlencoded":
            self.problems.append(f"token request is {request.content_type}, not a form")
            return web.json_response({"error": "invalid_request"}, status=400)
        form = dict(await request.post())
        if not {"grant_type", "client_id", "client_secret"} <= set(form):
            self.problems.append(f"token request lacks fields: {sorted(form)}")
        status, body = self.oauth.grant(form)
        if status == 401:  # what an instance answers to a wrong client id or secret
            body = {"error_description": "access_denied", "error": "server_error"}
        return web.json_response(body, status=status)

    def _table(self, request: web.Request) -> str | None:
        name = request.match_info["table"]
        return name if name in CALLER else None

    def _refusal(self, request: web.Request, status: int | None) -> web.Response | None:
        if status == 429:
            body = {"error": {"message": "Rate limit exceeded"}, "status": "failure"}
            headers = {"Retry-After": str(self.retry_after_s)}
            return web.json_response(body, status=429, headers=headers)
        if status is not None:
            return _error(status, "Internal server error", "stand-in told to fail")
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        given = request.headers.get("Authorization")
        if given is not None and given.startswith("Bearer "):
            self.bearer_calls += 1
            if not self.oauth.accepts(given):
                return _error(401, "User Not Authenticated", "Required to provide Auth information")
        elif given != expected:
            return _error(401, "User Not Authenticated", "Required to provide Auth information")
        if request.headers.get("Accept") != "application/json":
            self.problems.append("no Accept: application/json")
        return None

    async def _list(self, request: web.Request) -> web.Response:
        if self.read_delay_s:
            await asyncio.sleep(self.read_delay_s)
        refused = self._refusal(request, self.fail_with)
        if refused is not None:
            return refused
        table = self._table(request)
        if table is None:
            return _error(400, "Invalid table", f"table {request.match_info['table']} unknown")
        params = dict(request.query)
        self.queries.append({**params, "table": table})
        query = params.get("sysparm_query")
        match = _QUERY.fullmatch(query) if query is not None else None
        fields = set(params.get("sysparm_fields", "").split(","))
        needed = _needed(table)
        if query is not None and match is None:
            self.problems.append(f"sysparm_query is not number=<n>: {params}")
        if query is not None and not needed <= fields:
            self.problems.append(f"sysparm_fields lacks {sorted(needed - fields)}")
        if params.get("sysparm_display_value", "false") != "false":
            self.problems.append("display values asked for: state and opened_at must be raw")
        records = self.table(table)
        if query is None:  # a listing (the read-only check): the first record, if any
            rows = list(records.values())[:1]
        else:
            row = records.get(match.group(1)) if match else None
            rows = [] if row is None else [row]
        result = [{k: v for k, v in row.items() if k in fields} for row in rows]
        return web.json_response({"result": result})

    async def _update(self, request: web.Request) -> web.Response:
        refused = self._refusal(request, self.fail_with or self.fail_writes_with)
        if refused is not None:
            return refused
        table = self._table(request)
        if table is None:
            return _error(400, "Invalid table", f"table {request.match_info['table']} unknown")
        sys_id = request.match_info["sys_id"]
        row = next((r for r in self.table(table).values() if r["sys_id"] == sys_id), None)
        if row is None:
            return _error(404, "No Record found", "Record doesn't exist or ACL restricts")
        if request.content_type != "application/json":
            self.problems.append(f"PATCH body is {request.content_type}, not application/json")
        try:
            body = json.loads(await request.text())
        except ValueError:
            return _error(400, "Exception while reading request", "body is not JSON")
        if not isinstance(body, dict) or not set(body) <= _WRITABLE:
            self.problems.append(f"PATCH writes fields it should not: {body}")
            return _error(400, "Invalid field", "stand-in accepts work_notes and state")
        if "work_notes" in body:
            self.work_notes.setdefault(row["number"], []).append(str(body["work_notes"]))
        if "state" in body:
            row["state"] = str(body["state"])
        return web.json_response({"result": {"sys_id": sys_id, "number": row["number"]}})


def _error(status: int, message: str, detail: str) -> web.Response:
    body = {"error": {"message": message, "detail": detail}, "status": "failure"}
    return web.json_response(body, status=status)
