"""Forged passports on the running line: `plant run --simulate` signs each simulated passport
(vc+jwt) and forges a share of them; a steel-can cell carrying a forged one goes to quarantine
with the reason and a passport alarm, both seen through the HTTP API (docs/passport.md)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from linerig import add_user, answers, config_copy, start_run, stop_run, until

from plant.commands.bench_harness import toml_text
from plant.store import upgrade

pytestmark = pytest.mark.e2e

PASSWORD = "passport-engineer-pw-1"


def test_a_forged_passport_on_a_steel_can_is_quarantined_with_an_alarm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp_path, db_url=url, heads=2)
    data = tomllib.loads((cfg / "plant.toml").read_text())
    data["sim"]["forged_passport_share"] = 0.3
    (cfg / "plant.toml").write_text(toml_text(data))
    add_user(cfg, tmp_path, "erin", "engineer", PASSWORD)
    proc = start_run(cfg, tmp_path, "--rate", "20")
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{data['hmi']['port']}", timeout=10)
        until("HMI", lambda: answers(f"{client.base_url}/api/health"), proc, 180)
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

        cell = until("forged passport on a steel-can cell", forged_can, proc, 180)
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

        assert until("steel-can cell routed on a verified passport", genuine_can, proc, 180)

        def alarm() -> dict[str, Any] | None:
            got = client.get("/api/alarms", params={"view": "history", "source": "passport"})
            assert got.status_code == 200, got.text
            return next(
                (a for a in got.json()["alarms"] if a["code"] == "passport_invalid_signature"),
                None,
            )

        raised = until("passport alarm", alarm, proc, 60)
        assert "passport_invalid_signature" in raised["message"]
        assert "signature does not verify" in raised["message"]
    finally:
        stop_run(proc, tmp_path)
