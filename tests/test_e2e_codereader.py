"""Labels read by a TCP smart code reader on the running line: `plant run --simulate` with
`[camera] kind = "tcp_reader"` triggers the simulated reader of `plant sim` over TCP for every
cell (docs/camera.md, "TCP code reader"); the passports it reads decide the cells."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from linerig import config_copy, each_cell_once, run_cells
from sqlalchemy import select

from drivers.sim.cells import CellStream
from plant.commands.bench_harness import toml_text
from plant.store import PassportRow, Store, upgrade

pytestmark = pytest.mark.e2e

CELLS = 200


def test_the_line_reads_every_label_through_the_tcp_code_reader(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp_path, db_url=url, heads=2)
    data = tomllib.loads((cfg / "plant.toml").read_text())
    data["camera"]["kind"] = "tcp_reader"
    assert data["camera"]["port"] == data["sim"]["code_reader_port"]
    (cfg / "plant.toml").write_text(toml_text(data))

    summary = run_cells(cfg, tmp_path, CELLS, 50)

    assert summary["cells"] == CELLS and summary["final"] == CELLS
    assert summary["routes"] == summary["plc_counters"]
    store = Store(url)
    try:
        cells = each_cell_once(store, CELLS, summary["plc_counters"])
        with store.session() as s:
            rows = s.execute(select(PassportRow.id, PassportRow.mass_g)).all()
        stated = {pid: mass_g for pid, mass_g in rows}
    finally:
        store.close()
    truth = CellStream(int(data["sim"]["seed"]))
    # Exactly the cells whose label carries a readable passport code have a passport id: the
    # reader read each label for its own cell, no-reads (torn labels, no code) gave none.
    with_label = {
        c.seq
        for c in map(truth.truth, range(1, CELLS + 1))
        if c.passport_id is not None and c.label_readable
    }
    assert with_label, "the simulated cells carry passports"
    assert {c.seq for c in cells if c.passport_id is not None} == with_label
    read = [c for c in cells if c.passport_id is not None]
    assert len({c.passport_id for c in read}) == len(read)  # no label read for two cells
    # Each id read is a passport in the store (the one `plant run` imported for this run's
    # cells) and is that cell's: it states the cell's own mass.
    for c in read:
        assert c.passport_id in stated, f"cell {c.seq}: {c.passport_id} not in the store"
        assert stated[c.passport_id] == pytest.approx(truth.truth(c.seq).mass_g, abs=0.05), c.seq
    # The passports decided those cells (alone or with the spectrum); the rest went by spectrum.
    by_passport = [c for c in read if c.decision_source in ("passport", "fused")]
    assert len(by_passport) >= 0.9 * len(read), [(c.seq, c.reason) for c in read][:10]
    assert all(c.decision_source in ("spectrum", "none") for c in cells if c.passport_id is None)
