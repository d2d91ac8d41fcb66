"""The hydromet line's runner in a process of its own, stepped by the line controller.

`HydrometRunner.step` (plant/hydromet.py) is tens of ms of database work and SPC once a second,
up to ~50 ms when a campaign of lots becomes product batches. In a thread of the controller it
held the interpreter lock the line's event loop needs: cells in flight meanwhile were decided
25-30 % later at p95/p99 (docs/bench.md). In a child it runs on the other core. The child opens
the store itself and raises the off-spec and SPC alarms there; its events (batch assayed, lot
valued, alarm) come back to the controller's event bus, so the HMI and MQTT see them.

The child is `python -m <child> FD`: a module of the command line (plant/commands/hydromet_child.py
for the simulated plant) whose main calls `serve` with the runner it builds. Messages are JSON
lines over a private socket pair. Parent to child: `init` (store URL, config
directory, line, seed), `step` (a timestamp), `setpoint` (a pH loop's tag and setpoint). Child to
parent: `ready`, `event`, `done` (with `error` when the step failed). A child that dies is
started again at the next step; meanwhile the line runs on (the hydromet side only lags).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from threadpoolctl import threadpool_limits

from drivers.backoff import Backoff
from plant.alarms import Alarms
from plant.children import cpu_of, reap
from plant.events import Event, EventBus
from plant.hydromet import HydrometRunner
from plant.scheduling import normal_priority
from plant.store import Store

log = logging.getLogger(__name__)
START_TIMEOUT_S = 60.0  # the child imports numpy/SQLAlchemy and opens the store first
STOP_TIMEOUT_S = 10.0  # a step in progress finishes first
RESTART_BACKOFF_S = (1.0, 60.0)  # after a failed start; doubling (a start costs ~1 s of CPU)


class HydrometProcessError(RuntimeError):
    """The hydromet process did not start or answer (the message says why)."""


class HydrometProcess:
    """Parent side: start the child, step it, forward its events to the bus."""

    def __init__(
        self,
        url: str,
        config_dir: Path,
        bus: EventBus | None,
        *,
        line: str,
        seed: int,
        child: str,
    ) -> None:
        """`child`: the module the child runs (`python -m child FD`), whose main calls `serve`."""
        self.init = {"url": url, "config_dir": str(config_dir), "line": line, "seed": seed}
        self.bus = bus
        self.child = child
        self.steps_failed = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._step: asyncio.Future[None] | None = None  # the step the child is working on
        self._failing = False  # log a failing child once, not every second
        self._setpoints: dict[str, float] = {}
        self._backoff = Backoff(*RESTART_BACKOFF_S)
        self._cpu_done = 0.0  # CPU seconds of children already stopped

    async def start(self) -> None:
        """Start the child and wait until it has opened the store and loaded its config."""
        await self.close()
        parent, child = socket.socketpair()
        with child:
            self._proc = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-m", self.child, str(child.fileno())],
                pass_fds=[child.fileno()],
            )
        normal_priority(self._proc.pid)  # off the sort path: no real-time scheduling
        reader, self._writer = await asyncio.open_connection(sock=parent)
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._reader_task = asyncio.create_task(self._read(reader))
        self._send({"init": self.init})
        for tag, value in self._setpoints.items():
            self._send({"setpoint": [tag, value]})
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await asyncio.shield(self._ready)
        except TimeoutError:
            await self.close()
            raise HydrometProcessError(f"not ready within {START_TIMEOUT_S:g} s") from None
        except HydrometProcessError:
            await self.close()
            raise

    async def step(
        self, now: datetime, process: dict[str, float] | None = None, *, wait: bool = False
    ) -> None:
        """Ask for one step at `now` with the PLC's process values (the leach model's inputs).
        Without `wait`, return at once; a step still running is not queued behind (the next
        tick asks again). With `wait`, until it is done."""
        if self._step is not None and not self._step.done():
            if wait:
                await asyncio.shield(self._step)
            else:
                return
        if not self.running:
            if self._backoff.left() > 0:
                return
            try:
                await self.start()
            except (HydrometProcessError, OSError) as exc:
                self._fail(f"hydromet process not started: {exc}")
                self._backoff.failed()
                return
            self._backoff.succeeded()
        self._step = asyncio.get_running_loop().create_future()
        self._send({"step": now.isoformat(), "process": process or {}})
        if wait:
            await asyncio.shield(self._step)

    def set_setpoint(self, tag: str, value: float) -> None:
        """The setpoint of the hydromet pH loop recorded as `tag` (kept across restarts)."""
        self._setpoints[tag] = value
        if self.running:
            self._send({"setpoint": [tag, value]})

    def cpu_seconds(self) -> float:
        """CPU seconds the hydromet processes used so far (Linux /proc; for `plant bench`)."""
        return self._cpu_done + cpu_of(self._proc)

    @property
    def pid(self) -> int | None:
        """The child's process id (None while none runs)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._writer is not None

    async def close(self) -> None:
        """Let a step in progress finish, then stop the child."""
        writer, proc, task = self._writer, self._proc, self._reader_task
        self._writer = self._proc = self._reader_task = None
        self._cpu_done += cpu_of(proc)
        if writer is not None:
            writer.close()  # the child's read ends: it exits after its current step
        if proc is not None:
            await reap(proc, STOP_TIMEOUT_S)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._settle()

    def _send(self, message: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write(json.dumps(message).encode() + b"\n")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            msg = json.loads(line)
            if "event" in msg:
                if self.bus is not None:
                    e = msg["event"]
                    self.bus.publish(Event(e["topic"], e["line"], e["data"], e["ts"]))
            elif "ready" in msg:
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
            elif "done" in msg:
                if msg.get("error"):
                    self.steps_failed += 1
                    self._fail(f"hydromet step failed: {msg['error']}")
                else:
                    self._recovered()
                self._settle()
        # EOF: the child exited (or was stopped); the next step starts a new one.
        proc = self._proc
        code = await asyncio.to_thread(proc.wait) if proc is not None else None
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(
                HydrometProcessError(f"it exited (exit code {code}) before it was ready")
            )
        elif self._writer is not None:
            self._fail(f"hydromet process exited (exit code {code}); restarting at the next step")
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._settle()

    def _settle(self) -> None:
        """Release whoever waits for a step: done, failed or the child gone."""
        if self._step is not None and not self._step.done():
            self._step.set_result(None)

    def _fail(self, message: str) -> None:
        if not self._failing:
            log.error("%s", message)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.warning("hydromet process stepping again")
        self._failing = False


class _LineBus(EventBus):
    """The child's event bus: every event becomes an `event` line to the parent."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out

    def publish(self, event: Event) -> None:
        self.out.write(json.dumps({"event": event.as_json()}) + "\n")
        self.out.flush()

    def publish_threadsafe(self, event: Event) -> None:
        self.publish(event)


# -- child side --------------------------------------------------------------------------------
# The child's runner from the store, its config directory, alarms, event bus, line and seed.
BuildRunner = Callable[[Store, Path, Alarms, EventBus, str, int], HydrometRunner]


def serve(argv: list[str], build: BuildRunner) -> None:
    """The child (`python -m <child> FD`): step the runner `build` makes when told, until the
    parent closes the socket (Ctrl-C at a terminal stops the parent, which closes it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(1)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=int(argv[0]))
    inbox = sock.makefile("r", encoding="utf-8")
    out = sock.makefile("w", encoding="utf-8")
    init = json.loads(inbox.readline() or "null")
    if init is None:
        return
    cfg = init["init"]
    store = Store(cfg["url"])
    bus = _LineBus(out)
    # Off-spec and SPC alarms go into the store and, as events, to the controller's bus.
    alarms = Alarms(store, cfg["line"], bus)
    runner = build(store, Path(cfg["config_dir"]), alarms, bus, cfg["line"], cfg["seed"])
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    try:
        _answer(inbox, out, runner)
    except (ConnectionResetError, BrokenPipeError):  # the parent was killed
        pass
    finally:
        store.close()


def _answer(inbox: TextIO, out: TextIO, runner: HydrometRunner) -> None:
    """Step and set the runner as the parent asks until it closes the socket."""
    for line in inbox:
        msg = json.loads(line)
        if "setpoint" in msg:
            tag, value = msg["setpoint"]
            runner.plant.set_setpoint(tag, float(value))
        elif "step" in msg:
            error = None
            try:
                runner.step(datetime.fromisoformat(msg["step"]), process=msg.get("process") or {})
            except Exception as exc:  # the parent logs it; the next step tries again
                error = f"{type(exc).__name__}: {exc}"
            out.write(json.dumps({"done": True, "error": error}) + "\n")
            out.flush()
