"""The promotion gate: `plant models activate`, `plant train --activate` and POST
/api/classifier/activate refuse a model worse than the active one on the site reference set
(one line with both figures, exit 2 / HTTP 409) unless forced with a reason, which is audited."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from linerig import config_copy, plant_cmd, plant_env
from sitespectra import write_reference_set
from sqlalchemy import select
from test_hmi_api import make_hmi

from models.classifier import CLASSES
from models.registry import DEFAULT_DIR
from plant.store import AuditRow, Store

pytestmark = pytest.mark.slow  # trains models for the gate (about a minute)


def plant(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        plant_cmd(cfg, *args), capture_output=True, text=True, env=plant_env(), timeout=600
    )


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def active(registry: Path) -> str:
    path = registry / "active.json"
    return str(json.loads(path.read_text())["active"]) if path.exists() else "default"


def mislabelled_copy(ref: Path, out: Path) -> Path:
    """The site spectra with every label moved four classes on: a model trained on them is
    confidently wrong (NMC111 read as NCA, LFP as NiCd, ...)."""
    out.mkdir()
    with (ref / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    with (out / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("file", "chemistry"))
        for r in rows:
            shutil.copyfile(ref / r["file"], out / r["file"])
            wrong = CLASSES[(CLASSES.index(r["chemistry"]) + 4) % len(CLASSES)]
            writer.writerow((r["file"], wrong))
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plant with a site reference set (recorded by calibrate) and a mislabelled model."""
    tmp = tmp_path_factory.mktemp("gate")
    cfg = config_copy(tmp, db_url=f"sqlite:///{tmp / 'plant.db'}")
    assert plant(cfg, "db", "upgrade").returncode == 0
    ref = write_reference_set(tmp / "site-b")
    calibrated = plant(
        cfg, "models", "calibrate", "--data", str(ref), "--out", "site-b", "--simulated", "300"
    )
    assert calibrated.returncode == 0, calibrated.stderr
    trained = plant(
        cfg, "train", "--data", str(mislabelled_copy(ref, tmp / "wrong")), "--out", "wrong"
    )
    assert trained.returncode == 0, trained.stderr
    return tmp


def test_a_worse_model_is_refused_with_both_figures_in_one_line(site: Path) -> None:
    cfg, registry = site / "config", site / "var" / "models"
    done = plant(cfg, "models", "activate", "wrong")
    assert done.returncode == 2
    [line] = lines(done.stderr)
    assert line.startswith("refused: wrong vs active default on the site reference set")
    assert "misroutes" in line and "accuracy on accepted" in line and " vs " in line
    assert "--force --reason" in line
    assert active(registry) == "default"


def test_train_activate_goes_through_the_gate(site: Path) -> None:
    cfg, registry = site / "config", site / "var" / "models"
    done = plant(cfg, "train", "--data", str(site / "wrong"), "--out", "wrong2", "--activate")
    assert done.returncode == 2
    assert "refused: wrong2 vs active default" in done.stderr
    assert (registry / "wrong2" / "model.skops").exists() and active(registry) == "default"


def test_a_forced_activation_needs_a_reason_and_is_audited(site: Path) -> None:
    cfg, registry = site / "config", site / "var" / "models"
    done = plant(cfg, "models", "activate", "wrong", "--force")
    assert done.returncode == 2
    [line] = lines(done.stderr)
    assert "--reason" in line and active(registry) == "default"

    reason = "line 2 trial of the supplier's head firmware"
    done = plant(cfg, "models", "activate", "wrong", "--force", "--reason", reason)
    assert done.returncode == 0, done.stderr
    assert active(registry) == "wrong"
    store = Store(f"sqlite:///{site / 'plant.db'}")
    try:
        with store.session() as s:
            row = s.scalars(
                select(AuditRow).where(AuditRow.action == "model.activate_forced")
            ).one()
    finally:
        store.close()
    assert (row.user, row.target, row.old) == ("cli", "classifier", "default")
    assert row.new is not None and reason in row.new and "misroutes" in row.new
    assert plant(cfg, "models", "rollback").returncode == 0
    assert active(registry) == "default"


def test_api_activation_is_gated_and_forcing_it_is_audited(
    site: Path, sqlite_url: str, tmp_path: Path
) -> None:
    shutil.copytree(site / "var" / "models", tmp_path / "models")
    with contextmanager(make_hmi)(sqlite_url, tmp_path) as hmi:
        h = hmi.token("engineer")
        r = hmi.client.post("/api/classifier/activate", json={"version": "wrong"}, headers=h)
        assert r.status_code == 409
        assert r.json()["detail"].startswith("refused: wrong vs active default")
        r = hmi.client.post(
            "/api/classifier/activate", json={"version": "wrong", "force": True}, headers=h
        )
        assert r.status_code == 422 and "reason" in r.text
        r = hmi.client.post(
            "/api/classifier/activate",
            json={"version": "wrong", "force": True, "reason": "vendor acceptance test"},
            headers=h,
        )
        assert r.status_code == 200, r.text
        assert r.json()["active"] == "wrong" and r.json()["gate"].startswith("refused")
        assert r.json()["reference_set"]["n"] == 110
        row = hmi.last_audit()
        assert (row.user, row.action, row.old) == ("engineer", "model.activate_forced", "default")
        assert row.new is not None and "vendor acceptance test" in row.new


def test_without_a_reference_set_the_gate_warns_or_refuses_on_held_out_misroutes(
    tmp_path: Path,
) -> None:
    cfg = config_copy(tmp_path, db_url=f"sqlite:///{tmp_path / 'plant.db'}")
    registry = tmp_path / "var" / "models"
    for name, misroute_rate in (("clean", 0.0), ("misrouting", 0.0075)):
        (registry / name).mkdir(parents=True)
        shutil.copyfile(DEFAULT_DIR / "default.skops", registry / name / "model.skops")
        meta = json.loads((DEFAULT_DIR / "default.json").read_text())
        meta["name"] = name
        meta["metrics"]["validation_split"]["misroute_rate"] = misroute_rate
        (registry / name / "model.json").write_text(json.dumps(meta))
    done = plant(cfg, "models", "activate", "misrouting")
    assert done.returncode == 2
    [line] = lines(done.stderr)
    assert (
        "misroutes 0.75 % of its own held-out spectra" in line and "no site reference set" in line
    )
    done = plant(cfg, "models", "activate", "clean")
    assert done.returncode == 0, done.stderr
    assert lines(done.stderr)[0].startswith("warning: no site reference set")
    assert active(registry) == "clean"


def test_a_copy_of_the_committed_default_passes_the_gate(tmp_path: Path) -> None:
    # The default's own validation split misroutes nothing, so the gate has no reason to refuse
    # it registered under another name (a site returning to it without --force).
    cfg = config_copy(tmp_path, db_url=f"sqlite:///{tmp_path / 'plant.db'}")
    registry = tmp_path / "var" / "models"
    (registry / "copy").mkdir(parents=True)
    shutil.copyfile(DEFAULT_DIR / "default.skops", registry / "copy" / "model.skops")
    meta = json.loads((DEFAULT_DIR / "default.json").read_text())
    assert meta["metrics"]["validation_split"]["misrouted"] == 0
    (registry / "copy" / "model.json").write_text(json.dumps(meta | {"name": "copy"}))
    done = plant(cfg, "models", "activate", "copy")
    assert done.returncode == 0, done.stderr
    assert active(registry) == "copy"
