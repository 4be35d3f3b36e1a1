"""Settings for both processes: read once from the environment into one frozen object.

Every field is one environment variable (the field name upper-cased); defaults live here.
Validation is strict and happens at start: a bad value stops the process with one clear line.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
# How the messenger reads WebSocket frames: websocket-client (Python framing), or picows (compiled).
WS_TRANSPORTS = ("websocket-client", "picows")
# Member processes one `python -m messenger` may start (PROCESSES, --processes).
MAX_PROCESSES = 256
# redis-py also takes a password as a query parameter.
_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _setting(default: Any, *, low: float | None = None, high: float | None = None) -> Any:
    return field(default=default, metadata={"low": low, "high": high})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the messenger and the server read from the environment."""

    redis_url: str = _setting("redis://127.0.0.1:6379/0")
    # Sentinel (contract.redis_client): the sentinels, ``host:port,host:port``; empty: no Sentinel.
    # REDIS_URL then gives the data nodes' password, TLS and db (its host is not used).
    redis_sentinels: str = _setting("")
    redis_sentinel_service: str = _setting("mymaster")
    # The sentinels' own password (``requirepass`` in sentinel.conf); empty: none.
    redis_sentinel_password: str = _setting("")
    # 1: REDIS_URL names one node of a Redis Cluster (contract.redis_client).
    redis_cluster: int = _setting(0, low=0, high=1)
    binance_ws_url: str = _setting("wss://stream.binance.com:9443")
    binance_rest_url: str = _setting("https://api.binance.com")
    # How long a value outlives the messenger's last word on it: the bound if the messenger dies.
    snapshot_ttl_ms: int = _setting(1000, low=100, high=3_600_000)
    # A connection that has sent nothing (not even a pong) for this long is dead.
    liveness_timeout_ms: int = _setting(5000, low=200, high=600_000)
    # Connections are replaced (make before break) before Binance's 24 h cut.
    connection_max_age_s: float = _setting(23 * 3600, low=1, high=24 * 3600)
    reconnect_min_ms: int = _setting(500, low=10, high=600_000)
    reconnect_max_ms: int = _setting(30_000, low=10, high=3_600_000)
    max_streams_per_connection: int = _setting(1024, low=1, high=1024)
    # What reads each connection's frames: "websocket-client", or "picows", whose compiled framing
    # costs less CPU per frame (see README "Dependencies"); both behave the same otherwise.
    ws_transport: str = _setting("websocket-client")
    # How often the symbol list (exchangeInfo, weight 20) is fetched again.
    catalog_refresh_s: float = _setting(300, low=1, high=24 * 3600)
    # A first request for a symbol not streamed yet waits this long for its first value.
    demand_wait_ms: int = _setting(3000, low=0, high=60_000)
    # Symbols nobody asked for in this long are unsubscribed (pinned ones never).
    demand_idle_s: float = _setting(300, low=2, high=7 * 24 * 3600)
    # On-demand streams carried at most (pinned ones apart); a request that would start more is
    # refused (429). 1,000 fit one connection, so on-demand load holds at most one (see README).
    demand_max_streams: int = _setting(1000, low=0, high=100_000)
    # New on-demand streams one client may start: this many a second on average, in bursts of up
    # to DEMAND_CLIENT_BURST (a whole /snapshots request of 100 new symbols); then 429.
    demand_client_streams_per_s: float = _setting(10, low=0.01, high=100_000)
    demand_client_burst: int = _setting(100, low=1, high=100_000)
    # Proxies in front of the server, each appending the address it saw to X-Forwarded-For: the
    # client is the address that many entries from its end. 0: no proxy; the client is the peer.
    trusted_proxy_hops: int = _setting(0, low=0, high=10)
    # Candles kept per symbol and interval, the open one included: seeded over REST on first
    # demand (1,000: one call, weight 2), then kept by the kline stream.
    kline_history: int = _setting(1000, low=2, high=100_000)
    # Kept at most per symbol and interval when older ranges are asked for (backfilled).
    kline_history_max: int = _setting(20_000, low=2, high=1_000_000)
    # Older trades (and aggregate trades) fetched on request are kept up to this many per symbol
    # and series, besides the last 1,000 (contract.trade_history): about 2 MB at most for 10,000.
    trade_history_max: int = _setting(10_000, low=1000, high=1_000_000)
    # Levels per side of the REST snapshot a local order book starts from (contract.order_book):
    # 1,000 costs weight 50, 5,000 weight 250; the book is exact down to the snapshot's last level.
    depth_snapshot_limit: int = _setting(1000, low=100, high=5000)
    # Members (messenger runs, contract.members) that carry each stream: 2 or more for high
    # availability (a member's death then costs no 500), 1 to spread the streams only.
    replicas: int = _setting(1, low=1, high=16)
    # Member processes ``python -m messenger`` runs on this machine; 0: one per CPU core.
    processes: int = _setting(1, low=0, high=MAX_PROCESSES)
    stats_interval_s: float = _setting(10, low=0.1, high=3600)
    # The public address messengers reach Binance from: members with the same EGRESS share one
    # budget in Redis (messenger.egress). Default: every member behind one address.
    egress: str = _setting("default")
    # New WebSocket connections per EGRESS_CONNECTION_WINDOW_S (Binance: 300 per 5 minutes per IP);
    # 10 % stay free for anything on the address that does not take from this budget.
    egress_connections: int = _setting(270, low=1, high=300)
    egress_connection_window_s: float = _setting(300, low=1, high=3600)
    # REST request weight per minute for all members together (Binance: 6,000 per IP). Half: the
    # rest covers what the budget cannot see (other programs; what a Redis restart forgot).
    egress_rest_weight: int = _setting(3000, low=1, high=6000)
    host: str = _setting("127.0.0.1")
    port: int = _setting(3333, low=1, high=65535)
    # Gunicorn worker processes; 0: two per CPU core.
    web_concurrency: int = _setting(0, low=0, high=256)
    # A request body must be all there this long after its headers, or it is a 408.
    body_timeout_ms: int = _setting(5000, low=100, high=600_000)
    # The messenger's Prometheus metrics (on HOST); 0: none.
    metrics_port: int = _setting(9464, low=0, high=65535)
    log_level: str = _setting("INFO")
    log_format: str = _setting("text")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then the environment, then explicit overrides (tests, CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.name.upper()
            if f.name in overrides:
                raw = overrides[f.name]
            elif name in env and env[name] != "":
                raw = env[name]
            else:
                continue
            values[f.name] = _coerce(name, f, raw)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check ranges and cross-field rules; raise SettingsError on the first problem."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            low, high = f.metadata.get("low"), f.metadata.get("high")
            name = f.name.upper()
            if low is not None and value < low:
                raise SettingsError(f"{name}={value} is below the minimum {low}")
            if high is not None and value > high:
                raise SettingsError(f"{name}={value} is above the maximum {high}")
        _check_url("REDIS_URL", self.redis_url, ("redis", "rediss", "unix"))
        _check_redis_mode(self)
        _check_url("BINANCE_WS_URL", self.binance_ws_url, ("ws", "wss"))
        _check_url("BINANCE_REST_URL", self.binance_rest_url, ("http", "https"))
        if self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL={self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"LOG_FORMAT={self.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
        if self.ws_transport not in WS_TRANSPORTS:
            raise SettingsError(
                f"WS_TRANSPORT={self.ws_transport!r} is not one of {', '.join(WS_TRANSPORTS)}"
            )
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.egress):
            raise SettingsError(f"EGRESS={self.egress!r} must be 1 to 64 letters, digits, '.', '_' or '-'")
        if self.reconnect_min_ms > self.reconnect_max_ms:
            raise SettingsError("RECONNECT_MIN_MS must not exceed RECONNECT_MAX_MS")

    @property
    def ping_interval_ms(self) -> int:
        """How long a quiet connection waits before the messenger pings it."""
        # Four pings fit in one liveness window, and at most ~3 a second leave room
        # under Binance's 5 incoming messages per second for control messages.
        return max(self.liveness_timeout_ms // 5, 300)

    @property
    def refresh_interval_ms(self) -> int:
        """How often the TTL of every live value is renewed."""
        return max(self.snapshot_ttl_ms // 3, 20)


def _coerce(name: str, f: dataclasses.Field[Any], raw: Any) -> Any:
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str}[str(f.type)]
    if isinstance(raw, kind) and not isinstance(raw, bool):
        return raw
    text = str(raw).strip()
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a valid {kind.__name__}") from None
    return text


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    problem = f"{name}={masked(url)!r} must be a {'/'.join(schemes)}:// URL with a host"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is no port)
    except ValueError:
        # Not chained: urlsplit's own message may quote the URL, password and all.
        raise SettingsError(f"{problem} and a valid port") from None
    if parts.scheme not in schemes or (parts.scheme != "unix" and not parts.hostname):
        raise SettingsError(problem)


def sentinel_addresses(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (IPv6 in brackets: ``[::1]:26379``) as (host, port) pairs."""
    problem = f"REDIS_SENTINELS={text!r} must be host:port[,host:port...] with ports 1 to 65535"
    addresses = []
    for item in text.split(","):
        host, colon, port = item.strip().rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not colon or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(problem)
        if any(c.isspace() or c in "/@[]" for c in host):
            raise SettingsError(problem)
        addresses.append((host, int(port)))
    return addresses


def _check_redis_mode(settings: Settings) -> None:
    scheme = urlsplit(settings.redis_url).scheme
    if settings.redis_sentinels:
        sentinel_addresses(settings.redis_sentinels)
        if settings.redis_cluster:
            raise SettingsError("REDIS_SENTINELS and REDIS_CLUSTER=1 exclude each other: choose one")
        if scheme == "unix":
            raise SettingsError("REDIS_SENTINELS needs a redis:// or rediss:// REDIS_URL, not unix://")
    service = settings.redis_sentinel_service
    if not service or not service.isascii() or any(not c.isprintable() or c.isspace() for c in service):
        raise SettingsError(f"REDIS_SENTINEL_SERVICE={service!r} must be a name without spaces")
    if settings.redis_cluster:
        if scheme == "unix":
            raise SettingsError("REDIS_CLUSTER=1 needs a redis:// or rediss:// REDIS_URL, not unix://")
        if urlsplit(settings.redis_url).path.strip("/") not in ("", "0"):
            raise SettingsError("REDIS_CLUSTER=1: a cluster has only db 0; REDIS_URL names another")


def masked(url: str) -> str:
    """The URL with its password (or a lone user part, which Redis may take for one) as ``***``."""
    url = _PASSWORD_PARAM.sub(r"\1***", url)
    at = url.rfind("@")  # the last one: an unencoded "@" in a password is still hidden
    if at < 0:
        return url
    start = url.find("//")
    start = start + 2 if 0 <= start < at else 0
    user, colon, _ = url[start:at].partition(":")
    return f"{url[:start]}{user + colon if colon else ''}***{url[at:]}"
