"""Downstream buffers in the running plant: the simulated conveyors after the hydromet and
quarantine routes hold a few cells and drain slowly, so they fill while the line runs. A full
route buffer sends that route's cells to quarantine with an alarm; a full quarantine buffer
stops the infeed until it has room. Every cell still ends diverted and counted once."""

from __future__ import annotations

from pathlib import Path

import pytest
from linerig import cells_of, config_copy, run_cells
from sqlalchemy import select

from plant.domain import Route
from plant.store import AlarmRow, Store, upgrade

pytestmark = pytest.mark.e2e
CELLS = 300


def test_full_buffers_divert_to_quarantine_and_hold_the_infeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp_path, db_url=url, heads=2)
    with (cfg / "plant.toml").open("a") as f:
        f.write(
            "\n[sim.buffers.hydromet]\ncapacity = 3\ndrain_cells_s = 2.0\n"
            "\n[sim.buffers.quarantine]\ncapacity = 25\ndrain_cells_s = 10.0\n"
        )
    summary = run_cells(cfg, tmp_path, CELLS, 60, "--no-hmi", timeout=300)
    assert summary["final"] == CELLS
    assert summary["routes"] == summary["plc_counters"]  # nothing lost while buffers were full
    store = Store(url)
    try:
        cells = cells_of(store)
        with store.session() as s:
            alarms = list(s.scalars(select(AlarmRow).where(AlarmRow.source == "buffer")))
    finally:
        store.close()
    held = [c for c in cells if (c.reason or "").startswith("buffer_full")]
    assert held, "the hydromet buffer fills at 60 cells/s: some of its cells must be held"
    assert all(
        c.route == Route.quarantine and "hydromet buffer is full" in (c.reason or "") for c in held
    )
    assert any(c.route == Route.hydromet for c in cells)  # and it had room again in between
    raised = {a.code for a in alarms}
    assert {"hydromet_full", "quarantine_full"} <= raised, raised
    stop = next(a for a in alarms if a.code == "quarantine_full")
    assert "infeed stopped" in stop.message  # and every cell still became final (above)
