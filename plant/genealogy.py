"""Genealogy: any product batch back to its lots, cells and passport ids, and any cell forward.

Links: batch -> campaign (batches.campaign_id) -> lots (campaign_lots) -> cells (cells.lot_id).
A lot whose `batch_id` the line engine set directly also counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select

from plant.lots import CATHODE_WT
from plant.store import BatchRow, CampaignLotRow, CellRow, LotRow, Store

# Elements the hydromet line sells; an off-spec impurity outside these points at foreign feed.
PRODUCT_METALS = frozenset({"Ni", "Co", "Mn", "Li"})


class TraceError(LookupError):
    """The batch, cell or passport asked for is not in the store."""


@dataclass(frozen=True)
class TracedCell:
    """A cell as genealogy shows it."""

    id: int
    line: str
    seq: int
    passport_id: str | None
    chemistry: str | None
    mass_g: float | None
    route: str | None
    lot_id: str | None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class BatchTrace:
    """A batch with the lots and cells that fed it."""

    batch_id: str
    product: str
    campaign_id: str | None
    lots: list[dict[str, Any]]
    cells: list[TracedCell] = field(repr=False)

    @property
    def passport_ids(self) -> list[str]:
        return sorted({c.passport_id for c in self.cells if c.passport_id})

    def suspects(self, elements: Iterable[str]) -> list[TracedCell]:
        """Cells whose decided chemistry brings the given foreign elements (Fe, P -> LFP)."""
        foreign = set(elements) - PRODUCT_METALS
        return [c for c in self.cells if foreign & set(CATHODE_WT.get(c.chemistry or "", {}))]

    def as_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "product": self.product,
            "campaign_id": self.campaign_id,
            "lots": self.lots,
            "cell_count": len(self.cells),
            "passport_ids": self.passport_ids,
        }


@dataclass(frozen=True)
class CellTrace:
    """A cell forward to its lot, campaign and product batches."""

    cell: TracedCell
    lot_id: str | None
    campaign_id: str | None
    batch_ids: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "cell": self.cell.as_json(),
            "lot_id": self.lot_id,
            "campaign_id": self.campaign_id,
            "batch_ids": self.batch_ids,
        }


def _cell(row: CellRow) -> TracedCell:
    return TracedCell(
        row.id, row.line, row.seq, row.passport_id, row.chemistry, row.mass_g, row.route, row.lot_id
    )


def trace_batch(store: Store, batch_id: str) -> BatchTrace:
    """Batch -> lots -> cells (with passport ids)."""
    with store.session() as s:
        batch = s.get(BatchRow, batch_id)
        if batch is None:
            raise TraceError(f"batch {batch_id!r} not found")
        conds = [LotRow.batch_id == batch_id]
        if batch.campaign_id is not None:
            conds.append(
                LotRow.id.in_(
                    select(CampaignLotRow.lot_id).where(
                        CampaignLotRow.campaign_id == batch.campaign_id
                    )
                )
            )
        lots = list(s.scalars(select(LotRow).where(or_(*conds)).order_by(LotRow.id)))
        lot_ids = [lot.id for lot in lots]
        cells = list(
            s.scalars(select(CellRow).where(CellRow.lot_id.in_(lot_ids)).order_by(CellRow.id))
        )
        return BatchTrace(
            batch_id=batch.id,
            product=batch.product,
            campaign_id=batch.campaign_id,
            lots=[
                {
                    "id": lot.id,
                    "route": lot.route,
                    "mass_g": lot.mass_g,
                    "cell_count": lot.cell_count,
                    "closed_at": lot.closed_at.isoformat() if lot.closed_at else None,
                }
                for lot in lots
            ],
            cells=[_cell(c) for c in cells],
        )


def _forward(store: Store, row: CellRow) -> CellTrace:
    campaign_id = None
    batch_ids: list[str] = []
    if row.lot_id is not None:
        with store.session() as s:
            campaign_id = s.scalar(
                select(CampaignLotRow.campaign_id).where(CampaignLotRow.lot_id == row.lot_id)
            )
            direct = s.scalar(select(LotRow.batch_id).where(LotRow.id == row.lot_id))
            conds = [BatchRow.campaign_id == campaign_id] if campaign_id else []
            conds += [BatchRow.id == direct] if direct else []
            if conds:
                batch_ids = sorted(s.scalars(select(BatchRow.id).where(or_(*conds))))
    return CellTrace(_cell(row), row.lot_id, campaign_id, batch_ids)


def trace_cell(store: Store, cell_id: int) -> CellTrace:
    """Cell -> lot -> campaign -> product batches."""
    with store.session() as s:
        row = s.get(CellRow, cell_id)
    if row is None:
        raise TraceError(f"cell {cell_id} not found")
    return _forward(store, row)


def trace_passport(store: Store, passport_id: str) -> list[CellTrace]:
    """Every cell that carried this passport id, forward to its batches."""
    rows = store.cells_by_passport(passport_id)
    if not rows:
        raise TraceError(f"no cell with passport {passport_id!r}")
    return [_forward(store, r) for r in rows]
