"""Passport import into the store (SQLite and PostgreSQL), lookup, and the `plant passports` CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drivers.sim.cells import CellStream
from plant.cli import app
from plant.commands.wiring import import_simulated_passports
from plant.passports import import_passports, lookup_passport
from plant.store import Store

REPO = Path(__file__).resolve().parent.parent
# Copies of public battery-passport payloads (sources and licences in its README.md).
REF = REPO / "tests" / "data" / "reference-passports"
EXAMPLE = REPO / "docs" / "passport-example.json"


@pytest.fixture
def passport_dir(tmp_path: Path) -> Path:
    """Two good passports, one malformed file, one aspect without an id, in sub-folders."""
    d = tmp_path / "incoming"
    (d / "tractusx").mkdir(parents=True)
    shutil.copy(REF / "tractusx-dpp-testdata/NCR186850B.json", d / "tractusx")
    shutil.copy(REF / "tractusx-dpp-testdata/IMR18650V1.json", d / "tractusx")
    (d / "broken.json").write_bytes(b'{"format": "plant-passport/1",\n "passport_id": }')
    shutil.copy(REF / "batterypass-v1.2/MaterialComposition-payload.json", d / "aspect.json")
    (d / "notes.txt").write_text("not a passport, not a .json file")
    return d


def json_files(d: Path) -> list[Path]:
    return sorted(d.rglob("*.json"))


def test_import_keeps_good_files_when_others_fail(store: Store, passport_dir: Path) -> None:
    seen: list[Path] = []
    report = import_passports(store, json_files(passport_dir), progress=seen.append)
    assert (report.imported, report.updated) == (2, 0)
    assert len(seen) == 4
    errors = {f.path.name: f.error for f in report.failed}
    assert set(errors) == {"broken.json", "aspect.json"}
    assert "broken.json: malformed JSON at line 2" in errors["broken.json"]
    assert "aspect.json: passport id: missing" in errors["aspect.json"]
    nca = lookup_passport(store, "NCR186850B")
    assert nca is not None
    assert (nca.chemistry, nca.model, nca.damaged) == ("NCA", "catenax-batterypass-3", False)
    assert nca.fields_used["batteryIdentification.batteryType"] == "NCA"
    assert nca.payload["batteryIdentification"]["batteryIDDMCCode"] == "NCR186850B"
    assert nca.source_file is not None and nca.source_file.endswith("NCR186850B.json")
    lmo = lookup_passport(store, "IMR18650V1")
    assert lmo is not None and lmo.chemistry == "LMO"
    assert lookup_passport(store, "no-such-passport") is None


def test_reimport_updates_instead_of_duplicating(store: Store, tmp_path: Path) -> None:
    doc = json.loads(EXAMPLE.read_bytes())
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    assert import_passports(store, [path]).imported == 1
    doc["chemistry"], doc["cathode"] = "lithium iron phosphate", None
    path.write_text(json.dumps({k: v for k, v in doc.items() if v is not None}))
    report = import_passports(store, [path])
    assert (report.imported, report.updated, report.failed) == (0, 1, [])
    row = lookup_passport(store, doc["passport_id"])
    assert row is not None and row.chemistry == "LFP"


def test_bulk_import_of_simulated_passports(store: Store) -> None:
    stream = CellStream(seed=9)
    seqs = range(1500)
    carrying = [t for t in map(stream.truth, seqs) if t.passport_id is not None]
    assert import_simulated_passports(store, stream, seqs) == len(carrying)
    for truth in carrying[::97]:
        row = lookup_passport(store, str(truth.passport_id))
        assert row is not None
        assert row.chemistry in (truth.passport_chemistry, "NMC")
        assert row.mass_g == pytest.approx(truth.mass_g)


def test_cli_import_and_show(
    store: Store, passport_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLANT_DATABASE_URL", store.url)
    runner = CliRunner()
    args = ["--config", str(REPO / "config"), "passports"]
    result = runner.invoke(app, [*args, "import", str(passport_dir)])
    assert result.exit_code == 1, result.output
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 2
    assert any("broken.json: malformed JSON at line 2" in line for line in failed)
    assert "2 imported, 0 updated, 2 failed (4 files)" in result.stderr

    good = passport_dir / "tractusx"
    result = runner.invoke(app, [*args, "import", "--json", str(good)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("imported", "updated", "failed")} == {
        "imported": 0,
        "updated": 2,
        "failed": [],
    }
    # The 3.5 t "18650" is stored but may not route a cell (tests/test_passport_models.py).
    assert [n.split(": not routing evidence: ")[1] for n in summary["not_routing_evidence"]] == [
        "passport IMR18650V1: mass 3,500,000 g is implausible for an 18650 cell (30..70 g): "
        "wrong unit?"
    ]

    result = runner.invoke(app, [*args, "show", "--json", "IMR18650V1"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["chemistry"], shown["passport_id"]) == ("LMO", "IMR18650V1")
    assert "LMO" in shown["chemistry_reason"]

    result = runner.invoke(app, [*args, "show", "nope"])
    assert result.exit_code == 1
    assert "no passport with id 'nope'" in result.stderr
