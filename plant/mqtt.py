"""Publish plant events on MQTT for other plant systems (MES, ERP, historians).

Topics: `plant/<site>/<line>/<kind>` with kind one of cells, alarms, lots, batches, status;
payloads are the event's JSON. The broker is optional: while it is down, paho keeps a bounded
queue and reconnects in its own thread; the line never waits for it and keeps its records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import paho.mqtt.client as mqtt

from plant.events import Event, EventBus

log = logging.getLogger(__name__)

KIND_BY_TOPIC = {
    "cell": "cells",
    "alarm": "alarms",
    "lot": "lots",
    "batch": "batches",
    "counts": "status",
    "health": "status",
}


def topic_for(site: str, event: Event) -> str:
    """The MQTT topic of an event (documented in docs/mqtt.md)."""
    return f"plant/{site}/{event.line or '-'}/{KIND_BY_TOPIC.get(event.topic, event.topic)}"


class MqttBridge:
    """Forwards EventBus events to an MQTT broker."""

    def __init__(
        self, bus: EventBus, *, site: str, host: str, port: int, max_queued: int = 10_000
    ) -> None:
        self.bus = bus
        self.site = site
        self.host = host
        self.port = port
        self.connected = False
        self.published = 0
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"plant-{site}", clean_session=True
        )
        self._client.max_queued_messages_set(max_queued)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._task: asyncio.Task[None] | None = None

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        if not self.connected:
            log.info("MQTT broker %s:%s connected (%s)", self.host, self.port, rc)
        self.connected = True

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if self.connected:
            log.warning(
                "MQTT broker %s:%s lost (%s); events queue meanwhile", self.host, self.port, rc
            )
        self.connected = False

    async def start(self) -> None:
        """Connect in the background and start forwarding; never fails on a missing broker."""
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self._task = asyncio.create_task(self._forward(self.bus.subscribe()))

    async def _forward(self, q: asyncio.Queue[Event]) -> None:
        try:
            while True:
                event = await q.get()
                qos = 1 if event.topic in ("alarm", "batch", "lot") else 0
                self._client.publish(topic_for(self.site, event), json.dumps(event.as_json()), qos)
                self.published += 1
        finally:
            self.bus.unsubscribe(q)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._client.disconnect()
        self._client.loop_stop()
