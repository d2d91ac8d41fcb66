"""WS /ws: plant events pushed to browsers as they happen, plus a store snapshot every second.

Events come from the in-process `EventBus` when the line engine runs in this process; the
snapshot comes from the store, so an HMI process on another machine still shows a moving line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from hmi.auth import principal_of
from hmi.context import HmiContext
from plant.alarms import ANNUNCIATED_STATES, alarm_json, search_alarms
from plant.domain import AlarmState
from plant.status import read_statuses

SNAPSHOT_PERIOD_S = 1.0
SESSION_CHECK_S = 0.5  # a logout or user change ends the socket within a second
BANNER_ALARMS = 5


def snapshot(c: HmiContext) -> dict[str, Any]:
    """Lines, standing alarms (most urgent first) and flood state, read from the store."""
    standing = search_alarms(c.store, states=ANNUNCIATED_STATES, limit=500)
    order = {"critical": 0, "high": 1, "medium": 2, "low": 3, "diagnostic": 4}
    standing.sort(key=lambda a: (a.state != AlarmState.active_unacked, order.get(a.priority, 9)))
    return {
        "lines": [st.as_json() for st in read_statuses(c.store)],
        "line_limits": c.line_limits(),
        "alarms": {
            "standing": len(standing),
            "unacked": sum(a.state != AlarmState.active_acked for a in standing),
            "by_priority": dict(Counter(a.priority for a in standing)),
            "top": [alarm_json(a) for a in standing[:BANNER_ALARMS]],
        },
        "flood": c.flood().as_json(),
    }


def _same_origin(ws: WebSocket) -> bool:
    """Refuse cross-site WebSocket hijacking: a browser's Origin must match the Host."""
    origin = ws.headers.get("origin")
    if origin is None:  # not a browser (bench, scripts): the token or cookie is the check
        return True
    return urlsplit(origin).netloc == ws.headers.get("host", "")


async def endpoint(ws: WebSocket) -> None:
    """Authenticate (cookie or bearer), then stream events and snapshots until disconnect."""
    c: HmiContext = ws.app.state.hmi
    if not _same_origin(ws):
        await ws.close(code=1008, reason="cross-origin WebSocket refused")
        return
    who = await asyncio.to_thread(principal_of, ws)
    if who is None:
        await ws.close(code=1008, reason="login required")
        return
    await ws.accept()
    queue = c.bus.subscribe() if c.bus is not None else None
    tasks = [asyncio.create_task(_snapshots(ws, c)), asyncio.create_task(_watch_session(ws))]
    if queue is not None:
        tasks.append(asyncio.create_task(_forward(ws, queue)))
    tasks.append(asyncio.create_task(_drain(ws)))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if queue is not None and c.bus is not None:
            c.bus.unsubscribe(queue)
        if ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close()


async def _forward(ws: WebSocket, queue: asyncio.Queue[Any]) -> None:
    while True:
        event = await queue.get()
        await ws.send_json(event.as_json())


async def _snapshots(ws: WebSocket, c: HmiContext) -> None:
    while True:
        data = await asyncio.to_thread(snapshot, c)
        await ws.send_json({"topic": "snapshot", "line": "", "ts": time.time(), "data": data})
        await asyncio.sleep(SNAPSHOT_PERIOD_S)


async def _watch_session(ws: WebSocket) -> None:
    """Close the socket once its session has ended (logout, password, role or login state
    changed, expiry), also when another process (`plant users`) ended it in the store."""
    while True:
        await asyncio.sleep(SESSION_CHECK_S)
        if await asyncio.to_thread(principal_of, ws) is None:
            await ws.close(code=1008, reason="session ended")
            return


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) client messages so a closed socket ends the session promptly."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()
