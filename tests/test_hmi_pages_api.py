"""The reads behind the HMI pages: historian pens with their limits (Trends, sparklines), the
alarm journal, quarantine reasons by code and the active model's last evaluation (Classifier),
and each product's spec (Overview, Purity)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_hmi_api import Hmi, hmi, make_hmi  # noqa: F401 (fixture)

from plant.alarms import Alarms
from plant.historian import PROCESS_TAGS, Historian

CONFIG = Path(__file__).resolve().parent.parent / "config"
NOW = datetime.now(UTC).replace(microsecond=0)


def test_a_trend_gives_the_pen_its_limits_and_its_setpoint(hmi: Hmi) -> None:  # noqa: F811
    eng = hmi.token("engineer")
    Historian(hmi.store, "L1", writes=PROCESS_TAGS).record(
        [("leach.ph", NOW - timedelta(seconds=30 - i), 1.5 + i / 100) for i in range(30)]
    )
    limit = {"tag": "leach.ph", "kind": "high", "limit": 1.8, "unit": "pH"}
    assert hmi.client.put("/api/alarm-limits", json=limit, headers=eng).status_code == 200
    since = (NOW - timedelta(minutes=5)).isoformat()
    r = hmi.client.get(
        "/api/trends", params={"tag": "leach.ph", "since": since}, headers=hmi.token("viewer")
    )
    assert r.status_code == 200, r.text
    t = r.json()
    assert sum(b["n"] for b in t["buckets"]) == 30
    assert t["buckets"][-1]["max"] == pytest.approx(1.79)
    assert [(lim["kind"], lim["limit"]) for lim in t["limits"]] == [("high", 1.8)]
    assert t["setpoint_tag"] == "leach.ph_setpoint"
    bad = hmi.client.get("/api/trends?tag=leach.nope", headers=eng)
    assert bad.status_code == 422 and "leach.nope" in bad.json()["detail"]
    backwards = hmi.client.get(
        "/api/trends",
        params={"tag": "leach.ph", "since": NOW.isoformat(), "until": since},
        headers=eng,
    )
    assert backwards.status_code == 422 and "since" in backwards.json()["detail"]


def test_the_journal_lists_an_alarms_steps_newest_first(hmi: Hmi) -> None:  # noqa: F811
    a = Alarms(hmi.store, "L1").raise_("plc", "comm_lost", "PLC unreachable")
    op = hmi.token("operator")
    assert hmi.client.post(
        f"/api/alarms/{a.id}/ack", json={"note": "called"}, headers=op
    ).is_success
    r = hmi.client.get(f"/api/alarms/journal?alarm_id={a.id}", headers=hmi.token("viewer"))
    assert [(j["kind"], j["user"], j["note"]) for j in r.json()] == [
        ("acknowledged", "operator", "called"),
        ("raised", None, "PLC unreachable"),
    ]


@pytest.fixture
def hmi_with_report(sqlite_url: str, tmp_path: Path) -> Iterator[Hmi]:
    """The HMI with two `plant evaluate` reports of the default model in <data_dir>/reports."""
    reports = tmp_path / "reports"
    reports.mkdir()
    for stamp, correct in (("20261201T000000Z", 5), ("20261202T000000Z", 9)):
        report = {
            "model": "default",
            "model_version": f"default@{stamp}",
            "data": "site-set",
            "evaluated": f"2026-12-0{stamp[7]}T00:00:00+00:00",
            "n": correct + 1,
            "accuracy_on_accepted": correct / (correct + 1),
            "coverage": 1.0,
            "coverage_xrf_visible": 1.0,
            "misroute_rate": 0.0,
            "confusion": {
                "rows_truth": ["LFP", "NMC"],
                "columns_predicted": ["LFP", "NMC"],
                "matrix": [[correct, 1], [0, 0]],
            },
        }
        (reports / f"evaluate-default-{stamp}.json").write_text(json.dumps(report))
    (reports / "evaluate-default-broken.json").write_text("{")
    yield from make_hmi(sqlite_url, tmp_path)


def test_classifier_shows_the_last_evaluation_and_reasons_by_code(hmi_with_report: Hmi) -> None:
    hmi_with_report.store.add_cells(
        [
            {
                "line": "L1",
                "seq": i + 1,
                "chemistry": "LFP",
                "confidence": 0.8,
                "route": "quarantine",
                "reason": f"low_confidence: LFP confidence 0.8{i} below 0.90",
                "state": "confirmed",
            }
            for i in range(3)
        ]
    )
    d = hmi_with_report.client.get(
        "/api/classifier", headers=hmi_with_report.token("viewer")
    ).json()
    assert [(c["code"], c["cells"]) for c in d["quarantine_codes"]] == [("low_confidence", 3)]
    ev = d["evaluation"]
    assert ev["model_version"] == "default@20261202T000000Z"  # the newest report
    assert ev["confusion"]["matrix"] == [[9, 1], [0, 0]]


def test_batches_come_with_each_products_spec(hmi: Hmi) -> None:  # noqa: F811
    specs = hmi.client.get("/api/purity/batches", headers=hmi.token("viewer")).json()["specs"]
    assert specs == {}  # no config/products.toml in this HMI's config: nothing is made up
    for name in ("products.toml", "hydromet.toml"):
        (hmi.config_dir / name).write_text((CONFIG / name).read_text())
    specs = hmi.client.get("/api/purity/batches", headers=hmi.token("viewer")).json()["specs"]
    configured = tomllib.loads((CONFIG / "products.toml").read_text())["products"]
    assert set(specs) == set(configured)
    for product, spec in configured.items():  # every configured limit, as configured
        assert {k: specs[product][k] for k in spec} == spec


def test_a_trend_is_one_lines_pen(hmi: Hmi) -> None:  # noqa: F811
    for line, orp in (("L1", 560.0), ("L2", 450.0)):
        Historian(hmi.store, line, writes=PROCESS_TAGS).record(
            [("leach.orp_mv", NOW - timedelta(seconds=20 - i), orp) for i in range(20)]
        )
    viewer = hmi.token("viewer")
    since = (NOW - timedelta(minutes=5)).isoformat()
    both = hmi.client.get(
        "/api/trends", params={"tag": "leach.orp_mv", "since": since}, headers=viewer
    )
    assert both.status_code == 422 and "L1, L2" in both.json()["detail"]
    for line, orp in (("L1", 560.0), ("L2", 450.0)):
        r = hmi.client.get(
            "/api/trends",
            params={"tag": "leach.orp_mv", "line": line, "since": since},
            headers=viewer,
        ).json()
        assert r["line"] == line and {b["mean"] for b in r["buckets"]} == {orp}
    assert sum(b["n"] for b in r["buckets"]) == 20
