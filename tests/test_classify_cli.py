"""`plant classify --json` on the reference passports, spectra and bad inputs; `plant models`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drivers.sim import xrfphysics as X
from drivers.sim.cells import CellFormat, CellTruth
from drivers.spectra import write_spectrum
from plant.cli import app

ROOT = Path(__file__).resolve().parents[1]
# Copies of public battery-passport payloads (sources and licences in its README.md).
REFERENCE = ROOT / "tests" / "data" / "reference-passports"

# What each reference payload states (tests/data/reference-passports/README.md): chemistry,
# route, and for the undecided ones a word of the reason.
EXPECTED = {
    "batterypass-v1.2/MaterialComposition-payload.json": ("NMC", "hydromet", None),
    "idta-batterypass-material_composition-1.0.1/MaterialCompositionBattery.json": (
        "NMC",
        "hydromet",
        None,
    ),
    "catenax-battery_pass-6.1.0/BatteryPass.json": ("NMC", "hydromet", None),
    "tractusx-dpp-testdata/NCR186850B.json": ("NCA", "hydromet", None),
    "tractusx-dpp-testdata/IMR18650V1.json": ("LMO", "black_mass", None),
    "catenax-battery_pass-3.0.1/BatteryPass.json": ("UNKNOWN", "quarantine", "several"),
    "batterypass-v1.2/GeneralProductInformation-payload.json": (
        "UNKNOWN",
        "quarantine",
        "no chemistry",
    ),
    "batterypass-v1.2/PerformanceAndDurability.json": ("UNKNOWN", "quarantine", "no chemistry"),
}
SCHEMAS = sorted(
    str(p.relative_to(REFERENCE))
    for p in REFERENCE.rglob("*")
    if p.name.endswith(("-schema.json", ".schema"))
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "plant.toml").write_text(f'[plant]\ndata_dir = "{tmp_path / "var"}"\n')
    # The reference passports are unsigned: the shipped policy lets them route alone
    # (tests/test_passport_authenticity.py tests the strict one).
    (d / "routing.toml").write_text((ROOT / "config" / "routing.toml").read_text())
    return d


def run(config: Path, *args: str) -> tuple[int, list[dict[str, object]], str]:
    result = CliRunner().invoke(app, ["--config", str(config), *args])
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, rows, result.stderr


def test_every_reference_passport(config: Path) -> None:
    """Runs the real console script, as an engineer would."""
    paths = [str(REFERENCE / name) for name in EXPECTED]
    proc = subprocess.run(
        [sys.executable, "-m", "plant.cli", "--config", str(config), "classify", "--json", *paths],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["input"] for r in rows] == paths
    for row, (name, (chem, route, why)) in zip(rows, EXPECTED.items(), strict=True):
        assert set(row) == {
            "input", "kind", "chemistry", "confidence", "route", "reason", "authenticity"
        }  # fmt: skip
        assert row["authenticity"]["result"] == "unsigned"
        assert (row["kind"], row["chemistry"], row["route"]) == ("passport", chem, route), name
        if why:
            assert why in str(row["reason"]), name


def test_schema_files_are_reported_as_not_passports(config: Path) -> None:
    assert SCHEMAS, "reference schemas missing"
    code, rows, stderr = run(config, "classify", "--json", *(str(REFERENCE / s) for s in SCHEMAS))
    assert code == 1
    assert len(rows) == len(SCHEMAS)
    for row in rows:
        assert row["route"] == "quarantine" and row["chemistry"] == "UNKNOWN"
        assert "not a battery passport" in str(row["error"])
    assert "not a battery passport" in stderr


def _spectrum_file(path: Path, chem: str, fmt: CellFormat, live: float = 2.0) -> Path:
    truth = CellTruth(0, chem, fmt, 46.0, None, None, True, False)
    pres = X.Presentation(0.0, 1.0, (), 0.0)
    profile = X.PROFILES["bench_sdd_2048"]
    spectrum = X.render_cell(truth, pres, profile, live, np.random.default_rng(1))
    return write_spectrum(spectrum, path)


def test_bad_inputs_get_their_own_error_and_the_rest_is_classified(
    config: Path, tmp_path: Path
) -> None:
    good_spectrum = _spectrum_file(tmp_path / "nmc.msa", "NMC811", CellFormat.opened)
    can = _spectrum_file(tmp_path / "can.mca", "LFP", CellFormat.steel_can)
    bad_spectrum = tmp_path / "bad.csv"
    bad_spectrum.write_text("energy_keV,counts\n0.00,1\n0.02,nan\n" + "0.04,3\n" * 20)
    bad_passport = tmp_path / "bad.json"
    bad_passport.write_text('{"format": "plant-passport/1", "passport_id": ')
    good_passport = tmp_path / "lfp.json"
    good_passport.write_text(
        json.dumps({"format": "plant-passport/1", "passport_id": "P-9", "chemistry": "LFP"})
    )
    missing = tmp_path / "missing.msa"
    inputs = [good_spectrum, bad_spectrum, bad_passport, can, good_passport, missing]
    code, rows, stderr = run(config, "classify", "--json", *map(str, inputs))
    assert code == 1
    by_input = {Path(str(r["input"])).name: r for r in rows}
    assert len(rows) == len(inputs)
    assert by_input["nmc.msa"]["route"] == "hydromet"
    assert by_input["nmc.msa"]["chemistry"] in ("NMC811", "NMC")
    assert by_input["can.mca"]["chemistry"] == "UNKNOWN"
    assert str(by_input["can.mca"]["reason"]).startswith("can_occluded:")
    assert by_input["lfp.json"]["route"] == "black_mass"
    for name, what in (("bad.csv", "not a finite number"), ("bad.json", "bad.json"),
                       ("missing.msa", "missing.msa")):  # fmt: skip
        assert by_input[name]["route"] == "quarantine", name
        assert what in str(by_input[name]["error"]), name
        assert name in stderr


def test_models_list_activate_rollback(config: Path) -> None:
    code, _, _ = run(config, "models", "activate", "nope")
    assert code == 2
    result = CliRunner().invoke(app, ["--config", str(config), "models", "list"])
    assert result.exit_code == 0 and "default" in result.stdout
    result = CliRunner().invoke(app, ["--config", str(config), "models", "rollback"])
    assert result.exit_code == 2 and "nothing to roll back" in result.stderr


def test_train_evaluate_activate_rollback(config: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = ["file,chemistry,cell_format"]
    cases = [
        ("NMC811", CellFormat.opened),
        ("LFP", CellFormat.pouch),
        ("NCA", CellFormat.steel_can),
    ]
    profile = X.PROFILES["bench_sdd_2048"]
    rng = np.random.default_rng(3)
    for chem, fmt in cases:
        for k in range(12):
            truth = CellTruth(k, chem, fmt, 46.0, None, None, True, False)
            pres = X.Presentation(0.0, float(rng.uniform(0.8, 1.2)), (), 0.0)
            name = f"{chem}_{k}.msa"
            write_spectrum(X.render_cell(truth, pres, profile, 1.0, rng), data / name)
            rows.append(f"{name},{chem},{fmt.value}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")

    result = CliRunner().invoke(
        app, ["--config", str(config), "train", "--data", str(data), "--out", "tiny"]
    )
    assert result.exit_code == 0, result.stderr
    meta = json.loads((tmp_path / "var" / "models" / "tiny" / "model.json").read_text())
    assert len(meta["training_data_fingerprint"]) == 64 and meta["label_counts"]["CAN"] == 12

    report = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        ["--config", str(config), "evaluate", "--data", str(data), "--model", "tiny",
         "--report", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "accuracy on accepted" in result.stdout and "misroute rate" in result.stdout
    [json_path] = report.glob("*.json")
    [png] = report.glob("*.png")
    assert png.stat().st_size > 1000
    summary = json.loads(json_path.read_text())
    assert summary["n"] == 36 and summary["steel_can_cells"] == 12
    assert summary["misroute_rate"] == 0.0
    assert summary["confusion"]["matrix"][0] == [0] * len(summary["confusion"]["columns_predicted"])

    assert run(config, "models", "activate", "tiny")[0] == 0
    listing = CliRunner().invoke(app, ["--config", str(config), "models", "list"])
    assert "tiny" in listing.stdout
    # 36 training spectra make a poorly calibrated model: it does not dare, the default does.
    tiny = run(config, "classify", "--json", str(data / "LFP_0.msa"))[1][0]
    assert tiny["route"] == "quarantine" and float(str(tiny["confidence"])) < 0.9
    assert run(config, "models", "rollback")[0] == 0
    default = run(config, "classify", "--json", str(data / "LFP_0.msa"))[1][0]
    assert (default["chemistry"], default["route"]) == ("LFP", "black_mass")
    result = CliRunner().invoke(
        app, ["--config", str(config), "train", "--data", str(data), "--out", "tiny"]
    )
    assert result.exit_code == 2 and "exists already" in result.stderr
