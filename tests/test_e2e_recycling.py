"""EU recycling efficiency from weighed fractions, in the running plant: `plant run --simulate`
shreds each closed hydromet lot in its simulated mechanical stage, which weighs the fractions;
`plant purity report --json` counts the recycled ones at their calculation points and
reconciles the mass balance; an engineer's weighing through `plant weighings add` counts too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from linerig import config_copy, plant_cmd, plant_env, run_cells

from plant.store import upgrade

pytestmark = pytest.mark.e2e


def _plant(cfg: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        plant_cmd(cfg, *args), capture_output=True, text=True, env=plant_env(), cwd=tmp,
        timeout=120,
    )  # fmt: skip


def _report(cfg: Path, tmp: Path) -> dict[str, Any]:
    res = _plant(cfg, tmp, "purity", "report", "--json")
    assert res.returncode == 0, res.stderr
    rep: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return rep


def _kg(fractions: list[dict[str, Any]], name: str) -> float:
    return sum(f["counted_kg"] for f in fractions if f["name"].split(" (")[0] == name)


def test_weighed_fractions_make_the_recycling_efficiency(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    # ~600 cells of ~50 g: lots of 2 kg close every ~40 cells, so the run makes ~10 lots.
    cfg = config_copy(tmp_path, db_url=url, heads=2, lot_close_kg=2.0)
    assert run_cells(cfg, tmp_path, 600, 200)["final"] == 600
    rep = _report(cfg, tmp_path)
    fr = rep["fractions"]
    lots = fr["input"]
    assert len(lots) >= 3 and fr["lots_weighed"] == len(lots)
    out = {f["name"].split(" (")[0]: f for f in fr["output"]}
    # The recycled fractions leave the plant at their calculation points ...
    for name in ("steel", "aluminium", "copper", "plastics", "graphite", "electrolyte"):
        assert out[name]["counted_kg"] > 0 and "leaving the plant" in out[name]["calculation_point"]
    # ... the residue, energy recovery and the black mass (counted at the hydromet outputs) not.
    assert {f["name"].split(" (")[0] for f in fr["not_counted"]} == {
        "black_mass", "energy_recovery", "residue"
    }  # fmt: skip
    cells_kg = sum(f["counted_kg"] for f in lots)
    assert _kg(fr["output"], "steel") == pytest.approx(0.15 * cells_kg, rel=0.15)
    re_ = rep["recycling_efficiency"]
    assert 50 < re_["rate_pct"] < 80, re_
    mechanical = sum(_kg(fr["output"], n) for n in out if not n.startswith("L1-"))
    assert re_["output_kg"] > mechanical > 0.3 * re_["input_kg"]
    # The reconciled balance: the mechanical stage and each recovery metal, closing.
    rec = rep["reconciliation"]
    assert set(rec["nodes"]) >= {"mechanical stage", "Ni", "Co", "Li"}
    assert abs(rec["nodes"]["mechanical stage"]["unaccounted"]) < 0.02 * cells_kg
    assert rec["warnings"] == [], rec["warnings"]
    by_name = {s["name"]: s for s in rec["streams"]}
    cells_in = next(s for n, s in by_name.items() if n.startswith("cells in"))
    assert cells_in["measured"] == pytest.approx(cells_kg, abs=0.01)
    assert all(abs(s["normalised_adjustment"]) <= 3 for s in rec["streams"])

    # An engineer weighs a skip of steel that never came from these lots' cells (a mistake):
    # it counts as output at its calculation point, and the reconciliation names it.
    res = _plant(cfg, tmp_path, "weighings", "add", "steel", "--kg", str(round(cells_kg, 1)))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["fraction"] == "steel"
    after = _report(cfg, tmp_path)
    assert after["recycling_efficiency"]["output_kg"] > re_["output_kg"] + 0.9 * cells_kg
    (warning,) = after["reconciliation"]["warnings"]
    assert warning.startswith("gross error suspected in mechanical stage: unaccounted -")
    assert "adjusted most: steel (" in warning
    bad = _plant(cfg, tmp_path, "weighings", "add", "steel", "--kg", "0")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --kg: 0 kg: give a mass above 0 and at most 100000 kg"
    ]
