"""Lots: confirmed cells accumulate per route; a lot closes at a mass or an age.

A lot carries an estimate of its metal content from its cells' decided chemistries and masses,
which the mass balance (plant/purity.py) takes as "metal in".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from plant.domain import Chemistry, Route
from plant.store import LotRow, table_of, update_by_id

# Cathode active material composition, wt% (docs/reference/xrf-and-process.md §2.1).
CATHODE_WT: dict[str, dict[str, float]] = {
    "NMC111": {"Ni": 20.3, "Co": 20.4, "Mn": 19.0, "Li": 7.2},
    "NMC532": {"Ni": 30.4, "Co": 12.2, "Mn": 17.1, "Li": 7.2},
    "NMC622": {"Ni": 36.3, "Co": 12.2, "Mn": 11.3, "Li": 7.2},
    "NMC811": {"Ni": 48.3, "Co": 6.1, "Mn": 5.6, "Li": 7.1},
    "NCA": {"Ni": 48.9, "Co": 9.2, "Al": 1.4, "Li": 7.2},
    "LCO": {"Co": 60.2, "Li": 7.1},
    "LMO": {"Mn": 60.8, "Li": 3.8},
    "LFP": {"Fe": 35.4, "P": 19.6, "Li": 4.4},
    # Family only: the middle of the NMC range (NMC622) is the least-wrong estimate.
    "NMC": {"Ni": 36.3, "Co": 12.2, "Mn": 11.3, "Li": 7.2},
}
# Cell-level split [U] in the same reference, §2.2: cathode 30-40 %, Cu foil 8-12 %,
# Al foil 4-6 %. Mid-range values.
CATHODE_SHARE = 0.35
CU_FOIL_SHARE = 0.10
AL_FOIL_SHARE = 0.05
LI_ION = frozenset(CATHODE_WT) | {Chemistry.UNKNOWN.value}


def estimate_metals(chemistry: str | None, mass_g: float) -> dict[str, float]:
    """Grams of each metal in one cell of the given decided chemistry."""
    if chemistry is None or chemistry not in CATHODE_WT:
        return {}
    out = {el: mass_g * CATHODE_SHARE * wt / 100.0 for el, wt in CATHODE_WT[chemistry].items()}
    out["Cu"] = out.get("Cu", 0.0) + mass_g * CU_FOIL_SHARE
    out["Al"] = out.get("Al", 0.0) + mass_g * AL_FOIL_SHARE
    return out


@dataclass(frozen=True)
class LotPolicy:
    """When a lot closes: at `close_mass_g`, or `max_age` after it opened."""

    close_mass_g: float = 20_000.0
    max_age: timedelta = timedelta(hours=8)
    routes: tuple[str, ...] = (Route.hydromet, Route.black_mass, Route.reject)


@dataclass
class _OpenLot:
    id: str
    opened_at: datetime
    mass_g: float = 0.0
    cells: int = 0
    metals: dict[str, float] = field(default_factory=dict)


class LotTracker:
    """Assigns confirmed cells to the open lot of their route, inside the caller's transaction."""

    def __init__(self, line: str, policy: LotPolicy) -> None:
        self.line = line
        self.policy = policy
        self._open: dict[str, _OpenLot] = {}
        self._n = 0

    def load(self, session: Session) -> None:
        """Resume the open lots of this line after a restart."""
        for row in session.scalars(
            select(LotRow).where(LotRow.line == self.line, LotRow.state == "open")
        ):
            self._open[row.route] = _OpenLot(
                row.id, row.opened_at, row.mass_g, row.cell_count, dict(row.metals_g)
            )

    def _new_id(self, route: str, now: datetime) -> str:
        self._n += 1
        code = {"hydromet": "HM", "black_mass": "BM", "reject": "RJ"}.get(route, route[:2].upper())
        return f"{self.line}-{code}-{now:%Y%m%d-%H%M%S}-{self._n:03d}"

    def add(
        self, session: Session, route: str, chemistry: str | None, mass_g: float, now: datetime
    ) -> tuple[str | None, list[str]]:
        """Put one cell in its route's lot; returns (lot id or None, ids of lots closed now)."""
        if route not in self.policy.routes:
            return None, []
        lot = self._open.get(route)
        if lot is None:
            lot = _OpenLot(self._new_id(route, now), now)
            self._open[route] = lot
            session.add(LotRow(id=lot.id, line=self.line, route=route, state="open", opened_at=now))
            session.flush()
        lot.mass_g += mass_g
        lot.cells += 1
        for el, g in estimate_metals(chemistry, mass_g).items():
            lot.metals[el] = lot.metals.get(el, 0.0) + g
        closed: list[str] = []
        if lot.mass_g >= self.policy.close_mass_g:
            closed.append(lot.id)
        self._write(session, lot, closing=bool(closed), now=now)
        if closed:
            del self._open[route]
        return lot.id, closed

    def close_aged(self, session: Session, now: datetime) -> list[str]:
        """Close lots older than the policy's maximum age (called periodically)."""
        closed = []
        for route, lot in list(self._open.items()):
            if now - _aware(lot.opened_at) >= self.policy.max_age and lot.cells > 0:
                self._write(session, lot, closing=True, now=now)
                closed.append(lot.id)
                del self._open[route]
        return closed

    def _write(self, session: Session, lot: _OpenLot, *, closing: bool, now: datetime) -> None:
        session.connection().execute(
            _WRITE_LOT,
            {
                "b_id": lot.id,
                "b_mass_g": lot.mass_g,
                "b_cell_count": lot.cells,
                "b_metals_g": {k: round(v, 3) for k, v in lot.metals.items()},
                "b_state": "closed" if closing else None,
                "b_closed_at": now if closing else None,
            },
        )


_LOTS = table_of(LotRow)
# Written once per confirmed cell: built once, in Core (plant/store.py `update_by_id`).
_WRITE_LOT = update_by_id(
    _LOTS,
    mass_g=bindparam("b_mass_g"),
    cell_count=bindparam("b_cell_count"),
    metals_g=bindparam("b_metals_g", type_=_LOTS.c.metals_g.type),
    state=func.coalesce(bindparam("b_state", type_=_LOTS.c.state.type), _LOTS.c.state),
    closed_at=func.coalesce(
        bindparam("b_closed_at", type_=_LOTS.c.closed_at.type), _LOTS.c.closed_at
    ),
)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
