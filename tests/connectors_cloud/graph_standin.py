"""A local Microsoft Graph v1.0 and Microsoft login endpoint that answers as Microsoft documents.

Every request is recorded and checked against the documented shape of the operation it calls
(method, path, the query options the page lists, the JSON body's properties and their types,
the bearer token). A request that fits no documented operation is a *violation*: the stand-in
answers 400 like Graph does and the test fixture fails the test. Faults (errors, 429 with
Retry-After, no answer at all) are injected per operation.

The shapes come from the Graph v1.0 reference pages (microsoftgraph/microsoft-graph-docs-contrib,
api-reference/v1.0/api/...): authentication-post-temporaryaccesspassmethods,
authentication-list-methods, <kind>authenticationmethod-delete,
authentication-delete-externalauthenticationmethods, authenticationmethod-resetpassword,
longrunningoperation-get, user-update (passwordProfile), user-revokesigninsessions, user-list,
user-get, user-list-transitivememberof, group-list, group-list-transitivemembers (cast to
microsoft.graph.user); the token request from "Microsoft identity platform and
the OAuth 2.0 client credentials flow" (shared secret).
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.connectors_cloud.local_server import LocalStandIn

GRAPH_SCOPE = "https://graph.microsoft.com/.default"

# ---- documented request shapes --------------------------------------------------------------

BodySpec = Mapping[str, Any]
"""A JSON object's documented properties: name -> type (bool, int, str) or a nested BodySpec."""

TAP_BODY: BodySpec = {"startDateTime": str, "lifetimeInMinutes": int, "isUsableOnce": bool}
USER_PASSWORD_PROFILE_BODY: BodySpec = {
    "passwordProfile": {
        "forceChangePasswordNextSignIn": bool,
        "forceChangePasswordNextSignInWithMfa": bool,
        "password": str,
    }
}
RESET_PASSWORD_BODY: BodySpec = {"newPassword": str}

USER_PROPERTIES = frozenset(
    {
        "id",
        "displayName",
        "mail",
        "userPrincipalName",
        "accountEnabled",
        "userType",
        "givenName",
        "surname",
        "jobTitle",
        "otherMails",
        "proxyAddresses",
        "createdDateTime",
        "department",
        "mobilePhone",
        "businessPhones",
    }
)
GROUP_PROPERTIES = frozenset(
    {
        "id",
        "displayName",
        "description",
        "mail",
        "mailEnabled",
        "mailNickname",
        "securityEnabled",
        "groupTypes",
        "createdDateTime",
    }
)
_ODATA_LIST = frozenset({"$filter", "$select", "$top", "$count", "$orderby", "$search"})
_OBJECT_ID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_METHOD_COLLECTIONS = {
    "emailMethods": "#microsoft.graph.emailAuthenticationMethod",
    "fido2Methods": "#microsoft.graph.fido2AuthenticationMethod",
    "microsoftAuthenticatorMethods": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
    "softwareOathMethods": "#microsoft.graph.softwareOathAuthenticationMethod",
    "hardwareOathMethods": "#microsoft.graph.hardwareOathAuthenticationMethod",
    "temporaryAccessPassMethods": "#microsoft.graph.temporaryAccessPassAuthenticationMethod",
    "windowsHelloForBusinessMethods": (
        "#microsoft.graph.windowsHelloForBusinessAuthenticationMethod"
    ),
    "platformCredentialMethods": "#microsoft.graph.platformCredentialAuthenticationMethod",
    "phoneMethods": "#microsoft.graph.phoneAuthenticationMethod",
}
PASSWORD_METHOD_ID = "28c10230-6103-485e-b985-444c60001490"  # Graph's well-known password id
ALTERNATE_MOBILE = "b6332ec1-7057-4abe-9331-3d72feddfe41"
MOBILE = "3179e48a-750b-4051-897c-87b9720928f7"


@dataclass(frozen=True)
class Operation:
    """One documented Graph operation: how to call it and what the stand-in does."""

    name: str
    method: str
    path: re.Pattern[str]
    query: frozenset[str]
    body: BodySpec | None
    handler: str


def _op(
    name: str,
    method: str,
    path: str,
    handler: str,
    query: frozenset[str] = frozenset(),
    body: BodySpec | None = None,
) -> Operation:
    return Operation(name, method, re.compile(f"^/v1.0{path}$"), query, body, handler)


_USER = r"/users/(?P<user>[^/]+)"
_GROUP = r"/groups/(?P<group>[^/]+)"
OPERATIONS = (
    _op("List users", "GET", "/users", "list_users", _ODATA_LIST | {"$skiptoken"}),
    _op("List groups", "GET", "/groups", "list_groups", _ODATA_LIST | {"$expand", "$skiptoken"}),
    _op(
        "List group transitive members (cast to user)",
        "GET",
        f"{_GROUP}/transitiveMembers/microsoft\\.graph\\.user",
        "transitive_users",
        _ODATA_LIST | {"$skiptoken"},
    ),
    _op("Get user", "GET", _USER, "get_user", frozenset({"$select", "$expand"})),
    _op("Update user", "PATCH", _USER, "update_user", body=USER_PASSWORD_PROFILE_BODY),
    _op(
        "List a user's memberships (direct and transitive)",
        "GET",
        f"{_USER}/transitiveMemberOf",
        "transitive_member_of",
        _ODATA_LIST | {"$skiptoken"},
    ),
    _op("user: revokeSignInSessions", "POST", f"{_USER}/revokeSignInSessions", "revoke"),
    _op(
        "Create temporaryAccessPassMethod",
        "POST",
        f"{_USER}/authentication/temporaryAccessPassMethods",
        "create_tap",
        body=TAP_BODY,
    ),
    _op("List methods", "GET", f"{_USER}/authentication/methods", "list_methods"),
    _op(
        "List passwordMethods",
        "GET",
        f"{_USER}/authentication/passwordMethods",
        "list_password_methods",
    ),
    _op(
        "authenticationMethod: resetPassword",
        "POST",
        f"{_USER}/authentication/methods/(?P<method>[^/]+)/resetPassword",
        "reset_password",
        body=RESET_PASSWORD_BODY,
    ),
    _op(
        "Get authentication operation",
        "GET",
        f"{_USER}/authentication/operations/(?P<operation>[^/]+)",
        "get_operation",
        frozenset({"aadgdc", "aadgsu"}),
    ),
    _op(
        "Delete externalAuthenticationMethod",
        "DELETE",
        f"{_USER}/authentication/externalAuthenticationMethods/(?P<method>[^/]+)/\\$ref",
        "delete_method",
    ),
    *(
        _op(
            f"Delete {kind.removeprefix('#microsoft.graph.')}",
            "DELETE",
            f"{_USER}/authentication/(?P<collection>{collection})/(?P<method>[^/]+)",
            "delete_method",
        )
        for collection, kind in _METHOD_COLLECTIONS.items()
    ),
)


def body_problems(value: Any, spec: BodySpec, where: str = "body") -> list[str]:
    """What in a JSON body is not in the documented shape (unknown property, wrong type)."""
    if not isinstance(value, dict):
        return [f"{where} must be a JSON object"]
    problems = []
    for key, item in value.items():
        expected = spec.get(key)
        if expected is None:
            problems.append(f"{where}: property {key!r} is not documented for this operation")
        elif isinstance(expected, Mapping):
            problems.extend(body_problems(item, expected, f"{where}.{key}"))
        elif expected is int and (isinstance(item, bool) or not isinstance(item, int)):
            problems.append(f"{where}.{key} must be an Int32")
        elif expected is not int and not isinstance(item, expected):
            problems.append(f"{where}.{key} must be a {expected.__name__}")
    return problems


# ---- the directory the stand-in holds -----------------------------------------------------


@dataclass
class GraphUser:
    id: str
    display_name: str
    upn: str
    mail: str | None = None
    enabled: bool = True
    user_type: str = "Member"
    mobile_phone: str | None = None
    """``mobilePhone``: free text, as whoever set it typed it (null when unset)."""
    member_of: list[dict[str, Any]] = field(default_factory=list)
    methods: list[dict[str, Any]] = field(default_factory=list)
    password: str | None = None
    force_change: bool = False
    sessions_revoked: int = 0

    def resource(self, select: list[str] | None) -> dict[str, Any]:
        full: dict[str, Any] = {
            "id": self.id,
            "displayName": self.display_name,
            "mail": self.mail,
            "userPrincipalName": self.upn,
            "accountEnabled": self.enabled,
            "userType": self.user_type,
            "mobilePhone": self.mobile_phone,
            "businessPhones": [],
        }
        if not select:
            return full
        return {key: full.get(key) for key in ["id", *select] if key in full}


@dataclass
class GraphGroup:
    """A group and its direct members: user ids or the object ids of nested groups."""

    resource: dict[str, Any]
    members: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.resource["id"])


def group(name: str, group_id: str | None = None) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.group",
        "id": group_id or str(uuid.uuid4()),
        "displayName": name,
        "securityEnabled": True,
        "mailEnabled": False,
    }


def directory_role(name: str) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.directoryRole",
        "id": str(uuid.uuid4()),
        "displayName": name,
        "roleTemplateId": str(uuid.uuid4()),
    }


def method(kind: str, method_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "@odata.type": f"#microsoft.graph.{kind}",
        "id": method_id or str(uuid.uuid4()),
        **extra,
    }


# ---- recording and faults -----------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str
    authorization: str
    operation: str = ""


@dataclass
class Fault:
    """Answer the next ``times`` matching calls with this instead (or never, when ``hang``)."""

    method: str
    path: re.Pattern[str]
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    hang: bool = False

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and method == self.method and bool(self.path.search(path))


def graph_error(status: int, code: str, message: str) -> web.Response:
    """Graph's documented error body: {"error": {"code", "message", "innerError"}}."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": now, "request-id": str(uuid.uuid4())},
        }
    }
    return web.json_response(body, status=status)


_EQ = re.compile(r"(\w+) eq '((?:[^']|'')*)'")
_STARTSWITH = re.compile(r"startswith\((\w+),\s*'((?:[^']|'')*)'\)")
_OR = re.compile(r"\s+or\s+")
_FILTER_FIELDS = {"mail": "mail", "userPrincipalName": "upn", "displayName": "display_name"}


def parse_filter(text: str) -> list[tuple[str, str, str]] | None:
    """``a eq 'x' or startswith(b,'y')`` as [(op, field, value)]; None when not that shape."""
    clauses: list[tuple[str, str, str]] = []
    position = 0
    while True:
        for op, pattern in (("eq", _EQ), ("startswith", _STARTSWITH)):
            found = pattern.match(text, position)
            if found:
                clauses.append((op, found.group(1), found.group(2).replace("''", "'")))
                position = found.end()
                break
        else:
            return None
        if position == len(text):
            return clauses
        separator = _OR.match(text, position)
        if not separator:
            return None
        position = separator.end()


class GraphStandIn(LocalStandIn):
    """Graph v1.0 under ``/v1.0`` and the login endpoint under ``/{tenant}/oauth2/v2.0/token``."""

    def __init__(self, tenant: str, client_id: str, client_secret: str) -> None:
        super().__init__()
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.users: dict[str, GraphUser] = {}
        self.groups: dict[str, GraphGroup] = {}
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.faults: list[Fault] = []
        self.tokens: set[str] = set()
        self.tokens_issued = 0
        self.page_size = 100
        self.min_password_length = 8
        self.operation_statuses: list[str] = ["running", "succeeded"]
        self.operation_status_detail = ""
        self.operations: dict[str, list[str]] = {}
        self.operation_location_base: str | None = None
        """Where resetPassword's Location points; None: this stand-in's own Graph URL."""
        self.passes: list[str] = []

    @property
    def graph_url(self) -> str:
        return f"{self.origin}/v1.0"

    def add_user(self, user: GraphUser) -> GraphUser:
        self.users[user.id] = user
        return user

    def add_group(self, resource: dict[str, Any], members: list[str]) -> GraphGroup:
        """A group (``group(...)``) with these direct members (user or group object ids)."""
        added = GraphGroup(resource, list(members))
        self.groups[added.id] = added
        return added

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        self.faults.append(
            Fault(method, re.compile(path), status, body, dict(headers or {}), times)
        )

    def hang(self, method: str, path: str) -> None:
        """Take the request and never answer it (the connector's timeout must fire)."""
        self.faults.append(Fault(method, re.compile(path), hang=True, times=1_000_000))

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method)
            and (path is None or re.search(path, r.path))
            and r.operation != "token"
        ]

    # -- dispatch -----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.path == f"/{self.tenant}/oauth2/v2.0/token":
            return await self._token(request)
        operation, match = self._operation_for(request.method, request.path)
        body = await self._json_body(request)
        recorded = Recorded(
            request.method,
            request.path,
            dict(request.query),
            body,
            request.content_type,
            request.headers.get("Authorization", ""),
            operation.name if operation else "",
        )
        self.requests.append(recorded)
        if operation is None or match is None:
            return self._violation(
                f"{request.method} {request.path} is no documented Graph v1.0 operation"
            )
        problems = self._shape_problems(operation, request, body)
        if problems:
            return self._violation(f"{operation.name}: " + "; ".join(problems))
        if recorded.authorization.removeprefix("Bearer ") not in self.tokens:
            return graph_error(
                401, "InvalidAuthenticationToken", "Access token is empty or not valid."
            )
        for fault in self.faults:
            if fault.matches(request.method, request.path):
                fault.times -= 1
                if fault.hang:
                    await self._release.wait()
                    return web.Response(status=503)
                if fault.body is None:
                    return web.Response(status=fault.status, headers=fault.headers)
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        handler: Callable[..., Any] = getattr(self, f"_{operation.handler}")
        if operation.handler in ("list_users", "list_groups"):
            return handler(request)  # type: ignore[no-any-return]
        if "group" in match.groupdict():
            return self._for_group(request, match.group("group"), handler)
        user = self.users.get(match.group("user"))
        if user is None:
            user = next((u for u in self.users.values() if u.upn == match.group("user")), None)
        if user is None:
            who = match.group("user")
            return graph_error(
                404,
                "Request_ResourceNotFound",
                f"Resource '{who}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )
        return await handler(request, user, match, body)  # type: ignore[no-any-return]

    def _for_group(
        self, request: web.Request, group_id: str, handler: Callable[..., Any]
    ) -> web.Response:
        if not _OBJECT_ID.fullmatch(group_id):
            self.violations.append(f"{group_id!r} is no object id: Graph answers 400")
            return graph_error(
                400, "Request_BadRequest", f"Invalid object identifier '{group_id}'."
            )
        found = self.groups.get(group_id)
        if found is None:
            return graph_error(
                404,
                "Request_ResourceNotFound",
                f"Resource '{group_id}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )
        return handler(request, found)  # type: ignore[no-any-return]

    def _operation_for(
        self, method: str, path: str
    ) -> tuple[Operation | None, re.Match[str] | None]:
        for operation in OPERATIONS:
            found = operation.path.match(path)
            if found and operation.method == method:
                return operation, found
        return None, None

    async def _json_body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return await request.json()
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _shape_problems(self, operation: Operation, request: web.Request, body: Any) -> list[str]:
        problems = [
            f"query option {key!r} is not documented for this operation"
            for key in request.query
            if key not in operation.query
        ]
        if operation.body is None:
            if body is not None:
                problems.append("this operation takes no request body")
        else:
            if request.content_type != "application/json":
                problems.append("Content-Type must be application/json")
            problems.extend(body_problems(body, operation.body))
        return problems

    def _violation(self, message: str) -> web.Response:
        self.violations.append(message)
        return graph_error(400, "BadRequest", message)

    # -- the login service ------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post()) if request.method == "POST" else {}
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                {k: str(v) for k, v in form.items()},
                request.content_type,
                request.headers.get("Authorization", ""),
                "token",
            )
        )
        expected = {"client_id", "scope", "client_secret", "grant_type"}
        if (
            request.method != "POST"
            or request.content_type != "application/x-www-form-urlencoded"
            or set(form) != expected
        ):
            self.violations.append(
                f"token request: POST form with exactly {sorted(expected)} expected, got "
                f"{request.method} {request.content_type} {sorted(form)}"
            )
            return _login_error(400, "invalid_request", "AADSTS900144: malformed request.")
        for fault in self.faults:
            if fault.matches("POST", request.path):
                fault.times -= 1
                if fault.hang:
                    await self._release.wait()
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        if form["grant_type"] != "client_credentials" or form["scope"] != GRAPH_SCOPE:
            self.violations.append(f"token request: grant {form['grant_type']} {form['scope']}")
            return _login_error(400, "invalid_scope", "AADSTS70011: invalid scope.")
        if form["client_id"] != self.client_id:
            return _login_error(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{form['client_id']}' was not "
                "found in the directory.",
            )
        if form["client_secret"] != self.client_secret:
            return _login_error(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                "in the request is the client secret value, not the client secret ID.",
            )
        token = secrets.token_urlsafe(32)
        self.tokens.add(token)
        self.tokens_issued += 1
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            }
        )

    # -- users and groups ---------------------------------------------------------------------

    def _select(self, request: web.Request) -> list[str] | web.Response | None:
        select = request.query.get("$select")
        if select is None:
            return None
        fields = [f.strip() for f in select.split(",")]
        for name in fields:
            if name not in USER_PROPERTIES:
                return graph_error(
                    400,
                    "Request_BadRequest",
                    f"Could not find a property named '{name}' on type 'microsoft.graph.user'.",
                )
        return fields

    def _list_users(self, request: web.Request) -> web.Response:
        select = self._select(request)
        if isinstance(select, web.Response):
            return select
        users = list(self.users.values())
        text = request.query.get("$filter")
        if text is not None:
            clauses = parse_filter(text)
            if clauses is None or any(f not in _FILTER_FIELDS for _, f, _ in clauses):
                self.violations.append(f"List users: unsupported $filter {text!r}")
                return graph_error(400, "Request_UnsupportedQuery", "Unsupported Query.")
            users = [u for u in users if any(_holds(u, c) for c in clauses)]
        top = int(request.query.get("$top", "100"))
        if not 1 <= top <= 999:
            return graph_error(400, "Request_BadRequest", "Invalid page size specified.")
        return web.json_response(
            {
                "@odata.context": f"{self.graph_url}/$metadata#users",
                "value": [u.resource(select) for u in users[:top]],
            }
        )

    def _list_groups(self, request: web.Request) -> web.Response:
        """Only ``displayName eq '..'`` is served (Graph's eq ignores case, as here)."""
        select = request.query.get("$select")
        fields = [f.strip() for f in select.split(",")] if select is not None else None
        for name in fields or []:
            if name not in GROUP_PROPERTIES:
                return graph_error(
                    400,
                    "Request_BadRequest",
                    f"Could not find a property named '{name}' on type 'microsoft.graph.group'.",
                )
        text = request.query.get("$filter", "")
        clauses = parse_filter(text)
        if clauses is None or [(op, name) for op, name, _ in clauses] != [("eq", "displayName")]:
            self.violations.append(f"List groups: unsupported $filter {text!r}")
            return graph_error(400, "Request_UnsupportedQuery", "Unsupported Query.")
        wanted = clauses[0][2].lower()
        found = [
            g.resource for g in self.groups.values() if g.resource["displayName"].lower() == wanted
        ]
        return web.json_response(
            {
                "@odata.context": f"{self.graph_url}/$metadata#groups",
                "value": [
                    {k: v for k, v in r.items() if fields is None or k in ["id", *fields]}
                    for r in found
                ],
            }
        )

    def _transitive_users(self, request: web.Request, start_group: GraphGroup) -> web.Response:
        """Every user in the group or any group nested in it, once; pages of ``$top``."""
        select = self._select(request)
        if isinstance(select, web.Response):
            return select
        top = int(request.query.get("$top", "100"))
        if not 1 <= top <= 999:
            return graph_error(400, "Request_BadRequest", "Invalid page size specified.")
        users = list(self._flatten(start_group, set()))
        size = min(top, self.page_size)
        start = int(request.query.get("$skiptoken", "0"))
        body: dict[str, Any] = {
            "@odata.context": f"{self.graph_url}/$metadata#users",
            "value": [u.resource(select) for u in users[start : start + size]],
        }
        if start + size < len(users):
            query = {k: v for k, v in request.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(start + size)
            body["@odata.nextLink"] = (
                f"{self.graph_url}/groups/{start_group.id}/transitiveMembers/microsoft.graph.user"
                f"?{urlencode(query)}"
            )
        return web.json_response(body)

    def _flatten(self, start: GraphGroup, seen: set[str]) -> Iterator[GraphUser]:
        for member in start.members:
            if member in seen:
                continue
            seen.add(member)
            if member in self.users:
                yield self.users[member]
            elif member in self.groups:
                yield from self._flatten(self.groups[member], seen)

    async def _get_user(self, request: web.Request, user: GraphUser, *_: Any) -> web.Response:
        select = self._select(request)
        if isinstance(select, web.Response):
            return select
        return web.json_response(user.resource(select))

    async def _transitive_member_of(
        self, request: web.Request, user: GraphUser, *_: Any
    ) -> web.Response:
        start = int(request.query.get("$skiptoken", "0"))
        page = user.member_of[start : start + self.page_size]
        body: dict[str, Any] = {
            "@odata.context": f"{self.graph_url}/$metadata#directoryObjects",
            "value": page,
        }
        if start + self.page_size < len(user.member_of):
            body["@odata.nextLink"] = (
                f"{self.graph_url}/users/{user.id}/transitiveMemberOf"
                f"?$skiptoken={start + self.page_size}"
            )
        return web.json_response(body)

    async def _update_user(
        self, request: web.Request, user: GraphUser, _match: Any, body: Any
    ) -> web.Response:
        profile = body.get("passwordProfile") or {}
        password = profile.get("password")
        if password is not None:
            if not _complex_enough(password, self.min_password_length):
                return graph_error(
                    400,
                    "Request_BadRequest",
                    "The specified password does not comply with password complexity "
                    "requirements. Please provide a different password.",
                )
            user.password = password
        user.force_change = bool(profile.get("forceChangePasswordNextSignIn", False))
        return web.Response(status=204)

    async def _revoke(self, request: web.Request, user: GraphUser, *_: Any) -> web.Response:
        user.sessions_revoked += 1
        return web.json_response(
            {"@odata.context": f"{self.graph_url}/$metadata#Edm.Boolean", "value": True}
        )

    # -- authentication methods ----------------------------------------------------------------

    async def _create_tap(
        self, request: web.Request, user: GraphUser, _match: Any, body: Any
    ) -> web.Response:
        lifetime = body.get("lifetimeInMinutes", 60)
        if not 10 <= lifetime <= 43200:
            return graph_error(
                400,
                "badRequest",
                "lifetimeInMinutes must be between 10 and 43200 minutes.",
            )
        user.methods = [
            m
            for m in user.methods
            if m["@odata.type"] != "#microsoft.graph.temporaryAccessPassAuthenticationMethod"
        ]
        alphabet = string.ascii_letters + string.digits + "+-=%$"
        tap = "".join(secrets.choice(alphabet) for _ in range(8))
        self.passes.append(tap)
        created = method(
            "temporaryAccessPassAuthenticationMethod",
            createdDateTime=datetime.now(UTC).isoformat(),
            lifetimeInMinutes=lifetime,
            isUsableOnce=body.get("isUsableOnce", False),
            isUsable=True,
            methodUsabilityReason="EnabledByPolicy",
        )
        user.methods.append(created)
        return web.json_response({**created, "temporaryAccessPass": tap}, status=201)

    async def _list_methods(self, request: web.Request, user: GraphUser, *_: Any) -> web.Response:
        return web.json_response(
            {
                "@odata.context": f"{self.graph_url}/$metadata#authenticationMethods",
                "value": user.methods,
            }
        )

    async def _list_password_methods(
        self, request: web.Request, user: GraphUser, *_: Any
    ) -> web.Response:
        kind = "#microsoft.graph.passwordAuthenticationMethod"
        return web.json_response({"value": [m for m in user.methods if m["@odata.type"] == kind]})

    async def _delete_method(
        self, request: web.Request, user: GraphUser, match: re.Match[str], _body: Any
    ) -> web.Response:
        collection = match.groupdict().get("collection")
        kind = (
            _METHOD_COLLECTIONS[collection]
            if collection
            else "#microsoft.graph.externalAuthenticationMethod"
        )
        target = next(
            (
                m
                for m in user.methods
                if m["id"] == match.group("method") and m["@odata.type"] == kind
            ),
            None,
        )
        if target is None:
            return graph_error(404, "itemNotFound", "The requested resource was not found.")
        if target["id"] == MOBILE and any(m["id"] == ALTERNATE_MOBILE for m in user.methods):
            return graph_error(
                400,
                "badRequest",
                "A user can't have an alternateMobile number without a mobile number.",
            )
        user.methods.remove(target)
        return web.Response(status=204)

    async def _reset_password(
        self, request: web.Request, user: GraphUser, match: re.Match[str], body: Any
    ) -> web.Response:
        if match.group("method") not in {m["id"] for m in user.methods}:
            return graph_error(404, "itemNotFound", "The requested resource was not found.")
        if not _complex_enough(body.get("newPassword", ""), self.min_password_length):
            return graph_error(
                400,
                "badRequest",
                "The password does not meet the tenant's password requirements.",
            )
        user.password = body["newPassword"]
        user.force_change = True
        operation = str(uuid.uuid4())
        self.operations[operation] = list(self.operation_statuses)
        base = self.operation_location_base or self.graph_url
        location = (
            f"{base}/users/{user.id}/authentication/operations/{operation}"
            "?aadgdc=DUB02P&aadgsu=ssprprod-a"
        )
        return web.json_response({}, status=202, headers={"Location": location, "Retry-After": "1"})

    async def _get_operation(
        self, request: web.Request, user: GraphUser, match: re.Match[str], _body: Any
    ) -> web.Response:
        statuses = self.operations.get(match.group("operation"))
        if statuses is None:
            return graph_error(404, "itemNotFound", "The requested resource was not found.")
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        now = datetime.now(UTC).isoformat()
        body = {
            "id": match.group("operation"),
            "status": status,
            "createdDateTime": now,
            "lastActionDateTime": now,
        }
        if status == "failed":
            body["statusDetail"] = self.operation_status_detail
        return web.json_response(body)


def _holds(user: GraphUser, clause: tuple[str, str, str]) -> bool:
    op, name, value = clause
    actual = str(getattr(user, _FILTER_FIELDS[name]) or "").lower()
    return actual == value.lower() if op == "eq" else actual.startswith(value.lower())


def _complex_enough(password: str, min_length: int) -> bool:
    """Entra's rule: long enough, and three of lower, upper, digit, symbol."""
    classes = [
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    ]
    return len(password) >= min_length and sum(classes) >= 3


def _login_error(status: int, error: str, description: str) -> web.Response:
    """The login service's error body (RFC 6749 section 5.2 plus Microsoft's fields)."""
    return web.json_response(
        {
            "error": error,
            "error_description": f"{description}\r\nTrace ID: {uuid.uuid4()}\r\n"
            f"Correlation ID: {uuid.uuid4()}\r\nTimestamp: {datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}",
            "error_codes": [int(re.sub(r"\D", "", description.split(":")[0]) or 0)],
            "timestamp": f"{datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}",
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
        status=status,
    )
