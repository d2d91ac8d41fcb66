"""Simulated Amptek DP5 heads: asyncio UDP servers speaking the DP5 packet protocol
(drivers/dp5.py, docs/xrf.md) with the physics spectra of drivers/sim/xrfphysics.py.

A head is never told what it measures. When its MCA is enabled it sees whatever the line's
geometry (`ConveyorLanes`, fed by the simulated PLC's conveyor) puts in front of it: the oldest
cell of its lane not yet measured, or the belt's reference pellet when the lane is empty.
Timing: the acquisition lasts the preset time (x `dwell_scale`); a spectrum reply takes its
size over a 10 Mbit/s link to read out and comes in datagrams of one Ethernet frame. At
`dwell_scale` 0 (`plant bench`) an acquisition takes no time: it is over, its spectrum
computed, when the enable is acknowledged, as an SCPI head answers a measurement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers.dp5 import (
    ACK_OK,
    CHANNELS,
    REPLY_CONFIG,
    REPLY_STATUS,
    REQ_CLEAR,
    REQ_CONFIG_READ,
    REQ_CONFIG_SET,
    REQ_DISABLE,
    REQ_ENABLE,
    REQ_SPECTRUM,
    REQ_SPECTRUM_STATUS,
    REQ_SPECTRUM_STATUS_CLEAR,
    REQ_STATUS,
    UDP_CHUNK,
    Dp5Status,
    PacketError,
    ack,
    decode,
    encode,
    parse_config,
    spectrum_packet,
)
from drivers.sim.cells import CellStream
from drivers.sim.plc import SimPlc
from drivers.sim.profiles import PROFILES, InstrumentProfile
from drivers.sim.xrf import DEFAULT_PROFILE, SimStation, sample_spectrum
from drivers.xrf import CHECK_SAMPLE

log = logging.getLogger(__name__)

LINK_BPS = 10e6  # the DP5's 10BASE-T Ethernet
AMBIENT_K = 295.0
_NO_DATA = frozenset(
    {
        REQ_STATUS,
        REQ_SPECTRUM,
        REQ_SPECTRUM_STATUS,
        REQ_SPECTRUM_STATUS_CLEAR,
        REQ_CLEAR,
        REQ_ENABLE,
        REQ_DISABLE,
    }
)


class ConveyorLanes:
    """Which cell is in front of each of N heads: head k (0-based) sees lane k, the cells with
    (seq - 1) mod N = k, each from its arrival until it is measured or has left the line."""

    def __init__(self, plc: SimPlc, n_heads: int) -> None:
        self.plc = plc
        self.n = n_heads
        self._epoch: object = None
        self._next = list(range(1, n_heads + 1))

    def take(self, k: int) -> int | None:
        """The cell head k measures now (None: the lane is empty)."""
        epoch = self.plc.value("plc.epoch") if "plc.epoch" in self.plc.tag_map.tags else None
        if epoch != self._epoch:  # a PLC restart numbers the cells from 1 again
            self._epoch, self._next = epoch, list(range(1, self.n + 1))
        seq = self._next[k]
        while seq in self.plc.diverted:  # passed the station unmeasured
            seq += self.n
        if seq > self.plc.arrived:
            self._next[k] = seq
            return None
        self._next[k] = seq + self.n
        return seq


@dataclass
class _Acquisition:
    """What the MCA holds: counts and the status counters."""

    counts: npt.NDArray[np.float64]
    fast: int = 0
    slow: int = 0
    acc_s: float = 0.0
    real_s: float = 0.0
    preset_reached: bool = False


class _Server(asyncio.DatagramProtocol):
    def __init__(self, head: SimDp5Head) -> None:
        self.head = head

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.head.inbox.put_nowait((data, addr))


class SimDp5Head:
    """One simulated DP5 on UDP host:port (0 = ephemeral)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        profile: InstrumentProfile | str = DEFAULT_PROFILE,
        seed: int = 1,
        dwell_scale: float = 1.0,
        name: str = "dp5-sim",
        stream: CellStream | None = None,
        view: Callable[[], int | None] | None = None,
        warm: bool = False,
        serial: int | None = None,
    ) -> None:
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise ValueError(f"unknown XRF profile {profile!r}; known: {sorted(PROFILES)}")
            profile = PROFILES[profile]
        if profile.n_channels not in CHANNELS:
            raise ValueError(f"profile {profile.name}: a DP5 has 256-8192 channels")
        if not (math.isfinite(dwell_scale) and dwell_scale >= 0):
            raise ValueError(f"dwell_scale must be >= 0, got {dwell_scale}")
        self.host = host
        self.requested_port = port
        self.base_profile = profile
        self.dwell_scale = dwell_scale
        self.name = name
        self.stream = stream if stream is not None else CellStream(seed)
        self.view = view or (lambda: None)
        self.warm = warm
        self.serial = serial if serial is not None else zlib.crc32(name.encode()) % 100_000
        self.settings: dict[str, str] = {
            "MCAC": str(profile.n_channels),
            "PRET": "OFF",
            "PRER": "OFF",
            "HVSE": "-130" if profile.detector == "SDD" else "180",
            "TECS": "225" if profile.detector == "SDD" else "220",
            "GAIN": "20",
            "TPEA": "1.0",
        }
        # the cell (None: the reference pellet) of each recent acquisition, for tests and logs
        self.measured: deque[int | None] = deque(maxlen=100_000)
        self.requests: Counter[tuple[int, int]] = Counter()  # packets received, by PID
        self.inbox: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self._seeds = np.random.SeedSequence([seed, zlib.crc32(name.encode())])
        self._mca = _Acquisition(np.zeros(profile.n_channels))
        self._enabled_at: float | None = None
        self._sample: int | None = None
        self._job: asyncio.Task[None] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._worker: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        if self._transport is None:
            raise RuntimeError(f"{self.name} is not started")
        return int(self._transport.get_extra_info("sockname")[1])

    async def start(self) -> None:
        if self.warm:
            from drivers.sim import xrfphysics

            await asyncio.to_thread(xrfphysics.warm, (self.base_profile.name,))
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Server(self), local_addr=(self.host, self.requested_port)
        )
        self._worker = asyncio.create_task(self._serve(), name=f"{self.name}-serve")
        log.info("%s: DP5 head on UDP %s:%d", self.name, self.host, self.port)

    async def stop(self) -> None:
        for task in (self._worker, self._job):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> SimDp5Head:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- detector

    @property
    def n_channels(self) -> int:
        return int(self.settings["MCAC"])

    @property
    def enabled(self) -> bool:
        return self._enabled_at is not None

    def status(self) -> Dp5Status:
        m = self._mca
        acc = m.acc_s
        if self._enabled_at is not None:
            acc = self._elapsed()
            preset = self._preset()
            acc = min(acc, preset) if preset else acc
        hv = self.settings["HVSE"]
        tec = self.settings["TECS"]
        return Dp5Status(
            fast_count=m.fast,
            slow_count=m.slow,
            acc_time_s=acc,
            real_time_s=m.real_s if self._enabled_at is None else acc,
            serial=self.serial,
            hv_v=0.0 if hv == "OFF" else float(hv),
            detector_temp_k=AMBIENT_K if tec == "OFF" else float(tec),
            board_temp_c=35,
            preset_time_reached=m.preset_reached,
            mca_enabled=self.enabled,
            device_type=1,  # PX5 / X-123 family
        )

    def _preset(self) -> float | None:
        pret = self.settings["PRET"]
        return None if pret == "OFF" else float(pret)

    def _elapsed(self) -> float:
        assert self._enabled_at is not None
        wall = asyncio.get_running_loop().time() - self._enabled_at
        return wall / self.dwell_scale if self.dwell_scale > 0 else self._preset() or 0.0

    async def _render(self, seq: int | None, acc_s: float) -> _Acquisition:
        """What the MCA counts in acc_s with the sample in view: the physics spectrum at the
        rate that sample gives, less the pulses lost to dead time."""
        rng = np.random.default_rng(self._seeds.spawn(1)[0])
        sample = f"CELL:{seq}" if seq is not None else CHECK_SAMPLE
        spectrum = await sample_spectrum(self.stream, sample, None, self.base_profile, acc_s, rng)
        real = spectrum.real_time_s or acc_s
        kept = spectrum.live_time_s / real  # 1 - dead time
        counts = rng.binomial(spectrum.counts.astype(np.int64), kept).astype(np.float64)
        if self.settings["HVSE"] == "OFF":
            counts[:] = 0  # no bias: no charge collected
        factor = self.base_profile.n_channels // self.n_channels
        counts = counts.reshape(-1, factor).sum(axis=1)
        slow = int(counts.sum())
        return _Acquisition(counts, round(slow / kept), slow, acc_s, acc_s * 1.0005, True)

    async def _run(self, preset: float) -> None:
        """An acquisition to the preset time."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        result = await self._render(self._sample, preset)
        rest = preset * self.dwell_scale - (loop.time() - t0)
        if rest > 0:
            await asyncio.sleep(rest)
        self._finish(result)

    def _finish(self, result: _Acquisition) -> None:
        self._mca = result
        self._enabled_at = None
        self.measured.append(self._sample)

    # ----------------------------------------------------------------- protocol

    async def _serve(self) -> None:
        while True:
            data, addr = await self.inbox.get()
            self.requests[(data[2], data[3]) if len(data) >= 4 else (-1, -1)] += 1
            try:
                reply = await self._answer(data)
            except Exception as exc:  # a simulator bug: say so in the log, answer FPGA error
                log.exception("%s: failed on %s", self.name, data[:8].hex(" "))
                reply = ack(8, str(exc)[:60].encode())
            if reply and self._transport is not None:
                if len(reply) > 1024 and self.dwell_scale > 0:  # readout over the head's link
                    await asyncio.sleep(len(reply) * 8 / LINK_BPS * self.dwell_scale)
                for i in range(0, len(reply), UDP_CHUNK):
                    self._transport.sendto(reply[i : i + UDP_CHUNK], addr)

    async def _answer(self, raw: bytes) -> bytes:
        try:
            packet = decode(raw)
        except PacketError as exc:
            return ack(exc.ack)
        pid = packet.pid
        if pid in _NO_DATA and packet.data:
            return ack(3)
        if pid == REQ_STATUS:
            return encode(REPLY_STATUS, self.status().encode())
        if pid in (REQ_SPECTRUM, REQ_SPECTRUM_STATUS, REQ_SPECTRUM_STATUS_CLEAR):
            status = self.status() if pid != REQ_SPECTRUM else None
            reply = spectrum_packet(self._mca.counts, status)
            if pid == REQ_SPECTRUM_STATUS_CLEAR:
                await self._clear()
            return reply
        if pid == REQ_CONFIG_SET:
            return self._configure(packet.data)
        if pid == REQ_CONFIG_READ:
            return self._read_config(packet.data)
        if pid == REQ_CLEAR:
            await self._clear()
            return ack(ACK_OK)
        if pid == REQ_ENABLE:
            self._enable()
            if self.dwell_scale == 0 and self._job is not None:
                await self._job  # an acquisition in no time is over before its enable is acked
            return ack(ACK_OK)
        if pid == REQ_DISABLE:
            await self._disable()
            return ack(ACK_OK)
        return ack(2)

    async def _clear(self) -> None:
        """Zero the spectrum, counters and timers; an acquisition in progress starts over on
        what is in front of the head now."""
        running = self.enabled
        if self._job is not None:
            self._job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job
        self._enabled_at = None
        self._mca = _Acquisition(np.zeros(self.n_channels))
        if running:
            self._enable()

    def _enable(self) -> None:
        if self.enabled:
            return
        preset = self._preset()
        if preset is not None and self._mca.preset_reached and self._mca.acc_s >= preset:
            return  # not cleared since its preset was reached: over at once, the old counts kept
        self._sample = self.view()
        self._enabled_at = asyncio.get_running_loop().time()
        if preset is not None:
            self._job = asyncio.create_task(self._run(preset), name=f"{self.name}-acquire")

    async def _disable(self) -> None:
        if not self.enabled:
            return
        elapsed = max(self._elapsed(), 0.001)
        if self._job is not None:
            self._job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job
        result = await self._render(self._sample, elapsed)
        result.preset_reached = False
        self._finish(result)

    def _configure(self, data: bytes) -> bytes:
        try:
            items = parse_config(data)
        except ValueError:
            return ack(5, data[:40])
        for key, value in items.items():
            if key not in self.settings:
                return ack(7, f"{key}={value};".encode())
            if not self._valid(key, value):
                return ack(5, f"{key}={value};".encode())
        rebin = items.get("MCAC", self.settings["MCAC"]) != self.settings["MCAC"]
        if self.enabled and rebin:
            return ack(13)  # busy: no channel change while acquiring
        self.settings.update(items)
        if rebin:
            self._mca = _Acquisition(np.zeros(self.n_channels))
        return ack(ACK_OK)

    def _valid(self, key: str, value: str) -> bool:
        if key == "MCAC":
            n = int(value) if value.isdigit() else 0
            return n in CHANNELS and n <= self.base_profile.n_channels
        if value == "OFF" and key in ("PRET", "PRER", "HVSE", "TECS"):
            return True
        try:
            number = float(value)
        except ValueError:
            return False
        limits: dict[str, tuple[float, float]] = {
            "PRET": (0.001, 99_999_999.9),
            "PRER": (0.001, 99_999_999.9),
            "HVSE": (-2000.0, 2000.0),
            "TECS": (0.0, 299.0),
            "GAIN": (1.0, 500.0),
            "TPEA": (0.05, 102.4),
        }
        low, high = limits[key]
        return math.isfinite(number) and low <= number <= high

    def _read_config(self, data: bytes) -> bytes:
        try:
            keys = parse_config(data)
        except ValueError:
            return ack(5, data[:40])
        unknown = [k for k in keys if k not in self.settings]
        if unknown:
            return ack(7, f"{unknown[0]}=?;".encode())
        return encode(REPLY_CONFIG, "".join(f"{k}={self.settings[k]};" for k in keys).encode())


class SimDp5Station(SimStation[SimDp5Head]):
    """Simulated DP5 heads; with `lanes`, head k sees lane k of the simulated conveyor."""

    def __init__(self, n_heads: int, *, lanes: ConveyorLanes | None = None, **options: Any):
        self.lanes = lanes
        super().__init__(n_heads, **options)

    def _make_head(self, k: int, **options: Any) -> SimDp5Head:
        lanes = self.lanes
        view = (lambda: lanes.take(k)) if lanes is not None else None
        return SimDp5Head(view=view, **options)
