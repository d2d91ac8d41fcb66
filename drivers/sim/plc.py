"""Simulated line PLC: a real pymodbus TCP server serving config/plc.toml, with a process model.

What it does (the contract the line engine relies on, documented in docs/plc.md):
- Infeed FIFO: while cells are queued, the head is presented as `infeed.cell_present`=1,
  `infeed.cell_seq`, `infeed.cell_mass_g` (cell_seq 0 = empty), and the masses of the cells
  behind it as `infeed.next.<k>.mass_g` (seq = head + k). Writing `infeed.taken_seq` = any
  queued seq pops the queue up to it in the write handler, so the next read shows the next
  cell. Sequence numbers start at 1 and increase by one.
- Diverter mailbox: a write covering [`diverter.target`, `diverter.seq`] queues a command;
  after `actuation_delay_s` the PLC counts it in `counters.<route>` and sets
  `diverter.ack_seq` = seq, and `diverter.done.<k>.seq`/`.target` of slot k = (seq-1) mod K+1.
  Commands run in the order received; a repeated seq is acknowledged again without being
  counted twice.
- `line.start_cmd` / `line.stop_cmd` (momentary coils) start and stop arrivals at
  `rate_cells_s` until `max_cells` have arrived; due cells are generated in the scan loop.
- `plc.epoch` is the PLC's start-up counter; `restart()` is a PLC restart (program download,
  power cycle): a new epoch, the numbering starts again at 1, counters and handshakes cleared.
- Watchdog: once the controller has written `controller.watchdog`, the PLC stops the infeed
  when that value has not changed for `watchdog_s` (the controller died or hangs).
- Downstream buffers (`buffers`): the conveyor after a route holds `capacity` cells and carries
  `drain_cells_s` away; `buffer.<route>_full` is 1 while it is at capacity.
- Fault injection through `SimPlc.faults` (`scan_stopped`: the PLC program no longer executes,
  its heartbeat freezes), `drop_connections()`, `set_offline()` and `set_buffer_full()`.

Start it with `async with SimPlc(tag_map, port=5020) as sim: ...` or `await sim.start()` /
`await sim.stop()`; `sim.port` is the bound port (useful with port=0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from drivers.plc import BIT_TABLES, DONE_SEQ, DONE_TARGET, NEXT_MASS, Tag, TagMap, Value
from drivers.sim.cells import CellStream
from drivers.sim.process import LeachTank

log = logging.getLogger(__name__)

# Route codes of `diverter.target`; the same numbers as plant/domain.py ROUTE_CODES
# (drivers cannot import plant; tests/test_sim_plc.py checks they agree).
ROUTE_NAMES: dict[int, str] = {1: "hydromet", 2: "black_mass", 3: "reject", 4: "quarantine"}

_TABLE_OF_FC: dict[int, str] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete_input",
    3: "holding_register",
    6: "holding_register",
    16: "holding_register",
    22: "holding_register",
    23: "holding_register",
    4: "input_register",
}
_TABLE_ORDER = ("coil", "discrete_input", "holding_register", "input_register")


class SimPlcError(Exception):
    """The simulator cannot start (port taken) or was misused."""


@dataclass
class SimFaults:
    """Faults tests can switch on and off while the simulator runs."""

    stall_s: float = 0.0  # delay every answer by this long (past the client timeout)
    exception_code: int | None = None  # answer with this Modbus exception code ...
    exception_tags: frozenset[str] = frozenset()  # ... to requests touching these (empty: all)
    diverter_stuck: bool = False  # diverter ignores commands: no count, no acknowledgement
    scan_stopped: bool = False  # the PLC program does not execute: no heartbeat, no arrivals


@dataclass
class Buffer:
    """The conveyor downstream of one route: holds `capacity` cells, carries `drain_cells_s`
    cells a second away."""

    capacity: int
    drain_cells_s: float
    level: float = 0.0

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.drain_cells_s < 0:
            raise SimPlcError("a buffer needs capacity >= 1 and drain_cells_s >= 0")


@dataclass
class _Command:
    due: float
    target: int
    seq: int


@dataclass
class _Feeder:
    running: bool = False
    started_at: float = 0.0
    arrived_since_start: int = 0
    arrived: int = 0  # highest seq detected so far
    taken: int = 0  # highest seq the controller took
    pending: deque[_Command] = field(default_factory=deque)


class SimPlc:
    """Simulated PLC over Modbus TCP on loopback, serving the tag map's addresses."""

    def __init__(
        self,
        tag_map: TagMap,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 1,
        rate_cells_s: float = 20.0,
        max_cells: int | None = None,
        actuation_delay_s: float = 0.001,
        scan_s: float = 0.005,
        process_period_s: float = 0.1,
        hold_process: bool = False,
        cells: CellStream | None = None,
        watchdog_s: float = 5.0,
        buffers: dict[str, Buffer] | None = None,
    ) -> None:
        if rate_cells_s <= 0:
            raise SimPlcError(f"rate_cells_s must be > 0, got {rate_cells_s}")
        if actuation_delay_s < 0 or scan_s <= 0 or process_period_s <= 0:
            raise SimPlcError("actuation_delay_s must be >= 0, scan_s and process_period_s > 0")
        self.tag_map = tag_map
        self.host = host
        self._requested_port = port
        self.port = port
        self.rate_cells_s = rate_cells_s
        self.max_cells = max_cells
        self.actuation_delay_s = actuation_delay_s
        self.scan_s = scan_s
        self.process_period_s = process_period_s
        self.hold_process = hold_process  # freeze process values (for exact comparisons)
        self.watchdog_s = watchdog_s
        self._watchdog: tuple[int, float] | None = None  # last value the controller wrote, when
        self.cells = cells if cells is not None else CellStream(seed)
        self.tank = LeachTank(seed=seed)
        self.faults = SimFaults()
        self.buffers = dict(buffers or {})
        for route in self.buffers:
            self._check_route(route)
        self.diverted: dict[int, int] = {}  # seq -> route code, as executed by the diverter
        self.requests: Counter[int] = Counter()  # requests received, by function code
        self.connects = 0  # client connections accepted
        self._feeder = _Feeder()
        self._mirror: dict[str, list[int]] = {t: [0] * tag_map.table_size(t) for t in _TABLE_ORDER}
        self._tags_by_table: dict[str, list[Tag]] = {t: [] for t in _TABLE_ORDER}
        for tag in tag_map.tags.values():
            self._tags_by_table[tag.table].append(tag)
        self._next_masses = tag_map.series(NEXT_MASS)  # cells shown behind the FIFO head
        self._done_slots = len(tag_map.series(DONE_SEQ))  # recent executions shown
        self._server: ModbusTcpServer | None = None
        self._scan_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        # A retentive start-up counter in a real PLC; a simulator starts at a random one.
        self._set("plc.epoch", int.from_bytes(os.urandom(2)) % 65535 + 1)
        self._set("leach.ph_setpoint", self.tank.ph_setpoint)
        self._set("leach.temp_setpoint_c", self.tank.temp_setpoint_c)
        self._publish_process()
        self._present_head()

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Listen on host:port and start the scan loop."""
        self._stopping.clear()
        await self._listen(self._requested_port)
        self._scan_task = asyncio.create_task(self._scan(), name="sim-plc-scan")
        log.info("simulated PLC listening on %s:%d (Modbus TCP)", self.host, self.port)

    async def stop(self) -> None:
        """Stop serving, end the scan loop and release the port."""
        self._stopping.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._scan_task is not None:
            self._scan_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scan_task
            self._scan_task = None
        await self._close_server()

    async def __aenter__(self) -> SimPlc:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def _device(self) -> SimDevice:
        """pymodbus device with one register block per table, all addresses readable."""
        blocks: list[list[SimData]] = []
        for table in _TABLE_ORDER:
            size = max(1, len(self._mirror[table]))
            if table in BIT_TABLES:
                blocks.append([SimData(0, count=size, values=False, datatype=DataType.BITS)])
            else:
                blocks.append([SimData(0, count=size, values=0, datatype=DataType.REGISTERS)])
        return SimDevice(id=0, simdata=tuple(blocks), action=self._action)  # type: ignore[arg-type]

    async def _listen(self, port: int) -> None:
        server = ModbusTcpServer(
            self._device(),
            address=(self.host, port),
            trace_pdu=self._trace_pdu,
            trace_connect=self._trace_connect,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise SimPlcError(f"simulated PLC cannot listen on {self.host}:{port}") from exc
        self._server = server
        self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _close_server(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
            await asyncio.sleep(0)  # let the transports finish closing

    # ---- fault injection -------------------------------------------------

    def drop_connections(self) -> int:
        """Abort every client connection (a cable pulled for a moment); returns how many."""
        if self._server is None:
            return 0
        dropped = 0
        for conn in list(self._server.active_connections.values()):
            transport = conn.transport
            if transport is not None:
                transport.abort()  # type: ignore[attr-defined]
                dropped += 1
        return dropped

    async def set_offline(self, offline: bool) -> None:
        """Offline: stop listening and drop clients (refused); online: listen on the same port."""
        if offline and self._server is not None:
            await self._close_server()
        elif not offline and self._server is None:
            await self._listen(self.port)

    def restart(self) -> None:
        """A PLC restart (program download, power cycle): the start-up counter moves on, cell
        numbering starts again at 1, counters and handshake registers read 0, clients drop."""
        epoch = int(self.value("plc.epoch")) if "plc.epoch" in self.tag_map.tags else 0
        for table in ("holding_register", "input_register"):
            self._mirror[table][:] = [0] * len(self._mirror[table])
        self._set("plc.epoch", epoch % 65535 + 1)
        self._set("leach.ph_setpoint", self.tank.ph_setpoint)
        self._set("leach.temp_setpoint_c", self.tank.temp_setpoint_c)
        self._publish_process()
        was_running = self._feeder.running
        self._feeder = _Feeder()
        self.diverted.clear()
        self._watchdog = None
        self._present_head()
        self._set("line.running", False)
        if was_running:
            self.start_feeder()  # the PLC program starts the conveyor again
        self.drop_connections()
        log.warning("simulated PLC restarted: epoch %s, numbering from 1", self.value("plc.epoch"))

    def set_buffer_full(self, route: str, full: bool) -> None:
        """Raise or clear `buffer.<route>_full`: downstream of that route cannot take cells."""
        self._check_route(route)
        self._set(f"buffer.{route}_full", full)

    @staticmethod
    def _check_route(route: str) -> None:
        if route not in ROUTE_NAMES.values():
            known = ", ".join(ROUTE_NAMES.values())
            raise SimPlcError(f"unknown route '{route}'; expected one of {known}")

    def _drain_buffers(self, dt: float) -> None:
        for route, b in self.buffers.items():
            b.level = max(0.0, b.level - b.drain_cells_s * dt)
            full = b.level >= b.capacity
            if bool(self.value(f"buffer.{route}_full")) != full:
                self._set(f"buffer.{route}_full", full)

    # ---- feeder and diverter (also reachable via the coils) ---------------

    def start_feeder(self) -> None:
        """What `line.start_cmd` does: cells start arriving at rate_cells_s."""
        f = self._feeder
        if f.running or self._feeder_exhausted():
            return
        f.running = True
        f.started_at = time.monotonic()
        f.arrived_since_start = 0
        self._set("line.running", True)

    def stop_feeder(self) -> None:
        """What `line.stop_cmd` does: no more arrivals; queued cells stay queued."""
        self._feeder.running = False
        self._set("line.running", False)

    def _feeder_exhausted(self) -> bool:
        return self.max_cells is not None and self._feeder.arrived >= self.max_cells

    @property
    def queue_len(self) -> int:
        """Cells detected and not yet taken by the controller."""
        return self._feeder.arrived - self._feeder.taken

    @property
    def arrived(self) -> int:
        """Cells detected so far (the highest sequence number)."""
        return self._feeder.arrived

    def value(self, name: str) -> Value:
        """Current value of a tag as the PLC holds it (for tests and the run summary)."""
        tag = self.tag_map.tag(name)
        return tag.decode(self._mirror[tag.table][tag.address : tag.end])

    def _set(self, name: str, value: Value) -> None:
        tag = self.tag_map.tags.get(name)
        if tag is not None:  # a map without this tag simply does not show it
            self._mirror[tag.table][tag.address : tag.end] = [int(w) for w in tag.encode(value)]

    def _present_head(self) -> None:
        """Show the queue head and the cells behind it (or an empty queue) in the infeed tags."""
        f = self._feeder
        head = f.taken + 1
        present = f.arrived >= head
        self._set("infeed.cell_present", present)
        self._set("infeed.cell_seq", head if present else 0)
        for k, name in enumerate(("infeed.cell_mass_g", *self._next_masses)):
            seq = head + k
            self._set(name, self.cells.truth(seq).mass_g if seq <= f.arrived else 0.0)
        self._set("infeed.queue_len", min(f.arrived - f.taken, 65535))

    def _arrivals(self, now: float) -> None:
        f = self._feeder
        if not f.running:
            return
        due = int((now - f.started_at) * self.rate_cells_s) - f.arrived_since_start
        if self.max_cells is not None:
            due = min(due, self.max_cells - f.arrived)
        if due > 0:
            shown = f.arrived - f.taken <= len(self._next_masses)  # the new cells are in view
            f.arrived += due
            f.arrived_since_start += due
            if shown:
                self._present_head()
            else:
                self._set("infeed.queue_len", min(f.arrived - f.taken, 65535))
        if self._feeder_exhausted():
            self.stop_feeder()

    def _command(self, target: int, seq: int) -> None:
        """A diverter command arrived: run it now or after the actuation delay, in order."""
        f = self._feeder
        if self.faults.diverter_stuck:
            log.debug("diverter stuck: command seq %d ignored", seq)
            return
        if seq in self.diverted or any(c.seq == seq for c in f.pending):
            if seq in self.diverted and not f.pending:
                self._set("diverter.ack_target", self.diverted[seq])  # safe retry after a
                self._set("diverter.ack_seq", seq)  # lost answer: report what was done
            return
        if self.actuation_delay_s == 0 and not f.pending:
            self._actuate(target, seq)
            return
        now = time.monotonic()
        due = max(now + self.actuation_delay_s, f.pending[-1].due if f.pending else 0.0)
        f.pending.append(_Command(due, target, seq))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(
                self._loop_time(due), self._actuate_due
            )

    @staticmethod
    def _loop_time(mono: float) -> float:
        """asyncio's loop clock is time.monotonic on Linux; keep the translation in one place."""
        return asyncio.get_running_loop().time() + (mono - time.monotonic())

    def _actuate_due(self) -> None:
        self._timer = None
        pending = self._feeder.pending
        now = time.monotonic()
        while pending and pending[0].due <= now:
            cmd = pending.popleft()
            self._actuate(cmd.target, cmd.seq)
        if pending:
            self._timer = asyncio.get_running_loop().call_at(
                self._loop_time(pending[0].due), self._actuate_due
            )

    def _actuate(self, target: int, seq: int) -> None:
        name = f"counters.{ROUTE_NAMES[target]}"
        self._set(name, (int(self.value(name)) + 1) % 2**32)
        buffer = self.buffers.get(ROUTE_NAMES[target])
        if buffer is not None:
            buffer.level += 1
        self.diverted[seq] = target
        self._set("diverter.ack_target", target)
        self._set("diverter.ack_seq", seq)
        if self._done_slots:
            slot = (seq - 1) % self._done_slots + 1
            self._set(DONE_TARGET.format(slot), target)
            self._set(DONE_SEQ.format(slot), seq)

    # ---- process -----------------------------------------------------------

    def _publish_process(self) -> None:
        for name, v in self.tank.values().items():
            self._set(name, v)

    async def _scan(self) -> None:
        """The PLC scan: arrivals, heartbeat, process model."""
        last_process = last_scan = time.monotonic()
        heartbeat = 0
        while True:
            await asyncio.sleep(self.scan_s)
            if self.faults.scan_stopped:
                continue
            now = time.monotonic()
            self._supervise_watchdog(now)
            self._arrivals(now)
            self._drain_buffers(now - last_scan)
            last_scan = now
            heartbeat = (heartbeat + 1) % 65536
            self._set("plc.heartbeat", heartbeat)
            if now - last_process >= self.process_period_s:
                if not self.hold_process:
                    self.tank.step(now - last_process)
                    self._publish_process()
                last_process = now

    def _supervise_watchdog(self, now: float) -> None:
        """Stop the infeed when the controller's watchdog counter stands still."""
        if "controller.watchdog" not in self.tag_map.tags:
            return
        value = int(self.value("controller.watchdog"))
        if self._watchdog is None:
            if value != 0:  # a controller that writes the watchdog is supervised from now on
                self._watchdog = (value, now)
            return
        if value != self._watchdog[0]:
            self._watchdog = (value, now)
        elif now - self._watchdog[1] > self.watchdog_s and self._feeder.running:
            log.warning(
                "controller watchdog stood still for %.1f s: infeed stopped", self.watchdog_s
            )
            self.stop_feeder()

    # ---- Modbus side -------------------------------------------------------

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests[pdu.function_code] += 1
        return pdu

    def _trace_connect(self, connected: bool) -> None:
        if connected:
            self.connects += 1

    @property
    def request_count(self) -> int:
        """Modbus requests received since start (all function codes)."""
        return sum(self.requests.values())

    def _touches(self, table: str, address: int, count: int, names: frozenset[str]) -> bool:
        for name in names:
            tag = self.tag_map.tags.get(name)
            if tag and tag.table == table and tag.address < address + count and address < tag.end:
                return True
        return False

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus datastore hook: faults, write handshakes, then show the mirror."""
        table = _TABLE_OF_FC[function_code]
        faults = self.faults
        if faults.stall_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), faults.stall_s)
        if faults.exception_code is not None:
            span = len(set_values) if set_values is not None else count
            if table in BIT_TABLES and set_values is None:
                span = count * 16  # pymodbus passes bit reads as a count of 16-bit words
            if not faults.exception_tags or self._touches(
                table, address, span, faults.exception_tags
            ):
                return ExcCodes(faults.exception_code)
        if set_values is not None:
            rejected = self._write(table, address, set_values)
            if rejected is not None:
                return rejected
        mirror = self._mirror[table]
        if table in BIT_TABLES:
            bits = [bool(b) for b in mirror]
            bits += [False] * (-len(bits) % 16)
            registers[: len(bits) // 16] = SimUtils.bitsToRegisters(bits)
        else:
            registers[: len(mirror)] = mirror
        return None

    def _write(
        self, table: str, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        """Apply a write to the mirror and run the handshakes; reject bad commands whole."""
        mirror = self._mirror[table]
        new = list(mirror)
        new[address : address + len(values)] = [int(v) for v in values]
        end = address + len(values)
        hit = {t.name: t for t in self._tags_by_table[table] if t.address < end and address < t.end}

        def val(name: str) -> int:
            tag = self.tag_map.tags[name]
            return int(tag.decode(new[tag.address : tag.end]))

        f = self._feeder
        take = "infeed.taken_seq" in hit
        if take:
            taken = val("infeed.taken_seq")
            if taken > f.arrived:
                return ExcCodes.ILLEGAL_VALUE  # not queued: a cell never detected
        divert = "diverter.seq" in hit  # writing the seq fires the command
        if divert:
            target, seq = val("diverter.target"), val("diverter.seq")
            if target not in ROUTE_NAMES or not 1 <= seq <= f.arrived:
                return ExcCodes.ILLEGAL_VALUE  # unknown route or a cell never detected
        start = "line.start_cmd" in hit and val("line.start_cmd") == 1
        stop = "line.stop_cmd" in hit and val("line.stop_cmd") == 1
        for tag in hit.values():
            if tag.momentary:  # command coils read back 0: the PLC resets them
                new[tag.address] = 0
                values[tag.address - address] = False  # type: ignore[index]
        mirror[:] = new
        if take and taken > f.taken:
            f.taken = taken
            self._present_head()
        if divert:
            self._command(target, seq)
        if start and not stop:
            self.start_feeder()
        if stop:
            self.stop_feeder()
        if "leach.ph_setpoint" in hit or "leach.temp_setpoint_c" in hit:
            self.tank.ph_setpoint = float(self.value("leach.ph_setpoint"))
            self.tank.temp_setpoint_c = float(self.value("leach.temp_setpoint_c"))
        return None
