"""In-process publish/subscribe of plant events (cell routed, alarm, batch assayed, health).

The line engine publishes; the HMI's WebSocket and the MQTT bridge subscribe. Publishing never
blocks the line: a slow subscriber loses its oldest events, not the controller's time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One plant event; `topic` is one of cell, alarm, batch, lot, health, counts."""

    topic: str
    line: str
    data: dict[str, Any]
    ts: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "line": self.line, "ts": self.ts, "data": self.data}


class EventBus:
    """Fan-out to bounded per-subscriber queues on one asyncio loop."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()
        self._queue_size = queue_size
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self) -> asyncio.Queue[Event]:
        self._loop = asyncio.get_running_loop()
        q: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self._queues.discard(q)

    def publish(self, event: Event) -> None:
        """Deliver to every subscriber; call from the loop's thread."""
        for q in list(self._queues):
            if q.full():
                q.get_nowait()  # drop the oldest for this slow subscriber
            q.put_nowait(event)

    def publish_threadsafe(self, event: Event) -> None:
        """Deliver from another thread (e.g. a worker) onto the subscribers' loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.publish, event)
