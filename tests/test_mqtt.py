"""Plant events reach a real Mosquitto broker; a broker outage never stops the publisher."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from plant.bench import free_port_block
from plant.events import Event, EventBus
from plant.mqtt import MqttBridge, topic_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """A private Mosquitto on an ephemeral loopback port that tests can stop and restart."""

    def __init__(self) -> None:
        self.port = free_port_block(1)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-p", str(self.port)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def broker() -> Iterator[Broker]:
    if not os.path.exists(MOSQUITTO):
        if os.environ.get("PLANT_REQUIRE_SERVICES"):
            raise RuntimeError("mosquitto is required here but not installed")
        pytest.skip("mosquitto not installed (Debian package mosquitto; .ci/run installs it)")
    b = Broker()
    b.start()
    yield b
    b.stop()


class Listener:
    """A plain MQTT subscriber, as another plant system would be."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, dict[str, object]]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda _c, _u, m: self.messages.append(
            (m.topic, json.loads(m.payload))
        )
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("plant/#", qos=1)
        self.client.loop_start()

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_topic_scheme() -> None:
    assert topic_for("site1", Event("cell", "L2", {})) == "plant/site1/L2/cells"
    assert topic_for("site1", Event("alarm", "L1", {})) == "plant/site1/L1/alarms"


def test_events_published_and_outage_survived(broker: Broker) -> None:
    listener = Listener(broker.port)
    time.sleep(0.3)

    async def scenario() -> int:
        bus = EventBus()
        bridge = MqttBridge(bus, site="demo", host="127.0.0.1", port=broker.port)
        await bridge.start()
        for _ in range(50):
            if bridge.connected:
                break
            await asyncio.sleep(0.1)
        bus.publish(Event("cell", "L1", {"seq": 1, "route": "hydromet"}))
        bus.publish(Event("alarm", "L1", {"code": "unreachable"}))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(listener.wait_for, 2)
        # broker goes away: publishing must neither raise nor block the loop
        await asyncio.to_thread(broker.stop)
        t0 = time.monotonic()
        for i in range(100):
            bus.publish(Event("cell", "L1", {"seq": 100 + i}))
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)
        loop_free = time.monotonic() - t0 < 5.0
        await asyncio.to_thread(broker.start)
        for _ in range(100):
            if bridge.connected:
                break
            await asyncio.sleep(0.1)
        bus.publish(Event("alarm", "L1", {"code": "after-restart"}))
        await asyncio.sleep(1.0)
        await bridge.stop()
        return int(loop_free)

    assert asyncio.run(scenario()) == 1
    topics = [t for t, _ in listener.messages]
    assert topics[:2] == ["plant/demo/L1/cells", "plant/demo/L1/alarms"]
    assert listener.messages[0][1]["data"] == {"seq": 1, "route": "hydromet"}
    listener.close()


def test_events_after_broker_restart_arrive(broker: Broker) -> None:
    async def scenario() -> MqttBridge:
        bus = EventBus()
        bridge = MqttBridge(bus, site="demo", host="127.0.0.1", port=broker.port)
        await bridge.start()
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(broker.start)
        listener = Listener(broker.port)
        for _ in range(150):
            if bridge.connected:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        bus.publish(Event("alarm", "L1", {"code": "back"}))
        await asyncio.to_thread(listener.wait_for, 1)
        await bridge.stop()
        listener.close()
        assert [m[1]["data"] for m in listener.messages] == [{"code": "back"}]
        return bridge

    bridge = asyncio.run(scenario())
    assert bridge.published == 1
