"""Fixtures for the Slack scenarios: the stand-in Slack and the whole twokey server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from slack_standin import SlackStandIn
from slack_world import SlackWorld, start_world, stop_world


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    standin = SlackStandIn()
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()


@pytest.fixture
async def world(
    slack: SlackStandIn, redis_client: aioredis.Redis, namespace: str
) -> AsyncIterator[SlackWorld]:
    started = await start_world(slack, redis_client, namespace)
    try:
        yield started
    finally:
        await stop_world(started)
