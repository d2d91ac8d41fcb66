"""Purity that can fail, in the running plant: LFP routed to hydromet with a low impurity-removal
pH, and a leach starved of acid through the setpoint API. Off-spec batches and SPC alarms reach
the alarm list (HTTP API), the report carries the EU figures, certificates are refused for the
bad batches and verify with the plant's public key for the good ones."""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey
from linerig import config_copy, plant_cmd, plant_env

from plant.certificates import canonical
from plant.store import upgrade

pytestmark = pytest.mark.e2e
PASSWORD = "purity-engineer-pw-1"


def _plant(cfg: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        plant_cmd(cfg, *args), capture_output=True, text=True, env=plant_env(), cwd=tmp,
        timeout=300,
    )  # fmt: skip


def _start(
    tmp: Path, *, lfp_to_hydromet: bool, cells: int, hydromet: dict[str, str] | None = None
) -> tuple[Path, subprocess.Popen[bytes]]:
    """`hydromet`: replacements (old -> new) in the copy of config/hydromet.toml."""
    url = f"sqlite:///{tmp / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp, db_url=url, heads=2)
    for old, new in (hydromet or {}).items():
        text = (cfg / "hydromet.toml").read_text()
        assert old in text, old
        (cfg / "hydromet.toml").write_text(text.replace(old, new))
    if lfp_to_hydromet:
        routing = (cfg / "routing.toml").read_text()
        assert '\nLFP = "black_mass"' in routing
        (cfg / "routing.toml").write_text(
            routing.replace('\nLFP = "black_mass"', '\nLFP = "hydromet"')
        )
    plant = (cfg / "plant.toml").read_text()
    (cfg / "plant.toml").write_text(plant.replace("lot_close_kg = 20.0", "lot_close_kg = 5.0"))
    added = subprocess.run(
        plant_cmd(cfg, "users", "add", "erin", "--role", "engineer"),
        input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True, env=plant_env(),
        cwd=tmp, timeout=120,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    log = (tmp / "plant-run.log").open("wb")
    proc = subprocess.Popen(
        plant_cmd(cfg, "run", "--simulate", "--cells", str(cells), "--rate", "200"),
        cwd=tmp, env=plant_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return cfg, proc


def _client(cfg: Path, proc: subprocess.Popen[bytes]) -> httpx.Client:
    port = tomllib.loads((cfg / "plant.toml").read_text())["hmi"]["port"]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    _wait("HMI", lambda: client.get("/api/health").status_code == 200, proc)
    token = client.post("/api/login", json={"name": "erin", "password": PASSWORD})
    assert token.status_code == 200, token.text
    client.headers["Authorization"] = f"Bearer {token.json()['token']}"
    return client


def _wait(what: str, check: Any, proc: subprocess.Popen[bytes], timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        assert proc.poll() is None, f"plant run exited while waiting for {what}"
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout} s")


def _utc(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _alarms(client: httpx.Client, source: str) -> list[dict[str, Any]]:
    r = client.get("/api/alarms", params={"view": "history", "source": source, "limit": 1000})
    assert r.status_code == 200, r.text
    return sorted(r.json()["alarms"], key=lambda a: a["raised_at"])


def _setpoint(client: httpx.Client, name: str, value: float) -> None:
    r = client.post("/api/setpoints", json={"name": name, "value": value, "confirm": True})
    assert r.status_code == 200, r.text


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=120)


def _report(cfg: Path, tmp: Path) -> dict[str, Any]:
    res = _plant(cfg, tmp, "purity", "report", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _refused(cfg: Path, tmp: Path, batch: str) -> str:
    res = _plant(cfg, tmp, "purity", "certificate", batch, "--json")
    assert res.returncode == 1 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_lfp_routed_to_hydromet_goes_off_spec_alarms_and_is_refused_a_certificate(
    tmp_path: Path,
) -> None:
    cfg, proc = _start(tmp_path, lfp_to_hydromet=True, cells=3000)
    try:
        client = _client(cfg, proc)
        # The Fe/Al/P removal runs too acid: P stays in the Li liquor and comes down as Li3PO4.
        _setpoint(client, "impurity_removal.ph", 3.2)
        off = _wait("off-spec alarm", lambda: _alarms(client, "purity"), proc)
        assert "off spec" in off[0]["message"] and off[0]["priority"] == "high"
        proc.wait(timeout=300)
    finally:
        _stop(proc)
    rep = _report(cfg, tmp_path)
    bad = [b for b in rep["batches"] if not b["in_spec"]]
    assert bad and all(b["state"] == "on_hold" for b in bad)
    assert any(r.startswith("Fe ") and "ppm >" in r for b in bad for r in b["reasons"])
    li_low = [b for b in bad if b["product"] == "Li2CO3" and b["purity_pct"] < 99.5]
    assert li_low and any(r.startswith("purity ") for r in li_low[0]["reasons"])
    assert rep["alarms"] and {a["source"] for a in rep["alarms"]} >= {"purity"}
    # EU figures with their calculation points
    re_ = rep["recycling_efficiency"]
    assert 0 < re_["rate_pct"] < 100 and re_["targets"] == {"end-2025": 65.0, "end-2030": 70.0}
    assert re_["calculation_points"]["input"]
    assert set(rep["material_recovery"]) == {"Co", "Cu", "Li", "Ni"}
    held = next(b for b in bad if b["product"] != "MnSO4·H2O")
    line = _refused(cfg, tmp_path, held["id"])
    assert line.startswith(f"error: batch {held['id']} is on hold (")
    mn = next(b for b in rep["batches"] if b["product"] == "MnSO4·H2O")
    assert "Art. 8" in _refused(cfg, tmp_path, mn["id"])
    year = datetime.now(UTC).year
    res = _plant(cfg, tmp_path, "report", "recycling", "--year", str(year), "--out-dir", "eu")
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "eu" / f"recycling-{year}.json").read_text())
    assert doc["recycling_efficiency"]["rate_pct"] == re_["rate_pct"]
    assert (tmp_path / "eu" / f"recycling-{year}.html").read_text().startswith("<!DOCTYPE html>")


def test_acid_starved_leach_alarms_by_spc_before_off_spec_and_good_batches_verify(
    tmp_path: Path,
) -> None:
    cfg, proc = _start(tmp_path, lfp_to_hydromet=False, cells=6000)
    try:
        client = _client(cfg, proc)
        # A clean start sets the SPC baseline (6 in-spec batches per product) ...
        _wait("8 campaigns", lambda: len(_report(cfg, tmp_path)["batches"]) >= 32, proc)
        # ... then the acid dosing falls behind: the leach pH setpoint goes to 2.0.
        _setpoint(client, "leach.ph", 2.0)

        def insolubles_off_spec() -> list[dict[str, Any]]:
            return [
                b
                for b in _report(cfg, tmp_path)["batches"]
                if any(r.startswith("insolubles ") for r in b["reasons"])
            ]

        starved = _wait("batch off spec for insolubles", insolubles_off_spec, proc)
        assert _wait("off-spec alarm", lambda: _alarms(client, "purity"), proc)
        spc = [a for a in _alarms(client, "spc") if a["code"].endswith("/insolubles_pct")]
        assert spc, _alarms(client, "spc")
    finally:
        _stop(proc)
    # The SPC alarm came no later than the first batch that went off spec for insolubles.
    first_off = min(_utc(b["created_at"]) for b in starved)
    assert _utc(spc[0]["raised_at"]) <= first_off, (spc[0], starved[0])
    rep = _report(cfg, tmp_path)
    starved = [b for b in rep["batches"] if not b["in_spec"]]
    held = next(b for b in starved if b["product"] != "MnSO4·H2O")
    assert _refused(cfg, tmp_path, held["id"]).startswith(f"error: batch {held['id']} is on hold (")
    good = next(b for b in rep["batches"] if b["product"] == "NiSO4·6H2O" and b["in_spec"])
    res = _plant(cfg, tmp_path, "purity", "certificate", good["id"], "--json")
    assert res.returncode == 0, res.stderr
    cert = json.loads(res.stdout)
    key = _plant(cfg, tmp_path, "certificates", "public-key")
    assert key.returncode == 0, key.stderr
    token = jws.deserialize_compact(cert["jws"], ECKey.import_key(json.loads(key.stdout)))
    assert json.loads(token.payload) == json.loads(canonical(cert))
    origin = cert["recovered_metal"]["origin"]
    assert origin["post_consumer_pct"] > 50 and origin["manufacturing_waste_pct"] > 0
