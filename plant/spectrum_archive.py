"""Measured spectra kept with their cells in the database (table `cell_spectra`).

The codec is exact and small (docs/spectra.md, "Spectra kept"): integer counts are split into
little-endian byte planes (high bytes are mostly zero) and deflated; dense spectra are stored as
zigzag deltas between channels first; counts that are not whole numbers are stored as float64
byte planes, so every spectrum round-trips bit for bit. The line writes the spectra of its decided
cells in batches (`keep_spectra`, on the database worker thread, at most SPECTRA_FLUSH_S after each
decision); the running plant deletes spectra older than `[spectra] retention_days`
(`keep_within_retention`). `plant db maintain` (plant/partitions.py) moves whole months of them
to Parquet files, one per month, that `archived_spectrum` reads back for the cell page.
"""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection, Executable, delete, select
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


def _upsert(insert: Any, key: tuple[str, ...]) -> Any:
    """INSERT, or replace the spectrum when a cell is decided again after an unsure take."""
    stmt = insert(_SPECTRA)
    kept = {c.name: stmt.excluded[c.name] for c in _SPECTRA.columns if c.name not in key}
    return stmt.on_conflict_do_update(index_elements=list(key), set_=kept)


# The primary key: on PostgreSQL the month partitions' (cell_id, created_at), plant/partitions.py
_UPSERT = {
    "sqlite": _upsert(sqlite.insert, ("cell_id",)),
    "postgresql": _upsert(postgresql.insert, ("cell_id", "created_at")),
}
_CREATED = select(CellRow.id, CellRow.created_at)


def spectrum_values(cell_id: int, spectrum: Spectrum, created_at: datetime) -> dict[str, Any]:
    """The `cell_spectra` row of a cell's spectrum (counts compressed here), dated as the cell."""
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
        "created_at": created_at,
    }


def keep_spectra(
    s: Session,
    kept: Sequence[tuple[int, Spectrum]],
    created: Mapping[int, datetime | None] | None = None,
) -> None:
    """Store (cell id, spectrum) pairs in the caller's transaction, one statement for all; a
    spectrum is dated as its cell (`created`: the cells' created_at, as the line knows them;
    else read), so both lie in the same month partition."""
    if not kept:
        return
    conn = s.connection()
    if created is None or None in created.values():
        rows = conn.execute(_CREATED.where(CellRow.id.in_([c for c, _ in kept])))
        created = {int(i): t for i, t in rows}
    missing = [c for c, _ in kept if c not in created]
    if missing:
        raise ArchiveError(f"spectra of cells {missing[:5]} not kept: no such cells")
    values = [spectrum_values(c, sp, created[c]) for c, sp in kept]  # type: ignore[arg-type]
    conn.execute(_UPSERT[conn.dialect.name], values)


def keep_spectrum(s: Session, cell_id: int, spectrum: Spectrum) -> None:
    """Store one cell's spectrum in the caller's transaction."""
    keep_spectra(s, [(cell_id, spectrum)])


def row_spectrum(row: CellSpectrumRow) -> Spectrum:
    """A stored spectrum as the shared Spectrum type; `source` is the instrument's label."""
    return values_spectrum({c.name: getattr(row, c.name) for c in _SPECTRA.columns})


def values_spectrum(v: Mapping[str, Any]) -> Spectrum:
    """A `cell_spectra` row's values (from the database or an archive file) as a Spectrum."""
    metadata = {"cell_id": str(v["cell_id"])}
    if v["instrument"]:
        metadata["instrument"] = v["instrument"]
    return Spectrum(
        counts=decode_counts(v["encoding"], v["counts"], v["channels"]),
        offset_kev=v["offset_kev"],
        kev_per_channel=v["kev_per_channel"],
        live_time_s=v["live_time_s"],
        real_time_s=v["real_time_s"],
        tube_kv=v["tube_kv"],
        source=v["source"],
        metadata=metadata,
    )


def stored_spectrum(s: Session, cell_id: int) -> Spectrum | None:
    """The cell's stored spectrum, or None (never measured, imported, or past retention)."""
    row = s.get(CellSpectrumRow, cell_id)
    return None if row is None else row_spectrum(row)


# A spectrum's cell, by the cells' key on PostgreSQL (their month and primary key)
_same_cell = (CellSpectrumRow.cell_id == CellRow.id) & (
    CellSpectrumRow.created_at == CellRow.created_at
)


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
            .join(CellSpectrumRow, _same_cell)
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
                .join(CellRow, _same_cell)
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


# --------------------------------------------------------------------------- Parquet archive

ARCHIVE_SCHEMA = pa.schema(
    [
        ("cell_id", pa.int64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("channels", pa.int32()),
        ("kev_per_channel", pa.float64()),
        ("offset_kev", pa.float64()),
        ("live_time_s", pa.float64()),
        ("real_time_s", pa.float64()),
        ("tube_kv", pa.float64()),
        ("source", pa.string()),
        ("instrument", pa.string()),
        ("encoding", pa.string()),
        ("counts", pa.binary()),
    ]
)
# Rows per row group: the reader of one cell's spectrum decompresses one group (~3 MB), found
# by the groups' cell_id statistics (rows are written in cell_id order).
ARCHIVE_ROW_GROUP = 2048


def archive_file(archive_dir: Path, month: date) -> Path:
    """The Parquet file of one month's spectra."""
    return archive_dir / f"cell_spectra-{month:%Y-%m}.parquet"


def write_archive(conn: Connection, rows_of: Executable, path: Path) -> int:
    """Write the spectra `rows_of` selects (in cell_id order) to `path` (zstd), durably, merged
    with the spectra the file already holds; how many it wrote from the database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    names = ARCHIVE_SCHEMA.names
    n = 0
    with pq.ParquetWriter(tmp, ARCHIVE_SCHEMA, compression="zstd") as out:
        if path.exists():  # an earlier run archived part of this month (SQLite)
            out.write_table(pq.read_table(path, schema=ARCHIVE_SCHEMA))
        streamed = {"stream_results": True, "yield_per": ARCHIVE_ROW_GROUP}
        for part in conn.execute(rows_of, execution_options=streamed).mappings().partitions():
            cols = {k: [r[k] for r in part] for k in names}
            cols["created_at"] = [_utc(t) for t in cols["created_at"]]
            out.write_table(pa.table(cols, schema=ARCHIVE_SCHEMA), ARCHIVE_ROW_GROUP)
            n += len(part)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash before the rows are deleted
    finally:
        os.close(fd)
    return n


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def archived_spectrum(archive_dir: Path, cell_id: int, created_at: datetime) -> Spectrum | None:
    """The cell's spectrum from the archive file of its month, or None (not archived)."""
    path = archive_file(archive_dir, _utc(created_at).astimezone(UTC).date().replace(day=1))
    if not path.is_file():
        return None
    try:
        found = pq.read_table(path, filters=[("cell_id", "=", cell_id)]).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise ArchiveError(f"archive {path.name} cannot be read: {exc}") from None
    return values_spectrum(found[-1]) if found else None
