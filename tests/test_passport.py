"""Passport parsing: the real reference payloads, encodings, units, bad values, chemistry text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drivers.sim.cells import CellStream
from drivers.sim.passports import passport_filename, write_passports
from models.passport import (
    Passport,
    PassportError,
    PassportModel,
    chemistry_from_text,
    parse_passport,
)

REPO = Path(__file__).resolve().parent.parent
# Copies of public battery-passport payloads (sources and licences in its README.md).
REF = REPO / "tests" / "data" / "reference-passports"
EXAMPLE = REPO / "docs" / "passport-example.json"


def ref(name: str) -> Passport:
    path = REF / name
    return parse_passport(path.read_bytes(), source=str(path))


def parse_doc(doc: dict[str, Any], source: str = "test.json") -> Passport:
    return parse_passport(json.dumps(doc).encode(), source=source)


def catenax6() -> dict[str, Any]:
    return json.loads((REF / "catenax-battery_pass-6.1.0/BatteryPass.json").read_bytes())


def catenax3() -> dict[str, Any]:
    return json.loads((REF / "tractusx-dpp-testdata/NCR186850B.json").read_bytes())


def own(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(EXAMPLE.read_bytes())
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


# -- the reference payloads, one test each ---------------------------------------------------


def test_catenax_6_reference_is_nmc_family() -> None:
    p = ref("catenax-battery_pass-6.1.0/BatteryPass.json")
    assert p.model is PassportModel.catenax_6
    assert p.passport_id == "urn:uuid:550e8400-e29b-41d4-a716-446655440000"
    assert p.chemistry == "NMC"
    assert "Nickel Cobalt Manganese (NCM)" in p.chemistry_reason
    assert p.mass_g == 20.0  # {"value": 20.0, "unit": "unit:gram"}
    assert p.soh_pct == 50.0  # 100 % - capacity fade 50 %
    assert p.fields_used["identification.chemistry"] == "Nickel Cobalt Manganese (NCM)"


def test_catenax_3_generated_payload_names_several_chemistries() -> None:
    p = ref("catenax-battery_pass-3.0.1/BatteryPass.json")
    assert p.model is PassportModel.catenax_3
    assert p.chemistry == "UNKNOWN"
    assert p.chemistry_reason.startswith("passport names several chemistries: ")
    for family in ("NMC", "LFP", "NCA"):
        assert family in p.chemistry_reason
    assert p.mass_g == 1_007_000.0  # 1007 kg: 3.0.1 weight is a KilogramCharacteristic


def test_ncr186850b_is_nca() -> None:
    p = ref("tractusx-dpp-testdata/NCR186850B.json")
    assert (p.passport_id, p.chemistry) == ("NCR186850B", "NCA")
    assert p.manufacturer == "Company C"
    assert p.soh_pct == 50.0
    assert not p.damaged


def test_imr18650v1_is_lmo() -> None:
    p = ref("tractusx-dpp-testdata/IMR18650V1.json")
    assert (p.passport_id, p.chemistry) == ("IMR18650V1", "LMO")
    assert "LMO" in p.chemistry_reason


def test_batterypass_general_product_information_states_no_chemistry() -> None:
    p = ref("batterypass-v1.2/GeneralProductInformation-payload.json")
    assert p.model is PassportModel.batterypass_1_2
    assert p.passport_id == "urn:bmwk:123456687678"
    assert (p.chemistry, p.chemistry_reason) == ("UNKNOWN", "passport states no chemistry")
    assert p.mass_g == 699_000.0  # batteryMass is in kilograms


def test_batterypass_material_composition_utf16_is_nmc() -> None:
    raw = (REF / "batterypass-v1.2/MaterialComposition-payload.json").read_bytes()
    assert raw.startswith(b"\xff\xfe")  # UTF-16 LE with BOM, CRLF
    p = parse_passport(raw, source="MaterialComposition-payload.json")
    assert p.model is PassportModel.batterypass_1_2
    assert p.chemistry == "NMC"
    assert p.passport_id is None  # an aspect: the id lives in GeneralProductInformation


def test_batterypass_performance_utf16_states_no_chemistry() -> None:
    p = ref("batterypass-v1.2/PerformanceAndDurability.json")
    assert (p.chemistry, p.chemistry_reason) == ("UNKNOWN", "passport states no chemistry")


def test_idta_material_composition_pascal_case_is_nmc() -> None:
    p = ref("idta-batterypass-material_composition-1.0.1/MaterialCompositionBattery.json")
    assert p.model is PassportModel.idta
    assert p.chemistry == "NMC"
    assert "BatteryChemistry.ShortName" in p.fields_used


def test_schema_files_are_not_passports() -> None:
    with pytest.raises(PassportError, match="not a battery passport"):
        ref("catenax-battery_pass-6.1.0/BatteryPass-schema.json")


def test_own_format_example_parses() -> None:
    p = parse_passport(EXAMPLE.read_bytes(), source=str(EXAMPLE))
    assert p.model is PassportModel.plant
    assert (p.passport_id, p.chemistry, p.mass_g, p.soh_pct, p.capacity_ah) == (
        "ACME-18650-2024-000123",
        "NMC622",
        46.5,
        82.0,
        3.0,
    )


# -- encodings, units and sloppy values -------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-16-be"])
def test_encodings_with_and_without_bom_and_crlf(encoding: str) -> None:
    text = json.dumps(own(), indent=2).replace("\n", "\r\n")
    p = parse_passport(text.encode(encoding), source="x.json")
    assert p.chemistry == "NMC622"


def test_numbers_as_strings_and_null_numbers() -> None:
    doc = catenax3()
    doc["stateOfBattery"]["stateOfHealth"] = "87"
    doc["physicalDimensions"]["weight"] = "0,046"
    assert (parse_doc(doc).soh_pct, parse_doc(doc).mass_g) == (87.0, 46.0)
    doc["physicalDimensions"]["weight"] = None
    doc["stateOfBattery"]["stateOfHealth"] = None
    p = parse_doc(doc)
    assert (p.mass_g, p.soh_pct) == (None, None)


def test_text_where_a_number_belongs_names_the_field() -> None:
    doc = catenax3()
    doc["stateOfBattery"]["stateOfHealth"] = "good"
    with pytest.raises(PassportError, match=r"stateOfBattery\.stateOfHealth: 'good' is not a num"):
        parse_doc(doc)


def test_key_case_typos_are_read() -> None:
    doc = catenax3()
    doc["StateOfBattery"] = doc.pop("stateOfBattery")
    doc["StateOfBattery"]["stateofhealth"] = doc["StateOfBattery"].pop("stateOfHealth")
    p = parse_doc(doc)
    assert p.soh_pct == 50.0
    assert "StateOfBattery.stateofhealth" in p.fields_used  # the path as the file spells it


@pytest.mark.parametrize(
    ("unit", "value", "grams"),
    [("unit:gram", 46.0, 46.0), ("unit:kilogram", 0.046, 46.0), ("kg", "0.5", 500.0)],
)
def test_mass_units_normalise_to_grams(unit: str, value: Any, grams: float) -> None:
    doc = catenax6()
    doc["characteristics"]["physicalDimension"]["weight"] = {"value": value, "unit": unit}
    assert parse_doc(doc).mass_g == pytest.approx(grams)


def test_own_format_kg_and_kwh() -> None:
    p = parse_doc(own(mass={"value": "0.0465", "unit": "kg"}, capacity={"value": 0.011,
                                                                       "unit": "kWh"}))  # fmt: skip
    assert p.mass_g == pytest.approx(46.5)
    assert (p.capacity_ah, p.energy_kwh) == (None, 0.011)


def test_impossible_unit_names_the_field() -> None:
    with pytest.raises(PassportError, match=r"test\.json: mass\.unit: 'Ah' is not a mass unit"):
        parse_doc(own(mass={"value": 46, "unit": "Ah"}))
    doc = catenax6()
    doc["characteristics"]["physicalDimension"]["weight"]["unit"] = "unit:litre"
    with pytest.raises(PassportError, match=r"physicalDimension\.weight\.unit: 'unit:litre'"):
        parse_doc(doc)


def test_malformed_json_names_line_and_column() -> None:
    raw = b'{\r\n  "format": "plant-passport/1",\r\n  "passport_id": ,\r\n}'
    with pytest.raises(PassportError, match=r"bad\.json: malformed JSON at line 3 column 18"):
        parse_passport(raw, source="bad.json")


def test_negative_mass_names_the_field() -> None:
    doc = catenax6()
    doc["characteristics"]["physicalDimension"]["weight"]["value"] = -20
    with pytest.raises(PassportError, match=r"characteristics\.physicalDimension\.weight.*mass"):
        parse_doc(doc)


def test_state_of_health_over_100_names_the_field() -> None:
    doc = catenax3()
    doc["stateOfBattery"]["stateOfHealth"] = 120
    with pytest.raises(PassportError, match=r"stateOfBattery\.stateOfHealth: state of health 120"):
        parse_doc(doc)
    with pytest.raises(PassportError, match="state_of_health_pct"):
        parse_doc(own(state_of_health_pct=101))


def test_missing_passport_id_names_the_field() -> None:
    doc = catenax6()
    del doc["metadata"]["passportIdentifier"]
    with pytest.raises(PassportError, match=r"metadata\.passportIdentifier: missing"):
        parse_doc(doc)
    doc = catenax3()
    doc["batteryIdentification"]["batteryIDDMCCode"] = ""
    with pytest.raises(PassportError, match=r"batteryIdentification\.batteryIDDMCCode: missing"):
        parse_doc(doc)


def test_own_format_key_typo_names_the_key() -> None:
    doc = own()
    doc["state_of_heath_pct"] = doc.pop("state_of_health_pct")
    with pytest.raises(PassportError, match="state_of_heath_pct: Extra inputs are not permitted"):
        parse_doc(doc)


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"NMC"', b'{"foo": 1}', b"", b"NaN"])
def test_not_a_passport(raw: bytes) -> None:
    with pytest.raises(PassportError, match=r"^x\.json: "):
        parse_passport(raw, source="x.json")


def test_unsupported_catenax_version_is_named() -> None:
    doc = catenax6()
    doc["specVersion"] = "urn:io.catenax.battery.battery_pass:2.0.0"
    with pytest.raises(PassportError, match=r"battery_pass 2\.0\.0 is not supported"):
        parse_doc(doc)


def test_damage_reported_in_a_status_field_sets_the_flag() -> None:
    doc = catenax3()
    doc["stateOfBattery"]["statusBattery"] = "waste - damaged, swollen casing"
    p = parse_doc(doc)
    assert p.damaged
    assert p.fields_used["stateOfBattery.statusBattery"] == "waste - damaged, swollen casing"
    assert parse_doc(own(damaged=True)).damaged


def test_chemistry_from_composition_and_text_together() -> None:
    doc = catenax6()
    doc["materials"]["composition"][0]["id"][0]["name"] = "LiNi0.8Mn0.1Co0.1O2"
    assert parse_doc(doc).chemistry == "NMC811"  # family in the text, grade in the composition
    doc["materials"]["composition"][0]["id"][0]["name"] = "LiFePO4"
    p = parse_doc(doc)
    assert p.chemistry == "UNKNOWN"
    assert "several chemistries: NMC, LFP" in p.chemistry_reason


def test_placeholder_chemistry_text_is_quoted_not_guessed() -> None:
    doc = catenax6()
    doc["identification"]["chemistry"] = "gNfZBdyFGRajVfJNonEnOinZj"
    p = parse_doc(doc)
    assert p.chemistry == "UNKNOWN"
    assert "no recognisable chemistry" in p.chemistry_reason
    assert "gNfZBdyFGRajVfJNonEnOinZj" in p.chemistry_reason


# -- chemistry text -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NMC", "NMC"),
        ("NCM", "NMC"),
        ("Nickel Cobalt Manganese (NCM)", "NMC"),
        ("Lithium nickel manganese cobalt oxides", "NMC"),
        ("nickel, manganese and cobalt", "NMC"),
        ("LiNiMnCoO2", "NMC"),
        ("LiNixMnyCozO2", "NMC"),
        ("NCMA", "NMC"),
        ("NCM 811", "NMC811"),
        ("NMC-622", "NMC622"),
        ("NMC532", "NMC532"),
        ("NCM523", "NMC532"),  # NCM order is Ni:Co:Mn
        ("NMC 1:1:1", "NMC111"),
        ("LiNi0.8Mn0.1Co0.1O2", "NMC811"),
        ("LiNi1/3Mn1/3Co1/3O2", "NMC111"),
        ("Li(Ni0.5Mn0.3Co0.2)O2", "NMC532"),
        ("LiNi₀.₆Mn₀.₂Co₀.₂O₂", "NMC622"),
        ("LiNi0.7Mn0.15Co0.15O2", "NMC"),  # a grade none of 111/532/622/811
        ("lithium iron phosphate", "LFP"),
        ("LiFePO4", "LFP"),
        ("LFP", "LFP"),
        ("Lithium Iron Phosphate (LFP)", "LFP"),
        ("NCA", "NCA"),
        ("LiNiCoAlO2", "NCA"),
        ("LiNi0.8Co0.15Al0.05O2", "NCA"),
        ("NCA (Lithium nickel cobalt aluminum oxide)", "NCA"),
        ("lithium manganese oxide", "LMO"),
        ("LiMn2O4", "LMO"),
        ("Lithium-Manganese-Oxide (LMO)", "LMO"),
        ("LCO", "LCO"),
        ("lithium cobalt oxide", "LCO"),
        ("LiCoO2", "LCO"),
        ("NiMH", "NiMH"),
        ("nickel-metal hydride", "NiMH"),
        ("Ni-Cd", "NiCd"),
        ("nickel cadmium", "NiCd"),
        ("alkaline", "ZnMn"),
        ("Zn-MnO2", "ZnMn"),
        ("Li-ion", "UNKNOWN"),
        ("Graphite", "UNKNOWN"),
        ("LiPF6", "UNKNOWN"),
        ("LFP, Natrium, Li-Ion, NMC, NCA, Solid-State", "UNKNOWN"),
        ("NMC811, LiNi0.6Mn0.2Co0.2O2", "UNKNOWN"),  # two grades: ambiguous
    ],
)
def test_chemistry_text(text: str, expected: str) -> None:
    assert chemistry_from_text([text])[0] == expected


def test_chemistry_reasons_say_why() -> None:
    assert chemistry_from_text(["LiNi0.8Mn0.1Co0.1O2"]) == (
        "NMC811",
        "'LiNi0.8Mn0.1Co0.1O2' = NMC811 (Ni:Mn:Co 0.80:0.10:0.10)",
    )
    assert chemistry_from_text([]) == ("UNKNOWN", "passport states no chemistry")
    cls, reason = chemistry_from_text(["NMC", "lithium iron phosphate"])
    assert (cls, reason.split(" (")[0]) == (
        "UNKNOWN",
        "passport names several chemistries: NMC, LFP",
    )


# -- simulated passports ----------------------------------------------------------------------


def test_simulated_passports_round_trip(tmp_path: Path) -> None:
    stream = CellStream(seed=5)
    assert write_passports(stream, range(400), tmp_path) == len(list(tmp_path.glob("*.json")))
    exact_nmc = family_nmc = 0
    for seq in range(400):
        truth = stream.truth(seq)
        if truth.passport_id is None:
            continue
        path = tmp_path / passport_filename(truth.passport_id)
        p = parse_passport(path.read_bytes(), source=str(path))
        assert p.passport_id == truth.passport_id
        assert p.model is PassportModel.catenax_6
        assert p.mass_g == pytest.approx(truth.mass_g)
        assert p.damaged == truth.damaged
        assert 0 <= (p.soh_pct or 0) <= 100
        stated = truth.passport_chemistry or ""
        if p.chemistry == "NMC":
            assert stated.startswith("NMC"), (stated, p.chemistry_reason)
            family_nmc += 1
        else:
            assert p.chemistry == stated, p.chemistry_reason
            exact_nmc += stated.startswith("NMC")
    assert exact_nmc and family_nmc  # suppliers word NMC both ways


def test_mislabelled_simulated_cell_passport_states_the_wrong_chemistry(tmp_path: Path) -> None:
    from drivers.sim.cells import StreamMix

    stream = CellStream(seed=2, mix=StreamMix(passport_share=1.0, mislabel_share=1.0))
    truth = next(t for t in map(stream.truth, range(50)) if t.mislabelled)
    write_passports(stream, [truth.seq], tmp_path)
    p = parse_passport(
        (tmp_path / passport_filename(str(truth.passport_id))).read_bytes(), source="m"
    )
    assert p.chemistry != truth.chemistry
    assert p.chemistry in (truth.passport_chemistry, "NMC")
