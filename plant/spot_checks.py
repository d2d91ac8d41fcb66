"""Spot checks of quarantined cells on the lab XRF analyser (`[assay_analyser]`): a sample of
the cell's electrodes measured, the chemistry its elements indicate named and audited, so the
operator can release the cell to its route (or not) on a measurement."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plant.config import AssayAnalyserSection
from plant.domain import Chemistry, Route
from plant.lot_assays import LotAssayError, NotFound, measure
from plant.lots import CATHODE_WT
from plant.store import CellRow, Store

METALS = ("Ni", "Co", "Mn", "Fe")
# Each cathode's share of Ni, Co, Mn and Fe in their sum (plant/lots.py CATHODE_WT).
REFERENCE: dict[str, tuple[float, ...]] = {
    chem: tuple(wt.get(el, 0.0) / sum(wt.get(m, 0.0) for m in METALS) for el in METALS)
    for chem, wt in CATHODE_WT.items()
    if chem != Chemistry.NMC.value  # a family, not a material
}
MAX_DISTANCE = 0.15  # half the L1 distance between neighbouring NMC ratios is ~0.1-0.2
MIN_METALS_PCT = 1.0  # less Ni+Co+Mn+Fe than this: no cathode in the sample
# Elements only the other cell types bring (docs/reference/xrf-and-process.md §2.1), wt%.
MARKERS = (("Cd", 1.0, Chemistry.NiCd), ("La", 1.0, Chemistry.NiMH), ("Zn", 5.0, Chemistry.ZnMn))


def chemistry_of(wt_pct: Mapping[str, float]) -> tuple[Chemistry, str]:
    """The chemistry a measured electrode sample indicates, and why (pure)."""
    for el, least, chem in MARKERS:
        if wt_pct.get(el, 0.0) >= least:
            return chem, f"{el} {wt_pct[el]:.1f} wt%"
    total = sum(wt_pct.get(el, 0.0) for el in METALS)
    if total < MIN_METALS_PCT:
        return Chemistry.UNKNOWN, f"Ni+Co+Mn+Fe {total:.2f} wt%: no cathode in the sample"
    shares = [wt_pct.get(el, 0.0) / total for el in METALS]
    dist = {
        c: sum(abs(a - b) for a, b in zip(shares, ref, strict=True)) for c, ref in REFERENCE.items()
    }
    best = min(dist, key=dist.__getitem__)
    ratio = ":".join(f"{el} {s:.2f}" for el, s in zip(METALS, shares, strict=True))
    if dist[best] > MAX_DISTANCE:
        return Chemistry.UNKNOWN, f"{ratio}: nearest {best} at {dist[best]:.2f} > {MAX_DISTANCE}"
    return Chemistry(best), f"{ratio}: {best} at {dist[best]:.2f}"


async def spot_check(
    store: Store, analyser: AssayAnalyserSection, cell_id: int, user: str
) -> dict[str, Any]:
    """Measure the sample of a quarantined cell (already in the analyser); audited."""
    with store.session() as s:
        cell = s.get(CellRow, cell_id)
        if cell is None:
            raise NotFound(f"no cell with id {cell_id}")
        if cell.route != Route.quarantine:
            raise LotAssayError(f"cell {cell_id} is routed to {cell.route}, not quarantine")
    m = await measure(analyser)
    wt = m.result.wt_pct()
    chem, why = chemistry_of(wt)
    with store.begin() as s:
        store.audit(
            s, user, "cell.spot_check", f"cell:{cell_id}", cell.chemistry, f"{chem.value}: {why}"
        )
    return {
        "cell_id": cell_id,
        "seq": cell.seq,
        "chemistry": chem.value,
        "why": why,
        "instrument": m.instrument,
        "wt_pct": wt,
        "unc_pct": m.result.unc_pct(),
    }
