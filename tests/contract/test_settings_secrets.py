"""A malformed REDIS_URL stops the process with one line naming it, never with its password."""

from __future__ import annotations

import subprocess
import sys

import pytest

from contract.settings import Settings, SettingsError, masked
from tests.processes import ROOT

PASSWORD = "hunter2-s3cret"  # noqa: S105 (the secret the messages must not show)
MALFORMED = [
    f"rediss//:{PASSWORD}@redis.example:6380/0",  # no scheme separator
    f"redis://user:{PASSWORD}@/0",  # no host
    f"redis://:{PASSWORD}@redis.example:port/0",  # no port number
    f"redis://:{PASSWORD}@redis.example:99999/0",  # out of range
    f"redis://:{PASSWORD}@[::1/0",  # broken IPv6 literal: urlsplit raises
    f"redis://{PASSWORD}@redis.example:-1/0",  # a lone user part, taken as the password
    f"redis://:pa@ss{PASSWORD}@redis.example:x/0",  # an unencoded "@" in the password
    f"http://redis.example:6379/0?password={PASSWORD}",  # redis-py's password parameter
]


@pytest.mark.parametrize("url", MALFORMED)
def test_the_error_names_redis_url_and_hides_the_password(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REDIS_URL": url})
    message = str(caught.value)
    assert message.startswith("REDIS_URL='")
    assert PASSWORD not in message
    assert "***" in message


@pytest.mark.parametrize("program", ["messenger", "server"])
def test_the_process_exits_with_one_line_and_no_password(program: str) -> None:
    url = f"rediss//:{PASSWORD}@redis.example:6380/0"
    done = subprocess.run(
        [sys.executable, "-m", program],
        env={"REDIS_URL": url, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    shown = "REDIS_URL='rediss//:***@redis.example:6380/0' must be a redis/rediss/unix:// URL with a host"
    assert done.stderr.strip() == f"{program}: {shown}"
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://:pw@redis.example:6380/2", "rediss://:***@redis.example:6380/2"),
        ("redis://alice:pw@redis.example/0", "redis://alice:***@redis.example/0"),
        ("unix:///run/redis.sock?db=1&password=pw", "unix:///run/redis.sock?db=1&password=***"),
    ],
)
def test_masking_keeps_everything_but_the_password(url: str, shown: str) -> None:
    assert masked(url) == shown
