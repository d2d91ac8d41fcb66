"""Recycled-content certificates: signed with the plant's key and verified with its public key,
origin shares from the cells' passports, refused for batches on hold, off spec or not Art. 8."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hydromet_feed import add_lot, nmc_mix
from joserfc import jws
from joserfc.jwk import ECKey

from plant.alarms import Alarms
from plant.certificates import (
    KEY_FILE,
    CertificateRefused,
    canonical,
    certificate,
    public_jwk,
    waste_origin,
)
from plant.commands.hydromet_child import simulated_plant
from plant.hydromet import HydrometRunner, TanksSection, load_hydromet
from plant.purity import load_products
from plant.store import PassportRow, Store

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


def _lot(store: Store, runner: HydrometRunner, i: int, lfp: int = 0) -> str:
    """A lot of 100 cells: every tenth a manufacturing reject, cells 90-99 without a passport
    on file; returns its campaign id."""
    now = T0 + timedelta(minutes=10 * i)
    pids = add_lot(store, f"L1-HM-{i:03d}", nmc_mix(100, lfp), closed_at=now, seq0=1000 * i)
    with store.begin() as s:
        for k, pid in enumerate(pids[:90]):
            status = "production scrap" if k % 10 == 3 else "waste"
            s.add(PassportRow(id=pid, model="m", chemistry="NMC", payload={
                "sustainability": {"status": status}}))  # fmt: skip
    return runner.step(now, ph=4.0).campaigns[0]


@pytest.fixture
def runner(store: Store) -> HydrometRunner:
    # No hold-up tank: each campaign's batches are made of its own lot alone.
    cfg = load_hydromet(REPO / "config").model_copy(update={"tanks": TanksSection(pls_holdup_l=0)})
    return HydrometRunner(
        store, cfg, load_products(REPO / "config"), Alarms(store, "L1"),
        plant=simulated_plant(cfg, 1), line="L1",
    )  # fmt: skip


def _cert(store: Store, runner: HydrometRunner, batch: str, key_dir: Path) -> dict:
    return certificate(
        store, runner.products, runner.config, batch, site="Test", now=T0, key_dir=key_dir
    )


def test_certificate_verifies_with_the_plants_public_key_and_shares_come_from_passports(
    store: Store, runner: HydrometRunner, tmp_path: Path
) -> None:
    cid = _lot(store, runner, 0)
    cert = _cert(store, runner, f"{cid}-Ni", tmp_path)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    # A buyer holds only the public JWK (as `plant certificates public-key` prints it).
    pub = ECKey.import_key(json.loads(json.dumps(public_jwk(tmp_path))))
    assert "d" not in pub.as_dict(private=False)
    token = jws.deserialize_compact(cert["jws"], pub)
    assert token.protected["alg"] == "ES256"
    assert json.loads(token.payload) == json.loads(canonical(cert))
    tampered = {**cert, "batch": {**cert["batch"], "mass_kg": 1e6}}
    assert canonical(tampered).encode() != token.payload
    with pytest.raises(Exception, match="signature"):
        jws.deserialize_compact(cert["jws"], ECKey.generate_key("P-256"))
    # Ni from 100 cells: 9 of 90 with passports are manufacturing rejects, 10 have none.
    origin = cert["recovered_metal"]["origin"]
    assert origin["unknown_pct"] == pytest.approx(10.0, abs=3)
    assert origin["manufacturing_waste_pct"] == pytest.approx(9.0, abs=3)
    assert origin["post_consumer_pct"] + origin["manufacturing_waste_pct"] < 100.0
    assert sum(origin[f"{o}_pct"] for o in ("post_consumer", "manufacturing_waste", "unknown")) == (
        pytest.approx(100.0, abs=0.11)
    )
    # No float noise (20000.09999999999): every number has at most 4 decimals.
    for number in _numbers(cert):
        assert round(number, 4) == number, number


def _numbers(obj: object) -> list[float]:
    if isinstance(obj, dict):
        return [n for v in obj.values() for n in _numbers(v)]
    if isinstance(obj, list):
        return [n for v in obj for n in _numbers(v)]
    return [obj] if isinstance(obj, float) else []


def test_certificates_are_refused_for_manganese_and_for_off_spec_batches(
    store: Store, runner: HydrometRunner, tmp_path: Path
) -> None:
    cid = _lot(store, runner, 0)
    with pytest.raises(CertificateRefused, match=r"Mn is not one Art\. 8 counts"):
        _cert(store, runner, f"{cid}-Mn", tmp_path)
    bad = _lot(store, runner, 1, lfp=30)
    with pytest.raises(CertificateRefused, match=rf"batch {bad}-Co is on hold \(.*Fe .* ppm >"):
        _cert(store, runner, f"{bad}-Co", tmp_path)


def test_waste_origin_reads_the_passport_status() -> None:
    assert waste_origin({"sustainability": {"status": "waste"}}) == "post_consumer"
    assert waste_origin({"sustainability": {"status": "Production scrap"}}) == (
        "manufacturing_waste"
    )
    assert waste_origin({"batteryStatus": "Repurposed"}) == "post_consumer"
    assert waste_origin({}) == "unknown"
    assert waste_origin(None) == "unknown"
