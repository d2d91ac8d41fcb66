"""Modbus TCP client for the line PLC, addressed by tag name through config/plc.toml.

Two halves live here because both the client and the simulated PLC need them:
- the tag map (pydantic model, validated at load; encoding/decoding of every value in ONE
  place: `Tag.decode` / `Tag.encode`);
- `PlcClient`, an asyncio client with batched reads, per-request timeouts, capped
  exponential reconnect backoff with jitter, typed errors and a health state that logs one
  line per change (a PLC down for an hour logs twice: when it goes and when it comes back).
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import logging
import math
import random
import re
import struct
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from drivers.backoff import MIN_WAIT_S, backoff_delay

log = logging.getLogger(__name__)

Table = Literal["coil", "discrete_input", "holding_register", "input_register"]
TagType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32"]
Value = bool | int | float

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete_input"})
WRITABLE_TABLES: frozenset[str] = frozenset({"coil", "holding_register"})
# Modbus limits per request (Modbus Application Protocol v1.1b3, §6.1-6.4).
MAX_READ: dict[str, int] = {
    "coil": 2000,
    "discrete_input": 2000,
    "holding_register": 125,
    "input_register": 125,
}
MAX_WRITE: dict[str, int] = {"coil": 1968, "holding_register": 123}
# A zero or negative configured reconnect delay must not turn into a busy loop.

# Register <-> value codecs (Modbus registers are big-endian 16-bit words; word_order says
# which word of a 32-bit value comes first). struct is used rather than pymodbus'
# convert_from_registers because it is several times faster on the line's hot path.
_WORD = struct.Struct(">H")
_WORDS = struct.Struct(">HH")
_STRUCT: dict[str, struct.Struct] = {
    "int16": struct.Struct(">h"),
    "uint16": struct.Struct(">H"),
    "int32": struct.Struct(">i"),
    "uint32": struct.Struct(">I"),
    "float32": struct.Struct(">f"),
}
_INT_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}
_READERS: dict[str, str] = {
    "coil": "read_coils",
    "discrete_input": "read_discrete_inputs",
    "holding_register": "read_holding_registers",
    "input_register": "read_input_registers",
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NEVER_CONNECTED = "not connected yet"
# Masses of the cells a line PLC shows behind its infeed FIFO head, k = 1, 2, ... (docs/plc.md)
NEXT_MASS = "infeed.next.{}.mass_g"
# The diverter's recent executions, slot k = (seq - 1) mod K + 1 (docs/plc.md)
DONE_SEQ = "diverter.done.{}.seq"
DONE_TARGET = "diverter.done.{}.target"
_TAG_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


# --------------------------------------------------------------------------- errors


class TagMapError(Exception):
    """config/plc.toml is missing or invalid; the one-line message names the file and tag."""


class UnknownTagError(LookupError):
    """A tag name that is not in the map; carries close matches for the message."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f" (did you mean: {', '.join(self.close)}?)" if self.close else ""
        super().__init__(f"unknown tag '{name}'{hint}")

    def __str__(self) -> str:
        return str(self.args[0])


class TagValueError(ValueError):
    """A value that cannot be written to a tag (read-only, wrong type, out of range)."""


class PlcError(Exception):
    """Any failure talking to the PLC."""


class PlcConnectionError(PlcError):
    """No TCP connection to the PLC (refused, unreachable, dropped)."""


class PlcTimeoutError(PlcError):
    """The PLC did not answer within the request timeout."""


class PlcExceptionError(PlcError):
    """The PLC answered with a Modbus exception code; names the tags of the request."""

    def __init__(self, message: str, *, tags: tuple[str, ...], code: int) -> None:
        super().__init__(message)
        self.tags = tags
        self.code = code


def exception_name(code: int) -> str:
    """Readable name of a Modbus exception code, e.g. 2 -> 'illegal address'."""
    try:
        return ExcCodes(code).name.lower().replace("_", " ")
    except ValueError:
        return "unknown exception"


# --------------------------------------------------------------------------- tag map


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tag(_Strict):
    """One named PLC value: where it lives and how its registers turn into a number."""

    name: str = ""  # filled from the key in [tags]
    table: Table
    address: int = Field(ge=0, le=65535, description="0-based protocol address")
    type: TagType
    word_order: Literal["big", "little"] | None = None
    scale: float = 1.0
    unit: str = ""
    description: str = Field(min_length=1)
    momentary: bool = False  # a command coil the PLC resets after acting on it

    @field_validator("scale")
    @classmethod
    def _scale_finite(cls, v: float) -> float:
        if not math.isfinite(v) or v == 0:
            raise ValueError("scale must be a finite, non-zero number")
        return v

    @property
    def width(self) -> int:
        """Registers (or bits) the tag occupies."""
        return 2 if self.type in ("int32", "uint32", "float32") else 1

    @property
    def end(self) -> int:
        """One past the last address the tag occupies."""
        return self.address + self.width

    @property
    def writable(self) -> bool:
        return self.table in WRITABLE_TABLES

    @property
    def word_offsets(self) -> tuple[int, ...]:
        """The tag's registers, most significant first (word_order applied)."""
        if self.width == 1:
            return (0,)
        return (1, 0) if self.word_order == "little" else (0, 1)

    def decode(self, words: Sequence[int] | Sequence[bool]) -> Value:
        """Raw registers/bits (exactly `width` of them) -> engineering value."""
        if self.type == "bool":
            return bool(words[0])
        data = struct.pack(f">{self.width}H", *(int(words[i]) for i in self.word_offsets))
        return self.finish(_STRUCT[self.type].unpack(data)[0])

    def finish(self, raw: float) -> Value:
        """The unpacked register value -> engineering value (float32 rounding, scale)."""
        if self.type == "float32" and raw != 0.0:
            raw = float(str(np.float32(raw)))  # shortest decimal: 4.35, not 4.349999904632568
        if self.scale == 1.0:
            return raw
        return float(raw) * self.scale

    def encode(self, value: Value) -> list[int] | list[bool]:
        """Engineering value -> raw registers/bits; errors name the tag."""
        if self.type == "bool":
            if not isinstance(value, bool | int) or value not in (0, 1):
                raise TagValueError(f"tag '{self.name}': expected true/false or 1/0, got {value!r}")
            return [bool(value)]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TagValueError(f"tag '{self.name}': expected a number, got {value!r}")
        if not math.isfinite(value):
            raise TagValueError(f"tag '{self.name}': {value!r} is not a finite number")
        raw: int | float = value / self.scale if self.scale != 1.0 else value
        if self.type == "float32":
            if abs(raw) > _FLOAT32_MAX:
                raise TagValueError(f"tag '{self.name}': {value!r} does not fit a float32")
            raw = float(raw)
        else:
            if isinstance(raw, float):
                if abs(raw - round(raw)) > 1e-6:
                    raise TagValueError(
                        f"tag '{self.name}': {value!r} is not a whole multiple of scale "
                        f"{self.scale:g}"
                    )
                raw = round(raw)
            lo, hi = _INT_RANGE[self.type]
            if not lo <= raw <= hi:
                lo_s, hi_s = lo * self.scale, hi * self.scale
                raise TagValueError(
                    f"tag '{self.name}': {value!r} is outside {lo_s:g}..{hi_s:g} ({self.type})"
                )
        data = _STRUCT[self.type].pack(raw)
        if self.width == 1:
            return [_WORD.unpack(data)[0]]
        hi_word, lo_word = _WORDS.unpack(data)
        return [lo_word, hi_word] if self.word_order == "little" else [hi_word, lo_word]


class ModbusSettings(_Strict):
    """[modbus]: how requests are made."""

    unit_id: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id")
    timeout_s: float = Field(0.25, gt=0, le=60, description="per-request timeout")
    max_gap: int = Field(
        16, ge=0, le=100, description="unmapped addresses a read may span to join neighbours"
    )


@dataclass(frozen=True)
class ReadBlock:
    """One read request: a contiguous address range of one table and the tags inside it."""

    table: str
    address: int
    count: int
    tags: tuple[Tag, ...]

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tags)

    @cached_property
    def what(self) -> str:
        """How errors name this request."""
        last = self.address + self.count - 1
        return f"read of {', '.join(self.names)} ({self.table} {self.address}..{last})"

    @cached_property
    def _codec(self) -> tuple[list[int], struct.Struct, struct.Struct, tuple[Tag, ...]]:
        """Which words of the answer, in which order, unpack with one struct to every tag's
        raw value (the poll is read hundreds of times a second: one unpack, not one per tag),
        and the tags whose raw value still needs `Tag.finish` (float32 or scaled)."""
        order = [tag.address - self.address + i for tag in self.tags for i in tag.word_offsets]
        codes = "".join(_STRUCT[tag.type].format[1:] for tag in self.tags)
        special = tuple(t for t in self.tags if t.type == "float32" or t.scale != 1.0)
        return order, struct.Struct(f">{len(order)}H"), struct.Struct(">" + codes), special

    def decode(self, words: Sequence[int] | Sequence[bool], out: dict[str, Value]) -> None:
        """Pick every tag's value out of the block's answer."""
        if self.table in BIT_TABLES:
            for tag in self.tags:
                out[tag.name] = bool(words[tag.address - self.address])
            return
        order, pack, unpack, special = self._codec
        raws = unpack.unpack(pack.pack(*[words[i] for i in order]))
        out.update(zip(self.names, raws, strict=True))
        for tag in special:
            out[tag.name] = tag.finish(out[tag.name])


@dataclass(frozen=True)
class WriteRequest:
    """One write request: encoded words (or bits) for adjacent tags of one table."""

    table: str
    address: int
    words: list[int] | list[bool]
    names: tuple[str, ...]

    @property
    def what(self) -> str:
        return f"write of {', '.join(self.names)} ({self.table} {self.address})"


class TagMap(_Strict):
    """config/plc.toml: the named tags and request settings."""

    modbus: ModbusSettings = ModbusSettings()
    tags: dict[str, Tag] = Field(min_length=1)

    def tag(self, name: str) -> Tag:
        """The tag called `name`, or UnknownTagError listing close matches."""
        try:
            return self.tags[name]
        except KeyError:
            raise UnknownTagError(name, self.tags) from None

    def series(self, pattern: str) -> tuple[str, ...]:
        """Tags `pattern` with k = 1, 2, ... filled in, in order, up to the first one missing
        (e.g. "infeed.next.{}.mass_g": the cells a PLC shows behind its FIFO head)."""
        names: list[str] = []
        while (name := pattern.format(len(names) + 1)) in self.tags:
            names.append(name)
        return tuple(names)

    def table_size(self, table: str) -> int:
        """One past the highest address used in a table (0 if the table is unused)."""
        return max((t.end for t in self.tags.values() if t.table == table), default=0)

    def plan_reads(self, names: Iterable[str]) -> tuple[ReadBlock, ...]:
        """Group tags into as few requests as the Modbus limits and `max_gap` allow."""
        by_table: dict[str, list[Tag]] = {}
        for name in dict.fromkeys(names):
            tag = self.tag(name)
            by_table.setdefault(tag.table, []).append(tag)
        blocks: list[ReadBlock] = []
        for table, tags in by_table.items():
            tags.sort(key=lambda t: t.address)
            group: list[Tag] = [tags[0]]
            start, end = tags[0].address, tags[0].end
            for tag in tags[1:]:
                joinable = tag.address - end <= self.modbus.max_gap
                if joinable and max(end, tag.end) - start <= MAX_READ[table]:
                    group.append(tag)
                    end = max(end, tag.end)
                    continue
                blocks.append(ReadBlock(table, start, end - start, tuple(group)))
                group, start, end = [tag], tag.address, tag.end
            blocks.append(ReadBlock(table, start, end - start, tuple(group)))
        return tuple(blocks)

    def plan_writes(self, values: Mapping[str, Value]) -> list[WriteRequest]:
        """Encode values and join exactly adjacent tags of one table into one request each."""
        encoded: list[tuple[Tag, list[Any]]] = []
        for name, value in values.items():
            tag = self.tag(name)
            if not tag.writable:
                raise TagValueError(f"tag '{name}' is a {tag.table}: read-only")
            encoded.append((tag, list(tag.encode(value))))
        encoded.sort(key=lambda e: (e[0].table, e[0].address))
        requests: list[WriteRequest] = []
        for tag, words in encoded:
            last = requests[-1] if requests else None
            if (
                last is not None
                and last.table == tag.table
                and last.address + len(last.words) == tag.address
                and len(last.words) + len(words) <= MAX_WRITE[tag.table]
            ):
                requests[-1] = WriteRequest(
                    tag.table, last.address, [*last.words, *words], (*last.names, tag.name)
                )
            else:
                requests.append(WriteRequest(tag.table, tag.address, words, (tag.name,)))
        return requests

    @model_validator(mode="after")
    def _name_and_check(self) -> TagMap:
        """Name each tag after its key and run the cross-tag checks."""
        for name, tag in self.tags.items():
            object.__setattr__(tag, "name", name)
        _check_map(self)
        return self


def _check_map(tm: TagMap) -> None:
    """Cross-field rules pydantic's per-field checks cannot express; errors name the tag."""
    for name, tag in tm.tags.items():
        where = f"tag '{name}'"
        if not _TAG_NAME.match(name):
            raise ValueError(f"{where}: names are lowercase 'area.name' (letters, digits, _)")
        if (tag.type == "bool") != (tag.table in BIT_TABLES):
            raise ValueError(
                f"{where}: type {tag.type} cannot live in table {tag.table} "
                "(bool <-> coil/discrete_input, numbers <-> registers)"
            )
        if tag.width == 2 and tag.word_order is None:
            raise ValueError(f'{where}: {tag.type} needs word_order = "big" or "little"')
        if tag.width == 1 and tag.word_order is not None:
            raise ValueError(f"{where}: word_order applies to 32-bit types only")
        if tag.end > 65536:
            raise ValueError(f"{where}: address {tag.address} + {tag.width} runs past 65535")
        if tag.type == "bool" and tag.scale != 1.0:
            raise ValueError(f"{where}: a bool tag cannot have a scale")
        if tag.momentary and tag.table != "coil":
            raise ValueError(f"{where}: only coils can be momentary")
    by_table: dict[str, list[Tag]] = {}
    for tag in tm.tags.values():
        by_table.setdefault(tag.table, []).append(tag)
    for table, tags in by_table.items():
        tags.sort(key=lambda t: t.address)
        for prev, tag in itertools.pairwise(tags):
            if tag.address < prev.end:
                raise ValueError(
                    f"tag '{tag.name}': {table} address {tag.address} overlaps tag "
                    f"'{prev.name}' ({prev.address}..{prev.end - 1})"
                )


def _describe_validation(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = list(err["loc"])
    if len(loc) >= 2 and loc[0] == "tags":
        where = f"tag '{loc[1]}'" + (f": {'.'.join(map(str, loc[2:]))}" if loc[2:] else "")
    elif not loc:
        where = ""
    else:
        where = ".".join(map(str, loc))
    if err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field"
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
        value = err.get("input")
        if value is not None and not isinstance(value, dict) and err["type"] != "value_error":
            msg += f" (got {value!r})"
    more = len(exc.errors()) - 1
    return (f"{where}: " if where else "") + msg + (f" (and {more} more)" if more else "")


def parse_tag_map(data: Mapping[str, Any], source: str = "tag map") -> TagMap:
    """Validate already-parsed TOML; TagMapError names the source and the tag."""
    try:
        return TagMap.model_validate(data)
    except ValidationError as exc:
        raise TagMapError(f"{source}: {_describe_validation(exc)}") from None


def load_tag_map(path: Path) -> TagMap:
    """Read and validate config/plc.toml; every failure is a one-line TagMapError."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TagMapError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise TagMapError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise TagMapError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_tag_map(data, str(path))


# --------------------------------------------------------------------------- client


class LinkState(StrEnum):
    """Connection health the controller and HMI show."""

    connected = "connected"  # last request answered
    degraded = "degraded"  # the PLC stopped answering (timeouts); retrying with backoff
    down = "down"  # no TCP connection; retrying with backoff


@dataclass(frozen=True)
class PlcHealth:
    """Snapshot of the link: state, why, since when (epoch s), consecutive failures."""

    state: LinkState
    last_error: str | None
    since: float
    failures: int = 0

    @property
    def ok(self) -> bool:
        return self.state is LinkState.connected


class _QuietPymodbus(logging.Filter):
    """Drop pymodbus' own connect/retry warnings: PlcClient reports link changes once each."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno != logging.WARNING


_pymodbus_log = logging.getLogger("pymodbus.logging")
if not any(isinstance(f, _QuietPymodbus) for f in _pymodbus_log.filters):
    _pymodbus_log.addFilter(_QuietPymodbus())

HealthCallback = Callable[[PlcHealth], None]


class PlcClient:
    """Async Modbus TCP client that reads and writes the PLC by tag name.

    One lock serialises requests on the connection (as Home Assistant's modbus hub does);
    every request has a timeout; a lost connection is re-opened with capped exponential
    backoff and jitter; a gateway that closed an idle connection is reconnected quietly.
    """

    def __init__(
        self,
        host: str,
        port: int,
        tag_map: TagMap,
        *,
        timeout_s: float | None = None,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 10.0,
        on_health: HealthCallback | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tag_map = tag_map
        self.timeout_s = tag_map.modbus.timeout_s if timeout_s is None else timeout_s
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        self.reconnect_min_s = max(reconnect_min_s, MIN_WAIT_S)
        self.reconnect_max_s = max(reconnect_max_s, self.reconnect_min_s)
        self._unit = tag_map.modbus.unit_id
        self._on_health = on_health
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._health = PlcHealth(LinkState.down, _NEVER_CONNECTED, time.time())
        self._next_attempt = 0.0  # monotonic time before which no reconnect is tried
        self._plans: dict[tuple[str, ...], tuple[ReadBlock, ...]] = {}
        self._rng = random.Random()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def health(self) -> PlcHealth:
        return self._health

    # ---- connection ------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection now (ignoring backoff); PlcConnectionError if it fails."""
        async with self._lock:
            await self._ensure_connected(force=True)

    async def wait_connected(self) -> None:
        """Keep trying (honouring the backoff) until the PLC accepts a connection."""
        while True:
            delay = self._next_attempt - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.connect()
                return
            except PlcConnectionError:
                continue

    async def close(self) -> None:
        """Close the connection."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def __aenter__(self) -> PlcClient:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _on_link(self, up: bool) -> None:
        """pymodbus connect/disconnect trace: fail a request in flight at once on a drop."""
        if up or self._client is None:
            return
        fut = self._client.ctx.response_future
        if not fut.done():
            fut.set_exception(ConnectionError("connection closed by the PLC"))

    async def _ensure_connected(self, *, force: bool = False) -> AsyncModbusTcpClient:
        """Connected client, reconnecting if allowed now; called with the lock held."""
        client = self._client
        if client is not None and client.connected:
            return client
        if not force and not self._health.ok and time.monotonic() < self._next_attempt:
            wait = self._next_attempt - time.monotonic()
            raise PlcConnectionError(
                f"PLC {self.address} {self._health.state.value} ({self._health.last_error}); "
                f"next attempt in {wait:.2f} s"
            )
        if client is None:
            client = AsyncModbusTcpClient(
                self.host,
                port=self.port,
                timeout=self.timeout_s,  # connect timeout; requests use asyncio.timeout below
                retries=0,
                reconnect_delay=0,  # reconnects are ours (backoff + jitter + health)
                trace_connect=self._on_link,
            )
            self._client = client
        if await client.connect():
            if self._health.ok:
                log.debug("PLC %s: reconnected after the peer closed an idle connection", self)
            elif self._health.last_error == _NEVER_CONNECTED:
                self._succeeded()
            # after a failure only an answered request counts as recovered: a PLC that
            # accepts connections but never answers must not flap between states
            return client
        client.close()
        self._failed(LinkState.down, "cannot connect (refused or unreachable)")
        raise PlcConnectionError(f"PLC {self.address}: cannot connect (refused or unreachable)")

    def _failed(self, state: LinkState, error: str) -> None:
        failures = self._health.failures + 1
        delay = backoff_delay(failures, self.reconnect_min_s, self.reconnect_max_s, self._rng)
        self._next_attempt = time.monotonic() + delay
        self._set_health(state, error, failures)

    def _succeeded(self) -> None:
        if not self._health.ok:
            self._set_health(LinkState.connected, None, 0)

    def _set_health(self, state: LinkState, error: str | None, failures: int) -> None:
        """Record the link state; log (and call on_health) only when the state changes."""
        old = self._health
        changed = state is not old.state
        self._health = PlcHealth(state, error, time.time() if changed else old.since, failures)
        if not changed:
            return
        if state is LinkState.connected:
            if old.last_error != _NEVER_CONNECTED:
                down_s = time.time() - old.since
                log.warning(
                    "PLC %s: connected again after %.1f s %s (%s)",
                    self.address,
                    down_s,
                    old.state.value,
                    old.last_error,
                )
        else:
            log.warning("PLC %s %s: %s; retrying with backoff", self.address, state.value, error)
        if self._on_health is not None:
            self._on_health(self._health)

    def __str__(self) -> str:
        return f"PlcClient({self.address})"

    # ---- requests --------------------------------------------------------

    async def _execute(
        self,
        what: str,
        names: tuple[str, ...],
        method: str,
        *args: Any,
        **kwargs: Any,
    ) -> ModbusPDU:
        """Run client.method(*args) under the lock with a timeout; map failures to typed errors."""
        async with self._lock:
            retried = False
            while True:
                was_ok = self._health.ok
                client = await self._ensure_connected()
                try:
                    async with asyncio.timeout(self.timeout_s):
                        rsp: ModbusPDU = await getattr(client, method)(
                            *args, device_id=self._unit, **kwargs
                        )
                except asyncio.CancelledError:
                    client.close()  # the caller gave up mid-request: do not leave a late answer
                    raise
                except TimeoutError:
                    client.close()  # a late answer must not be taken for the next request's
                    self._failed(LinkState.degraded, f"no answer within {self.timeout_s:g} s")
                    raise PlcTimeoutError(
                        f"PLC {self.address}: no answer within {self.timeout_s:g} s to {what}"
                    ) from None
                except (ModbusException, ConnectionError, OSError) as exc:
                    client.close()
                    if was_ok and not retried:
                        # a gateway closed the idle connection under us: reconnect, once, quietly
                        retried = True
                        continue
                    self._failed(LinkState.down, "connection lost")
                    raise PlcConnectionError(
                        f"PLC {self.address}: connection lost during {what} ({exc})"
                    ) from None
                self._succeeded()
                if rsp.isError():
                    code = int(getattr(rsp, "exception_code", 0))
                    raise PlcExceptionError(
                        f"PLC {self.address} answered Modbus exception {code} "
                        f"({exception_name(code)}) to {what}",
                        tags=names,
                        code=code,
                    )
                return rsp

    async def read(self, *tags: str) -> dict[str, Value]:
        """Read tags by name; neighbouring addresses share one request per block."""
        plan = self._plans.get(tags)
        if plan is None:
            plan = self._plans[tags] = self.tag_map.plan_reads(tags)
        out: dict[str, Value] = {}
        for block in plan:
            rsp = await self._execute(
                block.what, block.names, _READERS[block.table], block.address, count=block.count
            )
            block.decode(rsp.bits if block.table in BIT_TABLES else rsp.registers, out)
        return out

    async def write(self, tag: str, value: Value) -> None:
        """Write one tag (scaled and encoded per the map)."""
        await self.write_many({tag: value})

    async def write_many(self, values: Mapping[str, Value]) -> None:
        """Write several tags; adjacent tags of one table go in one request.

        Modbus writes set values, so a write repeated after a dropped connection is safe.
        """
        for req in self.tag_map.plan_writes(values):
            method = "write_coils" if req.table == "coil" else "write_registers"
            await self._execute(req.what, req.names, method, req.address, req.words)
