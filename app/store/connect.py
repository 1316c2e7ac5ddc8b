"""One Redis client from REDIS_URL, for a single server, TLS, or a Sentinel-watched primary.

Forms (documented in README, Settings):

- ``redis://[user:password@]host:6379/0`` and ``rediss://...`` (TLS; ``ssl_ca_certs`` and the
  other redis-py TLS options go in the query string), ``unix:///path/redis.sock``;
- ``redis+sentinel://[user:password@]host:26379,host:26380/mymaster/0`` (``rediss+sentinel``
  for TLS to the primary): the client asks the sentinels where the primary is and asks again
  after a failover. ``user:password`` are the primary's; a ``sentinel_password`` query
  parameter gives the sentinels' own.
- ``redis+cluster://[user:password@]host:7000,host:7001/`` (``rediss+cluster`` for TLS, with
  ``ssl_*`` options in the query string): a Redis Cluster, through
  :class:`redis.asyncio.cluster.RedisCluster`; the nodes listed are only where discovery
  starts. Every script twokey runs names keys of one hash slot (app/store/keys.py).

A Cluster client is not a ``redis.asyncio.Redis`` but answers every command twokey sends the
same way (scripts, pipelines, single-key commands), so it is handed out as one; the few places
that must know (where to wait for a claim's durability) ask :func:`is_cluster` and hold one
connection to the node that owns a key's slot (:func:`slot_owner`, :func:`on_node`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import AskError, ClusterError, MovedError, ResponseError

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}


class BadRedisUrl(ValueError):
    """REDIS_URL cannot be used; the message says what is wrong with it (never its password)."""


def connect(url: str, **options: Any) -> aioredis.Redis:
    """A client for ``url``; ``options`` (timeouts, health checks) apply to every connection."""
    scheme = urlsplit(url).scheme
    if scheme in SENTINEL_SCHEMES:
        return _through_sentinels(url, tls=SENTINEL_SCHEMES[scheme], **options)
    if scheme in CLUSTER_SCHEMES:
        return _cluster(url, tls=CLUSTER_SCHEMES[scheme], **options)
    return aioredis.Redis.from_url(url, **options)


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster (see the module docstring)."""
    return isinstance(client, RedisCluster)


async def keyless(
    client: aioredis.Redis, *args: Any, key: str | None = None, node: Any = None
) -> Any:
    """Run a keyless command (TIME, WAIT, WAITAOF, INFO) on a Cluster's ``node``, or the node
    holding ``key``; on a single server, on it."""
    target: dict[str, Any] = {}
    if isinstance(client, RedisCluster) and (node is not None or key is not None):
        target["target_nodes"] = node if node is not None else client.get_node_from_key(key)
    return await client.execute_command(*args, **target)  # type: ignore[no-untyped-call]


async def every_primary(client: object) -> list[Any]:
    """The primaries of a Cluster (to send one command to each); empty on a single server.

    A Cluster client learns its nodes at its first command: it is asked to now, or a fresh
    client would answer "no primaries" and every check over them would pass vacuously."""
    if isinstance(client, RedisCluster):
        await client.initialize()
        return list(client.get_primaries())
    return []


class NodeConnection:
    """One connection to one Cluster node, held for several commands.

    WAIT and WAITAOF count only the writes of the connection they are sent on, so a claim and
    its wait must share one; the Cluster client would send each on any pooled connection. Has
    what :class:`redis.commands.core.AsyncScript` and :func:`keyless` call (``evalsha``,
    ``script_load``, ``execute_command``). With ``asking`` (after an ASK redirect) every
    command is preceded by ASKING, since the server forgets it after one command.
    """

    def __init__(self, node: ClusterNode, connection: Connection, *, asking: bool) -> None:
        self.node = node
        self.asking = asking
        self._connection = connection

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command on this connection and read its answer (errors raise as usual)."""
        if self.asking:
            await self._connection.send_packed_command(self._connection.pack_command("ASKING"))
            await self._connection.read_response()
        await self._connection.send_packed_command(self._connection.pack_command(*args))
        return await self.node.parse_response(self._connection, args[0], **options)

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    async def script_load(self, script: str) -> Any:
        return await self.execute_command("SCRIPT LOAD", script)


@asynccontextmanager
async def on_node(node: ClusterNode, *, asking: bool = False) -> AsyncIterator[NodeConnection]:
    """Hold one of ``node``'s pooled connections for the block, then give it back.

    A connection that saw anything but a Redis reply (a timeout, a cancellation) may hold an
    unread answer: it is reconnected before anyone else uses it."""
    connection = node.acquire_connection()
    clean = False
    try:
        await node.disconnect_if_needed(connection)
        yield NodeConnection(node, connection, asking=asking)
        clean = True
    except ResponseError:
        clean = True
        raise
    finally:
        if not clean:
            connection.mark_for_reconnect()  # type: ignore[no-untyped-call]
        node.release(connection)


async def slot_owner(client: aioredis.Redis, key: str) -> ClusterNode:
    """The primary that owns ``key``'s slot, as the Cluster client currently believes."""
    cluster = cast(RedisCluster, client)
    await cluster.initialize()
    node = cluster.get_node_from_key(key)
    if node is None:  # only for replica=True; kept for the type checker
        raise ResponseError(f"no node holds slot {cluster.keyslot(key)}")
    return node


async def follow_redirect(
    client: aioredis.Redis, node: ClusterNode, redirect: AskError
) -> tuple[ClusterNode, bool]:
    """Where a MOVED or ASK answer from ``node`` points, and whether to send ASKING there.

    MOVED: the slot has a new owner for good; the client's slot map is patched as its own
    retry loop does. ASK: the slot is being migrated and the keys are already on the target."""
    cluster = cast(RedisCluster, client)
    if not redirect.host:
        redirect.host = node.host
    if isinstance(redirect, MovedError):
        await cluster.nodes_manager.move_slot(redirect)
        return cluster.nodes_manager.get_node_from_slot(redirect.slot_id), False
    host, port = cluster.nodes_manager.remap_host_port(redirect.host, redirect.port)
    target = cluster.get_node(host=host, port=port)
    if target is None:  # a node this client has never seen: its normal path will learn it
        raise ClusterError(f"ASK to an unknown node for slot {redirect.slot_id}")
    return target, True


def _cluster(url: str, *, tls: bool, **options: Any) -> aioredis.Redis:
    parts = urlsplit(url)
    nodes = [
        ClusterNode(host, port)
        for host, port in _hosts(parts.netloc.rpartition("@")[2], "redis+cluster://host:7000")
    ]
    path = [p for p in parts.path.split("/") if p]
    if path and path != ["0"]:
        raise BadRedisUrl("REDIS_URL: a Redis Cluster has only database 0; drop the /<db>.")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    settings: dict[str, Any] = dict(options)
    if parts.username:
        settings["username"] = unquote(parts.username)
    if parts.password:
        settings["password"] = unquote(parts.password)
    if tls:
        settings["ssl"] = True
        settings.update({k: v for k, v in query.items() if k.startswith("ssl_")})
        if settings.get("ssl_check_hostname") is not None:
            settings["ssl_check_hostname"] = settings["ssl_check_hostname"] in ("1", "true")
    return cast(aioredis.Redis, RedisCluster(startup_nodes=nodes, **settings))


def _through_sentinels(url: str, *, tls: bool, **options: Any) -> aioredis.Redis:
    parts = urlsplit(url)
    hosts = _hosts(
        parts.netloc.rpartition("@")[2], "redis+sentinel://host:26379,host:26380/mymaster/0"
    )
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


def _hosts(netloc: str, example: str) -> list[tuple[str, int]]:
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdecimal():
            what = "nodes" if "cluster" in example else "sentinels"
            raise BadRedisUrl(
                f"REDIS_URL: {item.strip()!r} is not host:port; {what} are listed as {example}"
            )
        hosts.append((host.strip("[]"), int(port)))
    return hosts
