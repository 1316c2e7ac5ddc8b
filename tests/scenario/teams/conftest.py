"""Fixtures for the Teams scenarios: the Bot Framework stand-in and the whole twokey server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from teams_standin import TeamsStandIn
from teams_world import TeamsWorld, start_world, stop_world


@pytest.fixture
async def teams() -> AsyncIterator[TeamsStandIn]:
    standin = TeamsStandIn()
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()


@pytest.fixture
async def world(
    teams: TeamsStandIn, redis_client: aioredis.Redis, namespace: str
) -> AsyncIterator[TeamsWorld]:
    started = await start_world(teams, redis_client, namespace)
    try:
        yield started
    finally:
        await stop_world(started)
