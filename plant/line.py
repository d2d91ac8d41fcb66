"""The line engine: every cell detected, measured, classified, routed and confirmed.

Per cell: `detected` (PLC infeed FIFO head; the row is committed before the cell is taken) ->
`measured` (label decoded, passport looked up; XRF spectrum from a free head) -> `classified`
(fused decision, pure: plant/decide.py) -> `routed` (decision committed, then diverter target +
seq written) -> `confirmed` (PLC acknowledged that seq; cell added to its route's lot). Cells
overlap in flight; diverter commands go out in sequence order, as cells reach the diverter.
Faults never stop the engine: a cell that cannot be decided goes to `quarantine`, and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.orm import Session

from drivers.plc import DONE_SEQ, DONE_TARGET, NEXT_MASS, PlcError, PlcExceptionError, TagMap
from drivers.spectra import Spectrum
from plant import cell_records
from plant.alarms import Alarms
from plant.cell_records import ROUTES, count_routes
from plant.config import LineSection
from plant.dbworker import DbWorker
from plant.decide import Decider, Evidence
from plant.domain import (
    FINAL_STATES,
    ROUTE_BY_CODE,
    ROUTE_CODES,
    AlarmPriority,
    CellState,
    Chemistry,
    Decision,
    DecisionSource,
    Route,
)
from plant.events import Event, EventBus
from plant.hardware import LabelReader, PassportLookup, Plc, Spectrometer
from plant.lots import LotPolicy, LotTracker
from plant.plc_epochs import (
    EPOCH_TAG,
    HEARTBEAT_TAG,
    WATCHDOG_TAG,
    Epoch,
    current_epoch,
    max_final_seq,
    note_plc_epoch,
    open_epoch,
    restart_at_start,
    restart_in_run,
    restart_on_reconnect,
)
from plant.spectrum_archive import keep_spectra
from plant.store import (
    AlarmRow,
    Store,
    utcnow,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

COUNTER_TAGS = tuple(f"counters.{r}" for r in ROUTES)
BUFFER_TAGS = tuple(f"buffer.{r}_full" for r in ROUTES)
# The hot poll: the input-register line block, ONE Modbus request (docs/plc.md).
# `infeed.cell_seq` is 0 when no cell waits, so it doubles as "cell present".
POLL_TAGS = (
    "infeed.cell_seq",
    "infeed.cell_mass_g",
    "infeed.queue_len",
    "diverter.ack_seq",
    "diverter.ack_target",
    *COUNTER_TAGS,
)
# Slow-changing status bits, read every STATUS_PERIOD_S.
STATUS_TAGS = ("line.running", *BUFFER_TAGS)
STATUS_PERIOD_S = 0.05
WATCHDOG_PERIOD_S = 1.0  # the controller's watchdog counter moves this often (docs/plc.md)
SPECTRA_FLUSH_S = 0.25  # decided cells' spectra are stored together, this often
# Alarms the engine raises itself and re-evaluates at start-up: those about the PLC link and the
# database clear at once when the engine reached both; the others clear at their next good state.
LINK_ALARMS = frozenset({"plc/unreachable", "plc/exception", "database/unreachable"})
# Quarantine reasons that mean a forged or withdrawn passport reached the line: someone must
# look at the cell and the supplier (plant/routing.py, docs/passport.md "Authenticity").
PASSPORT_ALARMS = frozenset(
    {"passport_invalid_signature", "passport_revoked", "passport_unknown_issuer"}
)


@dataclass(frozen=True)
class PollView:
    """What one hot poll reads, from the tag map (docs/plc.md): the line block, the cells the
    PLC shows behind its FIFO head and the diverter's executions per seq slot. An older map
    has neither: one cell per take, one diverter command at a time."""

    next_masses: tuple[str, ...]
    done: tuple[tuple[str, str], ...]  # (seq tag, target tag) per slot
    liveness: tuple[str, ...] = ()  # plc.heartbeat and plc.epoch, where the map has them

    @classmethod
    def of(cls, tags: TagMap) -> PollView:
        seqs, targets = tags.series(DONE_SEQ), tags.series(DONE_TARGET)
        if len(seqs) != len(targets):
            raise ValueError(
                f"PLC tag map: {len(seqs)} diverter.done.<k>.seq tags but {len(targets)} "
                "diverter.done.<k>.target tags; give both for every slot k"
            )
        liveness = tuple(t for t in (HEARTBEAT_TAG, EPOCH_TAG) if t in tags.tags)
        return cls(tags.series(NEXT_MASS), tuple(zip(seqs, targets, strict=True)), liveness)

    @cached_property
    def ack_tags(self) -> tuple[str, ...]:
        """The diverter's acknowledgement and its execution slots: what a direct ack read reads."""
        return ("diverter.ack_seq", "diverter.ack_target", *(t for slot in self.done for t in slot))

    @cached_property
    def tags(self) -> tuple[str, ...]:
        return (*POLL_TAGS, *self.next_masses, *self.ack_tags[2:], *self.liveness)

    @property
    def outstanding(self) -> int:
        """Diverter commands the PLC can hold queued: one per execution slot, else one."""
        return max(1, len(self.done))

    def executions(self, values: Mapping[str, Any]) -> dict[int, int]:
        """seq -> route code of the executions a read of `ack_tags` shows."""
        return {int(values[q]): int(values[t]) for q, t in self.done if values[q]}


@dataclass
class Flight:
    """One cell between detection and its final state."""

    seq: int
    mass_g: float
    t_detect: float  # perf_counter when the PLC showed it
    epoch: int = 0  # the PLC numbering `seq` belongs to
    row_id: int = 0
    created_at: datetime | None = None  # the row's, with row_id its key (plant/cell_records.py)
    decision: Decision | None = None
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    force_reason: str | None = None  # a fault sends it to quarantine with this reason
    written: bool = False  # its diverter command reached the PLC
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)  # its measure, decide, confirm


@dataclass
class Stats:
    """Counters the HMI, `plant bench` and the run summary read."""

    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    routed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROUTES, 0))
    recent_quarantine: deque[bool] = field(default_factory=lambda: deque(maxlen=200))
    confirmed_times: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    detected: int = 0
    finished: int = 0

    def cells_per_min(self, now: float) -> float:
        recent = [t for t in self.confirmed_times if now - t <= 60.0]
        if not recent:
            return 0.0
        span = max(now - recent[0], 1.0)
        return len(recent) * 60.0 / span


class LineEngine:
    """Drives one line's PLC, XRF heads and label camera; records every cell."""

    def __init__(
        self,
        *,
        line: str,
        settings: LineSection,
        store: Store,
        plc: Plc,
        decider: Decider,
        station: Spectrometer | None,
        labels: LabelReader | None,
        passports: PassportLookup | None,
        bus: EventBus | None = None,
        on_tick: Callable[[LineEngine], Awaitable[None]] | None = None,
        latency: Any = None,
    ) -> None:
        self.line = line
        self.settings = settings
        self.store = store
        self.plc = plc
        self.decider = decider
        self.station = station
        self.labels = labels
        self.passports = passports
        self.bus = bus
        self.on_tick = on_tick
        self.latency = latency  # a prometheus Histogram child, observed in seconds
        self.alarms = Alarms(store, line, bus)
        self.db = DbWorker(store)
        self.lots = LotTracker(
            line,
            LotPolicy(
                close_mass_g=settings.lot_close_kg * 1000.0,
                max_age=timedelta(hours=settings.lot_max_age_h),
            ),
        )
        self.stats = Stats(recent_quarantine=deque(maxlen=settings.quarantine_rate_window))
        self.plc_ok = asyncio.Event()
        self.plc_state = "unknown"
        self.xrf_state = "ok" if station is not None else "unknown"
        self.running = False
        self.last_poll: dict[str, Any] = {}
        self.status_bits: dict[str, Any] = {}
        self._flights: dict[int, Flight] = {}
        self._next_divert: int | None = None
        self._last_taken = 0
        self._ack_seq = 0
        self._ack_target = 0  # route code the PLC executed for _ack_seq
        self._ack_changed = asyncio.Event()
        self._divert_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._alarm_states: dict[str, bool] = {}
        self._draining = False  # infeed stopped until in-flight cells are resolved
        self._stored_max_seq = 0  # newest seq with a row: above it, no row can exist yet
        self._measuring = 0  # cells between detection and their evidence
        self._view = PollView.of(plc.tag_map)
        self._done: dict[int, int] = {}  # seq -> route code executed, for cells in flight
        self._unconfirmed = 0  # diverter commands written and not yet confirmed
        self._room = asyncio.Event()
        self.epoch = Epoch(0, None)  # set from the store and the PLC at start-up
        self.first_epoch = 0  # the epoch this run began in
        self.epoch_ready = asyncio.Event()
        self._heartbeat: tuple[Any, float] = (None, 0.0)  # last value, when it last moved
        self._not_executing = False  # the PLC answers but its heartbeat stands still
        self._buffer_hold = False  # the quarantine buffer is full: no cell is taken
        self._passports_in_flight: dict[str, Flight] = {}
        # decided cells' spectra not yet stored: (row id, its created_at, spectrum)
        self._spectra: list[tuple[int, datetime | None, Spectrum]] = []
        decider.coming = lambda: self._measuring

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, start_line: bool = True) -> None:
        """Recover in-flight cells, start the line, and run until `stop()`."""
        self.db.start()
        self.db.on_health = self._db_health
        self._main: list[asyncio.Task[Any]] = []
        try:
            await self.db.run(self.lots.load)
            self.stats.routed.update(await asyncio.to_thread(count_routes, self.store, self.line))
            stale = await self.db.run(self.alarms.active_in)
            await self._wait_plc()
            await self._open_epoch()
            self._stored_max_seq = await self.db.run(
                lambda s: cell_records.max_seq(s, self.line, self.epoch.number)
            )
            await self._recover()
            self._resume_alarms(stale)
            await self._check_xrf()
            if start_line:
                await self.plc.write("line.start_cmd", True)
            loops = [
                self._infeed_loop(),
                self._diverter_loop(),
                self._tick_loop(),
                self._watchdog_loop(),
                self._spectra_loop(),
            ]
            self._main = [asyncio.create_task(c) for c in loops]
            await self._stop.wait()
        finally:
            # Loops also end at their next check of the stop flag: a cancellation can be lost
            # (Python 3.11's asyncio.wait_for, used inside pymodbus, drops one that races the
            # answer it awaits), and the engine must stop all the same.
            self._stop.set()
            self._divert_ready.set()
            self._room.set()
            for t in self._main:
                t.cancel()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._main, *self._tasks, return_exceptions=True)
            await self._keep_spectra()
            await self._stop_infeed_on_exit()
            await self.db.close()

    async def _stop_infeed_on_exit(self) -> None:
        """Whatever ends the engine (Ctrl-C, SIGTERM, the end of a run, a fault) stops the
        infeed: no cell arrives that no controller will take. A dead controller is caught by
        the PLC's supervision of `controller.watchdog` instead."""
        try:
            async with asyncio.timeout(2.0):
                await self.plc.write("line.stop_cmd", True)
        except Exception as exc:
            log.error("infeed not stopped at exit (the PLC watchdog will stop it): %s", exc)

    def stop(self) -> None:
        self._stop.set()

    async def stop_infeed(self) -> None:
        """Ask the PLC to stop feeding new cells (cells already in flight finish)."""
        with contextlib.suppress(Exception):
            await self.plc.write("line.stop_cmd", True)

    async def _command(self, coil: str) -> None:
        """A best-effort command in the background; a PLC outage is the infeed loop's to see."""
        try:
            await self.plc.write(coil, True)
        except Exception as exc:
            log.warning("%s not written: %s", coil, exc)

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest cell taken from the infeed."""
        return self._last_taken

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    # -- PLC health --------------------------------------------------------------------------
    async def _wait_plc(self) -> None:
        """Block until the PLC answers; alarm while it does not. A PLC that comes back with its
        memory lost (restarted) starts a new epoch before any command reaches it."""
        delay = 0.1
        while not self._stop.is_set():
            try:
                poll = await self.plc.read(*self._view.tags)
                restarted = None
                if self.epoch.number:
                    restarted = restart_in_run(self.epoch, poll, self._last_taken)
                    if restarted is None and self._last_taken:
                        taken = await self.plc.read("infeed.taken_seq")
                        restarted = restart_on_reconnect(
                            int(taken["infeed.taken_seq"]), self._last_taken
                        )
            except Exception as exc:
                self._plc_down(exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            self.last_poll = poll
            if restarted is not None:
                await self._new_epoch(restarted, poll)
            self._apply_ack(poll)
            self._plc_up()
            return

    def _apply_ack(self, values: Mapping[str, Any]) -> None:
        """Take the diverter's acknowledgement (seq and executed route) from a fresh read."""
        ack = int(values["diverter.ack_seq"])
        self._ack_target = int(values["diverter.ack_target"])
        for seq, code in self._view.executions(values).items():
            if seq in self._flights:
                self._done[seq] = code
        if ack != self._ack_seq:
            self._ack_seq = ack
            self._ack_changed.set()

    def _plc_down(self, exc: BaseException) -> None:
        """PLC lost: alarm once. A Modbus exception reply is an answer, and is named as one."""
        code, text = (
            ("exception", f"PLC refused the request: {exc}")
            if isinstance(exc, PlcExceptionError)
            else ("unreachable", f"PLC unreachable: {exc}")
        )
        if self.plc_ok.is_set() or self.plc_state != "down":
            log.error(text)
            self._set_alarm("plc", code, text, AlarmPriority.critical)
        self.plc_state = "down"
        self.plc_ok.clear()

    def _plc_up(self) -> None:
        if self.plc_state == "down":
            log.warning("PLC reachable again")
            self._set_alarm("plc", "unreachable", None)
            self._set_alarm("plc", "exception", None)
        self.plc_state = "ok"
        self.plc_ok.set()

    def _check_heartbeat(self, poll: Mapping[str, Any], now: float) -> bool:
        """False while the PLC answers but `plc.heartbeat` has not moved for `plc_grace_s`:
        its program is not executing (STOP mode, a fault), so nothing it says is current."""
        beat = poll.get(HEARTBEAT_TAG)
        if beat is None:
            return True
        last, since = self._heartbeat
        if not since:  # the first sample: nothing to compare yet
            self._heartbeat = (beat, now)
            return not self._not_executing
        if beat != last:
            self._heartbeat = (beat, now)
            executing = True
        else:
            executing = now - since <= self.settings.plc_grace_s
        if not executing and not self._not_executing:
            self._not_executing = True
            text = (
                f"PLC not executing: {HEARTBEAT_TAG} stuck at {beat} for more than "
                f"{self.settings.plc_grace_s} s; infeed stopped"
            )
            log.error(text)
            self._set_alarm("plc", "not_executing", text, AlarmPriority.critical)
            for f in self._flights.values():
                f.force_reason = f.force_reason or "PLC not executing while the cell was in flight"
            self.plc_state = "down"  # answers, but nothing it says is current
            self.plc_ok.clear()
            self._spawn(self._command("line.stop_cmd"))
        elif executing and self._not_executing:
            self._not_executing = False
            log.warning("PLC executing again")
            self._set_alarm("plc", "not_executing", None)
            self.plc_state = "ok"
            self.plc_ok.set()
            self._draining = True  # resume once the cells in flight are resolved
        return executing

    async def _plc_outage(self, exc: BaseException) -> None:
        """PLC lost: cells in flight go to quarantine; on return, stop the infeed until the
        diverter has resolved them (the infeed loop resumes it)."""
        self._plc_down(exc)
        for f in self._flights.values():
            f.force_reason = f.force_reason or "PLC fault while the cell was in flight"
        await self._wait_plc()
        if self._stop.is_set():
            return
        with contextlib.suppress(Exception):
            await self.plc.write("line.stop_cmd", True)
        self._draining = True

    # -- infeed ------------------------------------------------------------------------------
    async def _infeed_loop(self) -> None:
        idle = self.settings.idle_poll_s
        next_status = 0.0
        failing_since: float | None = None
        while not self._stop.is_set():
            try:
                poll = await self.plc.read(*self._view.tags)
                if time.monotonic() >= next_status:
                    self.status_bits = await self.plc.read(*STATUS_TAGS)
                    self.running = bool(self.status_bits["line.running"])
                    next_status = time.monotonic() + STATUS_PERIOD_S
                    self._check_buffers()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # One lost answer is not an outage: retry for the grace period first.
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since < self.settings.plc_grace_s:
                    await asyncio.sleep(0.02)
                    continue
                failing_since = None
                await self._plc_outage(exc)
                continue
            failing_since = None
            t_seen = time.perf_counter()
            restarted = restart_in_run(self.epoch, poll, self._last_taken)
            if restarted is not None:
                await self._new_epoch(restarted, poll)
            self.last_poll = poll
            self._apply_ack(poll)
            if not self._check_heartbeat(poll, time.monotonic()):
                await asyncio.sleep(STATUS_PERIOD_S)
                continue
            if self._draining:
                if self._flights:
                    await asyncio.sleep(idle)
                    continue
                try:
                    await self.plc.write("line.start_cmd", True)  # resume after the outage
                except PlcError as exc:
                    await self._plc_outage(exc)
                    continue
                self._draining = False
            if self._buffer_hold:
                await asyncio.sleep(STATUS_PERIOD_S)
                continue
            flights = self._queued(poll, t_seen)
            if not flights:
                await asyncio.sleep(idle)
                continue
            seq = flights[0].seq
            try:
                await self._take(flights)
            except asyncio.CancelledError:
                raise
            except PlcError as exc:
                await self._plc_outage(exc)
            except Exception as exc:  # the record could not be written: the cell stays untaken
                if not self._alarm_states.get("line/record_failed"):
                    log.exception("cell %s: detection not recorded; retrying", seq)
                self._set_alarm("line", "record_failed", f"cell {seq} not recorded: {exc}")
                await asyncio.sleep(0.5)
            else:
                self._set_alarm("line", "record_failed", None)

    def _check_buffers(self) -> None:
        """Downstream buffers: a full route buffer alarms (its cells go to quarantine); a full
        quarantine buffer stops the infeed, with an alarm, until it has room again."""
        for route in ROUTES:
            full = bool(self.status_bits.get(f"buffer.{route}_full"))
            if route == Route.quarantine:
                text = "quarantine buffer full: infeed stopped until it has room"
                if full and not self._buffer_hold:
                    self._buffer_hold = True
                    self._spawn(self._command("line.stop_cmd"))
                elif not full and self._buffer_hold:
                    self._buffer_hold = False
                    self._spawn(self._command("line.start_cmd"))
                self._set_alarm("buffer", "quarantine_full", text if full else None)
            else:
                text = f"{route} buffer full: its cells go to quarantine until it has room"
                self._set_alarm("buffer", f"{route}_full", text if full else None)

    async def _new_epoch(self, reason: str, poll: Mapping[str, Any]) -> None:
        """The PLC's numbering started again: the cells in flight belong to a numbering the PLC
        has forgotten, so none of their commands may reach it (their seq now names other
        cells); they go to a manual check, and the line goes on in a new epoch."""
        flights = list(self._flights.values())
        tasks = [t for f in flights for t in f.tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flights.clear()
        self._done.clear()
        self._passports_in_flight.clear()
        self._next_divert = None
        self._unconfirmed = 0
        self._room.set()
        self._last_taken = 0
        self._stored_max_seq = 0
        self._ack_seq = int(poll["diverter.ack_seq"])
        self._ack_target = int(poll["diverter.ack_target"])
        counter = poll.get(EPOCH_TAG)
        number = self.epoch.number + 1
        plc_epoch = None if counter is None else int(counter)
        self.epoch = await self.db.run(
            lambda s: open_epoch(s, self.line, number, plc_epoch, reason)
        )
        why = f"PLC restarted while the cell was in flight ({reason}): manual check"
        for f in flights:
            f.decision = f.decision or _undecided(why)
            self._book(f, CellState.quarantined, Route.quarantine, why, lot=False)
        text = (
            f"PLC numbering started again (epoch {number}): {reason}; "
            f"{len(flights)} cells in flight to manual check"
        )
        log.warning(text)
        self._set_alarm("plc", "restarted", text, event=True)
        self._divert_ready.set()

    def _queued(self, poll: Mapping[str, Any], t_seen: float) -> list[Flight]:
        """The cells to take now: the FIFO head and the cells the PLC shows behind it
        (`infeed.next.<k>.mass_g`, seq = head + k), as many as the in-flight limit allows."""
        seq = int(poll["infeed.cell_seq"])
        if seq == 0 or seq <= self._last_taken:
            return []
        room = self.settings.max_in_flight - len(self._flights)
        behind = self._view.next_masses
        n = min(int(poll["infeed.queue_len"]), 1 + len(behind), room)
        if n < 1 and seq in self._flights:
            n = 1  # its take is in doubt: repeat it whatever the limit
        masses = [poll["infeed.cell_mass_g"], *(poll[t] for t in behind)]
        return [Flight(seq + k, float(masses[k]), t_seen, self.epoch.number) for k in range(n)]

    async def _take(self, flights: list[Flight]) -> None:
        """Commit the detected cells and start work on them, then take them from the PLC's
        FIFO in one write (the seq of the last; the PLC pops the queue up to it).

        The take is idempotent (re-writing an old `taken_seq` does nothing), so a write whose
        answer was lost is simply repeated when the PLC still shows the cells; a cell already
        in flight is never started twice.
        """
        new = [f for f in flights if f.seq not in self._flights]
        if new:
            # Measuring only reads a cell, so it starts now, beside the detection's commit
            # (if that fails, the cells stay untaken and these measurements are dropped).
            measuring = [self._spawn(self._measure(f)) for f in new]
            rows = await self.db.run(lambda s: [self._detected(s, f) for f in new])
            for f, (row_id, state, created_at), task in zip(new, rows, measuring, strict=True):
                f.row_id, f.created_at = row_id, created_at
                if state in FINAL_STATES:  # decided while its take was in doubt: just take it
                    task.cancel()
                    continue
                self.stats.detected += 1
                self._flights[f.seq] = f
                if self._next_divert is None:
                    self._next_divert = f.seq
                f.tasks += [task, self._spawn(self._cell(f, task))]
        last = flights[-1].seq
        await self.plc.write("infeed.taken_seq", last)
        self._last_taken = last

    def _detected(self, s: Session, f: Flight) -> tuple[int, str, datetime]:
        """The cell's row: no row can exist yet above the newest seq stored."""
        row = cell_records.detected(
            s, self.line, f.epoch, f.seq, f.mass_g, may_exist=f.seq <= self._stored_max_seq
        )
        self._stored_max_seq = max(self._stored_max_seq, f.seq)
        return row

    # -- one cell ----------------------------------------------------------------------------
    async def _cell(self, f: Flight, measuring: asyncio.Task[Evidence]) -> None:
        """Classify, decide and record one measured cell. Whatever fails on the way, the cell
        ends decided (quarantine, saying why), so the in-order diverter never waits on it."""
        try:
            evidence = await measuring
            decision = await self.decider.decide(evidence)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never lose a cell to a bug: quarantine and say why
            if not self._alarm_states.get("line/decide_failed"):
                log.exception("cell %s: decision failed", f.seq)
            self._set_alarm("line", "decide_failed", f"cell {f.seq} to quarantine: {exc}")
            decision = _undecided(f"internal error while deciding: {exc}")
            evidence = Evidence()
        else:
            self._set_alarm("line", "decide_failed", None)
        try:
            ref = evidence.spectrum.source if evidence.spectrum is not None else None
            decision = await self.db.run(
                lambda s: cell_records.record_decision(
                    s, f.row_id, f.created_at, decision, evidence.passport_id, ref
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the row stays `detected`; quarantine needs no decision
            log.error("cell %s: decision not recorded (%s); to quarantine", f.seq, exc)
            decision = _undecided(f"decision not recorded: {exc}")
            f.force_reason = f.force_reason or decision.reason
        finally:
            if evidence.passport_id and self._passports_in_flight.get(evidence.passport_id) is f:
                del self._passports_in_flight[evidence.passport_id]
        f.decision = decision
        f.decided.set()
        self._divert_ready.set()
        code = decision.reason.partition(":")[0]
        if code in PASSPORT_ALARMS:
            self._set_alarm("passport", code, f"cell {f.seq}: {decision.reason}", event=True)
        if evidence.spectrum is not None:
            self._spectra.append((f.row_id, f.created_at, evidence.spectrum))

    async def _measure(self, f: Flight) -> Evidence:
        """Label + passport and XRF spectrum, concurrently."""
        self._measuring += 1
        try:
            return await self._evidence(f)
        finally:
            self._measuring -= 1

    async def _evidence(self, f: Flight) -> Evidence:
        label_task = asyncio.create_task(self._label(f.seq))
        spectrum: Spectrum | None = None
        spectrum_error: str | None = None
        if self.station is not None:
            try:
                async with asyncio.timeout(self.settings.xrf_timeout_s):
                    spectrum = await self.station.measure(
                        f"CELL:{f.seq}", self.settings.xrf_live_time_s
                    )
                self._xrf_fault(None)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                spectrum_error = f"XRF timeout after {self.settings.xrf_timeout_s} s"
                self._xrf_fault(spectrum_error)
            except Exception as exc:
                spectrum_error = f"XRF fault: {exc}"
                self._xrf_fault(spectrum_error)
        else:
            spectrum_error = "no XRF station configured"
        passport_id, passport, passport_error = await label_task
        duplicate_of = None
        if passport is not None and passport_id is not None:
            duplicate_of = self._in_flight_duplicate(passport_id, f)
        buffers = frozenset(
            r for r in ROUTES if self.status_bits.get(f"buffer.{r}_full") and r != Route.quarantine
        )
        return Evidence(
            spectrum=spectrum,
            spectrum_error=spectrum_error,
            passport_id=passport_id,
            passport=passport,
            passport_error=passport_error,
            buffers_full=buffers,
            duplicate_of=duplicate_of,
            cell_mass_g=f.mass_g,
        )

    def _in_flight_duplicate(self, passport_id: str, f: Flight) -> str | None:
        """Another cell in flight with this passport, or None; cells recorded earlier, on any
        line, are looked for when the decision is recorded (`cell_records.record_decision`)."""
        other = self._passports_in_flight.setdefault(passport_id, f)
        if other is f:
            return None
        return f"passport {passport_id} is on cell seq {other.seq} in flight on line {self.line}"

    async def _label(self, seq: int) -> tuple[str | None, Any, str | None]:
        if self.labels is None:
            return None, None, "no label camera configured"
        try:
            pid, error = await self.labels.read_label(seq)
        except Exception as exc:
            return None, None, f"label camera fault: {exc}"
        if pid is None:
            return None, None, error
        if self.passports is None:
            return pid, None, "no passport store"
        try:
            passport = await self.passports(pid)
        except Exception as exc:
            return pid, None, f"passport lookup failed: {exc}"
        if passport is None:
            return pid, None, f"passport {pid} not in the local passport store"
        return passport.passport_id or pid, passport, None  # the id as stored

    async def _spectra_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(SPECTRA_FLUSH_S)
            await self._keep_spectra()

    async def _keep_spectra(self) -> None:
        """Store the decided cells' spectra in one transaction, off the diverter's path: one
        commit per cell would hold up the decisions queued behind it on the database thread."""
        kept, self._spectra = self._spectra, []
        if not kept:
            return
        try:
            await self.db.run(
                lambda s: keep_spectra(
                    s, [(i, sp) for i, _, sp in kept], {i: t for i, t, _ in kept}
                )
            )
        except Exception as exc:
            log.error("spectra of %d cells not kept: %s", len(kept), exc)

    async def _check_xrf(self) -> None:
        """Start-up check: every XRF head measures its check standard before the first cell.

        A head that fails raises the XRF alarm (the line still starts: the other heads and the
        passports decide). The check spectra prepare the classifier for each head's calibration.
        """
        check = getattr(self.station, "check", None)
        if check is None:
            return
        try:
            async with asyncio.timeout(self.settings.xrf_timeout_s):
                results = await check(self.settings.xrf_live_time_s)
        except TimeoutError:
            self._xrf_fault(f"XRF check standard: no answer in {self.settings.xrf_timeout_s} s")
            return
        spectra = [r for r in results if isinstance(r, Spectrum)]
        failed = [str(r) for r in results if not isinstance(r, Spectrum)]
        self._xrf_fault(
            f"XRF check standard failed on {len(failed)} of {len(results)} heads: {failed[0]}"
            if failed
            else None
        )
        if spectra:
            try:
                await self.decider.warm_up(spectra)
            except Exception as exc:  # the first cells then prepare it (~0.1 s once)
                log.warning("classifier not prepared with the check spectra: %s", exc)

    def detector_alarm(
        self, head: str, code: str, message: str | None, priority: AlarmPriority
    ) -> None:
        """An XRF head's detector problem (`xrf/<head>_<code>`, e.g. xrf3_hv_off) appeared
        (message) or went (None): raised and cleared once per change, like the others."""
        self._set_alarm("xrf", f"{head}_{code}", message, priority)

    def _xrf_fault(self, error: str | None) -> None:
        """XRF alarm once per change of state, cleared by the next good measurement."""
        self._set_alarm("xrf", "fault", error)
        self.xrf_state = "degraded" if self._alarm_states["xrf/fault"] else "ok"

    def _set_alarm(
        self,
        source: str,
        code: str,
        message: str | None,
        priority: AlarmPriority = AlarmPriority.high,
        *,
        event: bool = False,
    ) -> None:
        """Raise `source/code` when `message` appears, clear it when it goes (None): once per
        change of state, not once per cell (an `event` alarm is raised every time). Written by
        the database worker after the cell records queued before it, never on the loop, and
        never failing the caller; published on the bus once committed."""
        key = f"{source}/{code}"
        was = self._alarm_states.get(key, False)
        if event or (message is not None and not was):
            text = message or key
            self._spawn(
                self._write_alarm(lambda s: self.alarms.raise_in(s, source, code, text, priority))
            )
        elif message is None and was:
            self._spawn(self._write_alarm(lambda s: self.alarms.clear_in(s, source, code)))
        if not event:
            self._alarm_states[key] = message is not None

    async def _write_alarm(self, write: Callable[[Session], AlarmRow | None]) -> None:
        try:
            row = await self.db.run(write)
        except Exception:
            log.exception("alarm not written (the line keeps running)")
            return
        if row is not None:
            self.alarms.publish(row)

    def _resume_alarms(self, active: list[tuple[str, str]]) -> None:
        """Alarms an earlier run left active: those about the link clear now that the engine
        reached the PLC and the database; the others clear at their next good state."""
        for source, code in active:
            key = f"{source}/{code}"
            if key in LINK_ALARMS:
                self._alarm_states[key] = True
                self._set_alarm(source, code, None)
            elif key == "plc/not_executing":
                self._not_executing = True
                self._alarm_states[key] = True
            elif source in ("xrf", "line", "buffer", "diverter"):
                self._alarm_states[key] = True
                if key == "buffer/quarantine_full":
                    self._buffer_hold = True

    async def _watchdog_loop(self) -> None:
        """Move `controller.watchdog` so the PLC can stop the infeed when this process dies."""
        if WATCHDOG_TAG not in self.plc.tag_map.tags:
            return
        beat = 0
        while not self._stop.is_set():
            beat = beat % 65535 + 1
            try:
                async with asyncio.timeout(WATCHDOG_PERIOD_S):
                    await self.plc.write(WATCHDOG_TAG, beat)
            except (PlcError, TimeoutError):
                pass  # an outage is the infeed loop's to alarm; the PLC's watchdog sees it too
            except Exception:
                log.exception("controller watchdog not written (retrying)")
            await asyncio.sleep(WATCHDOG_PERIOD_S)

    # -- diverter ----------------------------------------------------------------------------
    async def _diverter_loop(self) -> None:
        """Write diverter commands in sequence order, as many outstanding as the PLC shows
        executions of (one without), each confirmed on its ack by a task of its own."""
        while not self._stop.is_set():
            seq = self._next_divert
            f = self._flights.get(seq) if seq is not None else None
            if f is None or not f.decided.is_set():
                self._divert_ready.clear()
                if f is None and seq is not None:
                    waiting = [s for s, x in self._flights.items() if not x.written]
                    if waiting:
                        self._next_divert = min(waiting)  # a gap (should not happen)
                        continue
                await self._divert_ready.wait()
                continue
            while self._unconfirmed >= self._view.outstanding and not self._stop.is_set():
                self._room.clear()
                await self._room.wait()
            if self._stop.is_set():
                break
            await self._send(f)
            if not f.written or f.epoch != self.epoch.number:
                continue  # the PLC restarted meanwhile: the cell went to a manual check
            self._unconfirmed += 1
            self._next_divert = f.seq + 1
            f.tasks.append(self._spawn(self._confirm(f)))

    async def _divert(self, f: Flight) -> None:
        """Write this cell's diverter command and wait for its confirmation (restart path)."""
        await self._send(f)
        if f.written:
            self._unconfirmed += 1
        await self._confirm(f)

    async def _send(self, f: Flight) -> None:
        """Write this cell's diverter command until a write is answered.

        Repeating a command is safe: the PLC acknowledges a seq it already executed again,
        with the route it executed, and does not count it twice (docs/plc.md). A cell is
        booked to the route the PLC reports and never to two.
        """
        assert f.decision is not None
        while not self._stop.is_set():
            await self.plc_ok.wait()
            if f.epoch != self.epoch.number:
                return  # a restarted PLC: this seq now names another cell
            route = Route.quarantine if f.force_reason else f.decision.route
            try:
                await self.plc.write_many(
                    {"diverter.target": ROUTE_CODES[Route(route)], "diverter.seq": f.seq}
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Retry; a real outage is declared by the infeed loop, which then sends every
                # cell in flight to quarantine.
                log.debug("diverter write for seq %s failed, retrying: %s", f.seq, exc)
                await asyncio.sleep(0.05)
                continue
            if route == f.decision.route:
                seconds = time.perf_counter() - f.t_detect
                self.stats.latencies_ms.append(seconds * 1000.0)
                if self.latency is not None:
                    self.latency.observe(seconds)
            f.written = True
            return

    async def _confirm(self, f: Flight) -> None:
        """Book the cell once the PLC acknowledged its command (or the ack timed out)."""
        try:
            acked = await self._wait_ack(f.seq)
            await self._finish(f, self._executed(f.seq) if acked else None)
        finally:
            if self._flights.get(f.seq) is f:
                del self._flights[f.seq]
                self._done.pop(f.seq, None)
            if f.written:
                self._unconfirmed -= 1
                self._room.set()

    def _executed(self, seq: int) -> Route | None:
        """The route the PLC reports for `seq`, or None if it reports a later cell only."""
        code = self._done.get(seq)
        if code is None and self._ack_seq == seq:
            code = self._ack_target
        return None if code is None else ROUTE_BY_CODE.get(code)

    async def _wait_ack(self, seq: int) -> bool:
        """True once the PLC acked `seq`; the timeout only runs while the PLC is reachable.

        The infeed poll carries the acks. With one command at a time, the diverter must not
        wait on the poll's pace: it reads the ack itself, then every poll period. At the
        deadline it asks the PLC itself (the poller may lag under load).
        """
        timeout = self.settings.diverter_ack_timeout_s
        deadline = time.monotonic() + timeout
        eager = self._view.outstanding == 1
        while self._ack_seq < seq:
            if not self.plc_ok.is_set():
                await self.plc_ok.wait()
                deadline = time.monotonic() + timeout
                continue
            left = deadline - time.monotonic()
            if eager or left <= 0:
                with contextlib.suppress(PlcError):
                    self._apply_ack(await self.plc.read(*self._view.ack_tags))
                if self._ack_seq >= seq or left <= 0:
                    break
            self._ack_changed.clear()
            with contextlib.suppress(TimeoutError):
                wait = self.settings.idle_poll_s if eager else 0.1
                async with asyncio.timeout(min(left, wait)):
                    await self._ack_changed.wait()
        return self._ack_seq >= seq

    async def _finish(self, f: Flight, executed: Route | None) -> None:
        """Book the cell to the route the PLC executed; no ack means a manual check."""
        assert f.decision is not None
        if executed is None:
            reason = (
                f"diverter did not acknowledge seq {f.seq} within "
                f"{self.settings.diverter_ack_timeout_s} s: manual check"
            )
            self._set_alarm("diverter", "ack_missing", reason, event=True)
            self._alarm_states["diverter/ack_missing"] = True
            self._book(f, CellState.quarantined, Route.quarantine, reason, lot=False)
            return
        self._set_alarm("diverter", "ack_missing", None)
        if executed != f.decision.route:
            why = f.force_reason or "diverter executed another route"
            reason = f"{why} (decided: {f.decision.route}, {f.decision.reason})"
            self._book(f, CellState.quarantined, executed, reason, lot=False)
        else:
            state = CellState.quarantined if executed == Route.quarantine else CellState.confirmed
            self._book(f, state, executed, None, lot=True)

    def _book(self, f: Flight, state: str, route: str, reason: str | None, *, lot: bool) -> None:
        """Commit the final state in the background: the diverter moves on to the next cell.

        A crash before this commits is resolved on restart from the PLC's acknowledgement.
        """

        async def book() -> None:
            closed = await self.db.run(lambda s: self._mark(s, f, state, route, reason, lot=lot))
            for lot_id in closed:  # published here, on the loop's thread
                self._publish("lot", {"id": lot_id, "state": "closed"})
            self._count(f, route)

        self._spawn(book())

    def _mark(
        self, s: Session, f: Flight, state: str, route: str, reason: str | None, *, lot: bool
    ) -> list[str]:
        """Commit the final state (and the cell's lot); the lots this closed."""
        lot_id: str | None = None
        closed: list[str] = []
        if lot and f.decision is not None:
            lot_id, closed = self.lots.add(s, route, f.decision.chemistry, f.mass_g, utcnow())
        cell_records.mark_final(s, f.row_id, f.created_at, state, route, reason, lot_id)
        return closed

    def _count(self, f: Flight, route: str) -> None:
        self.stats.routed[route] += 1
        self.stats.finished += 1
        self.stats.recent_quarantine.append(route == Route.quarantine)
        self.stats.confirmed_times.append(time.monotonic())
        d = f.decision
        self._publish(
            "cell",
            {
                "id": f.row_id,
                "seq": f.seq,
                "route": route,
                "chemistry": d.chemistry if d else None,
                "confidence": d.confidence if d else None,
                "reason": (f.force_reason or d.reason) if d else f.force_reason,
            },
        )

    def _publish(self, topic: str, data: dict[str, Any]) -> None:
        if self.bus is not None:
            self.bus.publish(Event(topic, self.line, data))

    # -- periodic ----------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(1.0)
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic line work failed (the line keeps running)")

    async def _tick(self) -> None:
        recent = self.stats.recent_quarantine
        if recent.maxlen is not None and len(recent) >= recent.maxlen:
            rate = sum(recent) / len(recent)
            limit = self.settings.quarantine_rate_alarm
            was = self._alarm_states.get("line/quarantine_rate", False)
            if rate > limit and not was:
                self._set_alarm(
                    "line",
                    "quarantine_rate",
                    f"{rate:.0%} of the last {len(recent)} cells quarantined (limit {limit:.0%})",
                    AlarmPriority.medium,
                )
            elif rate <= limit * 0.8 and was:  # deadband: no chatter around the limit
                self._set_alarm("line", "quarantine_rate", None)
        closed = await self.db.run(lambda s: self.lots.close_aged(s, utcnow()))
        for lid in closed:
            self._publish("lot", {"id": lid, "state": "closed"})
        if self.on_tick is not None:
            await self.on_tick(self)

    def status(self) -> dict[str, Any]:
        """Live figures for the HMI and the status table."""
        recent = self.stats.recent_quarantine
        return {
            "line": self.line,
            "running": self.running,
            "plc_health": self.plc_state,
            "xrf_health": self.xrf_state,
            "db_health": "ok" if self.db.healthy else "down",
            "cells_per_min": round(self.stats.cells_per_min(time.monotonic()), 1),
            "quarantine_rate": round(sum(recent) / len(recent), 4) if recent else 0.0,
            "counts": dict(self.stats.routed),
            "plc_counters": {r: int(self.last_poll.get(f"counters.{r}", 0)) for r in ROUTES},
            "in_flight": self.in_flight,
            "buffers_full": {r: bool(self.status_bits.get(f"buffer.{r}_full")) for r in ROUTES},
            "epoch": self.epoch.number,
        }

    def _db_health(self, ok: bool, error: str | None) -> None:
        if ok:
            self.alarms_later(lambda: self.alarms.clear("database", "unreachable"))
        else:
            self.alarms_later(
                lambda: self.alarms.raise_(
                    "database",
                    "unreachable",
                    f"database unreachable: {error}",
                    AlarmPriority.critical,
                )
            )

    def alarms_later(self, fn: Callable[[], Any]) -> None:
        """Alarm writes about the database itself must not block the loop on that database."""
        self._spawn(asyncio.to_thread(_try, fn))

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A task the engine cancels when it stops."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- restart -----------------------------------------------------------------------------
    async def _open_epoch(self) -> None:
        """Find the numbering the PLC is in: the stored epoch, or a new one when the PLC
        restarted (or another PLC answers) since the last run."""
        counter = self.last_poll.get(EPOCH_TAG)
        plc_epoch = None if counter is None else int(counter)
        cur = await self.db.run(lambda s: current_epoch(s, self.line))
        if cur is None:
            self.epoch = await self.db.run(
                lambda s: open_epoch(s, self.line, 1, plc_epoch, "first run of the line")
            )
        else:
            taken = int((await self.plc.read("infeed.taken_seq"))["infeed.taken_seq"])
            top = await self.db.run(lambda s: max_final_seq(s, self.line, cur.number))
            reason = restart_at_start(cur, self.last_poll, taken, top)
            if reason is not None:
                number = cur.number + 1
                self.epoch = await self.db.run(
                    lambda s: open_epoch(s, self.line, number, plc_epoch, reason)
                )
                text = f"PLC numbering started again since the last run (epoch {number}): {reason}"
                log.warning(text)
                self._set_alarm("plc", "restarted", text, event=True)
            elif plc_epoch is not None and cur.plc_epoch is None:
                self.epoch = await self.db.run(
                    lambda s: note_plc_epoch(s, self.line, cur, plc_epoch)
                )
            else:
                self.epoch = cur
        self.first_epoch = self.epoch.number
        self.epoch_ready.set()

    async def _recover(self) -> None:
        """Resolve cells left in flight by a crash: confirmed if the PLC acked, else quarantine;
        cells of an earlier epoch (the PLC restarted meanwhile) go to a manual check."""
        rows = await self.db.run(lambda s: cell_records.unfinished(s, self.line))
        earlier = [r for r in rows if r.epoch != self.epoch.number]
        rows = [r for r in rows if r.epoch == self.epoch.number]
        why = "PLC restarted while the controller was down: manual check"
        for row_id, seq, mass, _state, _route, _chem, epoch, created in earlier:
            f = Flight(seq, mass or 0.0, time.perf_counter(), epoch, row_id, created)
            f.decision = _undecided(why)
            self._book(f, CellState.quarantined, Route.quarantine, why, lot=False)
        if earlier:
            log.warning("%d cells of an earlier PLC numbering sent to a manual check", len(earlier))
        if not rows:
            return
        plc = await self.plc.read(*self._view.ack_tags, "infeed.taken_seq")
        self._apply_ack(plc)
        ack, taken = self._ack_seq, int(plc["infeed.taken_seq"])
        self._done.update(self._view.executions(plc))
        for row_id, seq, mass, state, route, chem, epoch, created in rows:
            if seq > taken:
                continue  # never taken: still the FIFO head, the infeed loop picks it up
            f = Flight(seq, mass or 0.0, time.perf_counter(), epoch, row_id, created)
            f.decision = Decision(
                chemistry=Chemistry(chem) if chem else Chemistry.UNKNOWN,
                confidence=0.0,
                source=DecisionSource.none,
                route=Route(route) if route else Route.quarantine,
                reason="",
            )
            if seq == ack or seq in self._done:  # the PLC reports what it executed for it
                await self._finish(f, self._executed(seq))
                continue
            if state == CellState.routed and seq < ack:  # commands go out in seq order, so a
                self._book(f, CellState.confirmed, f.decision.route, None, lot=True)  # later
                continue  # ack means this cell's command was executed
            f.force_reason = "controller restarted before the diverter was set: manual check"
            await self._divert(f)
        self._done.clear()
        log.warning("recovered %d cells left in flight by the previous run", len(rows))


def percentiles(values: Any, ps: tuple[float, ...] = (50, 95, 99)) -> dict[str, float | None]:
    """Percentiles and max; None (JSON null, never NaN) when there are no values."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return dict.fromkeys([*(f"p{int(p)}" for p in ps), "max"])
    out: dict[str, float | None] = {
        f"p{int(p)}": round(float(np.percentile(arr, p)), 3) for p in ps
    }
    out["max"] = round(float(arr.max()), 3)
    return out


def _undecided(reason: str) -> Decision:
    """The decision of a cell nothing could be decided about: quarantine, saying why."""
    return Decision(
        chemistry=Chemistry.UNKNOWN,
        confidence=0.0,
        source=DecisionSource.none,
        route=Route.quarantine,
        reason=reason,
    )


def _try(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):
        fn()
