"""Amptek DP5-family pulse processors (DP5, PX5, X-123, DP5X) over UDP: packet codec, status,
spectra, and an asyncio client per detector head (docs/xrf.md).

The protocol is the one of Amptek's *Digital Products Programmer's Guide*: a packet is
`F5 FA PID1 PID2 LEN_MSB LEN_LSB DATA... CHK_MSB CHK_LSB`, the checksum the 16-bit two's
complement of the sum of every byte before it. A DP5 knows nothing of cells or energies: it
counts pulses into channels. The plant holds each head's energy calibration and the line's
geometry decides which cell is in front of which head (`XrfStation(lanes=True)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from drivers.spectra import Spectrum, SpectrumError
from drivers.xrf import (
    HeadLink,
    XrfConnectionError,
    XrfError,
    XrfInstrumentError,
    XrfTimeoutError,
    check_live_time,
)

DP5_PORT = 10001  # the DP5's UDP port (Programmer's Guide, "Ethernet")
NETFINDER_PORT = 3040  # Netfinder discovery broadcast (UDP)
SYNC = b"\xf5\xfa"
HEADER_SIZE = 6
MIN_PACKET = HEADER_SIZE + 2
MAX_DATA = 0xFFFF  # LEN is 16 bits
MAX_REQUEST_DATA = 512  # a request's data field is at most 512 bytes
UDP_CHUNK = 1472  # one Ethernet frame of UDP payload: longer packets come in several datagrams
STATUS_SIZE = 64
POLL_S = 0.002  # status poll period once the preset is due
PRESET_GRACE_S = 1.0  # a head still counting this long after its preset time is faulty

# Request PIDs (PID1, PID2)
REQ_STATUS = (0x01, 0x01)
REQ_SPECTRUM = (0x02, 0x01)
REQ_SPECTRUM_STATUS = (0x02, 0x03)
REQ_SPECTRUM_STATUS_CLEAR = (0x02, 0x04)  # read, then clear spectrum, counters and timers
REQ_CONFIG_SET = (0x20, 0x02)
REQ_CONFIG_READ = (0x20, 0x03)
REQ_CLEAR = (0xF0, 0x01)
REQ_ENABLE = (0xF0, 0x02)
REQ_DISABLE = (0xF0, 0x03)
# Reply PIDs
REPLY_STATUS = (0x80, 0x01)
SPECTRUM_PID1 = 0x81
REPLY_CONFIG = (0x82, 0x07)
ACK_PID1 = 0xFF
ACK_OK = 0
ACK_TEXT = {
    0: "OK",
    1: "sync error",
    2: "PID error",
    3: "length error",
    4: "checksum error",
    5: "bad parameter",
    6: "bad hex record",
    7: "unrecognized command",
    8: "FPGA error",
    9: "CP2201 (Ethernet controller) not found",
    10: "scope data not available",
    11: "PC5 not present",
    12: "OK, sharing request",
    13: "busy",
    14: "I2C error",
    15: "OK, FPGA upload address",
    16: "feature not supported by this FPGA version",
    17: "calibration data not present",
}
CHANNELS = (256, 512, 1024, 2048, 4096, 8192)
DEVICE_TYPES = {0: "DP5", 1: "PX5", 2: "DP5G", 3: "MCA8000D", 4: "TB5", 5: "DP5X"}
_CONFIG_ITEM = re.compile(r"([A-Z0-9]{4})=([^;=]*)")


class PacketError(ValueError):
    """Bytes that are no valid DP5 packet; `ack` is the ACK error a DP5 answers them with."""

    def __init__(self, ack: int, message: str) -> None:
        super().__init__(message)
        self.ack = ack


class Dp5AckError(XrfInstrumentError):
    """The DP5 refused a request with an ACK error packet (code and meaning in the message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def checksum(data: bytes) -> int:
    """16-bit two's complement of the sum of `data` (every packet byte before the checksum)."""
    if len(data) > 256:  # a spectrum: numpy sums 12 KB ten times faster than Python
        return -int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFF
    return -sum(data) & 0xFFFF


def encode(pid: tuple[int, int], data: bytes = b"") -> bytes:
    """One packet: sync, PID, length, data, checksum."""
    if len(data) > MAX_DATA:
        raise ValueError(f"DP5 packet data of {len(data)} bytes: at most {MAX_DATA}")
    body = SYNC + bytes(pid) + len(data).to_bytes(2, "big") + data
    return body + checksum(body).to_bytes(2, "big")


@dataclass(frozen=True)
class Packet:
    """A decoded packet."""

    pid1: int
    pid2: int
    data: bytes = b""

    @property
    def pid(self) -> tuple[int, int]:
        return (self.pid1, self.pid2)


def packet_size(header: bytes) -> int:
    """Whole packet size announced by its first six bytes."""
    return MIN_PACKET + int.from_bytes(header[4:6], "big")


def decode(raw: bytes) -> Packet:
    """Check sync, length and checksum (in that order, as a DP5 does) and split the packet."""
    if raw[:2] != SYNC:
        raise PacketError(1, f"packet starts {raw[:2].hex(' ')}, not the sync bytes f5 fa")
    if len(raw) < MIN_PACKET or packet_size(raw) != len(raw):
        announced = packet_size(raw) if len(raw) >= HEADER_SIZE else "?"
        raise PacketError(3, f"packet of {len(raw)} bytes announces {announced}")
    want, got = checksum(raw[:-2]), int.from_bytes(raw[-2:], "big")
    if want != got:
        raise PacketError(4, f"checksum {got:04x}, expected {want:04x}")
    return Packet(raw[2], raw[3], raw[HEADER_SIZE:-2])


def ack(code: int, data: bytes = b"") -> bytes:
    """An ACK packet (PID1 0xFF): 0 OK, else the error code."""
    return encode((ACK_PID1, code), data)


# --------------------------------------------------------------------------- spectra


def spectrum_pid2(n_channels: int, with_status: bool) -> int:
    """PID2 of a spectrum reply: 1/2 for 256 channels (without/with status) ... 11/12 for 8192."""
    if n_channels not in CHANNELS:
        raise ValueError(f"a DP5 spectrum has 256-8192 channels (a power of 2), not {n_channels}")
    return 2 * CHANNELS.index(n_channels) + 1 + int(with_status)


def spectrum_layout(pid2: int) -> tuple[int, bool]:
    """(channels, status appended) of a spectrum reply's PID2."""
    if not 1 <= pid2 <= 2 * len(CHANNELS):
        raise ValueError(f"spectrum reply PID2 {pid2} is not 1-12")
    return CHANNELS[(pid2 - 1) // 2], pid2 % 2 == 0


def encode_counts(counts: npt.ArrayLike) -> bytes:
    """3 bytes per channel, least significant first (counts saturate at 2^24 - 1)."""
    c = np.clip(np.rint(np.asarray(counts, dtype=np.float64)), 0, 0xFFFFFF).astype("<u4")
    return c.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


def decode_counts(data: bytes) -> npt.NDArray[np.float64]:
    """Inverse of `encode_counts`."""
    b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.uint32)
    return (b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16).astype(np.float64)


def spectrum_packet(counts: npt.ArrayLike, status: Dp5Status | None = None) -> bytes:
    """A spectrum reply (PID1 0x81), the 64-byte status appended when given."""
    payload = encode_counts(counts)
    pid2 = spectrum_pid2(len(payload) // 3, status is not None)
    return encode((SPECTRUM_PID1, pid2), payload + (status.encode() if status else b""))


def parse_spectrum(packet: Packet) -> tuple[npt.NDArray[np.float64], Dp5Status | None]:
    """Counts and (for PID2 2, 4, ... 12) the status of a spectrum reply."""
    n, with_status = spectrum_layout(packet.pid2)
    size = 3 * n + (STATUS_SIZE if with_status else 0)
    if len(packet.data) != size:
        raise ValueError(f"spectrum reply PID2 {packet.pid2}: {len(packet.data)} bytes, not {size}")
    status = Dp5Status.decode(packet.data[3 * n :]) if with_status else None
    return decode_counts(packet.data[: 3 * n]), status


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class DetectorLimits:
    """When a head's detector needs attention (docs/xrf.md, "Detector health")."""

    max_dead_time: float = 0.5  # fraction of the accumulation time
    min_temp_k: float = 200.0
    max_temp_k: float = 260.0
    min_hv_v: float = 20.0  # |HV| below this: high voltage off


@dataclass(frozen=True)
class Dp5Status:
    """The 64-byte status (Programmer's Guide, "Status packet"): counters, times, health."""

    fast_count: int = 0
    slow_count: int = 0
    gp_count: int = 0
    acc_time_s: float = 0.0  # accumulation time (stops while gated or in reset lockout)
    real_time_s: float = 0.0
    firmware: int = 0x68  # version as nibbles: 0x68 = 6.08
    fpga: int = 0x6B
    serial: int = 0
    hv_v: float = 0.0
    detector_temp_k: float = 0.0
    board_temp_c: int = 25
    preset_time_reached: bool = False
    mca_enabled: bool = False
    preset_count_reached: bool = False
    device_type: int = 0

    @property
    def dead_time(self) -> float:
        """Share of pulses lost (1 - slow/fast), as Amptek's software reports it."""
        if self.fast_count <= 0:
            return 1.0 if self.slow_count else 0.0
        return max(0.0, 1.0 - self.slow_count / self.fast_count)

    @property
    def live_time_s(self) -> float:
        """Accumulation time less the dead time (what DppMCA writes as LIVE_TIME)."""
        return self.acc_time_s * (1.0 - self.dead_time)

    @property
    def device(self) -> str:
        return DEVICE_TYPES.get(self.device_type, f"type {self.device_type}")

    def encode(self) -> bytes:
        raw = bytearray(STATUS_SIZE)
        raw[0:4] = _u32(self.fast_count)
        raw[4:8] = _u32(self.slow_count)
        raw[8:12] = _u32(self.gp_count)
        acc_ms = round(self.acc_time_s * 1000)
        raw[12] = acc_ms % 100
        raw[13:16] = min(acc_ms // 100, 0xFFFFFF).to_bytes(3, "little")
        raw[20:24] = _u32(round(self.real_time_s * 1000))
        raw[24], raw[25] = self.firmware, self.fpga
        raw[26:30] = _u32(self.serial & 0x7FFFFFFF)
        raw[30:32] = round(self.hv_v * 2).to_bytes(2, "big", signed=True)
        raw[32:34] = min(round(self.detector_temp_k * 10), 0xFFF).to_bytes(2, "big")
        raw[34] = self.board_temp_c & 0xFF
        raw[35] = (
            0x80 * self.preset_time_reached
            | 0x20 * self.mca_enabled
            | 0x10 * self.preset_count_reached
            | 0x02  # configured
        )
        raw[39] = self.device_type
        return bytes(raw)

    @classmethod
    def decode(cls, raw: bytes) -> Dp5Status:
        if len(raw) != STATUS_SIZE:
            raise ValueError(f"DP5 status is {STATUS_SIZE} bytes, got {len(raw)}")
        return cls(
            fast_count=int.from_bytes(raw[0:4], "little"),
            slow_count=int.from_bytes(raw[4:8], "little"),
            gp_count=int.from_bytes(raw[8:12], "little"),
            acc_time_s=raw[12] * 0.001 + int.from_bytes(raw[13:16], "little") * 0.1,
            real_time_s=int.from_bytes(raw[20:24], "little") * 0.001,
            firmware=raw[24],
            fpga=raw[25],
            serial=int.from_bytes(raw[26:30], "little") if raw[29] < 0x80 else -1,
            hv_v=int.from_bytes(raw[30:32], "big", signed=True) * 0.5,
            detector_temp_k=((raw[32] & 0x0F) << 8 | raw[33]) * 0.1,
            board_temp_c=raw[34] - 256 if raw[34] & 0x80 else raw[34],
            preset_time_reached=bool(raw[35] & 0x80),
            mca_enabled=bool(raw[35] & 0x20),
            preset_count_reached=bool(raw[35] & 0x10),
            device_type=raw[39],
        )

    def problems(self, limits: DetectorLimits) -> dict[str, str | None]:
        """Each detector-health alarm code -> its text when it applies, else None."""
        t = self.detector_temp_k
        return {
            "dead_time": (
                f"dead time {self.dead_time:.0%} above {limits.max_dead_time:.0%}"
                if self.dead_time > limits.max_dead_time
                else None
            ),
            "detector_temp": (
                f"detector at {t:.1f} K, outside {limits.min_temp_k:g}-{limits.max_temp_k:g} K"
                if not limits.min_temp_k <= t <= limits.max_temp_k
                else None
            ),
            "hv_off": (
                f"detector high voltage off ({self.hv_v:g} V)"
                if abs(self.hv_v) < limits.min_hv_v
                else None
            ),
        }

    def mca_lines(self) -> dict[str, str]:
        """The <<DPP STATUS>> lines DppMCA writes into an .mca file."""
        return {
            "Device Type": self.device,
            "Serial Number": str(self.serial),
            "Firmware": f"{self.firmware >> 4}.{self.firmware & 0xF:02d}",
            "FPGA": f"{self.fpga >> 4}.{self.fpga & 0xF:02d}",
            "Fast Count": str(self.fast_count),
            "Slow Count": str(self.slow_count),
            "GP Count": str(self.gp_count),
            "Accumulation Time": f"{self.acc_time_s:.6f}",
            "Real Time": f"{self.real_time_s:.6f}",
            "Dead Time": f"{self.dead_time:.2%}",
            "HV Volt": f"{self.hv_v:.0f}V",
            "TEC Temp": f"{self.detector_temp_k:.0f}K",
            "Board Temp": f"{self.board_temp_c}C",
        }


def _u32(value: int) -> bytes:
    return min(max(int(value), 0), 0xFFFFFFFF).to_bytes(4, "little")


# --------------------------------------------------------------------------- configuration


def config_text(settings: Mapping[str, object]) -> bytes:
    """Text configuration, e.g. {'PRET': 0.05, 'MCAC': 2048} -> b'PRET=0.05;MCAC=2048;'."""
    parts = []
    for key, value in settings.items():
        text = f"{value:g}" if isinstance(value, float) else str(value)
        if not re.fullmatch(r"[A-Z0-9]{4}", key) or not re.fullmatch(r"[^;=]*", text):
            raise ValueError(f"DP5 configuration {key}={text!r}: 4-letter command, no ; or =")
        parts.append(f"{key}={text};")
    data = "".join(parts).encode("ascii")
    if len(data) > MAX_REQUEST_DATA:
        raise ValueError(f"DP5 configuration of {len(data)} bytes: at most {MAX_REQUEST_DATA}")
    return data


def parse_config(data: bytes) -> dict[str, str]:
    """`CMD=VALUE;...` text (a readback or a request) -> {CMD: VALUE}; spaces ignored."""
    text = data.decode("ascii", "replace").replace(" ", "").replace("\r", "").replace("\n", "")
    items = [item for item in text.split(";") if item]
    out: dict[str, str] = {}
    for item in items:
        m = _CONFIG_ITEM.fullmatch(item.upper())
        if m is None:
            raise ValueError(f"DP5 configuration item {item[:20]!r} is not CMD=VALUE")
        out[m.group(1)] = m.group(2)
    return out


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class Calibration:
    """A head's energy scale, E(ch) = offset + gain * ch: the host's, not the DP5's."""

    offset_kev: float = 0.0
    kev_per_channel: float = 0.01
    n_channels: int = 4096

    def __post_init__(self) -> None:
        spectrum_pid2(self.n_channels, False)  # validates the channel count
        if not (math.isfinite(self.kev_per_channel) and self.kev_per_channel > 0):
            raise ValueError(f"keV/channel must be > 0, got {self.kev_per_channel}")


class _Receiver(asyncio.DatagramProtocol):
    """Reassembles packets that arrive over several datagrams; queues whole ones."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.packets: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.buffer += data
        while len(self.buffer) >= HEADER_SIZE:
            start = self.buffer.find(SYNC)
            if start < 0:
                self.buffer.clear()
                return
            del self.buffer[:start]
            if len(self.buffer) < HEADER_SIZE:
                return
            size = packet_size(bytes(self.buffer[:HEADER_SIZE]))
            if len(self.buffer) < size:
                return
            self.packets.put_nowait(bytes(self.buffer[:size]))
            del self.buffer[:size]

    def error_received(self, exc: Exception) -> None:
        self.packets.put_nowait(exc)

    def drain(self) -> None:
        """Forget anything left from an earlier request (a late reply, a partial packet)."""
        self.buffer.clear()
        while not self.packets.empty():
            self.packets.get_nowait()


@dataclass
class DetectorHealth:
    """The detector as its last status showed it, and its alarm texts."""

    status: Dp5Status | None = None
    problems: dict[str, str | None] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        s = self.status
        if s is None:
            return {"status": None, "problems": {}}
        return {
            "status": {
                "device": s.device,
                "serial": s.serial,
                "dead_time": round(s.dead_time, 4),
                "detector_temp_k": round(s.detector_temp_k, 1),
                "hv_v": s.hv_v,
                "board_temp_c": s.board_temp_c,
                "mca_enabled": s.mca_enabled,
                "fast_count": s.fast_count,
                "slow_count": s.slow_count,
                "acc_time_s": round(s.acc_time_s, 3),
                "real_time_s": round(s.real_time_s, 3),
            },
            "problems": {k: v for k, v in self.problems.items() if v},
        }


class Dp5Client(HeadLink):
    """One DP5 head over UDP: one request at a time, replies matched by PID, retries on loss."""

    # Replies each request may get, besides an ACK error.
    _REPLIES: ClassVar[dict[tuple[int, int], str]] = {
        REQ_STATUS: "status",
        REQ_SPECTRUM: "spectrum",
        REQ_SPECTRUM_STATUS: "spectrum",
        REQ_SPECTRUM_STATUS_CLEAR: "spectrum",
        REQ_CONFIG_READ: "config",
    }

    def __init__(
        self,
        host: str,
        port: int = DP5_PORT,
        *,
        calibration: Calibration | None = None,
        limits: DetectorLimits | None = None,
        tube_kv: float | None = None,
        timeout_s: float = 0.5,
        retries: int = 2,
        name: str | None = None,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
    ) -> None:
        super().__init__(
            host, port, name=name, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s
        )
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"DP5 timeout must be > 0 s, got {timeout_s}")
        self.calibration = calibration or Calibration()
        self.limits = limits or DetectorLimits()
        self.tube_kv = tube_kv
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.detector = DetectorHealth()
        self._settings: dict[str, str] = {}  # what this client last configured
        self._cleared = False  # the MCA was cleared since the last acquisition
        self._clear_sent = False  # a clear went out after the last read; its ACK not yet seen
        self._at_once = True  # the last acquisition was over when its enable was acknowledged
        self._transport: asyncio.DatagramTransport | None = None
        self._rx: _Receiver | None = None

    def __repr__(self) -> str:
        return f"Dp5Client({self.name} {self.host}:{self.port} {self.health.state})"

    async def connect(self) -> None:
        """Check the head answers a status request, and set its channel count."""
        async with self._lock:
            await self._open()
            await self._configure({"MCAC": str(self.calibration.n_channels)})

    async def close(self) -> None:
        async with self._lock:
            self._drop()
            self.health.connected = False

    async def status(self) -> Dp5Status:
        """The head's status now."""
        async with self._lock:
            await self._ensure_open()
            return self._note(await self._status())

    async def configure(self, settings: Mapping[str, object]) -> None:
        """Send text configuration (20,2), e.g. {'PRET': 0.05}."""
        text = parse_config(config_text(settings))
        async with self._lock:
            await self._ensure_open()
            await self._configure(text)

    async def read_config(self, *commands: str) -> dict[str, str]:
        """Read text configuration back (20,3): {'MCAC': '4096', ...}."""
        query = config_text(dict.fromkeys(commands, "?"))
        async with self._lock:
            await self._ensure_open()
            reply = await self._request(REQ_CONFIG_READ, query)
            return parse_config(reply.data)

    async def measure(self, sample_id: str, live_time_s: float) -> Spectrum:
        """Acquire for the preset time and return the spectrum with its status.

        `sample_id` only labels the result: the head measures whatever is in front of it."""
        preset = check_live_time(live_time_s)
        async with self._lock:
            await self._ensure_open()
            try:
                if self._clear_sent:
                    await self._settle_clear()
                await self._configure({"PRET": f"{preset:g}"})
                if not self._cleared:
                    await self._request(REQ_CLEAR)
                await self._request(REQ_ENABLE)
                self._cleared = False
                counts, status = await self._spectrum(preset)
            except Dp5AckError as exc:  # the head answered: the link is fine
                raise Dp5AckError(exc.code, f"{self._where()}: {exc}") from None
            except XrfError as exc:
                self._fail(_located(exc, self._where()))
            self._ok(self._ident())
            self._send_clear()
        self._note(status)
        return self._to_spectrum(sample_id, counts, status)

    def _to_spectrum(
        self, sample_id: str, counts: npt.NDArray[np.float64], status: Dp5Status
    ) -> Spectrum:
        cal = self.calibration
        if len(counts) != cal.n_channels:
            raise XrfError(f"{self.name}: {len(counts)} channels, configured {cal.n_channels}")
        metadata = {
            "head": self.name,
            "sample_id": sample_id,
            "instrument": f"Amptek {status.device} s/n {status.serial}",
            "serial_number": str(status.serial),
            **{f"dpp_{k}": v for k, v in self._settings.items()},
            **{
                "status_" + re.sub(r"\W+", "_", k).strip("_").lower(): v
                for k, v in status.mca_lines().items()
            },
        }
        try:
            return Spectrum(
                counts=counts,
                offset_kev=cal.offset_kev,
                kev_per_channel=cal.kev_per_channel,
                live_time_s=status.live_time_s,
                real_time_s=status.acc_time_s,
                tube_kv=self.tube_kv,
                source=f"{self.name}:{sample_id}",
                metadata=metadata,
            )
        except SpectrumError as exc:
            raise XrfError(f"{self.name}: unusable spectrum: {exc}") from None

    def _note(self, status: Dp5Status) -> Dp5Status:
        self.detector = DetectorHealth(status, status.problems(self.limits))
        return status

    def _ident(self) -> str:
        s = self.detector.status
        return f"Amptek {s.device} s/n {s.serial}" if s else "DP5"

    def _where(self) -> str:
        return f"{self.name} ({self.host}:{self.port})"

    # ----------------------------------------------------------------- requests

    async def _spectrum(self, preset: float) -> tuple[npt.NDArray[np.float64], Dp5Status]:
        """Spectrum + status (2,3) once the preset time is reached.

        A head whose last acquisition was over when its enable was acknowledged (the simulator
        at dwell 0 in `plant bench`, or a preset shorter than the round trip) is read at once:
        the read does not clear, so a read that finds the MCA still counting is only a look, and
        the driver falls back to polling. Otherwise the status (64 bytes) is asked, then again
        when the head's own accumulation time says the preset is due, and every 2 ms after that
        while the MCA still counts; then the spectrum is read (its readout takes ~10 ms)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + preset + PRESET_GRACE_S + self.timeout_s
        if self._at_once:
            counts, head = await self._read()
            self._at_once = not head.mca_enabled
            if self._at_once:
                return counts, head
        else:
            head = await self._status()
            self._at_once = not head.mca_enabled
        while head.mca_enabled:
            if loop.time() > deadline:
                raise XrfTimeoutError(
                    f"preset time {preset} s not reached {PRESET_GRACE_S + self.timeout_s} s late"
                )
            left = preset - head.acc_time_s
            await asyncio.sleep(left if left > POLL_S else min(POLL_S, preset / 10))
            head = await self._status()
        return await self._read()

    async def _read(self) -> tuple[npt.NDArray[np.float64], Dp5Status]:
        """Spectrum + status (2,3): it leaves the MCA as it is, so a lost reply is asked again."""
        reply = await self._request(REQ_SPECTRUM_STATUS)
        try:
            counts, status = parse_spectrum(reply)
        except ValueError as exc:
            raise XrfError(str(exc)) from None
        if status is None:
            raise XrfError(f"spectrum reply PID2 {reply.pid2} carries no status")
        return counts, status

    def _send_clear(self) -> None:
        """Clear (F0,1) the MCA for the next cell without waiting for the ACK: the cell's
        spectrum is read, and the ACK is looked for before the next request (`_settle_clear`)."""
        if self._transport is not None and self._rx is not None:
            self._rx.drain()
            self._transport.sendto(encode(REQ_CLEAR))
            self._clear_sent = True

    async def _settle_clear(self) -> None:
        """Take the ACK of the clear sent after the last read (by then it has usually come);
        without it (lost, or refused) clear again and wait for the answer this time."""
        self._clear_sent = False
        assert self._rx is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout_s):
                while True:
                    item = await self._rx.packets.get()
                    if isinstance(item, Exception):
                        break
                    with contextlib.suppress(PacketError):
                        packet = decode(item)
                        if packet.pid1 == ACK_PID1:
                            self._cleared = packet.pid2 == ACK_OK
                            break
        if not self._cleared:
            await self._request(REQ_CLEAR)
            self._cleared = True

    async def _status(self) -> Dp5Status:
        reply = await self._request(REQ_STATUS)
        try:
            return Dp5Status.decode(reply.data)
        except ValueError as exc:
            raise XrfError(f"status reply: {exc}") from None

    async def _configure(self, settings: Mapping[str, str]) -> None:
        changed = {k: v for k, v in settings.items() if self._settings.get(k) != v}
        if changed:
            await self._request(REQ_CONFIG_SET, config_text(changed))
            self._settings.update(changed)

    async def _request(
        self, pid: tuple[int, int], data: bytes = b"", *, retries: int | None = None
    ) -> Packet:
        """Send one request and return its reply; resend after each timeout, `retries` times.

        A DP5 answers each request in order and has no transaction ids, so a reply is matched
        by its PID; anything left over from an earlier request is dropped before sending."""
        if self._transport is None or self._rx is None:
            raise XrfConnectionError("not connected")
        if self._clear_sent:
            await self._settle_clear()
        message = encode(pid, data)
        expected = self._REPLIES.get(pid, "ack")
        what = f"request {pid[0]:02X},{pid[1]:02X}"
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            self._rx.drain()
            self._transport.sendto(message)
            try:
                async with asyncio.timeout(self.timeout_s):
                    while True:
                        item = await self._rx.packets.get()
                        if isinstance(item, Exception):  # e.g. ICMP port unreachable
                            raise XrfConnectionError(f"{what}: {item}")
                        reply = self._match(item, expected, what)
                        if reply is not None:
                            return reply
            except TimeoutError:
                if attempt == retries:
                    raise XrfTimeoutError(
                        f"no answer to {what} in {self.timeout_s} s ({retries + 1} tries)"
                    ) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _match(raw: bytes, expected: str, what: str) -> Packet | None:
        """The reply if `raw` answers the request, None for a stray packet; raises on ACK errors."""
        try:
            packet = decode(raw)
        except PacketError:
            return None  # corrupted on the way: wait for the retry
        if packet.pid1 == ACK_PID1:
            if packet.pid2 == ACK_OK and expected == "ack":
                return packet
            if packet.pid2 not in (ACK_OK, 12, 15):
                text = ACK_TEXT.get(packet.pid2, "unknown error")
                detail = packet.data.decode("ascii", "replace").strip()
                detail = f" ({detail})" if detail else ""
                raise Dp5AckError(packet.pid2, f"{what} refused: ACK {packet.pid2} {text}{detail}")
            return None
        kind = {REPLY_STATUS: "status", REPLY_CONFIG: "config"}.get(packet.pid)
        if packet.pid1 == SPECTRUM_PID1:
            kind = "spectrum"
        return packet if kind == expected else None

    # ----------------------------------------------------------------- link

    async def _ensure_open(self) -> None:
        if self._transport is not None and self.health.connected:
            return
        if not self.ready:
            raise self._unavailable()
        await self._open()

    async def _open(self) -> None:
        self._drop()
        loop = asyncio.get_running_loop()
        try:
            self._transport, self._rx = await loop.create_datagram_endpoint(
                _Receiver, remote_addr=(self.host, self.port)
            )
        except OSError as exc:
            self._fail(XrfConnectionError(f"{self._where()}: {exc.strerror or exc}"))
        self._settings.clear()  # a head that was away may have been reset
        self._cleared = self._clear_sent = False
        try:
            self._note(await self._status())
        except XrfError as exc:
            self._drop()
            self._fail(_located(exc, self._where()))
        self._ok(self._ident())

    def _drop(self) -> None:
        transport, self._transport, self._rx = self._transport, None, None
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()


def _located(exc: XrfError, where: str) -> XrfError:
    """The same kind of error, its message prefixed with the head and its address."""
    if isinstance(exc, Dp5AckError):
        return Dp5AckError(exc.code, f"{where}: {exc}")
    return type(exc)(f"{where}: {exc}")
