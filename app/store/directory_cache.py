"""A directory whose answers are kept in Redis for a few seconds.

Every chat action resolves the person behind it, and every request reads its target again, so a
busy help desk asks the identity provider the same questions over and over, against rate limits.
:class:`CachedDirectory` keeps each answer of ``find_by_email``, ``get`` and ``find_nhi`` for
``ttl_s`` seconds (``TWOKEY_DIRECTORY_CACHE_TTL``, 60 by default) and never longer: Redis drops
it by itself (``SET ... PX``), so separation-of-duties checks never rest on data older than
that. "Nobody has this email" is kept the same short while; an error of the directory is never
kept, the next question asks again.

The cache must never stand in the way of an identity check: when Redis is slow or down, or an
entry cannot be read back, the question goes straight to the directory. Pickers (``search``)
are not cached: nothing is decided from them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog
from pydantic import ValidationError
from redis.exceptions import RedisError

from app.domain.models import Principal
from app.ports import MEMBERS_MAX, Directory
from app.store.keys import Keys

log = structlog.get_logger(__name__)

REDIS_WAIT_S = 0.5
"""How long a cache read or write may take before the directory is asked without it."""
_SCHEMA = 1
"""Bumped if the cached shape changes, so an old replica's entries are simply misses."""

_Answer = Principal | list[Principal] | None


class CachedDirectory:
    """The :class:`~app.ports.Directory` port over another directory, with a brief Redis cache."""

    def __init__(
        self,
        inner: Directory,
        redis: aioredis.Redis,
        keys: Keys,
        ttl_s: float = 60.0,
        *,
        redis_wait_s: float = REDIS_WAIT_S,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("a cache entry must live a positive time; leave the cache out instead")
        self.inner = inner
        self._redis = redis
        self._keys = keys
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._wait = redis_wait_s

    async def find_by_email(self, email: str) -> list[Principal]:
        found = await self._answer("email", email, self.inner.find_by_email)
        assert isinstance(found, list)
        return found

    async def get(self, principal_id: str) -> Principal | None:
        found = await self._answer("id", principal_id, self.inner.get)
        assert not isinstance(found, list)
        return found

    async def find_nhi(self, name: str) -> Principal | None:
        found = await self._answer("nhi", name, self.inner.find_nhi)
        assert not isinstance(found, list)
        return found

    async def search(self, text: str, limit: int = 20) -> list[Principal]:
        """Not cached: pickers show choices; every decision reads the principal again."""
        return await self.inner.search(text, limit)

    async def members(self, groups: Sequence[str], limit: int = MEMBERS_MAX) -> list[Principal]:
        """Not cached: who may approve is asked rarely, and a decision re-reads each person."""
        return await self.inner.members(groups, limit)

    # ---- the cache ----------------------------------------------------------------------------

    async def _answer(
        self, kind: str, question: str, ask: Callable[[str], Awaitable[_Answer]]
    ) -> _Answer:
        key = self._keys.directory_cache(kind, question)
        hit, cached = await self._read(key, kind)
        if hit:
            return cached
        answer = await ask(question)  # an error propagates, and nothing is kept
        await self._write(key, answer)
        return answer

    async def _read(self, key: str, kind: str) -> tuple[bool, _Answer]:
        """(True, answer) on a usable entry; (False, None) when the directory must be asked."""
        try:
            raw = await asyncio.wait_for(self._redis.get(key), timeout=self._wait)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("directory_cache_unavailable", step="read", error=type(exc).__name__)
            return False, None
        if raw is None:
            return False, None
        try:
            answer = _decode(raw)
        except (ValueError, ValidationError, KeyError, TypeError):
            log.warning("directory_cache_unreadable", kind=kind)
            return False, None
        if isinstance(answer, list) != (kind == _MANY):
            log.warning("directory_cache_unreadable", kind=kind)
            return False, None
        return True, answer

    async def _write(self, key: str, answer: _Answer) -> None:
        try:
            await asyncio.wait_for(
                self._redis.set(key, _encode(answer), px=self._ttl_ms), timeout=self._wait
            )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("directory_cache_unavailable", step="write", error=type(exc).__name__)


_MANY = "email"
"""The one question answered with a list."""


def _encode(answer: _Answer) -> str:
    body: Any
    if isinstance(answer, list):
        body = [principal.model_dump(mode="json") for principal in answer]
    elif answer is None:
        body = None
    else:
        body = answer.model_dump(mode="json")
    return json.dumps({"v": _SCHEMA, "answer": body}, separators=(",", ":"), sort_keys=True)


def _decode(raw: bytes | str) -> _Answer:
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("v") != _SCHEMA:
        raise ValueError("not a cached directory answer of this version")
    body = data["answer"]
    if body is None:
        return None
    if isinstance(body, list):
        return [Principal.model_validate(item) for item in body]
    return Principal.model_validate(body)
