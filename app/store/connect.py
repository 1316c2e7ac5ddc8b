"""One Redis client from REDIS_URL, for a single server, TLS, or a Sentinel-watched primary.

Forms (documented in README, Settings):

- ``redis://[user:password@]host:6379/0`` and ``rediss://...`` (TLS; ``ssl_ca_certs`` and the
  other redis-py TLS options go in the query string), ``unix:///path/redis.sock``;
- ``redis+sentinel://[user:password@]host:26379,host:26380/mymaster/0`` (``rediss+sentinel``
  for TLS to the primary): the client asks the sentinels where the primary is and asks again
  after a failover. ``user:password`` are the primary's; a ``sentinel_password`` query
  parameter gives the sentinels' own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}


class BadRedisUrl(ValueError):
    """REDIS_URL cannot be used; the message says what is wrong with it (never its password)."""


def connect(url: str, **options: Any) -> aioredis.Redis:
    """A client for ``url``; ``options`` (timeouts, health checks) apply to every connection."""
    scheme = urlsplit(url).scheme
    if scheme in SENTINEL_SCHEMES:
        return _through_sentinels(url, tls=SENTINEL_SCHEMES[scheme], **options)
    return aioredis.Redis.from_url(url, **options)


def _through_sentinels(url: str, *, tls: bool, **options: Any) -> aioredis.Redis:
    parts = urlsplit(url)
    hosts = _sentinel_hosts(parts.netloc.rpartition("@")[2])
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise BadRedisUrl(
            "REDIS_URL with redis+sentinel:// must name the primary's service: "
            "redis+sentinel://host:26379,host:26380/mymaster/0"
        )
    service = unquote(path[0])
    db = path[1] if len(path) > 1 else "0"
    if not db.isdecimal():
        raise BadRedisUrl(f"REDIS_URL: the database after /{service}/ must be a number.")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    sentinel_kwargs: dict[str, Any] = {
        key: value for key, value in options.items() if key.startswith("socket_")
    }
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query.pop("sentinel_password")
    primary: dict[str, Any] = dict(options)
    if parts.username:
        primary["username"] = unquote(parts.username)
    if parts.password:
        primary["password"] = unquote(parts.password)
    if tls:
        primary["ssl"] = True
        primary.update({k: v for k, v in query.items() if k.startswith("ssl_")})
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **primary)
    client: aioredis.Redis = sentinel.master_for(service, db=int(db))
    return client


def _sentinel_hosts(netloc: str) -> list[tuple[str, int]]:
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdecimal():
            raise BadRedisUrl(
                f"REDIS_URL: {item.strip()!r} is not host:port; sentinels are listed as "
                "redis+sentinel://host:26379,host:26380/mymaster/0"
            )
        hosts.append((host.strip("[]"), int(port)))
    return hosts
