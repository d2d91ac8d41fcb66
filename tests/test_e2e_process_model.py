"""The hydromet process model acting in the running plant: an SX pH setpoint moves the Co/Ni
separation into the products, the hold-up tank spreads a bad lot over the batches after it, and
the carbonation's temperature and mother-liquor bleed set the Li recovery. All through
`plant run --simulate` as a process, seen through the HTTP API and the purity report."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from test_e2e_purity import _alarms, _client, _plant, _report, _setpoint, _start, _stop, _wait

from plant.store import CampaignLotRow, CellRow, Store

pytestmark = pytest.mark.e2e


def _ppm(batch: dict[str, Any], element: str) -> float:
    return float(batch["impurities_ppm"].get(element, 0.0))


def _of(rep: dict[str, Any], product: str) -> list[dict[str, Any]]:
    return [b for b in rep["batches"] if b["product"] == product]


def test_a_low_cyanex_ph_leaves_co_with_the_ni_and_puts_niso4_off_spec(tmp_path: Path) -> None:
    cfg, proc = _start(tmp_path, lfp_to_hydromet=False, cells=4000)
    try:
        client = _client(cfg, proc)
        _wait("4 NiSO4 batches", lambda: len(_of(_report(cfg, tmp_path), "NiSO4·6H2O")) >= 4, proc)
        before = _of(_report(cfg, tmp_path), "NiSO4·6H2O")
        # The Cyanex 272 circuit runs too acid: Co is no longer all extracted from the Ni.
        _setpoint(client, "sx_co.ph", 4.3)

        def co_off_spec() -> list[dict[str, Any]]:
            return [
                b
                for b in _of(_report(cfg, tmp_path), "NiSO4·6H2O")
                if any(r.startswith("Co ") and "> 50 ppm" in r for r in b["reasons"])
            ]

        off = _wait("NiSO4 off spec for Co", co_off_spec, proc)
        assert _wait("off-spec alarm", lambda: _alarms(client, "purity"), proc)

        # The loop the setpoint moved is the one the historian records and the model read.
        def loop_at_setpoint() -> bool:
            since = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
            r = client.get("/api/trends", params={"tag": "sx_co.ph", "since": since})
            assert r.status_code == 200 and r.json()["line"] == "L1", r.text
            return abs(r.json()["buckets"][-1]["mean"] - 4.3) < 0.1

        _wait("sx_co.ph at 4.3 in the historian", loop_at_setpoint, proc)
    finally:
        _stop(proc)
    assert all(_ppm(b, "Co") < 50 for b in before), [_ppm(b, "Co") for b in before]
    assert min(_ppm(b, "Co") for b in off) > 10 * max(1.0, max(_ppm(b, "Co") for b in before))
    assert all(b["state"] == "on_hold" for b in off)


def _lfp_cells_per_campaign(db: Path) -> dict[str, int]:
    store = Store(f"sqlite:///{db}")
    try:
        with store.session() as s:
            rows = s.execute(
                select(CampaignLotRow.campaign_id, func.count(CellRow.id))
                .join(CellRow, CellRow.lot_id == CampaignLotRow.lot_id)
                .where(CellRow.chemistry == "LFP")
                .group_by(CampaignLotRow.campaign_id)
            ).all()
    finally:
        store.close()
    return {cid: int(n) for cid, n in rows}


def test_a_bad_lot_spreads_over_the_next_batches_through_the_hold_up_tank(
    tmp_path: Path,
) -> None:
    cfg, proc = _start(tmp_path, lfp_to_hydromet=False, cells=6000)
    db = tmp_path / "plant.db"

    def routes(route: str) -> None:
        r = client.post(
            "/api/routing/routes", json={"chemistry": "LFP", "route": route, "confirm": True}
        )
        assert r.status_code == 200, r.text

    def mn_batches() -> list[dict[str, Any]]:
        return _of(_report(cfg, tmp_path), "MnSO4·H2O")

    try:
        client = _client(cfg, proc)
        _wait("6 clean campaigns", lambda: len(mn_batches()) >= 6, proc)
        # For a short while LFP goes to the hydromet line: a lot or two full of Fe and P.
        routes("hydromet")
        _wait("12 LFP cells leached", lambda: sum(_lfp_cells_per_campaign(db).values()) >= 12, proc)
        routes("black_mass")
        # Lots closed before the switch back may still hold LFP; wait for 4 clean campaigns after.

        def clean_after() -> list[str]:
            lfp = _lfp_cells_per_campaign(db)
            ids = sorted(b["campaign_id"] for b in mn_batches())
            last_bad = max(lfp)
            return [c for c in ids if c > last_bad and c not in lfp]

        _wait("4 clean campaigns after the bad lots", lambda: len(clean_after()) >= 4, proc)
    finally:
        _stop(proc)
    lfp = _lfp_cells_per_campaign(db)
    fe = {b["campaign_id"]: _ppm(b, "Fe") for b in mn_batches()}
    first_bad, last_bad = min(lfp), max(lfp)
    baseline = statistics.median(v for c, v in fe.items() if c < first_bad)
    after = [fe[c] for c in sorted(fe) if c > last_bad and c not in lfp][:4]
    peak = max(fe[c] for c in lfp if c in fe)
    # The bad lots' own batches carry only part of their Fe: the tank blended it ...
    assert peak > 2 * baseline + 1.0, (baseline, peak, lfp)
    # ... and the clean lots after them still carry it, less with each batch.
    assert after[0] > baseline + 0.25 * (peak - baseline), (baseline, peak, after)
    assert after[0] > after[2] and after[1] > after[3], after
    assert after[3] < after[0] - 0.3 * (after[0] - baseline), after


def _li_recovery(rep: dict[str, Any]) -> tuple[float, float]:
    """Li recovery of a report: the plant's (over the Li that went through) and the EU's."""
    return rep["recovery"]["Li"]["achieved_pct"], rep["material_recovery"]["Li"]["rate_pct"]


@pytest.mark.timeout(600)
def test_a_colder_carbonation_and_a_larger_bleed_lower_li_recovery(tmp_path: Path) -> None:
    # No PLS tank: its filling over the first campaigns would hide the carbonation's effect.
    no_tank = {"pls_holdup_l = 100.0": "pls_holdup_l = 0.0"}
    cfg, proc = _start(tmp_path, lfp_to_hydromet=False, cells=8000, hydromet=no_tank)

    def li_batches(since: datetime | None = None) -> list[dict[str, Any]]:
        r = client.get("/api/purity/batches", params={"product": "Li2CO3", "limit": 2000})
        assert r.status_code == 200, r.text
        return [b for b in r.json()["batches"]
                if since is None or datetime.fromisoformat(b["created_at"]) >= since]  # fmt: skip

    def at(tag: str, value: float) -> bool:
        """The loop recorded as `tag` reads `value` in the historian (HTTP API)."""
        since = (datetime.now(UTC) - timedelta(seconds=10)).isoformat()
        r = client.get("/api/trends", params={"tag": tag, "since": since})
        assert r.status_code == 200 and r.json()["line"] == "L1", r.text
        return abs(r.json()["buckets"][-1]["mean"] - value) < 2.0

    def phase(tag: str, value: float) -> dict[str, Any]:
        """Set `tag` through the setpoint API; once its loop is there and one campaign has let
        the recycled mother liquor follow, the report over the next three campaigns."""
        _setpoint(client, tag, value)
        _wait(f"{tag} at {value:g} in the historian", lambda: at(tag, value), proc)
        settle = datetime.now(UTC)
        _wait(f"{tag}: a campaign", lambda: li_batches(settle), proc)
        start = datetime.now(UTC)
        _wait(f"{tag}: 3 campaigns", lambda: len(li_batches(start)) >= 3, proc)
        res = _plant(cfg, tmp_path, "purity", "report", "--json", "--since", start.isoformat())
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout.strip().splitlines()[-1]))

    try:
        client = _client(cfg, proc)
        _wait("4 campaigns at 90 °C, 30 % bleed", lambda: len(li_batches()) >= 4, proc)
        hot = _report(cfg, tmp_path)
        # Li2CO3 is more soluble cold: more Li stays in the mother liquor ...
        cold = phase("carbonation.temp_c", 30.0)
        # ... and with all of that liquor bled, none of it goes back to the evaporator.
        bled = phase("carbonation.bleed_pct", 100.0)
        assert at("carbonation.temp_c", 30.0) and at("carbonation.bleed_pct", 100.0)
    finally:
        _stop(proc)
    rec = {k: r["recovery"]["Li"]["achieved_pct"] for k, r in (("hot", hot), ("cold", cold),
                                                               ("bled", bled))}  # fmt: skip
    assert rec["cold"] < rec["hot"] - 1.0, rec
    assert rec["bled"] < rec["cold"] - 5.0, rec
    # The Li not recovered left with the bled mother liquor.
    li = bled["mass_balance"]["Li"]
    assert li["residues_g"]["raffinate"] > 0.15 * li["in_g"], li
    assert bled["material_recovery"]["Li"]["rate_pct"] is not None
