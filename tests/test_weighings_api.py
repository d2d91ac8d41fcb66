"""`POST /api/weighings`: an engineer records a weighed fraction; lower roles are refused, every
weighing is audited, a bad field is a 422 naming it, and the fraction counts in the EU figures."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import test_hmi_api as rig
from hydromet_feed import add_lot, nmc_mix

from plant.hydromet import load_hydromet
from plant.purity import load_products
from plant.purity_report import eu_figures

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def hmi(db_url: str, tmp_path: Path) -> Iterator[rig.Hmi]:
    yield from rig.make_hmi(db_url, tmp_path)


def test_an_engineer_weighs_a_fraction_audited_and_counted(hmi: rig.Hmi) -> None:
    at = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    add_lot(hmi.store, "L1-HM-A", nmc_mix(10), closed_at=at, seq0=1)
    body = {"fraction": "steel", "kg": 1.5, "lot": "L1-HM-A", "at": "2026-03-01T07:00:00Z"}
    for role in ("viewer", "operator"):
        r = hmi.client.post("/api/weighings", json=body, headers=hmi.token(role))
        assert r.status_code == 403, r.text
    assert hmi.client.post("/api/weighings", json=body).status_code == 401
    engineer = hmi.token("engineer")
    before = hmi.audit_count("engineer")
    r = hmi.client.post("/api/weighings", json=body, headers=engineer)
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["fraction"] == "steel" and got["kg"] == 1.5 and got["lot_id"] == "L1-HM-A"
    assert got["weighed_at"].startswith("2026-03-01T07:00:00")
    assert got["calculation_point"] == "steel scrap weighed leaving the plant for a steelworks"
    assert hmi.audit_count("engineer") == before + 1
    last = hmi.last_audit()
    assert last.action == "weighing.add" and last.new == "steel 1.5 kg lot L1-HM-A"
    # A weighing of no lot counts in the period it was weighed in.
    free = {"fraction": "residue", "kg": 0.2, "at": "2026-03-01T08:00:00Z"}
    assert hmi.client.post("/api/weighings", json=free, headers=engineer).status_code == 201
    eu = eu_figures(hmi.store, load_products(REPO / "config"), load_hydromet(REPO / "config"))
    assert [f["name"] for f in eu["fractions"]["not_counted"]] == ["residue (1 weighings)"]


@pytest.mark.parametrize(
    ("patch", "field", "text"),
    [
        ({"fraction": "gold"}, "fraction", "unknown fraction 'gold'"),
        ({"kg": 0}, "kg", "give a mass above 0"),
        ({"kg": 250_000}, "kg", "at most 100000 kg"),
        ({"kg": "heavy"}, "kg", None),
        ({"lot": "L1-HM-NOPE"}, "lot", "no lot 'L1-HM-NOPE'"),
        ({"at": "yesterday"}, "at", None),
        ({"at": "2999-01-01T00:00:00Z"}, "at", "is in the future"),
    ],
)
def test_a_bad_field_is_a_422_naming_it(
    hmi: rig.Hmi, patch: dict[str, object], field: str, text: str | None
) -> None:
    body = {"fraction": "steel", "kg": 1.5, **patch}
    engineer = hmi.token("engineer")
    before = hmi.audit_count("engineer")
    r = hmi.client.post("/api/weighings", json=body, headers=engineer)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    if isinstance(detail, str):
        assert detail.startswith(f"{field}: ") and text is not None and text in detail
    else:
        assert [e["loc"][-1] for e in detail] == [field]
    assert hmi.audit_count("engineer") == before
