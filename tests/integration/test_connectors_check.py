"""`twokey connectors check | aws-cleanup`, and connectors wired in at start-up, against the
stand-ins the connector suites use (Okta, Graph, Google, Vault, slapd, moto).

The check must be read-only: each test also asserts what reached the stand-in (GETs, a token,
a capabilities question), never a change.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest
import requests
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto.server import ThreadedMotoServer
from openapi_core import OpenAPI

from app.bootstrap import StartupError, build_runtime
from app.cli import main
from app.connector_setup import connectors_command
from app.connectors.aws_iam import RETIRE_TAG_PREFIX
from app.connectors.google import SCOPE_USER_SECURITY
from app.connectors.okta import OktaConnector
from app.settings import Settings
from app.store.directory_cache import CachedDirectory
from tests.connectors.okta_standin import (
    OktaStandIn,
    load_okta_spec,
    okta_error,
    okta_group,
    okta_user,
)
from tests.connectors_cloud.google_standin import GoogleStandIn, WorkspaceUser, workspace_group
from tests.connectors_cloud.graph_standin import GraphStandIn, GraphUser, group
from tests.helpers import MINIMAL_POLICY
from tests.ldap import conftest as ldap_fixtures
from tests.ldap.conftest import GROUPS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Slapd
from tests.nhi.vault_standin import VaultStandIn

POLICY = MINIMAL_POLICY
AUDIT_KEY = "a-test-audit-key-that-is-long-enough"

# The throwaway slapd of the LDAP suite, reused as it is.
slapd = ldap_fixtures.slapd
tls_files = ldap_fixtures.tls_files


def write_policy(folder: Path, *connectors: dict[str, Any]) -> Path:
    path = folder / "policy.yaml"
    path.write_text(POLICY + yaml.safe_dump({"connectors": list(connectors)}, sort_keys=False))
    return path


async def run(folder: Path, *connectors: dict[str, Any], command: str = "check") -> tuple[int, str]:
    path = write_policy(folder, *connectors)
    args = argparse.Namespace(connectors_command=command, policy=str(path), name=None)
    return await connectors_command(args, None)


def lines(text: str, mark: str) -> list[str]:
    """The report lines with this mark (ok, MISSING, note), without the mark."""
    found = (re.fullmatch(r"  (ok|MISSING|note) +(.*)", line) for line in text.splitlines())
    return [m.group(2) for m in found if m and m.group(1) == mark]


# ---- Okta --------------------------------------------------------------------------------------

OKTA_TOKEN = "00TESTssws-" + "c4eck" * 6
ALICE = okta_user("00ualice0001", "alice@example.com", "Alice", "Example")


@pytest.fixture(scope="module")
def okta_spec() -> OpenAPI:
    return load_okta_spec()


@pytest.fixture
async def okta(okta_spec: OpenAPI, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OktaStandIn]:
    monkeypatch.setenv("TK_CHECK_OKTA_TOKEN", OKTA_TOKEN)
    standin = OktaStandIn(okta_spec, api_token=OKTA_TOKEN)
    standin.add_user(json.loads(json.dumps(ALICE)), [okta_group("00gstaff0001", "Staff")])
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()
    assert standin.violations == [], "requests outside Okta's documented API"


def okta_entry(okta: OktaStandIn, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "okta",
        "org_url": okta.base_url,
        "api_token_env": "TK_CHECK_OKTA_TOKEN",
        "timeout": 2,
        **overrides,
    }


async def test_okta_reads_users_and_groups_and_changes_nothing(
    okta: OktaStandIn, tmp_path: Path
) -> None:
    code, text = await run(tmp_path, okta_entry(okta))
    assert code == 0, text
    assert text.startswith("okta (okta): the directory of people; changes: reset-mfa, ")
    assert lines(text, "ok") == [
        "read users (GET /api/v1/users?limit=1)",
        "read a user's groups (GET /api/v1/users/{id}/groups)",
    ]
    (changes,) = lines(text, "note")
    assert "not tried" in changes and "admin who created it" in changes
    assert [(r.method, r.operation, r.query) for r in okta.requests] == [
        ("GET", "listUsers", {"limit": "1"}),
        ("GET", "listUserGroups", {}),
    ]
    assert OKTA_TOKEN not in text


async def test_a_token_kept_in_dotenv_is_read_like_any_setting(
    okta: OktaStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: settings come from the environment or a .env file. The secrets a policy names
    with *_env were read from the environment only, so a token kept in .env beside every other
    setting was "not set"."""
    monkeypatch.delenv("TK_CHECK_OKTA_TOKEN")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"TK_CHECK_OKTA_TOKEN={OKTA_TOKEN}\n")
    code, text = await run(tmp_path, okta_entry(okta))
    assert code == 0, text
    assert [r.operation for r in okta.requests] == ["listUsers", "listUserGroups"]


async def test_okta_with_a_wrong_token_says_the_credentials_are_refused(
    okta: OktaStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TK_CHECK_OKTA_TOKEN", "00TESTssws-revoked-token")
    code, text = await run(tmp_path, okta_entry(okta))
    assert code == 1
    (refused,) = lines(text, "MISSING")
    assert refused.startswith("read users (GET /api/v1/users?limit=1): Invalid token provided")
    assert "Okta refused the credentials" in refused
    assert "something is missing for: okta" in text


async def test_okta_says_what_a_token_that_may_not_read_users_needs(
    okta: OktaStandIn, tmp_path: Path
) -> None:
    okta.answer_next(
        "listUsers",
        403,
        okta_error("E0000006", "You do not have permission to perform the requested action"),
    )
    code, text = await run(tmp_path, okta_entry(okta))
    assert code == 1
    (refused,) = lines(text, "MISSING")
    assert "You do not have permission" in refused and "E0000006, HTTP 403" in refused
    assert refused.endswith("the token's admin needs a role that can see the users twokey serves")


async def test_okta_service_app_without_the_manage_scope_is_stopped_at_sign_in(
    okta_spec: OpenAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    monkeypatch.setenv("TK_CHECK_OKTA_KEY", pem)
    standin = OktaStandIn(
        okta_spec,
        client_id="0oaservice01",
        client_public_key=key.public_key(),
        granted_scopes=frozenset({"okta.users.read"}),
    )
    await standin.start()
    try:
        entry = {
            "type": "okta",
            "org_url": standin.base_url,
            "client_id": "0oaservice01",
            "private_key_env": "TK_CHECK_OKTA_KEY",
        }
        code, text = await run(tmp_path, entry)
    finally:
        await standin.close()
    assert code == 1
    (refused,) = lines(text, "MISSING")
    assert refused.startswith("sign in as the OAuth service app 0oaservice01: ")
    assert "okta.users.manage" in refused and "nothing else can be checked" in refused
    assert {r.operation for r in standin.requests} == {"token"}
    assert standin.violations == []


# ---- Microsoft Entra (Graph) -----------------------------------------------------------------

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
CLIENT_SECRET = "Qx8~check-secret-for-tests~7hF2"


@pytest.fixture
async def graph(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GraphStandIn]:
    monkeypatch.setenv("TK_CHECK_ENTRA_SECRET", CLIENT_SECRET)
    standin = GraphStandIn(TENANT, CLIENT_ID, CLIENT_SECRET)
    standin.add_user(
        GraphUser(
            id="6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0",
            display_name="Alice Adams",
            upn="alice@contoso.com",
            mail="alice@contoso.com",
            member_of=[group("Staff")],
        )
    )
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()
    assert standin.violations == [], "requests Graph does not document"


def entra_entry(graph: GraphStandIn) -> dict[str, Any]:
    return {
        "type": "entra",
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret_env": "TK_CHECK_ENTRA_SECRET",
        "login_url": graph.origin,
        "graph_url": graph.graph_url,
        "timeout": 2,
    }


def app_token(graph: GraphStandIn, *roles: str) -> None:
    """The next token Graph issues is a JWT with these application permissions in ``roles``."""
    token = jwt.encode(
        {"aud": "https://graph.microsoft.com", "roles": list(roles)}, "k" * 32, algorithm="HS256"
    )
    graph.tokens.add(token)
    body = {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
    graph.fail("POST", r"/oauth2/v2\.0/token$", 200, body)


async def test_entra_signs_in_and_reads_users_and_memberships(
    graph: GraphStandIn, tmp_path: Path
) -> None:
    code, text = await run(tmp_path, entra_entry(graph))
    assert code == 0, text
    assert lines(text, "ok") == [
        f"sign in as app {CLIENT_ID} (client credentials): tenant {TENANT}",
        "read users (GET /users?$top=1)",
        "read a user's groups and roles (GET /users/{id}/transitiveMemberOf)",
    ]
    (permissions,) = lines(text, "note")
    assert "the access token does not list them" in permissions
    assert "reset-password: User.ReadWrite.All" in permissions
    assert {r.method for r in graph.requests if r.operation != "token"} == {"GET"}
    assert CLIENT_SECRET not in text


async def test_entra_names_the_permissions_the_app_lacks(
    graph: GraphStandIn, tmp_path: Path
) -> None:
    app_token(
        graph, "User.Read.All", "GroupMember.Read.All", "UserAuthenticationMethod.ReadWrite.All"
    )
    code, text = await run(tmp_path, entra_entry(graph))
    assert code == 1
    assert "permission to read users: User.Read.All" in lines(text, "ok")
    assert "permission to temporary-access: UserAuthenticationMethod.ReadWrite.All" in lines(
        text, "ok"
    )
    assert lines(text, "MISSING") == [
        "permission to reset-password: grant the application permission User.ReadWrite.All "
        "(Microsoft Graph) and admin consent",
        "permission to revoke-sessions: grant the application permission "
        "User.RevokeSessions.All (Microsoft Graph) and admin consent",
    ]


async def test_entra_reports_a_refused_read(graph: GraphStandIn, tmp_path: Path) -> None:
    graph.fail(
        "GET",
        r"/v1\.0/users$",
        403,
        {
            "error": {
                "code": "Authorization_RequestDenied",
                "message": "Insufficient privileges to complete the operation.",
            }
        },
    )
    code, text = await run(tmp_path, entra_entry(graph))
    assert code == 1
    (refused,) = lines(text, "MISSING")
    assert refused.startswith("read users (GET /users?$top=1): Insufficient privileges")
    assert "Authorization_RequestDenied" in refused


async def test_entra_with_a_wrong_secret_stops_at_sign_in(
    graph: GraphStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TK_CHECK_ENTRA_SECRET", "not-the-secret")
    code, text = await run(tmp_path, entra_entry(graph))
    assert code == 1
    (refused,) = lines(text, "MISSING")
    assert "AADSTS7000215" in refused and "nothing else can be checked" in refused
    assert "not-the-secret" not in text
    assert graph.calls() == []


# ---- Google Workspace -----------------------------------------------------------------------

SERVICE_ACCOUNT = "twokey@twokey-test.iam.gserviceaccount.com"
KEY_ID = "5f1c0ffee0ddba11ab1ec0de5eed5a1tfeed0002"
ADMIN = "twokey-admin@example.com"


@pytest.fixture(scope="module")
def google_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def workspace(
    google_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[GoogleStandIn]:
    pem = google_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key_file = {
        "type": "service_account",
        "private_key_id": KEY_ID,
        "private_key": pem,
        "client_email": SERVICE_ACCOUNT,
    }
    monkeypatch.setenv("TK_CHECK_GOOGLE_KEY", json.dumps(key_file))
    public = google_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    standin = GoogleStandIn(SERVICE_ACCOUNT, public.decode(), KEY_ID)
    standin.admins.add(ADMIN)
    standin.add_user(
        WorkspaceUser(
            id="104857600000000000009",
            primary_email="alice@example.com",
            full_name="Alice Adams",
            groups=[workspace_group("staff@example.com", "Staff")],
        )
    )
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()
    assert standin.violations == [], "requests outside Google's discovery document"


def google_entry(workspace: GoogleStandIn) -> dict[str, Any]:
    return {
        "type": "google",
        "admin_subject": ADMIN,
        "service_account_key_env": "TK_CHECK_GOOGLE_KEY",
        "token_url": workspace.token_url,
        "api_url": workspace.origin,
        "timeout": 2,
    }


async def test_google_signs_in_with_every_scope_and_reads_users_and_groups(
    workspace: GoogleStandIn, tmp_path: Path
) -> None:
    code, text = await run(tmp_path, google_entry(workspace))
    assert code == 0, text
    signed_in, users, groups = lines(text, "ok")
    assert signed_in.startswith(f"sign in as {ADMIN} through domain-wide delegation with ")
    assert users == "read users (users.list maxResults=1)"
    assert groups == "read a user's groups (groups.list userKey=...)"
    assert [r.method_id for r in workspace.calls()] == [
        "directory.users.list",
        "directory.groups.list",
    ]


async def test_google_names_the_scope_that_is_not_delegated(
    workspace: GoogleStandIn, tmp_path: Path
) -> None:
    workspace.delegated_scopes.discard(SCOPE_USER_SECURITY)
    code, text = await run(tmp_path, google_entry(workspace))
    assert code == 1
    refused, scope = lines(text, "MISSING")
    assert "Client is unauthorized to retrieve access tokens" in refused
    assert scope.startswith(f"delegated scope {SCOPE_USER_SECURITY}: add it to the service")
    assert workspace.calls() == []


async def test_google_says_when_every_scope_is_refused(
    workspace: GoogleStandIn, tmp_path: Path
) -> None:
    workspace.admins.clear()
    code, text = await run(tmp_path, google_entry(workspace))
    assert code == 1
    assert any(
        line.startswith(f"any delegated scope: Google refuses every scope: check that {ADMIN}")
        for line in lines(text, "MISSING")
    )


# ---- Vault -----------------------------------------------------------------------------------


class VaultWithSelfLookups(VaultStandIn):
    """The stand-in plus the two read-only endpoints the check uses, as Vault documents them:
    ``GET auth/token/lookup-self`` and ``POST sys/capabilities-self`` (``{"paths": [...]}``,
    answered with each path's capabilities, at the top level and under ``data``)."""

    def __init__(self, root_token: str) -> None:
        super().__init__(root_token)
        self.capabilities: dict[str, list[str]] = {}

    def _answer(self, method: str, path: str, body: Any, headers: Any) -> web.Response:
        if path == "/v1/auth/token/lookup-self" and method == "GET":
            if headers.get("X-Vault-Token", "") not in self.tokens:
                return web.json_response({"errors": ["permission denied"]}, status=403)
            data = {"policies": ["default", "twokey"], "ttl": 2764800, "display_name": "token"}
            return web.json_response({"request_id": "r1", "data": data, "auth": None})
        if path == "/v1/sys/capabilities-self" and method in ("POST", "PUT"):
            paths = body.get("paths") if isinstance(body, dict) else None
            if set(body or {}) != {"paths"} or not isinstance(paths, list):
                self.shape_errors.append(f"capabilities-self: body {body!r}")
                return web.json_response({"errors": ["missing paths"]}, status=400)
            held = {p: self.capabilities.get(p, ["deny"]) for p in paths}
            return web.json_response({**held, "request_id": "r2", "data": held})
        return super()._answer(method, path, body, headers)


@pytest.fixture
async def vault(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[VaultWithSelfLookups]:
    token = "hvs." + secrets.token_urlsafe(24)
    monkeypatch.setenv("TK_CHECK_VAULT_TOKEN", token)
    standin = VaultWithSelfLookups(token)
    server = TestServer(standin.app(), host="127.0.0.1")
    await server.start_server()
    standin.url = f"http://127.0.0.1:{server.port}"
    try:
        yield standin
    finally:
        standin.release.set()
        await server.close()
    assert standin.shape_errors == [], "a request Vault does not document"


def vault_entry(vault: VaultStandIn) -> dict[str, Any]:
    return {
        "type": "vault",
        "url": vault.url,
        "token_env": "TK_CHECK_VAULT_TOKEN",
        "timeout": 2,
        "targets": {
            "nhi:billing-api": {"kind": "approle", "role": "billing-api"},
            "nhi:reports-db": {"kind": "kv", "path": "apps/reports/db", "field": "password"},
        },
    }


SECRET_ID = "auth/approle/role/billing-api/secret-id"
DESTROY = "auth/approle/role/billing-api/secret-id-accessor/destroy"
KV = "secret/data/apps/reports/db"


async def test_vault_looks_up_its_token_and_asks_what_it_may_do(
    vault: VaultWithSelfLookups, tmp_path: Path
) -> None:
    vault.capabilities = {
        SECRET_ID: ["list", "update"],
        DESTROY: ["update"],
        KV: ["create", "read", "update"],
    }
    code, text = await run(tmp_path, vault_entry(vault))
    assert code == 0, text
    assert lines(text, "ok") == [
        f"sign in to Vault at {vault.url} with the token (token lookup-self): policies: "
        "default, twokey; expires in 2764800 s",
        f"{SECRET_ID} (list, update)",
        f"{DESTROY} (update)",
        f"{KV} (read, update)",
    ]
    assert vault.calls() == [
        ("GET", "/v1/auth/token/lookup-self"),
        ("POST", "/v1/sys/capabilities-self"),
    ]
    asked = [r.body for r in vault.requests if r.path == "/v1/sys/capabilities-self"]
    assert asked == [{"paths": sorted([SECRET_ID, DESTROY, KV])}]
    assert os.environ["TK_CHECK_VAULT_TOKEN"] not in text


async def test_vault_names_the_capability_its_policy_lacks(
    vault: VaultWithSelfLookups, tmp_path: Path
) -> None:
    vault.capabilities = {SECRET_ID: ["update"], DESTROY: ["root"], KV: ["read"]}
    code, text = await run(tmp_path, vault_entry(vault))
    assert code == 1
    assert lines(text, "MISSING") == [
        f"{SECRET_ID} (list, update): twokey's token lacks list here (it has: update); add it "
        "to the token's policy",
        f"{KV} (read, update): twokey's token lacks update here (it has: read); add it to the "
        "token's policy",
    ]


async def test_vault_with_a_dead_token_says_so(
    vault: VaultWithSelfLookups, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TK_CHECK_VAULT_TOKEN", "hvs.expired")
    code, text = await run(tmp_path, vault_entry(vault))
    assert code == 1
    (refused,) = lines(text, "MISSING")
    assert "Vault refused to look up its own token (HTTP 403 forbidden" in refused
    assert "hvs.expired" not in text


# ---- LDAP (a real slapd) ----------------------------------------------------------------------


@pytest.fixture
def ldap_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TK_CHECK_LDAP_PASSWORD", SERVICE_PASSWORD)


def ldap_entry(slapd: Slapd, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "ldap",
        "flavor": "openldap",
        "url": slapd.ldap_url,
        "ca_file": slapd.ca_file,
        "bind_dn": SERVICE_DN,
        "bind_password_env": "TK_CHECK_LDAP_PASSWORD",
        "user_base": PEOPLE,
        "group_base": GROUPS,
        "operation_timeout": 5,
        **overrides,
    }


async def test_ldap_binds_and_reads_both_bases(
    slapd: Slapd, ldap_password: None, tmp_path: Path
) -> None:
    code, text = await run(tmp_path, ldap_entry(slapd))
    assert code == 0, text
    assert lines(text, "ok") == [
        f"bind as {SERVICE_DN} over StartTLS",
        f"read the people base {PEOPLE}",
        f"read the groups base {GROUPS}",
        "find people with (objectClass=inetOrgPerson)",
    ]
    (changes,) = lines(text, "note")
    assert changes.startswith("changes (reset-password, unlock): not tried")


async def test_ldap_with_a_wrong_password_says_the_bind_is_refused(
    slapd: Slapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TK_CHECK_LDAP_PASSWORD", "not-the-password")
    code, text = await run(tmp_path, ldap_entry(slapd))
    assert code == 1
    (refused,) = lines(text, "MISSING")
    assert refused.startswith(f"bind as {SERVICE_DN} over StartTLS: bind refused")
    assert "not-the-password" not in text


async def test_ldap_with_a_base_that_does_not_exist(
    slapd: Slapd, ldap_password: None, tmp_path: Path
) -> None:
    nowhere = "ou=nobody,dc=example,dc=org"
    code, text = await run(tmp_path, ldap_entry(slapd, user_base=nowhere))
    assert code == 1
    base, accounts = lines(text, "MISSING")
    assert base.startswith(f"read the people base {nowhere}: noSuchObject")
    assert accounts.startswith("find people with (objectClass=inetOrgPerson)")


def test_the_command_line_check_exits_non_zero_on_a_refused_bind(
    slapd: Slapd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TK_CHECK_LDAP_PASSWORD", "not-the-password")
    path = write_policy(tmp_path, ldap_entry(slapd))
    assert main(["connectors", "check", "--policy", str(path)]) == 1
    out = capsys.readouterr().out
    assert "MISSING  bind as" in out and "something is missing for: ldap" in out


# ---- AWS IAM (moto) ---------------------------------------------------------------------------

USER = "deploy-bot"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_url: str) -> Any:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOPERATOR00000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-secret-" + secrets.token_hex(8))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    return boto3.session.Session().client("iam", endpoint_url=moto_url, region_name="us-east-1")


def aws_entry(moto_url: str) -> dict[str, Any]:
    return {"type": "aws_iam", "region": "us-east-1", "endpoint_url": moto_url, "read_timeout": 5}


async def test_aws_says_who_the_credentials_are_and_lists_users(
    aws_env: Any, moto_url: str, tmp_path: Path
) -> None:
    code, text = await run(tmp_path, aws_entry(moto_url))
    assert code == 0, text
    who, listing = lines(text, "ok")
    assert who.startswith("AWS credentials (sts get-caller-identity): signed in as arn:aws:")
    assert listing == "list IAM users under / (iam:ListUsers, for aws-cleanup)"
    (changes,) = lines(text, "note")
    assert "iam:CreateAccessKey" in changes
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in text


async def test_aws_without_credentials_says_what_to_set(
    aws_env: Any, moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, text = await run(tmp_path, aws_entry(moto_url))
    assert code == 1
    (refused,) = lines(text, "MISSING")
    assert "no usable AWS credentials" in refused and "AWS_ACCESS_KEY_ID" in refused


async def test_aws_cleanup_deletes_old_keys_whose_time_has_come(
    aws_env: Any, moto_url: str, tmp_path: Path
) -> None:
    iam = aws_env
    iam.create_user(UserName=USER)
    old = iam.create_access_key(UserName=USER)["AccessKey"]["AccessKeyId"]
    kept = iam.create_access_key(UserName=USER)["AccessKey"]["AccessKeyId"]
    iam.update_access_key(UserName=USER, AccessKeyId=old, Status="Inactive")
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    iam.tag_user(UserName=USER, Tags=[{"Key": RETIRE_TAG_PREFIX + old, "Value": past}])

    code, text = await run(tmp_path, aws_entry(moto_url), command="aws-cleanup")

    assert code == 0, text
    assert text.splitlines() == [
        "aws_iam: 1 deleted, 0 waiting, 0 problems",
        f"  deleted  {USER}/{old}",
    ]
    listed = iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in listed] == [kept]


async def test_aws_cleanup_without_an_aws_connector_says_so(tmp_path: Path) -> None:
    code, text = await run(tmp_path, {"type": "sandbox"}, command="aws-cleanup")
    assert code == 2
    assert text == "no aws_iam connector is configured in the policy file"


# ---- webhook, sandbox, and what cannot be built -----------------------------------------------


async def test_the_webhook_is_never_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(request.path)
        return web.json_response({"outcome": "completed"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receive)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    monkeypatch.setenv("TK_CHECK_WEBHOOK_KEY", "w" * 40)
    entry = {
        "type": "webhook",
        "url": f"http://127.0.0.1:{server.port}/twokey",
        "secret_env": "TK_CHECK_WEBHOOK_KEY",
        "actions": ["rotate-secret"],
    }
    try:
        code, text = await run(tmp_path, entry)
    finally:
        await server.close()
    assert code == 0, text
    assert lines(text, "ok") == ["signing key in $TK_CHECK_WEBHOOK_KEY: set, 40 bytes"]
    (sent,) = lines(text, "note")
    assert "nothing was sent" in sent
    assert received == []


def test_a_missing_secret_is_reported_and_the_others_still_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TK_CHECK_NOT_SET", raising=False)
    webhook = {
        "type": "webhook",
        "url": "https://automation.example.com/twokey",
        "secret_env": "TK_CHECK_NOT_SET",
        "actions": ["rotate-secret"],
    }
    path = write_policy(tmp_path, webhook, {"type": "sandbox"})
    assert main(["connectors", "check", "--policy", str(path)]) == 1
    out = capsys.readouterr().out
    assert "MISSING  read its secrets from the environment: connector 'webhook'" in out
    assert "environment variable TK_CHECK_NOT_SET is not set" in out
    assert "sandbox (sandbox): changes: none" in out and "Not for production" in out


def test_a_policy_with_connector_mistakes_is_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_policy(tmp_path, {"type": "okta", "org_url": "https://acme.okta.com"})
    assert main(["connectors", "check", "--policy", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:13:3 connectors.0: set api_token_env" in err  # "- type: okta" on line 13


def test_without_connectors_the_check_says_the_sandbox_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    assert main(["connectors", "check", "--policy", str(path)]) == 0
    assert "no connectors are configured" in capsys.readouterr().out


# ---- start-up: the configured connectors become the directory and the identity providers ------


def settings_for(policy: Path, redis_url: str, namespace: str, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_AUDIT_KEY=AUDIT_KEY,
        TWOKEY_ACCEPT_EVICTION_RISK=True,
        TWOKEY_POLICY=policy,
        **extra,
    )


async def test_at_start_up_okta_is_the_cached_directory(
    okta: OktaStandIn, tmp_path: Path, redis_url: str, namespace: str
) -> None:
    policy = write_policy(tmp_path, {"type": "sandbox", "name": "demo"}, okta_entry(okta))
    runtime = await build_runtime(settings_for(policy, redis_url, namespace))
    try:
        _demo, connector = runtime.connectors
        assert isinstance(connector, OktaConnector)
        assert isinstance(runtime.directory, CachedDirectory)
        assert runtime.directory.inner is connector
        for _ in range(2):
            (alice,) = await runtime.directory.find_by_email("alice@example.com")
            assert alice.id == "00ualice0001" and alice.groups == {"Staff"}
        assert len(okta.calls("listUsers")) == 1
    finally:
        await runtime.close()
    assert connector._http.client.is_closed


async def test_a_zero_ttl_turns_the_directory_cache_off(
    okta: OktaStandIn, tmp_path: Path, redis_url: str, namespace: str
) -> None:
    policy = write_policy(tmp_path, okta_entry(okta))
    settings = settings_for(policy, redis_url, namespace, TWOKEY_DIRECTORY_CACHE_TTL=0)
    runtime = await build_runtime(settings)
    try:
        assert isinstance(runtime.directory, OktaConnector)
    finally:
        await runtime.close()


async def test_start_up_refuses_a_missing_secret_naming_the_variable(
    tmp_path: Path, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TK_CHECK_UNSET_TOKEN", raising=False)
    entry = {
        "type": "okta",
        "org_url": "https://acme.okta.com",
        "api_token_env": "TK_CHECK_UNSET_TOKEN",
    }
    with pytest.raises(StartupError) as caught:
        await build_runtime(settings_for(write_policy(tmp_path, entry), redis_url, namespace))
    assert str(caught.value) == (
        "connector 'okta' (connectors.0.api_token_env): environment variable "
        "TK_CHECK_UNSET_TOKEN is not set (or empty); set it to the api token"
    )
