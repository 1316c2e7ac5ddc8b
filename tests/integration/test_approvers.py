"""Who may approve a request is found from the approver groups' members (Directory.members),
never from an empty search: a directory of thousands still finds every approver, and only
those who may decide this request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from app.connectors.sandbox import SandboxDirectory
from app.domain.errors import NotAllowed
from app.domain.models import Action, Principal, PrincipalKind, RequestState
from tests.helpers import Core, build_core, chat, policy_text


def crowded() -> SandboxDirectory:
    """The example company, then 600 staff before the two leads who may approve."""
    example = SandboxDirectory.example().principals
    people = [p for p in example if p.id not in ("carol", "dave")]
    staff = [
        Principal(
            id=f"staff{n:03d}",
            kind=PrincipalKind.HUMAN,
            display_name=f"Staff {n}",
            email=f"staff{n:03d}@example.com",
            groups=frozenset({"staff"}),
        )
        for n in range(600)
    ]
    leads = [p for p in example if p.id in ("carol", "dave")]
    return SandboxDirectory([*people, *staff, *leads])


async def test_every_approver_is_found_however_large_the_directory(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(
        redis_client,
        namespace,
        policy=policy_text(dm_approvers=True),
        directory=crowded(),
    )
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
    )
    approvers = await core.service.approvers_for(opened.request)
    assert sorted(p.id for p in approvers) == ["carol", "dave"]


async def test_a_lead_whose_own_account_it_is_is_not_asked(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, policy=policy_text(dm_approvers=True))
    opened = await core.service.open(
        chat("bob"), chat("carol"), Action.RESET_MFA.value, "INC-1234", "lost-device"
    )
    approvers = await core.service.approvers_for(opened.request)
    assert [p.id for p in approvers] == ["dave"]


def without(*gone: str) -> SandboxDirectory:
    """The example company with these people disabled (they left)."""
    return SandboxDirectory(
        [
            p.model_copy(update={"disabled": True}) if p.id in gone else p
            for p in SandboxDirectory.example().principals
        ]
    )


async def refused_opens(core: Core) -> list[tuple[str, str]]:
    """(actor, reason) of every opening the trail records as refused."""
    found = []
    for shard in range(16):
        for _, fields in await core.redis.xrange(core.keys.audit(shard)):
            event = json.loads(fields["e"])
            if event["kind"] == "open_refused":
                found.append((event["actor"], event["reason"]))
    return found


async def test_a_request_nobody_could_approve_is_refused_at_once_and_says_why(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """grace is an admin: two of security must approve, and frank has left, so only erin
    could. The agent hears why at once instead of "pending" until it expires."""
    core = build_core(redis_client, namespace, directory=without("frank"))
    with pytest.raises(NotAllowed) as refused:
        await core.service.open(
            chat("bob"), chat("grace"), Action.RESET_MFA.value, "INC-1234", "lost-device"
        )
    assert str(refused.value) == (
        "Nobody could approve this, so nothing was opened: tier Privileged account needs 2 "
        "approvals from the security role, and only 1 person in the directory holds it apart "
        "from you, the account and its owner. Ask whoever keeps twokey's policy to add "
        "approvers to that role's groups."
    )
    assert [s[0] for s in core.notifier.sent] == ["alert_security"]
    assert await refused_opens(core) == [("bob", "no_approvers")]
    assert (await core.service.list_for(chat("bob"))).mine == []


async def test_the_escalation_role_counts_among_those_who_could_approve(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """Both leads have left, but a standard request escalates to security: it can still be
    approved, so it opens."""
    core = build_core(redis_client, namespace, directory=without("carol", "dave"))
    opened = await core.service.open(
        chat("bob"), chat("alice"), Action.RESET_MFA.value, "INC-1234", "lost-device"
    )
    assert opened.request.state is RequestState.PENDING


async def test_with_no_escalation_the_parties_themselves_do_not_count(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """carol asks for dave's reset: the only other lead is dave himself, the account."""
    directory = SandboxDirectory(
        [
            p.model_copy(update={"groups": p.groups | {"helpdesk"}}) if p.id == "carol" else p
            for p in SandboxDirectory.example().principals
        ]
    )
    core = build_core(
        redis_client, namespace, policy=policy_text(escalate_after=""), directory=directory
    )
    with pytest.raises(NotAllowed, match="needs 1 approval from the approver role, and nobody"):
        await core.service.open(
            chat("carol"), chat("dave"), Action.RESET_MFA.value, "INC-1234", "lost-device"
        )


class Silent(SandboxDirectory):
    """A directory that never says who is in a group."""

    async def members(self, groups: Sequence[str], limit: int) -> list[Principal]:
        await asyncio.sleep(3600)
        return []


async def test_a_directory_that_does_not_say_who_could_approve_does_not_stop_the_opening(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core = build_core(redis_client, namespace, directory=Silent(without("frank").principals))
    opened = await core.service.open(
        chat("bob"), chat("grace"), Action.RESET_MFA.value, "INC-1234", "lost-device"
    )
    assert opened.request.state is RequestState.PENDING
