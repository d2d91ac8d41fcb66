"""`plant bench` as an engineer runs it: one JSON object with every figure, nothing lost.

Smoke test only: the figures themselves depend on the machine, so no timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from linerig import CONFIG, plant_env

pytestmark = pytest.mark.e2e

PLANT = [sys.executable, "-m", "plant.cli"]
KEYS = {
    "commit",
    "dirty",
    "machine",
    "quick",
    "errors",
    "cells",
    "throughput_cells_per_s",
    "decision_latency_ms",
    "modbus_rtt_ms",
    "latency_ratio",
    "classify_spectra_per_s",
    "classify_single_ms",
    "classify_model",
    "qr_decode_ms",
    "passport_lookup_ms",
    "passport_lookup_cells",
    "passport_verify_ms",
    "hmi_event_latency_ms",
    "lost_records",
    "counters_match",
    "runs",
    "budgets_met",
}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_json_has_every_figure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *PLANT,
            "--config",
            str(CONFIG),
            "bench",
            "--json",
            "--cells",
            "200",
            "--quick",
            "--latency-rate",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=plant_env(),
        cwd=tmp_path,  # data_dir "var" -> the lookup database is built under tmp_path/var/bench
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # the JSON alone on stdout; progress went to stderr
    assert result.keys() >= KEYS, KEYS - result.keys()
    assert "[1/7]" in proc.stderr
    assert result["lost_records"] == 0 and result["counters_match"] and not result["errors"]
    assert result["quick"] and result["passport_lookup_cells"] == 100_000
    assert set(result["decision_latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert set(result["modbus_rtt_ms"]) == {"p50", "p99"}
    assert result["machine"]["cores"] >= 1 and result["machine"]["python"]
    assert result["runs"]["latency"]["feeder_cells_per_s"] == 100  # the engineer's rate, as asked
    for run in result["runs"].values():
        assert run["sent"] == run["stored"] == run["final"] == 200
        assert 0 <= run["cpu_steal_pct"] <= 100  # Linux reports steal time (0 on bare metal)
        assert run["routes"] == run["plc_counters"]
    assert set(result["budgets_met"]) >= {"throughput_cells_per_s", "lost_records"}
    assert (tmp_path / "var" / "bench" / "passport-lookup-100000.db").exists()
