"""DP5 heads in the running plant: `plant run --simulate` measures on simulated Amptek DP5
heads by default, loses no cell, and raises detector-health alarms from the heads' status."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from linerig import (
    add_user,
    answers,
    config_copy,
    each_cell_once,
    run_cells,
    start_run,
    stop_run,
    until,
)
from sqlalchemy import func, select

from drivers.dp5 import Dp5Client
from plant.store import CellRow, CellSpectrumRow, Store, upgrade

pytestmark = pytest.mark.e2e

PASSWORD = "dp5-engineer-pw-1"


def _plant_toml(cfg: Path) -> dict[str, Any]:
    return tomllib.loads((cfg / "plant.toml").read_text())


def test_2000_cells_at_100_per_s_on_dp5_heads_every_cell_final_store_equals_plc(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp_path, db_url=url, heads=8)
    assert _plant_toml(cfg)["xrf"]["kind"] == "dp5"  # the shipped config/plant.toml's choice
    n = 2000
    summary = run_cells(cfg, tmp_path, n, 100, timeout=900)
    assert summary["cells"] == n and summary["final"] == n
    assert summary["routes"] == summary["plc_counters"]
    assert summary["misrouted"] <= n // 100  # each head measured the cell in front of it
    store = Store(url)
    try:
        each_cell_once(store, n, summary["plc_counters"])
        with store.session() as s:
            from_dp5 = s.scalar(
                select(func.count(CellSpectrumRow.cell_id)).where(
                    CellSpectrumRow.instrument.like("Amptek %")
                )
            )
            no_xrf = s.scalar(select(func.count(CellRow.id)).where(CellRow.reason.like("%XRF%")))
        assert from_dp5 is not None and from_dp5 >= n * 0.99
        assert (no_xrf or 0) <= n // 100
    finally:
        store.close()


def test_detector_high_voltage_off_is_an_alarm_shown_per_head_and_clears(tmp_path: Path) -> None:
    """An engineer switches head 1's detector bias off (HVSE=OFF, as with Amptek's DppMCA): the
    plant raises xrf/xrf1_hv_off, shows the problem under xrf1 in /api/lines; bias back on, the
    alarm returns to normal."""
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp_path, db_url=url, heads=2)
    data = _plant_toml(cfg)
    add_user(cfg, tmp_path, "erin", "engineer", PASSWORD)
    proc = start_run(cfg, tmp_path, "--rate", "10")
    head1 = ("127.0.0.1", data["sim"]["xrf_port"])

    def set_hv(value: str) -> None:
        async def send() -> None:
            async with Dp5Client(*head1, name="dppmca") as dppmca:
                await dppmca.configure({"HVSE": value})

        asyncio.run(send())

    try:
        base = f"http://127.0.0.1:{data['hmi']['port']}"
        until("HMI", lambda: answers(f"{base}/api/health"), proc, timeout=180)
        client = httpx.Client(base_url=base, timeout=10)
        token = client.post("/api/login", json={"name": "erin", "password": PASSWORD})
        assert token.status_code == 200, token.text
        client.headers["Authorization"] = f"Bearer {token.json()['token']}"

        def head(name: str) -> dict[str, Any] | None:
            lines = client.get("/api/lines").json()
            heads = lines[0]["extra"].get("xrf_heads", {}) if lines else {}
            found = heads.get(name)
            return found if found and found.get("status") else None

        shown = until("xrf1's detector status", lambda: head("xrf1"), proc)
        assert shown["link"] == "connected" and shown["problems"] == {}
        assert shown["status"]["hv_v"] < -20 and shown["status"]["device"] == "PX5"

        set_hv("OFF")
        shown = until("HV off on xrf1", lambda: (h := head("xrf1")) and h["problems"] and h, proc)
        assert shown["problems"] == {"hv_off": "detector high voltage off (0 V)"}
        assert head("xrf2") is not None and head("xrf2")["problems"] == {}  # type: ignore[index]

        def standing(code: str) -> dict[str, Any] | None:
            rows = client.get("/api/alarms", params={"source": "xrf"}).json()["alarms"]
            return next((a for a in rows if a["code"] == code), None)

        raised = until("xrf1_hv_off alarm", lambda: standing("xrf1_hv_off"), proc)
        assert raised["state"] == "active_unacked" and "high voltage off" in raised["message"]

        set_hv("-130")
        until("HV back on xrf1", lambda: (h := head("xrf1")) and not h["problems"], proc)
        back = until(
            "alarm back to normal",
            lambda: (a := standing("xrf1_hv_off")) and a["state"] == "rtn_unacked" and a,
            proc,
        )
        assert back["id"] == raised["id"]
    finally:
        stop_run(proc, tmp_path)
