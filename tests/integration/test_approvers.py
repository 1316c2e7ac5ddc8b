"""Who may approve a request is found from the approver groups' members (Directory.members),
never from an empty search: a directory of thousands still finds every approver, and only
those who may decide this request."""

from __future__ import annotations

import redis.asyncio as aioredis

from app.connectors.sandbox import SandboxDirectory
from app.domain.models import Action, Principal, PrincipalKind
from tests.helpers import build_core, chat, policy_text


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
