"""A local Jira Cloud (REST v3) and Jira Service Management site, answering as Atlassian
documents, for the parts twokey uses.

- ``GET /rest/api/3/issue/{key}?fields=...``: the issue (id, key, fields.summary, status with
  statusCategory, created as ``2024-05-01T10:00:00.000+0000``, reporter, assignee), 404 with
  ``errorMessages`` for an issue that does not exist (or that the user may not see);
- ``POST /rest/servicedeskapi/request/{key}/comment`` ``{"body": str, "public": bool}``: 201;
- ``POST /rest/api/3/issue/{key}/transitions`` ``{"transition": {"id": str}}``: 204;
- ``GET /rest/api/3/myself``, ``GET /rest/api/3/mypermissions?permissions=...``;
- basic auth (email + API token): 401 without or with a wrong one; ``forbid`` answers 403;
  ``rate_limited`` answers 429 with ``Retry-After``;
- OAuth 2.0 for service accounts: ``POST /oauth/token`` (auth.atlassian.com's path) with a JSON
  ``{grant_type: client_credentials, client_id, client_secret}`` issues a bearer token, accepted
  only through the API gateway's ``/ex/jira/{cloudId}/rest/...`` (the same paths under it), for
  this site's cloud id; an unknown or expired token is refused with 401.

Anything twokey sends outside these shapes is recorded in ``problems`` (and refused with 400).
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.token_issuer import TokenIssuer

CLOUD_ID = "1324a887-45db-1bf4-1e99-ef0ff456d421"
GATEWAY = re.compile(r"/ex/jira/([^/]+)(/.*)")
EMAIL = "twokey-bot@example.com"
API_TOKEN = "ATATT3xFfGF0-stand-in-token"
_KEY = re.compile(r"[A-Z][A-Z0-9_]+-\d+")
_ALLOWED_FIELDS = {"summary", "status", "created", "reporter", "assignee"}
_CATEGORY = {"Open": "new", "Waiting for support": "new", "In Progress": "indeterminate"}


def created(seconds_ago: float) -> str:
    """Jira's timestamps: local ISO 8601 with milliseconds and a +hhmm offset."""
    stamp = time.gmtime(time.time() - seconds_ago)
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", stamp)


@dataclass
class JiraStandIn:
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    transitions: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    forbid: bool = False
    rate_limited: bool = False
    retry_after_s: int = 17
    oauth: TokenIssuer = field(default_factory=lambda: TokenIssuer(lifetime_s=3600))
    """Service-account tokens from ``/oauth/token`` (valid 60 minutes, as Atlassian says)."""
    gateway_calls: int = 0
    """Calls through ``/ex/jira/{cloudId}`` (accepted or not)."""
    moved: dict[str, str] = field(default_factory=dict)
    """Old issue key -> the key the issue has now."""
    permissions: dict[str, bool] = field(
        default_factory=lambda: {
            "BROWSE_PROJECTS": True,
            "ADD_COMMENTS": True,
            "TRANSITION_ISSUES": True,
        }
    )

    def move(self, old: str, new: str) -> None:
        """The issue ``old`` moved to another project: Jira answers its old key with the issue
        under its new key."""
        self.issues[new] = {**self.issues.pop(old), "key": new}
        self.moved[old] = new

    def add(
        self,
        key: str,
        *,
        status: str = "In Progress",
        age_s: float = 600,
        reporter_email: str = "alice@example.com",
        assignee_email: str | None = "bob@example.com",
    ) -> None:
        category = _CATEGORY.get(status, "done")
        self.issues[key] = {
            "id": str(10000 + len(self.issues)),
            "key": key,
            "self": f"https://example.atlassian.net/rest/api/3/issue/{10000 + len(self.issues)}",
            "fields": {
                "summary": "Lost phone, needs MFA reset",
                "status": {
                    "name": status,
                    "id": "3",
                    "statusCategory": {"id": 4, "key": category, "name": category.title()},
                },
                "created": created(age_s),
                "reporter": _user(reporter_email),
                "assignee": _user(assignee_email) if assignee_email is not None else None,
            },
        }

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        for prefix in ("", "/ex/jira/{cloud_id}"):
            app.router.add_get(f"{prefix}/rest/api/3/issue/{{key}}", self._issue)
            app.router.add_post(f"{prefix}/rest/api/3/issue/{{key}}/transitions", self._transition)
            app.router.add_post(
                f"{prefix}/rest/servicedeskapi/request/{{key}}/comment", self._comment
            )
            app.router.add_get(f"{prefix}/rest/api/3/myself", self._myself)
            app.router.add_get(f"{prefix}/rest/api/3/mypermissions", self._mypermissions)
        app.router.add_post("/oauth/token", self._token)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        """auth.atlassian.com's ``POST /oauth/token``: a JSON body, as Atlassian documents."""
        body = await self._json(request)
        if not isinstance(body, dict):
            return web.json_response({"error": "invalid_request"}, status=400)
        if not {"grant_type", "client_id", "client_secret"} <= set(body):
            self.problems.append(f"token request lacks fields: {sorted(body)}")
        status, answer = self.oauth.grant(body)
        if status == 200:
            answer["scope"] = "read:jira-work write:jira-work"
        return web.json_response(answer, status=status)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/oauth/token":
            response: web.StreamResponse = await handler(request)
            return response
        given = request.headers.get("Authorization")
        through_gateway = GATEWAY.fullmatch(request.path)
        if through_gateway is not None:
            self.gateway_calls += 1
            if through_gateway.group(1) != CLOUD_ID:
                return web.json_response({"errorMessages": ["Site not found."]}, status=404)
            if not self.oauth.accepts(given):
                return web.json_response({"code": 401, "message": "Unauthorized"}, status=401)
        elif given != "Basic " + base64.b64encode(f"{EMAIL}:{API_TOKEN}".encode()).decode():
            if given is not None and given.startswith("Bearer "):
                self.problems.append(f"{request.path}: a bearer token sent to the site itself")
            return web.json_response({"errorMessages": ["You are not authenticated."]}, status=401)
        if self.rate_limited:
            return web.json_response(
                {"errorMessages": ["Rate limit exceeded."]},
                status=429,
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.forbid:
            return web.json_response({"errorMessages": ["Forbidden."]}, status=403)
        if request.headers.get("Accept") != "application/json":
            self.problems.append(f"{request.path}: no Accept: application/json")
        response = await handler(request)
        return response

    async def _issue(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if not _KEY.fullmatch(key):
            self.problems.append(f"not an issue key in the path: {key!r}")
        asked = set(request.query.get("fields", "").split(","))
        if not asked or not asked <= _ALLOWED_FIELDS:
            self.problems.append(f"fields asked for: {sorted(asked)}")
        issue = self.issues.get(self.moved.get(key, key))
        if issue is None:
            return _not_found()
        kept = {name: value for name, value in issue["fields"].items() if name in asked}
        return web.json_response({**issue, "fields": kept})

    async def _comment(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        body = await self._json(request)
        if not isinstance(body, dict) or set(body) != {"body", "public"}:
            self.problems.append(f"comment is not {{body, public}}: {body}")
            return web.json_response({"errorMessage": "bad comment"}, status=400)
        if not isinstance(body["body"], str) or body["public"] is not False:
            self.problems.append(f"comment not an internal text comment: {body}")
        if key not in self.issues:
            return _not_found()
        self.comments.setdefault(key, []).append(body)
        return web.json_response({"id": "1", "body": body["body"], "public": False}, status=201)

    async def _transition(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        body = await self._json(request)
        transition = body.get("transition") if isinstance(body, dict) else None
        if not isinstance(transition, dict) or not isinstance(transition.get("id"), str):
            self.problems.append(f"transition is not {{transition: {{id}}}}: {body}")
            return web.json_response({"errorMessages": ["bad transition"]}, status=400)
        if key not in self.issues:
            return _not_found()
        self.transitions.setdefault(key, []).append(transition["id"])
        return web.Response(status=204)

    async def _myself(self, request: web.Request) -> web.Response:
        return web.json_response({"accountId": "5b10ac8d82e05b22cc7d4ef5", "emailAddress": EMAIL})

    async def _mypermissions(self, request: web.Request) -> web.Response:
        asked = [p for p in request.query.get("permissions", "").split(",") if p]
        if not asked:
            self.problems.append("mypermissions without permissions= (Jira requires it)")
            return web.json_response({"errorMessages": ["permissions required"]}, status=400)
        held = {
            name: {"key": name, "havePermission": self.permissions.get(name, False)}
            for name in asked
        }
        return web.json_response({"permissions": held})

    async def _json(self, request: web.Request) -> Any:
        if request.content_type != "application/json":
            self.problems.append(f"{request.path}: body is {request.content_type}")
        try:
            return json.loads(await request.text())
        except ValueError:
            self.problems.append(f"{request.path}: body is not JSON")
            return None


def _user(email: str) -> dict[str, Any]:
    return {
        "accountId": f"acct-{abs(hash(email)) % 10**8}",
        "emailAddress": email,
        "displayName": email.split("@")[0].title(),
        "active": True,
    }


def _not_found() -> web.Response:
    body = {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}
    return web.json_response(body, status=404)
