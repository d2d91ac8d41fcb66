"""Publish plant events on MQTT for other plant systems (MES, ERP, historians, SCADA).

Topics: `plant/<site>/<line>/<kind>` with kind one of cells, alarms, lots, batches, status, and
the retained `plant/<site>/<line>/state` (online on every connect, offline by last will or on a
clean stop). The event loop only hands events to a bounded queue; a sender thread publishes them
while the broker is connected, so a broker outage never slows the line: events wait in the queue
and, once it is full, are dropped and counted (docs/mqtt.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator

import paho.mqtt.client as mqtt

from plant import __version__
from plant.config import MqttSection
from plant.events import Event, EventBus
from plant.metrics import MQTT_CONNECTED, MQTT_DROPPED, MQTT_PUBLISHED, MQTT_QUEUED

log = logging.getLogger(__name__)

KIND_BY_TOPIC = {
    "cell": "cells",
    "alarm": "alarms",
    "lot": "lots",
    "batch": "batches",
    "counts": "status",
    "health": "status",
}
# Events another system must not miss go with QoS 1; the rest (one a cell, one a second) QoS 0.
QOS1_TOPICS = ("alarm", "batch", "lot")
STOP_DRAIN_S = 5.0  # a clean stop publishes what is queued for at most this long


def topic_for(site: str, event: Event) -> str:
    """The MQTT topic of an event (documented in docs/mqtt.md)."""
    return f"plant/{site}/{event.line or '-'}/{KIND_BY_TOPIC.get(event.topic, event.topic)}"


def state_payload(state: str, ts: float | None, client_id: str) -> str:
    """The retained `state` message: online (birth), offline (last will, clean stop)."""
    return json.dumps({"state": state, "ts": ts, "version": __version__, "client_id": client_id})


class MqttBridge:
    """Forwards EventBus events of one line to an MQTT broker, without ever blocking the loop."""

    def __init__(self, bus: EventBus, settings: MqttSection, *, site: str, line: str) -> None:
        self.bus = bus
        self.site = site
        self.line = line
        self.host = settings.host
        self.port = settings.port
        self.client_id = f"plant-{site}-{line}"
        self.state_topic = f"plant/{site}/{line}/state"
        self._queue: queue.Queue[Event] = queue.Queue(settings.queue_max)
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self.published = 0
        self.dropped = 0
        self._drops = threading.Lock()  # the loop and the sender thread both drop
        self._published = MQTT_PUBLISHED.labels(line)
        self._dropped = MQTT_DROPPED.labels(line)
        self._gauge = MQTT_CONNECTED.labels(line)
        self._gauge.set(0)
        self._held: Event | None = None  # taken from the queue by the sender, not yet sent
        MQTT_QUEUED.labels(line).set_function(self.waiting)
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True
        )
        if settings.username is not None:
            self._client.username_pw_set(settings.username, settings.password)
        # The broker publishes this if the controller vanishes (killed, network lost).
        self._client.will_set(
            self.state_topic, state_payload("offline", None, self.client_id), qos=1, retain=True
        )
        self._client.max_queued_messages_set(settings.queue_max)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._task: asyncio.Task[None] | None = None
        self._sender = threading.Thread(target=self._send, name=f"mqtt-{line}", daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def waiting(self) -> int:
        """Events not yet handed to the broker connection."""
        return self._queue.qsize() + (self._held is not None)

    def _on_connect(self, c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        if isinstance(rc, mqtt.ReasonCode) and rc.is_failure:
            log.error("MQTT broker %s:%s refused %s: %s", self.host, self.port, self.client_id, rc)
            return
        c.publish(
            self.state_topic,
            state_payload("online", time.time(), self.client_id),
            qos=1,
            retain=True,
        )
        log.info("MQTT broker %s:%s connected as %s", self.host, self.port, self.client_id)
        self._connected.set()
        self._gauge.set(1)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if self._connected.is_set() and not self._stopping.is_set():
            log.warning(
                "MQTT broker %s:%s lost (%s); events queue meanwhile", self.host, self.port, rc
            )
        self._connected.clear()
        self._gauge.set(0)

    async def start(self) -> None:
        """Connect in the background and start forwarding; never fails on a missing broker."""
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self._sender.start()
        self._task = asyncio.create_task(self._forward(self.bus.subscribe()))

    async def _forward(self, q: asyncio.Queue[Event]) -> None:
        try:
            while True:
                self._offer(await q.get())
        finally:
            while not q.empty():  # what the line published before the stop still goes out
                self._offer(q.get_nowait())
            self.bus.unsubscribe(q)

    def _offer(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._drop(1)

    def _drop(self, n: int) -> None:
        with self._drops:
            self.dropped += n
        self._dropped.inc(n)

    def _send(self) -> None:
        """Sender thread: publish queued events while connected; wait out broker outages."""
        while True:
            if not self._connected.wait(0.2):
                if self._stopping.is_set():  # stopped during an outage: the rest is lost
                    self._drop((self._held is not None) + self._discard())
                    self._held = None
                    return
                continue
            if self._held is None:
                try:
                    self._held = self._queue.get(timeout=0.2)
                except queue.Empty:
                    if self._stopping.is_set():
                        return
                    continue
            event = self._held
            qos = 1 if event.topic in QOS1_TOPICS else 0
            info = self._client.publish(
                topic_for(self.site, event), json.dumps(event.as_json()), qos
            )
            if info.rc == mqtt.MQTT_ERR_NO_CONN:  # just lost: send it after the reconnect
                time.sleep(0.1)
                continue
            self._held = None
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.published += 1
                self._published.inc()
            else:
                self._drop(1)

    def _discard(self) -> int:
        n = 0
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
                n += 1
        return n

    def _close(self) -> None:
        """Drain, say offline (retained), disconnect: blocking, so run in a worker thread."""
        self._sender.join(STOP_DRAIN_S)
        if self._connected.is_set():
            info = self._client.publish(
                self.state_topic,
                state_payload("offline", time.time(), self.client_id),
                qos=1,
                retain=True,
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self._client.disconnect()  # a clean disconnect: the broker discards the last will
        self._client.loop_stop()
        self._connected.clear()
        self._gauge.set(0)

    async def stop(self) -> None:
        """Publish what is queued (for up to STOP_DRAIN_S), then go offline."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._stopping.set()
        await asyncio.to_thread(self._close)


@contextlib.asynccontextmanager
async def publishing(
    bus: EventBus, settings: MqttSection, *, site: str, line: str
) -> AsyncIterator[MqttBridge]:
    """The line's events on the broker for the duration of the block (`plant run`)."""
    bridge = MqttBridge(bus, settings, site=site, line=line)
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.stop()
