"""A black-mass lot of a running simulated plant assayed on the simulated SciAps analyser:
`plant run --simulate` and `plant assays measure LOT` as processes, the result in the report;
a quarantined cell spot-checked on it (`plant assays spot-check CELL`)."""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from linerig import config_copy, plant_cmd, plant_env, start_run, stop_run
from sqlalchemy import select

from drivers.sim.cells import CellStream
from drivers.sim.sciaps import black_mass_pellet
from plant.commands.bench_harness import toml_text
from plant.store import AuditRow, CellRow, LotRow, Store, upgrade

pytestmark = pytest.mark.e2e
PASSWORD = "assay-pass-1234"


def _closed_black_mass_lot(store: Store, run: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, "plant run ended early"
        with store.session() as s:
            lot = s.scalars(
                select(LotRow.id).where(LotRow.route == "black_mass", LotRow.state == "closed")
            ).first()
        if lot is not None:
            return lot
        time.sleep(0.5)
    raise AssertionError(f"no black-mass lot closed within {timeout} s")


def _quarantined_cell(
    store: Store, run: subprocess.Popen[bytes], timeout: float
) -> tuple[int, int]:
    """(id, seq) of a quarantined cell of one chemistry (not a 70/30 mixture)."""
    stream = CellStream(1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, "plant run ended early"
        with store.session() as s:
            rows = s.execute(select(CellRow.id, CellRow.seq).where(CellRow.route == "quarantine"))
            found = [(i, q) for i, q in rows if stream.truth(q).second_chemistry is None]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no cell quarantined within {timeout} s")


def test_a_closed_black_mass_lot_is_assayed_on_the_analyser_and_reported(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp_path, db_url=url, heads=2, lot_close_kg=1.0)
    data = tomllib.loads((cfg / "plant.toml").read_text())
    data["assay_analyser"]["beam_times_s"] = [1.0, 1.0]
    (cfg / "plant.toml").write_text(toml_text(data))
    port, hmi = data["assay_analyser"]["port"], f"http://127.0.0.1:{data['hmi']['port']}/api"
    for user, role in (("erin", "engineer"), ("vic", "viewer")):
        subprocess.run(
            plant_cmd(cfg, "users", "add", user, "--role", role),
            input=f"{PASSWORD}\n{PASSWORD}\n",
            text=True, check=True, capture_output=True, env=plant_env(), cwd=tmp_path,
        )  # fmt: skip
    run = start_run(cfg, tmp_path, "--rate", "40")
    store = Store(url)
    try:
        lot = _closed_black_mass_lot(store, run, 180.0)
        # Nothing in the cup: the analyser refuses, the command says so in one line.
        empty = subprocess.run(
            plant_cmd(cfg, "assays", "measure", lot),
            capture_output=True, text=True, timeout=120, env=plant_env(), cwd=tmp_path,
        )  # fmt: skip
        assert empty.returncode == 1
        assert "count rate too low" in empty.stderr and len(empty.stderr.splitlines()) == 1
        # The technician presses the lot's pellet and puts it in the analyser.
        placed = httpx.put(f"http://127.0.0.1:{port}/sim/sample", json={"lot_id": lot})
        assert placed.status_code == 200, placed.text
        measured = subprocess.run(
            plant_cmd(cfg, "assays", "measure", lot, "--json"),
            capture_output=True, text=True, timeout=120, env=plant_env(), cwd=tmp_path,
        )  # fmt: skip
        assert measured.returncode == 0, measured.stderr[-2000:]
        assay = json.loads(measured.stdout)
        report = subprocess.run(
            plant_cmd(cfg, "purity", "report", "--json"),
            capture_output=True, text=True, timeout=120, env=plant_env(), cwd=tmp_path,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr[-2000:]
        # An engineer assays it again through the API; a viewer may not.
        tokens = {
            user: httpx.post(f"{hmi}/login", json={"name": user, "password": PASSWORD}).json()[
                "token"
            ]
            for user in ("erin", "vic")
        }
        path = f"{hmi}/lots/{lot}/assay"

        def post(user: str, body: dict[str, float]) -> httpx.Response:
            auth = {"Authorization": f"Bearer {tokens[user]}"}
            return httpx.post(path, json=body, headers=auth, timeout=60)

        assert post("vic", {}).status_code == 403
        bad = post("erin", {"black_mass_kg": -1})
        assert bad.status_code == 422 and "black_mass_kg" in bad.text
        by_api = post("erin", {"black_mass_kg": 0.5})
        assert by_api.status_code == 200, by_api.text
        assert by_api.json()["black_mass_kg"] == 0.5 and by_api.json()["value"]["total"] > 0
        # The pellet taken out: the analyser's refusal is a 409 naming it, not a server error.
        assert httpx.put(f"http://127.0.0.1:{port}/sim/sample", json={}).status_code == 200
        refused = post("erin", {"black_mass_kg": 0.5})
        assert refused.status_code == 409 and "count rate too low" in refused.json()["detail"]
        # A quarantined cell: its sample in the cup, the spot check names its chemistry.
        cell, cell_seq = _quarantined_cell(store, run, 120.0)
        placed = httpx.put(f"http://127.0.0.1:{port}/sim/sample", json={"cell_id": cell})
        assert placed.status_code == 200, placed.text
        spot = subprocess.run(
            plant_cmd(cfg, "assays", "spot-check", str(cell), "--json"),
            capture_output=True, text=True, timeout=120, env=plant_env(), cwd=tmp_path,
        )  # fmt: skip
        assert spot.returncode == 0, spot.stderr[-2000:]
        with store.session() as s:
            seqs = list(s.scalars(select(CellRow.seq).where(CellRow.lot_id == lot)))
            audits = list(
                s.scalars(
                    select(AuditRow).where(AuditRow.action == "lot.assay").order_by(AuditRow.id)
                )
            )
    finally:
        stop_run(run, tmp_path)
        store.close()
    row = next(x for x in json.loads(report.stdout)["lots"] if x["id"] == lot)
    assert row["assay"]["source"] == "analyser"
    assert row["assay"]["wt_pct"] == assay["wt_pct"] and "SciAps" in row["assay"]["method"]
    assert [(a.user, a.target) for a in audits] == [("cli", f"lot:{lot}"), ("erin", f"lot:{lot}")]
    assert json.loads(spot.stdout)["chemistry"] == CellStream(1).truth(cell_seq).chemistry
    # The analyser measured the lot's true black mass (the simulated cells), within its
    # uncertainty and calibration bias: mostly LFP cells, so Fe-rich.
    truth = black_mass_pellet(lot, (CellStream(1).truth(q) for q in seqs))
    assert truth is not None
    for el in ("Fe", "Mn", "P"):
        true = truth.wt_pct.get(el, 0.0)
        if el in assay["wt_pct"]:
            assert abs(assay["wt_pct"][el] - true) <= 4 * assay["unc_pct"][el] + 0.06 * true, el
        else:
            assert true < 3 * assay["below_lod_pct"][el], el
    assert assay["wt_pct"]["Fe"] > 5
