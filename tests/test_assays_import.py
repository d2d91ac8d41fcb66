"""`plant assays import`: good rows kept, bad rows reported by line, lab values decide batches."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from hydromet_feed import add_lot, nmc_mix
from sqlalchemy import select

from plant.commands.hydromet_child import simulated_plant
from plant.hydromet import HydrometRunner, load_hydromet
from plant.purity import load_products
from plant.store import AssayRow, Store

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)

CSV = """sample_id,batch_id,lot_id,sampled_at,analyte,value,unit,uncertainty,method,lab
S1,L1-HC00001-Co,,2025-03-01T08:00:00Z,Fe,42,ppm,,ICP-OES,Lab A
S1,L1-HC00001-Co,,2025-03-01T08:00:00Z,Co,20.9,%,,ICP-OES,Lab A
S1,L1-HC00001-Co,,2025-03-01T08:00:00Z,Ni,abc,ppm,,ICP-OES,Lab A
S2,L1-HC00001-Ni,,2025-03-01 08:10,purity,99.91,%,,gravimetric,Lab A
S3,NO-SUCH-BATCH,,2025-03-01T08:00:00Z,Fe,3,ppm,,ICP-OES,Lab A
S4,L1-HC00001-Li,,yesterday,Na,100,ppm,,ICP-OES,Lab A
S5,L1-HC00001-Li,,2025-03-01T08:00:00Z,Na,100,furlongs,,ICP-OES,Lab A
S6,,L1-BM-000,2025-03-01T09:00:00Z,Ni,0.05,wt%,0.01,XRF lab,Lab B
S7,L1-HC00001-Li,L1-BM-000,2025-03-01T09:00:00Z,Na,100,ppm,,ICP-OES,Lab A
S1,L1-HC00001-Co,,2025-03-01T08:00:00Z,Fe,43,ppm,,ICP-OES,Lab A
"""


def _plant(store_url: str, tmp: Path) -> Path:
    cfg = tmp / "config"
    shutil.copytree(REPO / "config", cfg)
    text = (cfg / "plant.toml").read_text()
    (cfg / "plant.toml").write_text(
        text.replace('url = "sqlite:///var/plant.db"', f'url = "{store_url}"')
    )
    return cfg


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plant.cli", "--config", str(cfg), *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


def test_import_keeps_good_rows_and_reports_bad_ones_by_line(store: Store, tmp_path: Path) -> None:
    hydromet = load_hydromet(REPO / "config")
    plant = simulated_plant(hydromet, 1)
    runner = HydrometRunner(store, hydromet, load_products(REPO / "config"), plant=plant)
    add_lot(store, "L1-HM-000", nmc_mix(100), closed_at=T0, seq0=0)
    add_lot(store, "L1-BM-000", [("LFP", 200.0)] * 50, route="black_mass", closed_at=T0, seq0=500)
    runner.step(T0, ph=4.0)
    cfg = _plant(store.url, tmp_path)
    before = _cli(cfg, "purity", "report", "--json")
    assert before.returncode == 0, before.stderr
    co = next(b for b in json.loads(before.stdout)["batches"] if b["id"] == "L1-HC00001-Co")
    assert co["in_spec"] is True

    (tmp_path / "lims.csv").write_text(CSV)
    res = _cli(cfg, "assays", "import", str(tmp_path / "lims.csv"))
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if "lims.csv:" in ln]
    assert any(":4: value 'abc' is not a number" in ln for ln in lines), res.stderr
    assert any(":6: unknown batch 'NO-SUCH-BATCH'" in ln for ln in lines)
    assert any(":7: sampled_at 'yesterday' is not an ISO 8601 time" in ln for ln in lines)
    assert any(":8: unit 'furlongs'" in ln for ln in lines)
    assert any(":10: give exactly one of batch_id and lot_id" in ln for ln in lines)
    assert any(":11: Fe given twice for the same sample" in ln for ln in lines)
    assert "imported 4 rows as 3 assays; 6 bad rows" in res.stderr

    with store.session() as s:
        lab = {
            (a.batch_id or a.lot_id): a
            for a in s.scalars(select(AssayRow).where(AssayRow.source == "lab"))
        }
    assert set(lab) == {"L1-HC00001-Co", "L1-HC00001-Ni", "L1-BM-000"}
    assert lab["L1-HC00001-Co"].composition["impurities_ppm"] == {"Fe": 42.0}
    assert lab["L1-HC00001-Co"].composition["main_pct"] == {"Co": 20.9}
    assert lab["L1-BM-000"].composition["wt_pct"] == {"Ni": 0.05}

    # The lab's Fe overrides the inline Fe only; the other analytes stay from the inline assay.
    after = json.loads(_cli(cfg, "purity", "report", "--json").stdout)
    co = next(b for b in after["batches"] if b["id"] == "L1-HC00001-Co")
    assert co["in_spec"] is False and co["reasons"] == ["Fe 42 ppm > 10 ppm"]
    assert co["assay_source"] == "inline+lab" and "Zn" in co["impurities_ppm"]
    ni = next(b for b in after["batches"] if b["id"] == "L1-HC00001-Ni")
    assert ni["purity_pct"] == 99.91


def test_file_without_required_columns_is_refused(store: Store, tmp_path: Path) -> None:
    cfg = _plant(store.url, tmp_path)
    (tmp_path / "bad.csv").write_text("batch,when,what\nB1,2025-01-01,Fe\n")
    res = _cli(cfg, "assays", "import", str(tmp_path / "bad.csv"))
    assert res.returncode == 2
    assert (
        "header is missing column(s): sampled_at, analyte, value, unit, batch_id or lot_id"
        in res.stderr
    )
    assert "Traceback" not in res.stderr
