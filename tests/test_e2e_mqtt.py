"""`plant run --simulate` with `[mqtt] enabled = true`, as a plant system on the broker sees it:
retained online/offline state, cells, status and alarms; a broker outage never stops the line."""

from __future__ import annotations

import os
import signal
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from linerig import config_copy, start_run
from mqttrig import Broker, Listener, retained_state

from plant.children import running_children
from plant.commands.bench_harness import toml_text
from plant.runner import final_count
from plant.store import Store, upgrade

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STATE = "plant/demo/L1/state"
CELL_FIELDS = {"id", "seq", "route", "chemistry", "confidence", "reason"}


def mqtt_line(tmp_path: Path, port: int, **mqtt: Any) -> tuple[Path, str]:
    """A config copy (free ports, own SQLite database) publishing on the broker at `port`."""
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    upgrade(url)
    cfg = config_copy(tmp_path, db_url=url, heads=2)
    data = tomllib.loads((cfg / "plant.toml").read_text())
    data["mqtt"] = {"enabled": True, "host": "127.0.0.1", "port": port, **mqtt}
    (cfg / "plant.toml").write_text(toml_text(data))
    return cfg, url


def metrics(cfg: Path) -> dict[str, float]:
    """The run's /metrics samples of line L1 (name -> value)."""
    port = tomllib.loads((cfg / "plant.toml").read_text())["hmi"]["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        row.split("{")[0]: float(row.split()[-1])
        for row in text.splitlines()
        if row.startswith("plant_mqtt_") and 'line="L1"' in row
    }


def wait(check: Any, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except OSError:  # the HMI not listening yet
            pass
        time.sleep(0.2)
    return bool(check())


def test_run_publishes_state_cells_status_alarms_and_last_will(
    tmp_path: Path, broker: Broker
) -> None:
    cfg, _url = mqtt_line(tmp_path, broker.port)
    listener = Listener(broker.port)
    ctl = start_run(cfg, tmp_path, "--rate", "50", "--no-hmi")
    try:
        assert listener.wait(lambda: len(listener.events("cells")) >= 5, timeout=180)
        online = retained_state(broker.port, STATE)
        assert online is not None and online["state"] == "online"
        assert online["client_id"] == "plant-demo-L1" and online["version"]
        assert online["ts"] > time.time() - 300

        topic, cell = listener.events("cells")[0]
        assert topic == "plant/demo/L1/cells"
        assert set(cell) == {"topic", "line", "ts", "data"} and cell["line"] == "L1"
        assert set(cell["data"]) == CELL_FIELDS
        assert cell["data"]["route"] in ("hydromet", "black_mass", "reject", "quarantine")

        assert listener.wait(lambda: len(listener.events("status")) >= 2)
        status = listener.events("status")[-1][1]["data"]
        assert status["line"] == "L1" and status["running"] is True
        assert sum(status["counts"].values()) > 0 and status["plc_health"] == "ok"

        # The simulated hardware dies: the controller raises "PLC unreachable".
        (sim,) = running_children(ctl.pid, "plant.cli")
        os.kill(sim, signal.SIGKILL)

        def plc_alarm() -> list[dict[str, Any]]:
            return [
                p["data"]
                for _t, p in listener.events("alarms")
                if p["data"]["source"] == "plc" and p["data"]["code"] == "unreachable"
            ]

        assert listener.wait(lambda: bool(plc_alarm()))
        alarm = plc_alarm()[0]
        assert alarm["priority"] == "critical" and "PLC unreachable" in alarm["message"]
    finally:
        ctl.send_signal(signal.SIGKILL)  # the controller vanishes: the broker sends its will
        ctl.wait(30)
    assert listener.wait(lambda: listener.states(STATE)[-1]["state"] == "offline", timeout=30)
    listener.close()
    will = retained_state(broker.port, STATE)
    assert will is not None and will["state"] == "offline" and will["ts"] is None
    assert will["client_id"] == "plant-demo-L1"


def test_broker_outage_never_stops_the_line(tmp_path: Path, broker: Broker) -> None:
    """The broker goes away mid-run: the line keeps sorting, events beyond the queue are
    dropped and counted in /metrics; the broker comes back on its port and events resume."""
    cfg, url = mqtt_line(tmp_path, broker.port, queue_max=50)
    listener = Listener(broker.port)
    ctl = start_run(cfg, tmp_path, "--rate", "50")
    store = Store(url)
    try:
        assert listener.wait(lambda: len(listener.events("cells")) >= 5, timeout=180)
        assert wait(lambda: metrics(cfg).get("plant_mqtt_connected") == 1)
        listener.close()
        broker.stop()
        at_outage = final_count(store, "L1")
        # 50 cells/s and a status a second fill 50 places in about a second
        assert wait(lambda: metrics(cfg).get("plant_mqtt_dropped_total", 0) > 0)
        during = metrics(cfg)
        assert during["plant_mqtt_connected"] == 0
        assert during["plant_mqtt_queued"] in (50, 51)  # queue_max, and one the sender held
        assert wait(lambda: final_count(store, "L1") > at_outage + 200)  # still sorting

        broker.start()
        listener = Listener(broker.port)
        at_restart = final_count(store, "L1")
        assert listener.wait(
            lambda: any(p["data"]["seq"] > at_restart for _t, p in listener.events("cells")),
            timeout=120,
        )
        after = metrics(cfg)
        assert after["plant_mqtt_connected"] == 1
        assert after["plant_mqtt_published_total"] > during["plant_mqtt_published_total"]
        assert retained_state(broker.port, STATE) == listener.states(STATE)[0]  # born again
        assert listener.states(STATE)[0]["state"] == "online"

        ctl.send_signal(signal.SIGINT)  # a clean stop says offline itself
        ctl.wait(120)
        log = (tmp_path / "run.log").read_text(errors="replace")
        if "did not stop within" in log:
            # Known, intermittent (session notes): the stop once hung after an outage; the run
            # now leaves after STOP_TIMEOUT_S and prints what it waited on. Kept visible here.
            pytest.xfail("stop overran after a broker outage: " + log[-4000:])
        assert ctl.returncode == 0, log[-3000:]
    finally:
        if ctl.poll() is None:
            ctl.kill()
        store.close()
    stopped = retained_state(broker.port, STATE)
    assert stopped is not None and stopped["state"] == "offline" and stopped["ts"] is not None
    listener.close()
