"""`plant models calibrate` as a process: another site's labelled spectra (10 per class) become a
model in the registry with cross-validated figures, and the site's reference set; too-small data
is refused with one line, by `plant train` too."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from linerig import config_copy, plant_cmd, plant_env
from sitespectra import write_reference_set

from models.classifier import CLASSES

# Fewer simulated spectra than the default 6,000 keep the test short; the site set is full size.
SIMULATED = "600"


def plant(cfg: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        plant_cmd(cfg, *args), capture_output=True, text=True, env=plant_env(), timeout=timeout
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return config_copy(tmp_path, db_url=f"sqlite:///{tmp_path / 'plant.db'}")


@pytest.mark.slow  # trains a site model (about a minute)
def test_calibrate_saves_a_site_model_with_cross_validated_figures(
    cfg: Path, tmp_path: Path
) -> None:
    ref = write_reference_set(tmp_path / "site-b")
    done = plant(
        cfg, "models", "calibrate", "--data", str(ref), "--out", "site-b",
        "--simulated", SIMULATED,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cross-validated on 110 site spectra (5 folds)" in done.stdout

    registry = tmp_path / "var" / "models"
    meta = json.loads((registry / "site-b" / "model.json").read_text())
    cv = meta["metrics"]["reference_cv"]
    assert cv["n"] == 110 and cv["folds"] == 5
    assert cv["misrouted"] == 0 and cv["accuracy_on_accepted"] >= 0.95 and cv["coverage"] >= 0.9
    assert meta["calibration"]["n_reference"] == 110
    assert meta["calibration"]["n_simulated"] == int(SIMULATED)
    assert meta["calibration"]["site_weight"] > 1  # a site spectrum outweighs a simulated one
    assert (registry / "site-b" / "model.skops").stat().st_size > 10_000

    # The site set is now the registry's reference set, copied so the gate keeps it.
    reference = json.loads((registry / "reference.json").read_text())
    assert reference["fingerprint"] == cv["reference_fingerprint"]
    assert reference["n"] == 110 and reference["label_counts"] == {c: 10 for c in CLASSES}
    with (registry / "_reference" / "labels.csv").open() as fh:
        copied = list(csv.DictReader(fh))
    assert len(copied) == 110 and all(
        (registry / "_reference" / r["file"]).exists() for r in copied
    )

    listing = plant(cfg, "models", "list")
    assert "site-b" in listing.stdout and "site reference set: 110 spectra" in listing.stdout
    # Classification through the new model keeps the JSON fields the plant is judged by.
    one = plant(cfg, "classify", "--json", "--model", "site-b", str(ref / "LFP_00.msa"))
    row = json.loads(one.stdout)
    assert {"input", "kind", "chemistry", "confidence", "route", "reason"} <= set(row)
    assert (row["chemistry"], row["route"]) == ("LFP", "black_mass")


def test_calibrate_refuses_a_class_with_too_few_spectra_in_one_line(
    cfg: Path, tmp_path: Path
) -> None:
    ref = write_reference_set(tmp_path / "site-b", per_class=10, classes=("LFP", "NMC811"))
    write_reference_set(tmp_path / "few", per_class=4, classes=("NiMH",))
    with (ref / "labels.csv").open("a", newline="") as fh:
        for i in range(4):
            (ref / f"NiMH_{i:02d}.msa").write_bytes(
                (tmp_path / "few" / f"NiMH_{i:02d}.msa").read_bytes()
            )
            csv.writer(fh).writerow((f"NiMH_{i:02d}.msa", "NiMH"))
    done = plant(cfg, "models", "calibrate", "--data", str(ref), "--out", "few")
    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert "class NiMH has 4 spectra, at least 10 per class are needed" in line
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "var" / "models" / "few").exists()


@pytest.mark.slow
def test_train_refuses_too_small_data_in_one_line_instead_of_a_traceback(
    cfg: Path, tmp_path: Path
) -> None:
    data = tmp_path / "sim300"
    generated = plant(cfg, "spectra", "generate", "--n", "300", "--out", str(data), "--seed", "5")
    assert generated.returncode == 0, generated.stderr
    done = plant(cfg, "train", "--data", str(data), "--out", "small")
    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert "labels.csv: class NiMH has 5 spectra, at least 10 per class are needed" in line
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "var" / "models" / "small").exists()
