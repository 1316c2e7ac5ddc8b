"""One request whose directory re-check fails in an unexpected way must not hold up the rest.

Before a claim, the givers of every gate are looked up again. A directory that answers "two
accounts have this id" (LDAP raises IdentityUnsure) made `execute` raise: the approver got an
error though their approval was stored, the request stayed ready and due, and every sweeper
pass stopped at it, so nothing after it (in its shard or any later one) was expired,
escalated, claimed or declared interrupted until its own request TTL ran out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as aioredis

from app.connectors.sandbox import SandboxDirectory
from app.domain.errors import IdentityUnsure
from app.domain.models import Action, Principal, RequestState
from tests.helpers import build_core, chat, policy_text


class Troubled(SandboxDirectory):
    """The example directory; looking up someone in ``troubled`` raises ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(SandboxDirectory.example().principals)
        self.error = error
        self.troubled: set[str] = set()

    async def get(self, principal_id: str) -> Principal | None:
        if principal_id in self.troubled:
            raise self.error
        return await super().get(principal_id)

    async def members(self, groups: Sequence[str], limit: int) -> list[Principal]:
        return await super().members(groups, limit)


async def two_requests(
    redis_client: aioredis.Redis, namespace: str, error: Exception
) -> tuple[object, str, str]:
    """R2 (grace, privileged, 2 s to live) just waits; R1 (alice) gets its owner's yes."""
    text = policy_text().replace("    request_ttl: 1h\n", "    request_ttl: 2s\n", 1)
    directory = Troubled(error)
    core = build_core(redis_client, namespace, policy=text, directory=directory)
    waiting = await core.service.open(
        chat("bob"), chat("grace"), Action.UNLOCK.value, "INC-2000", "locked-out"
    )
    approved = await core.service.open(
        chat("bob"), chat("alice"), Action.UNLOCK.value, "INC-2001", "locked-out"
    )
    await core.service.confirm_owner(chat("alice"), approved.request.id)
    directory.troubled.add("carol")
    return core, approved.request.id, waiting.request.id


async def test_a_directory_unsure_of_an_approver_ends_the_request_truthfully(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    core, r1, r2 = await two_requests(
        redis_client, namespace, IdentityUnsure("2 directory accounts have the id 'carol'")
    )
    decision = await core.service.approve(chat("carol"), r1)  # type: ignore[attr-defined]
    assert decision.request.state is RequestState.FAILED
    assert "could not say who gave the gates; nothing was changed" in (
        decision.request.outcome_detail or ""
    )
    assert core.connector.changes == []  # type: ignore[attr-defined]
    await asyncio.sleep(2.2)
    await core.service.expire_due()  # type: ignore[attr-defined]
    swept = await core.store.get(r2)  # type: ignore[attr-defined]
    assert swept is not None and swept.state is RequestState.EXPIRED


async def test_a_request_no_one_can_read_leaves_the_sweep_going(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """alice's request was damaged in Redis (a state twokey never writes): reading it fails
    on every pass. grace's request, due too, is still expired."""
    text = policy_text(request_ttl="2s", remind_after="", escalate_after="").replace(
        "    request_ttl: 1h\n", "    request_ttl: 2s\n"
    )
    core = build_core(redis_client, namespace, policy=text)
    damaged = await core.open_mfa_reset("alice")
    waiting = await core.open_mfa_reset("grace")
    await redis_client.hset(core.keys.request(damaged), "state", "bogus")
    await asyncio.sleep(2.2)
    report = await core.service.expire_due()
    assert report.changes.get("FAILED") == 1
    swept = await core.store.get(waiting)
    assert swept is not None and swept.state is RequestState.EXPIRED
