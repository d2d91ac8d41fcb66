"""Every public passport model read; aspects joined; non-battery passports refused; plausibility."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest
from linerig import config_copy, plant_cmd, plant_env
from publicdata import public_file

from models.passport import Passport, PassportError, parse_passport
from plant.decide import Evidence, decide_batch
from plant.passports import find_passport, import_passports
from plant.routing import RoutingRules
from plant.store import Store

REPO = Path(__file__).resolve().parent.parent
REF = REPO / "tests" / "data" / "reference-passports"  # sources and licences in its README.md
OWN = REPO / "tests" / "data" / "own"  # written by us (its README.md)
CX4_ID = "urn:uuid:fDa53Be7-52Aa-42DF-bc4A-b93af2ABa30B"  # mixed case, as the example has it
CX6_ID = "urn:uuid:550e8400-e29b-41d4-a716-446655440000"
OWN_CX4_ID = "urn:uuid:3fA85f64-5717-4562-B3fC-2c963F66aFa6"  # ours, mixed case as well


def ref(name: str) -> Path:
    """A reference payload: in the repository, else public (tests/data/PUBLIC_DATA.md)."""
    here = REF / name
    return here if here.exists() else public_file(f"reference-passports/{name}")


@pytest.mark.parametrize(
    ("file", "passport_id", "model", "chemistry"),
    [
        ("catenax-battery_pass-6.1.0/BatteryPass.json", CX6_ID, "catenax-batterypass-6", "NMC"),
        ("catenax-battery_pass-4.0.0/BatteryPass.json", CX4_ID, "catenax-batterypass-4", "NMC"),
        (
            "catenax-battery_pass-3.0.1/BatteryPass.json",
            "X123456789012X12345678901234567",
            "catenax-batterypass-3",
            "UNKNOWN",  # the generated example lists "LFP, Natrium, Li-Ion, NMC, NCA"
        ),
        ("tractusx-dpp-testdata/NCR186850B.json", "NCR186850B", "catenax-batterypass-3", "NCA"),
        ("tractusx-dpp-testdata/IMR18650V1.json", "IMR18650V1", "catenax-batterypass-3", "LMO"),
        (
            "idta-02035-aas/IDTA 02035-6_DBP-Part-6_MaterialComposition.json",
            "https://admin-shell.io/idta/asset/MaterialCompositionForDBPAAS/1/0",
            "idta-02035-aas",
            "NMC",
        ),
        (
            "idta-02035-aas/IDTA 02035-4_DBP-Part-4_TechnicalData.json",
            "https://admin-shell.io/idta/asset/digitalbatterypassport/TechnicalData/1/0",
            "idta-02035-aas",
            "UNKNOWN",
        ),
        (
            "idta-02035-aas/IDTA 02035-1_DBP-Part-1_Digital Nameplate.json",
            "https://admin-shell.io/idta/asset/DigitalNameplate/3/0",
            "idta-02035-aas",
            "UNKNOWN",
        ),
        (
            "idta-02035-value-only/BatteryNameplate.json",
            "https://dc-qr.com/?m=R123456789",
            "idta-batterypass",
            "UNKNOWN",
        ),
        (
            "batterypass-v1.0/GeneralProductInformation-sample.json",
            "urn:bmwk:123456687678",
            "batterypass-1.0",
            "UNKNOWN",
        ),
        ("batterypass-v1.0/MaterialComposition-sample.json", None, "batterypass-1.0", "NMC"),
        ("batterypass-v1.2/MaterialComposition-payload.json", None, "batterypass-1.2", "NMC"),
        ("idta-02035-value-only/MaterialComposition.json", None, "idta-batterypass", "NMC"),
    ],
)
def test_every_public_example_is_read(
    file: str, passport_id: str | None, model: str, chemistry: str
) -> None:
    p = parse_passport(ref(file).read_bytes(), source=file)
    assert (p.passport_id, p.model.value, p.chemistry) == (passport_id, model, chemistry)


@pytest.mark.parametrize(
    ("file", "passport_id", "model", "chemistry"),
    [
        ("catenax-battery_pass-4.0.0/BatteryPass.json", OWN_CX4_ID, "catenax-batterypass-4", "NMC"),
        (
            "idta-02035-aas/MaterialComposition-aas.json",
            "urn:own:asset:battery-0002",
            "idta-02035-aas",
            "LFP",  # the unrelated submodel's "NCA" is not read
        ),
        (
            "batterypass-v1.0/GeneralProductInformation.json",
            "urn:own:battery-0001",
            "batterypass-1.0",
            "UNKNOWN",
        ),
        ("batterypass-v1.0/MaterialComposition.json", None, "batterypass-1.0", "NMC"),
    ],
)
def test_every_model_is_read_in_our_own_examples(
    file: str, passport_id: str | None, model: str, chemistry: str
) -> None:
    p = parse_passport((OWN / file).read_bytes(), source=file)
    assert (p.passport_id, p.model.value, p.chemistry) == (passport_id, model, chemistry)


def test_catenax_4_either_wrappers_status_and_expiry_are_read() -> None:
    p = parse_passport(ref("catenax-battery_pass-4.0.0/BatteryPass.json").read_bytes(), source="x")
    assert p.fields_used["metadata.passportIdentifier.left"] == CX4_ID
    assert p.fields_used["identification.chemistry"] == "NCM"
    assert (p.mass_g, p.status, p.expires_on) == (20.5, "draft", date(2000, 1, 1))


def test_catenax_4_either_wrappers_status_and_expiry_are_read_in_our_own_example() -> None:
    p = parse_passport(
        (OWN / "catenax-battery_pass-4.0.0/BatteryPass.json").read_bytes(), source="x"
    )
    assert p.fields_used["metadata.passportIdentifier.left"] == OWN_CX4_ID
    assert p.fields_used["identification.chemistry"] == "NCM"
    assert (p.mass_g, p.status, p.expires_on) == (46.5, "draft", date(2000, 1, 1))


@pytest.mark.parametrize("own", [False, True], ids=["public", "own"])
def test_a_generic_product_passport_is_refused(own: bool) -> None:
    name = "tractusx-generic-dpp-6.1.0/DigitalProductPassport.json"
    file = OWN / name if own else ref(name)
    with pytest.raises(PassportError, match="not a battery passport") as err:
        parse_passport(file.read_bytes(), source=file.name)
    assert "\n" not in str(err.value)
    assert "generic.digital_product_passport" in str(err.value)


@pytest.mark.parametrize("own", [False, True], ids=["public", "own"])
def test_a_generic_product_passport_never_overwrites_the_battery_with_its_id(
    store: Store, own: bool
) -> None:
    battery = ref("catenax-battery_pass-6.1.0/BatteryPass.json")
    name = "tractusx-generic-dpp-6.1.0/DigitalProductPassport.json"
    generic = OWN / name if own else ref(name)
    report = import_passports(store, [battery, generic])
    assert (report.imported, report.updated) == (1, 0)
    assert [f.path for f in report.failed] == [generic]
    stored = find_passport(store, CX6_ID)
    assert stored is not None and stored.chemistry == "NMC"


def aspect_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.json") if "schema" not in p.name.lower())


@pytest.mark.parametrize(
    ("folder", "passport_id", "mass_g"),
    [
        ("batterypass-v1.2", "urn:bmwk:123456687678", 699_000.0),
        ("batterypass-v1.0", "urn:bmwk:123456687678", 699_000.0),
        ("idta-02035-value-only", "https://dc-qr.com/?m=R123456789", None),
        ("own/batterypass-v1.0", "urn:own:battery-0001", 12_500.0),
    ],
)
def test_aspects_of_one_battery_are_joined_by_the_folder_id(
    store: Store, folder: str, passport_id: str, mass_g: float | None
) -> None:
    own = folder.startswith("own/")
    where = OWN / folder.removeprefix("own/") if own else ref(folder)
    report = import_passports(store, aspect_files(where))
    assert (report.imported, report.failed) == (1, [])
    p = find_passport(store, passport_id)
    assert p is not None
    assert (p.chemistry, p.mass_g) == ("NMC", mass_g)  # chemistry from MaterialComposition


def test_aspects_without_an_id_in_their_folder_are_refused(store: Store, tmp_path: Path) -> None:
    shutil.copy(ref("batterypass-v1.2/MaterialComposition-payload.json"), tmp_path)
    report = import_passports(store, [tmp_path / "MaterialComposition-payload.json"])
    assert report.imported == 0
    (failure,) = report.failed
    assert "passport id: missing" in failure.error and "no file in the folder" in failure.error


@pytest.mark.parametrize("own", [False, True], ids=["public", "own"])
def test_upper_case_uuid_finds_the_passport_stored_as_imported(store: Store, own: bool) -> None:
    name = "catenax-battery_pass-4.0.0/BatteryPass.json"
    pid = OWN_CX4_ID if own else CX4_ID
    import_passports(store, [OWN / name if own else ref(name)])
    for asked in (pid.upper().replace("URN:UUID:", "urn:uuid:"), pid.lower(), pid):
        found = find_passport(store, asked)
        assert found is not None and found.passport_id == pid


# -- plausibility, through the pure decision -------------------------------------------------


def plant_passport(mass: dict[str, object], model: str = "INR18650-35E") -> bytes:
    doc = {
        "format": "plant-passport/1",
        "passport_id": "P-1",
        "model": model,
        "chemistry": "NMC811",
        "mass": mass,
    }
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("mass", "why"),
    [
        ({"value": 46, "unit": "t"}, "mass 46,000,000 g is implausible for an 18650 cell"),
        ({"value": 46, "unit": "mg"}, "mass 0.046 g is implausible for an 18650 cell"),
        ({"value": 3500, "unit": "kg"}, "mass 3,500,000 g is implausible for an 18650 cell"),
    ],
)
def test_an_implausible_mass_is_flagged(mass: dict[str, object], why: str) -> None:
    p = parse_passport(plant_passport(mass), source="p.json")
    assert p.implausible is not None and p.implausible.startswith(why)
    assert (
        parse_passport(plant_passport({"value": 46, "unit": "g"}), source="p").implausible is None
    )


def passport(**values: object) -> Passport:
    """A passport that may decide a cell alone (verified: tests/test_passport_authenticity.py)."""
    raw = plant_passport({"value": 46, "unit": "g"})
    return parse_passport(raw, source="p.json").model_copy(
        update={"authenticity": "verified", **values}
    )


def decided(ev: Evidence) -> tuple[str, str]:
    (d,) = decide_batch([ev], classifier=None, rules=RoutingRules(), model_version=None)
    return d.route.value, d.reason


def test_a_plausible_approved_passport_routes_a_cell_alone() -> None:
    assert decided(Evidence(passport=passport(), cell_mass_g=45.0))[0] == "hydromet"


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ({"status": "draft"}, "passport P-1 has status draft, not approved"),
        ({"expires_on": date(2024, 1, 1)}, "passport P-1 expired on 2024-01-01"),
        ({"implausible": "mass 46,000,000 g is implausible"}, "mass 46,000,000 g is implausible"),
    ],
)
def test_draft_expired_or_implausible_passports_are_no_routing_evidence(
    values: dict[str, object], why: str
) -> None:
    route, reason = decided(Evidence(passport=passport(**values), seen_on=date(2026, 6, 1)))
    assert route == "quarantine"
    assert why in reason and "not routing evidence, the spectrum decides" in reason


def test_passport_mass_far_from_the_load_cell_quarantines_the_cell() -> None:
    route, reason = decided(Evidence(passport=passport(), cell_mass_g=71.5))
    assert route == "quarantine"
    assert reason.startswith(
        "passport_mass_mismatch: passport says 46 g, the load cell weighed 71.5 g"
    )
    # Without a load-cell reading there is nothing to compare.
    assert decided(Evidence(passport=passport(), cell_mass_g=None))[0] == "hydromet"


# -- end to end: `plant passports import` as a process ---------------------------------------


@pytest.mark.e2e
def test_plant_passports_import_reads_every_model_and_refuses_the_generic_one(
    tmp_path: Path,
) -> None:
    incoming = tmp_path / "incoming"
    for folder in (
        "catenax-battery_pass-6.1.0",
        "catenax-battery_pass-4.0.0",
        "batterypass-v1.2",
        "idta-02035-aas",
        "idta-02035-value-only",
        "tractusx-dpp-testdata",
        "tractusx-generic-dpp-6.1.0",
    ):
        (incoming / folder).mkdir(parents=True)
        for f in aspect_files(ref(folder)):
            shutil.copy(f, incoming / folder)
    db_url = f"sqlite:///{tmp_path / 'plant.db'}"
    cfg = config_copy(tmp_path, db_url=db_url)
    env = plant_env()
    subprocess.run(plant_cmd(cfg, "db", "upgrade"), env=env, check=True, capture_output=True)

    run = subprocess.run(
        plant_cmd(cfg, "passports", "import", "--json", str(incoming)),
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1, run.stderr  # the generic product passport failed
    summary = json.loads(run.stdout)
    (failed,) = summary["failed"]
    assert failed["file"].endswith("DigitalProductPassport.json")
    assert "not a battery passport" in failed["error"]
    # 6.1.0, 4.0.0, BatteryPass joined, 3 AAS environments, IDTA value-only joined, 2 Tractus-X
    assert summary["imported"] == 9
    notes = "\n".join(summary["not_routing_evidence"])
    assert f"passport {CX6_ID} has status draft" in notes
    assert "IMR18650V1: mass 3,500,000 g is implausible for an 18650 cell" in notes

    def show(pid: str) -> dict[str, object]:
        out = subprocess.run(
            plant_cmd(cfg, "passports", "show", "--json", pid),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(out.stdout))

    nmc = show(CX6_ID)
    assert (nmc["chemistry"], nmc["model"], nmc["status"]) == (
        "NMC",
        "catenax-batterypass-6",
        "draft",
    )
    cx4 = show(CX4_ID.upper().replace("URN:UUID:", "urn:uuid:"))
    assert (cx4["passport_id"], cx4["chemistry"], cx4["expires_on"]) == (
        CX4_ID,
        "NMC",
        "2000-01-01",
    )
    assert show("urn:bmwk:123456687678")["chemistry"] == "NMC"
    assert show("https://dc-qr.com/?m=R123456789")["chemistry"] == "NMC"
