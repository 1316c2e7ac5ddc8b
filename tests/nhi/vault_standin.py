"""A local stand-in for the parts of Vault's HTTP API the Vault connector uses.

It answers as Vault's API documentation describes (api-docs/index, auth/approle, secret/kv/kv-v2):

- every answer with a body is a JSON envelope (``request_id``, ``lease_id``, ``renewable``,
  ``lease_duration``, ``data``, ``wrap_info``, ``warnings``, ``auth``); errors (status >= 400)
  are ``{"errors": [...]}``; an empty LIST is 404 ``{"errors": []}``; destroy answers 204;
- every path except the AppRole login needs a live token in ``X-Vault-Token`` (else 403
  ``permission denied``); an AppRole login issues one, ``auth/token/revoke-self`` ends it;
- LIST is accepted as the LIST verb or as ``GET ?list=true``.

It records every request, and it is stricter than Vault about request bodies: a parameter that
the endpoint does not document, a missing required one or one of the wrong type is refused
with 400 and remembered in :attr:`VaultStandIn.shape_errors`, which the tests assert is empty.

Faults on demand: :meth:`VaultStandIn.fail` (any status and errors), :meth:`rate_limit` (429
with Retry-After as an HTTP date, as Vault's rate-limit quotas send it), :meth:`hang` (never
answer; ``apply=True`` carries the request out first, so only the answer is lost).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

_LOGIN = re.compile(r"/v1/auth/(?P<mount>.+?)/login")
_ROLE_PATH = re.compile(
    r"/v1/auth/(?P<mount>.+?)/role/(?P<role>[^/]+)/"
    r"(?P<what>secret-id|secret-id-accessor/lookup|secret-id-accessor/destroy)"
)
_KV_DATA = re.compile(r"/v1/(?P<mount>.+?)/data/(?P<path>.+)")
_REVOKE_SELF = "/v1/auth/token/revoke-self"
_GENERATE_PARAMS = {"metadata", "cidr_list", "token_bound_cidrs", "num_uses", "ttl"}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class SecretId:
    secret_id: str
    accessor: str
    metadata: dict[str, str]
    created: str


@dataclass
class Role:
    name: str
    role_id: str
    secret_ids: dict[str, SecretId] = field(default_factory=dict)
    """By accessor."""

    def secret_id_values(self) -> set[str]:
        return {s.secret_id for s in self.secret_ids.values()}


@dataclass
class Fault:
    method: str
    path: str
    kind: str
    status: int = 0
    errors: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    apply: bool = False
    times: int = 1
    after: int = 0
    """Let this many matching requests through before the fault starts."""


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _envelope(data: Any = None, auth: Any = None) -> dict[str, Any]:
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": auth,
    }


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON as Vault sends it: ``Content-Type: application/json`` exactly, no charset."""
    return web.Response(
        body=json.dumps(payload).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _errors(status: int, *errors: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"errors": list(errors)}, status, headers)


class VaultStandIn:
    """Vault's AppRole, token and KV v2 endpoints, in memory, on a local aiohttp server."""

    def __init__(self, root_token: str) -> None:
        self.tokens: dict[str, str] = {root_token: "root"}
        self.roles: dict[tuple[str, str], Role] = {}
        self.kv: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.kv_mounts = {"secret"}
        self.requests: list[Recorded] = []
        self.shape_errors: list[str] = []
        self.release = asyncio.Event()
        self.url = ""
        self._faults: list[Fault] = []

    # ---- arranging and inspecting (test side) -------------------------------------------------

    def add_role(self, name: str, mount: str = "approle") -> Role:
        role = Role(name=name, role_id=str(uuid.uuid4()))
        self.roles[(mount, name)] = role
        return role

    def role(self, name: str, mount: str = "approle") -> Role:
        return self.roles[(mount, name)]

    def issue(self, role: Role, metadata: dict[str, str] | None = None) -> SecretId:
        entry = SecretId(str(uuid.uuid4()), str(uuid.uuid4()), dict(metadata or {}), _now())
        role.secret_ids[entry.accessor] = entry
        return entry

    def put_kv(self, path: str, data: dict[str, Any], mount: str = "secret") -> int:
        versions = self.kv.setdefault((mount, path), [])
        versions.append(dict(data))
        return len(versions)

    def kv_versions(self, path: str, mount: str = "secret") -> list[dict[str, Any]]:
        return self.kv.get((mount, path), [])

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *errors: str,
        headers: dict[str, str] | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        fault = Fault(method, path, "status", status, list(errors), dict(headers or {}))
        fault.times, fault.after = times, after
        self._faults.append(fault)

    def rate_limit(self, method: str, path: str, wait_seconds: int, times: int = 1) -> None:
        """429 as a Vault rate-limit quota answers, Retry-After an HTTP date (and headers)."""
        reset = datetime.now(UTC) + timedelta(seconds=wait_seconds)
        date = email.utils.format_datetime(reset, usegmt=True)
        headers = {
            "Retry-After": date,
            "X-Ratelimit-Limit": "1",
            "X-Ratelimit-Remaining": "0",
            "X-Ratelimit-Reset": date,
        }
        vault_path = path.removeprefix("/v1/")
        message = f'request path "{vault_path}": rate limit quota exceeded'
        self.fail(method, path, 429, message, headers=headers, times=times)

    def hang(self, method: str, path: str, *, apply: bool) -> None:
        self._faults.append(Fault(method, path, "hang", apply=apply))

    # ---- serving ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        method = request.method.upper()
        if method == "GET" and request.query.get("list") == "true":
            method = "LIST"
        try:
            body = json.loads(raw) if raw else None
        except ValueError as exc:
            return _errors(400, f"failed to parse JSON input: {exc}")
        self.requests.append(
            Recorded(method, request.path, dict(request.query), dict(request.headers), body)
        )
        fault = self._take_fault(method, request.path)
        if fault is not None and fault.kind == "status":
            return _errors(fault.status, *fault.errors, headers=fault.headers)
        if fault is not None and not fault.apply:
            await self.release.wait()
            return _errors(504, "gateway timeout")
        answer = self._answer(method, request.path, body, request.headers)
        if fault is not None:
            await self.release.wait()
        return answer

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.method == method and fault.path == path:
                if fault.after > 0:
                    fault.after -= 1
                    return None
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _answer(self, method: str, path: str, body: Any, headers: Any) -> web.Response:
        login = _LOGIN.fullmatch(path)
        if login and method in ("POST", "PUT"):
            return self._login(login["mount"], body)
        token = headers.get("X-Vault-Token", "")
        if token not in self.tokens:
            return _errors(403, "permission denied")
        if path == _REVOKE_SELF and method in ("POST", "PUT"):
            if not self._shape(path, body or {}, required=set(), allowed=set()):
                return _errors(400, "unexpected parameters")
            del self.tokens[token]
            return web.Response(status=204)
        role_path = _ROLE_PATH.fullmatch(path)
        if role_path:
            role = self.roles.get((role_path["mount"], role_path["role"]))
            if role is None:
                return _errors(400, f'role "{role_path["role"]}" does not exist')
            return self._role_endpoint(method, role_path["what"], role, path, body)
        kv = _KV_DATA.fullmatch(path)
        if kv and kv["mount"] in self.kv_mounts:
            return self._kv_endpoint(method, (kv["mount"], kv["path"]), path, body)
        route = path.removeprefix("/v1/")
        return _errors(404, f'no handler for route "{route}". route entry not found.')

    def _shape(self, path: str, body: Any, *, required: set[str], allowed: set[str]) -> bool:
        if not isinstance(body, dict):
            self.shape_errors.append(f"{path}: body is not a JSON object: {body!r}")
            return False
        missing, unknown = required - body.keys(), body.keys() - allowed - required
        if missing or unknown:
            self.shape_errors.append(
                f"{path}: missing {sorted(missing)}, undocumented {sorted(unknown)}"
            )
            return False
        return True

    def _login(self, mount: str, body: Any) -> web.Response:
        if not self._shape("login", body, required={"role_id", "secret_id"}, allowed=set()):
            return _errors(400, "missing role_id or secret_id")
        for (role_mount, _), role in self.roles.items():
            if role_mount == mount and role.role_id == body["role_id"]:
                if body["secret_id"] in role.secret_id_values():
                    token = "hvs." + secrets.token_urlsafe(24)
                    self.tokens[token] = f"approle:{role.name}"
                    auth = {
                        "client_token": token,
                        "accessor": str(uuid.uuid4()),
                        "policies": ["default", "twokey"],
                        "token_policies": ["default", "twokey"],
                        "metadata": {"role_name": role.name},
                        "lease_duration": 1200,
                        "renewable": True,
                    }
                    return _json(_envelope(auth=auth))
        return _errors(400, "invalid role or secret ID")

    def _role_endpoint(
        self, method: str, what: str, role: Role, path: str, body: Any
    ) -> web.Response:
        if what == "secret-id" and method == "LIST":
            if not role.secret_ids:
                return _errors(404)
            return _json(_envelope({"keys": sorted(role.secret_ids)}))
        if what == "secret-id" and method in ("POST", "PUT"):
            return self._generate(role, path, body if body is not None else {})
        if method not in ("POST", "PUT"):
            return _errors(405, "1 error occurred:\n\t* unsupported operation\n\n")
        if not self._shape(path, body, required={"secret_id_accessor"}, allowed=set()):
            return _errors(400, "missing secret_id_accessor")
        accessor = body["secret_id_accessor"]
        entry = role.secret_ids.get(accessor)
        missing = f'failed to find accessor entry for secret_id_accessor: "{accessor}"'
        if what == "secret-id-accessor/lookup":
            if entry is None:
                return _errors(404, missing)
            return _json(
                _envelope(
                    {
                        "cidr_list": [],
                        "creation_time": entry.created,
                        "expiration_time": "0001-01-01T00:00:00Z",
                        "last_updated_time": entry.created,
                        "metadata": entry.metadata,
                        "secret_id_accessor": entry.accessor,
                        "secret_id_num_uses": 0,
                        "secret_id_ttl": 0,
                        "token_bound_cidrs": [],
                    }
                )
            )
        if entry is None:
            return _errors(500, f"1 error occurred:\n\t* {missing}\n\n")
        del role.secret_ids[accessor]
        return web.Response(status=204)

    def _generate(self, role: Role, path: str, body: Any) -> web.Response:
        if not self._shape(path, body, required=set(), allowed=_GENERATE_PARAMS):
            return _errors(400, "unexpected parameters")
        metadata: dict[str, str] = {}
        if "metadata" in body:
            # Documented as a JSON-formatted *string* of key-value pairs.
            try:
                parsed = json.loads(body["metadata"]) if isinstance(body["metadata"], str) else None
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
            ):
                self.shape_errors.append(f"{path}: metadata is not a JSON string of a str map")
                return _errors(400, "failed to parse metadata")
            metadata = parsed
        entry = self.issue(role, metadata)
        return _json(
            _envelope(
                {
                    "secret_id": entry.secret_id,
                    "secret_id_accessor": entry.accessor,
                    "secret_id_ttl": 0,
                    "secret_id_num_uses": 0,
                }
            )
        )

    def _kv_endpoint(self, method: str, key: tuple[str, str], path: str, body: Any) -> web.Response:
        versions = self.kv.get(key, [])
        if method == "GET":
            if not versions:
                return _errors(404)
            return _json(
                _envelope({"data": versions[-1], "metadata": self._version(len(versions))})
            )
        if method not in ("POST", "PUT"):
            return _errors(405, "1 error occurred:\n\t* unsupported operation\n\n")
        if not self._shape(path, body, required={"data"}, allowed={"options"}):
            return _errors(400, "no data provided")
        options = body.get("options") or {}
        if not isinstance(body["data"], dict) or not isinstance(options, dict):
            self.shape_errors.append(f"{path}: data and options must be objects")
            return _errors(400, "data and options must be objects")
        if set(options) - {"cas"} or not isinstance(options.get("cas", 0), int):
            self.shape_errors.append(f"{path}: options may only hold an integer cas")
            return _errors(400, "invalid options")
        if "cas" in options and options["cas"] != len(versions):
            return _errors(400, "check-and-set parameter did not match the current version")
        versions.append(dict(body["data"]))
        self.kv[key] = versions
        return _json(_envelope(self._version(len(versions))))

    @staticmethod
    def _version(version: int) -> dict[str, Any]:
        return {
            "created_time": _now(),
            "custom_metadata": None,
            "deletion_time": "",
            "destroyed": False,
            "version": version,
        }
