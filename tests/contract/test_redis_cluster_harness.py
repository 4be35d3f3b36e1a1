"""The client factory against a real Redis Cluster (tests.cluster): keys on every primary, writes
that resume on their own after a primary dies, scripts, pipelines and pub/sub as redis-py's
RedisCluster gives them. What these pin down is what the key layout and its users rely on."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
import redis
from redis.exceptions import ClusterCrossSlotError, NoScriptError, RedisClusterException

from contract.redis_client import redis_client
from contract.settings import Settings
from tests.cluster import RedisClusterNodes, redis_cluster  # noqa: F401 (the fixture)
from tests.processes import RedisServer, wait_until

pytestmark = pytest.mark.redis

GET_SCRIPT = "return redis.call('GET', KEYS[1])"
POLL_S = 0.02


def factory_client(cluster: RedisClusterNodes, timeout_s: float = 0.5, retries: int = 1) -> Any:
    """The client a process gets with REDIS_CLUSTER=1 (the server's timeout and retries)."""
    settings = Settings.from_env({"REDIS_URL": cluster.url, "REDIS_CLUSTER": "1"})
    return redis_client(settings, timeout_s=timeout_s, retries=retries)


def key_on_each_primary(cluster: RedisClusterNodes) -> dict[int, str]:
    """One key served by each primary: port -> key."""
    keys: dict[int, str] = {}
    for i in range(200):
        keys.setdefault(cluster.primary_for(f"key:{i}").port, f"key:{i}")
        if len(keys) == len(cluster.primaries()):
            return keys
    raise AssertionError(f"200 keys on {len(keys)} primaries only")


def test_keys_land_on_every_primary_and_one_slot_is_what_multi_key_commands_need(
    redis_cluster: RedisClusterNodes,  # noqa: F811
) -> None:
    client = factory_client(redis_cluster)
    keys = key_on_each_primary(redis_cluster)
    assert len(keys) == 3
    for port, key in keys.items():
        assert client.set(key, f"on {port}")
    for port, key in keys.items():
        assert client.get(key) == f"on {port}".encode()
        with redis_cluster.node(port).client() as node:  # really stored there
            assert node.get(key) == f"on {port}".encode()

    # Keys sharing a hash tag share a slot: one script (and one MGET) may take them all.
    tagged = ["{BTCUSDT}:book", "{BTCUSDT}:trades"]
    client.set(tagged[0], "b")
    client.set(tagged[1], "t")
    both = client.register_script("return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}")
    assert both(keys=tagged) == [b"b", b"t"]
    assert client.mget(tagged) == [b"b", b"t"]

    # Keys of several slots: redis-py refuses MGET itself (it does not split it; mget_nonatomic
    # does, in one request per slot), and the server answers CROSSSLOT.
    spread = list(keys.values())
    with pytest.raises(RedisClusterException, match="MGET - all keys must map to the same key slot"):
        client.mget(spread)
    assert client.mget_nonatomic(spread) == [f"on {port}".encode() for port in keys]
    with redis_cluster.node(next(iter(keys))).client() as node, pytest.raises(ClusterCrossSlotError):
        node.mget(spread)
    with pytest.raises(RedisClusterException, match="all keys must map to the same key slot"):
        both(keys=spread[:2])


def test_writes_resume_on_their_own_after_each_primary_is_killed(
    redis_cluster: RedisClusterNodes,  # noqa: F811
) -> None:
    """Kill each of the three primaries in turn; the factory's client, polled every 20 ms, writes
    again once a replica is promoted, and a script registered before finds itself on the
    promoted replica (which never had it: NOSCRIPT, then SCRIPT LOAD by redis-py's Script)."""
    client = factory_client(redis_cluster)
    script = client.register_script(GET_SCRIPT)
    keys = key_on_each_primary(redis_cluster)
    for key in keys.values():
        client.set(key, "before")
        assert script(keys=[key]) == b"before"
    outages = []
    for port, key in keys.items():
        primary = redis_cluster.node(port)
        replicas = redis_cluster.replicas_of(primary)
        redis_cluster.kill(primary)
        killed_at = time.monotonic()
        failures = 0
        while True:  # what a user of the client sees: errors, then answers
            try:
                client.set(key, "after")
                break
            except redis.RedisError:
                failures += 1
                assert time.monotonic() - killed_at < 20, f"no write to {key} for 20 s after killing {port}"
            time.sleep(POLL_S)
        outages.append(time.monotonic() - killed_at)
        promoted = redis_cluster.wait_failover(primary, timeout_s=15)
        assert promoted in replicas
        assert failures > 0  # the kill was seen: the writes before the promotion failed
        assert client.get(key) == b"after"
        with promoted.client() as node:
            assert node.get(key) == b"after"
            assert node.script_exists(script.sha) == [False]
        assert script(keys=[key]) == b"after"
        assert client.set(key, "later") and client.get(key) == b"later"
    each = [round(o, 2) for o in outages]
    print(f"writes answered again {statistics.median(outages):.2f} s (median) / {max(outages):.2f} s "
          f"(worst) after a primary's SIGKILL (cluster-node-timeout 1000 ms; each: {each})")  # fmt: skip
    assert len(redis_cluster.primaries()) == 3 and redis_cluster.replicas() == []
    # The client made before goes on; a new one cannot be made while REDIS_URL's node is down
    # (redis-py asks that node alone for the map of slots).
    assert not redis_cluster.nodes[0].running()
    with pytest.raises(RedisClusterException, match="cannot be connected"):
        factory_client(redis_cluster)


def test_a_pipeline_spans_nodes_but_takes_no_script_object(
    redis_cluster: RedisClusterNodes,  # noqa: F811
) -> None:
    """ClusterPipeline (transaction=False) splits commands by node and answers in order; a
    Script cannot be called on it (redis-py blocks EVALSHA there), and EVALSHA sent as a plain
    command is not reloaded: NOSCRIPT comes back as that command's result."""
    client = factory_client(redis_cluster)
    keys = list(key_on_each_primary(redis_cluster).values())
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.set(key, key)
    for key in keys:
        pipe.get(key)
    assert pipe.execute() == [True] * 3 + [k.encode() for k in keys]

    script = client.register_script(GET_SCRIPT)
    pipe = client.pipeline(transaction=False)
    with pytest.raises(RedisClusterException, match="evalsha is blocked"):
        script(keys=[keys[0]], client=pipe)
    with pytest.raises(RedisClusterException, match="publish is blocked"):
        pipe.publish("channel", "x")

    pipe = client.pipeline(transaction=False)
    pipe.set(keys[0], "x")
    pipe.execute_command("EVALSHA", script.sha, 1, keys[1])
    done = pipe.execute(raise_on_error=False)
    assert done[0] is True and isinstance(done[1], NoScriptError)
    client.script_load(GET_SCRIPT)  # RedisCluster loads it on every primary
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("EVALSHA", script.sha, 1, key)
    assert pipe.execute() == [b"x", keys[1].encode(), keys[2].encode()]


def next_data(pubsub: Any, timeout_s: float) -> bytes:
    """The next message's data (subscribe confirmations are skipped)."""
    found: bytes = wait_until(lambda: (pubsub.get_message(timeout=POLL_S) or {}).get("data"), timeout_s,
                              interval_s=0, what="a pub/sub message")  # fmt: skip
    return found


def test_pubsub_hears_every_node_and_after_its_node_dies_a_new_one_does(
    redis_cluster: RedisClusterNodes,  # noqa: F811
) -> None:
    """Classic pub/sub goes to every node of a cluster: a message published on any primary
    reaches a subscriber connected to another. RedisCluster.pubsub() sits on the node of its
    channel's slot and does not follow a failover: once that node dies, reads fail
    (ConnectionError, never silence), and a new pubsub finds the promoted node only once the client
    has read the map of slots again, which a pubsub's own errors never make it do."""
    client = factory_client(redis_cluster, timeout_s=0.5, retries=0)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("transmute:demand")
    listening: RedisServer = redis_cluster.node(pubsub.get_pubsub_node().port)
    assert listening == redis_cluster.primary_for("transmute:demand")
    for node in redis_cluster.primaries():
        with node.client() as publisher:
            publisher.publish("transmute:demand", f"from {node.port}")
        assert next_data(pubsub, 5) == f"from {node.port}".encode()

    redis_cluster.kill(listening)
    assert isinstance(read_until_error(pubsub, 5), redis.ConnectionError)
    promoted = redis_cluster.wait_failover(listening, timeout_s=15)
    with pytest.raises(redis.ConnectionError):  # still its dead node, failover or not
        pubsub.get_message(timeout=POLL_S)
    pubsub.close()
    # Nor does a new pubsub of the same client find the promoted node: a pubsub's errors do not
    # refresh the client's map of slots...
    with pytest.raises(redis.ConnectionError):
        subscribe(client, "transmute:demand")
    # ... a command on a key of the channel's slot does: it fails once, and the map is read anew.
    wait_until(lambda: client.exists("transmute:demand") == 0, 5, what="a command in the channel's slot")
    fresh = subscribe(client, "transmute:demand")
    assert fresh.get_pubsub_node().port == promoted.port
    other = next(n for n in redis_cluster.primaries() if n != promoted)
    with other.client() as publisher:
        publisher.publish("transmute:demand", "again")
    assert next_data(fresh, 5) == b"again"
    fresh.close()


def subscribe(client: Any, channel: str) -> Any:
    """A new pubsub of ``client`` subscribed to ``channel`` (closed if that fails)."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(channel)
    except redis.RedisError:
        pubsub.close()
        raise
    return pubsub


def read_until_error(pubsub: Any, timeout_s: float) -> Exception:
    """Read until a read fails; that error."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pubsub.get_message(timeout=POLL_S)
        except redis.RedisError as exc:
            return exc
    raise AssertionError(f"pub/sub reads did not fail for {timeout_s} s")
