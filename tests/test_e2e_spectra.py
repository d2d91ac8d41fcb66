"""Spectra kept, in the running plant: a live cell's spectrum through the API, exported as
EMSA/MSA with labels.csv for retraining, and deleted after the retention period."""

from __future__ import annotations

import csv
import json
import subprocess
import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from linerig import add_user, answers, config_copy, plant_cmd, plant_env, start_run, stop_run, until

from drivers.spectra import read_msa
from plant.commands.bench_harness import toml_text
from plant.store import upgrade

pytestmark = pytest.mark.e2e

RETENTION_S = 30.0
PASSWORD = "spectra-engineer-pw-1"


def test_live_spectra_shown_exported_and_deleted_after_retention(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp_path, db_url=url, heads=2)
    data = tomllib.loads((cfg / "plant.toml").read_text())
    data["spectra"] = {"retention_days": RETENTION_S / 86400}
    (cfg / "plant.toml").write_text(toml_text(data))
    add_user(cfg, tmp_path, "erin", "engineer", PASSWORD)
    proc = start_run(cfg, tmp_path, "--rate", "20")
    try:
        base = f"http://127.0.0.1:{data['hmi']['port']}"
        client = httpx.Client(base_url=base, timeout=10)
        until("HMI", lambda: answers(f"{base}/api/health"), proc, 180)
        token = client.post("/api/login", json={"name": "erin", "password": PASSWORD})
        assert token.status_code == 200, token.text
        client.headers["Authorization"] = f"Bearer {token.json()['token']}"

        def decided() -> dict[str, Any] | None:
            cells = client.get("/api/cells", params={"limit": 20}).json()["cells"]
            return next((c for c in cells if c["chemistry"] and c["spectrum_ref"]), None)

        cell = until("decided live cell", decided, proc, 180)
        r = client.get(f"/api/cells/{cell['id']}/spectrum")
        assert r.status_code == 200, r.text
        shown = r.json()
        assert shown["source"] == cell["spectrum_ref"] and "/" not in shown["source"]
        assert shown["channels"] == 4096 and shown["channels_per_point"] == 2
        energy, counts = np.array(shown["energy_kev"]), np.array(shown["counts"])
        assert energy.size == counts.size == 2048
        assert np.all(np.diff(energy) > 0) and 40 < energy[-1] < 42  # keV, not eV or channels
        assert counts.sum() > 100

        # Export while the plant runs: every decided cell since just before this one.
        since = datetime.fromisoformat(cell["created_at"]) - timedelta(seconds=1)
        out = tmp_path / "export"
        exported = subprocess.run(
            plant_cmd(cfg, "spectra", "export", "--since", since.isoformat(), "--out", str(out)),
            capture_output=True,
            text=True,
            env=plant_env(),
            cwd=tmp_path,
            timeout=300,
        )
        assert exported.returncode == 0, exported.stderr
        with (out / "labels.csv").open(newline="", encoding="utf-8") as fh:
            labels = list(csv.DictReader(fh))
        assert str(cell["id"]) in {row["cell_id"] for row in labels}
        assert f"wrote {len(labels)} spectra" in exported.stderr
        for row in labels:
            stored = client.get(f"/api/cells/{row['cell_id']}").json()
            for key in ("line", "passport_id", "chemistry", "decision_source", "route"):
                assert row[key] == (stored[key] or ""), (key, row, stored)
            assert int(row["seq"]) == stored["seq"]
            assert float(row["confidence"]) == pytest.approx(stored["confidence"], rel=1e-5)
            assert row["reason"] == stored["reason"]
            assert row["model_version"] == (stored["model_version"] or "")
            spectrum = read_msa(out / row["file"])
            assert spectrum.n_channels == 4096 and spectrum.kev_per_channel == pytest.approx(0.01)
        mine = next(row for row in labels if row["cell_id"] == str(cell["id"]))
        from_file = read_msa(out / mine["file"])
        assert np.array_equal(from_file.counts.reshape(-1, 2).sum(axis=1), counts)
        assert from_file.metadata["seq"] == str(cell["seq"])

        classified = subprocess.run(
            plant_cmd(cfg, "classify", "--json", str(out / mine["file"])),
            capture_output=True,
            text=True,
            env=plant_env(),
            cwd=tmp_path,
            timeout=300,
        )
        assert classified.returncode == 0, classified.stderr
        assert json.loads(classified.stdout.splitlines()[0])["chemistry"]
        try:
            from rsciio.msa import file_reader
        except ImportError:
            pass
        else:
            (loaded,) = file_reader(str(out / mine["file"]))
            assert np.array_equal(loaded["data"], from_file.counts)

        # Retention: the plant deletes this cell's spectrum once it is older than 30 s, and
        # the API says why; newer cells still show theirs.
        def gone() -> dict[str, Any] | None:
            r = client.get(f"/api/cells/{cell['id']}/spectrum")
            return r.json() if r.status_code == 404 else None

        why = until("spectrum deleted by retention", gone, proc, RETENTION_S + 120)
        assert why["detail"] == (
            f"cell {cell['id']} has no spectrum any more: its spectrum ({cell['spectrum_ref']}) "
            "was deleted after the retention period of 30 s ([spectra] retention_days)"
        )
        fresh = until("newer decided cell", decided, proc, 180)
        assert fresh["id"] > cell["id"]
        assert client.get(f"/api/cells/{fresh['id']}/spectrum").status_code == 200
    finally:
        stop_run(proc, tmp_path)
