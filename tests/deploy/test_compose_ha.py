"""``docker compose -f docker-compose.yml -f docker-compose.ha.yml --profile sim up`` for real.

The high-availability file (a Redis primary, a replica, three sentinels, two messengers with
REPLICAS=2, two servers) is brought up as a user would, beside the default file's test and with
the same engine and images (tests/deploy/test_compose_up.py); then the Redis primary is killed
while a client polls both servers every 20 ms: 503s with Retry-After while no primary answers,
then 200s from the new primary, with no restart of anything.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.client import HTTPConnection
from typing import Any

import orjson
import pytest

from tests.deploy.engine import Engine, Stack, docker
from tests.deploy.test_compose_up import engine, extra_ca_certs, health, say  # noqa: F401 (engine: a fixture)
from tests.processes import ROOT, free_port, http, wait_until

pytestmark = pytest.mark.timeout(1800)

FILES = ("docker-compose.yml", "docker-compose.ha.yml")
SERVICES = {"redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3", "simulator",
            "messenger-sim", "server", "server-2"}  # fmt: skip
MESSENGERS = 2
# The primary's and the replica's fixed addresses (docker-compose.ha.yml: HA_NET), as the sentinels name them.
NET = os.environ.get("HA_NET") or "172.29.57"
PRIMARY, REPLICA = f"{NET}.10", f"{NET}.11"


@pytest.fixture(scope="module")
def ha(engine: Engine, request: pytest.FixtureRequest) -> Iterator[Stack]:  # noqa: F811
    """The HA file's sim profile, built and up; down (volumes too) at the end, whatever happened."""
    config = request.config
    started = time.monotonic()
    stand_ins = subprocess.run(
        [ROOT / "scripts" / "stand-in-images"], capture_output=True, text=True, timeout=1200, check=False
    )
    assert stand_ins.returncode == 0, stand_ins.stderr
    port, port_2 = free_port(), free_port()
    env = {**os.environ, "PORT": str(port), "PORT_2": str(port_2), "EXTRA_CA_CERTS": extra_ca_certs()}
    stack = Stack(f"transmute-ha-{port}", env, "sim", files=FILES)
    failed = request.session.testsfailed
    try:
        stack.compose("up", "-d", "--build", timeout_s=1200)
        say(config, f"HA: `{' '.join(stack.command)} --profile sim up -d --build` took "
                    f"{time.monotonic() - started:.1f} s")  # fmt: skip
        yield stack
    finally:
        if request.session.testsfailed > failed:
            with_logs = subprocess.run([*stack.base, "logs", "--tail", "30"], cwd=ROOT, env=env,
                                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
            say(config, f"HA logs:\n{with_logs.stdout}")
        subprocess.run([*stack.base, "down", "-v", "--remove-orphans"], cwd=ROOT, env=env,
                       capture_output=True, timeout=300, check=False)  # fmt: skip
        say(config, f"whole HA compose test: {time.monotonic() - started:.1f} s")


def containers_by_service(stack: Stack) -> Counter[str]:
    listed = docker("ps", "--filter", stack.label, "--format", '{{.Label "com.docker.compose.service"}}')
    return Counter(listed.split())


def snapshot(port: str, conn: HTTPConnection | None = None) -> tuple[int, dict[str, str], Any]:
    """``POST /snapshot/BTC_USDT``: status, headers, JSON body."""
    if conn is None:
        with contextlib.closing(HTTPConnection("127.0.0.1", int(port), timeout=10)) as own:
            return snapshot(port, own)
    conn.request("POST", "/snapshot/BTC_USDT")
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), orjson.loads(response.read())


def answers_200(port: str) -> bool:
    return snapshot(port)[0] == 200


def test_every_service_of_the_ha_file_becomes_healthy_and_both_servers_answer(
    ha: Stack, request: pytest.FixtureRequest
) -> None:
    begun = time.monotonic()

    states: dict[str, str] = {}

    def all_healthy() -> bool:
        states.clear()
        states.update({svc: docker("inspect", "-f", "{{.State.Health.Status}}", cid).strip()
                       for svc, cid in ha.containers().items()})  # fmt: skip
        return set(states) == SERVICES and set(states.values()) == {"healthy"}

    try:
        wait_until(all_healthy, 240, interval_s=0.5, what="every service healthy")
    except AssertionError:
        listed = docker("ps", "-a", "--format", "{{.Names}} {{.Status}}")
        raise AssertionError(f"not all healthy: {states}; {listed}") from None
    assert containers_by_service(ha)["messenger-sim"] == MESSENGERS
    say(request.config, f"HA: every service healthy {time.monotonic() - begun:.1f} s after up returned")
    for port in (ha.env["PORT"], ha.env["PORT_2"]):
        wait_until(functools.partial(answers_200, port), 30, interval_s=0.1, what=f"a 200 on {port}")
    status, _, ready = http("GET", f"http://127.0.0.1:{ha.env['PORT']}/readyz", timeout_s=5)
    assert status == 200, ready
    assert ready["status"] == "ready"
    assert len(ready["members"]) >= MESSENGERS  # each container is one member or more (PROCESSES)


def test_killing_the_redis_primary_gives_503s_then_200s_from_the_new_one(
    ha: Stack, request: pytest.FixtureRequest
) -> None:
    ports = (ha.env["PORT"], ha.env["PORT_2"])
    for port in ports:
        wait_until(functools.partial(answers_200, port), 60, interval_s=0.1, what=f"a 200 on {port}")
    sentinel = ha.containers()["sentinel-1"]

    def primary() -> str:
        """The primary the first sentinel names; "" while that is not known. One ``docker exec``
        on a loaded machine once hung past 60 s right after the kill (dockerd's health checks of
        the sentinels timed out then too): such a question is given up and asked again, and the
        wait below, not one question, bounds how long the failover may take."""
        try:
            answer = docker("exec", sentinel, "redis-cli", "-p", "26379", "sentinel",
                            "get-master-addr-by-name", "mymaster", timeout_s=10)  # fmt: skip
        except subprocess.TimeoutExpired:
            return ""
        return answer.split()[0] if answer.split() else ""

    assert primary() == PRIMARY
    seen: dict[str, list[tuple[float, int, dict[str, str], Any]]] = {port: [] for port in ports}
    stop = threading.Event()

    def poll(port: str) -> None:
        conn = HTTPConnection("127.0.0.1", int(port), timeout=10)
        while not stop.is_set():
            try:
                status, headers, body = snapshot(port, conn)
            except (OSError, ValueError) as exc:
                seen[port].append((time.monotonic(), -1, {}, repr(exc)))
                conn.close()
                conn = HTTPConnection("127.0.0.1", int(port), timeout=10)
            else:
                seen[port].append((time.monotonic(), status, headers, body))
            time.sleep(0.02)
        conn.close()

    pollers = [threading.Thread(target=poll, args=(port,), daemon=True) for port in ports]
    for t in pollers:
        t.start()
    killed = time.monotonic()
    docker("kill", ha.containers()["redis"])
    try:
        # Seconds on a quiet machine; a sentinel whose timer ran late (a loaded machine) waits in
        # TILT mode for 30 s before it acts.
        try:
            wait_until(lambda: primary() == REPLICA, 120, interval_s=0.5, what="the replica promoted")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{failover_story(ha)}") from None
        promoted = time.monotonic() - killed

        def both_back() -> bool:
            recent = [answers[-1] for answers in seen.values() if answers]
            return len(recent) == 2 and all(a[1] == 200 and a[0] > killed + promoted for a in recent)

        wait_until(both_back, 60, interval_s=0.1, what="200s from both servers after the failover")
    finally:
        stop.set()
        for t in pollers:
            t.join(15)
    for port, answers in seen.items():
        after = [a for a in answers if a[0] >= killed]
        counts = Counter(a[1] for a in after)
        assert counts[503] > 0 or counts[500] > 0 or counts[-1] > 0, f"{port}: no failover seen: {counts}"
        for _, status, headers, body in after:
            if status == 503:
                assert headers.get("Retry-After") and body["status_code"] == 503, (headers, body)
            else:
                assert status in (200, 500, -1), (status, body)
        first_200 = next(t for t, status, _, _ in after if status == 200 and t > killed + promoted) - killed
        say(request.config, f"HA: docker kill of the Redis primary, server on {port}: {dict(counts)}; "
                            f"replica promoted after {promoted:.1f} s; "
                            f"200s again {first_200:.1f} s after the kill")  # fmt: skip


def failover_story(stack: Stack) -> str:
    """What each sentinel and the replica logged and think now: why a failover did not come."""
    running = stack.containers()
    parts = []
    for service in ("sentinel-1", "sentinel-2", "sentinel-3", "redis-replica"):
        cid = running.get(service)
        if cid is None:
            parts.append(f"----- {service}: not running")
            continue
        logs = subprocess.run(["docker", "logs", "--tail", "60", cid], capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
        port, question = (
            ("6379", "info replication")
            if service == "redis-replica"
            else ("26379", "sentinel master mymaster")
        )
        try:
            state = docker("exec", cid, "redis-cli", "-p", port, *question.split(), timeout_s=10, check=False)
        except subprocess.TimeoutExpired:
            state = "(no answer within 10 s)"
        parts.append(
            f"----- {service}: {question}\n{state}\n----- {service}: log\n{logs.stdout}{logs.stderr}"
        )
    return "\n".join(parts)


def test_the_ha_stack_goes_down_leaving_nothing(ha: Stack) -> None:
    ha.compose("down", "-v", "--remove-orphans", timeout_s=300)
    assert ha.left() == []
