"""A private Mosquitto broker and a plain MQTT subscriber, for the MQTT tests."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from plant.commands.bench_harness import free_port_block

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def need_mosquitto() -> None:
    """Skip (or fail, where services are required) when Mosquitto is not installed."""
    if not os.path.exists(MOSQUITTO):
        if os.environ.get("PLANT_REQUIRE_SERVICES"):
            raise RuntimeError("mosquitto is required here but not installed")
        pytest.skip("mosquitto not installed (Debian package mosquitto; .ci/run installs it)")


class Broker:
    """A private Mosquitto on a free loopback port that tests can stop and restart; with
    `conf`, a mosquitto.conf body (its `listener` line is added here)."""

    def __init__(self, work: Path | None = None, conf: str | None = None) -> None:
        self.port = free_port_block(1)
        self.args = [MOSQUITTO, "-p", str(self.port)]
        if conf is not None:
            assert work is not None
            path = work / "mosquitto.conf"
            # as root, mosquitto would switch to user mosquitto, who cannot read a test's files
            user = getpass.getuser()
            path.write_text(f"listener {self.port} 127.0.0.1\nuser {user}\n{conf}")
            self.args = [MOSQUITTO, "-c", str(path)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stderr=subprocess.DEVNULL)
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


# mosquitto.conf of a broker that keeps sessions (and their messages) across a restart
PERSISTENT = (
    "allow_anonymous true\n"
    "persistence true\n"
    "persistence_location {work}/\n"
    "queue_qos0_messages true\n"
)


class Listener:
    """A plain MQTT subscriber, as another plant system would be; keeps (topic, payload,
    retained) of every message on `plant/#`."""

    def __init__(self, port: int, session: str | None = None) -> None:
        """`session`: a persistent session of that client id (a broker with persistence keeps
        its subscription and messages across a restart)."""
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=session or "",
            clean_session=session is None,
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe("plant/#", qos=1)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((m.topic, json.loads(m.payload), bool(m.retain)))

    def events(self, kind: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(topic, payload) of the event messages (not `state`), of one kind if given."""
        with self._lock:
            return [
                (t, p)
                for t, p, _r in self.messages
                if not t.endswith("/state") and (kind is None or t.endswith(f"/{kind}"))
            ]

    def states(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return [p for t, p, _r in self.messages if t == topic]

    def wait(self, check: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Until `check()` holds or the timeout; whether it holds."""
        deadline = time.monotonic() + timeout
        while not check() and time.monotonic() < deadline:
            time.sleep(0.05)
        return check()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_state(port: int, topic: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The retained message on `topic` as a new subscriber gets it (None if there is none)."""
    got: list[dict[str, Any]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, m: got.append(json.loads(m.payload)) if m.retain else None
    client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else None
