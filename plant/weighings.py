"""Weighbridge records of the mechanical stage's output fractions, which the EU recycling
efficiency (plant/purity_report.py) counts at their calculation points.

One writer for the HMI (`POST /api/weighings`), the CLI (`plant weighings add`) and the
simulated mechanical stage, so all three check and audit alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from plant.store import LotRow, Store, WeighingRow


@dataclass(frozen=True)
class FractionKind:
    """What a fraction is and how the EU method treats it.

    `counted`: recycled output, counted for recycling efficiency at `calculation_point`;
    `intermediate`: goes on to a later step of this plant (counted where that step's outputs
    leave); neither: residue, landfill or energy recovery, never counted."""

    description: str
    calculation_point: str
    counted: bool = False
    intermediate: bool = False


FRACTIONS: dict[str, FractionKind] = {
    "steel": FractionKind(
        "Fe scrap: steel cans and cases",
        "steel scrap weighed leaving the plant for a steelworks",
        counted=True,
    ),
    "aluminium": FractionKind(
        "Al scrap: Al cans, housings, tabs (the foils go with the black mass)",
        "Al scrap weighed leaving the plant for an Al smelter",
        counted=True,
    ),
    "copper": FractionKind(
        "Cu scrap: tabs, terminals (the foils go with the black mass)",
        "Cu scrap weighed leaving the plant for a Cu refinery",
        counted=True,
    ),
    "plastics": FractionKind(
        "plastics: separator, insulation, pouch laminate",
        "plastics weighed leaving the plant for material recycling",
        counted=True,
    ),
    "graphite": FractionKind(
        "anode graphite concentrate",
        "graphite concentrate weighed leaving the plant for recycling",
        counted=True,
    ),
    "electrolyte": FractionKind(
        "electrolyte solvents recovered by condensation",
        "electrolyte condensate weighed leaving the plant for solvent recycling",
        counted=True,
    ),
    "black_mass": FractionKind(
        "black mass with the foils, to the leach",
        "black mass weighed into the leach (its metals count at the hydromet outputs)",
        intermediate=True,
    ),
    "residue": FractionKind(
        "residue: fines, dust, binder; to landfill",
        "residue weighed leaving the plant for disposal (not recycled)",
    ),
    "energy_recovery": FractionKind(
        "combustibles sent to incineration with energy recovery",
        "combustibles weighed leaving the plant for energy recovery (not recycled)",
    ),
}
MAX_KG = 100_000.0
CLOCK_SLACK = timedelta(minutes=5)  # a weighbridge clock a little ahead is not an error


class WeighingError(ValueError):
    """A weighing refused; `field` names the input that is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_fraction(fraction: str) -> str:
    """The fraction's name if known; else WeighingError listing the known ones."""
    if fraction not in FRACTIONS:
        raise WeighingError(
            "fraction", f"unknown fraction {fraction!r}; known: {', '.join(FRACTIONS)}"
        )
    return fraction


def check_kg(kg: float) -> float:
    """A weighbridge mass: finite, above zero and at most MAX_KG."""
    if not math.isfinite(kg) or kg <= 0 or kg > MAX_KG:
        raise WeighingError("kg", f"{kg:g} kg: give a mass above 0 and at most {MAX_KG:g} kg")
    return kg


def record_weighing(
    store: Store,
    fraction: str,
    kg: float,
    *,
    user: str,
    source: str,
    lot: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Check and store one weighing with its audit entry, in one transaction (a time without a
    zone is UTC)."""
    return record_weighings(store, {fraction: kg}, user=user, source=source, lot=lot, at=at)[0]


def record_weighings(
    store: Store,
    fractions: Mapping[str, float],
    *,
    user: str,
    source: str,
    lot: str | None = None,
    at: datetime | None = None,
) -> list[dict[str, Any]]:
    """Several fractions of one lot, weighed at one time: all stored and audited, or none."""
    now = datetime.now(UTC)
    when = at or now
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when > now + CLOCK_SLACK:
        raise WeighingError("at", f"{when.isoformat()} is in the future")
    out = []
    with store.begin() as s:
        for fraction, kg in fractions.items():
            row = _add(s, check_fraction(fraction), check_kg(kg), lot, when, source, user)
            store.audit(s, user, "weighing.add", f"weighing:{row.id}", None, _summary(row))
            out.append(weighing_json(row))
    return out


def _add(
    s: Session, fraction: str, kg: float, lot: str | None, when: datetime, source: str, user: str
) -> WeighingRow:
    if lot is not None:
        state = s.scalar(select(LotRow.state).where(LotRow.id == lot))
        if state is None:
            raise WeighingError("lot", f"no lot {lot!r}")
        if state == "open":
            raise WeighingError(
                "lot", f"lot {lot} is still open; weigh its fractions once it closed"
            )
    row = WeighingRow(
        fraction=fraction, kg=kg, lot_id=lot, weighed_at=when, source=source, user=user[:64]
    )
    s.add(row)
    s.flush()
    return row


def _summary(row: WeighingRow) -> str:
    lot = f" lot {row.lot_id}" if row.lot_id else ""
    return f"{row.fraction} {row.kg:g} kg{lot}"


def weighing_json(row: WeighingRow) -> dict[str, Any]:
    at = row.weighed_at if row.weighed_at.tzinfo else row.weighed_at.replace(tzinfo=UTC)
    return {
        "id": row.id,
        "fraction": row.fraction,
        "kg": row.kg,
        "lot_id": row.lot_id,
        "weighed_at": at.isoformat(),
        "source": row.source,
        "user": row.user,
        "calculation_point": FRACTIONS[row.fraction].calculation_point,
    }


def weighings_of(
    s: Session,
    lots: Sequence[str],
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[WeighingRow]:
    """The weighings of these lots, and those of no lot weighed in [start, end)."""
    q = select(WeighingRow).where(WeighingRow.lot_id.is_(None))
    if start is not None:
        q = q.where(WeighingRow.weighed_at >= start)
    if end is not None:
        q = q.where(WeighingRow.weighed_at < end)
    unlinked = list(s.scalars(q))
    linked = list(s.scalars(select(WeighingRow).where(WeighingRow.lot_id.in_(list(lots)))))
    return sorted(linked + unlinked, key=lambda w: w.id)


def weighed_lots(s: Session, lots: Sequence[str]) -> set[str]:
    """Which of these lots have at least one weighing."""
    return set(
        s.scalars(select(WeighingRow.lot_id).where(WeighingRow.lot_id.in_(list(lots))).distinct())
    )
