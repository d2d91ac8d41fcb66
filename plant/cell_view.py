"""Cells as operators look them up: search, detail with spectrum and passport, manual release.

Used by the HMI (and usable from the CLI); the HMI itself imports only `plant`, so spectra are
read here: stored with the cell (plant/spectrum_archive.py) or from an imported cell's file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import literal, select, tuple_

from drivers.spectra import Spectrum, SpectrumError, read_spectrum
from plant.domain import CellState, DecisionSource, Route
from plant.spectrum_archive import ArchiveError, archived_spectrum, stored_spectrum
from plant.store import CellRow, Code, PassportRow, Store, utcnow

# Kα1/Kβ1 line energies in keV, from docs/reference/xrf-and-process.md §1.1 (xraylib).
ELEMENT_LINES_KEV: dict[str, tuple[float, float]] = {
    "Al": (1.487, 1.554),
    "P": (2.010, 2.136),
    "K": (3.314, 3.590),
    "Mn": (5.899, 6.490),
    "Fe": (6.404, 7.058),
    "Co": (6.930, 7.649),
    "Ni": (7.478, 8.265),
    "Cu": (8.048, 8.905),
    "Zn": (8.639, 9.572),
    "Cd": (23.174, 26.095),
    "La": (33.442, 37.801),
    "Ce": (34.720, 39.258),
}
MAX_PLOT_POINTS = 2048
PASSPORT_FIELDS = (
    "id",
    "model",
    "chemistry",
    "chemistry_reason",
    "manufacturer",
    "mass_g",
    "authenticity",  # models.credentials.Verdict at import (None: stored before it existed)
    "authenticity_reason",
)


class CellError(ValueError):
    """A cell action is not possible; the message names the cell and why."""


@dataclass(frozen=True, slots=True)
class CellQuery:
    """Filters of the cell log; all optional, combined with AND."""

    passport_id: str | None = None
    chemistry: str | None = None
    route: str | None = None
    state: str | None = None
    line: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None
    limit: int = 100


def cell_json(row: CellRow) -> dict[str, Any]:
    """A cell row as the API shows it."""
    return {
        "id": row.id,
        "line": row.line,
        "seq": row.seq,
        "passport_id": row.passport_id,
        "mass_g": row.mass_g,
        "chemistry": row.chemistry,
        "confidence": row.confidence,
        "decision_source": row.decision_source,
        "route": row.route,
        "reason": row.reason,
        "model_version": row.model_version,
        "state": row.state,
        "lot_id": row.lot_id,
        "spectrum_ref": row.spectrum_ref,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }


def search_cells(store: Store, q: CellQuery) -> list[CellRow]:
    """Newest first by (created_at, id), the key of the cells' primary key on PostgreSQL and of
    `ix_cells_created_id` on SQLite, so every page starts at an index position whatever the
    filters (keyset paging; docs/bench.md says why); page on with `before_id` = the last id of
    the previous page."""
    stmt = select(CellRow)
    if q.passport_id:
        stmt = stmt.where(CellRow.passport_id == q.passport_id)
    for col, value in (
        (CellRow.chemistry, q.chemistry),
        (CellRow.route, q.route),
        (CellRow.state, q.state),
        (CellRow.line, q.line),
    ):
        if value and isinstance(col.type, Code) and not col.type.knows(value):
            return []  # no cell has a route or state outside the vocabulary
        if value:
            stmt = stmt.where(col == value)
    if q.since:
        stmt = stmt.where(CellRow.created_at >= q.since)
    if q.until:
        stmt = stmt.where(CellRow.created_at <= q.until)
    with store.session() as s:
        if q.before_id:
            after = s.scalar(select(CellRow.created_at).where(CellRow.id == q.before_id))
            if after is None:  # no such cell: no page after it
                return []
            key = tuple_(CellRow.created_at, CellRow.id)
            stmt = stmt.where(key < tuple_(literal(after, CellRow.created_at.type), q.before_id))
        newest_first = (CellRow.created_at.desc(), CellRow.id.desc())
        return list(s.scalars(stmt.order_by(*newest_first).limit(q.limit)))


def cell_detail(store: Store, cell_id: int) -> dict[str, Any] | None:
    """The cell with the passport fields its decision used, or None if there is no such cell."""
    with store.session() as s:
        row = s.get(CellRow, cell_id)
        if row is None:
            return None
        passport = s.get(PassportRow, row.passport_id) if row.passport_id else None
    out = cell_json(row)
    out["passport"] = (
        {f: getattr(passport, f) for f in PASSPORT_FIELDS} | {"soh_pct": passport.soh_pct}
        if passport
        else None
    )
    return out


def spectrum_plot(spec: Spectrum, source: str) -> dict[str, Any]:
    """Energy/counts arrays (at most MAX_PLOT_POINTS, summed bins) and the element lines."""
    energies = spec.energies()
    counts = spec.counts
    step = max(1, -(-spec.n_channels // MAX_PLOT_POINTS))
    if step > 1:
        n = (spec.n_channels // step) * step
        energies = energies[:n].reshape(-1, step).mean(axis=1)
        counts = counts[:n].reshape(-1, step).sum(axis=1)
    lo, hi = float(energies[0]), float(energies[-1])
    lines = [
        {"element": el, "line": name, "kev": kev}
        for el, pair in ELEMENT_LINES_KEV.items()
        for name, kev in zip(("Ka", "Kb"), pair, strict=True)
        if lo <= kev <= hi
    ]
    return {
        "source": source,
        "channels": spec.n_channels,
        "channels_per_point": step,
        "live_time_s": spec.live_time_s,
        "tube_kv": spec.tube_kv,
        "energy_kev": [round(float(e), 4) for e in energies],
        "counts": [float(c) for c in counts],
        "lines": lines,
    }


# The line stores decided cells' spectra every 0.25 s (plant/line.py SPECTRA_FLUSH_S): a cell
# decided this recently may have a spectrum that is not stored yet.
JUST_DECIDED_S = 1.0


def _just_decided(row: CellRow, seconds: float = JUST_DECIDED_S) -> bool:
    updated = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
    return row.spectrum_ref is not None and utcnow() - updated < timedelta(seconds=seconds)


def cell_spectrum(
    store: Store,
    cell_id: int,
    data_dir: Path,
    retention_days: float,
    archive_dir: Path,
    wait_s: float = 5.0,
) -> dict[str, Any] | None:
    """The plot of a cell's spectrum: stored with the cell (live cells), else in the archive
    `plant db maintain` moved it to, else the file its `spectrum_ref` names (imported cells);
    None if there is no such cell.

    Raises CellError saying why a cell has no spectrum; messages show no server paths. A cell
    still being measured is waited for up to `wait_s`, one decided in the last second for its
    spectrum's store (the line stores spectra shortly after their decisions).
    """
    deadline = time.monotonic() + wait_s
    while True:
        with store.session() as s:
            row = s.get(CellRow, cell_id)
            if row is None:
                return None
            spec = stored_spectrum(s, cell_id)
        if spec is not None or time.monotonic() > deadline:
            break
        if row.state != CellState.detected and not _just_decided(row):
            break
        time.sleep(0.1)
    if spec is None and row.spectrum_ref:
        try:
            spec = archived_spectrum(archive_dir, cell_id, row.created_at)
        except ArchiveError as exc:
            raise CellError(f"cell {cell_id}: {exc}") from None
    if spec is not None:
        return spectrum_plot(spec, spec.source)
    if row.state == CellState.detected:
        raise CellError(f"cell {cell_id} is still being measured: try again in a moment")
    ref = row.spectrum_ref
    if not ref:
        raise CellError(f"cell {cell_id} has no spectrum: no XRF spectrum was measured for it")
    path = Path(ref) if Path(ref).is_absolute() else data_dir / ref
    if path.is_file():
        try:
            return spectrum_plot(read_spectrum(path), path.name)
        except (SpectrumError, OSError) as exc:
            raise CellError(f"cell {cell_id}: {str(exc).replace(str(path), path.name)}") from None
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    if retention_days > 0 and utcnow() - created > timedelta(days=retention_days):
        raise CellError(
            f"cell {cell_id} has no spectrum any more: its spectrum ({ref}) was deleted after "
            f"the retention period of {_period(retention_days)} ([spectra] retention_days)"
        )
    raise CellError(f"cell {cell_id} has no stored spectrum: {ref} is neither stored nor a file")


def _period(days: float) -> str:
    """A retention period as people say it: days, or seconds below a day (tests, trials)."""
    if days < 1:
        return f"{days * 86400:g} s"
    return f"{days:g} day" + ("" if days == 1 else "s")


def release_cell(store: Store, cell_id: int, route: str, reason: str, user: str) -> CellRow:
    """An operator sends a quarantined cell on to a route after inspection (audited)."""
    try:
        target = Route(route)
    except ValueError:
        raise CellError(f"route {route!r} is not one of {[r.value for r in Route]}") from None
    if target == Route.quarantine:
        raise CellError("release to a route other than quarantine")
    if not reason.strip():
        raise CellError("releasing a cell needs a reason")
    with store.begin() as s:
        row = s.get(CellRow, cell_id, with_for_update=True)
        if row is None:
            raise CellError(f"no cell with id {cell_id}")
        if row.route != Route.quarantine:
            raise CellError(f"cell {cell_id} is routed to {row.route}, not quarantine")
        old = f"route={row.route} state={row.state} reason={row.reason}"
        row.route = target.value
        row.state = CellState.confirmed.value
        row.decision_source = DecisionSource.operator.value
        row.reason = f"released from quarantine by {user}: {reason.strip()} (was: {row.reason})"
        row.updated_at = utcnow()
        store.audit(
            s, user, "cell.release", f"cell:{cell_id}", old, f"route={target.value}: {reason}"
        )
    return row
