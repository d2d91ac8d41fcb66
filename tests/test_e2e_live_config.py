"""What an engineer changes on the HMI acts on the running plant: alarm limits raise alarms on
live process values, routing thresholds and routes apply to the cells decided after the change,
and the hydromet line's off-spec batches raise alarms. `plant run --simulate` runs as a process;
the test only uses its HTTP API, as a user would."""

from __future__ import annotations

import json
import subprocess
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from linerig import add_user, answers, config_copy, plant_cmd, plant_env, start_run, stop_run, until

from plant.store import upgrade

pytestmark = pytest.mark.e2e
PASSWORD = "engineer-password-1"


class Api:
    """An HTTP client of the plant's API, logged in once."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.token: str | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def plant(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Api, subprocess.Popen[bytes]]]:
    tmp = tmp_path_factory.mktemp("live")
    url = f"sqlite:///{tmp / 'plant.db'}"
    upgrade(url)
    # Small lots: hydromet campaigns, and so product batches, every few seconds.
    cfg = config_copy(tmp, db_url=url, heads=2, lot_close_kg=1.0)
    port = tomllib.loads((cfg / "plant.toml").read_text())["hmi"]["port"]
    add_user(cfg, tmp, "erin", "engineer", PASSWORD)
    proc = start_run(cfg, tmp, "--rate", "20")
    api = Api(f"http://127.0.0.1:{port}/api")
    try:
        until("the HMI answers", lambda: answers(f"{api.base}/health"), proc, 180)
        status, out = api.call("POST", "/login", {"name": "erin", "password": PASSWORD})
        assert status == 200, out
        api.token = out["token"]
        until("cells are decided", lambda: api.call("GET", "/cells?limit=1")[1]["cells"], proc, 120)
        yield api, proc
    finally:
        stop_run(proc, tmp)


def _alarms(api: Api, **query: str) -> list[dict[str, Any]]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    status, out = api.call("GET", f"/alarms?{qs}")
    assert status == 200, out
    alarms: list[dict[str, Any]] = out["alarms"]
    return alarms


def _applied(api: Api) -> list[dict[str, Any]]:
    """`routing.applied` audit entries, newest first: when the line took a version into use."""
    status, rows = api.call("GET", "/audit?action=routing.applied")
    assert status == 200, rows
    return list(rows)


def _applied_after(api: Api, last: list[dict[str, Any]]) -> datetime | None:
    """The time of a `routing.applied` entry newer than those in `last`."""
    seen = max((r["id"] for r in last), default=0)
    new = [r for r in _applied(api) if r["id"] > seen]
    return datetime.fromisoformat(new[0]["ts"]) if new else None


def _cells_after(api: Api, t: datetime) -> list[dict[str, Any]]:
    status, out = api.call("GET", "/cells?limit=500")
    assert status == 200, out
    t = t.replace(tzinfo=None)
    return [
        c
        for c in out["cells"]
        if c["route"] and datetime.fromisoformat(c["created_at"]).replace(tzinfo=None) > t
    ]


def test_alarm_limit_on_a_live_process_value_raises_and_clears(plant: Any) -> None:
    api, proc = plant
    limit = {"tag": "leach.ph", "kind": "high", "limit": 0.05, "deadband": 0, "on_delay_s": 0}
    status, out = api.call("PUT", "/alarm-limits", limit | {"priority": "high"})
    assert status == 200, out

    def raised() -> list[dict[str, Any]]:
        return [a for a in _alarms(api, source="process") if "leach.ph" in a["message"]]

    alarm = until("an alarm on leach.ph", raised, proc, 30)[0]
    assert alarm["code"] == "leach.ph.high" and alarm["priority"] == "high"
    assert alarm["state"] == "active_unacked"

    # Moved far above the value (about 1.5), the limit's alarm returns to normal.
    status, out = api.call("PUT", "/alarm-limits", limit | {"limit": 13.0, "priority": "high"})
    assert status == 200, out

    def normal() -> bool:
        rows = _alarms(api, view="history", source="process")
        return any(a["id"] == alarm["id"] and a["state"] == "rtn_unacked" for a in rows)

    until("the leach.ph alarm returns to normal", normal, proc, 30)

    # Limits on values the plant does not record, or that are not numbers, are refused.
    status, out = api.call("PUT", "/alarm-limits", limit | {"tag": "leach.phh"})
    assert status == 422 and "tag" in json.dumps(out), out
    body = json.dumps(limit | {"limit": float("nan")})  # Python's json writes NaN
    req = urllib.request.Request(
        api.base + "/alarm-limits",
        body.encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {api.token}"},
        method="PUT",
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 422
    detail = json.loads(err.value.read())["detail"]
    assert any(d["loc"][-1] == "limit" for d in detail), detail


def test_routing_threshold_applies_to_cells_decided_after_it(plant: Any) -> None:
    api, proc = plant
    before = _applied(api)
    status, out = api.call(
        "POST",
        "/routing/thresholds",
        {"name": "hydromet_min_confidence", "value": 1.0, "confirm": True},
    )
    assert status == 200, out
    assert out["applies"].startswith("live"), out
    applied = until(
        "routing.applied in the audit log", lambda: _applied_after(api, before), proc, 10
    )

    def forty_after() -> list[dict[str, Any]]:
        cells = _cells_after(api, applied)
        return cells if len(cells) >= 40 else []

    after = until("40 cells decided after the change", forty_after, proc, 60)
    assert [c for c in after if c["route"] == "hydromet"] == []
    assert any("hydromet threshold 1.00 admits no cell" in (c["reason"] or "") for c in after)


def test_lfp_routed_to_hydromet_raises_off_spec_alarms(plant: Any) -> None:
    api, proc = plant
    for name, value in (("hydromet_min_confidence", 0.5), ("black_mass_min_confidence", 0.5)):
        status, out = api.call(
            "POST", "/routing/thresholds", {"name": name, "value": value, "confirm": True}
        )
        assert status == 200, out
    status, out = api.call("POST", "/routing/routes", {"chemistry": "LFP", "route": "hydromet"})
    assert status == 428, out  # the HMI asks to confirm first
    before = _applied(api)
    status, out = api.call(
        "POST", "/routing/routes", {"chemistry": "LFP", "route": "hydromet", "confirm": True}
    )
    assert status == 200 and out["old"] == "black_mass", out
    applied = until(
        "routing.applied in the audit log", lambda: _applied_after(api, before), proc, 10
    )

    def lfp_to_hydromet() -> list[dict[str, Any]]:
        return [
            c
            for c in _cells_after(api, applied)
            if c["chemistry"] == "LFP" and c["route"] == "hydromet"
        ]

    until("LFP cells routed to hydromet", lfp_to_hydromet, proc, 60)

    def offspec() -> list[dict[str, Any]]:
        return _alarms(api, view="history", source="purity")

    alarms = until("an off-spec alarm", offspec, proc, 240)
    assert all(a["code"].startswith("offspec/") for a in alarms), alarms
    assert any(" off spec: " in a["message"] and "-HC" in a["message"] for a in alarms), alarms
    # One standing alarm per product that is off spec, not one per batch on hold (an alarm that
    # returned to normal and came back is a new occurrence in the history: docs/hmi.md).
    codes = [a["code"] for a in _alarms(api, view="standing", source="purity")]
    assert len(codes) == len(set(codes)), codes
    status, out = api.call("GET", "/purity/batches")
    on_hold = [b for b in out["batches"] if b["state"] == "on_hold"]
    assert on_hold, out
    assert {b["product"] for b in on_hold} >= {a["code"].split("/", 1)[1] for a in alarms}

    # SPC: every chart with a rule firing in the bad direction has its alarm in the report (the
    # step that charts a batch raises its alarms right after: one snapshot may fall between).
    def fired_and_alarmed() -> tuple[set[str], set[str]]:
        overview = api.call("GET", "/purity/overview")[1]
        fired = {
            f"{product}/{var}"
            for product, charts in overview["spc"].items()
            for var, chart in charts.items()
            if chart["violations"]
        }
        return fired, {a["code"] for a in overview["spc_alarms"]}

    until("an SPC rule firing on a chart", lambda: fired_and_alarmed()[0], proc, 240)
    snapshots: list[tuple[set[str], set[str]]] = []

    def each_firing_chart_alarmed() -> bool:
        snapshots.append(fired_and_alarmed())
        fired, alarmed = snapshots[-1]
        return fired <= alarmed

    try:
        until("every firing chart's alarm", each_firing_chart_alarmed, proc, 30)
    except AssertionError:
        raise AssertionError(f"charts firing without an alarm: {snapshots[-3:]}") from None


def test_a_setpoint_and_an_acknowledgement_from_the_hmi_act_on_the_plant(plant: Any) -> None:
    """Leach pH "Apply..." reaches the PLC's setpoint register; an acknowledgement changes the
    alarm's state for every HMI."""
    api, proc = plant
    cfg = Path(proc.args[proc.args.index("--config") + 1])
    status, out = api.call(
        "POST", "/setpoints", {"name": "leach.ph", "value": 1.8, "confirm": True}
    )
    assert status == 200, out

    def on_plc() -> bool:
        read = subprocess.run(
            plant_cmd(cfg, "plc", "read", "leach.ph_setpoint"),
            capture_output=True,
            text=True,
            env=plant_env(),
            timeout=30,
        )
        return read.returncode == 0 and "1.8" in read.stdout

    until("leach.ph_setpoint = 1.8 on the PLC", on_plc, proc, 30)
    shown = {s["name"]: s for s in api.call("GET", "/setpoints")[1]["setpoints"]}
    assert shown["leach.ph"]["applied_value"] == pytest.approx(1.8)

    limit = {"tag": "leach.temp_c", "kind": "low", "limit": 500.0, "priority": "low"}
    assert api.call("PUT", "/alarm-limits", limit)[0] == 200
    alarm = until(
        "an alarm on leach.temp_c",
        lambda: [a for a in _alarms(api, source="process") if a["code"] == "leach.temp_c.low"],
        proc,
        30,
    )[0]
    status, out = api.call("POST", f"/alarms/{alarm['id']}/ack", {"note": "seen"})
    assert status == 200 and out["state"] == "active_acked", out
    assert api.call("DELETE", "/alarm-limits/leach.temp_c/low")[0] == 200
