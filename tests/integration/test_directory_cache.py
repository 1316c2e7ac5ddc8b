"""The directory cache on real Redis: brief, never stale past its TTL, never in the way."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.domain.errors import Unavailable
from app.domain.models import Principal, PrincipalKind
from app.store.directory_cache import CachedDirectory
from app.store.keys import Keys

ALICE = Principal(
    id="00ualice", display_name="Alice", email="alice@example.com", groups=frozenset({"staff"})
)
BILLING = Principal(
    id="nhi:billing-api", kind=PrincipalKind.NHI, owner_id="00ualice", system="vault"
)


class RecordingDirectory:
    """The Directory port over a dict; counts every question and can be made to fail."""

    def __init__(self, *principals: Principal) -> None:
        self.people = {p.id: p for p in principals}
        self.questions: list[tuple[str, str]] = []
        self.down = False

    def _asked(self, kind: str, question: str) -> None:
        self.questions.append((kind, question))
        if self.down:
            raise Unavailable("the directory could not be read: no answer")

    async def find_by_email(self, email: str) -> list[Principal]:
        self._asked("email", email)
        return [p for p in self.people.values() if p.email == email]

    async def get(self, principal_id: str) -> Principal | None:
        self._asked("id", principal_id)
        found = self.people.get(principal_id)
        return found if found is not None and found.kind is PrincipalKind.HUMAN else None

    async def find_nhi(self, name: str) -> Principal | None:
        self._asked("nhi", name)
        found = self.people.get(name)
        return found if found is not None and found.kind is PrincipalKind.NHI else None

    async def search(self, text: str, limit: int = 20) -> list[Principal]:
        self._asked("search", text)
        return [p for p in self.people.values() if text in p.id][:limit]


@pytest.fixture
def inner() -> RecordingDirectory:
    return RecordingDirectory(ALICE, BILLING)


def cached(
    inner: RecordingDirectory, redis: aioredis.Redis, namespace: str, ttl_s: float = 60.0
) -> CachedDirectory:
    return CachedDirectory(inner, redis, Keys(namespace), ttl_s)


async def until_gone(redis: aioredis.Redis, key: str) -> None:
    """Wait for Redis to expire the key by itself (bounded, so a bug fails instead of hanging)."""
    for _ in range(100):
        if not await redis.exists(key):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} outlived its TTL")


async def test_a_second_question_is_answered_from_redis(
    inner: RecordingDirectory, redis_client: aioredis.Redis, namespace: str
) -> None:
    directory = cached(inner, redis_client, namespace)
    first = await directory.find_by_email("alice@example.com")
    second = await directory.find_by_email("alice@example.com")
    assert first == second == [ALICE]
    assert await directory.get("00ualice") == ALICE
    assert await directory.get("00ualice") == ALICE
    assert await directory.find_nhi("nhi:billing-api") == BILLING
    assert await directory.find_nhi("nhi:billing-api") == BILLING
    assert inner.questions == [
        ("email", "alice@example.com"),
        ("id", "00ualice"),
        ("nhi", "nhi:billing-api"),
    ]


async def test_entries_live_under_the_namespace_with_a_redis_expiry(
    inner: RecordingDirectory, redis_client: aioredis.Redis, namespace: str
) -> None:
    await cached(inner, redis_client, namespace, ttl_s=30).get("00ualice")
    keys = [key async for key in redis_client.scan_iter(match=f"{namespace}:*")]
    assert keys == [Keys(namespace).directory_cache("id", "00ualice")]
    assert "00ualice" not in keys[0]  # what people typed is hashed, never spliced in
    assert 0 < await redis_client.pttl(keys[0]) <= 30_000


async def test_an_answer_is_never_served_past_its_ttl(
    inner: RecordingDirectory, redis_client: aioredis.Redis, namespace: str
) -> None:
    directory = cached(inner, redis_client, namespace, ttl_s=1)
    assert (await directory.get("00ualice")) == ALICE
    moved = ALICE.model_copy(update={"groups": frozenset({"staff", "admins"})})
    inner.people[ALICE.id] = moved
    await until_gone(redis_client, Keys(namespace).directory_cache("id", "00ualice"))
    assert await directory.get("00ualice") == moved
    assert inner.questions == [("id", "00ualice"), ("id", "00ualice")]


async def test_not_found_is_kept_no_longer_than_the_ttl(
    inner: RecordingDirectory, redis_client: aioredis.Redis, namespace: str
) -> None:
    directory = cached(inner, redis_client, namespace, ttl_s=1)
    assert await directory.find_by_email("zed@example.com") == []
    key = Keys(namespace).directory_cache("email", "zed@example.com")
    assert 0 < await redis_client.pttl(key) <= 1000
    zed = Principal(id="00uzed", email="zed@example.com")
    inner.people[zed.id] = zed
    await until_gone(redis_client, key)
    assert await directory.find_by_email("zed@example.com") == [zed]


async def test_an_error_of_the_directory_is_not_kept(
    inner: RecordingDirectory, redis_client: aioredis.Redis, namespace: str
) -> None:
    directory = cached(inner, redis_client, namespace)
    inner.down = True
    with pytest.raises(Unavailable):
        await directory.get("00ualice")
    assert not await redis_client.exists(Keys(namespace).directory_cache("id", "00ualice"))
    inner.down = False
    assert await directory.get("00ualice") == ALICE
    assert len(inner.questions) == 2


async def test_an_unreadable_entry_is_asked_again_and_replaced(
    inner: RecordingDirectory, redis_client: aioredis.Redis, namespace: str
) -> None:
    key = Keys(namespace).directory_cache("email", "alice@example.com")
    await redis_client.set(key, '{"v": 1, "answer": {"id": "00ualice"}}', px=60_000)
    directory = cached(inner, redis_client, namespace)
    assert await directory.find_by_email("alice@example.com") == [ALICE]
    assert await directory.find_by_email("alice@example.com") == [ALICE]
    assert inner.questions == [("email", "alice@example.com")]


async def test_pickers_are_never_cached(
    inner: RecordingDirectory, redis_client: aioredis.Redis, namespace: str
) -> None:
    directory = cached(inner, redis_client, namespace)
    await directory.search("alice")
    await directory.search("alice")
    assert inner.questions == [("search", "alice"), ("search", "alice")]
    assert [key async for key in redis_client.scan_iter(match=f"{namespace}:*")] == []


# ---- Redis down or stuck: identity checks go on, straight to the directory -------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A server that accepts connections and never answers: a Redis that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_with_redis_down_every_question_goes_to_the_directory(
    inner: RecordingDirectory, namespace: str
) -> None:
    down = aioredis.Redis.from_url(f"redis://127.0.0.1:{_closed_port()}", socket_connect_timeout=1)
    try:
        directory = cached(inner, down, namespace)
        assert await directory.find_by_email("alice@example.com") == [ALICE]
        assert await directory.get("00ualice") == ALICE
        assert await directory.get("00ualice") == ALICE
    finally:
        await down.aclose()
    assert len(inner.questions) == 3


async def test_a_stuck_redis_does_not_hold_up_an_identity_check(
    inner: RecordingDirectory, namespace: str, silent_redis: str
) -> None:
    stuck = aioredis.Redis.from_url(silent_redis, socket_timeout=30, socket_connect_timeout=30)
    try:
        directory = CachedDirectory(inner, stuck, Keys(namespace), 60, redis_wait_s=0.2)
        # The guard only turns a hang into a failure; the cache gives up after 0.2 s per call.
        found = await asyncio.wait_for(directory.get("00ualice"), timeout=10)
    finally:
        await stuck.aclose()
    assert found == ALICE
    assert inner.questions == [("id", "00ualice")]


def test_a_cache_must_expire() -> None:
    with pytest.raises(ValueError, match="positive"):
        CachedDirectory(RecordingDirectory(), aioredis.Redis(), Keys("t"), 0)
