"""Copied labels in the running plant: of two cells whose labels carry one passport, the one
decided second goes to quarantine as `duplicate_passport`, naming the other (cells are decided
out of order: several XRF heads measure at once); every cell is still diverted and counted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from linerig import cells_of, config_copy, run_cells

from plant.domain import Route
from plant.store import Store, upgrade

pytestmark = pytest.mark.e2e
CELLS = 300


def test_a_copied_label_sends_a_cell_to_quarantine_naming_the_other(
    tmp_path: Path, db_url: str
) -> None:
    upgrade(db_url)
    cfg = config_copy(tmp_path, db_url=db_url, heads=2)
    toml = cfg / "plant.toml"
    toml.write_text(toml.read_text().replace("[sim]\n", "[sim]\ncopied_label_share = 0.1\n", 1))
    summary = run_cells(cfg, tmp_path, CELLS, 100, "--no-hmi", timeout=300)
    assert summary["routes"] == summary["plc_counters"]  # every cell diverted once
    store = Store(db_url)
    try:
        cells = cells_of(store)
    finally:
        store.close()
    by_id = {c.id: c for c in cells}
    duplicates = [c for c in cells if (c.reason or "").startswith("duplicate_passport")]
    assert len(duplicates) >= CELLS * 0.02, "a tenth of the labels are copies: some must show"
    for dup in duplicates:
        assert dup.route == Route.quarantine, (dup.seq, dup.route)
        named = re.search(r"cell #(\d+)|cell seq (\d+)", dup.reason or "")
        assert named, dup.reason
        first = (
            by_id[int(named.group(1))]
            if named.group(1)
            else next(c for c in cells if c.seq == int(named.group(2)))
        )
        assert first.passport_id == dup.passport_id and first.id != dup.id
    # Of the cells with one passport, at most one reaches a process: the others are in
    # quarantine (as duplicates, or already for another reason, e.g. a spectrum that
    # contradicts the copied passport).
    sharing: dict[str, list[str]] = {}
    for c in cells:
        if c.passport_id is not None:
            sharing.setdefault(c.passport_id, []).append(c.route or "")
    for pid, routes in sharing.items():
        assert sum(r != Route.quarantine for r in routes) <= 1, (pid, routes)
