"""A local ServiceNow Table API for the ``incident`` table, answering as ServiceNow documents.

It checks what twokey sends against the published shape (basic auth, ``sysparm_query`` of
``number=<n>``, the fields asked for, raw values) and records anything else as a problem, so a
test fails if the adapter drifts from the real API.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

USER = "twokey.api"
PASSWORD = "s3cret-Pa55word!"
_QUERY = re.compile(r"number=([A-Za-z0-9_-]+)")
_NEEDED = {"number", "state", "opened_at", "caller_id.email", "caller_id.user_name"}


def opened(seconds_ago: float) -> str:
    """``opened_at`` as the Table API gives raw values: UTC, ``YYYY-MM-DD hh:mm:ss``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - seconds_ago))


@dataclass
class ServiceNowStandIn:
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    fail_with: int | None = None
    """Answer every request with this status (an instance in trouble)."""

    def add(
        self,
        number: str,
        *,
        state: str = "2",
        age_s: float = 600,
        caller_email: str = "alice@example.com",
        caller_user_name: str = "alice",
    ) -> None:
        self.incidents[number] = {
            "sys_id": f"{len(self.incidents) + 1:032x}",
            "number": number,
            "state": state,
            "opened_at": opened(age_s),
            "caller_id.email": caller_email,
            "caller_id.user_name": caller_user_name,
            "assigned_to": "",
            "assignment_group": "",
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/now/table/incident", self._list)
        return app

    async def _list(self, request: web.Request) -> web.Response:
        if self.fail_with is not None:
            return _error(self.fail_with, "Internal server error", "stand-in told to fail")
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _error(401, "User Not Authenticated", "Required to provide Auth information")
        params = dict(request.query)
        self.queries.append(params)
        match = _QUERY.fullmatch(params.get("sysparm_query", ""))
        fields = set(params.get("sysparm_fields", "").split(","))
        if match is None:
            self.problems.append(f"sysparm_query is not number=<n>: {params}")
        if not _NEEDED <= fields:
            self.problems.append(f"sysparm_fields lacks {sorted(_NEEDED - fields)}")
        if params.get("sysparm_display_value", "false") != "false":
            self.problems.append("display values asked for: state and opened_at must be raw")
        if request.headers.get("Accept") != "application/json":
            self.problems.append("no Accept: application/json")
        row = self.incidents.get(match.group(1)) if match else None
        result = [] if row is None else [{k: v for k, v in row.items() if k in fields}]
        return web.json_response({"result": result})


def _error(status: int, message: str, detail: str) -> web.Response:
    body = {"error": {"message": message, "detail": detail}, "status": "failure"}
    return web.json_response(body, status=status)
