"""Cells of a line at a chosen time with their kept spectra, as a plant's store holds them: the
partition and `maintain` tests fill old months with these."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from drivers.spectra import Spectrum
from plant.spectrum_archive import keep_spectra
from plant.store import CellRow, Store

CHANNELS = 1024


def spectrum_of(cell_id: int) -> Spectrum:
    """The spectrum `confirmed_cells` keeps for a cell: the same for the same id."""
    counts = np.random.default_rng(cell_id).poisson(40.0, CHANNELS).astype(float)
    return Spectrum(counts=counts, offset_kev=0.0, kev_per_channel=0.04, live_time_s=0.05,
                    source=f"xrf0:CELL:{cell_id}")  # fmt: skip


def confirmed_cells(
    store: Store, line: str, at: datetime, n: int, spectra: bool = True
) -> list[int]:
    """`n` LFP cells of `line` sent to black mass, one a second from `at`; their ids."""
    with store.begin() as s:
        rows = [
            CellRow(line=line, seq=k + 1, state="confirmed", chemistry="LFP", route="black_mass",
                    spectrum_ref=f"xrf0:CELL:{k}", created_at=at + timedelta(seconds=k),
                    updated_at=at + timedelta(seconds=k))
            for k in range(n)
        ]  # fmt: skip
        s.add_all(rows)
        s.flush()
        ids = [r.id for r in rows]
        if spectra:
            keep_spectra(s, [(i, spectrum_of(i)) for i in ids])
    return ids
