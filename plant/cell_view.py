"""Cells as operators look them up: search, detail with spectrum and passport, manual release.

Used by the HMI (and usable from the CLI); the HMI itself imports only `plant`, so the spectrum
file is read here through `drivers.spectra`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from plant.domain import CellState, DecisionSource, Route
from plant.store import CellRow, PassportRow, Store, utcnow

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
PASSPORT_FIELDS = ("id", "model", "chemistry", "chemistry_reason", "manufacturer", "mass_g")


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
    """Newest first; page with `before_id` = the last id of the previous page."""
    stmt = select(CellRow)
    if q.passport_id:
        stmt = stmt.where(CellRow.passport_id == q.passport_id)
    for col, value in (
        (CellRow.chemistry, q.chemistry),
        (CellRow.route, q.route),
        (CellRow.state, q.state),
        (CellRow.line, q.line),
    ):
        if value:
            stmt = stmt.where(col == value)
    if q.since:
        stmt = stmt.where(CellRow.created_at >= q.since)
    if q.until:
        stmt = stmt.where(CellRow.created_at <= q.until)
    if q.before_id:
        stmt = stmt.where(CellRow.id < q.before_id)
    with store.session() as s:
        return list(s.scalars(stmt.order_by(CellRow.id.desc()).limit(q.limit)))


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


def spectrum_plot(ref: str, data_dir: Path) -> dict[str, Any]:
    """Energy/counts arrays (at most MAX_PLOT_POINTS, summed bins) and the element lines in range.

    `ref` is the cell's `spectrum_ref`: an absolute path, or one relative to the data directory.
    Raises CellError naming the file if it cannot be read.
    """
    from drivers.spectra import SpectrumError, read_spectrum

    path = Path(ref)
    if not path.is_absolute() and not path.exists():
        path = data_dir / ref
    try:
        spec = read_spectrum(path)
    except (SpectrumError, OSError) as exc:
        raise CellError(f"spectrum {ref}: {exc}") from None
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
        "source": str(path),
        "live_time_s": spec.live_time_s,
        "tube_kv": spec.tube_kv,
        "energy_kev": [round(float(e), 4) for e in energies],
        "counts": [float(c) for c in counts],
        "lines": lines,
    }


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
