"""`plant bench store` as a user runs it: a fresh store loaded, its figures, its cells there."""

from __future__ import annotations

import json
import subprocess

import pytest
from linerig import CONFIG, plant_cmd, plant_env
from sqlalchemy import func, select

from plant.store import BatchRow, CellRow, CellSpectrumRow, PassportRow, Store

# `plant bench store` processes loading thousands of cells: slow tests, not in `make test`.
pytestmark = pytest.mark.slow

CELLS = 2000


def bench_store(db_url: str) -> subprocess.CompletedProcess[str]:
    argv = plant_cmd(CONFIG, "bench", "store", "--cells", str(CELLS), "--json")
    return subprocess.run(
        [*argv, "--database", db_url],
        capture_output=True,
        text=True,
        env=plant_env(),
        timeout=300,
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
