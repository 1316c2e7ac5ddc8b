"""A local Okta org that answers as Okta documents and checks every request against the spec.

The stand-in is an aiohttp server on 127.0.0.1 (free port). Every request to ``/api/...`` is
matched to an operation of Okta's published OpenAPI spec and validated with openapi-core
(path, method, parameters, body), plus two checks openapi-core leaves out: no query parameter
the operation does not declare, and no body where it documents none. Anything undocumented is
answered like Okta would (404/400 with Okta's error body) *and* recorded in ``violations``,
which the test fixture asserts is empty, so an undocumented request fails the test.

``/oauth2/v1/token`` is not part of the management spec; it is checked against Okta's service
app guide instead: a form with the four client-credentials fields, a ``private_key_jwt``
assertion verified with the app's registered public key (iss = sub = client id, aud = token
URL, exp at most an hour ahead, one-use jti), and, when the app requires DPoP, a proof per
RFC 9449 with the nonce dance Okta performs (first answer ``use_dpop_nonce``).

State changes are applied to the stand-in's users, so tests assert the effect, not the call.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import hashlib
import json
import os
import re
import secrets
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from jwt.algorithms import RSAAlgorithm
from multidict import CIMultiDict
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.templating.paths.finders import APICallPathFinder

SPEC_PATH = Path(
    os.environ.get(
        "OKTA_SPEC", Path(__file__).with_name("specs") / "okta" / "management-minimal.yaml.gz"
    )
)
"""Okta's published spec, vendored here (gzip; see specs/okta/NOTICE) so the tests need
nothing outside the repository. OKTA_SPEC may name another release (.yaml or .yaml.gz)."""


@functools.cache
def load_okta_spec() -> OpenAPI:
    """Okta's management spec; it fails openapi-spec-validator on unrelated schemas, so the
    spec check is off (as the spec README says) while request validation stays on."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    raw = SPEC_PATH.read_bytes()
    text = (gzip.decompress(raw) if SPEC_PATH.suffix == ".gz" else raw).decode("utf-8")
    data = yaml.load(text, Loader=loader)
    return OpenAPI.from_dict(data, config=Config(spec_validator_cls=None))


def okta_error(code: str, summary: str, causes: list[str] | None = None) -> dict[str, Any]:
    """Okta's documented Error body."""
    return {
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": "oae" + secrets.token_urlsafe(12),
        "errorCauses": [{"errorSummary": cause} for cause in causes or []],
    }


def okta_user(
    user_id: str,
    email: str,
    first: str,
    last: str,
    *,
    status: str = "ACTIVE",
    login: str | None = None,
) -> dict[str, Any]:
    """A user as Okta returns it (shape of the spec's user example)."""
    return {
        "id": user_id,
        "status": status,
        "created": "2024-01-10T09:00:00.000Z",
        "activated": "2024-01-10T09:00:01.000Z",
        "statusChanged": "2024-01-10T09:00:01.000Z",
        "lastLogin": "2025-03-01T08:00:00.000Z",
        "lastUpdated": "2025-03-01T08:00:00.000Z",
        "passwordChanged": "2024-01-10T09:00:01.000Z",
        "type": {"id": "oty1exampletype"},
        "profile": {
            "login": login or email,
            "firstName": first,
            "lastName": last,
            "email": email,
            "secondEmail": None,
            "mobilePhone": None,
        },
        "credentials": {"password": {}, "provider": {"type": "OKTA", "name": "OKTA"}},
        "_links": {"self": {"href": f"https://example.okta.com/api/v1/users/{user_id}"}},
    }


def okta_group(group_id: str, name: str) -> dict[str, Any]:
    return {
        "id": group_id,
        "created": "2024-01-10T09:00:00.000Z",
        "lastUpdated": "2024-01-10T09:00:00.000Z",
        "lastMembershipUpdated": "2024-01-10T09:00:00.000Z",
        "objectClass": ["okta:user_group"],
        "type": "OKTA_GROUP",
        "profile": {"name": name, "description": f"{name} (stand-in)"},
        "_links": {},
    }


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes
    operation: str | None = None


@dataclass
class Fault:
    status: int = 0
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


class _SpecRequest:
    """openapi-core's view of one request. The stand-in speaks plain http on loopback; the
    spec's server is https://{yourOktaDomain}, so the host is presented with that scheme."""

    def __init__(self, request: web.Request, body: bytes) -> None:
        self.host_url = f"https://{request.host}"
        self.path = request.path
        self.method = request.method.lower()
        self.body = body or None
        self.content_type = request.content_type if body else ""
        self.parameters = RequestParameters(
            query=request.query, header=request.headers, cookie=request.cookies
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint of an RSA public JWK (what a DPoP token is bound to)."""
    canonical = json.dumps(
        {"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    return _b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass
class _IssuedToken:
    scopes: frozenset[str]
    jkt: str | None


class OktaStandIn:
    """One Okta org: its users and groups, its credentials, and everything it was asked."""

    def __init__(
        self,
        spec: OpenAPI,
        *,
        api_token: str | None = None,
        client_id: str | None = None,
        client_public_key: Any = None,
        client_key_id: str | None = None,
        require_dpop: bool = True,
        granted_scopes: frozenset[str] = frozenset({"okta.users.read", "okta.users.manage"}),
    ) -> None:
        self.spec = spec
        self.finder = APICallPathFinder(spec.spec)
        self.api_token = api_token
        self.client_id = client_id
        self.client_public_key = client_public_key
        self.client_key_id = client_key_id
        self.require_dpop = require_dpop
        self.granted_scopes = granted_scopes
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, list[dict[str, Any]]] = {}
        """Each user's groups (by user id)."""
        self.known_groups: dict[str, dict[str, Any]] = {}
        """Every group of the org by id, with members or without (``add_group``)."""
        self.page_size = 200
        """The most items one page holds, whatever ``limit`` asks (Okta may send fewer)."""
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.changes: list[tuple[str, str]] = []
        """(operationId, user id) of every change carried out."""
        self.temp_passwords: list[str] = []
        self.access_tokens: list[str] = []
        self.sessions_revoked: dict[str, dict[str, bool]] = {}
        self.factors: dict[str, list[dict[str, Any]]] = {}
        """Each user's enrolled factors (``enroll_push``)."""
        self.push_answers: dict[str, list[str]] = {}
        """What each poll of a user's push transaction answers, in order (the last repeats)."""
        self.pushes_sent: list[str] = []
        """User ids a push challenge was issued to."""
        self._tokens: dict[str, _IssuedToken] = {}
        self._seen_jti: set[str] = set()
        self._nonce = "nonce-" + secrets.token_urlsafe(8)
        self._faults: dict[str, list[Fault]] = {}
        self._release = asyncio.Event()
        self._server: TestServer | None = None
        self.base_url = ""

    # -- setup ---------------------------------------------------------------------------

    def add_user(self, user: dict[str, Any], groups: list[dict[str, Any]] | None = None) -> None:
        self.users[user["id"]] = user
        self.groups[user["id"]] = groups or []
        for group in groups or []:
            self.add_group(group)

    def add_group(self, group: dict[str, Any]) -> None:
        self.known_groups.setdefault(group["id"], group)

    def enroll_push(self, user_id: str, answers: list[str], status: str = "ACTIVE") -> str:
        """Enrol an Okta Verify push factor; each poll of a push to it answers the next of
        ``answers`` (WAITING, SUCCESS, REJECTED, TIMEOUT; the last one repeats)."""
        factor_id = "opf" + secrets.token_hex(8)
        self.factors.setdefault(user_id, []).append(
            {
                "id": factor_id,
                "factorType": "push",
                "provider": "OKTA",
                "vendorName": "OKTA",
                "status": status,
                "created": "2024-01-10T09:00:00.000Z",
                "lastUpdated": "2024-01-10T09:00:00.000Z",
                "profile": {"credentialId": "alice@example.com", "deviceType": "SmartPhone_IPhone"},
            }
        )
        self.push_answers[user_id] = list(answers)
        return factor_id

    def answer_next(
        self,
        operation: str,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """The next call of ``operation`` gets this answer instead of the real one."""
        self._faults.setdefault(operation, []).append(Fault(status, body, dict(headers or {})))

    def hang_next(self, operation: str) -> None:
        """The next call of ``operation`` never gets an answer (until the stand-in closes)."""
        self._faults.setdefault(operation, []).append(Fault(hang=True))

    def rate_limit_next(
        self,
        operation: str,
        *,
        reset_in: int | None = None,
        retry_after: str | None = None,
        now: int = 1_767_225_600,
    ) -> None:
        """A 429 as Okta sends it: X-Rate-Limit-* headers, reset ``reset_in`` s after Date."""
        headers = {
            "Date": formatdate(now, usegmt=True),
            "X-Rate-Limit-Limit": "600",
            "X-Rate-Limit-Remaining": "0",
        }
        if reset_in is not None:
            headers["X-Rate-Limit-Reset"] = str(now + reset_in)
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        self.answer_next(
            operation,
            429,
            okta_error("E0000047", "API call exceeded rate limit due to too many requests."),
            headers,
        )

    def calls(self, operation: str) -> list[Recorded]:
        return [r for r in self.requests if r.operation == operation]

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        self.base_url = str(self._server.make_url("")).rstrip("/")
        return self.base_url

    async def close(self) -> None:
        self._release.set()
        if self._server is not None:
            await self._server.close()

    # -- dispatch ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded = Recorded(
            request.method, request.path, dict(request.query), CIMultiDict(request.headers), body
        )
        self.requests.append(recorded)
        if request.path == "/oauth2/v1/token":
            recorded.operation = "token"
            return await self._token(request, body)
        operation = self._documented_operation(request, body)
        if operation is None:
            return _json(400, okta_error("E0000001", "Api validation failed: request"))
        recorded.operation = operation
        refusal = self._authorize(request, operation)
        if refusal is not None:
            return refusal
        for fault in self._take_fault(operation):
            if fault.hang:
                await self._release.wait()
                return _json(500, okta_error("E0000009", "Internal Server Error"))
            return _json(fault.status, fault.body, fault.headers)
        handler = getattr(self, f"_op_{operation}", None)
        if handler is None:
            self.violations.append(f"{request.method} {request.path}: {operation} not expected")
            return _json(501, okta_error("E0000060", "Unsupported operation"))
        response: web.StreamResponse = await handler(request)
        return response

    def _take_fault(self, operation: str) -> list[Fault]:
        queue = self._faults.get(operation)
        return [queue.pop(0)] if queue else []

    def _documented_operation(self, request: web.Request, body: bytes) -> str | None:
        """The spec's operationId for this request, or None (recorded as a violation)."""
        where = f"{request.method} {request.path_qs}"
        try:
            found = self.finder.find(
                request.method.lower(), f"https://{request.host}{request.path}"
            )
        except PathError:
            self.violations.append(f"{where}: no such operation in the Okta spec")
            return None
        operation = found.operation
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # oauth2 scheme: checked below
            result = self.spec.unmarshal_request(_SpecRequest(request, body))
        for error in result.errors:
            causes = getattr(error, "__cause__", None)
            self.violations.append(f"{where}: {error!r} {causes!r}")
        declared = {
            str(param["name"])
            for source in (found.path, operation)
            for param in source.get("parameters", [])
            if param["in"] == "query"
        }
        extra = set(request.query) - declared
        if extra:
            self.violations.append(f"{where}: undocumented query parameters {sorted(extra)}")
        if body and "requestBody" not in operation:
            self.violations.append(f"{where}: a body where the spec documents none")
        if result.errors or extra:
            return None
        return str(operation["operationId"])

    # -- credentials ---------------------------------------------------------------------

    def _authorize(self, request: web.Request, operation: str) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        denied = _json(401, okta_error("E0000011", "Invalid token provided"))
        if self.api_token is not None:
            return None if header == f"SSWS {self.api_token}" else denied
        scheme, _, token = header.partition(" ")
        issued = self._tokens.get(token)
        if issued is None:
            return denied
        if issued.jkt is not None:
            if scheme != "DPoP" or not self._dpop_ok(request, token, issued.jkt):
                return denied
        elif scheme != "Bearer":
            return denied
        needed = self._scopes_for(request)
        if needed and not needed & issued.scopes:
            return _json(
                403,
                okta_error(
                    "E0000006", "You do not have permission to perform the requested action"
                ),
            )
        return None

    def _scopes_for(self, request: web.Request) -> set[str]:
        found = self.finder.find(request.method.lower(), f"https://{request.host}{request.path}")
        scopes: set[str] = set()
        for requirement in found.operation.get("security", []):
            if "oauth2" in requirement:
                scopes.update(scope.read_str() for scope in requirement / "oauth2")
        return scopes

    def _dpop_ok(self, request: web.Request, token: str | None, jkt: str | None) -> bool:
        """An RFC 9449 proof for this method and URL, fresh, used once, bound as required."""
        proof = request.headers.get("DPoP")
        if not proof:
            return False
        try:
            header = jwt.get_unverified_header(proof)
            jwk = header["jwk"]
            key = RSAAlgorithm.from_jwk(jwk)
            claims = jwt.decode(proof, key, algorithms=["RS256"])  # type: ignore[arg-type]
        except (jwt.PyJWTError, KeyError, ValueError, TypeError) as error:
            self.violations.append(f"bad DPoP proof: {error!r}")
            return False
        problems = []
        if header.get("typ") != "dpop+jwt":
            problems.append("typ is not dpop+jwt")
        if any(part in jwk for part in ("d", "p", "q")):
            problems.append("the proof carries a private key")
        if claims.get("htm") != request.method:
            problems.append("htm")
        if claims.get("htu") != f"{self.base_url}{request.path}":
            problems.append(f"htu {claims.get('htu')!r}")
        if abs(time.time() - float(claims.get("iat", 0))) > 60:
            problems.append("iat")
        jti = claims.get("jti")
        if not jti or jti in self._seen_jti:
            problems.append("jti missing or replayed")
        self._seen_jti.add(str(jti))
        if token is not None:
            if claims.get("ath") != _b64url(hashlib.sha256(token.encode()).digest()):
                problems.append("ath")
            if jwk_thumbprint(jwk) != jkt:
                problems.append("proof key is not the key the token is bound to")
        if problems:
            self.violations.append(f"DPoP proof for {request.path}: {problems}")
            return False
        return True

    async def _token(self, request: web.Request, body: bytes) -> web.Response:
        """POST /oauth2/v1/token, client credentials with private_key_jwt, as Okta documents."""
        if request.method != "POST" or request.content_type != "application/x-www-form-urlencoded":
            self.violations.append(f"token: {request.method} {request.content_type}")
            return _oauth_error(400, "invalid_request", "Bad request.")
        form = await request.post()
        fields = {"grant_type", "scope", "client_assertion_type", "client_assertion"}
        if set(form) != fields:
            self.violations.append(f"token: form fields {sorted(form)}")
            return _oauth_error(400, "invalid_request", "Unexpected or missing parameters.")
        if form["grant_type"] != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "Only client_credentials.")
        if (
            form["client_assertion_type"]
            != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return _oauth_error(400, "invalid_client", "client_assertion_type is not jwt-bearer")
        refused = self._check_assertion(str(form["client_assertion"]))
        if refused is not None:
            return _oauth_error(401, "invalid_client", refused)
        jkt: str | None = None
        if self.require_dpop:
            if "DPoP" not in request.headers:
                return _oauth_error(
                    400, "invalid_dpop_proof", "The DPoP proof JWT header is missing."
                )
            proof_claims = jwt.decode(request.headers["DPoP"], options={"verify_signature": False})
            if proof_claims.get("nonce") != self._nonce:
                if not self._dpop_ok(request, None, None):
                    return _oauth_error(400, "invalid_dpop_proof", "The DPoP proof is invalid.")
                return _oauth_error(
                    400,
                    "use_dpop_nonce",
                    "Authorization server requires nonce in DPoP proof.",
                    {"DPoP-Nonce": self._nonce},
                )
            if not self._dpop_ok(request, None, None):
                return _oauth_error(400, "invalid_dpop_proof", "The DPoP proof is invalid.")
            jkt = jwk_thumbprint(jwt.get_unverified_header(request.headers["DPoP"])["jwk"])
        requested = set(str(form["scope"]).split())
        if not requested <= self.granted_scopes:
            missing = " ".join(sorted(requested - self.granted_scopes))
            return _oauth_error(
                400, "invalid_scope", f"The following scopes are not allowed: {missing}"
            )
        access = "eyJ" + secrets.token_urlsafe(40)
        self._tokens[access] = _IssuedToken(frozenset(requested), jkt)
        self.access_tokens.append(access)
        return _json(
            200,
            {
                "token_type": "DPoP" if jkt else "Bearer",
                "expires_in": 3600,
                "access_token": access,
                "scope": " ".join(sorted(requested)),
            },
        )

    def _check_assertion(self, assertion: str) -> str | None:
        """Why the client assertion is refused, or None when Okta would accept it."""
        if self.client_public_key is None:
            return "no service app is registered"
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self.client_public_key,
                algorithms=["RS256", "ES256"],
                audience=f"{self.base_url}/oauth2/v1/token",
                issuer=self.client_id,
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.PyJWTError as error:
            return f"The client_assertion is invalid: {error}"
        if self.client_key_id is not None and header.get("kid") != self.client_key_id:
            return "The client_assertion kid does not match a registered key."
        if claims["sub"] != self.client_id:
            return "The client_assertion sub must be the client_id."
        if float(claims["exp"]) > time.time() + 3600:
            return "The client_assertion exp is more than an hour ahead."
        jti = claims.get("jti")
        if jti and jti in self._seen_jti:
            return "The client_assertion token has already been used."
        self._seen_jti.add(str(jti))
        return None

    # -- operations ----------------------------------------------------------------------

    def _user(self, key: str, *, id_only: bool = False) -> dict[str, Any] | None:
        """By id; for ``{id}`` paths also by login or unambiguous login shortname."""
        if key in self.users:
            return self.users[key]
        if id_only:
            return None
        by_login = [u for u in self.users.values() if u["profile"]["login"].lower() == key.lower()]
        if not by_login:
            by_login = [
                u
                for u in self.users.values()
                if u["profile"]["login"].split("@")[0].lower() == key.lower()
            ]
        return by_login[0] if len(by_login) == 1 else None

    def _not_found(self, key: str) -> web.Response:
        return _json(
            404,
            okta_error("E0000007", f"Not found: Resource not found: {key} (User)"),
        )

    async def _op_getUser(self, request: web.Request) -> web.Response:
        user = self._user(request.match_info["tail"].split("/")[3])
        if user is None:
            return self._not_found(request.match_info["tail"].split("/")[3])
        return _json(200, user)

    async def _op_listUsers(self, request: web.Request) -> web.Response:
        users = list(self.users.values())
        if "search" in request.query:
            match = re.fullmatch(r'profile\.email eq "([^"]*)"', request.query["search"])
            if match is None:
                self.violations.append(f"search the stand-in cannot evaluate: {request.query}")
                return _json(400, okta_error("E0000031", "Invalid search."))
            wanted = match.group(1).lower()
            users = [u for u in users if str(u["profile"]["email"]).lower() == wanted]
        elif "q" in request.query:
            prefix = request.query["q"].lower()
            users = [
                u
                for u in users
                if u["status"] != "DEPROVISIONED"
                and any(
                    str(u["profile"].get(f) or "").lower().startswith(prefix)
                    for f in ("firstName", "lastName", "email")
                )
            ]
        limit = int(request.query.get("limit", "200"))
        return _json(200, users[:limit])

    async def _op_listUserGroups(self, request: web.Request) -> web.Response:
        key = request.match_info["tail"].split("/")[3]
        user = self._user(key)
        if user is None:
            return self._not_found(key)
        return self._page(request, self.groups.get(user["id"], []))

    async def _op_listGroups(self, request: web.Request) -> web.Response:
        """``search`` with ``profile.name eq "..."`` only (compared without case, the
        loosest reading of Okta's ``eq``: the connector must compare exactly itself)."""
        groups = list(self.known_groups.values())
        if "search" in request.query:
            match = re.fullmatch(r'profile\.name eq "([^"]*)"', request.query["search"])
            if match is None:
                self.violations.append(f"search the stand-in cannot evaluate: {request.query}")
                return _json(400, okta_error("E0000031", "Invalid search."))
            wanted = match.group(1).lower()
            groups = [g for g in groups if g["profile"]["name"].lower() == wanted]
        elif request.query:
            self.violations.append(f"a group list the stand-in does not serve: {request.query}")
        return self._page(request, groups)

    async def _op_listGroupUsers(self, request: web.Request) -> web.Response:
        group_id = request.match_info["tail"].split("/")[3]
        if group_id not in self.known_groups:
            return _json(
                404,
                okta_error("E0000007", f"Not found: Resource not found: {group_id} (UserGroup)"),
            )
        members = [
            self.users[user_id]
            for user_id, groups in self.groups.items()
            if any(g["id"] == group_id for g in groups)
        ]
        return self._page(request, members)

    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        """One page as Okta pages lists: ``limit`` items at most after the ``after`` cursor
        (the id of the last item of the page before), with ``Link`` headers ``rel="self"``
        and, when more follow, ``rel="next"`` (the same query with the next cursor)."""
        size = min(int(request.query.get("limit", "200")), self.page_size)
        start = 0
        if "after" in request.query:
            ids = [item["id"] for item in items]
            if request.query["after"] not in ids:
                self.violations.append(f"an `after` cursor Okta never handed out: {request.query}")
                return _json(400, okta_error("E0000001", "Api validation failed: after"))
            start = ids.index(request.query["after"]) + 1
        page = items[start : start + size]
        links = CIMultiDict([("Link", f'<{self.base_url}{request.path_qs}>; rel="self"')])
        if start + size < len(items) and page:
            query = {**request.query, "after": page[-1]["id"]}
            target = f"{self.base_url}{request.path}?{urlencode(query)}"
            links.add("Link", f'<{target}>; rel="next"')
        return web.json_response(page, headers=links)

    async def _op_resetFactors(self, request: web.Request) -> web.Response:
        user = self._changed_user(request, "resetFactors")
        return self._not_found(_path_user(request)) if user is None else web.Response(status=200)

    async def _op_unlockUser(self, request: web.Request) -> web.Response:
        user = self._changed_user(request, "unlockUser")
        if user is None:
            return self._not_found(_path_user(request))
        if user["status"] == "LOCKED_OUT":
            user["status"] = "ACTIVE"
        return web.Response(status=200)

    async def _op_expirePasswordWithTempPassword(self, request: web.Request) -> web.Response:
        user = self._changed_user(request, "expirePasswordWithTempPassword")
        if user is None:
            return self._not_found(_path_user(request))
        user["status"] = "PASSWORD_EXPIRED"
        if request.query.get("revokeSessions") == "true":
            self.sessions_revoked[user["id"]] = {"oauthTokens": False, "forgetDevices": False}
        temporary = secrets.token_urlsafe(9)
        self.temp_passwords.append(temporary)
        return _json(200, {"tempPassword": temporary})

    async def _op_revokeUserSessions(self, request: web.Request) -> web.Response:
        user = self._changed_user(request, "revokeUserSessions", id_only=True)
        if user is None:
            return self._not_found(_path_user(request))
        self.sessions_revoked[user["id"]] = {
            "oauthTokens": request.query.get("oauthTokens") == "true",
            "forgetDevices": request.query.get("forgetDevices", "true") == "true",
        }
        return web.Response(status=204)

    # -- factors: Okta Verify push, as the factors API documents it ---------------------

    async def _op_listFactors(self, request: web.Request) -> web.Response:
        user_id = _path_user(request)
        if user_id not in self.users:
            return self._not_found(user_id)
        return _json(200, self.factors.get(user_id, []))

    async def _op_verifyFactor(self, request: web.Request) -> web.Response:
        parts = request.match_info["tail"].split("/")
        user_id, factor_id = parts[3], parts[5]
        factor = next((f for f in self.factors.get(user_id, []) if f["id"] == factor_id), None)
        if factor is None:
            return self._not_found(factor_id)
        if not request.headers.get("User-Agent"):  # the spec: required to verify push factors
            self.violations.append("verifyFactor of a push without a User-Agent header")
            return _json(400, okta_error("E0000001", "Api validation failed: User-Agent"))
        if await request.read():
            self.violations.append("a standard push challenge is issued without a body")
        self.pushes_sent.append(user_id)
        transaction = "v2mst." + secrets.token_urlsafe(12)
        factor_url = f"{self.base_url}/api/v1/users/{user_id}/factors/{factor_id}"
        href = f"{factor_url}/transactions/{transaction}"
        return _json(
            201,
            {
                "expiresAt": "2026-12-31T00:05:00.000Z",
                "factorResult": "WAITING",
                "profile": {"credentialId": factor["profile"]["credentialId"]},
                "_links": {
                    "poll": {"href": href, "hints": {"allow": ["GET"]}},
                    "cancel": {"href": href, "hints": {"allow": ["DELETE"]}},
                },
            },
        )

    async def _op_getFactorTransactionStatus(self, request: web.Request) -> web.Response:
        user_id = _path_user(request)
        answers = self.push_answers.get(user_id) or ["TIMEOUT"]
        result = answers.pop(0) if len(answers) > 1 else answers[0]
        if result == "SUCCESS":
            return _json(200, {"factorResult": "SUCCESS"})
        return _json(
            200,
            {
                "factorResult": result,
                "profile": {"credentialId": "alice@example.com"},
                "_links": {},
            },
        )

    def _changed_user(
        self, request: web.Request, operation: str, *, id_only: bool = False
    ) -> dict[str, Any] | None:
        user = self._user(_path_user(request), id_only=id_only)
        if user is not None:
            self.changes.append((operation, user["id"]))
        return user


def _path_user(request: web.Request) -> str:
    return request.match_info["tail"].split("/")[3]


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    if body is None:
        return web.Response(status=status, headers=dict(headers or {}))
    return web.json_response(body, status=status, headers=dict(headers or {}))


def _oauth_error(
    status: int, error: str, description: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return _json(status, {"error": error, "error_description": description}, headers)
