"""A help-desk insider against the core: refused attempts leave a trace, a service account's
mailbox is no person, and an NHI's secret never goes to a former owner.

Each test goes through the service (`TwoKey`) on a real Redis with the sandbox directory.
"""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from app.connectors.sandbox import SandboxDirectory
from app.domain.errors import IdentityUnsure, NotAllowed, SeparationOfDuties
from app.domain.models import ChatUser, Principal, PrincipalKind, RequestState
from app.store.keys import SHARDS
from tests.helpers import Core, build_core, chat


@pytest.fixture
def core(redis_client: aioredis.Redis, namespace: str) -> Core:
    return build_core(redis_client, namespace)


async def refused_opens(core: Core) -> list[tuple[str, str, str, str]]:
    """(actor, target, action, reason) of every open_refused event, in every shard."""
    found = []
    for shard in range(SHARDS):
        for _, fields in await core.redis.xrange(core.keys.audit(shard)):
            event = json.loads(fields["e"])
            if event["kind"] == "open_refused":
                found.append((event["actor"], event["target"], event["action"], event["reason"]))
    return found


def alerts(core: Core) -> list[str]:
    return [text for _, _, text in core.notifier.said("alert_security")]


async def test_an_agent_opening_on_their_own_account_from_another_chat_account_is_audited(
    core: Core,
) -> None:
    """Bob on Slack names his own Teams account (its email in other case): one person, so
    refused, and the attempt is in the trail and in front of security."""
    bob_on_teams = ChatUser(platform="teams", user_id="aad-bob", email="BOB@Example.com")
    with pytest.raises(SeparationOfDuties):
        await core.service.open(chat("bob"), bob_on_teams, "reset-mfa", "INC-1234", "lost-device")

    assert await refused_opens(core) == [("bob", "bob", "reset-mfa", "sod")]
    assert any("Refused request by Bob Brown" in text for text in alerts(core))


async def test_break_glass_by_someone_without_the_role_is_audited_and_alerted(core: Core) -> None:
    with pytest.raises(NotAllowed, match="breakglass role"):
        await core.service.breakglass(
            chat("bob"), chat("grace"), "reset-mfa", "INC-1234", "the CEO is locked out, urgent!"
        )

    assert await refused_opens(core) == [("bob", "grace", "reset-mfa", "breakglass_role")]
    assert any("Refused request by Bob Brown" in text for text in alerts(core))


async def test_opening_without_the_help_desk_role_is_audited(core: Core) -> None:
    """Carol approves but may not open: her try at another account is recorded."""
    with pytest.raises(NotAllowed, match="helpdesk role"):
        await core.service.open(chat("carol"), chat("grace"), "unlock", "INC-1234", "locked-out")

    assert await refused_opens(core) == [("carol", "grace", "unlock", "role")]


async def test_a_chat_account_resolving_to_a_non_human_identity_can_do_nothing(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """A service account with a mailbox (and, by mistake, the approvers' group) is no person:
    a chat account with its email cannot be the second key."""
    robot = Principal(
        id="nhi:svc-helper",
        kind=PrincipalKind.NHI,
        email="svc-helper@example.com",
        groups=frozenset({"helpdesk-leads"}),
        owner_id="ivan",
    )
    directory = SandboxDirectory([*SandboxDirectory.example().principals, robot])
    core = build_core(redis_client, namespace, directory=directory)
    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)

    with pytest.raises(IdentityUnsure, match="non-human identity"):
        await core.service.approve(chat("svc-helper"), rid)

    request = await core.store.get(rid)
    assert request is not None and request.state is RequestState.PENDING
    assert not request.approvals and core.connector.changes == []


async def test_an_nhi_handed_to_a_new_owner_before_the_change_runs_does_not_run(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """Ivan confirmed a rotation of the CI deployer, then the directory made Alice its owner:
    his confirmation no longer speaks for the owner, and the new secret must not go to him."""
    directory = SandboxDirectory.example()
    core = build_core(redis_client, namespace, directory=directory)
    opened = await core.service.open(
        chat("bob"), "nhi:ci-deployer", "rotate-secret", "INC-1234", "scheduled-rotation"
    )
    rid = opened.request.id
    await core.service.confirm_owner(chat("ivan"), rid)
    handed_over = SandboxDirectory(
        p.model_copy(update={"owner_id": "alice"}) if p.id == "nhi:ci-deployer" else p
        for p in directory.principals
    )
    core.service.directory = handed_over

    decided = await core.service.approve(chat("carol"), rid)

    assert decided.request.state is RequestState.FAILED
    assert "owner of record" in (decided.request.outcome_detail or "")
    assert core.connector.changes == [] and core.notifier.secrets_delivered == []
    assert any("owner of record" in text for text in alerts(core))


async def test_a_damaged_event_counter_stops_every_change_instead_of_hiding_it(
    core: Core,
) -> None:
    """Invariant 4: an insider set the shard's event counter to a word. The approval was
    written, then its event's INCR failed: a change with no event, and the sweeper's claim
    after it the same. Now nothing is changed there, and the person hears why."""
    from app.domain.errors import Unavailable
    from app.store.keys import shard_of_request

    rid = await core.open_mfa_reset()
    await core.service.confirm_owner(chat("alice"), rid)
    shard = shard_of_request(rid)
    events = await core.redis.xlen(core.keys.audit(shard))
    await core.redis.set(core.keys.audit_seq(shard), "x")
    with pytest.raises(Unavailable, match="cannot write its audit trail"):
        await core.service.approve(chat("carol"), rid)
    await core.service.expire_due()
    stored = await core.store.get(rid)
    assert stored is not None and stored.state is RequestState.PENDING
    assert stored.approvals == ()
    assert await core.redis.xlen(core.keys.audit(shard)) == events
    assert core.connector.changes == []


async def test_a_shard_whose_trail_is_damaged_does_not_hold_up_the_sweep(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """Requests due in the damaged shard fail one by one (logged); the others are swept."""
    import asyncio

    from app.store.keys import shard_of_request
    from tests.helpers import policy_text

    text = policy_text(request_ttl="2s", remind_after="", escalate_after="").replace(
        "    request_ttl: 1h\n", "    request_ttl: 2s\n"
    )
    core = build_core(redis_client, namespace, policy=text)
    damaged = await core.open_mfa_reset("alice")
    swept = await core.open_mfa_reset("grace")
    assert shard_of_request(damaged) != shard_of_request(swept)
    await core.redis.set(core.keys.audit_seq(shard_of_request(damaged)), "x")
    await asyncio.sleep(2.2)
    report = await core.service.expire_due()
    assert report.changes.get("FAILED") == 1
    expired = await core.store.get(swept)
    assert expired is not None and expired.state is RequestState.EXPIRED
    stuck = await core.store.get(damaged)
    assert stuck is not None and stuck.state is RequestState.PENDING
