"""Simulated XRF heads: real asyncio TCP servers speaking the SCPI protocol of docs/xrf-protocol.md.

Spectra come from the physics simulator (drivers/sim/xrfphysics.py) for the cell truth of
`CELL:<seq>` or a pellet composition; the dwell is live time x `dwell_scale` (0 answers at
once, for benchmarks). Faults for tests: stall (never answer), drop (close the connection on
every request), garbage (answer nonsense).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import re
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import numpy as np

from drivers.sim import xrfphysics
from drivers.sim.cells import CellStream
from drivers.sim.profiles import PROFILES, InstrumentProfile
from drivers.spectra import Spectrum
from drivers.xrf import (
    CHECK_SAMPLE,
    COUNTS_DTYPE,
    ELEMENT,
    MAX_LIVE_TIME_S,
    SAMPLE_ID,
    definite_block,
    quote,
    split_unquoted,
)

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "inline_sdd_4096"
DEFAULT_LIVE_TIME_S = 1.0
MIN_TUBE_KV = 10.0
ERROR_QUEUE = 16
GARBAGE = b"\x00\x17#9Z\xffgarbage;;\n"
_CELL = re.compile(r"CELL:(\d{1,12})")
_PELLET = re.compile(r"PELLET:(.+)")
# (profile, chemistry, second chemistry, format) of the cells simulated so far in this process:
# their physics templates are cached (drivers/sim/xrfphysics.py), so a spectrum is cheap.
_TEMPLATES_BUILT: set[tuple[object, ...]] = set()
# The simulated heads' check standard: an NMC111 cathode reference pellet, wt% from
# docs/reference/xrf-and-process.md (cathode compositions table).
CHECK_STANDARD = {"Ni": 20.3, "Co": 20.4, "Mn": 19.0}


class XrfFault(StrEnum):
    """Misbehaviour a test can switch on."""

    stall = "stall"  # read requests, never answer
    drop = "drop"  # close the connection whenever a request arrives
    garbage = "garbage"  # answer every query with bytes that are no SCPI reply


class ScpiError(Exception):
    """A SCPI error: standard code (IEEE 488.2 / SCPI-99 negative codes) and text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f'{code},"{text}"')
        self.code = code
        self.text = text


# Headers in SCPI notation: the upper-case part is the short form, the whole word the long one.
_HEADERS = (
    "*IDN?",
    "*RST",
    "*CLS",
    "*OPC?",
    "SYSTem:ERRor?",
    "SAMPle:ID",
    "SAMPle:ID?",
    "SAMPle:COMPosition",
    "SAMPle:COMPosition?",
    "MEASure:TIME",
    "MEASure:TIME?",
    "MEASure:STARt",
    "MEASure:ABORt",
    "MEASure:STATus?",
    "MEASure:SPECtrum?",
    "SOURce:VOLTage",
    "SOURce:VOLTage?",
    "FETCh:SPECtrum?",
    "FETCh:CALibration?",
    "FETCh:LIVE?",
    "FETCh:REAL?",
    "FETCh:ALL?",
)


def _forms(node: str) -> tuple[str, ...]:
    """Short and long spelling of one header node, e.g. MEASure -> (MEAS, MEASURE)."""
    short = "".join(c for c in node if not c.islower())
    return tuple({short, node.upper()})


def _header_table() -> dict[str, str]:
    """Every accepted spelling (short/long per node, upper case) -> canonical short header."""
    table: dict[str, str] = {}
    for header in _HEADERS:
        query = "?" if header.endswith("?") else ""
        nodes = header.rstrip("?").split(":")
        canonical = ":".join("".join(c for c in n if not c.islower()) for n in nodes) + query
        for combo in itertools.product(*(_forms(n) for n in nodes)):
            table[":".join(combo) + query] = canonical
    return table


_TABLE = _header_table()
_Handler = Callable[["SimXrfHead", str], Awaitable[bytes | None]]


def split_units(message: str) -> list[str]:
    """The message units of a program message: split on ';' outside strings."""
    try:
        units = split_unquoted(message, ";")
    except ValueError:
        raise ScpiError(-151, "Invalid string data; unterminated quote") from None
    return [u.strip() for u in units if u.strip()]


def _parse_unit(unit: str) -> tuple[str, str]:
    """(canonical header, parameter text) of one message unit; all headers are absolute."""
    header, _, params = unit.lstrip(":").partition(" ")
    canonical = _TABLE.get(header.upper())
    if canonical is None:
        raise ScpiError(-113, f"Undefined header; {header[:40]}")
    return canonical, params.strip()


def _string(params: str) -> str:
    if len(params) >= 2 and params[0] == params[-1] == '"':
        return params[1:-1].replace('""', '"')
    return params


def _number(params: str, low: float, high: float, unit: str) -> float:
    if not params:
        raise ScpiError(-109, "Missing parameter")
    try:
        value = float(params)
    except ValueError:
        raise ScpiError(-104, f"Data type error; {params[:30]!r} is not a number") from None
    if not (math.isfinite(value) and low < value <= high):
        raise ScpiError(-222, f"Data out of range; {value:g} {unit} not in ({low:g}, {high:g}]")
    return value


def _composition(params: str) -> dict[str, float]:
    """`Ni=21.5,Co=7.2,...` (wt%) -> dict; validated so a measurement cannot fail later on it."""
    comp: dict[str, float] = {}
    for item in _string(params).split(","):
        element, eq, pct = item.strip().partition("=")
        try:
            value = float(pct)
        except ValueError:
            value = math.nan
        if not eq or not ELEMENT.fullmatch(element) or not (math.isfinite(value) and value >= 0):
            raise ScpiError(-224, f"Illegal parameter value; {item.strip()[:30]!r} is not El=wt%")
        comp[element] = comp.get(element, 0.0) + value
    if sum(comp.values()) > 100.5:
        raise ScpiError(-224, f"Illegal parameter value; wt% add up to {sum(comp.values()):.1f}")
    return comp


@dataclass
class _Result:
    """The last completed measurement, as FETCh? reports it."""

    sample_id: str
    spectrum: Spectrum

    def block(self) -> bytes:
        counts = self.spectrum.counts
        raw = np.clip(np.rint(counts), 0, np.iinfo(COUNTS_DTYPE).max).astype(COUNTS_DTYPE)
        return definite_block(raw.tobytes())

    def all(self) -> bytes:
        s = self.spectrum
        fields = (s.offset_kev, s.kev_per_channel, s.live_time_s, s.real_time_s, s.tube_kv)
        tail = ",".join([quote(self.sample_id), *(f"{v:.10g}" for v in fields)])
        return self.block() + b"," + tail.encode()


class SimXrfHead:
    """One simulated XRF head: a TCP server on host:port (0 = ephemeral) serving SCPI."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        profile: InstrumentProfile | str = DEFAULT_PROFILE,
        seed: int = 1,
        dwell_scale: float = 1.0,
        name: str = "xrf-sim",
        stream: CellStream | None = None,
        warm: bool = True,
    ) -> None:
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise ValueError(f"unknown XRF profile {profile!r}; known: {sorted(PROFILES)}")
            profile = PROFILES[profile]
        if not (math.isfinite(dwell_scale) and dwell_scale >= 0):
            raise ValueError(f"dwell_scale must be >= 0, got {dwell_scale}")
        self.host = host
        self.requested_port = port
        self.base_profile = profile
        self.seed = seed
        self.dwell_scale = dwell_scale
        self.name = name
        self.stream = stream if stream is not None else CellStream(seed)
        self.warm = warm
        self.fault: XrfFault | None = None
        self.measurements = 0  # completed acquisitions, for tests and logs
        self.accepted = 0  # connections accepted
        self._seeds = np.random.SeedSequence([seed, zlib.crc32(name.encode())])
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._errors: deque[ScpiError] = deque()
        self._job: asyncio.Task[_Result] | None = None  # the acquisition in progress or last
        self._reset()

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        """The bound TCP port (after start)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError(f"{self.name} is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Precompute the physics templates (if warm), then listen."""
        if self.warm and self.base_profile.name in PROFILES:
            await asyncio.to_thread(xrfphysics.warm, (self.base_profile.name,))
        self._server = await asyncio.start_server(self._serve, self.host, self.requested_port)
        log.info(
            "%s: SCPI XRF head on %s:%d (profile %s, dwell x%g)",
            self.name,
            self.host,
            self.port,
            self.base_profile.name,
            self.dwell_scale,
        )

    async def stop(self) -> None:
        """Stop listening, close every connection and any measurement in progress."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await self._abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SimXrfHead:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def drop_connections(self) -> None:
        """Close every client connection now (as a head reboot or a gateway would)."""
        for writer in self._connections.values():
            writer.close()

    # ----------------------------------------------------------------- serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self.accepted += 1
        try:
            while True:
                line = await reader.readline()
                if not line.endswith(b"\n"):
                    return  # EOF (or a partial line at EOF)
                if self.fault is XrfFault.stall:
                    continue
                if self.fault is XrfFault.drop:
                    return
                reply = await self._execute(line)
                if reply is None:
                    continue
                writer.write(GARBAGE if self.fault is XrfFault.garbage else reply)
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            return  # client went away, or sent a line over 64 KiB: drop it
        except asyncio.CancelledError:
            return  # stop(): end quietly (asyncio logs a cancelled connection callback)
        finally:
            del self._connections[task]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _execute(self, line: bytes) -> bytes | None:
        """Run one program message; reply to its queries, or report its error (protocol doc)."""
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            return self._refuse(ScpiError(-101, "Invalid character"), b"?" in line)
        has_query = False
        try:
            units = [_parse_unit(u) for u in split_units(text)]
            has_query = any(h.endswith("?") for h, _ in units)
            replies = []
            for header, params in units:
                out = await self._run(header, params)
                if out is not None:
                    replies.append(out)
        except ScpiError as exc:
            return self._refuse(exc, has_query or "?" in text)
        except Exception as exc:  # a simulator bug: say so on the wire and in the log
            log.exception("%s: failed on %r", self.name, text[:80])
            return self._refuse(ScpiError(-300, f"Device-specific error; {exc}"), has_query)
        return b";".join(replies) + b"\n" if replies else None

    def _refuse(self, exc: ScpiError, has_query: bool) -> bytes | None:
        """A message with a query gets its error as the reply; otherwise it goes in the queue."""
        if has_query:
            return f"ERROR {exc.code},{quote(exc.text)}\n".encode()
        if len(self._errors) >= ERROR_QUEUE:
            self._errors[-1] = ScpiError(-350, "Queue overflow")
        else:
            self._errors.append(exc)
        return None

    def _reset(self) -> None:
        self.sample_id: str | None = None
        self.composition: dict[str, float] | None = None
        self.live_time_s = DEFAULT_LIVE_TIME_S
        self.profile = self.base_profile
        self._last: _Result | None = None

    @property
    def busy(self) -> bool:
        """An acquisition is in progress."""
        return self._job is not None and not self._job.done()

    async def _abort(self) -> None:
        """Abort the acquisition in progress, if any (MEAS:ABOR, *RST, a new MEAS:SPEC?)."""
        job = self._job
        if job is not None and not job.done():
            job.cancel()
            await asyncio.wait({job})

    async def _run(self, header: str, params: str) -> bytes | None:
        if params and header in self._no_params:
            raise ScpiError(-108, f"Parameter not allowed; {header} takes none")
        return await self._handlers[header](self, params)

    # ----------------------------------------------------------------- commands

    async def _idn(self, _: str) -> bytes:
        return f"PlantSim,XRF-{self.profile.name},{self.name},1.0".encode()

    async def _rst(self, _: str) -> None:
        await self._abort()
        self._reset()

    async def _cls(self, _: str) -> None:
        self._errors.clear()

    async def _opc(self, _: str) -> bytes:
        if self._job is not None:
            await asyncio.wait({self._job})
        return b"1"

    async def _syst_err(self, _: str) -> bytes:
        if not self._errors:
            return b'0,"No error"'
        exc = self._errors.popleft()
        return f"{exc.code},{quote(exc.text)}".encode()

    async def _samp_id(self, params: str) -> None:
        sample = _string(params)
        if not SAMPLE_ID.fullmatch(sample):
            raise ScpiError(-224, "Illegal parameter value; sample id: 1-64 of A-Z a-z 0-9 _.:/+-")
        if not (_CELL.fullmatch(sample) or _PELLET.fullmatch(sample) or sample == CHECK_SAMPLE):
            raise ScpiError(
                -224,
                "Illegal parameter value; simulator knows CELL:<seq>, PELLET:<lot>, "
                + CHECK_SAMPLE,
            )
        self.sample_id = sample
        self.composition = None

    async def _samp_id_q(self, _: str) -> bytes:
        return quote(self.sample_id or "").encode()

    async def _samp_comp(self, params: str) -> None:
        if self.sample_id is None or not _PELLET.fullmatch(self.sample_id):
            raise ScpiError(-221, "Settings conflict; SAMP:COMP applies to a PELLET:<lot> sample")
        self.composition = _composition(params)

    async def _samp_comp_q(self, _: str) -> bytes:
        comp = self.composition or {}
        return quote(",".join(f"{k}={v:g}" for k, v in comp.items())).encode()

    async def _meas_time(self, params: str) -> None:
        self.live_time_s = _number(params, 0.0, MAX_LIVE_TIME_S, "s")

    async def _meas_time_q(self, _: str) -> bytes:
        return f"{self.live_time_s:.10g}".encode()

    async def _sour_volt(self, params: str) -> None:
        kv = _number(params, MIN_TUBE_KV - 1e-9, self.base_profile.tube_kv, "kV")
        self.profile = replace(self.base_profile, tube_kv=kv)

    async def _sour_volt_q(self, _: str) -> bytes:
        return f"{self.profile.tube_kv:.10g}".encode()

    async def _meas_start(self, _: str) -> None:
        if self.busy:
            raise ScpiError(-213, "Init ignored; measurement in progress")
        self._start(self.live_time_s).add_done_callback(self._queue_job_error)

    def _queue_job_error(self, job: asyncio.Task[_Result]) -> None:
        """A MEAS:STARt acquisition that fails reports through the error queue."""
        if job.cancelled():
            return
        exc = job.exception()
        if isinstance(exc, ScpiError):
            self._refuse(exc, has_query=False)
        elif exc is not None:
            log.error("%s: acquisition failed: %r", self.name, exc)
            self._refuse(ScpiError(-300, f"Device-specific error; {exc}"), has_query=False)

    async def _meas_abort(self, _: str) -> None:
        await self._abort()

    async def _meas_stat_q(self, _: str) -> bytes:
        if self.busy:
            return b"BUSY"
        return b"DONE" if self._last is not None else b"IDLE"

    async def _meas_spec_q(self, params: str) -> bytes:
        """MEASure? = ABORt; INITiate; FETCh? (SCPI-99): aborts whatever is running."""
        live = _number(params, 0.0, MAX_LIVE_TIME_S, "s") if params else self.live_time_s
        self.live_time_s = live
        await self._abort()
        return (await self._wait(self._start(live))).all()

    async def _result(self) -> _Result:
        """The last completed measurement, waiting for one in progress."""
        if self._job is not None:
            with contextlib.suppress(ScpiError):
                await self._wait(self._job)
        if self._last is None:
            raise ScpiError(-230, "Data corrupt or stale; no completed measurement")
        return self._last

    async def _fetch_spec_q(self, _: str) -> bytes:
        return (await self._result()).block()

    async def _fetch_cal_q(self, _: str) -> bytes:
        s = (await self._result()).spectrum
        return f"{s.offset_kev:.10g},{s.kev_per_channel:.10g}".encode()

    async def _fetch_live_q(self, _: str) -> bytes:
        return f"{(await self._result()).spectrum.live_time_s:.10g}".encode()

    async def _fetch_real_q(self, _: str) -> bytes:
        return f"{(await self._result()).spectrum.real_time_s:.10g}".encode()

    async def _fetch_all_q(self, _: str) -> bytes:
        return (await self._result()).all()

    # ----------------------------------------------------------------- acquisition

    def _start(self, live: float) -> asyncio.Task[_Result]:
        """Begin an acquisition of the selected sample (one at a time per head)."""
        if self.sample_id is None:
            raise ScpiError(-221, "Settings conflict; no sample selected (SAMP:ID)")
        if _PELLET.fullmatch(self.sample_id) and self.composition is None:
            raise ScpiError(-221, "Settings conflict; PELLET sample needs SAMP:COMP first")
        self._job = asyncio.create_task(
            self._acquire(self.sample_id, self.composition, self.profile, live)
        )
        return self._job

    async def _wait(self, job: asyncio.Task[_Result]) -> _Result:
        """Await an acquisition; one aborted by another request is an execution error."""
        try:
            await asyncio.wait({job})
        except asyncio.CancelledError:
            job.cancel()  # the connection is going away: stop its acquisition too
            raise
        if job.cancelled():
            raise ScpiError(-200, "Execution error; measurement aborted (MEAS:ABOR, *RST or MEAS?)")
        return job.result()

    async def _acquire(
        self,
        sample: str,
        composition: dict[str, float] | None,
        profile: InstrumentProfile,
        live: float,
    ) -> _Result:
        """Compute the spectrum (in a worker thread), then dwell live time x dwell_scale."""
        rng = np.random.default_rng(self._seeds.spawn(1)[0])
        try:
            spectrum = await sample_spectrum(self.stream, sample, composition, profile, live, rng)
        except ValueError as exc:
            raise ScpiError(-224, f"Illegal parameter value; {exc}") from None
        if self.dwell_scale > 0:
            await asyncio.sleep(live * self.dwell_scale)
        self._last = _Result(sample, spectrum)
        self.measurements += 1
        return self._last

    _handlers: ClassVar[dict[str, _Handler]] = {
        "*IDN?": _idn,
        "*RST": _rst,
        "*CLS": _cls,
        "*OPC?": _opc,
        "SYST:ERR?": _syst_err,
        "SAMP:ID": _samp_id,
        "SAMP:ID?": _samp_id_q,
        "SAMP:COMP": _samp_comp,
        "SAMP:COMP?": _samp_comp_q,
        "MEAS:TIME": _meas_time,
        "MEAS:TIME?": _meas_time_q,
        "MEAS:STAR": _meas_start,
        "MEAS:ABOR": _meas_abort,
        "MEAS:STAT?": _meas_stat_q,
        "MEAS:SPEC?": _meas_spec_q,
        "SOUR:VOLT": _sour_volt,
        "SOUR:VOLT?": _sour_volt_q,
        "FETC:SPEC?": _fetch_spec_q,
        "FETC:CAL?": _fetch_cal_q,
        "FETC:LIVE?": _fetch_live_q,
        "FETC:REAL?": _fetch_real_q,
        "FETC:ALL?": _fetch_all_q,
    }
    _no_params: ClassVar[frozenset[str]] = frozenset(
        set(_handlers) - {"SAMP:ID", "SAMP:COMP", "MEAS:TIME", "SOUR:VOLT", "MEAS:SPEC?"}
    )


async def sample_spectrum(
    stream: CellStream,
    sample: str,
    composition: dict[str, float] | None,
    profile: InstrumentProfile,
    live: float,
    rng: np.random.Generator,
) -> Spectrum:
    """The physics spectrum of `CELL:<seq>` (its truth in `stream`), a pellet of `composition`
    or the check standard; ValueError for a composition the physics cannot take."""
    cell = _CELL.fullmatch(sample)
    if cell is not None:
        truth = stream.truth(int(cell.group(1)))
        kind = (profile, truth.chemistry, truth.second_chemistry, truth.format)
        if kind in _TEMPLATES_BUILT:
            # ~0.6 ms of numpy on the loop: a worker thread's hand-off and the interpreter lock
            # it then shares with the loop cost more than that, and delay every other head's and
            # the PLC's answers (docs/bench.md)
            return xrfphysics.simulate_cell(truth, profile, live, rng)
        # the first cell of its kind builds the template (~0.05 s): in a thread
        spectrum = await asyncio.to_thread(xrfphysics.simulate_cell, truth, profile, live, rng)
        _TEMPLATES_BUILT.add(kind)
        return spectrum
    if sample == CHECK_SAMPLE:
        composition = CHECK_STANDARD
    return await asyncio.to_thread(
        partial(xrfphysics.simulate_material, source=sample),
        composition or {},
        profile,
        live,
        rng,
    )


class SimHead(Protocol):
    """What a simulated station needs of its heads (SCPI here, DP5 in drivers/sim/dp5.py)."""

    name: str
    base_profile: InstrumentProfile
    requested_port: int

    @property
    def port(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


H = TypeVar("H", bound=SimHead)


class SimStation(Generic[H]):
    """Several simulated heads, head k on base_port + k (or each on an ephemeral port)."""

    def __init__(
        self,
        n_heads: int,
        *,
        host: str = "127.0.0.1",
        base_port: int = 0,
        profiles: Sequence[InstrumentProfile | str] = (DEFAULT_PROFILE,),
        seed: int = 1,
        dwell_scale: float = 1.0,
        warm: bool = True,
        warm_mixtures: bool = False,
        stream: CellStream | None = None,
    ) -> None:
        if n_heads < 1:
            raise ValueError(f"an XRF station needs at least one head, got {n_heads}")
        if len(profiles) not in (1, n_heads):
            raise ValueError(f"give 1 or {n_heads} XRF profiles, got {len(profiles)}")
        stream = stream if stream is not None else CellStream(seed)
        self.heads = [
            self._make_head(
                k,
                host=host,
                port=base_port + k if base_port else 0,
                profile=profiles[k % len(profiles)],
                seed=seed,
                dwell_scale=dwell_scale,
                name=f"xrf{k + 1}",
                stream=stream,
                warm=False,
            )
            for k in range(n_heads)
        ]
        self.warm = warm
        self.warm_mixtures = warm_mixtures

    def _make_head(self, k: int, **options: Any) -> H:
        """Head k (0-based) of the station."""
        raise NotImplementedError

    @property
    def ports(self) -> list[int]:
        return [h.port for h in self.heads]

    async def start(self) -> None:
        """Warm each distinct profile once, then start every head (all or none)."""
        if self.warm:
            names = tuple({h.base_profile.name for h in self.heads} & set(PROFILES))
            await asyncio.to_thread(xrfphysics.warm, names, mixtures=self.warm_mixtures)
        started: list[H] = []
        try:
            for head in self.heads:
                await head.start()
                started.append(head)
        except OSError as exc:
            for head in started:
                await head.stop()
            raise OSError(
                f"XRF head {head.name}: cannot listen on port {head.requested_port}: "
                f"{exc.strerror or exc}"
            ) from exc

    async def stop(self) -> None:
        await asyncio.gather(*(h.stop() for h in self.heads))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class SimXrfStation(SimStation[SimXrfHead]):
    """Simulated SCPI heads (docs/xrf-protocol.md)."""

    def _make_head(self, k: int, **options: Any) -> SimXrfHead:
        return SimXrfHead(**options)
