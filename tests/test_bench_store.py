"""`plant bench store` as a user runs it: a fresh store loaded, its figures, its cells there."""

from __future__ import annotations

import json
import subprocess

import pytest
from linerig import CONFIG, plant_cmd, plant_env
from sqlalchemy import func, select, text

from plant.store import BatchRow, CellRow, CellSpectrumRow, PassportRow, Store

# `plant bench store` processes loading thousands of cells: slow tests, not in `make test`.
pytestmark = pytest.mark.slow

CELLS = 2000


def bench_store(db_url: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`plant bench store` of CELLS cells into `db_url`, without the line runs unless `args`
    ask for them."""
    argv = plant_cmd(CONFIG, "bench", "store", "--cells", str(CELLS), "--json")
    return subprocess.run(
        [*argv, "--database", db_url, *(args or ("--no-line",))],
        capture_output=True,
        text=True,
        env=plant_env(),
        timeout=timeout,
        check=False,
    )


def test_bench_store_reports_figures_of_the_cells_it_stored(db_url: str) -> None:
    done = bench_store(db_url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    assert result["cells"] == CELLS
    assert result["backend"] == db_url.split(":")[0].split("+")[0]
    assert result["insert_cells_per_s"] > 0
    lookup = result["passport_lookup_ms"]
    assert 0 < lookup["p50"] <= lookup["p99"] <= lookup["max"]
    search = result["search_first_page_ms"]
    for name in ("none", "passport_id", "chemistry", "route", "state", "line", "since", "until"):
        assert 0 < search[name]["p99"] <= search["worst_p99"], name
    assert result["trace_batch_ms"]["p99"] > 0 and result["batches"] > 0
    assert result["trace_passport_ms"]["p99"] > 0
    # A cell row with its indexes takes between 100 B and a few KB; a spectrum under 16 KB raw.
    assert 100 < result["bytes_per_cell"] < 4000
    assert 100 < result["bytes_per_spectrum"] < 16_384
    assert 100 < result["bytes_per_passport"] < 16_384
    assert result["cell_bytes_per_cell"]["heap"] < result["bytes_per_cell"]
    # maintain then archived the loaded month (January 2026), read back by the cell page
    maintained = result["maintain"]
    assert maintained["report"]["months_archived"] == ["2026-01"]
    assert maintained["report"]["spectra_archived"] == result["spectra"]
    assert maintained["seconds"] > 0 and maintained["archived_spectrum_read_ms"]["p99"] > 0
    assert set(result["budgets_met"]) == set(result["budgets"])

    store = Store(db_url)
    try:
        with store.session() as s:
            assert s.scalar(select(func.count(CellRow.id))) == CELLS
            assert s.scalar(select(func.count(PassportRow.id))) == result["passports"] > 0
            assert s.scalar(select(func.count(CellSpectrumRow.cell_id))) == 0  # all archived
            assert s.scalar(select(func.count(BatchRow.id))) == result["batches"]
            chemistries = set(s.scalars(select(CellRow.chemistry).distinct()))
    finally:
        store.close()
    assert {"LFP", "NMC811", "NCA"} <= chemistries  # the infeed's mix, not one kind of cell


def test_bench_store_refuses_a_database_that_holds_cells(db_url: str) -> None:
    assert bench_store(db_url).returncode == 0
    again = bench_store(db_url)
    assert again.returncode == 2
    assert "already holds cells: give an empty database" in again.stderr
    assert again.stdout == ""


@pytest.mark.timeout(900)
def test_bench_store_runs_the_line_on_the_loaded_store_and_on_an_empty_one(pg_url: str) -> None:
    done = bench_store(pg_url, "--line-cells", "200", timeout=900)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    line = result["line_vs_empty"]

    assert line["order"] == ["loaded", "empty", "empty", "loaded"]
    for side in ("loaded", "empty"):
        assert line[side]["throughput_cells_per_s"] > 0, side
        assert line[side]["decision_latency_ms_p99"] > 0, side
        assert len(line[side]["runs"]) == 2, side
    assert line["throughput_ratio"] == pytest.approx(
        line["loaded"]["throughput_cells_per_s"] / line["empty"]["throughput_cells_per_s"],
        abs=0.001,
    )
    assert line["lost_records"] == 0 and line["errors"] == []
    assert result["budgets_met"]["line_vs_empty.throughput_ratio"] is not None
    assert result["budget_words"]["line_vs_empty.throughput_ratio"] == ">= 0.8"

    # The loaded store's line runs wrote their cells beside the loaded ones, each run under a
    # line of its own; the empty database they were compared with is gone.
    store = Store(pg_url)
    try:
        with store.session() as s:
            rows = s.execute(
                select(CellRow.line, func.count(CellRow.id))
                .where(CellRow.line.not_in(["L1", "L2"]))
                .group_by(CellRow.line)
            ).all()
            total = s.scalar(select(func.count(CellRow.id)))
            databases = set(s.scalars(text("SELECT datname FROM pg_database")))
    finally:
        store.close()
    assert len(rows) == 4  # two line measurements, full speed and paced each
    assert sum(n for _, n in rows) == line["loaded_cells_written"] == 4 * 200
    assert total == CELLS + 4 * 200
    assert not [d for d in databases if d.startswith("plant_bench_empty_")]
