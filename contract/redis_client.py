"""Every Redis client of both processes, from the settings: one Redis, Sentinel, or Cluster.

The mode is chosen here and nowhere else (contract.settings validates the settings):

- ``REDIS_URL`` alone: one redis-server (auth, TLS and db in the URL).
- ``REDIS_SENTINELS=host:26379,host2:26379`` with ``REDIS_SENTINEL_SERVICE`` (default
  ``mymaster``): the primary the sentinels name, through redis-py's ``Sentinel.master_for``. Its
  pool asks the sentinels for the primary's address on every new connection, and drops a
  connection to a primary that was demoted (``READONLY``), so a client follows a failover on its
  own. ``REDIS_URL`` gives what the data nodes need besides their address: user and password,
  TLS (``rediss://``, with its ``ssl_*`` parameters) and db; its host and port are not used.
  The sentinels are reached with the same TLS and ``REDIS_SENTINEL_PASSWORD`` (none by default).
  Every client is the primary's: neither process reads from replicas (README "High availability").
- ``REDIS_CLUSTER=1``: redis-py's ``RedisCluster``, ``REDIS_URL`` naming any one node; it learns
  the others and follows a failover (MOVED) on its own. Every key is hash-tagged (contract.keys), so
  what one command or script takes is in one slot; what a pipeline queues may span nodes.

Every user (pub/sub included) gets its client here; the caller only says how long it waits and
how often a command is retried on a broken connection (each side owns its backoff).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterPipeline, RedisCluster
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from contract.settings import Settings, sentinel_addresses

SENTINEL = "sentinel"
CLUSTER = "cluster"
SINGLE = "single"


def mode(settings: Settings) -> str:
    """Which of the three modes the settings choose."""
    if settings.redis_sentinels:
        return SENTINEL
    if settings.redis_cluster:
        return CLUSTER
    return SINGLE


def redis_client(settings: Settings, *, timeout_s: float, retries: int) -> redis.Redis:
    """A pooled client of the Redis the settings name, whose commands give up after ``timeout_s``
    and are retried at once ``retries`` times on a broken connection."""
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), retries),
    }
    chosen = mode(settings)
    if chosen == SINGLE:
        return redis.Redis.from_url(settings.redis_url, **options)
    if chosen == CLUSTER:
        # Not a redis.Redis, but the same commands for what the code uses of it (see above).
        return cast(
            redis.Redis, _outages_as_connection_errors(RedisCluster.from_url(settings.redis_url, **options))
        )
    sentinels = _Sentinels(  # type: ignore[no-untyped-call]
        sentinel_addresses(settings.redis_sentinels), sentinel_kwargs=_sentinel_options(settings, options)
    )
    client: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_service, **_url_options(settings.redis_url), **options
    )
    return client


def _outages_as_connection_errors(cluster: RedisCluster) -> RedisCluster:
    """The cluster client, whose "no node answers" (redis-py's RedisClusterException from learning
    the nodes anew: none reachable, slots not covered) is a redis.ConnectionError, as the other
    modes' outages are: every caller handles RedisError (retry, 503), and nothing else."""
    nodes = cluster.nodes_manager
    learn = nodes.initialize

    def initialize(*args: Any, **kwargs: Any) -> Any:
        try:
            return learn(*args, **kwargs)
        except RedisClusterException as exc:
            raise redis.ConnectionError(str(exc)) from exc

    nodes.initialize = initialize  # type: ignore[method-assign]
    return cluster


class _Sentinels(Sentinel):
    """redis-py's Sentinel, whose "no primary" error says in one short line which sentinels were
    asked (redis-py's own carries the repr of every sentinel client: a thousand characters in
    every log line of every retry)."""

    def discover_master(self, service_name: str) -> Any:
        try:
            return super().discover_master(service_name)  # type: ignore[no-untyped-call]
        except MasterNotFoundError:
            asked = ", ".join(
                f"{c.connection_pool.connection_kwargs.get('host')}:{c.connection_pool.connection_kwargs.get('port')}"
                for c in self.sentinels
            )
            raise MasterNotFoundError(
                f"no primary for {service_name!r} from the sentinels at {asked} "
                "(none answered, or none knows that service)"
            ) from None


def sentinel_warning(settings: Settings) -> str | None:
    """A line for the log when the first sentinel that answers may name a promoted replica while a
    voucher it copied from the old primary still lives (``down-after-milliseconds`` under twice
    SNAPSHOT_TTL_MS: README "High availability"); None when not in Sentinel mode, or fine."""
    if mode(settings) != SENTINEL:
        return None
    once = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "retry": Retry(NoBackoff(), 0)}
    options = _sentinel_options(settings, once)
    service = settings.redis_sentinel_service
    for host, port in sentinel_addresses(settings.redis_sentinels):
        try:
            with redis.Redis(host, port, decode_responses=True, **options) as sentinel:
                state: Any = sentinel.execute_command("SENTINEL", "MASTER", service)
        except redis.RedisError:
            continue
        down_after_ms = int(state["down-after-milliseconds"])
        if down_after_ms < 2 * settings.snapshot_ttl_ms:
            return (
                f"sentinel {host}:{port}: down-after-milliseconds {down_after_ms} for {service} is under "
                f"twice SNAPSHOT_TTL_MS ({settings.snapshot_ttl_ms}): after a failover, a value the old "
                "primary had already replaced may be served for a moment"
            )
        return None
    return None


def _sentinel_options(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """How to reach the sentinels: the caller's timeouts, REDIS_URL's TLS, their own password."""
    tls = {k: v for k, v in _url_options(settings.redis_url).items() if k.startswith("ssl")}
    return {**options, **tls, "password": settings.redis_sentinel_password or None}


def _url_options(url: str) -> dict[str, Any]:
    """REDIS_URL's connection options without its address; TLS as ``ssl=True`` (the form
    redis-py's Sentinel pool takes)."""
    options: dict[str, Any] = parse_url(url)
    for name in ("host", "port", "path"):
        options.pop(name, None)
    connection_class = options.pop("connection_class", None)
    if connection_class is UnixDomainSocketConnection:
        raise ValueError("a unix:// REDIS_URL names no sentinel-managed node")  # settings refuse it
    if connection_class is not None and issubclass(connection_class, SSLConnection):
        options["ssl"] = True
    return options


class Routes:
    """Where a key's commands go, for a writer that sends RESP it built itself on connections of
    its own (messenger.writer): the connection pool of the node serving the key's slot (in a
    cluster), or of the one Redis (single, Sentinel)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client: Any = client
        self._cluster = isinstance(client, RedisCluster)
        self.single = not self._cluster  # every key's commands go to one place

    def pool(self, key: str) -> Any:
        """The connection pool ``key``'s commands go to."""
        if not self._cluster:
            return self._client.connection_pool
        return self._client.get_node_from_key(key).redis_connection.connection_pool

    def refresh(self) -> None:
        """Learn again which node serves which slot (after a MOVED, a node gone, ...); no-op
        unless in a cluster, where redis-py's commands do it on their own errors."""
        recover(self._client)


def queue_script(pipe: Any, script: Any, keys: Sequence[Any], args: Sequence[Any] = ()) -> None:
    """Queue a registered script (``client.register_script``) on a pipeline of any mode.

    redis-py's cluster pipeline refuses EVALSHA; there the script goes as EVAL (its text: never
    NOSCRIPT, which a promoted replica answers, scripts being not replicated) to the node of its
    keys' slot. Elsewhere as the script itself, which the pipeline loads when Redis lacks it.
    """
    if isinstance(pipe, ClusterPipeline):
        pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
    else:
        script(keys=keys, args=args, client=pipe)


def publish(pipe: Any, channel: str, message: str | bytes) -> None:
    """Queue a PUBLISH on a pipeline of any mode (redis-py's cluster pipeline refuses its method;
    a cluster carries a PUBLISH to every node)."""
    pipe.execute_command("PUBLISH", channel, message)


def recover(client: Any) -> None:
    """After a failure of a connection of its own (pub/sub): in a cluster, learn the nodes anew,
    so that the next connection goes to the node serving the slot now (redis-py refreshes on its
    commands' errors, not on a pub/sub's)."""
    if isinstance(client, RedisCluster):
        with contextlib.suppress(redis.RedisError):  # no node answers yet: the next failure tries again
            client.nodes_manager.initialize()
