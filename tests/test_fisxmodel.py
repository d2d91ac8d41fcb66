"""The independent fisx forward model (bench/fisxmodel.py) writes spectra the plant reads and
classifies through `plant classify --json`; `python -m bench.crossmodel` builds on it
(docs/classifier.md, "Cross-model evaluation")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.spectra import read_msa, write_msa

pytest.importorskip("fisx", reason="fisx (dev extra) is not installed")
pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # `plant classify` as a process

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench/ is a directory of scripts, not an installed package

from bench.fisxmodel import INSTRUMENTS, Cell, FisxModel  # noqa: E402

ROUTES = {"LCO": "hydromet", "ZnMn": "reject", "NiCd": "reject"}


def test_fisx_spectra_are_read_and_classified_by_the_plant(tmp_path: Path) -> None:
    config = tmp_path / "config"  # a fresh registry: the committed default model
    config.mkdir()
    (config / "plant.toml").write_text(f'[plant]\ndata_dir = "{tmp_path / "var"}"\n')
    (config / "routing.toml").write_text((REPO / "config" / "routing.toml").read_text())
    model = FisxModel(variants=1)
    inst = INSTRUMENTS["fx_w45_sipin"]
    cells = [
        Cell("LCO", "opened", seed=1, live_time_s=2.0),
        Cell("ZnMn", "pouch", seed=2, live_time_s=2.0),
        Cell("NiCd", "pouch", seed=3, live_time_s=2.0),
    ]
    files = []
    for cell in cells:
        spectrum = model.render(cell, inst)
        path = write_msa(spectrum, tmp_path / f"{cell.chemistry}.msa")
        back = read_msa(path)
        assert back.n_channels == inst.n_channels and back.total_counts() > 5_000
        files.append(str(path))

    done = subprocess.run(
        [sys.executable, "-m", "plant.cli", "--config", str(config), "classify", "--json", *files],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    answers = {Path(a["input"]).stem: a for a in map(json.loads, done.stdout.splitlines())}
    assert set(answers) == set(ROUTES)
    for chem, answer in answers.items():
        assert {"chemistry", "route", "reason", "confidence"} <= set(answer)
        # never a wrong route: right or quarantine
        assert answer["route"] in (ROUTES[chem], "quarantine"), answer
    right = [c for c, a in answers.items() if a["chemistry"] == c]
    assert len(right) >= 2, answers


def test_a_steel_can_hides_the_cathode_in_the_fisx_model() -> None:
    model = FisxModel(variants=1)
    inst = INSTRUMENTS["fx_rh50_sdd"]
    bare = model.render(Cell("LCO", "opened", seed=4, live_time_s=2.0), inst)
    canned = model.render(Cell("LCO", "steel_can", seed=4, live_time_s=2.0), inst)
    co_ka = (6.8, 7.0)
    fe_ka = (6.3, 6.5)
    assert bare.counts_between(*co_ka) > 5 * bare.counts_between(*fe_ka)
    assert canned.counts_between(*fe_ka) > 5 * canned.counts_between(*co_ka)


def test_nimh_under_a_40_kv_tube_is_never_routed_as_nmc() -> None:
    """Below the La K edge only NiMH's La/Ce L lines tell it from NMC (Rules.ree_l_*)."""
    from models.registry import Registry

    clf = Registry(REPO / "var" / "no-registry").active_model().classifier  # committed default
    model = FisxModel(variants=1)
    inst = INSTRUMENTS["fx_ag40_sdd"]
    results = [
        clf.predict(model.render(Cell("NiMH", "opened", seed=s, live_time_s=1.0), inst))
        for s in range(3)
    ]
    assert all(r.chemistry in ("NiMH", "UNKNOWN") for r in results), results
    assert any("La/Ce L lines" in r.detail or r.chemistry == "NiMH" for r in results), results
