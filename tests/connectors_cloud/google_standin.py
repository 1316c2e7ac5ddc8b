"""A local Google Workspace Admin SDK (Directory API v1) and OAuth token endpoint.

Every request the connector sends is checked against Google's own discovery document for
``admin:directory_v1`` (the copy google-api-python-client ships): it must be a method of the
document (httpMethod + path template), carry its required parameters and only parameters the
method (or the API) declares, with values of the declared type and enum, a request body only
where the method takes one and then only properties of the named schema, with their types, and
a bearer token whose scopes include one the method accepts. Anything else is a *violation*:
the stand-in answers 400 and the test fixture fails the test. Responses are checked against the
method's response schema too, so the stand-in cannot drift from what Google answers.

The token endpoint verifies the service account's JWT assertion with google-auth (a different
implementation from the connector's PyJWT) the way Google documents it: RS256 signed by the
key ``kid`` names, ``iss`` the service account, ``sub`` an admin, ``aud`` the token URL,
``scope`` delegated scopes only, at most an hour long.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import googleapiclient
from aiohttp import web
from google.auth import exceptions as google_auth_exceptions
from google.auth import jwt as google_jwt

from tests.connectors_cloud.local_server import LocalStandIn

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DISCOVERY_PATH = (
    Path(googleapiclient.__file__).parent / "discovery_cache/documents/admin.directory_v1.json"
)


@cache
def discovery() -> dict[str, Any]:
    """Google's discovery document for the Directory API, as shipped with the client library."""
    document: dict[str, Any] = json.loads(DISCOVERY_PATH.read_text(encoding="utf-8"))
    assert document["name"] == "admin" and document["version"] == "directory_v1"
    return document


@dataclass(frozen=True)
class DiscoveryMethod:
    """One method of the discovery document, with its path template as a pattern."""

    id: str
    http_method: str
    path: str
    pattern: re.Pattern[str]
    literal: int
    parameters: dict[str, dict[str, Any]]
    request: str | None
    response: str | None
    scopes: frozenset[str]


def _template(path: str) -> tuple[re.Pattern[str], int]:
    """RFC 6570 level-2 path template -> pattern; `literal` counts its fixed characters."""
    pattern, literal, position = "", 0, 0
    for found in re.finditer(r"\{(\+?)([^}]+)\}", path):
        fixed = path[position : found.start()]
        pattern += re.escape(fixed)
        literal += len(fixed)
        name = found.group(2)
        pattern += f"(?P<{name}>.+)" if found.group(1) else f"(?P<{name}>[^/]+)"
        position = found.end()
    pattern += re.escape(path[position:])
    literal += len(path) - position
    return re.compile(f"^{pattern}$"), literal


@cache
def methods() -> tuple[DiscoveryMethod, ...]:
    found: list[DiscoveryMethod] = []

    def walk(resources: dict[str, Any]) -> None:
        for resource in resources.values():
            for method in resource.get("methods", {}).values():
                pattern, literal = _template(method["path"])
                found.append(
                    DiscoveryMethod(
                        id=method["id"],
                        http_method=method["httpMethod"],
                        path=method["path"],
                        pattern=pattern,
                        literal=literal,
                        parameters=method.get("parameters", {}),
                        request=(method.get("request") or {}).get("$ref"),
                        response=(method.get("response") or {}).get("$ref"),
                        scopes=frozenset(method.get("scopes", [])),
                    )
                )
            walk(resource.get("resources", {}))

    walk(discovery()["resources"])
    return tuple(found)


def method_for(http_method: str, path: str) -> tuple[DiscoveryMethod, dict[str, str]] | None:
    """The discovery method a request calls; the most literal template wins, as in routing."""
    relative = path.removeprefix(discovery()["servicePath"] or "/").lstrip("/")
    matches = [
        (m, found)
        for m in methods()
        if m.http_method == http_method and (found := m.pattern.match(relative))
    ]
    if not matches:
        return None
    method, found = max(matches, key=lambda pair: pair[0].literal)
    return method, {k: unquote(v) for k, v in found.groupdict().items()}


def parameter_problems(
    method: DiscoveryMethod, query: Any, path_values: dict[str, str]
) -> list[str]:
    """Declared, required, typed, enumerated: every parameter as the document says."""
    problems = []
    declared = {**discovery()["parameters"], **method.parameters}
    for name in set(query.keys()):
        spec = declared.get(name)
        if spec is None or spec.get("location") != "query":
            problems.append(f"query parameter {name!r} is not declared for {method.id}")
            continue
        values = query.getall(name)
        if len(values) > 1 and not spec.get("repeated"):
            problems.append(f"query parameter {name!r} is not repeated, but sent {len(values)}x")
        problems += [p for value in values for p in _value_problems(name, value, spec)]
    for name, spec in method.parameters.items():
        if spec.get("required") and name not in query and name not in path_values:
            problems.append(f"required parameter {name!r} of {method.id} is missing")
    for name, value in path_values.items():
        problems += _value_problems(name, value, method.parameters.get(name, {}))
    return problems


def _value_problems(name: str, value: str, spec: dict[str, Any]) -> list[str]:
    kind = spec.get("type")
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", value):
            return [f"{name}={value!r} is not an integer"]
        number = int(value)
        if "minimum" in spec and number < int(spec["minimum"]):
            return [f"{name}={value} is below the minimum {spec['minimum']}"]
        if "maximum" in spec and number > int(spec["maximum"]):
            return [f"{name}={value} is above the maximum {spec['maximum']}"]
    if kind == "boolean" and value not in ("true", "false"):
        return [f"{name}={value!r} is not true or false"]
    if "enum" in spec and value not in spec["enum"]:
        return [f"{name}={value!r} is not one of {spec['enum']}"]
    if spec.get("pattern") and not re.fullmatch(spec["pattern"], value):
        return [f"{name}={value!r} does not match {spec['pattern']}"]
    return []


def schema_problems(value: Any, schema: dict[str, Any], where: str, *, request: bool) -> list[str]:
    """A JSON value against a discovery schema: properties by name, types, items, $refs."""
    if "$ref" in schema:
        return schema_problems(
            value, discovery()["schemas"][schema["$ref"]], where, request=request
        )
    kind = schema.get("type")
    if kind == "any" or value is None:
        return []
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where} must be an object"]
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        problems = []
        for key, item in value.items():
            if properties is not None and key in properties:
                spec = properties[key]
                if request and spec.get("readOnly"):
                    problems.append(f"{where}.{key} is read-only (output only)")
                problems += schema_problems(item, spec, f"{where}.{key}", request=request)
            elif extra is not None:
                problems += schema_problems(item, extra, f"{where}.{key}", request=request)
            else:
                problems.append(f"{where}: {key!r} is not a property of this schema")
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where} must be an array"]
        items = schema.get("items", {})
        return [
            p
            for index, item in enumerate(value)
            for p in schema_problems(item, items, f"{where}[{index}]", request=request)
        ]
    if kind == "string":
        return [] if isinstance(value, str) else [f"{where} must be a string"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where} must be a boolean"]
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where} must be an integer"]
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where} must be a number"]
    return []


# ---- the domain the stand-in holds -----------------------------------------------------------


@dataclass
class WorkspaceUser:
    id: str
    primary_email: str
    full_name: str
    aliases: list[str] = field(default_factory=list)
    is_admin: bool = False
    is_delegated_admin: bool = False
    suspended: bool = False
    archived: bool = False
    enrolled_2sv: bool = True
    groups: list[dict[str, Any]] = field(default_factory=list)
    phones: list[dict[str, Any]] = field(default_factory=list)
    """``phones``: what an admin recorded, as UserPhone entries (value, type, primary, ...)."""
    recovery_phone: str | None = None
    """``recoveryPhone``: the one the user set themselves (E.164, as Google requires)."""
    password: str | None = None
    hash_function: str | None = None
    change_password_at_next_login: bool = False
    signed_out: int = 0
    backup_codes: list[str] = field(default_factory=list)

    def resource(self) -> dict[str, Any]:
        given, _, family = self.full_name.partition(" ")
        # the document types ``phones`` as "any"; its entries are UserPhone objects
        drift = schema_problems(
            self.phones, {"type": "array", "items": {"$ref": "UserPhone"}}, "phones", request=False
        )
        assert not drift, f"the stand-in's phones drifted: {drift}"
        optional: dict[str, Any] = {}
        if self.phones:  # Google leaves out what was never set
            optional["phones"] = [dict(phone) for phone in self.phones]
        if self.recovery_phone is not None:
            optional["recoveryPhone"] = self.recovery_phone
        return {
            "kind": "admin#directory#user",
            "id": self.id,
            "etag": f'"{uuid.uuid4().hex}"',
            "primaryEmail": self.primary_email,
            "name": {"givenName": given, "familyName": family, "fullName": self.full_name},
            "isAdmin": self.is_admin,
            "isDelegatedAdmin": self.is_delegated_admin,
            "suspended": self.suspended,
            "archived": self.archived,
            "isEnrolledIn2Sv": self.enrolled_2sv,
            "isEnforcedIn2Sv": False,
            "changePasswordAtNextLogin": self.change_password_at_next_login,
            "aliases": list(self.aliases),
            "emails": [
                {"address": self.primary_email, "primary": True},
                *({"address": alias} for alias in self.aliases),
            ],
            "customerId": "C01abc234",
            "orgUnitPath": "/",
            **optional,
        }


def workspace_group(email: str, name: str) -> dict[str, Any]:
    return {
        "kind": "admin#directory#group",
        "id": uuid.uuid4().hex[:17],
        "etag": f'"{uuid.uuid4().hex}"',
        "email": email,
        "name": name,
        "directMembersCount": "3",
        "description": "",
        "adminCreated": True,
    }


@dataclass
class WorkspaceGroup:
    """A group (``workspace_group(...)``) and its direct members: user ids, the emails of
    nested groups, an outside address, or a raw Member (e.g. type CUSTOMER)."""

    resource: dict[str, Any]
    members: list[str | dict[str, Any]] = field(default_factory=list)

    def answers_to(self, key: str) -> bool:
        return key == self.resource["id"] or key.casefold() == self.resource["email"].casefold()


@dataclass(frozen=True)
class Recorded:
    method_id: str
    http_method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str
    authorization: str


@dataclass
class Fault:
    method_id: str
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    hang: bool = False


def google_error(status: int, message: str, reason: str, state: str) -> web.Response:
    """Google's JSON error body (the Directory API's v1 error format)."""
    return web.json_response(
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}],
                "status": state,
            }
        },
        status=status,
    )


class GoogleStandIn(LocalStandIn):
    """Directory API v1 under ``/admin/directory/v1`` and the token endpoint at ``/token``."""

    def __init__(self, service_account: str, public_key_pem: str, key_id: str) -> None:
        super().__init__()
        self.service_account = service_account
        self.public_key_pem = public_key_pem
        self.key_id = key_id
        self.admins: set[str] = set()
        self.delegated_scopes: set[str] = {
            "https://www.googleapis.com/auth/admin.directory.user",
            "https://www.googleapis.com/auth/admin.directory.user.security",
            "https://www.googleapis.com/auth/admin.directory.group.readonly",
        }
        self.users: dict[str, WorkspaceUser] = {}
        self.groups: list[WorkspaceGroup] = []
        self.member_page_size = 200
        self.requests: list[Recorded] = []
        self.token_requests: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.faults: list[Fault] = []
        self.tokens: dict[str, set[str]] = {}
        self.group_page_size = 200
        self.quote_refused_passwords: int | None = None
        """Refuse every password with this status, quoting it back in the error's message (as
        a careless gateway before Google might)."""

    @property
    def token_url(self) -> str:
        return f"{self.origin}/token"

    def add_user(self, user: WorkspaceUser) -> WorkspaceUser:
        self.users[user.id] = user
        return user

    def add_group(
        self, resource: dict[str, Any], members: list[str | dict[str, Any]]
    ) -> WorkspaceGroup:
        added = WorkspaceGroup(resource, list(members))
        self.groups.append(added)
        return added

    def fail(
        self,
        method_id: str,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        self.faults.append(Fault(method_id, status, body, dict(headers or {}), times))

    def hang(self, method_id: str) -> None:
        self.faults.append(Fault(method_id, hang=True, times=1_000_000))

    def calls(self, method_id: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if method_id is None or r.method_id == method_id]

    def _find(self, key: str) -> WorkspaceUser | None:
        folded = key.casefold()
        for user in self.users.values():
            addresses = [user.primary_email, *user.aliases]
            if key == user.id or folded in (a.casefold() for a in addresses):
                return user
        return None

    # -- dispatch -----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/token":
            return await self._token(request)
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        found = method_for(request.method, request.rel_url.raw_path)
        recorded = Recorded(
            found[0].id if found else "",
            request.method,
            request.path,
            dict(request.query),
            body,
            request.content_type,
            request.headers.get("Authorization", ""),
        )
        self.requests.append(recorded)
        if found is None:
            return self._violation(
                f"{request.method} {request.path} is no method of admin:directory_v1"
            )
        method, path_values = found
        problems = parameter_problems(method, request.query, path_values)
        if method.request is None:
            if raw:
                problems.append(f"{method.id} takes no request body")
        elif request.content_type != "application/json":
            problems.append(f"{method.id} needs a JSON body (Content-Type: application/json)")
        else:
            problems += schema_problems(body, {"$ref": method.request}, "body", request=True)
        if problems:
            return self._violation(f"{method.id}: " + "; ".join(problems))
        scopes = self.tokens.get(recorded.authorization.removeprefix("Bearer "))
        if scopes is None:
            return google_error(
                401,
                "Request had invalid authentication credentials.",
                "authError",
                "UNAUTHENTICATED",
            )
        if not scopes & method.scopes:
            self.violations.append(
                f"{method.id}: token lacks every scope of {sorted(method.scopes)}"
            )
            return google_error(
                403,
                "Request had insufficient authentication scopes.",
                "insufficientPermissions",
                "PERMISSION_DENIED",
            )
        for fault in self.faults:
            if fault.method_id == method.id and fault.times > 0:
                fault.times -= 1
                if fault.hang:
                    await self._release.wait()
                    return web.Response(status=503)
                if fault.body is None:
                    return web.Response(status=fault.status, headers=fault.headers)
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        handler = getattr(self, "_" + method.id.removeprefix("directory.").replace(".", "_"), None)
        if handler is None:
            return self._violation(f"{method.id} is documented but this stand-in does not serve it")
        response: web.Response = await handler(request, path_values, body)
        if response.status == 200 and method.response is not None:
            answered = json.loads(response.body)  # type: ignore[arg-type]
            drift = schema_problems(answered, {"$ref": method.response}, "response", request=False)
            assert not drift, f"the stand-in's own answer drifted: {drift}"
        return response

    def _violation(self, message: str) -> web.Response:
        self.violations.append(message)
        return google_error(400, message, "invalid", "INVALID_ARGUMENT")

    def _not_found(self) -> web.Response:
        return google_error(404, "Resource Not Found: userKey", "notFound", "NOT_FOUND")

    # -- the token endpoint -----------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        if (
            request.method != "POST"
            or request.content_type != "application/x-www-form-urlencoded"
            or set(form) != {"grant_type", "assertion"}
            or form["grant_type"] != JWT_BEARER_GRANT
        ):
            self.violations.append(f"token request is not the JWT bearer grant: {sorted(form)}")
            return _oauth_error(400, "invalid_request", "Invalid grant_type.")
        for fault in self.faults:
            if fault.method_id == "token" and fault.times > 0:
                fault.times -= 1
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        assertion = form["assertion"]
        try:
            claims = google_jwt.decode(
                assertion, certs=self.public_key_pem, audience=self.token_url
            )
            header = google_jwt.decode_header(assertion)
        except (ValueError, google_auth_exceptions.GoogleAuthError) as error:
            self.violations.append(f"assertion rejected: {error}")
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        problems = []
        if header.get("alg") != "RS256" or header.get("kid") != self.key_id:
            problems.append(f"header {header} must be RS256 with kid {self.key_id}")
        if claims.get("iss") != self.service_account:
            problems.append(f"iss {claims.get('iss')!r} is not the service account")
        if not 0 < int(claims["exp"]) - int(claims["iat"]) <= 3600:
            problems.append("an assertion may last one hour at most")
        if problems:
            self.violations.append("assertion: " + "; ".join(problems))
            return _oauth_error(400, "invalid_grant", "Invalid JWT: " + "; ".join(problems))
        scopes = set(str(claims.get("scope", "")).split())
        known = set(discovery()["auth"]["oauth2"]["scopes"])
        if not scopes or not scopes <= known:
            self.violations.append(f"assertion asks for scopes outside the API: {scopes - known}")
        if claims.get("sub") not in self.admins or not scopes <= self.delegated_scopes:
            return _oauth_error(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client "
                "not authorized for any of the scopes requested.",
            )
        token = "ya29." + secrets.token_urlsafe(40)
        self.tokens[token] = scopes
        return web.json_response(
            {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
        )

    # -- users ----------------------------------------------------------------------------------

    async def _users_get(self, request: web.Request, path: dict[str, str], _: Any) -> web.Response:
        user = self._find(path["userKey"])
        return web.json_response(user.resource()) if user else self._not_found()

    async def _users_list(self, request: web.Request, path: dict[str, str], _: Any) -> web.Response:
        if "customer" not in request.query and "domain" not in request.query:
            self.violations.append("directory.users.list needs customer or domain")
            return google_error(400, "Bad Request", "badRequest", "INVALID_ARGUMENT")
        term = request.query.get("query", "").casefold()
        found = [
            u.resource()
            for u in self.users.values()
            if any(term in part.casefold() for part in [u.primary_email, *u.full_name.split()])
        ]
        limit = int(request.query.get("maxResults", "100"))
        return web.json_response(
            {"kind": "admin#directory#users", "etag": '"e"', "users": found[:limit]}
        )

    async def _users_update(
        self, request: web.Request, path: dict[str, str], body: dict[str, Any]
    ) -> web.Response:
        user = self._find(path["userKey"])
        if user is None:
            return self._not_found()
        if "password" in body:
            function = body.get("hashFunction")
            password = str(body["password"])
            if self.quote_refused_passwords is not None:
                status = self.quote_refused_passwords
                return google_error(status, f"Invalid Password: {password}", "invalid", "INTERNAL")
            if function not in (None, "MD5", "SHA-1", "crypt"):
                return google_error(
                    400, "Invalid Input: hashFunction", "invalid", "INVALID_ARGUMENT"
                )
            if function == "SHA-1" and not re.fullmatch(r"[0-9a-f]{40}", password):
                return google_error(400, "Invalid Password", "invalid", "INVALID_ARGUMENT")
            if function is None and not (8 <= len(password) <= 100 and password.isascii()):
                return google_error(400, "Invalid Password", "invalid", "INVALID_ARGUMENT")
            user.password, user.hash_function = password, function
        if "changePasswordAtNextLogin" in body:
            user.change_password_at_next_login = bool(body["changePasswordAtNextLogin"])
        return web.json_response(user.resource())

    async def _users_signOut(
        self, request: web.Request, path: dict[str, str], _: Any
    ) -> web.Response:
        user = self._find(path["userKey"])
        if user is None:
            return self._not_found()
        user.signed_out += 1
        return web.Response(status=204)

    # -- 2-Step Verification and backup codes -----------------------------------------------------

    async def _twoStepVerification_turnOff(
        self, request: web.Request, path: dict[str, str], _: Any
    ) -> web.Response:
        user = self._find(path["userKey"])
        if user is None:
            return self._not_found()
        if not user.enrolled_2sv:
            return google_error(
                400, "Invalid Input: user is not enrolled in 2SV", "invalid", "INVALID_ARGUMENT"
            )
        user.enrolled_2sv = False
        return web.Response(status=204)

    async def _verificationCodes_generate(
        self, request: web.Request, path: dict[str, str], _: Any
    ) -> web.Response:
        user = self._find(path["userKey"])
        if user is None:
            return self._not_found()
        user.backup_codes = [f"{secrets.randbelow(10**8):08d}" for _ in range(10)]
        return web.Response(status=204)

    async def _verificationCodes_list(
        self, request: web.Request, path: dict[str, str], _: Any
    ) -> web.Response:
        user = self._find(path["userKey"])
        if user is None:
            return self._not_found()
        items = [
            {
                "kind": "admin#directory#verificationCode",
                "etag": '"c"',
                "userId": user.id,
                "verificationCode": code,
            }
            for code in user.backup_codes
        ]
        return web.json_response(
            {"kind": "admin#directory#verificationCodesList", "etag": '"l"', "items": items}
        )

    # -- groups ---------------------------------------------------------------------------------

    async def _groups_list(
        self, request: web.Request, path: dict[str, str], _: Any
    ) -> web.Response:
        key = request.query.get("userKey")
        if key is not None and "customer" in request.query:
            self.violations.append("groups.list: userKey cannot be used with customer")
            return google_error(400, "Bad Request", "badRequest", "INVALID_ARGUMENT")
        if key is None and "query" in request.query:
            return self._groups_search(request)
        if key is None:
            self.violations.append(
                "groups.list without userKey or query: twokey only lists a user's groups or "
                "searches for one by name"
            )
            return google_error(400, "Bad Request", "badRequest", "INVALID_ARGUMENT")
        user = self._find(key)
        if user is None:
            return self._not_found()
        size = min(int(request.query.get("maxResults", "200")), self.group_page_size)
        start = int(request.query.get("pageToken", "0"))
        body: dict[str, Any] = {
            "kind": "admin#directory#groups",
            "etag": '"g"',
            "groups": user.groups[start : start + size],
        }
        if start + size < len(user.groups):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    def _groups_search(self, request: web.Request) -> web.Response:
        """``name='..'`` (quotes escaped as \\', as the search-groups guide says) or a bare
        ``name=..``; served case-insensitively, so the connector must compare exactly."""
        if "customer" not in request.query and "domain" not in request.query:
            self.violations.append("groups.list with query needs customer or domain")
            return google_error(400, "Bad Request", "badRequest", "INVALID_ARGUMENT")
        text = request.query["query"]
        found = re.fullmatch(r"name='((?:[^'\\]|\\')*)'", text) or re.fullmatch(
            r"name=([^\s']+)", text
        )
        if found is None:
            self.violations.append(f"groups.list: a query twokey should not send: {text!r}")
            return google_error(400, "Invalid Input: query", "invalid", "INVALID_ARGUMENT")
        wanted = found.group(1).replace("\\'", "'").casefold()
        groups = [g.resource for g in self.groups if g.resource["name"].casefold() == wanted]
        body: dict[str, Any] = {"kind": "admin#directory#groups", "etag": '"g"'}
        if groups:  # Google leaves ``groups`` out when none match
            body["groups"] = groups
        return web.json_response(body)

    async def _members_list(
        self, request: web.Request, path: dict[str, str], _: Any
    ) -> web.Response:
        found = next((g for g in self.groups if g.answers_to(path["groupKey"])), None)
        if found is None:
            return google_error(404, "Resource Not Found: groupKey", "notFound", "NOT_FOUND")
        derived = request.query.get("includeDerivedMembership") == "true"
        members = list(self._members_of(found, derived, set()))
        size = min(int(request.query.get("maxResults", "200")), 200, self.member_page_size)
        start = int(request.query.get("pageToken", "0"))
        body: dict[str, Any] = {"kind": "admin#directory#members", "etag": '"m"'}
        if members:
            body["members"] = members[start : start + size]
        if start + size < len(members):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    def _members_of(
        self, group: WorkspaceGroup, derived: bool, seen: set[str]
    ) -> Iterator[dict[str, Any]]:
        """Direct members; with ``derived``, a nested group's members follow its own entry."""
        for entry in group.members:
            if isinstance(entry, dict):
                yield entry
                continue
            user = self.users.get(entry)
            nested = next((g for g in self.groups if g.answers_to(entry)), None)
            if user is not None:
                status = "SUSPENDED" if user.suspended else "ACTIVE"
                yield _member(user.id, user.primary_email, "USER", status)
            elif nested is not None:
                yield _member(nested.resource["id"], nested.resource["email"], "GROUP")
                if derived and nested.resource["id"] not in seen:
                    seen.add(nested.resource["id"])
                    yield from self._members_of(nested, derived, seen)
            else:  # someone outside the account: a member, but no user of this directory
                yield _member(uuid.uuid5(uuid.NAMESPACE_DNS, entry).hex[:21], entry, "USER")


def _member(member_id: str, email: str, kind: str, status: str | None = None) -> dict[str, Any]:
    member = {
        "kind": "admin#directory#member",
        "etag": f'"{uuid.uuid4().hex}"',
        "id": member_id,
        "email": email,
        "role": "MEMBER",
        "type": kind,
    }
    if status is not None:
        member["status"] = status
    return member


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)
