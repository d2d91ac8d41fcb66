"""The frames between the controller and its classifier process: JSON with the spectra's counts
as raw little-endian float64 after it. No pickle: a frame can only ever hold data."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from drivers.spectra import Spectrum
from models.passport import Passport
from plant.decide import Evidence
from plant.domain import Chemistry, Decision, DecisionSource, Route

HEAD = struct.Struct("!II")  # lengths of the JSON part and of the counts after it
_F8 = np.dtype("<f8")


@dataclass(frozen=True)
class Frame:
    """One request or answer as it crosses the socket: a JSON object and the counts it uses."""

    message: dict[str, Any]
    counts: bytes = b""

    def to_bytes(self) -> bytes:
        head = json.dumps(self.message, separators=(",", ":")).encode()
        return HEAD.pack(len(head), len(self.counts)) + head + self.counts

    @classmethod
    def parse(cls, head: bytes, counts: bytes) -> Frame:
        message = json.loads(head)
        if not isinstance(message, dict):
            raise ValueError("a frame's JSON part is not an object")
        return cls(message, counts)


def evidence_frame(items: list[Evidence]) -> Frame:
    """A "decide" request for these cells."""
    cells, arrays = [], []
    for ev in items:
        spectrum = None
        if ev.spectrum is not None:
            s = ev.spectrum
            arrays.append(np.ascontiguousarray(s.counts, dtype=_F8))
            spectrum = {
                "channels": int(s.counts.size),
                "offset_kev": s.offset_kev,
                "kev_per_channel": s.kev_per_channel,
                "live_time_s": s.live_time_s,
                "real_time_s": s.real_time_s,
                "tube_kv": s.tube_kv,
                "source": s.source,
                "metadata": s.metadata,
            }
        cells.append(
            {
                "spectrum": spectrum,
                "spectrum_error": ev.spectrum_error,
                "passport_id": ev.passport_id,
                "passport": None if ev.passport is None else ev.passport.model_dump(mode="json"),
                "passport_error": ev.passport_error,
                "buffers_full": sorted(ev.buffers_full),
                "duplicate_of": ev.duplicate_of,
                "cell_mass_g": ev.cell_mass_g,
                "seen_on": ev.seen_on.isoformat(),
            }
        )
    return Frame({"kind": "decide", "cells": cells}, b"".join(a.tobytes() for a in arrays))


def evidence_of(frame: Frame) -> list[Evidence]:
    """The cells of a "decide" request (the spectra checked again as on reading)."""
    counts = np.frombuffer(frame.counts, dtype=_F8)
    at, items = 0, []
    for cell in frame.message["cells"]:
        spectrum = None
        if (meta := cell["spectrum"]) is not None:
            n = meta.pop("channels")
            spectrum = Spectrum(counts=counts[at : at + n].copy(), **meta)
            at += n
        passport = cell["passport"]
        items.append(
            Evidence(
                spectrum=spectrum,
                spectrum_error=cell["spectrum_error"],
                passport_id=cell["passport_id"],
                passport=None if passport is None else Passport.model_validate(passport),
                passport_error=cell["passport_error"],
                buffers_full=frozenset(cell["buffers_full"]),
                duplicate_of=cell["duplicate_of"],
                cell_mass_g=cell["cell_mass_g"],
                seen_on=date.fromisoformat(cell["seen_on"]),
            )
        )
    if at != counts.size:
        raise ValueError(f"the frame holds {counts.size} counts, its cells use {at}")
    return items


def decisions_frame(decisions: list[Decision]) -> Frame:
    """The answer to a "decide" request."""
    fields = (
        (d.chemistry.value, d.confidence, d.source.value, d.route.value, d.reason, d.model_version)
        for d in decisions
    )
    return ok_frame([list(f) for f in fields])


def decisions_of(value: list[list[Any]]) -> list[Decision]:
    """The decisions of a "decide" answer."""
    return [
        Decision(Chemistry(c), float(conf), DecisionSource(src), Route(r), reason, version)
        for c, conf, src, r, reason, version in value
    ]


def ok_frame(value: Any) -> Frame:
    """An answer: `value` as JSON."""
    return Frame({"status": "ok", "value": value})


def error_frame(error: str) -> Frame:
    """An answer the parent raises as the request's failure."""
    return Frame({"status": "error", "value": error})
