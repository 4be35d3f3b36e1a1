"""Every benchmark, side by side with its baseline, into a table and a chart: ``make bench``.

    python -m bench.run [--repeats 3] [--quick] [--out bench/results] [--only klines,kline_weight]

Writes ``results.json`` (every figure), ``results.md`` (the table, with each target met or
missed) and ``results.png`` (the chart) to ``--out``. Each figure is a median over ``repeats``
runs, each run measuring the service and its baseline in turn on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    closed_candles,
    conditional_writes,
    depth,
    freshness,
    ingest,
    kline_weight,
    klines,
    members,
    order_books,
    redis_modes,
    renewal,
    scale,
    serving,
)
from bench.ingest import SATURATED
from bench.stack import rounded
from contract.redis_client import SINGLE


def measure(repeats: int, quick: bool, only: set[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks (or ``only`` these); ``quick`` shortens each run (for a smoke check, not
    for figures)."""
    seconds = 2.0 if quick else 5.0
    benchmarks: dict[str, Callable[[], Any]] = {
        "ingest": lambda: [rounded(r) for r in ingest.run([1, 100, 2000], seconds, repeats)],
        "freshness": lambda: rounded(
            freshness.run(samples=100 if quick else freshness.DEFAULT_SAMPLES, repeats=repeats)
        ),
        "serving": lambda: rounded(serving.run(seconds=3 if quick else 10, repeats=repeats)),
        "scale": lambda: rounded(scale.run(steady_s=5 if quick else 20, repeats=repeats)),
        "renewal": lambda: renewal.run([12_620, 50_000, 100_000], 3.0 if quick else 8.0),
        "klines": lambda: rounded(klines.run(seconds=3 if quick else 10, repeats=repeats)),
        "kline_weight": lambda: rounded(kline_weight.run(series=200 if quick else 1000)),
        "closed_candles": lambda: rounded(closed_candles.run(seconds=5 if quick else 20, repeats=repeats)),
        "depth": lambda: rounded(depth.run(seconds=3 if quick else 10, repeats=repeats)),
        "order_books": lambda: rounded(order_books.run(events=5000 if quick else 20_000)),
        "members": lambda: [rounded(r) for r in members.run_ingest([100, 2000], min(seconds, 3.0), repeats)],
        "failover": lambda: rounded(members.run_failover(3 if quick else 10, members.LIVENESS_MS, 12)),
        "conditional_writes": lambda: conditional_writes.run_variants(repeats, quick),
        "redis_modes": lambda: redis_modes.run(3 if quick else 10, seconds, repeats=repeats),
    }
    unknown = (only or set()) - set(benchmarks)
    if unknown:
        raise SystemExit(
            f"--only: no benchmark {', '.join(sorted(unknown))}; there are {', '.join(benchmarks)}"
        )
    return {name: run() for name, run in benchmarks.items() if only is None or name in only}


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    """'met' or how far it is from the target."""
    met = value >= target if higher_is_better else value <= target
    return "met" if met else f"missed by {abs(value - target) / target:.0%}"


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table with the issue's targets."""
    rows: list[tuple[str, ...]] = [
        ("benchmark", "figure", "service", "baseline", "ratio", "target", "verdict")
    ]
    rows.append(("---",) * 7)

    def add(*cells: str) -> None:
        rows.append(cells)

    for r in results.get("ingest", []):
        rows += _ingest_rows(r)
    if "freshness" in results:
        rows += _freshness_rows(results["freshness"])
    if "serving" in results:
        rows += _serving_rows(results["serving"])
    if "scale" in results:
        rows += _scale_rows(results["scale"])
    for r in results.get("renewal", []):
        ours, base = r["vouched"], r["per_value"]
        lapses = ours["lapses"]
        add(f"renewal, {r['keys']:,} quiet keys", "lapses; writer CPU; writes/s", _renewal(ours),
            f"per value: {_renewal(base)}", "", "0 lapses at >= 50,000",
            "met" if lapses == 0 else f"{lapses:,} lapses")  # fmt: skip
    if "klines" in results:
        rows += _klines_rows(results["klines"])
    if "kline_weight" in results:
        rows += _weight_rows(results["kline_weight"])
    if "closed_candles" in results:
        c = results["closed_candles"]
        add(f"closed candles pushed, {c['symbols']} symbols kline_1s", "close frame -> SSE, p50 / p99 ms",
            f"{c['push_p50_ms']:.0f} / {c['push_p99_ms']:.0f}",
            f"Redis SUBSCRIBE {c['redis_p50_ms']:.0f} / {c['redis_p99_ms']:.0f}",
            f"{c['push_received']:.0f} of {c['closed_sent']:.0f} received", "p99 < 50",
            verdict(c["push_p99_ms"], 50, False))  # fmt: skip
    if "depth" in results:
        rows += _depth_rows(results["depth"])
    if "order_books" in results:
        rows += _book_rows(results["order_books"])
    for r in results.get("members", []):
        rows += _members_rows(r)
    if "failover" in results:
        rows += _failover_rows(results["failover"])
    for c in results.get("conditional_writes", []):
        rows += _conditional_rows(c)
    if "redis_modes" in results:
        rows += _redis_modes_rows(results["redis_modes"])
    return "".join("| " + " | ".join(cells) + " |\n" for cells in rows)


def _members_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """``--processes 2`` against 1 on the same flood: CPU per frame over all member processes, and
    frames/s, each with the source's share of a core and how busy the machine was."""
    name = f"members ingest, {r['symbols']:,} symbols ({r['source']})"

    def side(p: int, figure: str) -> str:
        label = "process" if p == 1 else "processes"
        saturated = ": saturated" if r[f"p{p}_source_saturated"] else ""
        return (f"{p} {label} {figure} ({r['source']} {r[f'p{p}_source_cpu_share']:.0%}{saturated}; "
                f"{r[f'p{p}_busy_cores']:.1f} of {r['cores']} cores busy)")  # fmt: skip

    cpu, rate = r["cpu_ratio_2_to_1"], r["rate_ratio_2_to_1"]
    if rate > 1:
        rate_verdict = "met"
    elif r["p2_source_saturated"]:
        rate_verdict = f"not judged: the {r['source']} is the limit"
    elif r["p2_busy_cores"] >= SATURATED * r["cores"]:
        rate_verdict = f"missed by {1 - rate:.0%}: the machine is the limit"
    else:
        rate_verdict = f"missed by {1 - rate:.0%}"
    lost = {p: r[f"p{p}_frames_lost"] for p in (1, 2)}
    wrong = {p: r[f"p{p}_wrong"] for p in (1, 2)}
    extra = {p: r.get(f"p{p}_extra_streams", 0) for p in (1, 2)}
    bad = sum(lost.values()) + sum(wrong.values()) + sum(extra.values())
    return [
        (name, "CPU us/frame, all members", side(2, f"{r['p2_cpu_us_per_frame']:.1f}"),
         side(1, f"{r['p1_cpu_us_per_frame']:.1f}"), f"{cpu:.2f}", "<= 1.10", verdict(cpu, 1.1, False)),
        (name, "frames/s into Redis", side(2, f"{r['p2_frames_per_s']:,.0f}"),
         side(1, f"{r['p1_frames_per_s']:,.0f}"), f"{rate:.2f}", "> 1.00 unless the source is the limit",
         rate_verdict),
        (name, "frames lost; symbols wrong; streams left subscribed",
         f"2 processes {lost[2]:,.0f}; {wrong[2]:.0f}; {extra[2]:.0f}",
         f"1 process {lost[1]:,.0f}; {wrong[1]:.0f}; {extra[1]:.0f}", "", "0 lost, 0 wrong, 0 left",
         "met" if bad == 0 else f"{sum(lost.values()):,.0f} lost, {sum(wrong.values()):.0f} wrong, "
         f"{sum(extra.values()):.0f} left"),
    ]  # fmt: skip


def _failover_rows(f: dict[str, Any]) -> list[tuple[str, ...]]:
    name = f"failover, {f['members']} members REPLICAS=1, {f['kills']} SIGKILLs"
    bound, worst = f["bound_s"], f["served_again_worst_s"]
    return [
        (name, "kill -> its symbols served again, median / worst s",
         f"{f['served_again_median_s']:.2f} / {worst:.2f}",
         f"LIVENESS_TIMEOUT_MS {f['liveness_timeout_ms'] / 1000:g} s + 1 s", f"{worst / bound:.2f}",
         f"worst <= {bound:g} s", verdict(worst, bound, False)),
        (name, "longest non-200 run of a symbol, median / worst s",
         f"{f['outage_median_s']:.2f} / {f['outage_worst_s']:.2f}", "", "", "", ""),
    ]  # fmt: skip


def _conditional_rows(c: dict[str, Any]) -> list[tuple[str, ...]]:
    """The conditional writer against plain SET in one run: its extra CPU per frame as a share of
    the messenger's (with plain SET), and Redis's CPU per record."""
    name = f"conditional writes, {c['records_per_batch']:,.0f}-record batches"
    if c["pad_bytes"]:
        name += f", {c['pad_bytes'] / 1000:g} KB records"
    plain, cond, two = (c["modes"][m] for m in conditional_writes.MODES)
    share = c["conditional_extra_share_of_messenger_cpu_per_frame"]
    return [
        (name, "writer's extra CPU, share of the messenger's CPU/frame",
         f"conditional {cond['messenger_cpu_us_per_frame']:.1f} us/frame",
         f"plain SET {plain['messenger_cpu_us_per_frame']:.1f} us/frame", f"{share:+.1%}", "<= 10%",
         verdict(share, 0.10, False)),
        (name, "Redis CPU us/record",
         f"conditional {cond['redis_cpu_us_per_record']:.1f}; 2 members {two['redis_cpu_us_per_record']:.1f}",
         f"plain SET {plain['redis_cpu_us_per_record']:.1f}",
         f"{c['redis_cpu_ratio_conditional_to_plain']:.2f}", "", ""),
    ]  # fmt: skip


def _redis_modes_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """Each Redis mode beside one redis-server, measured in turn in one run: serving and ingest,
    with what must be zero (non-2xx and wrong answers, frames lost, symbols wrong); a mode the
    machine could not run is said so, and why, with no figures."""
    rows: list[tuple[str, ...]] = []
    for mode, row in r["modes"].items():
        label = redis_modes.LABELS[mode]
        if isinstance(row, str):  # redis_modes.NOT_RUN and why
            rows.append((f"Redis {label} vs single", "serving; ingest", row, "", "", "", ""))
        elif mode != SINGLE:
            rows += _mode_serving_rows(r, mode, "snapshot", "POST /snapshot/BTC_USDT")
            rows += _mode_serving_rows(
                r, mode, "snapshots", f"POST /snapshots, {r['snapshots_symbols']} symbols"
            )
            rows += _mode_ingest_rows(r, mode)
    return rows


def _mode_serving_rows(r: dict[str, Any], mode: str, path: str, what: str) -> list[tuple[str, ...]]:
    label, ratio = redis_modes.LABELS[mode], r["ratios_to_single"][mode]
    row, single = r["modes"][mode], r["modes"][SINGLE]
    name = f"Redis {label} vs single, {what}, wrk {r['connections']}"

    def latency(side: dict[str, Any]) -> str:
        return (f"{side[f'{path}_p50_ms']:.1f} / {side[f'{path}_p99_ms']:.1f}; "
                f"{side[f'{path}_non_2xx']:,.0f}; {side[f'{path}_wrong_answers']:,.0f}")  # fmt: skip

    bad = sum(side[f"{path}_{n}"] for side in (row, single) for n in ("non_2xx", "wrong_answers"))
    checked = row[f"{path}_answers_checked"] + single[f"{path}_answers_checked"]
    return [
        (name, "requests/s", f"{label} {row[f'{path}_requests_per_s']:,.0f}",
         f"single {single[f'{path}_requests_per_s']:,.0f}", f"{ratio[f'{path}_requests_per_s']:.2f}", "", ""),
        (name, "p50 / p99 ms; non-2xx; wrong answers", f"{label} {latency(row)}", f"single {latency(single)}",
         f"p99 {ratio[f'{path}_p99_ms']:.2f}", f"0 non-2xx, 0 wrong ({checked:,.0f} checked)",
         "met" if bad == 0 else f"{bad:,.0f} bad"),
    ]  # fmt: skip


def _mode_ingest_rows(r: dict[str, Any], mode: str) -> list[tuple[str, ...]]:
    label, ratio = redis_modes.LABELS[mode], r["ratios_to_single"][mode]
    row, single = r["modes"][mode], r["modes"][SINGLE]
    name = f"Redis {label} vs single, ingest {r['symbols']:,} symbols ({r['source']})"

    def share(side: dict[str, Any]) -> str:
        saturated = ": saturated" if side["ingest_source_saturated"] else ""
        return f" ({r['source']} {side['ingest_source_cpu_share']:.0%}{saturated})"

    lost = row["ingest_frames_lost"] + single["ingest_frames_lost"]
    wrong = row["ingest_wrong"] + single["ingest_wrong"]
    return [
        (name, "CPU us/frame", f"{label} {row['ingest_cpu_us_per_frame']:.1f}{share(row)}",
         f"single {single['ingest_cpu_us_per_frame']:.1f}{share(single)}",
         f"{ratio['ingest_cpu_us_per_frame']:.2f}", "", ""),
        (name, "frames/s into Redis", f"{label} {row['ingest_frames_per_s']:,.0f}{share(row)}",
         f"single {single['ingest_frames_per_s']:,.0f}{share(single)}", f"{ratio['ingest_frames_per_s']:.2f}",
         "", ""),
        (name, "frames lost; symbols wrong",
         f"{label} {row['ingest_frames_lost']:,.0f}; {row['ingest_wrong']:.0f}",
         f"single {single['ingest_frames_lost']:,.0f}; {single['ingest_wrong']:.0f}", "", "0 lost, 0 wrong",
         "met" if lost == 0 and wrong == 0 else f"{lost:,.0f} lost, {wrong:.0f} wrong"),
    ]  # fmt: skip


def _depth_rows(d: dict[str, Any]) -> list[tuple[str, ...]]:
    name = f"depth limit={d['levels']:,}, wrk {d['connections']}"
    server = f"{d['server_p50_ms']:.1f} / {d['server_p99_ms']:.1f}"
    bare, wrong = f"bare {d['bare_p50_ms']:.1f} / {d['bare_p99_ms']:.1f}", d["wrong_answers"]
    return [
        (name, "requests/s", f"{d['server_requests_per_s']:,.0f}", f"bare {d['bare_requests_per_s']:,.0f}",
         f"{d['ratio_to_bare']:.2f}", ">= 0.80", verdict(d["ratio_to_bare"], 0.8, True)),
        (name, "p50 / p99 ms; wrong answers", f"{server}; {wrong}", bare,
         "", f"0 wrong ({d['answers_checked']:,} checked)", "met" if wrong == 0 else f"{wrong} wrong"),
    ]  # fmt: skip


def _book_rows(b: dict[str, Any]) -> list[tuple[str, ...]]:
    name = f"order books, {b['symbols']} symbols, {b['changes_per_event']} levels an event"
    floor = f"parse only {b['parse_only_cpu_us_per_event']:.1f}"
    rows: list[tuple[str, ...]] = []
    for tier in ("100", "1000"):
        us, share = b[f"levels_{tier}_cpu_us_per_event"], b[f"levels_{tier}_core_share_per_1000_events_s"]
        rows.append((f"{name}, {tier} levels written", "CPU us/event; core share at 1,000 events/s",
                     f"{us:.0f}; {share:.0%}", floor, f"{b[f'levels_{tier}_over_parse_only']:.0f}x",
                     "", f"{b[f'levels_{tier}_events_per_core_s']:,.0f} events/s a core"))  # fmt: skip
    rows.append(("order book, 5,000 levels a side", "memory", f"{b['book_5000_levels_bytes'] / 1e6:.1f} MB",
                 "", "", "", ""))  # fmt: skip
    return rows


def _ingest_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """Per symbol count: the messenger against its peers and the ceiling, each figure with the
    source's share of a core in that reader's runs (a saturated source measures itself)."""
    name = f"ingest, {r['symbols']:,} symbols ({r['source']})"

    def cpu(reader: str) -> str:
        return f"{r[f'{reader}_cpu_us_per_frame']:.1f}{_source(r, reader)}"

    def rate(reader: str) -> str:
        return f"{r[f'{reader}_frames_per_s']:,.0f}{_source(r, reader)}"

    to_asyncio, to_ceiling, rate_ratio = (
        r["cpu_ratio_to_asyncio"],
        r["cpu_ratio_to_ceiling"],
        r["ratio_to_ceiling"],
    )
    lost = r["frames_lost_max"]
    readers = ("messenger", "messenger_picows", "poc", "asyncio", "picows")
    wrong = {reader: r[f"{reader}_wrong"] for reader in readers if f"{reader}_wrong" in r}
    bad = sum(wrong.values())
    on_picows = []
    if "messenger_picows_cpu_us_per_frame" in r:  # the messenger with WS_TRANSPORT=picows
        on_picows = [
            (name, "CPU us/frame", cpu("messenger"), f"messenger on picows {cpu('messenger_picows')}",
             f"{r['messenger_picows_cpu_us_per_frame'] / r['messenger_cpu_us_per_frame']:.2f}", "", ""),
        ]  # fmt: skip
    return [*on_picows,
        (name, "CPU us/frame", cpu("messenger"), f"asyncio peer {cpu('asyncio')}", f"{to_asyncio:.2f}",
         "<= 1.00", verdict(to_asyncio, 1.0, False)),
        (name, "CPU us/frame", cpu("messenger"), f"ceiling {cpu('ceiling')}", f"{to_ceiling:.2f}",
         "<= 1.25", verdict(to_ceiling, 1.25, False)),
        (name, "CPU us/frame", cpu("messenger"), f"picows peer {cpu('picows')}; POC {cpu('poc')}",
         f"{r['messenger_cpu_us_per_frame'] / r['picows_cpu_us_per_frame']:.1f}x picows", "", ""),
        (name, "frames/s into Redis", rate("messenger"), f"ceiling {rate('ceiling')}", f"{rate_ratio:.2f}",
         ">= 0.85", verdict(rate_ratio, 0.85, True)),
        (name, "frames/s into Redis", rate("messenger"),
         f"asyncio {rate('asyncio')}; picows {rate('picows')}; POC {rate('poc')}",
         f"{r['ratio_to_poc']:.1f}x POC", ">= 5x POC", verdict(r["ratio_to_poc"], 5, True)),
        (name, "frames lost; symbols wrong", f"{lost:.0f}; {wrong['messenger']:.0f}",
         "wrong: " + ", ".join(f"{k} {v:.0f}" for k, v in wrong.items() if k != "messenger"), "",
         "0 lost, 0 wrong", "met" if lost == 0 and bad == 0 else f"{lost:.0f} lost, {bad:.0f} wrong"),
    ]  # fmt: skip


FRESHNESS_SIDES = [(source, transport, processes) for processes in freshness.PROCESSES
                   for source in freshness.SOURCES for transport in freshness.TRANSPORTS]  # fmt: skip
FRESHNESS_SIDES += [(source, freshness.PEER, 1) for source in freshness.SOURCES]  # the floor, last


# The parts of a freshness run, as its table names them (the floor has its peer where the messenger was,
# and the bare app for a server).
FRESHNESS_PARTS = (("messenger", "messenger"), ("redis", "Redis"), ("server", "server"), ("source", "source"),
                   ("probe", "probe"))  # fmt: skip
FLOOR_PARTS = (("peer", "peer"), ("redis", "Redis"), ("server", "bare app"), ("source", "source"),
               ("probe", "probe"))  # fmt: skip


def _freshness_rows(f: dict[str, Any]) -> list[tuple[str, ...]]:
    """A row per flood source, transport and member count measured (same run), each with the source's
    share of a core (the simulator's competes with the service for this machine's cores; Binance's
    does not)."""
    rows: list[tuple[str, ...]] = []
    for source, transport, processes in FRESHNESS_SIDES:
        p = freshness.prefix(source, transport, processes)
        if f"{p}http_p99_ms" not in f:
            continue
        floor = transport == freshness.PEER
        name = f"freshness, {f[f'{p}frames_per_s']:,.0f} frames/s"
        if f"{p}source_cpu_share" in f:  # since the feed became a source: the source named, its CPU
            name += f" from the {source}"
        if floor:
            name += ", the floor: picows peer writing as frames come, bare app (no freshness rule)"
        elif transport != freshness.DEFAULT_TRANSPORT:
            name += f", {transport}"
        if processes != 1:
            name += f", {f[f'{p}members']:.0f} members (one per core, as compose runs it)"
        share = f" ({source} {f[f'{p}source_cpu_share']:.0%})" if f"{p}source_cpu_share" in f else ""
        rows.append((name, "sent -> readable, p50 / p99 ms",
                     f"HTTP {f[f'{p}http_p50_ms']:.1f} / {f[f'{p}http_p99_ms']:.1f}{share}",
                     f"Redis {f[f'{p}redis_p50_ms']:.1f} / {f[f'{p}redis_p99_ms']:.1f}",
                     f"{f[f'{p}http_p99_over_redis_p99']:.2f}", "" if floor else "p99 <= 5",
                     "" if floor else verdict(f[f"{p}http_p99_ms"], 5, False)))  # fmt: skip
        floor_p = freshness.prefix(source, freshness.PEER)
        if f"{p}http_p99_over_peer" in f:  # since the floor is measured beside it: the service's share
            rows.append((name, "sent -> readable over HTTP, p99 ms, against the floor (same repeats)",
                         f"{f[f'{p}http_p99_ms']:.1f}", f"floor {f[f'{floor_p}http_p99_ms']:.1f}",
                         f"{f[f'{p}http_p99_over_peer']:.2f}", "", ""))  # fmt: skip
        if f"{p}http_read_p99_ms" in f:  # since reads are timed: what the reader adds to the figures above
            rows.append((name, "one read's round trip, p50 / p99 ms",
                         f"HTTP {f[f'{p}http_read_p50_ms']:.1f} / {f[f'{p}http_read_p99_ms']:.1f}",
                         f"Redis {f[f'{p}redis_read_p50_ms']:.1f} / {f[f'{p}redis_read_p99_ms']:.1f}",
                         "", "", ""))  # fmt: skip
        if f"{p}source_queued_p99_ms" in f:  # since the simulator's probe is timed at its write
            rows.append((name, "probe queued in the simulator before its write, p50 / p99 ms",
                         f"{f[f'{p}source_queued_p50_ms']:.1f} / {f[f'{p}source_queued_p99_ms']:.1f}",
                         "not counted above (Binance's queue)", "", "", ""))  # fmt: skip
        if f"{p}machine_busy_cores" in f:  # since the parts' shares are measured: how full the cores were
            parts = FLOOR_PARTS if floor else FRESHNESS_PARTS
            shares = ", ".join(f"{label} {f[f'{p}{part}_cpu_share']:.0%}" for part, label in parts)
            rows.append((name, "share of a core over the samples", shares,
                         f"machine {f[f'{p}machine_busy_cores']:.2f} cores busy", "", "", ""))  # fmt: skip
    return rows


def _source(r: dict[str, Any], reader: str) -> str:
    share = r[f"{reader}_source_cpu_share"]
    return f" ({r['source']} {share:.0%}{': saturated' if r[f'{reader}_source_saturated'] else ''})"


def _klines_rows(k: dict[str, Any]) -> list[tuple[str, ...]]:
    name = f"klines limit={k['rows']:,}, wrk {k['connections']}"
    server = f"{k['server_p50_ms']:.1f} / {k['server_p99_ms']:.1f}"
    bare, wrong = f"bare {k['bare_p50_ms']:.1f} / {k['bare_p99_ms']:.1f}", k["wrong_answers"]
    per = "; ".join(f"{i} {k[f'bytes_per_candle_{i}']:.0f}" for i in klines.MEMORY_INTERVALS)
    return [
        (name, "requests/s", f"{k['server_requests_per_s']:,.0f}", f"bare {k['bare_requests_per_s']:,.0f}",
         f"{k['ratio_to_bare']:.2f}", ">= 0.80", verdict(k["ratio_to_bare"], 0.8, True)),
        (name, "p50 / p99 ms; wrong answers", f"{server}; {wrong}", bare,
         "", f"0 wrong ({k['answers_checked']:,} checked)", "met" if wrong == 0 else f"{wrong} wrong"),
        ("klines memory, 1,000 candles", "Redis bytes per candle", per, f"row {k['row_bytes_1m']:.0f} bytes",
         f"{k['bytes_per_candle_1m'] / k['row_bytes_1m']:.2f}", "", ""),
        (f"klines memory, {k['series']} series", "used_memory bytes per candle",
         f"{k['used_memory_bytes_per_candle']:.0f}", "", "",
         f"{k['used_memory_mb_per_1000_series']:.0f} MB per 1,000 series", ""),
    ]  # fmt: skip


def _weight_rows(w: dict[str, Any]) -> list[tuple[str, ...]]:
    name = f"klines REST, {w['series']:,} series {w['interval']}"
    rows: list[tuple[str, ...]] = []
    for phase, what in (("start", "start: calls; weight"), ("recover", "recover after a cut: calls; weight")):
        per = w[f"{phase}_weight_per_series"]
        kinds = ", ".join(
            f"{k} {w[f'{phase}_{k}_calls']:,}" for k in kline_weight.KINDS if f"{phase}_{k}_calls" in w
        )
        rows.append((name, f"{what} ({kinds})", f"{w[f'{phase}_calls']:,}; {w[f'{phase}_weight']:,}",
                     "1 call a series, weight 2", f"{per / 2:.2f}", "2 per series",
                     verdict(per, 2, False)))  # fmt: skip
    return rows


def _ingest_chart(ax: Any, rows: Any) -> None:
    """CPU a frame into Redis, each reader, by symbol count."""
    if not rows:
        ax.set_visible(False)
        return
    x = range(len(rows))
    readers = (("ceiling", "bare websocket-client"), ("messenger", "messenger"), ("asyncio", "asyncio peer"),
               ("picows", "picows peer"), ("poc", "POC pattern"))  # fmt: skip
    width = 0.8 / len(readers)
    for i, (reader, label) in enumerate(readers):
        ax.bar(
            [j + (i - 2) * width for j in x],
            [r[f"{reader}_cpu_us_per_frame"] for r in rows],
            width,
            label=label,
        )
    ax.set_xticks(list(x), [f"{r['symbols']:,} symbols" for r in rows])
    ax.set_yscale("log")
    ax.set_ylim(
        0.5, 30 * max(r[f"{reader}_cpu_us_per_frame"] for r in rows for reader, _ in readers)
    )  # legend room
    ax.set_ylabel("CPU us per frame into Redis (log)")
    ax.set_title(f"Ingest ({rows[0]['source']} flood)")
    ax.legend(ncols=2, fontsize="small")


def _freshness_chart(ax: Any, f: Any) -> None:
    """Frame sent -> readable, in Redis and over HTTP, each side measured."""
    if not f:
        ax.set_visible(False)
        return
    short = {"websocket-client": "ws-client", "simulator": "sim", freshness.PEER: "floor"}
    members = ("", ", member a core")  # by processes != 1
    sides = [
        (p, f"{short.get(source, source)}, {short.get(transport, transport)}{members[processes != 1]}")
        for source, transport, processes in FRESHNESS_SIDES
        if f"{(p := freshness.prefix(source, transport, processes))}http_p99_ms" in f
    ]
    for i, (prefix, _) in enumerate(sides):
        at = [2 * i, 2 * i + 1]
        ax.bar(at, [f[f"{prefix}redis_p50_ms"], f[f"{prefix}http_p50_ms"]], 0.35,
              label="p50" if i == 0 else None, color="tab:blue")  # fmt: skip
        ax.bar([x + 0.35 for x in at], [f[f"{prefix}redis_p99_ms"], f[f"{prefix}http_p99_ms"]], 0.35,
              label="p99" if i == 0 else None, color="tab:orange")  # fmt: skip
    ax.axhline(5, color="red", linestyle="--", label="target p99")
    # One line a bar, turned upright: two-line labels of ten bars ran into each other.
    ax.set_xticks([x + 0.17 for x in range(2 * len(sides))],
                 [f"{where}: {name}" for _, name in sides for where in ("Redis", "HTTP")],
                 fontsize="x-small" if len(sides) > 2 else None, rotation=90)  # fmt: skip
    ax.set_ylabel("ms after the frame was sent")
    ax.set_title(f"Freshness at {f[f'{sides[0][0]}frames_per_s']:,.0f} frames/s (flood source, transport)")
    ax.legend()


def _serving_chart(ax: Any, s: Any) -> None:
    """Requests a second beside the bare app."""
    if not s:
        ax.set_visible(False)
        return
    ax.bar([0, 1], [s["bare_requests_per_s"], s["server_requests_per_s"]], color=["grey", "tab:blue"])
    ax.axhline(0.8 * s["bare_requests_per_s"], color="red", linestyle="--", label="target: 80% of bare")
    ax.set_xticks(
        [0, 1], [f"bare WSGI\np99 {s['bare_p99_ms']:.0f} ms", f"server\np99 {s['server_p99_ms']:.0f} ms"]
    )
    ax.set_ylabel("requests/s")
    ax.set_title(f"Serving, wrk {s['connections']} connections")
    ax.legend()


def _scale_chart(ax: Any, g: Any) -> None:
    """Seconds until every symbol is servable, RSS under the bars."""
    if not g:
        ax.set_visible(False)
        return
    ax.bar(
        [0, 1],
        [g["bare_seconds_until_all_seen"], g["seconds_until_all_servable"]],
        color=["grey", "tab:blue"],
    )
    ax.axhline(10, color="red", linestyle="--", label="target 10 s")
    ax.set_xticks(
        [0, 1],
        [
            f"bare reader\n{g['bare_rss_peak_mb']:.0f} MB",
            f"messenger --all\n{g['messenger_rss_peak_mb']:.0f} MB",
        ],
    )
    ax.set_ylabel("seconds until all 2,000 symbols are there")
    ax.set_title("Scale (RSS under the bars; target 150 MB)")
    ax.legend()


def _depth_chart(ax: Any, d: dict[str, Any] | None) -> None:
    """The order book served beside the bare app returning the same bytes."""
    if not d:
        ax.set_visible(False)
        return
    ax.bar([0, 1], [d["bare_requests_per_s"], d["server_requests_per_s"]], color=["grey", "tab:blue"])
    ax.axhline(0.8 * d["bare_requests_per_s"], color="red", linestyle="--", label="target: 80% of bare")
    ax.set_xticks([0, 1], [f"bare WSGI, one GET\np99 {d['bare_p99_ms']:.0f} ms",
                           f"server\np99 {d['server_p99_ms']:.0f} ms"])  # fmt: skip
    ax.set_ylabel("requests/s")
    ax.set_title(f"/api/v3/depth limit={d['levels']:,}, wrk {d['connections']} connections")
    ax.legend()


def _serving_rows(s: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []

    def add(*cells: str) -> None:
        rows.append(cells)

    name = f"serving, wrk {s['connections']} connections"
    add(name, "requests/s", f"{s['server_requests_per_s']:,.0f}", f"bare {s['bare_requests_per_s']:,.0f}",
        f"{s['ratio_to_bare']:.2f}", ">= 0.80", verdict(s["ratio_to_bare"], 0.8, True))  # fmt: skip
    add(name, "p50 / p99 ms", f"{s['server_p50_ms']:.1f} / {s['server_p99_ms']:.1f}",
        f"bare {s['bare_p50_ms']:.1f} / {s['bare_p99_ms']:.1f}", "", "p99 <= 20",
        verdict(s["server_p99_ms"], 20, False))  # fmt: skip
    return rows


def _scale_rows(c: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []

    def add(*cells: str) -> None:
        rows.append(cells)

    name = f"scale, --all {c['symbols']:,} symbols"
    add(name, "s until all servable", f"{c['seconds_until_all_servable']:.2f}",
        f"bare {c['bare_seconds_until_all_seen']:.2f}", f"{c['servable_ratio_to_bare']:.2f}", "<= 10",
        verdict(c["seconds_until_all_servable"], 10, False))  # fmt: skip
    rss = c["messenger_rss_peak_mb"]
    add(name, "peak RSS MB", f"{rss:.0f}", f"bare {c['bare_rss_peak_mb']:.0f}",
        f"{c['rss_ratio_to_bare']:.2f}", "<= 150", verdict(rss, 150, False))  # fmt: skip
    cpu, lost = c["messenger_cpu_percent_of_a_core"], c["frames_lost"]
    add(name, "frames/s read; lost; CPU", f"{c['frames_per_s_read']:,.0f}; {lost}; {cpu:.0f}% of a core",
        "", "", "0 lost", "met" if lost == 0 else f"{lost} lost")  # fmt: skip
    return rows


def _renewal(r: dict[str, Any]) -> str:
    return f"{r['lapses']:,}; {r['writer_cpu_share']:.1%}; {r['redis_writes_per_s']:,.0f}"


def chart(results: dict[str, Any], path: Path) -> None:
    """Eight panels: ingest, freshness, serving, scale, candles, their memory and REST weight, order
    books; each beside its baseline and target."""
    import matplotlib  # noqa: PLC0415 (only the benchmarks need it: requirements-bench.txt)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ((a, b, e, w), (c, d, h, book)) = plt.subplots(2, 4, figsize=(24, 8))
    _depth_chart(book, results.get("depth"))
    _ingest_chart(a, results.get("ingest"))
    _freshness_chart(b, results.get("freshness"))
    _serving_chart(c, results.get("serving"))
    _scale_chart(d, results.get("scale"))
    k = results.get("klines")
    if k:
        e.bar([0, 1], [k["bare_requests_per_s"], k["server_requests_per_s"]], color=["grey", "tab:blue"])
        e.axhline(0.8 * k["bare_requests_per_s"], color="red", linestyle="--", label="target: 80% of bare")
        e.set_xticks([0, 1], [f"bare WSGI, one GET\np99 {k['bare_p99_ms']:.0f} ms",
                              f"server\np99 {k['server_p99_ms']:.0f} ms"])  # fmt: skip
        e.set_ylabel("requests/s")
        e.set_title(f"/api/v3/klines limit={k['rows']:,}, wrk {k['connections']} connections")
        e.legend()
        intervals = klines.MEMORY_INTERVALS
        h.bar(range(len(intervals)), [k[f"bytes_per_candle_{i}"] for i in intervals], 0.4, label="in Redis")
        h.bar([i + 0.4 for i in range(len(intervals))], [k[f"row_bytes_{i}"] for i in intervals], 0.4,
              color="grey", label="the row's bytes")  # fmt: skip
        h.set_xticks([i + 0.2 for i in range(len(intervals))], list(intervals))
        h.set_ylim(0, 1.3 * max(k[f"bytes_per_candle_{i}"] for i in intervals))
        h.set_ylabel("bytes per kept candle")
        h.set_title("Candles' memory (a series of 1,000)")
        h.legend()
    else:
        e.set_visible(False)
        h.set_visible(False)
    _weight_chart(w, results.get("kline_weight"))
    fig.suptitle(f"Transmute benchmarks, medians of {results['repeats']} runs ({results['machine']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _weight_chart(ax: Any, w: dict[str, Any] | None) -> None:
    """Candle calls' weight per series, by kind, to start and to recover."""
    if not w:
        ax.set_visible(False)
        return
    bottom = [0.0, 0.0]
    for kind in kline_weight.KINDS:
        heights = [2 * w.get(f"{phase}_{kind}_calls", 0) / w["series"] for phase in ("start", "recover")]
        if any(heights):
            ax.bar([0, 1], heights, bottom=bottom, label=kind)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.axhline(2, color="red", linestyle="--", label="1 call a series (weight 2)")
    ax.set_xticks([0, 1], [f"start\n{w['start_s']:.0f} s", f"recover after a cut\n{w['recover_s']:.0f} s"])
    ax.set_ylabel("REST weight per series")
    ax.set_ylim(0, 1.4 * max([*bottom, 2.0]))
    ax.set_title(f"Candles' REST weight, {w['series']:,} series {w['interval']}")
    ax.legend(fontsize="small")


def main(argv: list[str] | None = None) -> int:
    """Measure, then write the JSON, the table and the chart."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--only", metavar="NAME,...",
        help="run only these benchmarks; the others' figures are kept from --out's results.json",
    )  # fmt: skip
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    started = time.monotonic()
    kept = args.out / "results.json"
    results: dict[str, Any] = json.loads(kept.read_text()) if only and kept.exists() else {}
    results.update({
        "repeats": args.repeats,
        "machine": f"{os.cpu_count()} cores {platform.machine()}, Python {platform.python_version()}",
        **measure(args.repeats, args.quick, only),
    })  # fmt: skip
    if only is None:
        results["minutes"] = round((time.monotonic() - started) / 60, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(table(results))
    chart(results, args.out / "results.png")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
