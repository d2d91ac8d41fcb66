"""`plant db maintain` while a simulated line writes on PostgreSQL: no cell lost (the store
equals the PLC's counters), month partitions created ahead, an old month's spectra archived to
Parquet and still shown by the HMI's HTTP API."""

from __future__ import annotations

import json
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from linerig import add_user, answers, config_copy, plant_cmd, plant_env, start_run, stop_run, until
from sqlalchemy import func, select, text
from storefill import CHANNELS, confirmed_cells, spectrum_of

from plant.cell_records import count_routes
from plant.partitions import month_of, month_partitions, months_after
from plant.store import CellSpectrumRow, Store, upgrade, utcnow

pytestmark = pytest.mark.e2e

CELLS = 1500
RATE = 25.0
PASSWORD = "maintain-viewer-pw-1"


def _summary(log: str) -> dict[str, Any]:
    for line in reversed(log.splitlines()):
        if line.startswith("{") and "plc_counters" in line:
            return dict(json.loads(line))
    raise AssertionError(f"no run summary in the log:\n{log[-3000:]}")


def test_maintain_while_a_line_writes(pg_url: str, tmp_path: Path) -> None:
    upgrade(pg_url)
    store = Store(pg_url)
    old = datetime(utcnow().year - 1, 3, 1, 6, tzinfo=UTC)  # a month with no partition yet
    old_ids = confirmed_cells(store, "L0", old, 40)
    cfg = config_copy(tmp_path, db_url=pg_url, heads=2)
    add_user(cfg, tmp_path, "vera", "viewer", PASSWORD)
    proc = start_run(cfg, tmp_path, "--cells", str(CELLS), "--rate", f"{RATE:g}")
    try:
        base = f"http://127.0.0.1:{tomllib.loads((cfg / 'plant.toml').read_text())['hmi']['port']}"
        until("HMI", lambda: answers(f"{base}/api/health"), proc, 180)
        until("cells written", lambda: store.count_cells("L1") > 100, proc, 180)
        before = store.count_cells("L1")

        maintained = subprocess.run(
            plant_cmd(cfg, "db", "maintain", "--database", pg_url, "--months-ahead", "6",
                      "--archive-before", "30"),
            capture_output=True, text=True, env=plant_env(), cwd=tmp_path, timeout=300,
        )  # fmt: skip
        assert maintained.returncode == 0, maintained.stderr
        report = json.loads(maintained.stdout.strip().splitlines()[-1])
        assert store.count_cells("L1") > before, "the line stopped writing"
        assert proc.poll() is None, "the line ended before maintain did: slow it down"

        ahead = months_after(month_of(utcnow()), 6)
        with store.engine.connect() as conn:
            cells_months = month_partitions(conn, "cells")
            spectra_months = month_partitions(conn, "cell_spectra")
            in_default = conn.scalar(text("SELECT count(*) FROM cells_default"))
        assert ahead in cells_months and ahead in spectra_months
        assert f"cells_y{ahead.year}m{ahead.month:02d}" in report["partitions_created"]
        assert month_of(old) in cells_months and in_default == 0  # moved out of the default
        assert month_of(old) not in spectra_months  # archived, its partition dropped
        assert report["months_archived"] == [f"{old:%Y-%m}"] and report["spectra_archived"] == 40
        archive = tmp_path / "var" / "spectra-archive" / f"cell_spectra-{old:%Y-%m}.parquet"
        assert archive.is_file()
        with store.session() as s:
            assert s.scalar(
                select(func.count()).select_from(CellSpectrumRow)
                .where(CellSpectrumRow.cell_id.in_(old_ids))
            ) == 0  # fmt: skip

        client = httpx.Client(base_url=base, timeout=10)
        token = client.post("/api/login", json={"name": "vera", "password": PASSWORD})
        assert token.status_code == 200, token.text
        client.headers["Authorization"] = f"Bearer {token.json()['token']}"
        r = client.get(f"/api/cells/{old_ids[3]}/spectrum")
        assert r.status_code == 200, r.text
        shown = r.json()
        assert shown["source"] == f"xrf0:CELL:{old_ids[3]}" and shown["channels"] == CHANNELS
        assert sum(shown["counts"]) == spectrum_of(old_ids[3]).counts.sum()
        cell = client.get(f"/api/cells/{old_ids[3]}").json()
        assert cell["route"] == "black_mass" and cell["state"] == "confirmed"

        until("line done", lambda: proc.poll() is not None, None, 300)
    finally:
        stop_run(proc, tmp_path)
    summary = _summary((tmp_path / "run.log").read_text(errors="replace"))
    assert summary["cells"] == CELLS and summary["final"] == CELLS
    assert store.count_cells("L1") == CELLS  # nothing lost while partitions came and went
    assert count_routes(store, "L1") == summary["plc_counters"]
    store.close()
