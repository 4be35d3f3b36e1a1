"""The test harness's own promises: a process whose start fails leaves nothing running, and a
cluster node starts on any port it is given."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.conftest import Started
from tests.processes import PORTS_ENV, RedisServer


@pytest.mark.redis
def test_a_redis_server_that_never_answers_is_stopped_and_its_log_shown(logs_dir: Path) -> None:
    server = RedisServer(logs_dir, "--no-such-option", "x")
    with pytest.raises(AssertionError, match=r"(?s)redis-server to answer.*no-such-option"):
        server.start()
    assert server.proc is not None and server.proc.returncode is not None


@pytest.mark.redis
def test_a_cluster_node_above_port_55535_starts(
    started: Started, logs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its bus would be on port + 10,000 by default: past 65,535, and the node would exit.
    monkeypatch.setenv(PORTS_ENV, "60000-65000")
    for _ in range(3):  # another test process may bind a port between its choice and the start
        node = RedisServer(logs_dir, "--cluster-enabled", "yes")
        with contextlib.suppress(AssertionError):
            started.add(node)
            break
    assert node.port > 55535
    with node.client() as client:
        assert client.cluster("info")["cluster_state"] == "fail"  # answers, no slots yet
