"""Forged passports on the running line: `plant run --simulate` signs each simulated passport
(vc+jwt) and forges a share of them; a steel-can cell carrying a forged one goes to quarantine
with the reason and a passport alarm, both seen through the HTTP API (docs/passport.md)."""

from __future__ import annotations

import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from linerig import config_copy, plant_cmd, plant_env

from plant.commands.bench_harness import toml_text
from plant.store import upgrade

pytestmark = pytest.mark.e2e

PASSWORD = "passport-engineer-pw-1"


def _wait(what: str, check: Any, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> Any:
    """Poll `check()` until it returns something truthy; the plant must keep running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"plant run exited early while waiting for {what}"
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout} s")


def test_a_forged_passport_on_a_steel_can_is_quarantined_with_an_alarm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp_path, db_url=url, heads=2)
    data = tomllib.loads((cfg / "plant.toml").read_text())
    data["sim"]["forged_passport_share"] = 0.3
    (cfg / "plant.toml").write_text(toml_text(data))
    added = subprocess.run(
        plant_cmd(cfg, "users", "add", "erin", "--role", "engineer"),
        input=f"{PASSWORD}\n{PASSWORD}\n",
        capture_output=True,
        text=True,
        env=plant_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    log = (tmp_path / "plant-run.log").open("wb")
    proc = subprocess.Popen(
        plant_cmd(cfg, "run", "--simulate", "--rate", "20"),
        cwd=tmp_path,
        env=plant_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{data['hmi']['port']}", timeout=10)
        _wait("HMI", lambda: client.get("/api/health").status_code == 200, proc)
        token = client.post("/api/login", json={"name": "erin", "password": PASSWORD})
        assert token.status_code == 200, token.text
        client.headers["Authorization"] = f"Bearer {token.json()['token']}"

        def cells() -> list[dict[str, Any]]:
            got = client.get("/api/cells", params={"limit": 500})
            assert got.status_code == 200, got.text
            return list(got.json()["cells"])

        def forged_can() -> dict[str, Any] | None:
            return next(
                (
                    c
                    for c in cells()
                    if str(c["reason"]).startswith("passport_invalid_signature: ")
                    and "steel can" in str(c["reason"])
                ),
                None,
            )

        cell = _wait("forged passport on a steel-can cell", forged_can, proc)
        assert cell["route"] == "quarantine" and cell["passport_id"]
        assert "signature does not verify" in cell["reason"]
        shown = client.get(f"/api/cells/{cell['id']}").json()
        assert shown["reason"] == cell["reason"]
        assert shown["passport"]["authenticity"] == "invalid_signature"  # the HMI cell page

        # Steel cans with genuine (verified) passports still route on the passport alone.
        def genuine_can() -> dict[str, Any] | None:
            return next(
                (
                    c
                    for c in cells()
                    if c["decision_source"] == "passport"
                    and c["route"] in ("hydromet", "black_mass")
                    and "steel can" in str(c["reason"])
                ),
                None,
            )

        assert _wait("steel-can cell routed on a verified passport", genuine_can, proc)

        def alarm() -> dict[str, Any] | None:
            got = client.get("/api/alarms", params={"view": "history", "source": "passport"})
            assert got.status_code == 200, got.text
            return next(
                (a for a in got.json()["alarms"] if a["code"] == "passport_invalid_signature"),
                None,
            )

        raised = _wait("passport alarm", alarm, proc, timeout=60)
        assert "passport_invalid_signature" in raised["message"]
        assert "signature does not verify" in raised["message"]
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
