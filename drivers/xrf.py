"""XRF spectrometer heads over SCPI/TCP (docs/xrf-protocol.md): client, station, health.

One `XrfClient` per head keeps one TCP connection, opened lazily and reopened with capped
exponential backoff; every request has a deadline; a malformed reply is an `XrfError` naming
the head and what is wrong. `XrfStation` hands each measurement to a free, healthy head so N
heads measure N cells at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from drivers.backoff import backoff_delay
from drivers.spectra import Spectrum, SpectrumError

log = logging.getLogger(__name__)
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

# Sample ids travel as SCPI strings; this charset needs no quoting rules beyond the quotes.
SAMPLE_ID = re.compile(r"[A-Za-z0-9_.:/+\-]{1,64}")
ELEMENT = re.compile(r"[A-Z][a-z]?")
_CELL = re.compile(r"CELL:(\d{1,12})")
MAX_LIVE_TIME_S = 3600.0
MAX_CHANNELS = 65536
MIN_BACKOFF_S = 0.05  # a configured zero or negative backoff is raised to this: no busy loop
# The head's built-in check standard (inline heads measure it through the closed shutter).
CHECK_SAMPLE = "CHECK"
COUNTS_DTYPE = np.dtype("<u4")  # FETCh:SPECtrum? block payload: little-endian uint32 per channel


class XrfError(RuntimeError):
    """The head failed or answered wrongly; the message names the head and the problem."""


class XrfTimeoutError(XrfError, TimeoutError):
    """The head did not answer within the request deadline (the connection is dropped)."""


class XrfConnectionError(XrfError, ConnectionError):
    """The head could not be reached, or closed the connection during a request."""


class XrfUnavailableError(XrfError):
    """The head is down and its next reconnect attempt is not due yet (fails fast)."""


class XrfInstrumentError(XrfError):
    """The head refused the request with a SCPI error (code and text in the message)."""


@dataclass
class XrfHealth:
    """Connection health the controller and HMI show: up or down, why, and since when."""

    connected: bool = False
    last_error: str | None = None
    since: float = field(default_factory=time.time)  # wall clock of the last state change
    failures: int = 0  # consecutive failed connects/requests
    retry_at: float = 0.0  # time.monotonic() when a reconnect may next be tried

    @property
    def state(self) -> str:
        if self.connected:
            return "connected"
        return "down" if self.failures else "idle"


@runtime_checkable
class Spectrometer(Protocol):
    """What the line needs of an XRF head or station."""

    name: str

    @property
    def health(self) -> XrfHealth: ...

    async def measure(self, sample_id: str, live_time_s: float) -> Spectrum: ...


def check_sample_id(sample_id: str) -> str:
    """Reject sample ids the protocol cannot carry (docs/xrf-protocol.md, 'Sample ids')."""
    if not isinstance(sample_id, str) or not SAMPLE_ID.fullmatch(sample_id):
        raise ValueError(
            f"XRF sample id {sample_id!r}: use 1-64 characters of letters, digits and _ . : / + -"
        )
    return sample_id


def check_live_time(live_time_s: float) -> float:
    """Live time must be a finite number of seconds in (0, MAX_LIVE_TIME_S]."""
    if not (isinstance(live_time_s, int | float) and 0 < live_time_s <= MAX_LIVE_TIME_S):
        raise ValueError(f"XRF live time {live_time_s!r} s: must be > 0 and <= {MAX_LIVE_TIME_S}")
    return float(live_time_s)


def format_composition(wt_pct: Mapping[str, float]) -> str:
    """SAMPle:COMPosition parameter text, e.g. 'Ni=21.5,Co=7.2' (simulator only)."""
    parts = []
    for element, pct in wt_pct.items():
        if not ELEMENT.fullmatch(element) or not (math.isfinite(pct) and pct >= 0):
            raise ValueError(f"pellet composition: bad element or wt% {element!r}={pct!r}")
        parts.append(f"{element}={pct:.6g}")
    if not parts:
        raise ValueError("pellet composition is empty")
    return ",".join(parts)


def definite_block(payload: bytes) -> bytes:
    """IEEE 488.2 definite-length arbitrary block: #<n><len><payload>."""
    size = str(len(payload)).encode()
    return b"#" + str(len(size)).encode() + size + payload


def quote(text: str) -> str:
    """SCPI string data: double quotes, inner quotes doubled."""
    return '"' + text.replace('"', '""') + '"'


class HeadLink(ABC):
    """Link health shared by the head clients: capped exponential backoff after failures,
    one log line per change of state, one request at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        name: str | None = None,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.name = name or f"xrf@{host}:{port}"
        self.backoff_initial_s = max(MIN_BACKOFF_S, backoff_initial_s)
        self.backoff_max_s = max(self.backoff_initial_s, backoff_max_s)
        self._rng = random.Random()
        self._health = XrfHealth()
        self._lock = asyncio.Lock()
        self._logged: tuple[bool, str | None] = (False, None)

    @property
    def health(self) -> XrfHealth:
        return self._health

    @abstractmethod
    async def connect(self) -> None:
        """Open the link now (whatever the backoff says) and check the head answers."""

    @abstractmethod
    async def close(self) -> None:
        """Close the link."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def busy(self) -> bool:
        """A request is in flight on this head."""
        return self._lock.locked()

    @property
    def ready(self) -> bool:
        """Worth sending a request to: connected, or down with its reconnect attempt due."""
        h = self._health
        return h.connected or time.monotonic() >= h.retry_at

    def _unavailable(self) -> XrfUnavailableError:
        h = self._health
        return XrfUnavailableError(
            f"{self.name} ({self.host}:{self.port}) is down ({h.last_error}); "
            f"next reconnect attempt in {h.retry_at - time.monotonic():.2f} s"
        )

    def _fail(self, exc: XrfError) -> NoReturn:
        """Record a failure, schedule the next attempt, log once per change; always raises."""
        h = self._health
        h.failures += 1
        h.retry_at = time.monotonic() + backoff_delay(
            h.failures, self.backoff_initial_s, self.backoff_max_s, self._rng
        )
        if h.connected:
            h.since = time.time()
        h.connected = False
        h.last_error = str(exc)
        kind = type(exc).__name__
        if self._logged != (False, kind):
            log.warning("%s: down: %s", self.name, exc)
            self._logged = (False, kind)
        raise exc

    def _ok(self, ident: str | None) -> None:
        h = self._health
        if not h.connected:
            h.since = time.time()
            h.connected = True
        if self._logged != (True, None):
            if h.failures:
                log.info("%s: back up after %d failed attempts (%s)", self.name, h.failures, ident)
            else:
                log.info("%s: connected to %s:%d (%s)", self.name, self.host, self.port, ident)
            self._logged = (True, None)
        h.failures = 0
        h.retry_at = 0.0


class XrfClient(HeadLink):
    """One XRF head over SCPI/TCP: lazy connect, deadlines, backoff, health, validated replies."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float = 2.0,
        name: str | None = None,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        real_time_factor: float = 2.0,
    ) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"XRF timeout must be > 0 s, got {timeout_s}")
        super().__init__(
            host, port, name=name, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s
        )
        self.timeout_s = timeout_s
        # A measurement's deadline: timeout_s + live time x this (dead time makes real > live).
        self.real_time_factor = max(1.0, real_time_factor)
        self.idn: str | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def __repr__(self) -> str:
        return f"XrfClient({self.name} {self.host}:{self.port} {self._health.state})"

    async def connect(self) -> None:
        """Open the connection now (whatever the backoff says) and check the head answers."""
        async with self._lock:
            await self._open()

    async def close(self) -> None:
        """Close the connection; the next request reconnects."""
        async with self._lock:
            await self._drop()
            self._health.connected = False

    async def identify(self) -> str:
        """The head's *IDN? answer: maker, model, serial, firmware."""
        self.idn = await self._call(b"*IDN?\n", "*IDN?", self.timeout_s, _read_line)
        return self.idn

    async def set_tube_kv(self, kv: float) -> float:
        """Set the tube voltage (SOURce:VOLTage) and return what the head reports."""
        if not (isinstance(kv, int | float) and math.isfinite(kv) and kv > 0):
            raise ValueError(f"tube voltage {kv!r} kV: must be a positive number")
        message = f"SOUR:VOLT {kv:.6g};:SOUR:VOLT?\n".encode()

        async def read(reader: asyncio.StreamReader, what: str) -> float:
            return _number(await _read_line(reader, what), what)

        return await self._call(message, "SOUR:VOLT?", self.timeout_s, read)

    async def measure(
        self,
        sample_id: str,
        live_time_s: float,
        *,
        composition: Mapping[str, float] | None = None,
    ) -> Spectrum:
        """Select the sample, acquire for live_time_s and return the validated spectrum."""
        check_sample_id(sample_id)
        live = check_live_time(live_time_s)
        message = f"SAMP:ID {quote(sample_id)};"
        if composition is not None:
            message += f":SAMP:COMP {format_composition(composition)};"
        message += f":MEAS:SPEC? {live:.6g}\n"
        deadline = self.timeout_s + live * self.real_time_factor

        async def read(reader: asyncio.StreamReader, what: str) -> Spectrum:
            counts, fields = await _read_spectrum_reply(reader, what)
            return self._spectrum(sample_id, live, counts, fields)

        return await self._call(message.encode(), "MEAS:SPEC?", deadline, read)

    def _spectrum(
        self, sample_id: str, live: float, counts: npt.NDArray[np.float64], fields: list[str]
    ) -> Spectrum:
        """Check a MEAS:SPEC? reply against the request and build the Spectrum."""
        got_id = _unquote(fields[0])
        if got_id != sample_id:
            raise XrfError(f"reply is for sample {got_id!r}, expected {sample_id!r}")
        names = ("offset keV", "keV/channel", "live time s", "real time s", "tube kV")
        offset, gain, live_got, real, kv = (
            _number(text, f"MEAS:SPEC? {name}")
            for text, name in zip(fields[1:], names, strict=True)
        )
        if abs(live_got - live) > 0.05 * live + 1e-3:
            raise XrfError(f"live time {live_got} s differs from the requested {live} s")
        try:
            return Spectrum(
                counts=counts,
                offset_kev=offset,
                kev_per_channel=gain,
                live_time_s=live_got,
                real_time_s=real,
                tube_kv=kv,
                source=f"{self.name}:{sample_id}",
                metadata={"head": self.name, "sample_id": sample_id, "instrument": self.idn or ""},
            )
        except SpectrumError as exc:
            raise XrfError(f"unusable spectrum: {exc}") from None

    # ----------------------------------------------------------------- connection

    async def _call(self, message: bytes, what: str, deadline_s: float, read: _Reader[T]) -> T:
        """One request on the head's connection, opened or reopened as needed."""
        async with self._lock:
            reused = await self._ensure_open()
            try:
                result = await self._request(message, what, deadline_s, read, stale_ok=reused)
            except _StaleConnection:
                log.debug("%s: idle connection was closed by the head; reconnecting", self.name)
                await self._open()
                result = await self._request(message, what, deadline_s, read, stale_ok=False)
            self._ok(self.idn)
            return result

    async def _ensure_open(self) -> bool:
        """Open the connection unless it is up; True when an existing one is reused."""
        if self._reader is not None and not self._reader.at_eof():
            return True
        if self._reader is not None:
            log.debug("%s: idle connection was closed by the head; reconnecting", self.name)
            await self._drop()
        h = self._health
        if not h.connected and h.failures and time.monotonic() < h.retry_at:
            raise self._unavailable()
        await self._open()
        return False

    async def _open(self) -> None:
        await self._drop()
        where = f"{self.name} ({self.host}:{self.port})"
        try:
            async with asyncio.timeout(self.timeout_s):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            self._fail(XrfTimeoutError(f"{where}: connect timed out after {self.timeout_s} s"))
        except OSError as exc:
            self._fail(XrfConnectionError(f"{where}: cannot connect: {exc.strerror or exc}"))
        self.idn = await self._request(b"*IDN?\n", "*IDN?", self.timeout_s, _read_line)
        self._ok(self.idn)

    async def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # ----------------------------------------------------------------- requests

    async def _request(
        self,
        message: bytes,
        what: str,
        deadline_s: float,
        read: _Reader[T],
        *,
        stale_ok: bool = False,
    ) -> T:
        """Send one program message and read its reply; a failure drops the connection.

        With stale_ok, a connection that turns out closed before any reply byte raises
        _StaleConnection so the caller retries once on a fresh one (a gateway or head that
        closes idle connections is reconnected quietly; a measurement is safe to repeat).
        """
        where = f"{self.name} ({self.host}:{self.port})"
        if self._reader is None or self._writer is None:
            raise XrfConnectionError(f"{where}: not connected")
        try:
            async with asyncio.timeout(deadline_s):
                self._writer.write(message)
                await self._writer.drain()
                return await read(self._reader, what)
        except TimeoutError:
            await self._drop()
            self._fail(XrfTimeoutError(f"{where}: no answer to {what} within {deadline_s:.2f} s"))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            await self._drop()
            nothing_read = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
            if stale_ok and nothing_read:
                raise _StaleConnection from exc
            reason = (
                "closed the connection" if isinstance(exc, asyncio.IncompleteReadError) else exc
            )
            self._fail(XrfConnectionError(f"{where}: {reason} during {what}"))
        except asyncio.LimitOverrunError:
            await self._drop()
            self._fail(XrfError(f"{where}: reply to {what} has a line longer than 64 KiB"))
        except XrfInstrumentError as exc:  # a complete SCPI error line: the link stays in sync
            raise XrfInstrumentError(f"{where}: {exc}") from None
        except XrfError as exc:  # malformed reply: resynchronise on a fresh connection
            await self._drop()
            self._fail(XrfError(f"{where}: {exc}"))
        except asyncio.CancelledError:
            await self._drop()  # its reply may still arrive: never read it as the next one
            raise


class _StaleConnection(Exception):
    """The reused connection was already closed by the head: retry once on a new one."""


class _Reader(Protocol[T_co]):
    def __call__(self, reader: asyncio.StreamReader, what: str, /) -> Awaitable[T_co]: ...


async def _read_line(reader: asyncio.StreamReader, what: str) -> str:
    """One reply line; an `ERROR` line becomes XrfInstrumentError."""
    text = _ascii_line(await reader.readuntil(b"\n"), what)
    _raise_if_error(text, what)
    return text


async def _read_spectrum_reply(
    reader: asyncio.StreamReader, what: str
) -> tuple[npt.NDArray[np.float64], list[str]]:
    """Parse #<n><len><uint32 LE counts>,"<id>",<offset>,<gain>,<live>,<real>,<kV> (MEAS:SPEC?)."""
    first = await reader.readexactly(1)
    if first != b"#":
        text = _ascii_line(first + await reader.readuntil(b"\n"), what)
        _raise_if_error(text, what)
        raise XrfError(f"reply to {what} does not start with a data block: {text[:60]!r}")
    digits = await reader.readexactly(1)
    if not digits.isdigit() or digits == b"0":
        raise XrfError(f"reply to {what}: block header #{digits!r} is not #<1-9><length>")
    size_text = await reader.readexactly(int(digits))
    if not size_text.isdigit():
        raise XrfError(f"reply to {what}: block length {size_text!r} is not a number")
    size = int(size_text)
    n = size // COUNTS_DTYPE.itemsize
    if size % COUNTS_DTYPE.itemsize or not 16 <= n <= MAX_CHANNELS:
        raise XrfError(
            f"reply to {what}: a {size}-byte block is not 16-{MAX_CHANNELS} uint32 counts"
        )
    counts = np.frombuffer(await reader.readexactly(size), dtype=COUNTS_DTYPE)
    tail = _ascii_line(await reader.readuntil(b"\n"), what)
    try:
        fields = split_unquoted(tail[1:], ",")
    except ValueError as exc:
        raise XrfError(f"reply to {what}: {exc}") from None
    if not tail.startswith(",") or len(fields) != 6:
        raise XrfError(
            f'reply to {what}: expected ,"<sample id>",<offset keV>,<keV/channel>,<live s>,'
            f"<real s>,<tube kV> after the block, got {tail[:80]!r}"
        )
    return counts.astype(np.float64), fields


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise XrfError(f"{what}: {text[:40]!r} is not a finite number")
    return value


def _ascii_line(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        raise XrfError(f"reply to {what} is not ASCII text: {raw[:40]!r}") from None


def _raise_if_error(text: str, what: str) -> None:
    """`ERROR <code>,"<text>"`: the head refused the message (docs/xrf-protocol.md)."""
    if text.startswith("ERROR "):
        raise XrfInstrumentError(f"{what} refused: {text[6:]}")


def split_unquoted(text: str, sep: str) -> list[str]:
    """Split SCPI text on `sep` outside double-quoted strings ("" inside a string is a quote)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise ValueError(f"unterminated string in {text[:60]!r}")
    parts.append("".join(current))
    return parts


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


class Head(Protocol):
    """What a station needs of one head (`XrfClient`, `drivers.dp5.Dp5Client`)."""

    name: str

    @property
    def health(self) -> XrfHealth: ...

    @property
    def ready(self) -> bool: ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def measure(self, sample_id: str, live_time_s: float) -> Spectrum: ...


class XrfStation:
    """Several heads: each measurement goes to a free, healthy head (fails fast if none is up).

    With `lanes`, the conveyor puts cell `seq` in front of head (seq - 1) mod N, so `CELL:<seq>`
    is measured there and nowhere else (heads that cannot be told what they measure, such as
    DP5 heads: docs/xrf.md, "Geometry"); other samples still go to any free head."""

    def __init__(
        self, heads: Sequence[Head], *, name: str = "xrf-station", lanes: bool = False
    ) -> None:
        if not heads:
            raise ValueError("an XRF station needs at least one head")
        self.name = name
        self.heads = list(heads)
        self.lanes = lanes
        self._idle: list[Head] = list(heads)
        lock = asyncio.Lock()
        self._changed = asyncio.Condition(lock)  # a head was freed: samples any head may take
        # With lanes, one per head on the same lock: a freed head wakes the cell waiting for
        # that head, not every cell waiting for a head.
        self._freed = [asyncio.Condition(lock) for _ in self.heads]

    @property
    def busy(self) -> int:
        """Heads measuring right now."""
        return len(self.heads) - len(self._idle)

    @property
    def health(self) -> XrfHealth:
        """Up while any head is up; the last error and failure count of the worst head."""
        up = [h.health for h in self.heads if h.health.connected]
        down = [h.health for h in self.heads if not h.health.connected]
        worst = max(down, key=lambda x: x.failures, default=None)
        return XrfHealth(
            connected=bool(up),
            last_error=worst.last_error if worst else None,
            since=max((h.health.since for h in self.heads), default=time.time()),
            failures=worst.failures if worst else 0,
            retry_at=min((h.retry_at for h in down), default=0.0),
        )

    async def connect(self) -> None:
        """Connect every head; raises only if none of them answers."""
        results = await asyncio.gather(*(h.connect() for h in self.heads), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == len(self.heads):
            raise XrfConnectionError(f"{self.name}: no head answers: {errors[0]}")

    async def close(self) -> None:
        await asyncio.gather(*(h.close() for h in self.heads))

    async def __aenter__(self) -> XrfStation:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def measure(self, sample_id: str, live_time_s: float) -> Spectrum:
        """Measure on the first free healthy head (waits while healthy heads are busy); with
        lanes, a cell on the head of its lane (waits while it is busy, fails if it is down)."""
        head = await self._take(self._lane(sample_id))
        try:
            return await head.measure(sample_id, live_time_s)
        finally:
            async with self._changed:
                self._idle.append(head)
                freed = self._freed[self.heads.index(head)]
                if head.ready:
                    freed.notify()
                    self._changed.notify()
                else:  # every waiter learns the head is down
                    freed.notify_all()
                    self._changed.notify_all()

    async def check(self, live_time_s: float) -> list[Spectrum | XrfError]:
        """Every head measures its check standard: a start-up health check whose spectra also
        let the classifier prepare for each head's calibration before the first cell."""
        results = await asyncio.gather(
            *(h.measure(CHECK_SAMPLE, live_time_s) for h in self.heads), return_exceptions=True
        )
        out: list[Spectrum | XrfError] = []
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, XrfError):
                raise r
            out.append(r)
        return out

    def _lane(self, sample_id: str) -> Head | None:
        cell = _CELL.fullmatch(sample_id) if self.lanes else None
        return self.heads[(int(cell.group(1)) - 1) % len(self.heads)] if cell else None

    async def _take(self, lane: Head | None = None) -> Head:
        async with self._changed:
            if lane is not None:
                freed = self._freed[self.heads.index(lane)]
                while lane not in self._idle:
                    await freed.wait()
                if not lane.ready:
                    raise XrfUnavailableError(f"{lane.name}: down: {lane.health.last_error}")
                self._idle.remove(lane)
                return lane
            while True:
                ready = [h for h in self._idle if h.ready]
                if ready:
                    head = next((h for h in ready if h.health.connected), ready[0])
                    self._idle.remove(head)
                    return head
                if len(self._idle) == len(self.heads):
                    errors = "; ".join(h.health.last_error or "down" for h in self.heads)
                    raise XrfUnavailableError(f"{self.name}: all heads are down: {errors}")
                await self._changed.wait()
