"""Lot assays on the lab XRF analyser (`[assay_analyser]`, docs/xrf.md): a closed lot's black
mass measured, stored as the lot's assay (source `analyser`) and audited, so the purity report
and the mass balance use what was measured instead of the estimate from the cells."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from drivers.sciaps import SciapsClient, SciapsError, TestResult
from plant.config import AssayAnalyserSection
from plant.hydromet import HydrometConfig
from plant.purity import value_black_mass
from plant.store import AssayRow, LotRow, Store, utcnow

SOURCE = "analyser"
ASSAYED_ROUTES = ("black_mass", "hydromet")
# All of a lot's cathode metals end in its black mass, so their measured grams replace the
# estimate in the mass balance; Cu, Al and Fe leave partly with foils and steel, and Li has no
# XRF line: those keep the estimate.
MEASURED_FEED = ("Ni", "Co", "Mn")
LI_ESTIMATE_REL_UNC = 0.2  # Li from the cells' chemistries, +-20 % [U] (as the pellet assay)


class LotAssayError(Exception):
    """The lot cannot be assayed (unknown, open, wrong route) or the analyser failed."""


class NotFound(LotAssayError):
    """No lot (or cell) of that id."""


class AnalyserFailed(LotAssayError):
    """The analyser is not configured, not reachable or its test failed."""


def _lot_to_assay(store: Store, lot_id: str) -> tuple[LotRow, float | None]:
    """The lot, and the black-mass mass of its latest earlier assay (None: none known)."""
    with store.session() as s:
        lot = s.get(LotRow, lot_id)
        if lot is None:
            raise NotFound(f"no lot {lot_id!r}")
        if lot.state == "open":
            raise LotAssayError(f"lot {lot_id} is still open: it is assayed once closed")
        if lot.route not in ASSAYED_ROUTES:
            raise LotAssayError(f"lot {lot_id} is a {lot.route} lot, not black mass")
        masses = s.scalars(
            select(AssayRow.composition)
            .where(AssayRow.lot_id == lot_id)
            .order_by(AssayRow.taken_at.desc(), AssayRow.id.desc())
        )
        known = next((c["black_mass_kg"] for c in masses if c.get("black_mass_kg")), None)
    return lot, None if known is None else float(known)


@dataclass(frozen=True)
class Measurement:
    """One test on the analyser: which instrument, its result, whether it was energy-calibrated
    first (it asked for a calibration)."""

    instrument: str
    result: TestResult
    calibrated_first: bool


async def measure(cfg: AssayAnalyserSection) -> Measurement:
    """One test of the sample in the analyser, after an energy calibration if it asks for one;
    refused while its detector is not cooled."""
    if cfg.kind == "none":
        raise AnalyserFailed('no lot analyser: [assay_analyser] kind = "none"')
    async with SciapsClient(
        cfg.host, cfg.port, timeout_s=cfg.timeout_s, retries=cfg.retries
    ) as client:
        try:
            ident = await client.identify()
            if cfg.mode not in ident.apps:
                raise AnalyserFailed(
                    f"{client.name} ({ident.id}) has no application {cfg.mode!r} "
                    f"([assay_analyser] mode); it has: {', '.join(ident.apps)}"
                )
            status = await client.status()
            problem = status.not_ready()
            if problem is not None:
                raise AnalyserFailed(f"{client.name} ({ident.id}): {problem}")
            if status.energy_calibration_needed:
                await client.calibrate_energy()
            result = await client.test(cfg.mode, list(cfg.beam_times_s), cfg.model_name)
        except SciapsError as exc:
            raise AnalyserFailed(str(exc)) from None
    return Measurement(f"SciAps {ident.model} {ident.id}", result, status.energy_calibration_needed)


def composition(
    lot: LotRow, m: Measurement, black_mass_kg: float | None, hydromet: HydrometConfig
) -> dict[str, Any]:
    """AssayRow.composition of a measured lot: wt% with 1-sigma, Li estimated, value if the
    black-mass mass is known."""
    result = m.result
    wt, unc = result.wt_pct(), result.unc_pct()
    comp: dict[str, Any] = {
        "method": f"XRF pressed pellet, {m.instrument}, mode {result.mode}",
        "instrument": m.instrument,
        "energy_calibrated_first": m.calibrated_first,
        "test_s": round(result.duration_s, 1),
        "black_mass_kg": black_mass_kg,
        "below_lod_pct": result.below_lod(),
    }
    if black_mass_kg:
        li = float((lot.metals_g or {}).get("Li", 0.0)) / (black_mass_kg * 1000.0) * 100.0
        wt["Li"], unc["Li"] = round(li, 3), round(li * LI_ESTIMATE_REL_UNC, 3)
        value = value_black_mass(black_mass_kg, wt, unc, hydromet.valuation)
        comp["value"] = value.as_json()
    comp.update(wt_pct=wt, unc_pct=unc)
    return comp


async def assay_lot(
    store: Store,
    analyser: AssayAnalyserSection,
    hydromet: Callable[[], HydrometConfig],
    lot_id: str,
    user: str,
    *,
    black_mass_kg: float | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Measure the lot's pellet (already in the analyser), store the assay and audit it.
    `hydromet` loads the valuation's configuration (after the lot is found, before the test)."""
    if black_mass_kg is not None and not black_mass_kg > 0:
        raise LotAssayError(f"black-mass mass {black_mass_kg} kg must be > 0")
    lot, known_kg = _lot_to_assay(store, lot_id)
    config = hydromet()
    comp = composition(lot, await measure(analyser), black_mass_kg or known_kg, config)
    taken = now or utcnow()
    with store.begin() as s:
        row = AssayRow(lot_id=lot_id, source=SOURCE, composition=comp, taken_at=taken)
        s.add(row)
        s.flush()
        summary = ", ".join(f"{el} {v:.2f}" for el, v in sorted(comp["wt_pct"].items()))
        store.audit(s, user, "lot.assay", f"lot:{lot_id}", None, f"assay {row.id}: {summary} wt%")
        assay_id = row.id
    return {
        "id": assay_id,
        "lot_id": lot_id,
        "line": lot.line,
        "source": SOURCE,
        "taken_at": taken,
        **comp,
    }


def measured_feed_g(
    session: Session, lot_ids: Iterable[str]
) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """Per lot with a measured assay and a known black-mass mass: (estimated grams, measured
    grams) of the metals in MEASURED_FEED, from its latest measured assay."""
    ids = list(lot_ids)
    latest: dict[str, AssayRow] = {
        a.lot_id: a
        for a in session.scalars(
            select(AssayRow)
            .where(AssayRow.lot_id.in_(ids), AssayRow.source == SOURCE)
            .order_by(AssayRow.taken_at, AssayRow.id)
        )
        if a.lot_id is not None
    }
    lots = {lot.id: lot for lot in session.scalars(select(LotRow).where(LotRow.id.in_(latest)))}
    out: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for lot_id, a in latest.items():
        kg = a.composition.get("black_mass_kg")
        wt = a.composition.get("wt_pct", {})
        if not kg:
            continue
        est = {el: float((lots[lot_id].metals_g or {}).get(el, 0.0)) for el in MEASURED_FEED}
        got = {el: float(wt.get(el, 0.0)) / 100.0 * float(kg) * 1000.0 for el in MEASURED_FEED}
        out[lot_id] = (est, got)
    return out
