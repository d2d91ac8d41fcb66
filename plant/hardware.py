"""What the line engine needs of its devices, as small Protocols: the PLC, the XRF station,
the label reader and the passport store. Real drivers and simulators both fit them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from drivers.plc import TagMap
from drivers.spectra import Spectrum


class Plc(Protocol):
    """What the engine needs of the PLC client (drivers/plc.py)."""

    tag_map: TagMap

    async def read(self, *tags: str) -> dict[str, Any]: ...
    async def write(self, tag: str, value: Any) -> None: ...
    async def write_many(self, values: Mapping[str, Any]) -> None: ...


class Spectrometer(Protocol):
    """What the engine needs of the XRF station (drivers/xrf.py)."""

    async def measure(self, sample_id: str, live_time_s: float) -> Spectrum: ...


class LabelReader(Protocol):
    """Camera + decoder: the passport id on the label of cell `seq`, or why there is none."""

    async def read_label(self, seq: int) -> tuple[str | None, str | None]: ...


PassportLookup = Callable[[str], Awaitable[Any]]
