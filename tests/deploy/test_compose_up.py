"""``docker compose --profile sim up -d --build`` for real, with the repository's files unmodified.

The stack is built and started as a user would (under a project name and a published port of its
own), checked over HTTP on the published port, and taken down. Base images that cannot be pulled
are stood in for from Debian by ``scripts/stand-in-images``; a machine behind a proxy that re-signs
TLS passes its extra CAs (``/usr/local/share/ca-certificates``) as the build argument the README
documents. The first run builds everything and takes minutes; each phase's time is printed.

The messenger runs as compose has it by default: a launcher and one member per core (PROCESSES=0,
whatever the environment says), so ``docker kill``/``stop``/``start``, a stop while it starts and a
member killed inside the container are all judged with several members in the container.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.engine import Engine, Stack, docker
from tests.processes import ROOT, free_port, http, wait_until

pytestmark = pytest.mark.timeout(1800)

SERVICES = {"redis", "simulator", "messenger-sim", "server"}
BUILT = ("messenger-sim", "server", "simulator")
# Packages only development needs (requirements-dev.txt's own), and Debian's toolchain and headers.
DEV_ONLY = {
    re.split(r"[=<>\[ ]", line)[0].lower()
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
    if line and not line.startswith(("-r", "#"))
}
DEV_DEBS = re.compile(r"-dev$|^(gcc|g\+\+|cpp|make|build-essential|binutils|libc-dev-bin)(-[\d.]+)?$")
# Inside the messenger container: SIGKILL the member serving the health check (port 9464); its pid.
KILL_FIRST_MEMBER = (
    "import os, signal\n"
    "for pid in sorted(filter(str.isdigit, os.listdir('/proc')), key=int):\n"
    "    try: env = open(f'/proc/{pid}/environ', 'rb').read().split(b'\\0')\n"
    "    except OSError: continue\n"
    "    if b'PROCESSES=1' in env and b'METRICS_PORT=9464' in env:\n"
    "        os.kill(int(pid), signal.SIGKILL); print(pid); break\n"
)
SIM_CLIENT = (
    "import sys, urllib.request as u; m, url, body = sys.argv[1:];"
    "r = u.Request(url, body.encode() or None, {'Content-Type': 'application/json'}, method=m);"
    "print(u.urlopen(r, timeout=5).read().decode())"
)


def say(config: pytest.Config, text: str) -> None:
    """A line on the terminal, captured or not: what the run took is worth seeing."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(f"compose: {text}")


def extra_ca_certs() -> str:
    """What a user behind a TLS-re-signing proxy passes: EXTRA_CA_CERTS, else the machine's own
    extra CAs (Debian keeps them in /usr/local/share/ca-certificates)."""
    if "EXTRA_CA_CERTS" in os.environ:
        return os.environ["EXTRA_CA_CERTS"]
    return "".join(p.read_text() for p in sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt")))


@pytest.fixture(scope="module")
def engine(logs_dir: Path) -> Iterator[Engine]:
    """A Docker engine: the running one, or a dockerd started (and stopped) here."""
    engine = Engine(logs_dir)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def stack(engine: Engine, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The sim profile, built and up; down (volumes too) at the end, whatever happened."""
    config = request.config
    started = time.monotonic()
    stand_ins = subprocess.run(
        [ROOT / "scripts" / "stand-in-images"], capture_output=True, text=True, timeout=1200, check=False
    )
    assert stand_ins.returncode == 0, stand_ins.stderr
    said = "; ".join(line.removeprefix("stand-in-images: ") for line in stand_ins.stderr.splitlines())
    say(config, f"base images ready in {time.monotonic() - started:.1f} s ({said or 'all present'})")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "EXTRA_CA_CERTS": extra_ca_certs()}
    env.pop("PROCESSES", None)  # compose's default is what is tested: a member per core
    stack = Stack(f"transmute-test-{port}", env, "sim")
    failed = request.session.testsfailed
    try:
        begun = time.monotonic()
        stack.compose("up", "-d", "--build", timeout_s=1200)
        say(
            config,
            f"`{' '.join(stack.command)} --profile sim up -d --build` took {time.monotonic() - begun:.1f} s",
        )
        yield stack
    finally:
        if request.session.testsfailed > failed:
            with_logs = subprocess.run([*stack.base, "logs", "--tail", "30"], cwd=ROOT, env=env,
                                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
            say(config, f"logs:\n{with_logs.stdout}")
        subprocess.run([*stack.base, "down", "-v", "--remove-orphans"], cwd=ROOT, env=env,
                       capture_output=True, timeout=300, check=False)  # fmt: skip
        say(config, f"whole compose test: {time.monotonic() - started:.1f} s")


def health(stack: Stack) -> dict[str, str]:
    """Each running service's health as Docker reports it."""
    fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}no healthcheck{{end}}"
    return {svc: docker("inspect", "-f", fmt, cid).strip() for svc, cid in stack.containers().items()}


def messenger_processes(stack: Stack) -> list[str]:
    """The messenger container's ``python -m messenger`` processes (a launcher and its members,
    or one member)."""
    # ww: whole command lines (ps cuts them at 80 columns without a terminal).
    listed = docker("top", stack.containers()["messenger-sim"], "ww", "-o", "pid,args").splitlines()[1:]
    return [line for line in listed if "-m messenger" in line and "docker-init" not in line]


def members_per_container(stack: Stack) -> int:
    """The processes compose's default (PROCESSES=0: one member per core) gives the messenger
    container on this machine: one, or a launcher and a member per core."""
    cid = stack.containers()["messenger-sim"]
    cores = int(docker("exec", cid, "python", "-c", "import os; print(len(os.sched_getaffinity(0)))"))
    return 1 if cores == 1 else cores + 1


def all_members_up(stack: Stack, expected: int) -> bool:
    """The messenger container running and healthy, with every member process it starts."""
    return health(stack).get("messenger-sim") == "healthy" and len(messenger_processes(stack)) == expected


def exit_code(cid: str) -> int:
    """How the container's last run ended (137: SIGKILLed, e.g. by docker stop after its 10 s)."""
    return int(docker("inspect", "-f", "{{.State.ExitCode}}", cid))


def snapshot(stack: Stack) -> tuple[int, Any]:
    """``POST /snapshot/BTC_USDT`` on the published port."""
    status, _, body = http("POST", f"http://127.0.0.1:{stack.env['PORT']}/snapshot/BTC_USDT", timeout_s=2)
    return status, body


def sim_control(stack: Stack, method: str, path: str, doc: dict[str, Any] | None = None) -> Any:
    """The simulator's control API, from inside its container (it publishes no port)."""
    url = f"http://127.0.0.1:9443/_sim/{path}"
    body = json.dumps(doc) if doc is not None else ""
    return json.loads(
        docker("exec", stack.containers()["simulator"], "python", "-c", SIM_CLIENT, method, url, body)
    )


def test_every_service_of_the_sim_profile_becomes_healthy(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    begun = time.monotonic()

    def all_healthy() -> bool:
        now = health(stack)
        return set(now) == SERVICES and set(now.values()) == {"healthy"}

    wait_until(all_healthy, 180, interval_s=0.5, what="every service healthy")
    say(request.config, f"every service healthy {time.monotonic() - begun:.1f} s after up returned")


def test_the_messenger_container_runs_one_member_per_core_by_default(stack: Stack) -> None:
    expected = members_per_container(stack)
    processes = wait_until(lambda: (p := messenger_processes(stack)) and len(p) == expected and p, 30,
                           interval_s=0.2, what=f"{expected} messenger processes")  # fmt: skip
    if expected > 1:  # the launcher, then its members (one per core, each a member of its own)
        assert sum("--processes 1" in p for p in processes) == expected - 1, processes


def test_the_published_port_answers_200_with_the_simulators_value(stack: Stack) -> None:
    wait_until(lambda: snapshot(stack)[0] == 200, 30, interval_s=0.1, what="a first 200")
    sim_control(stack, "POST", "market", {"quiet": ["BTCUSDT"]})  # only the value set here
    prices = ("43210.12000000", "0.50000000", "43210.13000000", "1.20000000")
    fields = ("bid_price", "bid_quantity", "ask_price", "ask_quantity")
    sent = sim_control(stack, "POST", "book", {"symbol": "BTCUSDT", **dict(zip(fields, prices, strict=True))})
    _, body = wait_until(
        lambda: (r := snapshot(stack))[0] == 200 and r[1]["update_id"] == sent["u"] and r, 5, interval_s=0.05
    )
    book = sim_control(stack, "GET", "book/BTCUSDT")
    assert (body["symbol"], *(body[f] for f in fields)) == ("BTCUSDT", *prices)
    assert (book["bidPrice"], book["bidQty"], book["askPrice"], book["askQty"]) == prices


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_without_the_messenger_the_server_answers_500_within_the_ttl_plus_1s_and_200_once_it_is_back(
    stack: Stack, how: str, request: pytest.FixtureRequest
) -> None:
    bound_s = int(os.environ.get("SNAPSHOT_TTL_MS", "1000")) / 1000 + 1
    messenger = stack.containers()["messenger-sim"]
    expected = members_per_container(stack)
    wait_until(lambda: snapshot(stack)[0] == 200, 30, interval_s=0.1, what="a 200 before the messenger goes")
    begun = time.monotonic()
    # Polled while docker still waits for the container to exit (a stop lets it clean up first).
    with subprocess.Popen(["docker", how, messenger], stdout=subprocess.DEVNULL) as command:
        status, body = wait_until(lambda: (r := snapshot(stack))[0] != 200 and r, bound_s + 5, 0.02)
        took_s = time.monotonic() - begun
        assert command.wait(60) == 0, f"docker {how} failed"
        command_s = time.monotonic() - begun
    assert (status, body["status_code"]) == (500, 500), body
    assert took_s <= bound_s, f"500 only {took_s:.2f} s after `docker {how}`"
    if how == "stop":  # every member left cleanly (137 would be docker's SIGKILL after its 10 s)
        assert exit_code(messenger) == 0, (
            f"the messenger exited {exit_code(messenger)} after {command_s:.1f} s"
        )
    docker("start", messenger)
    back = time.monotonic()
    wait_until(lambda: snapshot(stack)[0] == 200, 30, interval_s=0.05, what="200 again")
    again_s = time.monotonic() - back
    # And it stays up: healthy (a health check passed since the start), with every member.
    wait_until(
        lambda: all_members_up(stack, expected), 30, interval_s=0.5, what="every member up and healthy"
    )
    say(request.config, f"docker {how} messenger: 500 after {took_s:.2f} s (bound {bound_s:.1f} s), "
                        f"docker {how} returned after {command_s:.2f} s; 200 again {again_s:.1f} s after "
                        f"docker start, healthy with {expected} processes "
                        f"{time.monotonic() - back:.1f} s after")  # fmt: skip


def test_a_stop_while_the_messenger_is_starting_ends_it_at_once(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    """``docker stop`` as soon as ``docker start`` returns, while the processes are still starting:
    the SIGTERM is honoured, not lost (as a PID 1 without handlers yet, the messenger discarded it,
    and docker SIGKILLed it after its 10 s: status 137)."""
    messenger = stack.containers()["messenger-sim"]
    expected = members_per_container(stack)
    docker("stop", messenger)
    docker("start", messenger)
    begun = time.monotonic()
    try:
        docker("stop", messenger)
        took_s = time.monotonic() - begun
        code = exit_code(messenger)
        assert code in (0, 128 + 15) and took_s < 5, f"docker stop took {took_s:.1f} s, exit status {code}"
    finally:
        docker("start", messenger)  # for the tests after this one, whatever happened
    wait_until(lambda: snapshot(stack)[0] == 200, 30, interval_s=0.05, what="200 again")
    wait_until(
        lambda: all_members_up(stack, expected), 30, interval_s=0.5, what="every member up and healthy"
    )
    say(request.config, f"docker stop while starting: {took_s:.2f} s, exit status {code}")


def test_a_member_killed_inside_the_container_is_started_again(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    """With a member per core, PID 1 is their launcher: a member killed (a crash, the OOM killer)
    left it up with one member fewer, unhealthy when it was the first (9464, the health check's),
    and Docker's restart policy, which sees only PID 1, never acted."""
    expected = members_per_container(stack)
    if expected == 1:
        pytest.skip("one core: the messenger is PID 1 itself, and Docker restarts its container")
    cid = stack.containers()["messenger-sim"]
    wait_until(
        lambda: all_members_up(stack, expected), 30, interval_s=0.5, what="every member up and healthy"
    )
    before = {line.split()[0] for line in messenger_processes(stack)}
    assert docker("exec", cid, "python", "-c", KILL_FIRST_MEMBER).strip(), (
        "no member on the health check's port"
    )
    begun = time.monotonic()

    def replaced() -> bool:
        pids = {line.split()[0] for line in messenger_processes(stack)}
        return len(pids) == expected and pids != before and all_members_up(stack, expected)

    wait_until(replaced, 60, interval_s=0.5, what="the killed member started again, and healthy")
    assert docker("inspect", "-f", "{{.RestartCount}}", cid).strip() == "0"  # the launcher did it
    wait_until(lambda: snapshot(stack)[0] == 200, 30, interval_s=0.05, what="200")
    say(request.config, f"a member killed in the container: all {expected - 1} members and healthy "
                        f"{time.monotonic() - begun:.1f} s later")  # fmt: skip


def test_every_process_runs_as_non_root(stack: Stack) -> None:
    for service, cid in stack.containers().items():
        processes = docker("top", cid, "-o", "pid,uid,args").splitlines()[1:]
        assert processes, service
        assert all(line.split()[1] != "0" for line in processes), (service, processes)
    for service in BUILT:
        user = docker("inspect", "-f", "{{.Config.User}}", stack.containers()[service]).strip()
        assert user not in ("", "0", "root"), service


def test_the_images_carry_no_development_packages(stack: Stack) -> None:
    for service in BUILT:
        cid = stack.containers()[service]
        debs = docker("exec", cid, "dpkg-query", "-W", "-f", "${Package}\n").split()
        assert debs and not [p for p in debs if DEV_DEBS.search(p)], service
        pips = docker("exec", cid, "python", "-m", "pip", "list", "--format=freeze").split()
        assert pips and not {p.split("==")[0].lower() for p in pips} & DEV_ONLY, service


def test_redis_publishes_no_port(stack: Stack) -> None:
    assert docker("port", stack.containers()["redis"]).strip() == ""


def test_down_leaves_nothing_running(stack: Stack, request: pytest.FixtureRequest) -> None:
    begun = time.monotonic()
    stack.compose("down", "-v", "--remove-orphans", timeout_s=300)
    say(request.config, f"down took {time.monotonic() - begun:.1f} s")
    assert stack.left() == []
