"""bench.run: the table and the chart of a run that measured only some benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import run

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "results.json"


def test_only_one_benchmark_into_a_new_folder_writes_its_rows_and_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--only freshness --out <new folder>` once wrote results.json and then failed on the table
    # (KeyError: 'ingest'): a 9-minute run with no table and no chart.
    freshness = json.loads(RESULTS.read_text())["freshness"]

    def measure(repeats: int, quick: bool, only: set[str] | None) -> dict[str, Any]:
        assert only == {"freshness"}
        return {"freshness": freshness}

    monkeypatch.setattr(run, "measure", measure)
    assert run.main(["--only", "freshness", "--out", str(tmp_path)]) == 0
    rows = (tmp_path / "results.md").read_text().splitlines()
    assert rows[0].startswith("| benchmark | figure |")
    assert len(rows) > 2
    assert all(row.startswith("| freshness, ") for row in rows[2:])
    assert (tmp_path / "results.png").stat().st_size > 10_000
