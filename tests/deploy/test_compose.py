"""docker-compose.yml and the Dockerfiles, checked without a Docker engine.

Debian's docker-compose validates and resolves the file (``docker-compose config``) with no
engine; the resolved file is then checked for what the README promises.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract.settings import Settings
from tests.processes import ROOT

DOCKERFILES = ("Dockerfile.messenger", "Dockerfile.server", "Dockerfile.simulator")
# Every variable docker-compose.yml reads (``${NAME:-default}``), and COMPOSE_PROFILES from .env.
COMPOSE_VARS = {"COMPOSE_PROFILES"} | set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))


def compose(*args: str) -> str:
    """docker-compose on the repository's files, with the defaults (none of its variables set)."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (apt-get install docker-compose); .ci/run installs it"
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}
    result = subprocess.run(
        [binary, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    resolved: dict[str, Any] = yaml.safe_load(compose("config"))["services"]
    return resolved


def test_compose_file_is_valid() -> None:
    compose("config", "-q")


def test_plain_up_runs_redis_messenger_and_server_live_and_the_sim_profile_swaps_the_messenger(
    services: dict[str, Any],
) -> None:
    always = {name for name, svc in services.items() if not svc.get("profiles")}
    assert always == {"redis", "server"}
    assert services["messenger"]["profiles"] == ["live"]
    assert {services["simulator"]["profiles"][0], services["messenger-sim"]["profiles"][0]} == {"sim"}
    env_file = (ROOT / ".env").read_text()
    assert re.search(r"^COMPOSE_PROFILES=live$", env_file, re.MULTILINE), (
        "plain `up` must select the live profile"
    )
    assert set(compose("config", "--profiles").split()) == {"live", "sim"}


def test_the_messengers_point_at_binance_and_at_the_simulator(services: dict[str, Any]) -> None:
    live, sim = services["messenger"]["environment"], services["messenger-sim"]["environment"]
    assert live["BINANCE_WS_URL"] == "wss://stream.binance.com:9443"
    assert live["BINANCE_REST_URL"] == "https://api.binance.com"
    assert sim["BINANCE_WS_URL"] == "ws://simulator:9443"
    assert sim["BINANCE_REST_URL"] == "http://simulator:9443"
    assert "simulator" in services["messenger-sim"]["depends_on"]


def test_redis_is_healthchecked_and_never_published(services: dict[str, Any]) -> None:
    redis = services["redis"]
    python_base = re.search(r"^FROM python:\S+-(\w+)$", (ROOT / DOCKERFILES[0]).read_text(), re.MULTILINE)
    assert python_base, "the Dockerfiles' base names its Debian release"
    assert re.fullmatch(rf"redis:[\d.]+-{python_base[1]}", redis["image"]), "Redis on the same Debian"
    assert "ports" not in redis
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in ("messenger", "messenger-sim", "server"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_server_is_on_3333_and_everything_restarts(services: dict[str, Any]) -> None:
    assert services["server"]["ports"] == [{"published": 3333, "target": 3333}]
    assert all(svc["restart"] == "unless-stopped" for svc in services.values())
    assert services["server"]["environment"]["HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_are_slim_non_root_and_use_exec_form(name: str) -> None:
    text = (ROOT / name).read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    for line in re.findall(r"^(?:ENTRYPOINT|CMD) (.*)$", text, re.MULTILINE):
        assert line.startswith("["), f"{name}: shell form {line!r}"
    assert "PIP_NO_CACHE_DIR=1" in text


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_copy_only_what_exists_and_what_they_need(name: str) -> None:
    for source in re.findall(r"^COPY (\S+)", (ROOT / name).read_text(), re.MULTILINE):
        assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
    server = (ROOT / "Dockerfile.server").read_text()
    assert "messenger" not in server and "simulator" not in server


def test_every_compose_build_uses_an_existing_dockerfile(services: dict[str, Any]) -> None:
    for svc in services.values():
        if "build" in svc:
            assert (Path(svc["build"]["context"]) / svc["build"]["dockerfile"]).is_file()


def test_every_image_of_ours_is_built_by_the_service_that_runs_it_in_the_ha_file_too() -> None:
    """An image of ours that a service only names is pulled when Compose comes to that service
    before the one that builds it, and no registry has it: every service running one builds it."""
    merged = yaml.safe_load(compose("-f", "docker-compose.yml", "-f", "docker-compose.ha.yml", "config"))
    ours = {name: svc for name, svc in merged["services"].items() if svc["image"].startswith("transmute-")}
    assert {"server", "server-2", "messenger", "messenger-sim"} <= set(ours)
    assert [name for name, svc in ours.items() if "build" not in svc] == []
    for svc in ours.values():
        assert svc["build"]["args"] == {"EXTRA_CA_CERTS": "", "PIP_INDEX_URL": ""}
    assert ours["server-2"]["build"] == ours["server"]["build"]


def test_nothing_in_the_ha_files_failover_is_reached_by_a_name_that_can_leave_dns() -> None:
    """A sentinel resolves names on its one thread: lookups of the killed primary's name took
    seconds each on a loaded machine, the sentinels stopped answering and no failover came. The
    primary, the replica and the sentinels have fixed addresses, and the sentinels, the replica
    and every client name them by those: no lookup is left in the failover."""
    merged = yaml.safe_load(compose("-f", "docker-compose.yml", "-f", "docker-compose.ha.yml", "config"))
    services, net = merged["services"], merged["networks"]["default"]["ipam"]["config"][0]
    fixed = {name: svc["networks"]["default"]["ipv4_address"] for name, svc in services.items()
             if "ipv4_address" in (svc.get("networks") or {}).get("default", {})}  # fmt: skip
    sentinels = ["sentinel-1", "sentinel-2", "sentinel-3"]
    assert set(fixed) == {"redis", "redis-replica", *sentinels}
    prefix = net["subnet"].removesuffix(".0/24")
    assert all(address.startswith(prefix + ".") for address in fixed.values())
    # Dynamic addresses come from a range that holds none of the fixed ones.
    assert net["ip_range"] == f"{prefix}.128/25"
    assert all(int(address.rsplit(".", 1)[1]) < 128 for address in fixed.values())
    for name in sentinels:
        config = " ".join(services[name]["entrypoint"])
        assert f"sentinel monitor mymaster {fixed['redis']} 6379 2" in config
        assert "resolve-hostnames" not in config and "announce-hostnames" not in config
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1] == fixed["redis"]
    clients = [svc for svc in services.values() if "REDIS_SENTINELS" in (svc.get("environment") or {})]
    assert len(clients) >= 3
    for svc in clients:
        assert svc["environment"]["REDIS_SENTINELS"] == ",".join(f"{fixed[s]}:26379" for s in sentinels)


def test_every_service_has_a_healthcheck_that_means_something(services: dict[str, Any]) -> None:
    tests = {name: " ".join(svc["healthcheck"]["test"]) for name, svc in services.items()}
    assert "redis-cli ping" in tests["redis"]
    assert "127.0.0.1:3333/healthz" in tests["server"]
    assert "127.0.0.1:9443/api/v3/ping" in tests["simulator"]
    for name in ("messenger", "messenger-sim"):  # a live connection, asked on the metrics port
        assert "127.0.0.1:9464/healthz" in tests[name]
        assert str(services[name]["environment"]["METRICS_PORT"]) == "9464"
        assert services[name]["environment"]["HOST"] == "0.0.0.0"
    assert services["messenger-sim"]["depends_on"]["simulator"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_builds_take_an_extra_ca_and_a_package_index_empty_by_default(
    name: str, services: dict[str, Any]
) -> None:
    text = (ROOT / name).read_text()
    assert re.search(r'^ARG EXTRA_CA_CERTS=""$', text, re.MULTILINE)
    assert re.search(r'^ARG PIP_INDEX_URL=""$', text, re.MULTILINE)
    assert 'PIP_CERT=/tmp/ca.pem PIP_INDEX_URL="${PIP_INDEX_URL:-https://pypi.org/simple}"' in text
    assert "--no-compile" not in text, "bytecode is compiled at build time, not at every start"
    built = [svc for svc in services.values() if svc.get("build", {}).get("dockerfile") == name]
    assert built and all(svc["build"]["args"] == {"EXTRA_CA_CERTS": "", "PIP_INDEX_URL": ""} for svc in built)


def test_every_variable_compose_reads_is_documented_in_the_readme_and_env_example() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Docker Compose") : readme.index("## How it works")]
    example = (ROOT / ".env.example").read_text()
    for name in sorted(COMPOSE_VARS | {"SIM_PORT", "SIM_RATE"}):
        assert f"`{name}`" in section, f"{name} is not in the README's Docker Compose section"
        assert re.search(rf"^{name}=", example, re.MULTILINE), f"{name} is missing from .env.example"
    assert (
        "`SIM_PORT`" in readme[: readme.index("## Use it")]
        and "`SIM_RATE`" in readme[: readme.index("## Use it")]
    )


def test_env_example_says_which_settings_compose_ignores() -> None:
    """A setting in .env.example that compose does not pass on says so in its comment block."""
    example = (ROOT / ".env.example").read_text()
    settings = {f.name.upper() for f in dataclasses.fields(Settings)} | {"SIM_PORT"}
    for name in sorted(settings - COMPOSE_VARS):
        block = re.search(rf"((?:^#.*\n)+)(?:^\w+=.*\n)*^{name}=", example, re.MULTILINE)
        assert block and "ompose ignores it" in block[1], (
            f".env.example: {name} is ignored by compose: say so"
        )
