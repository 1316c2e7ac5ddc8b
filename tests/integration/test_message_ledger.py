"""The MessageLedger port on Redis: what chat channels remember, once, for every platform."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from app.ports import MessageRef
from app.store.keys import Keys
from app.store.ledger import RedisMessageLedger


def ledger(redis: aioredis.Redis, namespace: str) -> RedisMessageLedger:
    return RedisMessageLedger(redis, Keys(namespace))


async def test_messages_of_a_request_are_remembered_per_platform(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    book = ledger(redis_client, namespace)
    slack = MessageRef(platform="slack", role="approvers", channel="C1", message_id="1.2")
    teams = MessageRef(
        platform="teams",
        role="owner",
        channel="a:1",
        message_id="act-1",
        extra={"service_url": "https://smba.example/"},
    )
    await book.remember("TK-4K7M2P9Q", slack)
    await book.remember("TK-4K7M2P9Q", teams)
    moved = slack.model_copy(update={"message_id": "1.3"})
    await book.remember("TK-4K7M2P9Q", moved)  # the same card, posted again: one entry

    assert {r.message_id for r in await book.messages_of("TK-4K7M2P9Q")} == {"1.3", "act-1"}
    assert await book.messages_of("TK-4K7M2P9Q", "teams") == [teams]
    assert await book.messages_of("TK-0000000A") == []
    await redis_client.hset(Keys(namespace).message_refs("TK-4K7M2P9Q"), "junk", "{not json")
    assert len(await book.messages_of("TK-4K7M2P9Q")) == 2  # a damaged entry is never trusted


async def test_only_the_first_of_many_claims_wins_until_released(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    book = ledger(redis_client, namespace)
    won = await asyncio.gather(*(book.claim_once("slack", "evt-1", 60) for _ in range(20)))
    assert won.count(True) == 1
    assert not await book.claim_once("slack", "evt-1", 60)
    assert await book.claim_once("teams", "evt-1", 60)  # scopes never collide
    await book.release("slack", "evt-1")
    assert await book.claim_once("slack", "evt-1", 60)


async def test_a_conversation_reference_is_kept_per_platform_and_person(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    book = ledger(redis_client, namespace)
    assert await book.conversation_of("teams", "alice") is None
    await book.remember_conversation("teams", "alice", {"conversation_id": "a:1", "x": "y"})
    assert await book.conversation_of("teams", "alice") == {"conversation_id": "a:1", "x": "y"}
    assert await book.conversation_of("slack", "alice") is None
