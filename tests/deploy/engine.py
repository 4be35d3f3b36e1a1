"""A Docker engine and Compose for the tests that run the stack for real.

When no engine answers, one is started (``dockerd``, as root, in the background) and stopped
again afterwards; a machine that cannot run one gets a skip with the reason, never a silent pass.
One test module at a time has the engine, whatever process it runs in (`make test` runs two
pytest workers): a lock file is held from ``start`` to ``stop``, so one module never stops a
dockerd another is using, and two stacks never build or publish at once (tests.machine_lock:
nor does the chaos run go on beside one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.machine_lock import MachineLock
from tests.processes import ROOT, Process


def docker(*args: str, timeout_s: float = 60, check: bool = True) -> str:
    """Run the docker client; its stdout (fails the test on an error when ``check``)."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    assert not check or result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


def engine_answers() -> bool:
    """Whether a Docker engine answers the client."""
    try:
        result = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    # Without an engine the client still prints the template (an empty line), and exits 1.
    return result.returncode == 0 and result.stdout.strip() != ""


class Engine:
    """The Docker engine the tests use: one that answers, or a dockerd started for them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.dockerd: Process | None = None
        self._lock = MachineLock()

    def start(self) -> None:
        """Use the running engine, or start dockerd; skip (saying why) when neither can be had.
        Waits first for any other module using the engine to be done with it."""
        self._lock.acquire()
        try:
            self._start()
        except BaseException:  # a skip too: the next module may have the engine
            self.stop()
            raise

    def _start(self) -> None:
        if shutil.which("docker") is None:
            pytest.skip("no Docker client (apt-get install docker.io; .ci/run installs it)")
        if engine_answers():
            return
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            pytest.skip("no Docker engine answers and dockerd is not installed (apt-get install docker.io)")
        if os.environ.get("DOCKER_HOST"):
            pytest.skip(f"nothing answers at DOCKER_HOST={os.environ['DOCKER_HOST']}")
        if os.geteuid() != 0:
            pytest.skip("no Docker engine answers, and starting dockerd needs root")
        self.dockerd = Process("dockerd", [dockerd], self.log_dir)
        self.dockerd.start()
        deadline = time.monotonic() + 60
        while not engine_answers():
            if not self.dockerd.running() or time.monotonic() > deadline:
                tail = self.dockerd.log().splitlines()[-5:]
                self.stop()
                pytest.skip("this machine cannot run a Docker engine: dockerd said " + " | ".join(tail))
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop dockerd if it was started here (it stops its containerd and containers); then let
        the next module have the engine."""
        if self.dockerd is not None:
            self.dockerd.stop(timeout_s=60)
            self.dockerd = None
        self._lock.release()


def compose_command() -> list[str]:
    """``docker compose`` (Compose v2) where the plugin is there, else Debian's ``docker-compose``."""
    if docker("compose", "version", check=False):
        return ["docker", "compose"]
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip(
            "no Docker Compose: no `docker compose`, no `docker-compose` (apt-get install docker-compose)"
        )
    return [binary]


class Stack:
    """One compose project of the repository's own files, under a name of its own."""

    def __init__(self, project: str, env: dict[str, str], *profile: str, files: tuple[str, ...] = ()) -> None:
        self.project = project
        self.env = env
        self.command = [*compose_command(), *(a for f in files for a in ("-f", f))]
        self.base = [*self.command, "-p", project, *(a for p in profile for a in ("--profile", p))]

    def compose(self, *args: str, timeout_s: float = 120) -> str:
        """Run compose in the repository; its stdout (fails the test, with its output, on an error)."""
        result = subprocess.run(
            [*self.base, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=timeout_s, check=False,
        )  # fmt: skip
        assert result.returncode == 0, (
            f"compose {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
        return result.stdout

    @property
    def label(self) -> str:
        """The filter that selects what compose made for this project."""
        return f"label=com.docker.compose.project={self.project}"

    def containers(self) -> dict[str, str]:
        """Running containers by service (Compose v1 and v2 label them alike)."""
        listed = docker(
            "ps", "--filter", self.label, "--format", '{{.Label "com.docker.compose.service"}} {{.ID}}'
        )
        return dict(line.split() for line in listed.splitlines())

    def left(self) -> list[str]:
        """Containers, networks and volumes of the project that still exist."""
        return [
            f"{kind} {name}"
            for kind, ls in (
                ("container", ["ps", "-a"]),
                ("network", ["network", "ls"]),
                ("volume", ["volume", "ls"]),
            )
            for name in docker(*ls, "-q", "--filter", self.label).split()
        ]
