"""Plant events reach a real Mosquitto broker; a broker outage never stops the publisher."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from mqttrig import PERSISTENT, Broker, Listener, need_mosquitto, retained_state
from prometheus_client import generate_latest

from plant.config import ConfigError, MqttSection, PlantConfig, validate
from plant.events import Event, EventBus
from plant.metrics import REGISTRY
from plant.mqtt import MqttBridge, topic_for


async def connected(bridge: MqttBridge, timeout: float = 15.0) -> bool:
    """Wait until the bridge is connected (or the timeout); whether it is."""
    deadline = time.monotonic() + timeout
    while not bridge.connected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return bridge.connected


def metric(name: str, line: str) -> float | None:
    """A sample of the plant's Prometheus registry, as /metrics shows it."""
    for row in generate_latest(REGISTRY).decode().splitlines():
        if row.startswith(f'{name}{{line="{line}"}} '):
            return float(row.split()[-1])
    return None


def test_topic_scheme() -> None:
    assert topic_for("site1", Event("cell", "L2", {})) == "plant/site1/L2/cells"
    assert topic_for("site1", Event("alarm", "L1", {})) == "plant/site1/L1/alarms"
    assert topic_for("site1", Event("counts", "L1", {})) == "plant/site1/L1/status"


def test_config_errors_name_the_key() -> None:
    path = Path("plant.toml")
    cases = {
        "mqtt.queue_max": {"queue_max": 0},
        "mqtt.port": {"port": 70000},
        "mqtt.tls": {"tls": True},
        "password is set but username is not": {"password": "secret"},
    }
    for expected, section in cases.items():
        with pytest.raises(ConfigError, match=expected):
            validate(path, {"mqtt": section}, PlantConfig)
    ok = validate(path, {"mqtt": {"username": "plant", "password": "x"}}, PlantConfig)
    assert ok.mqtt.username == "plant" and ok.mqtt.queue_max == 10_000


def test_events_published_and_outage_survived(tmp_path: Path) -> None:
    """Events go out; during an outage they wait in the queue (the loop is not held up) and
    reach the broker once it is back, in order; birth and clean stop are retained states."""
    need_mosquitto()
    # The subscriber's session survives the broker's restart, so that it misses nothing the
    # bridge publishes before the subscriber is back.
    broker = Broker(tmp_path, PERSISTENT.format(work=tmp_path))
    broker.start()
    listener = Listener(broker.port, session="historian")
    bus = EventBus()

    async def scenario() -> MqttBridge:
        bridge = MqttBridge(bus, MqttSection(port=broker.port), site="demo", line="L1")
        await bridge.start()
        assert await connected(bridge)
        bus.publish(Event("cell", "L1", {"seq": 1, "route": "hydromet"}))
        bus.publish(Event("alarm", "L1", {"code": "unreachable"}))
        assert await asyncio.to_thread(listener.wait, lambda: len(listener.events()) == 2)
        await asyncio.to_thread(broker.stop)
        while bridge.connected:
            await asyncio.sleep(0.05)
        for i in range(100):  # publishing neither raises nor waits for the broker
            bus.publish(Event("cell", "L1", {"seq": 100 + i}))
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)
        assert metric("plant_mqtt_queued", "L1") == 100
        assert metric("plant_mqtt_connected", "L1") == 0
        await asyncio.to_thread(broker.start)
        assert await connected(bridge)
        assert await asyncio.to_thread(listener.wait, lambda: len(listener.events()) == 102)
        await bridge.stop()
        return bridge

    try:
        bridge = asyncio.run(scenario())
        last = retained_state(broker.port, "plant/demo/L1/state")
    finally:
        broker.stop()
    listener.close()
    events = listener.events()
    assert [t for t, _ in events[:2]] == ["plant/demo/L1/cells", "plant/demo/L1/alarms"]
    assert events[0][1]["data"] == {"seq": 1, "route": "hydromet"}
    assert [p["data"]["seq"] for _, p in events[2:]] == list(range(100, 200))
    assert bridge.published == 102 and bridge.dropped == 0
    states = [s["state"] for s in listener.states("plant/demo/L1/state")]
    assert states[0] == "online" and states[-1] == "offline"
    assert last is not None and last["state"] == "offline" and last["ts"] is not None
    assert last["client_id"] == "plant-demo-L1"


def test_events_after_broker_restart_arrive(broker: Broker) -> None:
    async def scenario() -> MqttBridge:
        bus = EventBus()
        bridge = MqttBridge(bus, MqttSection(port=broker.port), site="demo", line="L1")
        await bridge.start()
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(broker.start)
        listener = Listener(broker.port)
        assert await connected(bridge)
        await asyncio.sleep(0.3)
        bus.publish(Event("alarm", "L1", {"code": "back"}))
        await asyncio.to_thread(listener.wait, lambda: len(listener.events()) == 1)
        await bridge.stop()
        listener.close()
        assert [m[1]["data"] for m in listener.events()] == [{"code": "back"}]
        return bridge

    bridge = asyncio.run(scenario())
    assert bridge.published == 1


def test_full_queue_drops_and_counts() -> None:
    """With no broker, events beyond queue_max are dropped and counted; the held ones go out
    when the broker comes."""
    need_mosquitto()
    broker = Broker()  # not started yet
    listener: Listener | None = None

    async def scenario() -> MqttBridge:
        nonlocal listener
        bus = EventBus()
        settings = MqttSection(port=broker.port, queue_max=10)
        bridge = MqttBridge(bus, settings, site="demo", line="Lq")
        await bridge.start()
        for i in range(25):
            bus.publish(Event("cell", "Lq", {"seq": i}))
            await asyncio.sleep(0.01)
        assert bridge.dropped == 15
        assert metric("plant_mqtt_dropped_total", "Lq") == bridge.dropped
        await asyncio.to_thread(broker.start)
        listener = Listener(broker.port)
        assert await connected(bridge)
        await asyncio.to_thread(listener.wait, lambda: len(listener.events()) == 10)
        await bridge.stop()
        return bridge

    try:
        bridge = asyncio.run(scenario())
    finally:
        broker.stop()
    assert listener is not None
    listener.close()
    assert [p["data"]["seq"] for _, p in listener.events()] == list(range(10))
    assert bridge.published == 10 and metric("plant_mqtt_published_total", "Lq") == 10


def test_two_lines_of_one_site_stay_connected(broker: Broker) -> None:
    """Two controllers of one site (lines L1, L2) share the broker without knocking each other
    off: each connects once, stays connected and publishes."""
    listener = Listener(broker.port)

    async def scenario() -> None:
        buses = {line: EventBus() for line in ("L1", "L2")}
        bridges = [
            MqttBridge(bus, MqttSection(port=broker.port), site="demo", line=line)
            for line, bus in buses.items()
        ]
        for b in bridges:
            await b.start()
        for b in bridges:
            assert await connected(b)
        for i in range(30):  # 3 s: the broker would have thrown one out by now
            for line, bus in buses.items():
                bus.publish(Event("cell", line, {"seq": i}))
            assert all(b.connected for b in bridges)
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(listener.wait, lambda: len(listener.events()) == 60)
        for b in bridges:
            await b.stop()

    asyncio.run(scenario())
    listener.close()
    for line in ("L1", "L2"):
        seqs = [p["data"]["seq"] for t, p in listener.events() if t == f"plant/demo/{line}/cells"]
        assert seqs == list(range(30))
        births = [s for s in listener.states(f"plant/demo/{line}/state") if s["state"] == "online"]
        assert len(births) == 1 and births[0]["client_id"] == f"plant-demo-{line}"


def test_username_and_password(tmp_path: Path) -> None:
    """A broker that requires a login: right credentials publish, wrong ones never connect."""
    need_mosquitto()
    passwd = tmp_path / "passwd"
    passwd.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "plant", "s3cret"], check=True)
    broker = Broker(tmp_path, f"allow_anonymous false\npassword_file {passwd}\n")
    broker.start()

    async def scenario() -> None:
        bus = EventBus()
        good = MqttSection(port=broker.port, username="plant", password="s3cret")
        bad = MqttSection(port=broker.port, username="plant", password="wrong")
        ok = MqttBridge(bus, good, site="demo", line="La")
        refused = MqttBridge(bus, bad, site="demo", line="Lb")
        await ok.start()
        await refused.start()
        assert await connected(ok)
        bus.publish(Event("alarm", "La", {"code": "x"}))
        await asyncio.sleep(1.0)
        assert not refused.connected
        await ok.stop()
        await refused.stop()
        assert ok.published == 1 and refused.published == 0

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
