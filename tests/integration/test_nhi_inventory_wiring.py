"""An NHI inventory beside Okta, wired by build_runtime: rotate-secret on an inventory NHI opens,
and its owner (an Okta person) is the one asked to confirm and the one who gets the secret.

Okta is the local stand-in of the connector suite (every request checked against Okta's
published spec); Redis is real; the change itself is made by a sandbox connector.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_core import OpenAPI

from app.bootstrap import Runtime, StartupError, build_runtime
from app.cli import main
from app.connectors.inventory import DirectoryWithInventory
from app.connectors.okta import OktaConnector
from app.connectors.sandbox import SandboxConnector
from app.domain.errors import NotAllowed, NotFound
from app.domain.models import Action, ChatUser, PrincipalKind, RequestState
from app.notify import RecordingNotifier
from app.settings import Settings
from app.store.directory_cache import CachedDirectory
from tests.connectors.okta_standin import OktaStandIn, load_okta_spec, okta_group, okta_user

TOKEN = "00TESTssws-" + "inv3n" * 6
TOKEN_ENV = "TK_INVENTORY_OKTA_TOKEN"
AUDIT_KEY = "a-test-audit-key-that-is-long-enough"

POLICY = """\
version: 1
reason_codes: [scheduled-rotation]
roles:
  helpdesk: [helpdesk]
  approver: [helpdesk-leads]
  security: [security]
tiers:
  standard:
    approvals: 1
  production-nhi:
    approvals: 1
    approver_role: security
    alert_security: true
rules:
  - name: production-nhi
    when: {target_tags: [production]}
    tier: production-nhi
  - name: default
    tier: standard
"""

INVENTORY = """\
version: 1
nhis:
  - name: billing-api
    display_name: Billing API (AWS access key)
    owner: alice@example.com          # her Okta login: twokey must use her Okta id
    tags: [production]
    system: aws
  - name: orphan-key
    owner: 00ugone00000               # nobody in Okta
    system: aws
"""

PEOPLE = {
    "alice": ("00ualice0001", "Staff"),
    "bob": ("00ubob000001", "helpdesk"),
    "carol": ("00ucarol0001", "helpdesk-leads"),
    "erin": ("00uerin00001", "security"),
}


def person(name: str) -> ChatUser:
    return ChatUser(platform="slack", user_id=f"U{name.upper()}", email=f"{name}@example.com")


@pytest.fixture(scope="module")
def okta_spec() -> OpenAPI:
    return load_okta_spec()


@pytest.fixture
async def okta(okta_spec: OpenAPI, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OktaStandIn]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    standin = OktaStandIn(okta_spec, api_token=TOKEN)
    for name, (user_id, group) in PEOPLE.items():
        user = okta_user(user_id, f"{name}@example.com", name.title(), "Example")
        standin.add_user(json.loads(json.dumps(user)), [okta_group(f"00g{group[:8]}", group)])
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()
    assert standin.violations == [], "requests outside Okta's documented API"


def write_files(folder: Path, okta: OktaStandIn, inventory: str = INVENTORY) -> tuple[Path, Path]:
    connectors: list[dict[str, Any]] = [
        {"type": "okta", "org_url": okta.base_url, "api_token_env": TOKEN_ENV, "timeout": 2},
        {"type": "sandbox", "name": "rotator"},
    ]
    policy = folder / "policy.yaml"
    policy.write_text(POLICY + yaml.safe_dump({"connectors": connectors}, sort_keys=False))
    nhis = folder / "nhi-inventory.yaml"
    nhis.write_text(inventory)
    return policy, nhis


def settings_for(policy: Path, nhis: Path, redis_url: str, namespace: str) -> Settings:
    return Settings(
        _env_file=None,
        REDIS_URL=redis_url,
        TWOKEY_NAMESPACE=namespace,
        TWOKEY_AUDIT_KEY=AUDIT_KEY,
        TWOKEY_ACCEPT_EVICTION_RISK=True,
        TWOKEY_POLICY=policy,
        TWOKEY_DIRECTORY=nhis,
    )


@pytest.fixture
async def runtime(
    okta: OktaStandIn, tmp_path: Path, redis_url: str, namespace: str
) -> AsyncIterator[Runtime]:
    policy, nhis = write_files(tmp_path, okta)
    built = await build_runtime(settings_for(policy, nhis, redis_url, namespace))
    try:
        yield built
    finally:
        await built.close()


async def test_the_inventory_sits_beside_the_cached_okta_directory(runtime: Runtime) -> None:
    directory = runtime.directory
    assert isinstance(directory, DirectoryWithInventory)
    assert isinstance(directory.people, CachedDirectory)
    assert isinstance(directory.people.inner, OktaConnector)
    assert directory.people_name == "okta"
    (alice,) = await directory.find_by_email("alice@example.com")
    assert alice.id == "00ualice0001" and alice.groups == {"Staff"}


async def test_rotate_secret_on_an_inventory_nhi_asks_its_okta_owner(
    runtime: Runtime, okta: OktaStandIn
) -> None:
    recorder = RecordingNotifier()
    runtime.notifier.add(recorder)

    opened = await runtime.service.open(
        person("bob"), "nhi:billing-api", "rotate-secret", "INC-1234", "scheduled-rotation"
    )
    request = opened.request
    assert request.state is RequestState.PENDING
    assert (request.target_id, request.target_kind) == ("nhi:billing-api", PrincipalKind.NHI)
    assert (request.target_system, request.plan.tier) == ("aws", "production-nhi")
    assert request.owner_id == "00ualice0001"  # Okta's id for the login written in the file
    assert request.requester_id == "00ubob000001"
    assert [s[1] for s in recorder.said("post_request")] == [request.id]
    assert recorder.said("alert_security"), "a production NHI alerts security"
    # the owner was looked up in Okta by the login the inventory names
    assert any(r.path == "/api/v1/users/alice@example.com" for r in okta.calls("getUser"))

    for not_the_owner in ("bob", "carol", "erin"):
        with pytest.raises(NotAllowed):
            await runtime.service.confirm_owner(person(not_the_owner), request.id)
    confirmed = await runtime.service.confirm_owner(person("alice"), request.id)
    assert confirmed.request.owner_confirmed_at is not None
    with pytest.raises(NotAllowed):  # helpdesk-leads is not the security role this tier needs
        await runtime.service.approve(person("carol"), request.id)
    done = await runtime.service.approve(person("erin"), request.id)

    assert done.request.state is RequestState.COMPLETED
    rotator = runtime.connectors[1]
    assert isinstance(rotator, SandboxConnector)
    assert [(c.action, c.target_id) for c in rotator.changes] == [
        (Action.ROTATE_SECRET, "nhi:billing-api")
    ]
    assert recorder.secrets_delivered == [(request.id, "00ualice0001")]
    assert not okta.changes, "Okta itself was never asked to change anything"


async def test_an_nhi_whose_owner_okta_does_not_know_is_refused(
    runtime: Runtime, okta: OktaStandIn
) -> None:
    with pytest.raises(NotAllowed, match="has no owner of record"):
        await runtime.service.open(
            person("bob"), "nhi:orphan-key", "rotate-secret", "INC-1235", "scheduled-rotation"
        )
    assert any(r.path == "/api/v1/users/00ugone00000" for r in okta.calls("getUser"))
    with pytest.raises(NotFound, match="No non-human identity called 'nope'"):
        await runtime.service.open(
            person("bob"), "nhi:nope", "rotate-secret", "INC-1236", "scheduled-rotation"
        )
    assert await runtime.store.open_requests() == []


async def test_a_sandbox_directory_file_beside_okta_stops_start_up(
    okta: OktaStandIn, tmp_path: Path, redis_url: str, namespace: str
) -> None:
    sandbox_file = (
        "people: [{id: alice, email: alice@example.com}]\nnhis: [{name: x, owner: alice}]\n"
    )
    policy, nhis = write_files(tmp_path, okta, sandbox_file)
    with pytest.raises(StartupError) as caught:
        await build_runtime(settings_for(policy, nhis, redis_url, namespace))
    assert str(caught.value) == (
        f"directory file {nhis} has 1 problem:\n  - people: an NHI inventory lists no people: "
        "beside a real directory, people (and the owners named here) come from that directory; "
        "remove `people:`"
    )


async def test_policy_explain_uses_the_same_directory_as_serve(
    okta: OktaStandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy, nhis = write_files(tmp_path, okta)
    monkeypatch.setenv("TWOKEY_POLICY", str(policy))
    monkeypatch.setenv("TWOKEY_DIRECTORY", str(nhis))
    argv = ["policy", "explain", "--action", "rotate-secret", "--target", "nhi:billing-api"]

    # main runs its own event loop; the stand-in keeps answering on this one meanwhile
    code = await asyncio.to_thread(main, [*argv, "--requester", "bob@example.com"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "Billing API (AWS access key) (nhi:billing-api), a non-human identity" in out
    assert "owner confirmation by 00ualice0001, the owner of record" in out
    assert "Requester Bob Example (00ubob000001) may open this request" in out
    looked_up = {r.path for r in okta.calls("getUser")}
    assert {"/api/v1/users/bob@example.com", "/api/v1/users/alice@example.com"} <= looked_up
