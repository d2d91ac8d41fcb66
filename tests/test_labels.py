"""Label payloads of every form resolve to the stored passport they name; DataMatrix is read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zxingcpp

from drivers.camera import decode_label, passport_id_from_payload
from plant.passports import find_passport, import_passports
from plant.store import Store

GS1_ID = "https://id.gs1.org/01/09506000134352/21/ABC123"
UUID_ID = "urn:uuid:fDa53Be7-52Aa-42DF-bc4A-b93af2ABa30B"  # stored as written (Catena-X 4.0.0)
PRODUCT_URI = "https://dc-qr.com/?m=R123456789"  # IDTA 02035-1 URIOfTheProduct example
SERIAL = "X123456789012X12345678901234567"  # Catena-X 3.0.1 batteryIDDMCCode example


@pytest.fixture
def stored(store: Store, tmp_path: Path) -> Store:
    """One passport per id form, as a supplier would send them."""
    for i, pid in enumerate((GS1_ID, UUID_ID, PRODUCT_URI, SERIAL)):
        doc = {"format": "plant-passport/1", "passport_id": pid, "chemistry": "LFP"}
        (tmp_path / f"{i}.json").write_text(json.dumps(doc))
    report = import_passports(store, sorted(tmp_path.glob("*.json")))
    assert (report.imported, report.failed) == (4, [])
    return store


@pytest.mark.parametrize(
    ("payload", "stored_id"),
    [
        (GS1_ID, GS1_ID),
        ("https://brand.example.com/01/09506000134352/21/ABC123", GS1_ID),
        ("https://brand.example.com/shop/01/9506000134352/21/ABC123?lang=de", GS1_ID),
        ("(01)09506000134352(21)ABC123", GS1_ID),
        ("010950600013435221ABC123", GS1_ID),  # raw element strings, as a GS1 DataMatrix holds
        ("CX:XYZ78901:" + SERIAL, SERIAL),
        ("CX:" + UUID_ID, UUID_ID),
        ("urn:uuid:FDA53BE7-52AA-42DF-BC4A-B93AF2ABA30B", UUID_ID),
        ("https://dpp.example/passport/URN:UUID:FDA53BE7-52AA-42DF-BC4A-B93AF2ABA30B", UUID_ID),
        (PRODUCT_URI, PRODUCT_URI),
    ],
)
def test_each_label_form_finds_the_stored_passport(
    stored: Store, payload: str, stored_id: str
) -> None:
    found = find_passport(stored, passport_id_from_payload(payload))
    assert found is not None
    assert found.passport_id == stored_id  # the id as imported, whatever the label's case


def test_a_gtin_without_a_serial_names_no_passport() -> None:
    with pytest.raises(ValueError, match=r"no serial number \(AI 21\)"):
        passport_id_from_payload("(01)09506000134352")


def datamatrix(payload: str) -> np.ndarray:
    """A DataMatrix label image written by zxing-cpp (a different library than the reader's
    usual QR writer, segno, which cannot write DataMatrix)."""
    code = zxingcpp.create_barcode(payload, zxingcpp.BarcodeFormat.DataMatrix)
    image = np.asarray(zxingcpp.write_barcode_to_image(code, scale=8), dtype=np.uint8)
    return np.pad(image, 40, constant_values=255)


@pytest.mark.parametrize(
    ("payload", "stored_id"),
    [(SERIAL, SERIAL), ("010950600013435221ABC123", GS1_ID), (UUID_ID.upper(), UUID_ID)],
)
def test_a_datamatrix_label_is_read_and_resolved(
    stored: Store, payload: str, stored_id: str
) -> None:
    read = decode_label(datamatrix(payload))
    assert read.payload == payload, read.error
    found = find_passport(stored, passport_id_from_payload(read.payload))
    assert found is not None and found.passport_id == stored_id
