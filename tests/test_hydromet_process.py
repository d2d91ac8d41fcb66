"""The simulated hydromet runner in its own process: batches in the store, events on the bus,
and a child that died is started again at the next step."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hydromet_feed import add_lot, nmc_mix
from linerig import CONFIG
from sqlalchemy import func, select

from plant.commands.wiring import HYDROMET_CHILD
from plant.events import Event, EventBus
from plant.hydromet_process import HydrometProcess
from plant.store import BatchRow, LotRow, Store, upgrade

T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)


def _batches(store: Store) -> set[str]:
    with store.session() as s:
        return set(s.scalars(select(BatchRow.id)))


def _waiting(store: Store) -> int:
    with store.session() as s:
        q = select(func.count(LotRow.id)).where(LotRow.state == "closed")
        return int(s.scalar(q.where(LotRow.route == "hydromet")) or 0)


def test_steps_closed_lots_into_batches_and_forwards_its_events(store: Store) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    add_lot(store, "L1-HM-001", nmc_mix(100), closed_at=T0, seq0=1)

    async def scenario() -> list[Event]:
        bus = EventBus()
        events = bus.subscribe()
        hydromet = HydrometProcess(url, CONFIG, bus, line="L1", seed=3, child=HYDROMET_CHILD)
        await hydromet.start()
        try:
            await hydromet.step(T0 + timedelta(seconds=1), wait=True)
        finally:
            await hydromet.close()
        assert hydromet.steps_failed == 0
        return [events.get_nowait() for _ in range(events.qsize())]

    events = asyncio.run(scenario())
    made = _batches(store)
    assert made, "no product batch from a closed hydromet lot"
    assert _waiting(store) == 0
    announced = {e.data["id"] for e in events if e.topic == "batch"}
    assert announced == made
    assert {e.line for e in events} == {"L1"}


def test_a_child_that_died_is_started_again_at_the_next_step(sqlite_url: str) -> None:
    """The restart does not depend on the backend: SQLite only (the test above has both)."""
    upgrade(sqlite_url)
    store = Store(sqlite_url)
    url = sqlite_url

    async def scenario() -> tuple[int, int]:
        hydromet = HydrometProcess(url, CONFIG, None, line="L1", seed=3, child=HYDROMET_CHILD)
        await hydromet.start()
        try:
            assert hydromet.pid is not None
            first = hydromet.pid
            os.kill(first, signal.SIGKILL)
            while hydromet.running:
                await asyncio.sleep(0.05)
            add_lot(store, "L1-HM-002", nmc_mix(100), closed_at=T0, seq0=1)
            await hydromet.step(T0 + timedelta(seconds=1), wait=True)
            assert hydromet.pid is not None
            return first, hydromet.pid
        finally:
            await hydromet.close()

    try:
        first, second = asyncio.run(scenario())
        assert second != first
        assert _batches(store), "the restarted child did not turn the lot into batches"
        assert _waiting(store) == 0
    finally:
        store.close()


@pytest.mark.slow  # ~10 s: the child imports the hydromet model
def test_a_child_whose_parent_was_killed_exits_without_a_traceback(sqlite_url: str) -> None:
    """After SIGKILL of `plant run` the child's socket is reset (its "ready" was never read): it
    ends quietly, it does not print a traceback into the plant's log."""
    upgrade(sqlite_url)
    parent, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", HYDROMET_CHILD, str(child.fileno())],
        pass_fds=[child.fileno()],
        stderr=subprocess.PIPE,
        text=True,
    )
    child.close()
    init = {"url": sqlite_url, "config_dir": str(CONFIG), "line": "L1", "seed": 3}
    parent.sendall((json.dumps({"init": init}) + "\n").encode())
    parent.settimeout(60)
    assert parent.recv(1, socket.MSG_PEEK) == b"{"  # "ready" waits, unread, in our socket
    parent.close()  # with unread data: the child's next read is reset, as after SIGKILL
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "Traceback" not in err, err
