"""REDIS_URL with TLS (`rediss://`) and an ACL user (issue 13).

A TLS-only Valkey started by the test, its certificate signed by a throwaway CA made here, its
default user off and a `twokey` user limited to twokey's keys and commands as README documents.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from app.cli import main
from app.domain.models import RequestState
from app.store.connect import connect
from tests.helpers import build_core, chat
from tests.valkey_servers import Tls, make_tls, start_tls_server, tls_server_binary

PASSWORD = "a-long-redis-password"
AUDIT_KEY = "a-test-audit-key-that-is-long-enough"
# The ACL README recommends: twokey's keys only, no dangerous commands but the few it needs.
TWOKEY_ACL = f"user twokey on >{PASSWORD} ~{{tk*:* ~tk*:* +@all -@dangerous +info +config|get"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Tls, int]]:
    binary = tls_server_binary()
    if binary is None:
        pytest.skip("no Redis or Valkey server built with TLS here")
    tls = make_tls(tmp_path)
    procs, port = start_tls_server(tmp_path, tls, [TWOKEY_ACL], binary)
    try:
        yield tls, port
    finally:
        procs.stop()


def url(tls: Tls, port: int, password: str = PASSWORD) -> str:
    return f"rediss://twokey:{password}@127.0.0.1:{port}/0?ssl_ca_certs={tls.ca}"


async def test_a_workflow_over_tls_as_an_acl_user(tls_server: tuple[Tls, int]) -> None:
    tls, port = tls_server
    client = connect(url(tls, port), decode_responses=True, socket_timeout=5)
    try:
        core = build_core(client, "tktls")
        assert (await core.store.check_eviction_policy()) == "noeviction"
        await core.store.check_persistence()
        rid = await core.open_mfa_reset()
        await core.service.confirm_owner(chat("alice"), rid)
        decision = await core.service.approve(chat("carol"), rid)
        assert decision.request.state is RequestState.COMPLETED
        assert len(core.connector.changes) == 1
        # The ACL holds: keys outside twokey's namespace are refused.
        with pytest.raises(ResponseError, match="no permissions"):
            await client.set("other-app:key", "1")
    finally:
        await client.aclose()


async def test_tls_refuses_a_wrong_password_and_an_unknown_ca(
    tls_server: tuple[Tls, int], tmp_path: Path
) -> None:
    tls, port = tls_server
    wrong = connect(url(tls, port, "not-the-password"), socket_timeout=5)
    with pytest.raises(AuthenticationError):
        await wrong.ping()
    await wrong.aclose()
    (tmp_path / "other").mkdir()
    other = make_tls(tmp_path / "other")
    stranger = connect(url(other, port), socket_timeout=5)
    with pytest.raises(ConnectionError):
        await stranger.ping()
    await stranger.aclose()


async def test_twokey_audit_verify_over_tls(
    tls_server: tuple[Tls, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tls, port = tls_server
    monkeypatch.setenv("REDIS_URL", url(tls, port))
    monkeypatch.setenv("TWOKEY_NAMESPACE", "tkcli")
    monkeypatch.setenv("TWOKEY_AUDIT_KEY", AUDIT_KEY)
    monkeypatch.setenv("TWOKEY_DATA_DIR", str(tmp_path))
    client = connect(url(tls, port), decode_responses=True)
    try:
        core = build_core(client, "tkcli")
        rid = await core.open_mfa_reset()
        await core.service.confirm_owner(chat("alice"), rid)
    finally:
        await client.aclose()
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0
