"""The Redis adapter of the MessageLedger port: message references, once-only claims and
conversation references, for every chat channel (app/ports.py).

Message references live in the request's hash slot and are kept as long as a request can be
shown; claims expire on their own; conversation references are kept until replaced.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from pydantic import ValidationError

from app.ports import MessageRef
from app.store.keys import Keys
from app.store.redis_store import fails_closed

REFS_KEEP_S = 31 * 86400


class RedisMessageLedger:
    """Slack's and Teams' memory of what they sent, on Redis."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, refs_keep_s: int = REFS_KEEP_S) -> None:
        self.redis = redis
        self.keys = keys
        self.refs_keep_s = refs_keep_s

    @fails_closed
    async def remember(self, request_id: str, ref: MessageRef) -> None:
        key = self.keys.message_refs(request_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, ref.name, ref.model_dump_json())
            pipe.expire(key, self.refs_keep_s)
            await pipe.execute()

    @fails_closed
    async def messages_of(self, request_id: str, platform: str | None = None) -> list[MessageRef]:
        raw = await self.redis.hgetall(self.keys.message_refs(request_id))
        refs = []
        for value in raw.values():
            try:
                ref = MessageRef.model_validate(json.loads(value))
            except (ValueError, ValidationError):
                continue  # a damaged entry is skipped, never trusted
            if platform is None or ref.platform == platform:
                refs.append(ref)
        return refs

    @fails_closed
    async def claim_once(
        self, scope: str, key: str, keep_s: int, *, near: str | None = None
    ) -> bool:
        name = self.keys.once(scope, key) if near is None else self.keys.once_near(near, scope, key)
        return bool(await self.redis.set(name, "1", nx=True, ex=keep_s))

    @fails_closed
    async def release(self, scope: str, key: str) -> None:
        await self.redis.delete(self.keys.once(scope, key))

    @fails_closed
    async def remember_conversation(
        self, platform: str, person: str, reference: dict[str, str]
    ) -> None:
        await self.redis.set(self.keys.conversation(platform, person), json.dumps(reference))

    @fails_closed
    async def conversation_of(self, platform: str, person: str) -> dict[str, str] | None:
        raw = await self.redis.get(self.keys.conversation(platform, person))
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        return {str(k): str(v) for k, v in value.items()}
