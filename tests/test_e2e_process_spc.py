"""SPC on process variables in the running plant: `plant run --simulate` charts the leach pH (the
PLC's, recorded by the controller) and the impurity-removal pH (the hydromet child's loop) from
the historian; a setpoint moved through the API shifts them, and the `spc` alarms reach the alarm
list (HTTP API) and the broker (MQTT)."""

from __future__ import annotations

import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from linerig import config_copy, plant_cmd, plant_env
from mqttrig import Broker, Listener
from test_e2e_purity import PASSWORD, _client, _setpoint, _stop, _wait

from plant.commands.bench_harness import toml_text
from plant.store import upgrade

pytestmark = pytest.mark.e2e


def _spc_alarms(client: httpx.Client, code: str) -> list[dict[str, Any]]:
    r = client.get("/api/alarms", params={"view": "history", "source": "spc", "limit": 1000})
    assert r.status_code == 200, r.text
    return [a for a in r.json()["alarms"] if a["code"] == code]


def test_a_shifted_process_variable_raises_an_spc_alarm_seen_in_the_api_and_on_mqtt(
    tmp_path: Path, broker: Broker
) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp_path, db_url=url, heads=2)
    data = tomllib.loads((cfg / "plant.toml").read_text())
    data["mqtt"] = {"enabled": True, "host": "127.0.0.1", "port": broker.port}
    # 2-s points, limits from the first 10: a test-sized chart.
    data["process_spc"] = {
        "tags": ["leach.ph", "leach.orp_mv", "purification.ph"],
        "subgroup_s": 2,
        "baseline_points": 10,
    }
    (cfg / "plant.toml").write_text(toml_text(data))
    added = subprocess.run(
        plant_cmd(cfg, "users", "add", "erin", "--role", "engineer"),
        input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True, env=plant_env(),
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listener = Listener(broker.port)
    log = (tmp_path / "plant-run.log").open("wb")
    proc = subprocess.Popen(
        plant_cmd(cfg, "run", "--simulate", "--cells", "40000", "--rate", "100"),
        cwd=tmp_path, env=plant_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def on_mqtt(code: str) -> list[dict[str, Any]]:
        return [
            p["data"]
            for _t, p in listener.events("alarms")
            if p["data"]["source"] == "spc" and p["data"]["code"] == code
        ]

    try:
        client = _client(cfg, proc)
        since = datetime.now(UTC).isoformat()

        def charted() -> bool:  # 10 baseline points and a few more, in the historian
            r = client.get("/api/trends", params={"tag": "leach.ph", "since": since})
            return r.status_code == 200 and len(r.json()["buckets"]) >= 30

        _wait("30 s of leach.ph", charted, proc)
        assert _spc_alarms(client, "process/leach.ph") == []
        # The chart's limits, for the Trends page: centred on the leach's pH 1.5.
        pen = client.get("/api/trends", params={"tag": "leach.ph", "line": "L1"}).json()
        spc = pen["spc"]
        assert spc["lcl"] < 1.5 < spc["ucl"] and abs(spc["center"] - 1.5) < 0.02, spc
        assert spc["subgroup_s"] == 2
        # The acid dosing falls behind: the leach pH goes to 1.8 (and its ORP with it).
        _setpoint(client, "leach.ph", 1.8)
        leach = _wait(
            "spc alarm on leach.ph", lambda: _spc_alarms(client, "process/leach.ph"), proc
        )
        assert leach[0]["priority"] == "medium" and leach[0]["line"] == "L1"
        assert "leach.ph" in leach[0]["message"] and "UCL" in leach[0]["message"]
        assert _wait("spc alarm on leach.orp_mv",
                     lambda: _spc_alarms(client, "process/leach.orp_mv"), proc)  # fmt: skip
        # The hydromet child's own loop, charted from the same historian.
        _setpoint(client, "impurity_removal.ph", 4.4)
        assert _wait("spc alarm on purification.ph",
                     lambda: _spc_alarms(client, "process/purification.ph"), proc)  # fmt: skip
        assert listener.wait(lambda: bool(on_mqtt("process/leach.ph")), timeout=30)
        assert listener.wait(lambda: bool(on_mqtt("process/purification.ph")), timeout=30)
        assert "leach.ph" in on_mqtt("process/leach.ph")[0]["message"]
    finally:
        _stop(proc)
        listener.close()
