"""What the sweeper reports each pass besides its own work: the backlog and open reviews.

One pipeline over every shard (split per node on a Cluster), counting only: ZCOUNT of the due
index up to now and ZCARD of the break-glass reviews.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from app.store.keys import SHARDS, Keys


async def backlog(redis: aioredis.Redis, keys: Keys, now_ms: int) -> tuple[int, int]:
    """(requests whose next deadline has passed, break-glass reviews still open)."""
    async with redis.pipeline(transaction=False) as pipe:
        for shard in range(SHARDS):
            pipe.zcount(keys.due(shard), "-inf", now_ms)
            pipe.zcard(keys.reviews(shard))
        found = await pipe.execute()
    return sum(int(n) for n in found[0::2]), sum(int(n) for n in found[1::2])
