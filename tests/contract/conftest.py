"""Every connector plugin wired to its existing stand-in, as one :class:`Subject` the contract
suite drives the same way.

The stand-ins and their fixtures are the ones each connector's own tests use (nothing is
copied): local HTTP servers speaking the provider's documented API (Okta, Graph, Google
Workspace, Vault, a webhook receiver), moto behind a fault-injecting proxy for AWS IAM, a
real slapd for LDAP. Each connector is built through its plugin, as `twokey serve` builds it.

A new identity provider adds one factory here (``SUBJECTS``): its stand-in, a target it can
change, how to see the changes the stand-in recorded, and how to make it refuse or lose an
answer where the stand-in can.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.connectors.plugin import AnyPlugin
from app.connectors.registry import plugin_of
from app.connectors.sandbox import SandboxConnector
from app.domain.models import Action, Principal, PrincipalKind
from app.ports import IdentityProvider, Outcome
from tests.connectors.okta_standin import OktaStandIn, load_okta_spec, okta_error, okta_user
from tests.connectors.test_webhook import SIGNING_KEY, Receiver, receiver
from tests.connectors_cloud.google_standin import GoogleStandIn, WorkspaceUser
from tests.connectors_cloud.graph_standin import GraphStandIn, GraphUser, method
from tests.ldap.conftest import (
    GROUPS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    slapd,
    tls_files,
)
from tests.nhi import nhi
from tests.nhi.test_aws_iam import (
    BOT,
    FaultyIam,
    aws,
    aws_credentials,
    iam,
    keys_of,
    moto_url,
    tags_of,
    user_with_keys,
)
from tests.nhi.test_vault import BILLING, SECRET_ID_PATH, TARGETS, TOKEN_ENV, root_token, vault
from tests.nhi.vault_standin import VaultStandIn

__all__ = [  # fixtures of the connectors' own suites, used here as they are
    "aws",
    "aws_credentials",
    "iam",
    "moto_url",
    "receiver",
    "root_token",
    "slapd",
    "tls_files",
    "vault",
]

Inject = Callable[[], None]


@dataclass
class Subject:
    """One connector on its stand-in, and what the contract needs to drive and watch it."""

    plugin: AnyPlugin
    settings: dict[str, Any]
    """The policy-file entry it was built from."""
    connector: IdentityProvider
    target: Principal
    action: Action
    """A change it supports on ``target``; the contract expects a one-time secret from it."""
    changes: Callable[[], Hashable]
    """What the stand-in recorded as changed: equal before and after means nothing changed."""
    credentials: list[str]
    """Secrets the connector holds (API tokens, keys): never in a repr or the logs."""
    refuse_next: Inject | None = None
    """Make the stand-in refuse the next change (None: it cannot be made to)."""
    lose_next: Inject | None = None
    """Make the stand-in take the next change and never answer (None: it cannot)."""
    checked: IdentityProvider | None = None
    """The connector `connectors check` runs, when the stand-in cannot serve its reads (the
    AWS proxy speaks IAM only; STS is moto's): the same settings, straight to the provider."""

    @property
    def for_checks(self) -> IdentityProvider:
        return self.checked or self.connector


def built(plugin: AnyPlugin, settings: dict[str, Any]) -> IdentityProvider:
    connector: IdentityProvider = plugin.build(settings)
    return connector


async def _closed(subject: Subject) -> AsyncIterator[Subject]:
    try:
        yield subject
    finally:
        close = subject.plugin.closer(subject.connector)
        if close is not None:
            await close()


# ---- okta ---------------------------------------------------------------------------------------

OKTA_TOKEN = "00TESTssws-" + "c0ntract" * 4
OKTA_ALICE = okta_user("00ualice0001", "alice@example.com", "Alice", "Example")


@pytest.fixture
async def okta_subject(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Subject]:
    org = OktaStandIn(load_okta_spec(), api_token=OKTA_TOKEN)
    org.add_user(json.loads(json.dumps(OKTA_ALICE)), [])
    await org.start()
    monkeypatch.setenv("TK_CONTRACT_OKTA_TOKEN", OKTA_TOKEN)
    settings = {
        "type": "okta",
        "org_url": org.base_url,
        "api_token_env": "TK_CONTRACT_OKTA_TOKEN",
        "timeout": 0.5,
    }
    plugin = plugin_of("okta")
    subject = Subject(
        plugin=plugin,
        settings=settings,
        connector=built(plugin, settings),
        target=Principal(
            id="00ualice0001", display_name="Alice Example", email="alice@example.com"
        ),
        action=Action.RESET_PASSWORD,
        changes=lambda: tuple(org.changes),
        credentials=[OKTA_TOKEN],
        refuse_next=lambda: org.answer_next(
            "expirePasswordWithTempPassword", 403, okta_error("E0000006", "Denied")
        ),
        lose_next=lambda: org.hang_next("expirePasswordWithTempPassword"),
    )
    try:
        async for ready in _closed(subject):
            yield ready
    finally:
        await org.close()
    assert org.violations == [], "requests outside Okta's documented API"


# ---- entra --------------------------------------------------------------------------------------

TENANT = "contoso.onmicrosoft.com"
ENTRA_CLIENT = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
ENTRA_SECRET = "Qx8~contract-secret-for-tests~7hF2"
ENTRA_ALICE = "6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0"


@pytest.fixture
async def entra_subject(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Subject]:
    graph = GraphStandIn(TENANT, ENTRA_CLIENT, ENTRA_SECRET)
    graph.add_user(
        GraphUser(
            id=ENTRA_ALICE,
            display_name="Alice Adams",
            upn="alice@contoso.com",
            mail="alice@contoso.com",
            member_of=[],
            methods=[method("passwordAuthenticationMethod")],
        )
    )
    await graph.start()
    monkeypatch.setenv("TK_CONTRACT_ENTRA_SECRET", ENTRA_SECRET)
    settings = {
        "type": "entra",
        "tenant_id": TENANT,
        "client_id": ENTRA_CLIENT,
        "client_secret_env": "TK_CONTRACT_ENTRA_SECRET",
        "login_url": graph.origin,
        "graph_url": graph.graph_url,
        "timeout": 0.5,
    }
    denied = {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient"}}
    plugin = plugin_of("entra")
    subject = Subject(
        plugin=plugin,
        settings=settings,
        connector=built(plugin, settings),
        target=Principal(id=ENTRA_ALICE, display_name="Alice Adams", email="alice@contoso.com"),
        action=Action.RESET_PASSWORD,
        changes=lambda: tuple((r.method, r.path) for r in graph.calls() if r.method != "GET"),
        credentials=[ENTRA_SECRET],
        refuse_next=lambda: graph.fail("PATCH", f"/users/{ENTRA_ALICE}$", 403, denied),
        lose_next=lambda: graph.hang("PATCH", f"/users/{ENTRA_ALICE}$"),
    )
    try:
        async for ready in _closed(subject):
            yield ready
    finally:
        await graph.close()
    assert graph.violations == [], "requests Graph does not document"


# ---- google -------------------------------------------------------------------------------------

SERVICE_ACCOUNT = "twokey@twokey-test.iam.gserviceaccount.com"
GOOGLE_KEY_ID = "5f1c0ffee0ddba11ab1ec0de5eed5a1tfeed0009"
GOOGLE_ADMIN = "twokey-admin@example.com"
GOOGLE_ALICE = "104857600000000000001"


@pytest.fixture(scope="module")
def google_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def google_subject(
    google_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Subject]:
    public = google_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    workspace = GoogleStandIn(SERVICE_ACCOUNT, public.decode(), GOOGLE_KEY_ID)
    workspace.admins.add(GOOGLE_ADMIN)
    workspace.add_user(
        WorkspaceUser(id=GOOGLE_ALICE, primary_email="alice@example.com", full_name="Alice Adams")
    )
    await workspace.start()
    private_pem = google_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    key_file = {
        "type": "service_account",
        "private_key_id": GOOGLE_KEY_ID,
        "private_key": private_pem,
        "client_email": SERVICE_ACCOUNT,
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    monkeypatch.setenv("TK_CONTRACT_GOOGLE_KEY", json.dumps(key_file))
    settings = {
        "type": "google",
        "admin_subject": GOOGLE_ADMIN,
        "service_account_key_env": "TK_CONTRACT_GOOGLE_KEY",
        "token_url": workspace.token_url,
        "api_url": workspace.origin,
        "timeout": 0.5,
    }
    refused = {"error": {"code": 403, "message": "Not Authorized to access this resource/api"}}
    plugin = plugin_of("google")
    subject = Subject(
        plugin=plugin,
        settings=settings,
        connector=built(plugin, settings),
        target=Principal(id=GOOGLE_ALICE, display_name="Alice Adams", email="alice@example.com"),
        action=Action.RESET_PASSWORD,
        changes=lambda: tuple(r.method_id for r in workspace.calls() if r.http_method != "GET"),
        credentials=[line for line in private_pem.splitlines()[1:-1]],
        refuse_next=lambda: workspace.fail("directory.users.update", 403, refused),
        lose_next=lambda: workspace.hang("directory.users.update"),
    )
    try:
        async for ready in _closed(subject):
            yield ready
    finally:
        await workspace.close()
    assert workspace.violations == [], "requests the discovery document does not allow"


# ---- webhook ------------------------------------------------------------------------------------


@pytest.fixture
async def webhook_subject(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Subject]:
    monkeypatch.setenv("TK_CONTRACT_WEBHOOK_KEY", SIGNING_KEY)
    settings = {
        "type": "webhook",
        "name": "rotator",
        "url": receiver.url,
        "secret_env": "TK_CONTRACT_WEBHOOK_KEY",
        "actions": ["rotate-secret"],
        "timeout": 0.5,
    }
    new_key = "AKIA-contract-new-key-" + "x9" * 8

    def complete_with_a_secret() -> None:
        receiver.answer(200, {"outcome": "completed", "secret": new_key, "secret_label": "key"})

    def refuse() -> None:
        receiver.answers.clear()
        receiver.answer(200, {"outcome": "failed", "detail": "the automation said no"})

    def lose() -> None:
        receiver.hang = True

    complete_with_a_secret()
    plugin = plugin_of("webhook")
    subject = Subject(
        plugin=plugin,
        settings=settings,
        connector=built(plugin, settings),
        target=nhi("nhi:svc-backup", "aws"),
        action=Action.ROTATE_SECRET,
        changes=lambda: len(receiver.received),
        credentials=[SIGNING_KEY],
        refuse_next=refuse,
        lose_next=lose,
    )
    async for ready in _closed(subject):
        yield ready


# ---- ldap (a real slapd) ------------------------------------------------------------------------


@pytest.fixture
async def ldap_subject(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Subject:
    server: Slapd = request.getfixturevalue("slapd")  # skips without slapd (fails under CI)
    monkeypatch.setenv("TK_CONTRACT_LDAP_PASSWORD", SERVICE_PASSWORD)
    settings = {
        "type": "ldap",
        "flavor": "openldap",
        "url": server.ldap_url,
        "ca_file": server.ca_file,
        "bind_dn": SERVICE_DN,
        "bind_password_env": "TK_CONTRACT_LDAP_PASSWORD",
        "user_base": PEOPLE,
        "group_base": GROUPS,
        "operation_timeout": 5,
    }
    alice_dn = f"uid=alice,{PEOPLE}"
    plugin = plugin_of("ldap")
    return Subject(
        plugin=plugin,
        settings=settings,
        connector=built(plugin, settings),
        target=Principal(id="alice", display_name="Alice"),
        action=Action.RESET_PASSWORD,
        changes=lambda: json.dumps(server.read(alice_dn, "modifyTimestamp", "entryCSN")),
        credentials=[SERVICE_PASSWORD],
    )


# ---- aws_iam (moto behind a fault-injecting proxy) ---------------------------------------------

_IAM_CHANGES = {"CreateAccessKey", "UpdateAccessKey", "DeleteAccessKey", "TagUser", "UntagUser"}


@pytest.fixture
def aws_iam_subject(request: pytest.FixtureRequest) -> Subject:
    proxy: FaultyIam = request.getfixturevalue("aws")
    client = request.getfixturevalue("iam")
    user_with_keys(client, "Active")
    settings = {
        "type": "aws_iam",
        "region": "us-east-1",
        "endpoint_url": proxy.url,
        "grace_period": "7d",
        "read_timeout": 2,
        "throttle_retries": 2,
    }
    plugin = plugin_of("aws_iam")
    return Subject(
        plugin=plugin,
        settings=settings,
        connector=built(plugin, settings),
        target=BOT,
        action=Action.ROTATE_SECRET,
        changes=lambda: (
            tuple(c.action for c in proxy.calls if c.action in _IAM_CHANGES),
            json.dumps([keys_of(client), tags_of(client)], sort_keys=True),
        ),
        credentials=[os.environ["AWS_SECRET_ACCESS_KEY"]],
        checked=built(plugin, settings | {"endpoint_url": request.getfixturevalue("moto_url")}),
        refuse_next=lambda: proxy.on("CreateAccessKey", "deny"),
        lose_next=lambda: proxy.on("CreateAccessKey", "lose-answer"),
    )


# ---- vault --------------------------------------------------------------------------------------


@pytest.fixture
def vault_subject(request: pytest.FixtureRequest) -> Subject:
    standin: VaultStandIn = request.getfixturevalue("vault")
    token: str = request.getfixturevalue("root_token")
    role = standin.add_role("billing-api")
    standin.issue(role)
    settings = {
        "type": "vault",
        "url": standin.url,
        "token_env": TOKEN_ENV,
        "timeout": 2,
        "targets": TARGETS,
    }

    def changes() -> Hashable:
        return tuple(
            (m, p)
            for m, p in standin.calls()
            if m not in ("GET", "LIST") and ("secret-id" in p or "/data/" in p)
        )

    plugin = plugin_of("vault")
    return Subject(
        plugin=plugin,
        settings=settings,
        connector=built(plugin, settings),
        target=BILLING,
        action=Action.ROTATE_SECRET,
        changes=changes,
        credentials=[token],
        refuse_next=lambda: standin.fail("POST", SECRET_ID_PATH, 403, "permission denied"),
        lose_next=lambda: standin.hang("POST", SECRET_ID_PATH, apply=True),
    )


# ---- sandbox ------------------------------------------------------------------------------------


@pytest.fixture
def sandbox_subject() -> Subject:
    """The sandbox is its own stand-in: ``fail_actions`` / ``unknown_actions`` inject."""
    settings: dict[str, Any] = {"type": "sandbox"}
    plugin = plugin_of("sandbox")
    subject = Subject(
        plugin=plugin,
        settings=settings,
        connector=built(plugin, settings),
        target=Principal(id="alice", display_name="Alice", kind=PrincipalKind.HUMAN),
        action=Action.RESET_PASSWORD,
        changes=lambda: (),
        credentials=[],
    )

    def rebuilt(setting: str) -> Inject:
        def inject() -> None:
            subject.settings = settings | {setting: [str(subject.action)]}
            subject.connector = built(plugin, subject.settings)

        return inject

    def recorded() -> Hashable:
        connector = subject.connector
        assert isinstance(connector, SandboxConnector)  # it records what it is asked
        return tuple(c.target_id for c in connector.changes if c.outcome is Outcome.COMPLETED)

    subject.changes = recorded
    subject.refuse_next = rebuilt("fail_actions")
    subject.lose_next = rebuilt("unknown_actions")
    return subject


SUBJECTS = ("okta", "entra", "google", "webhook", "ldap", "aws_iam", "vault", "sandbox")
"""Every connector under contract: each has a ``<type>_subject`` fixture above."""


@pytest.fixture(params=SUBJECTS)
def subject(request: pytest.FixtureRequest) -> Subject:
    found: Subject = request.getfixturevalue(f"{request.param}_subject")
    return found
