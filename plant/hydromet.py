"""The hydrometallurgy runner: closed lots in, assayed product batches and SPC alarms out.

In simulate mode the line engine calls `HydrometRunner.step(now)` about once a second. Each step
samples the process (the plant's pH loop, or the pH the caller passes) into the historian,
turns waiting hydromet lots into a campaign with one batch per product and inline assays,
charts every product with SPC, raises alarms on a trend before a batch goes off spec, and
assays and values closed black-mass lots by XRF on a pressed pellet. The process itself is a
`HydrometPlant` the command line hands in (the simulated one: drivers/sim/hydromet.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pydantic import Field, field_validator
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from plant.alarms import Alarms
from plant.config import SpcRules, Strict, config_dir, default_spc_rules, load_file
from plant.domain import AlarmPriority
from plant.events import Event, EventBus
from plant.historian import HYDROMET_TAGS, Historian
from plant.purity import (
    PHYSICAL_UNITS,
    ProductsConfig,
    ProductSpec,
    SpcChart,
    Valuation,
    Verdict,
    assess,
    bad_side,
    spc_chart,
    spec_limit,
    unit_of,
    value_black_mass,
)
from plant.store import AssayRow, BatchRow, CampaignLotRow, CampaignRow, LotRow, Store

log = logging.getLogger(__name__)

LEACH_TAGS = ("leach.ph", "leach.temp_c", "leach.orp_mv")  # the PLC's: the leach model's inputs


class ProcessSection(Strict):
    """The impurity-removal (Fe/Al precipitation) stage."""

    ph_tag: str = "purification.ph"
    ph_setpoint: float = Field(4.0, gt=0, lt=14)
    ph_noise: float = Field(0.03, ge=0, description="pH loop noise, 1 sigma")
    ph_drift_per_h: float = Field(0.0, description="simulated sensor/dosing drift, pH per hour")


class LeachSection(Strict):
    """The leach: pulp density and residence time (pH, temperature and ORP come from the PLC)."""

    solid_liquid_g_per_l: float = Field(100.0, gt=0, le=1000, description="pulp density")
    residence_min: float = Field(120.0, gt=0, le=1440, description="leach residence time")


class SxLoopSection(Strict):
    """A solvent-extraction circuit's pH loop: the extraction stages' pH, held by NaOH dosing."""

    ph_setpoint: float = Field(gt=0, lt=14)
    ph_noise: float = Field(0.03, ge=0, description="pH loop noise, 1 sigma")


class SolventExtractionSection(Strict):
    """The two SX circuits: D2EHPA takes Mn (and the residual Fe, Al, Cu), Cyanex 272 then Co
    from Ni. Their isotherms, stages and scrubs are the process model's (docs/purity.md)."""

    d2ehpa: SxLoopSection = SxLoopSection(ph_setpoint=2.5)
    cyanex272: SxLoopSection = SxLoopSection(ph_setpoint=5.0)

    def loops(self) -> dict[str, SxLoopSection]:
        """The loops by historian tag."""
        return {"sx_mn.ph": self.d2ehpa, "sx_co.ph": self.cyanex272}


class CarbonationSection(Strict):
    """The Li2CO3 precipitation from the Li liquor (docs/purity.md, "Li2CO3 precipitation"): its
    temperature and mother-liquor bleed are setpoints (`carbonation.temp_c`,
    `carbonation.bleed_pct`); these are their values at start."""

    temp_setpoint_c: float = Field(90.0, ge=20, le=100, description="carbonation temperature")
    temp_noise_c: float = Field(0.3, ge=0, description="temperature loop noise, 1 sigma")
    bleed_pct: float = Field(
        30.0, ge=5, le=100, description="share of the mother liquor bled; the rest is recycled"
    )
    na2co3_excess_pct: float = Field(10.0, ge=0, le=100, description="Na2CO3 over stoichiometric")
    evaporation_factor: float = Field(
        4.0, ge=1, le=50, description="Li liquor volume / carbonation feed volume"
    )

    def loops(self) -> dict[str, tuple[float, float, float]]:
        """The loops by historian tag: (setpoint, noise, time constant in s). The bleed is a
        flow ratio on a valve: it follows its setpoint within seconds."""
        return {
            "carbonation.temp_c": (self.temp_setpoint_c, self.temp_noise_c, 30.0),
            "carbonation.bleed_pct": (self.bleed_pct, 0.0, 3.0),
        }


class TanksSection(Strict):
    """Hold-up between the leach filter and the purification: lots blend over time."""

    pls_holdup_l: float = Field(
        100.0, ge=0, le=1e6, description="mixed volume of the pregnant-leach-solution tank"
    )


class CampaignSection(Strict):
    """How many closed lots one campaign (one batch of each product) consumes."""

    min_lots: int = Field(1, ge=1)
    max_lots: int = Field(2, ge=1)


class SpcSection(Strict):
    baseline_batches: int = Field(6, ge=2, description="first N batches per product set limits")
    recent_batches: int = Field(30, ge=8, description="points the rules look at")
    trend_run: int = Field(6, ge=3)
    rules: SpcRules = Field(default_factory=default_spc_rules)
    ewma_lambda: float = Field(0.2, gt=0, le=1, description="EWMA weight of the newest point")
    ewma_l: float = Field(2.7, gt=0, description="EWMA limit width in sigma of the EWMA")
    sigma_floor_ppm: float = Field(0.1, ge=0, description="assay repeatability, absolute")
    sigma_floor_rel: float = Field(0.05, ge=0, description="assay repeatability, relative")


class BlackMassSection(Strict):
    xrf_rel_unc: dict[str, float] = Field(
        default_factory=lambda: {
            "Ni": 0.02,
            "Co": 0.03,
            "Mn": 0.03,
            "Cu": 0.05,
            "Al": 0.15,
            "Fe": 0.03,
        }
    )


class MassBalanceSection(Strict):
    saleable_byproducts: list[str] = Field(
        default_factory=lambda: ["foil concentrate", "Cu cement"]
    )
    holdup_streams: list[str] = Field(
        default_factory=lambda: ["tank hold-up"],
        description="streams that are what the tanks gained (inventory, not a loss)",
    )


RECONCILED_KINDS = ("lot", "weighing", "feed", "product", "residue")


class ReconciliationSection(Strict):
    """1-sigma of each kind of measured stream, relative to its value (plant/reconciliation.py);
    `floor` (kg or g, the node's unit) keeps a zero stream adjustable."""

    rel_sd: dict[str, float] = Field(
        default_factory=lambda: {
            "lot": 0.005,
            "weighing": 0.01,
            "feed": 0.05,
            "product": 0.01,
            "residue": 0.10,
        }
    )
    floor: float = Field(0.001, gt=0)

    @field_validator("rel_sd")
    @classmethod
    def _known_kinds(cls, v: dict[str, float]) -> dict[str, float]:
        for kind, sd in v.items():
            if kind not in RECONCILED_KINDS:
                raise ValueError(
                    f"unknown stream kind {kind!r}; known: {', '.join(RECONCILED_KINDS)}"
                )
            if not 0 < sd < 1:
                raise ValueError(f"{kind} = {sd}: give a relative sd above 0 and below 1")
        missing = [k for k in RECONCILED_KINDS if k not in v]
        if missing:
            raise ValueError(f"missing stream kinds: {', '.join(missing)}")
        return v

    def sd(self, kind: str, value: float) -> float:
        return max(self.rel_sd[kind] * abs(value), self.floor)


class HydrometConfig(Strict):
    """config/hydromet.toml."""

    historian_period_s: float = Field(1.0, gt=0)
    process: ProcessSection = ProcessSection()
    leach: LeachSection = LeachSection()
    solvent_extraction: SolventExtractionSection = SolventExtractionSection()
    carbonation: CarbonationSection = CarbonationSection()
    tanks: TanksSection = TanksSection()
    campaign: CampaignSection = CampaignSection()
    spc: SpcSection = SpcSection()
    black_mass: BlackMassSection = BlackMassSection()
    mass_balance: MassBalanceSection = MassBalanceSection()
    reconciliation: ReconciliationSection = ReconciliationSection()
    valuation: Valuation


def load_hydromet(directory: Path | None = None) -> HydrometConfig:
    """Load config/hydromet.toml."""
    return load_file(config_dir(directory) / "hydromet.toml", HydrometConfig)


# ------------------------------------------------------------------- the process driven ----
class ProductMade(Protocol):
    """One product batch of a campaign as the inline analyser reports it."""

    @property
    def product(self) -> str: ...
    @property
    def mass_kg(self) -> float: ...
    @property
    def purity_pct(self) -> float: ...
    @property
    def main_element(self) -> str: ...
    @property
    def main_pct(self) -> float: ...
    @property
    def impurities_ppm(self) -> dict[str, float]: ...
    @property
    def physical(self) -> dict[str, float]: ...


class CampaignMade(Protocol):
    """What one campaign made: assayed products and where the rest of each metal went."""

    @property
    def products(self) -> Sequence[ProductMade]: ...
    @property
    def residues_g(self) -> dict[str, dict[str, float]]: ...
    @property
    def tank_g(self) -> dict[str, float]:
        """What the hold-up tank holds after the campaign (carried to the next one)."""
        ...


class PelletMade(Protocol):
    """XRF assay of a pressed black-mass pellet: wt% with 1-sigma uncertainty."""

    @property
    def wt_pct(self) -> dict[str, float]: ...
    @property
    def unc_pct(self) -> dict[str, float]: ...
    @property
    def black_mass_kg(self) -> float: ...


class HydrometPlant(Protocol):
    """The hydromet process the runner drives: its pH loops, campaigns and pellet assays."""

    def set_setpoint(self, tag: str, value: float) -> None:
        """The setpoint of the pH loop recorded as `tag` (HYDROMET_TAGS)."""
        ...

    def sample(self, dt_s: float) -> dict[str, float]:
        """Advance dt_s seconds; the process values (tag -> value) now."""
        ...

    def campaign(
        self,
        number: int,
        feed_g: Mapping[str, float],
        feed_mass_g: float,
        ph_mean: float,
        ph_sd: float,
        leach: Mapping[str, float],
        *,
        sx_ph: Mapping[str, float],
        tank_g: Mapping[str, float] | None,
        carbonation: Mapping[str, float],
    ) -> CampaignMade:
        """Campaign `number` of the line: its feed (grams per metal) into assayed products.
        `leach`: the mean leach pH, temperature and ORP the PLC reported (LEACH_TAGS) since the
        last campaign, plus solid_liquid_g_per_l and residence_min; `sx_ph`: the SX loops'
        mean pH since then (by tag); `tank_g`: the hold-ups as the last campaign left them;
        `carbonation`: the carbonation loops' means since then (by tag), plus
        na2co3_excess_pct and evaporation_factor."""
        ...

    def pellet_assay(
        self,
        lot_id: str,
        metals_g: Mapping[str, float],
        cell_mass_g: float,
        rel_unc: Mapping[str, float],
    ) -> PelletMade:
        """XRF pellet assay of the black mass made from lot `lot_id`."""
        ...


# ------------------------------------------------------------------------------- assays ----


@dataclass(frozen=True)
class AssayValues:
    """What an assay says about a batch, whatever its source."""

    source: str
    taken_at: datetime
    purity_pct: float | None
    main_pct: dict[str, float]
    impurities_ppm: dict[str, float]
    physical: dict[str, float] = field(default_factory=dict)  # magnetic_ppb, insolubles_pct

    def value(self, variable: str) -> float | None:
        """purity_pct, magnetic_ppb, insolubles_pct or an impurity in ppm (absent: None)."""
        if variable == "purity_pct":
            return self.purity_pct
        if variable in PHYSICAL_UNITS:
            return self.physical.get(variable)
        return self.impurities_ppm.get(variable)


def assay_values(row: AssayRow) -> AssayValues:
    """Read an AssayRow's composition JSON (purity is the measured compound content, if any)."""
    comp = row.composition or {}
    ppm = {k: float(v) for k, v in (comp.get("impurities_ppm") or {}).items()}
    main = {k: float(v) for k, v in (comp.get("main_pct") or {}).items()}
    phys = {k: float(v) for k, v in (comp.get("physical") or {}).items()}
    return AssayValues(row.source, row.taken_at, row.purity_pct, main, ppm, phys)


def effective_assays(session: Session, batch_ids: Sequence[str]) -> dict[str, AssayValues]:
    """The values that decide each batch: the newest inline assay, overridden analyte by analyte
    by lab assays in the order they were taken (a lab that measured only Fe changes only Fe)."""
    if not batch_ids:
        return {}
    rows = session.scalars(
        select(AssayRow)
        .where(AssayRow.batch_id.in_(list(batch_ids)))
        .order_by(AssayRow.taken_at, AssayRow.id)
    )
    inline: dict[str, AssayValues] = {}
    labs: dict[str, list[AssayValues]] = {}
    for row in rows:
        assert row.batch_id is not None
        if row.source == "lab":
            labs.setdefault(row.batch_id, []).append(assay_values(row))
        else:
            inline[row.batch_id] = assay_values(row)
    out: dict[str, AssayValues] = {}
    for bid in set(inline) | set(labs):
        cur = inline.get(bid)
        for lab in labs.get(bid, []):
            if cur is None:
                cur = lab
                continue
            cur = AssayValues(
                "lab" if cur.source == "lab" else "inline+lab",
                lab.taken_at,
                lab.purity_pct if lab.purity_pct is not None else cur.purity_pct,
                {**cur.main_pct, **lab.main_pct},
                {**cur.impurities_ppm, **lab.impurities_ppm},
                {**cur.physical, **lab.physical},
            )
        if cur is not None:
            out[bid] = cur
    return out


def verdict_of(spec: ProductSpec, a: AssayValues | None) -> Verdict:
    """Spec verdict of a batch from its deciding assay (no assay: not in spec)."""
    if a is None:
        return Verdict(False, ["no assay"])
    return assess(spec, a.purity_pct, a.main_pct.get(spec.metal), a.impurities_ppm, a.physical)


def product_history(
    session: Session, product: str, spc: SpcSection
) -> list[tuple[BatchRow, AssayValues]]:
    """The baseline (the product's first in-spec batches: a bad start must not set the limits)
    plus its most recent batches, oldest first, with assays. The baseline comes first, so a
    chart's first `baseline_batches` points are in spec."""
    order = (BatchRow.created_at, BatchRow.id)
    first = list(
        session.scalars(
            select(BatchRow)
            .where(BatchRow.product == product, BatchRow.state == "released")
            .order_by(*order)
            .limit(spc.baseline_batches)
        )
    )
    last = list(
        session.scalars(
            select(BatchRow)
            .where(BatchRow.product == product)
            .order_by(*(c.desc() for c in order))
            .limit(spc.recent_batches)
        )
    )
    if len(first) < spc.baseline_batches:
        return []  # no baseline yet: no limits to judge by
    seen: dict[str, BatchRow] = {b.id: b for b in first}
    for b in reversed(last):
        seen.setdefault(b.id, b)
    assays = effective_assays(session, list(seen))
    return [(b, assays[b.id]) for b in seen.values() if b.id in assays]


def chart_of(variable: str, values: list[float], cfg: SpcSection) -> SpcChart:
    """An SPC chart with this plant's baseline, trend run and sigma floor."""
    return spc_chart(
        variable,
        values,
        cfg.baseline_batches,
        trend_run=cfg.trend_run,
        floor_ppm=cfg.sigma_floor_ppm,
        floor_rel=cfg.sigma_floor_rel,
        ewma_lambda=cfg.ewma_lambda,
        ewma_l=cfg.ewma_l,
    )


# ------------------------------------------------------------------------------- runner ----


@dataclass(frozen=True)
class SpcSignal:
    """An SPC rule that fired on the newest batch of a product, in the bad direction."""

    product: str
    variable: str
    batch_id: str
    value: float
    rules: list[str]
    message: str


@dataclass(frozen=True)
class BatchOutcome:
    id: str
    product: str
    in_spec: bool
    reasons: list[str]


@dataclass
class StepReport:
    """What one step did, in order (tests and the engine's log read it)."""

    campaigns: list[str] = field(default_factory=list)
    batches: list[BatchOutcome] = field(default_factory=list)
    spc: list[SpcSignal] = field(default_factory=list)
    lots_valued: list[str] = field(default_factory=list)


class _LotsTaken(Exception):
    """The lots of a campaign were consumed by someone else meanwhile."""


@dataclass
class _Welford:
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    @property
    def sd(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


class HydrometRunner:
    """Turns closed lots into assayed batches for one line; call `step(now)` periodically."""

    def __init__(
        self,
        store: Store,
        config: HydrometConfig,
        products: ProductsConfig,
        alarms: Alarms | None = None,
        bus: EventBus | None = None,
        *,
        plant: HydrometPlant,
        line: str = "L1",
    ) -> None:
        self.store = store
        self.config = config
        self.products = products
        self.alarms = alarms
        self.bus = bus
        self.plant = plant
        self.line = line
        self.historian = Historian(store, line, writes=HYDROMET_TAGS)
        self._ph = _Welford()
        self._leach = {tag: _Welford() for tag in LEACH_TAGS}
        self._loops = {tag: _Welford() for tag in self._loop_setpoints()}
        self._last_ph = config.process.ph_setpoint
        self._last_sample: datetime | None = None

    def _loop_setpoints(self) -> dict[str, float]:
        """The SX and carbonation loops' configured setpoints, by tag: what a campaign runs at
        when a loop reported nothing since the last one."""
        sx = {tag: c.ph_setpoint for tag, c in self.config.solvent_extraction.loops().items()}
        carb = {tag: sp for tag, (sp, _, _) in self.config.carbonation.loops().items()}
        return {**sx, **carb}

    # -- the periodic step ------------------------------------------------------------------
    def step(
        self,
        now: datetime,
        ph: float | None = None,
        process: Mapping[str, float] | None = None,
    ) -> StepReport:
        """Sample the process, run campaigns for waiting lots, value black-mass lots.
        `process`: the PLC's process values now (the leach's pH, temperature, ORP)."""
        report = StepReport()
        self._sample(now, ph)
        for tag, v in (process or {}).items():
            if tag in self._leach and math.isfinite(v):
                self._leach[tag].add(float(v))
        while True:
            lots = self._waiting_lots()
            if len(lots) < self.config.campaign.min_lots:
                break
            made = self._campaign(lots[: self.config.campaign.max_lots], now, report)
            if not made:
                break
        self._value_black_mass(now, report)
        return report

    def _sample(self, now: datetime, ph: float | None) -> None:
        if ph is None:
            due = self._last_sample is None or (now - self._last_sample) >= timedelta(
                seconds=self.config.historian_period_s
            )
            if not due:
                return
            dt = (
                self.config.historian_period_s
                if self._last_sample is None
                else (now - self._last_sample).total_seconds()
            )
            values = self.plant.sample(dt)
            self.historian.record((tag, now, v) for tag, v in values.items())
            self._last_sample = now
            for tag, w in self._loops.items():
                if tag in values:
                    w.add(values[tag])
            ph = values[self.config.process.ph_tag]
        self._ph.add(ph)
        self._last_ph = ph

    def _waiting_lots(self) -> list[LotRow]:
        with self.store.session() as s:
            return list(
                s.scalars(
                    select(LotRow)
                    .where(
                        LotRow.line == self.line,
                        LotRow.route == "hydromet",
                        LotRow.state == "closed",
                    )
                    .order_by(LotRow.closed_at, LotRow.id)
                    .limit(self.config.campaign.max_lots)
                )
            )

    def _campaign(self, lots: list[LotRow], now: datetime, report: StepReport) -> bool:
        """One campaign in one transaction: lots consumed, batches and assays written."""
        feed: dict[str, float] = {}
        for lot in lots:
            for el, g in (lot.metals_g or {}).items():
                feed[el] = feed.get(el, 0.0) + float(g)
        mass = sum(lot.mass_g for lot in lots)
        ph_mean = self._ph.mean if self._ph.n else self._last_ph
        ph_sd = self._ph.sd if self._ph.n > 1 else self.config.process.ph_noise
        leach = {tag: w.mean for tag, w in self._leach.items() if w.n}
        leach["solid_liquid_g_per_l"] = self.config.leach.solid_liquid_g_per_l
        leach["residence_min"] = self.config.leach.residence_min
        setpoints = self._loop_setpoints()
        means = {tag: w.mean if w.n else setpoints[tag] for tag, w in self._loops.items()}
        sx_ph = {
            tag: v for tag, v in means.items() if tag in self.config.solvent_extraction.loops()
        }
        carb = {tag: v for tag, v in means.items() if tag in self.config.carbonation.loops()}
        carb["na2co3_excess_pct"] = self.config.carbonation.na2co3_excess_pct
        carb["evaporation_factor"] = self.config.carbonation.evaporation_factor
        try:
            cid = self._write_campaign(
                lots, feed, mass, (ph_mean, ph_sd), leach, (sx_ph, carb), now, report
            )
        except _LotsTaken:
            return False
        report.campaigns.append(cid)
        self._ph = _Welford()
        self._leach = {tag: _Welford() for tag in LEACH_TAGS}
        self._loops = {tag: _Welford() for tag in setpoints}
        batches = [b for b in report.batches if b.id.startswith(f"{cid}-")]
        # Every campaign's batches are charted, also when one step runs several campaigns.
        self._check_spc(sorted({b.product for b in batches}), report)
        for b in batches:
            self._publish("batch", {"id": b.id, "product": b.product, "in_spec": b.in_spec,
                                    "reasons": b.reasons, "campaign": cid})  # fmt: skip
            self._offspec_alarm(b)
        return True

    def _write_campaign(
        self,
        lots: list[LotRow],
        feed: dict[str, float],
        mass: float,
        ph: tuple[float, float],
        leach: dict[str, float],
        loops: tuple[dict[str, float], dict[str, float]],
        now: datetime,
        report: StepReport,
    ) -> str:
        """`loops`: the SX loops' and the carbonation's means since the last campaign."""
        ph_mean, ph_sd = ph
        sx_ph, carbonation = loops
        with self.store.begin() as s:
            n = int(s.scalar(select(func.count()).where(CampaignRow.line == self.line)) or 0) + 1
            cid = f"{self.line}-HC{n:05d}"
            claimed = s.execute(
                update(LotRow)
                .where(LotRow.id.in_([lot.id for lot in lots]), LotRow.state == "closed")
                .values(state="consumed")
            )
            if claimed.rowcount != len(lots):  # type: ignore[attr-defined]
                raise _LotsTaken(cid)  # another runner claimed them first: roll back
            tank_g = s.scalar(
                select(CampaignRow.tank_g)
                .where(CampaignRow.line == self.line)
                .order_by(CampaignRow.started_at.desc(), CampaignRow.id.desc())
                .limit(1)
            )
            result = self.plant.campaign(
                n, feed, mass, ph_mean, ph_sd, leach, sx_ph=sx_ph, tank_g=tank_g,
                carbonation=carbonation,
            )  # fmt: skip
            s.add(
                CampaignRow(
                    id=cid,
                    line=self.line,
                    started_at=now,
                    ph_mean=round(ph_mean, 4),
                    ph_sd=round(ph_sd, 4),
                    feed_g={k: round(v, 3) for k, v in sorted(feed.items())},
                    residues_g=result.residues_g,
                    tank_g=result.tank_g,
                )
            )
            s.flush()
            s.add_all(CampaignLotRow(campaign_id=cid, lot_id=lot.id) for lot in lots)
            for pa in result.products:
                spec = self.products.products.get(pa.product)
                if spec is None:
                    continue  # the plant does not sell this product: it stays in the raffinate
                bid = f"{cid}-{spec.metal}"
                assay = AssayValues(
                    "inline",
                    now,
                    pa.purity_pct,
                    {pa.main_element: pa.main_pct},
                    pa.impurities_ppm,
                    pa.physical,
                )
                v = verdict_of(spec, assay)
                s.add(
                    BatchRow(
                        id=bid,
                        product=pa.product,
                        mass_kg=pa.mass_kg,
                        state="released" if v.in_spec else "on_hold",
                        created_at=now,
                        campaign_id=cid,
                    )
                )
                s.flush()
                s.add(
                    AssayRow(
                        batch_id=bid,
                        source="inline",
                        purity_pct=pa.purity_pct,
                        composition={
                            "main_pct": assay.main_pct,
                            "impurities_ppm": pa.impurities_ppm,
                            "physical": pa.physical,
                        },
                        taken_at=now,
                    )
                )
                report.batches.append(BatchOutcome(bid, pa.product, v.in_spec, v.reasons))
        return cid

    def _offspec_alarm(self, b: BatchOutcome) -> None:
        if self.alarms is None:
            return
        code = f"offspec/{b.product}"
        if b.in_spec:
            self.alarms.clear("purity", code)
        else:
            msg = f"batch {b.id} ({b.product}) off spec: {'; '.join(b.reasons)}"
            self.alarms.raise_("purity", code, msg, AlarmPriority.high)

    def _check_spc(self, products: Iterable[str], report: StepReport) -> None:
        """Chart each product just made; alarm on rules firing at its newest batch."""
        cfg = self.config.spc
        with self.store.session() as s:
            histories = {p: product_history(s, p, cfg) for p in products}
        for product, hist in histories.items():
            spec = self.products.products[product]
            if not hist:
                continue
            newest = hist[-1][0]
            for var in spec.spc:
                vals = [a.value(var) for _, a in hist]
                if any(v is None for v in vals):
                    continue  # a batch without this analyte: no chart rather than a wrong one
                chart = chart_of(var, [float(v) for v in vals if v is not None], cfg)
                last = len(vals) - 1
                fired = [
                    r
                    for r in chart.violations
                    if r.index == last and r.side == bad_side(var) and r.rule in cfg.rules
                ]
                code = f"{product}/{var}"
                if not fired or chart.limits is None:
                    if self.alarms is not None:
                        self.alarms.clear("spc", code)
                    continue
                value = chart.values[last]
                unit = unit_of(var)
                limit = spec_limit(spec, var)
                lim_txt = f", spec limit {limit:g} {unit}" if limit is not None else ""
                rules = [r.rule for r in fired]
                msg = (
                    f"{product} {var} {value:.4g} {unit} at batch {newest.id}: "
                    + "; ".join(f"{r.rule} {r.description}" for r in fired)
                    + f" (centre {chart.limits.center:.4g}, UCL {chart.limits.ucl:.4g}"
                    + f", LCL {chart.limits.lcl:.4g}{lim_txt})"
                )
                report.spc.append(SpcSignal(product, var, newest.id, value, rules, msg))
                if self.alarms is not None:
                    self.alarms.raise_("spc", code, msg, AlarmPriority.medium)

    def _value_black_mass(self, now: datetime, report: StepReport) -> None:
        """XRF pellet assay and valuation of every closed black-mass lot not yet assayed."""
        with self.store.session() as s:
            assayed = select(AssayRow.lot_id).where(
                AssayRow.lot_id.is_not(None), AssayRow.source == "xrf"
            )
            lots = list(
                s.scalars(
                    select(LotRow).where(
                        LotRow.line == self.line,
                        LotRow.route == "black_mass",
                        LotRow.state == "closed",
                        LotRow.id.not_in(assayed),
                    )
                )
            )
        for lot in lots:
            pa = self.plant.pellet_assay(
                lot.id, lot.metals_g or {}, lot.mass_g, self.config.black_mass.xrf_rel_unc
            )
            li_est = float((lot.metals_g or {}).get("Li", 0.0)) / max(
                1e-9, pa.black_mass_kg * 1000.0
            )
            wt = {**pa.wt_pct, "Li": round(li_est * 100.0, 3)}
            # Li has no XRF line: it is estimated from the cells' chemistries, +-20 % [U].
            unc = {**pa.unc_pct, "Li": round(li_est * 100.0 * 0.2, 3)}
            value = value_black_mass(pa.black_mass_kg, wt, unc, self.config.valuation)
            with self.store.begin() as s:
                s.add(
                    AssayRow(
                        lot_id=lot.id,
                        source="xrf",
                        purity_pct=None,
                        composition={
                            "method": "XRF pressed pellet; Li estimated from cell chemistries",
                            "black_mass_kg": pa.black_mass_kg,
                            "wt_pct": wt,
                            "unc_pct": unc,
                            "value": value.as_json(),
                        },
                        taken_at=now,
                    )
                )
            report.lots_valued.append(lot.id)
            self._publish("lot", {"id": lot.id, "value": value.as_json(), "wt_pct": wt})

    def _publish(self, topic: str, data: dict[str, Any]) -> None:
        """Thread-safe: the engine may run `step` in a worker thread to keep its loop free."""
        if self.bus is not None:
            self.bus.publish_threadsafe(Event(topic, self.line, data))
