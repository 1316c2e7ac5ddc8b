"""The Vault connector against a local stand-in of Vault's HTTP API (tests/nhi/vault_standin.py).

Each test checks the outcome and words the core gets, what changed in the stand-in's Vault, and
the requests the connector sent (method, path, body) against Vault's documented shapes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.connectors.base import ConnectorConfigError
from app.connectors.vault import METADATA_NHI, VaultConnector, build
from app.domain.models import Action, Principal, PrincipalKind
from app.ports import Outcome
from tests.nhi import assert_never_logged, capture_everything, nhi, rotation_request
from tests.nhi.vault_standin import VaultStandIn

TOKEN_ENV = "TWOKEY_TEST_VAULT_TOKEN"
ROLE_ID_ENV = "TWOKEY_TEST_VAULT_ROLE_ID"
SECRET_ID_ENV = "TWOKEY_TEST_VAULT_SECRET_ID"

BILLING = nhi("nhi:billing-api", "vault")
SHARED = nhi("nhi:etl-worker", "vault")
REPORTS_DB = nhi("nhi:reports-db", "vault")

TARGETS = {
    BILLING.id: {"kind": "approle", "role": "billing-api"},
    SHARED.id: {"kind": "approle", "role": "etl", "old_accessor_from": "metadata"},
    REPORTS_DB.id: {"kind": "kv", "path": "apps/reports/db", "field": "password"},
}
SECRET_ID_PATH = "/v1/auth/approle/role/billing-api/secret-id"
DESTROY_PATH = "/v1/auth/approle/role/billing-api/secret-id-accessor/destroy"
KV_PATH = "/v1/secret/data/apps/reports/db"


@pytest.fixture
def root_token(monkeypatch: pytest.MonkeyPatch) -> str:
    token = "hvs." + secrets.token_urlsafe(24)
    monkeypatch.setenv(TOKEN_ENV, token)
    return token


@pytest.fixture
async def vault(root_token: str) -> AsyncIterator[VaultStandIn]:
    standin = VaultStandIn(root_token)
    server = TestServer(standin.app(), host="127.0.0.1")
    await server.start_server()
    standin.url = f"http://127.0.0.1:{server.port}"
    try:
        yield standin
    finally:
        standin.release.set()
        await server.close()
    assert standin.shape_errors == [], "the connector sent a request Vault does not document"


def connector(vault: VaultStandIn, **settings: Any) -> VaultConnector:
    config: dict[str, Any] = {
        "type": "vault",
        "url": vault.url,
        "token_env": TOKEN_ENV,
        "timeout": 2,
        "targets": TARGETS,
    }
    return build(config | settings)


def bodies(vault: VaultStandIn, method: str, path: str) -> list[Any]:
    return [r.body for r in vault.requests if (r.method, r.path) == (method, path)]


# ---- AppRole secret-id ------------------------------------------------------------------------


async def test_a_new_secret_id_replaces_every_old_one_by_accessor(
    vault: VaultStandIn, root_token: str
) -> None:
    role = vault.add_role("billing-api")
    old = [vault.issue(role), vault.issue(role)]

    result = await connector(vault).execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    new_secret_id = result.secret.get_secret_value()
    (new,) = role.secret_ids.values()
    assert new.secret_id == new_secret_id
    assert new.metadata == {METADATA_NHI: BILLING.id, "twokey_request": "TK-7R0TATE1"}
    assert f"new secret-id issued (accessor {new.accessor})" in result.detail
    assert "destroyed the 2 previous secret-ids by accessor" in result.detail
    assert new_secret_id not in result.detail
    assert result.secret_label == "new Vault secret-id for AppRole role billing-api"
    assert vault.calls() == [
        ("LIST", SECRET_ID_PATH),
        ("POST", SECRET_ID_PATH),
        ("POST", DESTROY_PATH),
        ("POST", DESTROY_PATH),
    ]
    (generated,) = bodies(vault, "POST", SECRET_ID_PATH)
    assert set(generated) == {"metadata"}
    assert isinstance(generated["metadata"], str)  # documented as a JSON-formatted string
    assert json.loads(generated["metadata"])[METADATA_NHI] == BILLING.id
    destroyed = bodies(vault, "POST", DESTROY_PATH)
    assert sorted(b["secret_id_accessor"] for b in destroyed) == sorted(s.accessor for s in old)
    assert all(r.headers["X-Vault-Token"] == root_token for r in vault.requests)


async def test_a_role_without_secret_ids_gets_its_first(vault: VaultStandIn) -> None:
    role = vault.add_role("billing-api")
    result = await connector(vault).execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )
    assert result.outcome is Outcome.COMPLETED, result.detail
    assert "no previous secret-id" in result.detail
    assert len(role.secret_ids) == 1


async def test_metadata_mode_destroys_only_this_nhis_secret_ids(vault: VaultStandIn) -> None:
    role = vault.add_role("etl")
    mine = vault.issue(role, {METADATA_NHI: SHARED.id})
    someone_elses = vault.issue(role, {METADATA_NHI: "nhi:other"})
    untagged = vault.issue(role)

    result = await connector(vault).execute(Action.ROTATE_SECRET, SHARED, rotation_request(SHARED))

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert mine.accessor not in role.secret_ids
    assert {someone_elses.accessor, untagged.accessor} <= set(role.secret_ids)
    assert len(role.secret_ids) == 3
    lookups = bodies(vault, "POST", "/v1/auth/approle/role/etl/secret-id-accessor/lookup")
    assert len(lookups) == 3 and all(set(b) == {"secret_id_accessor"} for b in lookups)
    assert (
        f"destroyed {SHARED.id}'s 1 previous secret-id by accessor ({mine.accessor})"
        in result.detail
    )


async def test_signing_in_with_an_approle_uses_and_then_revokes_that_token(
    vault: VaultStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    twokey = vault.add_role("twokey")
    login_secret = vault.issue(twokey)
    monkeypatch.setenv(ROLE_ID_ENV, twokey.role_id)
    monkeypatch.setenv(SECRET_ID_ENV, login_secret.secret_id)
    role = vault.add_role("billing-api")
    vault.issue(role)

    result = await connector(
        vault, token_env=None, role_id_env=ROLE_ID_ENV, secret_id_env=SECRET_ID_ENV
    ).execute(Action.ROTATE_SECRET, BILLING, rotation_request(BILLING))

    assert result.outcome is Outcome.COMPLETED, result.detail
    first, *work, last = vault.requests
    assert (first.method, first.path) == ("POST", "/v1/auth/approle/login")
    assert first.body == {"role_id": twokey.role_id, "secret_id": login_secret.secret_id}
    assert "X-Vault-Token" not in first.headers
    session_token = work[0].headers["X-Vault-Token"]
    assert all(r.headers["X-Vault-Token"] == session_token for r in [*work, last])
    assert (last.method, last.path) == ("POST", "/v1/auth/token/revoke-self")
    assert session_token not in vault.tokens  # revoked when the rotation ended


async def test_a_wrong_approle_login_fails_before_anything_is_asked(
    vault: VaultStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    twokey = vault.add_role("twokey")
    monkeypatch.setenv(ROLE_ID_ENV, twokey.role_id)
    monkeypatch.setenv(SECRET_ID_ENV, "not-a-secret-id-of-twokey")
    vault.add_role("billing-api")

    result = await connector(
        vault, token_env=None, role_id_env=ROLE_ID_ENV, secret_id_env=SECRET_ID_ENV
    ).execute(Action.ROTATE_SECRET, BILLING, rotation_request(BILLING))

    assert result.outcome is Outcome.FAILED
    assert "sign in with twokey's AppRole" in result.detail
    assert "invalid role or secret ID" in result.detail
    assert vault.calls() == [("POST", "/v1/auth/approle/login")]


async def test_a_namespace_is_sent_with_every_request(vault: VaultStandIn) -> None:
    vault.add_role("billing-api")
    await connector(vault, namespace="team-a/").execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )
    assert vault.requests
    assert all(r.headers.get("X-Vault-Namespace") == "team-a/" for r in vault.requests)


async def test_a_static_token_is_never_revoked(vault: VaultStandIn, root_token: str) -> None:
    vault.add_role("billing-api")
    await connector(vault).execute(Action.ROTATE_SECRET, BILLING, rotation_request(BILLING))
    assert root_token in vault.tokens
    assert ("POST", "/v1/auth/token/revoke-self") not in vault.calls()


def test_what_the_connector_supports(vault: VaultStandIn) -> None:
    vault_connector = connector(vault)
    assert vault_connector.supports(Action.ROTATE_SECRET, BILLING)
    assert vault_connector.supports(Action.ROTATE_SECRET, REPORTS_DB)
    assert not vault_connector.supports(Action.UNLOCK, BILLING)
    assert not vault_connector.supports(Action.ROTATE_SECRET, nhi("nhi:unlisted", "vault"))
    assert not vault_connector.supports(Action.ROTATE_SECRET, nhi(BILLING.id, "aws"))
    person = Principal(id=BILLING.id, kind=PrincipalKind.HUMAN, system="vault")
    assert not vault_connector.supports(Action.ROTATE_SECRET, person)


async def test_an_nhi_without_a_target_fails_with_words_and_no_call(vault: VaultStandIn) -> None:
    stranger = nhi("nhi:unlisted", "vault")
    result = await connector(vault).execute(
        Action.ROTATE_SECRET, stranger, rotation_request(stranger)
    )
    assert result.outcome is Outcome.FAILED
    assert "no target is configured for nhi:unlisted" in result.detail
    assert vault.requests == []


# ---- provider errors ----------------------------------------------------------------------------


async def test_a_token_vault_refuses_fails_and_changes_nothing(
    vault: VaultStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = vault.add_role("billing-api")
    old = vault.issue(role)
    monkeypatch.setenv(TOKEN_ENV, "hvs.not-a-live-token")

    result = await connector(vault).execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )

    assert result.outcome is Outcome.FAILED
    assert result.secret is None
    assert "HTTP 403 forbidden: permission denied" in result.detail
    assert list(role.secret_ids) == [old.accessor]
    assert vault.calls() == [("LIST", SECRET_ID_PATH)]


async def test_a_missing_role_fails_with_vaults_words(vault: VaultStandIn) -> None:
    result = await connector(vault).execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )
    assert result.outcome is Outcome.FAILED
    assert 'role "billing-api" does not exist' in result.detail


async def test_a_refused_destroy_takes_the_new_secret_id_back(vault: VaultStandIn) -> None:
    role = vault.add_role("billing-api")
    old = vault.issue(role)
    vault.fail("POST", DESTROY_PATH, 403, "1 error occurred:\n\t* permission denied\n\n")

    result = await connector(vault).execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )

    assert result.outcome is Outcome.FAILED
    assert result.secret is None
    assert "permission denied" in result.detail and "destroyed again" in result.detail
    assert list(role.secret_ids) == [old.accessor]
    first, second = bodies(vault, "POST", DESTROY_PATH)
    assert first == {"secret_id_accessor": old.accessor}
    assert second["secret_id_accessor"] != old.accessor  # the new one, taken back


async def test_a_destroy_refused_after_another_succeeded_keeps_the_new_secret_id(
    vault: VaultStandIn,
) -> None:
    role = vault.add_role("billing-api")
    vault.issue(role)
    vault.issue(role)
    vault.fail("POST", DESTROY_PATH, 403, "permission denied", after=1)

    result = await connector(vault).execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )

    # One old secret-id is gone already: taking the new one back could leave the NHI without
    # the credential it uses. The owner gets the new one; a person destroys the last old one.
    assert result.outcome is Outcome.FAILED
    assert result.secret is not None
    assert result.secret.get_secret_value() in role.secret_id_values()
    assert len(role.secret_ids) == 2
    assert "destroy the old one by hand" in result.detail
    assert len(bodies(vault, "POST", DESTROY_PATH)) == 2


async def test_an_unreachable_vault_fails_and_sends_nothing(vault: VaultStandIn) -> None:
    closed = TestServer(web.Application(), host="127.0.0.1")
    await closed.start_server()
    port = closed.port
    await closed.close()
    config = {
        "type": "vault",
        "url": f"http://127.0.0.1:{port}",
        "token_env": TOKEN_ENV,
        "targets": TARGETS,
    }
    result = await build(config).execute(Action.ROTATE_SECRET, BILLING, rotation_request(BILLING))
    assert result.outcome is Outcome.FAILED
    assert "could not reach Vault" in result.detail and "nothing was sent" in result.detail


# ---- timeouts and rate limits -------------------------------------------------------------------


async def test_a_lost_answer_to_issuing_is_unknown_and_never_retried(vault: VaultStandIn) -> None:
    role = vault.add_role("billing-api")
    old = vault.issue(role)
    vault.hang("POST", SECRET_ID_PATH, apply=True)

    result = await connector(vault).execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )

    assert result.outcome is Outcome.UNKNOWN
    assert result.secret is None
    assert "may or may not have happened" in result.detail
    assert vault.calls() == [("LIST", SECRET_ID_PATH), ("POST", SECRET_ID_PATH)]
    assert old.accessor in role.secret_ids and len(role.secret_ids) == 2


async def test_a_lost_answer_to_destroy_is_unknown_but_hands_over_the_new_secret_id(
    vault: VaultStandIn,
) -> None:
    role = vault.add_role("billing-api")
    vault.issue(role)
    vault.hang("POST", DESTROY_PATH, apply=True)

    result = await connector(vault).execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )

    assert result.outcome is Outcome.UNKNOWN
    assert result.secret is not None
    assert result.secret.get_secret_value() in role.secret_id_values()
    assert len(bodies(vault, "POST", DESTROY_PATH)) == 1


async def test_a_rate_limit_is_waited_out_as_retry_after_says(vault: VaultStandIn) -> None:
    role = vault.add_role("billing-api")
    vault.rate_limit("POST", SECRET_ID_PATH, wait_seconds=1)

    result = await connector(vault).execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert len(bodies(vault, "POST", SECRET_ID_PATH)) == 2
    assert len(role.secret_ids) == 1


async def test_a_rate_limit_longer_than_twokey_waits_fails_at_once(vault: VaultStandIn) -> None:
    role = vault.add_role("billing-api")
    vault.rate_limit("POST", SECRET_ID_PATH, wait_seconds=120)

    result = await connector(vault, max_retry_wait=5).execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )

    assert result.outcome is Outcome.FAILED
    assert "429" in result.detail and "rate limit quota exceeded" in result.detail
    assert len(bodies(vault, "POST", SECRET_ID_PATH)) == 1
    assert role.secret_ids == {}


async def test_a_rate_limit_that_does_not_lift_fails_after_bounded_retries(
    vault: VaultStandIn,
) -> None:
    vault.add_role("billing-api")
    vault.rate_limit("POST", SECRET_ID_PATH, wait_seconds=0, times=5)

    result = await connector(vault, rate_limit_retries=1).execute(
        Action.ROTATE_SECRET, BILLING, rotation_request(BILLING)
    )

    assert result.outcome is Outcome.FAILED
    assert "rate-limited" in result.detail and "retries at most 1 times" in result.detail
    assert len(bodies(vault, "POST", SECRET_ID_PATH)) == 2


# ---- KV v2 ------------------------------------------------------------------------------------


async def test_a_kv_value_is_replaced_with_check_and_set(vault: VaultStandIn) -> None:
    vault.put_kv("apps/reports/db", {"username": "reports", "password": "old-1"})
    vault.put_kv("apps/reports/db", {"username": "reports", "password": "old-2"})

    result = await connector(vault).execute(
        Action.ROTATE_SECRET, REPORTS_DB, rotation_request(REPORTS_DB)
    )

    assert result.outcome is Outcome.COMPLETED, result.detail
    assert result.secret is not None
    new_value = result.secret.get_secret_value()
    assert len(new_value) == 43 and new_value not in ("old-1", "old-2")
    assert vault.kv_versions("apps/reports/db")[-1] == {
        "username": "reports",
        "password": new_value,
    }
    assert vault.calls() == [("GET", KV_PATH), ("POST", KV_PATH)]
    (written,) = bodies(vault, "POST", KV_PATH)
    assert written == {
        "options": {"cas": 2},
        "data": {"username": "reports", "password": new_value},
    }
    assert "version 3 written (was 2)" in result.detail
    assert new_value not in result.detail


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_never_followed_and_nothing_is_sent_elsewhere(
    vault: VaultStandIn, root_token: str, status: int
) -> None:
    """A standby's wrong api_addr, a proxy, or an attacker answering at Vault's address with a
    redirect: the token (X-Vault-Token, which requests keeps across hosts) and the secret
    (re-sent on 307/308) must not travel to wherever it points."""
    vault.put_kv("apps/reports/db", {"username": "reports", "password": "old-1"})
    arrived: list[tuple[str, str | None, bytes]] = []

    async def elsewhere(request: web.Request) -> web.Response:
        arrived.append((request.method, request.headers.get("X-Vault-Token"), await request.read()))
        return web.json_response({"data": {"data": {"password": "x"}, "metadata": {"version": 1}}})

    collector = web.Application()
    collector.router.add_route("*", "/{tail:.*}", elsewhere)
    other = TestServer(collector, host="127.0.0.2")
    await other.start_server()

    async def bounce(request: web.Request) -> web.Response:
        target = f"http://127.0.0.2:{other.port}{request.path_qs}"
        return web.Response(status=status, headers={"Location": target})

    front = web.Application()
    front.router.add_route("*", "/{tail:.*}", bounce)
    redirecting = TestServer(front, host="127.0.0.1")
    await redirecting.start_server()
    try:
        config = {"url": f"http://127.0.0.1:{redirecting.port}"}
        result = await connector(vault, **config).execute(
            Action.ROTATE_SECRET, REPORTS_DB, rotation_request(REPORTS_DB)
        )
    finally:
        await redirecting.close()
        await other.close()
    assert result.outcome is Outcome.FAILED, result.detail
    assert "redirect" in result.detail and "nothing was done" in result.detail
    assert root_token not in result.detail
    assert arrived == []
    assert vault.kv_versions("apps/reports/db")[-1]["password"] == "old-1"


async def test_a_missing_kv_secret_fails_and_writes_nothing(vault: VaultStandIn) -> None:
    result = await connector(vault).execute(
        Action.ROTATE_SECRET, REPORTS_DB, rotation_request(REPORTS_DB)
    )
    assert result.outcome is Outcome.FAILED
    assert "HTTP 404 not found" in result.detail
    assert vault.calls() == [("GET", KV_PATH)]


async def test_a_kv_secret_without_the_field_is_not_invented(vault: VaultStandIn) -> None:
    vault.put_kv("apps/reports/db", {"token": "abc"})
    result = await connector(vault).execute(
        Action.ROTATE_SECRET, REPORTS_DB, rotation_request(REPORTS_DB)
    )
    assert result.outcome is Outcome.FAILED
    assert "has no field 'password'" in result.detail
    assert len(vault.kv_versions("apps/reports/db")) == 1


async def test_a_concurrent_kv_write_is_never_overwritten(vault: VaultStandIn) -> None:
    vault.put_kv("apps/reports/db", {"password": "old"})
    vault.fail("POST", KV_PATH, 400, "check-and-set parameter did not match the current version")

    result = await connector(vault).execute(
        Action.ROTATE_SECRET, REPORTS_DB, rotation_request(REPORTS_DB)
    )

    assert result.outcome is Outcome.FAILED
    assert "check-and-set" in result.detail
    assert vault.kv_versions("apps/reports/db") == [{"password": "old"}]


async def test_a_lost_answer_to_a_kv_write_is_unknown(vault: VaultStandIn) -> None:
    vault.put_kv("apps/reports/db", {"password": "old"})
    vault.hang("POST", KV_PATH, apply=False)

    result = await connector(vault).execute(
        Action.ROTATE_SECRET, REPORTS_DB, rotation_request(REPORTS_DB)
    )

    assert result.outcome is Outcome.UNKNOWN
    assert result.secret is None
    assert len(bodies(vault, "POST", KV_PATH)) == 1


# ---- configuration ----------------------------------------------------------------------------


def test_a_token_in_the_policy_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConnectorConfigError, match="never written in the policy file") as caught:
        build({"type": "vault", "url": "https://vault:8200", "token": "hvs.CAESIJ-very-secret"})
    assert "very-secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"role_id_env": "ROLE_ID"}, "choose one way to sign in"),
        ({"token_env": None}, "say how twokey signs in"),
        ({"token_env": "hvs.abc"}, "is not an environment variable name"),
        ({"url": "vault.example.com"}, "is not Vault's address"),
        ({"url": "http://vault.example.com:8200"}, "uses plain http"),
        ({"targets": {}}, "targets"),
        ({"targets": {"nhi:x": {"kind": "approle"}}}, "targets.nhi:x.approle.role"),
        ({"targets": {"nhi:x": {"kind": "kv", "path": "/a/../b"}}}, "not a KV secret path"),
        ({"targets": {"nhi:x": {"kind": "ssh"}}}, "does not match any of the expected tags"),
        ({"mount": "/secret/"}, "is not a Vault mount path"),
        ({"tls": True}, "tls: unknown setting"),
    ],
)
def test_bad_settings_are_named(settings: dict[str, Any], words: str) -> None:
    config = {"type": "vault", "url": "https://vault:8200", "token_env": TOKEN_ENV}
    with pytest.raises(ConnectorConfigError, match="vault connector configuration") as caught:
        build(config | {"targets": TARGETS} | settings)
    assert words in str(caught.value)


def test_an_unset_variable_is_a_start_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = {"type": "vault", "url": "https://vault:8200", "token_env": TOKEN_ENV}
    with pytest.raises(ConnectorConfigError, match=f"{TOKEN_ENV} is not set"):
        build(config | {"targets": TARGETS})


# ---- secrets never reach the logs -------------------------------------------------------------


async def test_no_secret_reaches_the_logs(
    vault: VaultStandIn,
    root_token: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture_everything(caplog)
    twokey = vault.add_role("twokey")
    login_secret = vault.issue(twokey)
    monkeypatch.setenv(ROLE_ID_ENV, twokey.role_id)
    monkeypatch.setenv(SECRET_ID_ENV, login_secret.secret_id)
    role = vault.add_role("billing-api")
    old = vault.issue(role)
    vault.put_kv("apps/reports/db", {"username": "reports-user-x1", "password": "old-pw-9f3a"})

    by_approle = connector(
        vault, token_env=None, role_id_env=ROLE_ID_ENV, secret_id_env=SECRET_ID_ENV
    )
    issued = await by_approle.execute(Action.ROTATE_SECRET, BILLING, rotation_request(BILLING))
    written = await by_approle.execute(
        Action.ROTATE_SECRET, REPORTS_DB, rotation_request(REPORTS_DB)
    )
    vault.fail("POST", KV_PATH, 400, "check-and-set parameter did not match the current version")
    refused = await connector(vault).execute(
        Action.ROTATE_SECRET, REPORTS_DB, rotation_request(REPORTS_DB)
    )

    assert issued.secret is not None and written.secret is not None
    assert refused.outcome is Outcome.FAILED
    login_tokens = [
        r.headers["X-Vault-Token"]
        for r in vault.requests
        if "X-Vault-Token" in r.headers and r.headers["X-Vault-Token"] != root_token
    ]
    assert login_tokens
    assert_never_logged(
        caplog,
        root_token,
        twokey.role_id,
        login_secret.secret_id,
        *login_tokens,
        old.secret_id,
        issued.secret.get_secret_value(),
        written.secret.get_secret_value(),
        "old-pw-9f3a",
    )
