"""Settings: defaults, environment, overrides, and a clear error for every bad value."""

from __future__ import annotations

import dataclasses

import pytest

from contract.settings import Settings, SettingsError


def test_defaults_match_the_documented_contract() -> None:
    s = Settings.from_env({})
    assert s.binance_ws_url == "wss://stream.binance.com:9443"
    assert s.binance_rest_url == "https://api.binance.com"
    assert s.snapshot_ttl_ms == 1000
    assert s.liveness_timeout_ms == 5000
    assert s.port == 3333
    assert s.max_streams_per_connection == 1024


def test_environment_then_overrides() -> None:
    env = {"SNAPSHOT_TTL_MS": "2500", "PORT": "8080", "LOG_LEVEL": "debug", "STATS_INTERVAL_S": "0.5"}
    s = Settings.from_env(env, port=9000)
    assert (s.snapshot_ttl_ms, s.port, s.log_level, s.stats_interval_s) == (2500, 9000, "debug", 0.5)


def test_empty_variable_means_default() -> None:
    assert Settings.from_env({"PORT": ""}).port == 3333


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SNAPSHOT_TTL_MS": "soon"}, "SNAPSHOT_TTL_MS='soon' is not a valid int"),
        ({"SNAPSHOT_TTL_MS": "5"}, "SNAPSHOT_TTL_MS=5 is below the minimum 100"),
        ({"PORT": "70000"}, "PORT=70000 is above the maximum 65535"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL='localhost:6379' must be a redis/rediss/unix:// URL"),
        ({"BINANCE_WS_URL": "https://x"}, "BINANCE_WS_URL='https://x' must be a ws/wss:// URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL='LOUD' is not one of"),
        ({"WS_TRANSPORT": "aiohttp"}, "WS_TRANSPORT='aiohttp' is not one of websocket-client, picows"),
        ({"RECONNECT_MIN_MS": "5000", "RECONNECT_MAX_MS": "1000"}, "RECONNECT_MIN_MS must not exceed"),
        ({"EGRESS": "eu west"}, "EGRESS='eu west' must be 1 to 64 letters"),
        ({"EGRESS_CONNECTIONS": "301"}, "EGRESS_CONNECTIONS=301 is above the maximum 300"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match="^" + message.replace("(", r"\(").replace("/", "/")):
        Settings.from_env(env)


def test_rediss_url_with_password_is_accepted() -> None:
    s = Settings.from_env({"REDIS_URL": "rediss://:secret@redis.example:6380/2"})
    assert s.redis_url.startswith("rediss://")


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings.from_env({}).port = 1  # type: ignore[misc]


def test_derived_intervals_keep_values_alive_and_pings_inside_binance_limits() -> None:
    s = Settings.from_env({})
    assert s.refresh_interval_ms * 3 <= s.snapshot_ttl_ms
    assert s.ping_interval_ms * 4 <= s.liveness_timeout_ms
    assert 1000 / s.ping_interval_ms <= 4
