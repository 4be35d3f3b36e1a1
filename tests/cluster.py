"""A real Redis Cluster for tests: primaries and their replicas as private redis-servers.

``RedisClusterNodes`` starts the nodes (tests.processes.RedisServer, free ports), joins them with
``redis-cli --cluster create``, and waits until every node sees every slot served. Roles are read
from the nodes themselves (``CLUSTER NODES``), never remembered: after a failover a replica is a
primary. The ``redis_cluster`` fixture gives each test a cluster of its own, stopped after it.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster

from tests.processes import Process, RedisServer, free_port, wait_until

SLOTS = 16384
# A node silent this long is failing; its replica is promoted about a second later.
NODE_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class NodeLine:
    """One line of ``CLUSTER NODES``: a node as another node sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return "fail" in self.flags or "fail?" in self.flags


def parse_nodes(text: str) -> list[NodeLine]:
    """``CLUSTER NODES``' answer; slots being migrated (``[...]``) are left out."""
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        node_id, address, flags, primary, *_, = line.split(" ")[:8]  # fmt: skip
        port = int(address.split("@", 1)[0].rsplit(":", 1)[1])
        ranges = []
        for item in line.split(" ")[8:]:
            if item.startswith("["):
                continue
            low, _, high = item.partition("-")
            ranges.append((int(low), int(high or low)))
        found.append(NodeLine(node_id, port, frozenset(flags.split(",")),
                              None if primary == "-" else primary, tuple(ranges)))  # fmt: skip
    return found


class RedisClusterNodes:
    """``primaries`` primaries with ``replicas_per_primary`` replicas each, on 127.0.0.1."""

    def __init__(
        self,
        log_dir: Path,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
    ) -> None:
        self.log_dir = log_dir
        self.primary_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.node_timeout_ms = node_timeout_ms
        self.state_dir = Path(tempfile.mkdtemp(prefix="cluster-", dir=log_dir))
        self.nodes: list[RedisServer] = []  # made by start(), each just before it starts
        self.ids: dict[int, str] = {}  # port -> node id, which a node keeps for life
        self._served: dict[int, tuple[tuple[int, int], ...]] = {}  # killed port -> its slots then

    # ----- start and stop -----

    def start(self, timeout_s: float = 30) -> None:
        """Start every node, join them, and wait until the cluster serves every slot everywhere,
        every replica in sync with its primary."""
        try:
            for _ in range(self.primary_count * (1 + self.replicas_per_primary)):
                self.nodes.append(self._start_node())
            self._create(timeout_s)
            for node in self.nodes:
                with node.client() as client:
                    self.ids[node.port] = client.execute_command("CLUSTER", "MYID").decode()
            wait_until(self._formed, timeout_s, interval_s=0.05, what="the cluster to form")
        except BaseException:
            self.stop()
            raise

    def _start_node(self, attempts: int = 10) -> RedisServer:
        """A new node, started. Its two ports (clients, cluster bus) are free when chosen, but
        another test process may bind one first (xdist workers walk TRANSMUTE_PORTS in step):
        ours then exits, and it tries again a few ports further on."""
        for _ in range(attempts):
            node = self._new_node()
            Process.start(node)  # not RedisServer.start: that waits 10 s for a node that exited
            node.ready_or_stopped(partial(self._answers_or_exited, node), 10, f"redis-server {node.port}")
            if node.running():
                return node
            for _ in range(random.randint(1, 8)):  # out of step with whoever took it
                free_port()
        raise RuntimeError(f"no cluster node started in {attempts} attempts: see {node.log_path}")

    def _new_node(self) -> RedisServer:
        # The bus port is a free one too (RedisServer), not redis's port + 10000. A replica's
        # first sync starts at once (not after the default 5 s diskless delay).
        node = RedisServer(self.log_dir, "--cluster-enabled", "yes",
                           "--cluster-node-timeout", str(self.node_timeout_ms),
                           "--repl-diskless-sync-delay", "0")  # fmt: skip
        # Its state (nodes-*.conf, a replica's RDB) in this cluster's directory: ports are handed
        # out again (TRANSMUTE_PORTS), and a node that found an old nodes-*.conf would join that
        # old cluster; the last --dir wins.
        node.argv += ["--dir", str(self.state_dir), "--dbfilename", f"dump-{node.port}.rdb",
                      "--cluster-config-file", f"nodes-{node.port}.conf"]  # fmt: skip
        return node

    @staticmethod
    def _answers_or_exited(node: RedisServer) -> bool:
        """Whether the node exited, or answers on its port: it, not another test process's
        redis-server that took the port first (ours then exits, failing to bind)."""
        assert node.proc is not None
        if not node.running():
            return True
        with node.client() as client:
            return int(client.info("server")["process_id"]) == node.proc.pid

    def _create(self, timeout_s: float) -> None:
        binary = shutil.which("redis-cli")
        if binary is None:
            raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
        argv = [binary, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"]  # fmt: skip
        log = self.log_dir / f"{self.state_dir.name}-create.log"
        with open(log, "ab") as out:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed ({done.returncode}):\n{log.read_text()}")

    def _formed(self) -> bool:
        """Every node: state ok, all slots ok, all nodes known; and every replica's link up."""
        expected = len(self.nodes)
        for node in self.nodes:
            info = self.info(node)
            if (info["cluster_state"], info["cluster_slots_ok"], info["cluster_known_nodes"]) != (
                "ok", str(SLOTS), str(expected)):  # fmt: skip
                return False
        replicas = self.replicas()
        if len(replicas) != self.primary_count * self.replicas_per_primary:
            return False
        return all(self._in_sync(r) for r in replicas)

    def _in_sync(self, replica: RedisServer) -> bool:
        with replica.client() as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    def stop(self) -> None:
        """Stop every node it started (those killed already included) and drop their state."""
        for node in self.alive():  # all at once: each waits a moment for its replicas
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # ----- what the nodes say -----

    @property
    def url(self) -> str:
        """A REDIS_URL (with REDIS_CLUSTER=1) naming one node: the first primary when created."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def client(self, **options: Any) -> RedisCluster:
        """A redis-py RedisCluster of its own, for assertions."""
        return RedisCluster(host="127.0.0.1", port=self.any_alive().port, socket_timeout=2, **options)

    def alive(self) -> list[RedisServer]:
        """Nodes whose process runs."""
        return [n for n in self.nodes if n.running()]

    def any_alive(self) -> RedisServer:
        """The first node whose process runs."""
        alive = self.alive()
        if not alive:
            raise AssertionError("no node of the cluster runs")
        return alive[0]

    def info(self, node: RedisServer) -> dict[str, str]:
        """``CLUSTER INFO`` of one node."""
        with node.client() as client:
            text = client.execute_command("CLUSTER", "INFO").decode()
        return dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)

    def view(self, node: RedisServer | None = None) -> list[NodeLine]:
        """``CLUSTER NODES`` as one node (by default the first alive) sees them."""
        with (node or self.any_alive()).client() as client:
            return parse_nodes(client.execute_command("CLUSTER", "NODES").decode())

    def node(self, port: int) -> RedisServer:
        """The node on a port."""
        return next(n for n in self.nodes if n.port == port)

    def primaries(self) -> list[RedisServer]:
        """Running nodes that are primaries now, as a running node sees them."""
        ports = {line.port for line in self.view() if line.is_primary}
        return [n for n in self.alive() if n.port in ports]

    def replicas(self) -> list[RedisServer]:
        """Running nodes that are replicas now, as a running node sees them."""
        ports = {line.port for line in self.view() if not line.is_primary}
        return [n for n in self.alive() if n.port in ports]

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        """Running replicas of a primary, as a running node sees them."""
        ports = {line.port for line in self.view() if line.primary_id == self.ids[primary.port]}
        return [n for n in self.alive() if n.port in ports]

    def keyslot(self, key: str | bytes) -> int:
        """The slot a key hashes to, as the server computes it (hash tags included)."""
        with self.any_alive().client() as client:
            return int(client.execute_command("CLUSTER", "KEYSLOT", key))

    def primary_for(self, key: str | bytes) -> RedisServer:
        """The node serving a key's slot now, as a running node sees it."""
        slot = self.keyslot(key)
        for line in self.view():
            if line.is_primary and not line.failed and any(lo <= slot <= hi for lo, hi in line.slots):
                return self.node(line.port)
        raise AssertionError(f"no primary serves slot {slot} ({key!r}): {self.view()}")

    # ----- faults -----

    def kill(self, node: RedisServer) -> None:
        """SIGKILL a node: no goodbye to the others. The slots it served are remembered, for
        wait_failover."""
        mine = [line.slots for line in self.view() if line.port == node.port and line.is_primary]
        self._served[node.port] = mine[0] if mine else ()
        node.signal(signal.SIGKILL)
        assert node.proc is not None
        node.proc.wait()

    def promoted(self, killed: RedisServer) -> RedisServer | None:
        """The node now serving what ``killed`` served, once every surviving node says the cluster
        is ok; None before."""
        served = self._served.get(killed.port)
        if not served:
            raise AssertionError(f"{killed.port} served no slots when killed: no failover to wait for")
        alive = self.alive()
        if not all(self.info(n)["cluster_state"] == "ok" for n in alive):
            return None
        slot = served[0][0]
        for line in self.view(alive[0]):
            if line.is_primary and not line.failed and any(lo <= slot <= hi for lo, hi in line.slots):
                return None if line.port == killed.port else self.node(line.port)
        return None

    def wait_failover(self, killed: RedisServer, timeout_s: float = 15) -> RedisServer:
        """Wait until a replica of the killed primary serves its slots and every surviving node
        says the cluster is ok; that (promoted) node."""
        promoted: RedisServer = wait_until(lambda: self.promoted(killed), timeout_s, interval_s=0.05,
                                           what=f"a replica of {killed.port} to be promoted")  # fmt: skip
        return promoted


def cluster_supported() -> str | None:
    """Why this machine cannot run a cluster (None: it can)."""
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed"
    done = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
    version = done.stdout.split("v=", 1)[-1].split(" ", 1)[0]
    if int(version.split(".", 1)[0] or 0) < 7:
        return f"redis-server {version} is older than 7: no cluster-port"
    return None


@pytest.fixture
def redis_cluster(logs_dir: Path, request: pytest.FixtureRequest) -> Iterator[RedisClusterNodes]:
    """A started cluster of 3 primaries with a replica each, of this test alone; its nodes' logs
    are shown if the test failed."""
    reason = cluster_supported()
    if reason is not None:
        pytest.skip(f"no Redis Cluster here: {reason}")
    cluster = RedisClusterNodes(logs_dir)
    cluster.start()
    yield cluster
    cluster.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for node in cluster.nodes:
            print(f"----- {node.name} -----\n{node.log()[-3000:]}")
