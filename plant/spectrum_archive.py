"""Measured spectra kept with their cells in the database (table `cell_spectra`).

The codec is exact and small (docs/spectra.md, "Spectra kept"): integer counts are split into
little-endian byte planes (high bytes are mostly zero) and deflated; dense spectra are stored as
zigzag deltas between channels first; counts that are not whole numbers are stored as float64
byte planes, so every spectrum round-trips bit for bit. The line writes the spectra of its decided
cells in batches (`keep_spectra`, on the database worker thread, at most SPECTRA_FLUSH_S after each
decision); the running plant deletes spectra older than `[spectra] retention_days`
(`keep_within_retention`).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from drivers.spectra import Spectrum
from plant.store import CellRow, CellSpectrumRow, Store, table_of, utcnow

log = logging.getLogger(__name__)

COUNTS = "u-planes-deflate"  # whole counts as unsigned integers
DELTAS = "zzdelta-planes-deflate"  # whole counts as zigzag deltas to the previous channel
FLOATS = "f64-planes-deflate"  # any other finite counts, as IEEE doubles
ENCODINGS = (COUNTS, DELTAS, FLOATS)
# Above this mean count per channel, neighbouring channels are closer to each other than to
# zero and deltas compress better (measured on the simulator's spectra, docs/spectra.md).
DELTA_MIN_MEAN = 32.0
EXACT_INT_LIMIT = 2**53  # whole float64 values above this may not be integers exactly
PURGE_BATCH = 1000
PURGE_MAX_PERIOD_S = 600.0


class ArchiveError(ValueError):
    """A spectrum cannot be stored or a stored one cannot be read; the message says why."""


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15, 9)  # raw deflate: no header, no checksum
    return packer.compress(data) + packer.flush()


def _width(largest: int) -> int:
    return next(w for w in (1, 2, 4, 8) if largest < 256**w)


def encode_counts(counts: npt.ArrayLike) -> tuple[str, bytes]:
    """(encoding, compressed bytes) of a spectrum's counts; decode_counts restores them exactly."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ArchiveError(f"counts must be one channel axis, got shape {c.shape}")
    if not np.isfinite(c).all() or bool((c < 0).any()):
        raise ArchiveError("counts must be finite and not negative")
    if bool((c == np.floor(c)).all()) and c.max() < EXACT_INT_LIMIT:
        whole = c.astype(np.int64)
        if c.mean() > DELTA_MIN_MEAN:
            d = np.diff(whole, prepend=0)
            values = ((d << 1) ^ (d >> 63)).astype(np.uint64)
            encoding = DELTAS
        else:
            values = whole.astype(np.uint64)
            encoding = COUNTS
        width = _width(int(values.max()))
        raw = values.astype(f"<u{width}")
    else:
        encoding, width, raw = FLOATS, 8, c.astype("<f8")
    planes = raw.view(np.uint8).reshape(-1, width).T.tobytes()
    return encoding, _deflate(planes)


def decode_counts(encoding: str, blob: bytes, channels: int) -> npt.NDArray[np.float64]:
    """The counts `encode_counts` packed, as float64."""
    if encoding not in ENCODINGS:
        raise ArchiveError(f"unknown spectrum encoding {encoding!r}; known: {ENCODINGS}")
    if channels < 1:
        raise ArchiveError(f"a stored spectrum has {channels} channels")
    try:
        unpacker = zlib.decompressobj(-15)
        raw = unpacker.decompress(blob, channels * 8 + 1)
    except zlib.error as exc:
        raise ArchiveError(f"stored counts are corrupt: {exc}") from None
    width, rest = divmod(len(raw), channels)
    if rest or width not in (1, 2, 4, 8) or (encoding == FLOATS and width != 8):
        raise ArchiveError(f"stored counts have {len(raw)} bytes, not {channels} channels")
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(width, channels)
    by_channel = np.ascontiguousarray(planes.T)
    if encoding == FLOATS:
        return by_channel.view("<f8").reshape(-1).astype(np.float64)
    values = by_channel.view(f"<u{width}").reshape(-1).astype(np.uint64)
    if encoding == DELTAS:
        d = (values >> np.uint64(1)).astype(np.int64) ^ -(values & np.uint64(1)).astype(np.int64)
        return np.cumsum(d).astype(np.float64)
    return values.astype(np.float64)


# --------------------------------------------------------------------------- rows

_SPECTRA = table_of(CellSpectrumRow)


def _upsert(insert: Any) -> Any:
    """INSERT, or replace the spectrum when a cell is decided again after an unsure take."""
    stmt = insert(_SPECTRA)
    kept = {c.name: stmt.excluded[c.name] for c in _SPECTRA.columns if c.name != "cell_id"}
    return stmt.on_conflict_do_update(index_elements=[_SPECTRA.c.cell_id], set_=kept)


_UPSERT = {"sqlite": _upsert(sqlite.insert), "postgresql": _upsert(postgresql.insert)}


def spectrum_values(cell_id: int, spectrum: Spectrum, now: datetime) -> dict[str, Any]:
    """The `cell_spectra` row of a cell's spectrum (counts compressed here)."""
    encoding, blob = encode_counts(spectrum.counts)
    meta = spectrum.metadata
    return {
        "cell_id": cell_id,
        "channels": spectrum.n_channels,
        "kev_per_channel": spectrum.kev_per_channel,
        "offset_kev": spectrum.offset_kev,
        "live_time_s": spectrum.live_time_s,
        "real_time_s": spectrum.real_time_s,
        "tube_kv": spectrum.tube_kv,
        "source": spectrum.source[:300],
        "instrument": (meta.get("instrument") or meta.get("head") or None),
        "encoding": encoding,
        "counts": blob,
        "created_at": now,
    }


def keep_spectra(s: Session, kept: Sequence[tuple[int, Spectrum]]) -> None:
    """Store (cell id, spectrum) pairs in the caller's transaction, one statement for all."""
    if not kept:
        return
    conn = s.connection()
    now = utcnow()
    conn.execute(_UPSERT[conn.dialect.name], [spectrum_values(c, sp, now) for c, sp in kept])


def keep_spectrum(s: Session, cell_id: int, spectrum: Spectrum) -> None:
    """Store one cell's spectrum in the caller's transaction."""
    keep_spectra(s, [(cell_id, spectrum)])


def row_spectrum(row: CellSpectrumRow) -> Spectrum:
    """A stored spectrum as the shared Spectrum type; `source` is the instrument's label."""
    metadata = {"cell_id": str(row.cell_id)}
    if row.instrument:
        metadata["instrument"] = row.instrument
    return Spectrum(
        counts=decode_counts(row.encoding, row.counts, row.channels),
        offset_kev=row.offset_kev,
        kev_per_channel=row.kev_per_channel,
        live_time_s=row.live_time_s,
        real_time_s=row.real_time_s,
        tube_kv=row.tube_kv,
        source=row.source,
        metadata=metadata,
    )


def stored_spectrum(s: Session, cell_id: int) -> Spectrum | None:
    """The cell's stored spectrum, or None (never measured, imported, or past retention)."""
    row = s.get(CellSpectrumRow, cell_id)
    return None if row is None else row_spectrum(row)


@dataclass(frozen=True)
class Kept:
    """A decided cell with its stored spectrum, as `plant spectra export` writes it."""

    cell: CellRow
    spectrum: Spectrum


def decided_with_spectra(
    store: Store,
    since: datetime,
    until: datetime | None = None,
    line: str | None = None,
    *,
    page: int = 500,
) -> Iterator[Kept]:
    """Decided cells created in [since, until] that have a stored spectrum, in id order, read a
    page at a time (an export of a year must not hold a year in memory)."""
    after = 0
    while True:
        q = (
            select(CellRow, CellSpectrumRow)
            .join(CellSpectrumRow, CellSpectrumRow.cell_id == CellRow.id)
            .where(CellRow.id > after, CellRow.created_at >= since, CellRow.chemistry.is_not(None))
        )
        if until is not None:
            q = q.where(CellRow.created_at <= until)
        if line is not None:
            q = q.where(CellRow.line == line)
        with store.session() as s:
            rows = s.execute(q.order_by(CellRow.id).limit(page)).all()
        for cell, spectrum in rows:
            yield Kept(cell, row_spectrum(spectrum))
        if len(rows) < page:
            return
        after = rows[-1][0].id


# --------------------------------------------------------------------------- retention


def purge_before(store: Store, line: str, cutoff: datetime, limit: int = PURGE_BATCH) -> int:
    """Delete up to `limit` of this line's spectra stored before `cutoff`; how many went."""
    with store.begin() as s:
        ids = list(
            s.scalars(
                select(CellSpectrumRow.cell_id)
                .join(CellRow, CellRow.id == CellSpectrumRow.cell_id)
                .where(CellRow.line == line, CellSpectrumRow.created_at < cutoff)
                .limit(limit)
            )
        )
        if ids:
            s.execute(delete(CellSpectrumRow).where(CellSpectrumRow.cell_id.in_(ids)))
    return len(ids)


async def keep_within_retention(store: Store, line: str, retention_days: float) -> None:
    """Run for the plant's life: delete this line's spectra older than `retention_days`
    (0: keep forever), a batch per transaction in a worker thread, about ten times per
    retention period and at least every ten minutes."""
    if retention_days <= 0:
        return
    keep = timedelta(days=retention_days)
    period = min(PURGE_MAX_PERIOD_S, max(0.5, keep.total_seconds() / 10))
    while True:
        try:
            cutoff = utcnow() - keep
            gone = 0
            while (n := await asyncio.to_thread(purge_before, store, line, cutoff)) > 0:
                gone += n
            if gone:
                log.info("deleted %d spectra of line %s stored before %s", gone, line, cutoff)
        except Exception as exc:  # the database may be away: the next period tries again
            log.warning("spectrum retention: %s (retrying in %g s)", exc, period)
        await asyncio.sleep(period)
