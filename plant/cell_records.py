"""The cell table's SQL for the line engine: every per-cell statement in one place.

The engine (plant/line.py) runs these on its database thread, each inside the transaction the
worker opens; they only read and write rows, and decide nothing. Statements are built once, in
Core (plant/store.py `update_by_id` says why). A cell row is updated by its id and `created_at`:
on PostgreSQL that is the month partition and its primary key (created_at, id); `id` alone has
only a block-range index there (docs/bench.md, bytes per cell).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Update, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from plant.domain import CellState, Decision, Route
from plant.routing import as_duplicate
from plant.store import DECISION_COLUMNS, CellRow, Store, StoreError, table_of, utcnow

ROUTES = tuple(r.value for r in Route)

_CELLS = table_of(CellRow)
_FIND_CELL = select(_CELLS.c.id, _CELLS.c.state, _CELLS.c.created_at).where(
    _CELLS.c.line == bindparam("b_line"),
    _CELLS.c.epoch == bindparam("b_epoch"),
    _CELLS.c.seq == bindparam("b_seq"),
)
_FIND_PASSPORT = (
    select(_CELLS.c.id, _CELLS.c.line, _CELLS.c.epoch, _CELLS.c.seq)
    .where(_CELLS.c.passport_id == bindparam("b_pid"), _CELLS.c.id != bindparam("b_id"))
    .limit(1)
)
_INSERT_CELL = insert(_CELLS)


def _update_cell(**values: Any) -> Update:
    """UPDATE of one cell by `b_id` and `b_created_at`."""
    key = (_CELLS.c.id == bindparam("b_id"), _CELLS.c.created_at == bindparam("b_created_at"))
    return update(_CELLS).where(*key).values(**values)


_RECORD_DECISION = _update_cell(
    **{c: bindparam(f"b_{c}") for c in (*DECISION_COLUMNS, "spectrum_ref", "state", "updated_at")},
)
_MARK_FINAL = _update_cell(
    state=bindparam("b_state"),
    route=bindparam("b_route"),
    updated_at=bindparam("b_updated_at"),
    reason=func.coalesce(bindparam("b_reason"), _CELLS.c.reason),
    lot_id=func.coalesce(bindparam("b_lot_id"), _CELLS.c.lot_id),
)


class Unfinished(NamedTuple):
    """A cell row left between detection and its final state (by a crash or a restart)."""

    id: int
    seq: int
    mass_g: float | None
    state: str
    route: str | None
    chemistry: str | None
    epoch: int
    created_at: datetime


def _updated(result: Any, row_id: int, created_at: datetime | None) -> None:
    """Every update of a cell finds its row, or says so (a decision is never dropped quietly)."""
    if result.rowcount != 1:
        raise StoreError(f"cell row {row_id} created at {created_at} not found to update")


def detected(
    s: Session, line: str, epoch: int, seq: int, mass_g: float, *, may_exist: bool
) -> tuple[int, str, datetime]:
    """The row id, state and creation time of a detected cell: its existing row (left by a
    crash or a take in doubt; looked for only when `may_exist`) or a new `detected` row."""
    conn = s.connection()
    if may_exist:
        existing = conn.execute(
            _FIND_CELL, {"b_line": line, "b_epoch": epoch, "b_seq": seq}
        ).first()
        if existing is not None:
            return int(existing[0]), str(existing[1]), existing[2]
    now = utcnow()
    res = conn.execute(
        _INSERT_CELL,
        {
            "line": line,
            "epoch": epoch,
            "seq": seq,
            "mass_g": mass_g,
            "state": CellState.detected,
            "created_at": now,
            "updated_at": now,
        },
    )
    pk = res.inserted_primary_key
    assert pk is not None
    return int(pk[0]), CellState.detected, now


def record_decision(
    s: Session,
    row_id: int,
    created_at: datetime | None,
    d: Decision,
    passport_id: str | None,
    spectrum_ref: str | None,
) -> Decision:
    """Commit the decision; a passport already on another cell (any line) makes it a
    duplicate first, in the same transaction, so no command goes out before it is known."""
    conn = s.connection()
    if passport_id and d.route != Route.quarantine:
        row = conn.execute(_FIND_PASSPORT, {"b_pid": passport_id, "b_id": row_id}).first()
        if row is not None:
            cell_id, line, epoch, seq = row
            d = as_duplicate(
                d,
                f"passport {passport_id} was on cell #{cell_id} "
                f"(line {line}, epoch {epoch}, seq {seq})",
            )
    res = conn.execute(
        _RECORD_DECISION,
        {
            "b_id": row_id,
            "b_created_at": created_at,
            "b_passport_id": passport_id,
            "b_spectrum_ref": spectrum_ref,
            "b_chemistry": d.chemistry,
            "b_confidence": d.confidence,
            "b_decision_source": d.source,
            "b_route": d.route,
            "b_reason": d.reason,
            "b_model_version": d.model_version,
            "b_state": CellState.routed,
            "b_updated_at": utcnow(),
        },
    )
    _updated(res, row_id, created_at)
    return d


def mark_final(
    s: Session,
    row_id: int,
    created_at: datetime | None,
    state: str,
    route: str,
    reason: str | None,
    lot_id: str | None,
) -> None:
    """The cell's final state and route (a reason or lot already on the row is kept)."""
    res = s.connection().execute(
        _MARK_FINAL,
        {
            "b_id": row_id,
            "b_created_at": created_at,
            "b_state": state,
            "b_route": route,
            "b_updated_at": utcnow(),
            "b_reason": reason,
            "b_lot_id": lot_id,
        },
    )
    _updated(res, row_id, created_at)


def max_seq(s: Session, line: str, epoch: int) -> int:
    """The newest seq with a row in the line's epoch (0: none)."""
    top = s.scalar(
        select(func.max(CellRow.seq)).where(CellRow.line == line, CellRow.epoch == epoch)
    )
    return int(top or 0)


def unfinished(s: Session, line: str) -> list[Unfinished]:
    """The line's cells not yet confirmed or quarantined, oldest epoch and seq first."""
    q = (
        select(
            CellRow.id,
            CellRow.seq,
            CellRow.mass_g,
            CellRow.state,
            CellRow.route,
            CellRow.chemistry,
            CellRow.epoch,
            CellRow.created_at,
        )
        .where(
            CellRow.line == line,
            CellRow.state.not_in([CellState.confirmed, CellState.quarantined]),
        )
        .order_by(CellRow.epoch, CellRow.seq)
    )
    return [Unfinished(*r) for r in s.execute(q)]


def count_routes(
    store: Store, line: str, *, epochs: tuple[int, ...] | None = None
) -> dict[str, int]:
    """Cells per final route in the store for one line (and PLC epochs, if given)."""
    where = [CellRow.line == line, CellRow.state.in_([CellState.confirmed, CellState.quarantined])]
    if epochs is not None:
        where.append(CellRow.epoch.in_(epochs))
    with store.session() as s:
        rows = s.execute(
            select(CellRow.route, func.count(CellRow.id)).where(*where).group_by(CellRow.route)
        ).all()
    out = dict.fromkeys(ROUTES, 0)
    out.update({str(r): int(n) for r, n in rows if r is not None})
    return out
