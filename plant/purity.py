"""Purity, SPC, mass balance, recovery and black-mass value: pure functions over plain data.

No I/O here. The runner (plant/hydromet.py) and the report (plant/commands/purity.py) read the
store and call these functions, so tests can feed them numbers directly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from plant.config import Strict, config_dir, load_file

# ---------------------------------------------------------------------------------- specs ----


class ProductSpec(Strict):
    """Battery-grade specification of one product as its standard defines it
    (config/products.toml; figures and sources in docs/reference/product-standards.md)."""

    standard: str = Field(description="the standard (and class) the limits come from")
    metal: str = Field(description="the metal this product recovers, e.g. Ni")
    metal_theory_pct: float = Field(gt=0, le=100, description="wt% of the metal in the pure salt")
    min_purity_pct: float | None = Field(
        None, gt=0, le=100, description="compound content minimum, where the standard sets one"
    )
    main_min_pct: float | None = Field(None, gt=0, le=100)
    main_max_pct: float | None = Field(None, gt=0, le=100)
    impurity_limits_ppm: dict[str, float] = Field(default_factory=dict)
    magnetic_max_ppb: float | None = Field(None, gt=0, description="magnetic foreign matter")
    insolubles_max_pct: float | None = Field(None, gt=0, description="water-insoluble matter")
    spc: list[str] = Field(
        default_factory=lambda: ["purity_pct", "Fe", "Cu", "Al", "P"],
        description="what the SPC charts watch: purity_pct, an impurity symbol, "
        "magnetic_ppb or insolubles_pct",
    )


class ProductsConfig(Strict):
    """config/products.toml: product specs and the EU targets."""

    products: dict[str, ProductSpec]
    recovery_targets: dict[str, dict[str, float]] = Field(
        description="label (e.g. end-2027) -> metal -> minimum recovery %"
    )
    recycling_efficiency_targets: dict[str, float] = Field(
        default_factory=dict, description="label (e.g. end-2025) -> minimum recycling efficiency %"
    )


def load_products(directory: Path | None = None) -> ProductsConfig:
    """Load config/products.toml (required: the specs are the plant's contract with buyers)."""
    return load_file(config_dir(directory) / "products.toml", ProductsConfig)


@dataclass(frozen=True)
class Verdict:
    """In spec or not, with the reasons an engineer reads ("Fe 42 ppm > 10 ppm")."""

    in_spec: bool
    reasons: list[str]


# Physical properties a standard limits besides the analytes, with their units.
PHYSICAL_UNITS = {"magnetic_ppb": "ppb", "insolubles_pct": "%"}


def unit_of(variable: str) -> str:
    """The unit of a charted variable: purity and insolubles in %, magnetic in ppb, else ppm."""
    return "%" if variable == "purity_pct" else PHYSICAL_UNITS.get(variable, "ppm")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def assess(
    spec: ProductSpec,
    purity_pct: float | None,
    main_pct: float | None,
    impurities_ppm: Mapping[str, float],
    physical: Mapping[str, float] | None = None,
) -> Verdict:
    """Judge one assay against a spec; an analyte the spec limits but nobody measured fails.

    `physical`: magnetic_ppb and insolubles_pct where measured."""
    reasons: list[str] = []
    phys = physical or {}
    if spec.min_purity_pct is not None:
        if purity_pct is None:
            reasons.append("purity not assayed")
        elif purity_pct < spec.min_purity_pct:
            reasons.append(f"purity {_fmt(purity_pct)} % < {_fmt(spec.min_purity_pct)} %")
    if spec.main_min_pct is not None or spec.main_max_pct is not None:
        if main_pct is None:
            reasons.append(f"{spec.metal} not assayed")
        elif spec.main_min_pct is not None and main_pct < spec.main_min_pct:
            reasons.append(f"{spec.metal} {_fmt(main_pct)} % < {_fmt(spec.main_min_pct)} %")
        elif spec.main_max_pct is not None and main_pct > spec.main_max_pct:
            reasons.append(f"{spec.metal} {_fmt(main_pct)} % > {_fmt(spec.main_max_pct)} %")
    for el, limit in spec.impurity_limits_ppm.items():
        value = impurities_ppm.get(el)
        if value is None:
            reasons.append(f"{el} not assayed (limit {_fmt(limit)} ppm)")
        elif value > limit:
            reasons.append(f"{el} {_fmt(value)} ppm > {_fmt(limit)} ppm")
    for key, cap, name in (
        ("magnetic_ppb", spec.magnetic_max_ppb, "magnetic impurities"),
        ("insolubles_pct", spec.insolubles_max_pct, "insolubles"),
    ):
        if cap is None:
            continue
        unit = PHYSICAL_UNITS[key]
        got = phys.get(key)
        if got is None:
            reasons.append(f"{name} not assayed (limit {_fmt(cap)} {unit})")
        elif got > cap:
            reasons.append(f"{name} {_fmt(got)} {unit} > {_fmt(cap)} {unit}")
    return Verdict(in_spec=not reasons, reasons=reasons)


def metal_in_product(
    spec: ProductSpec, mass_kg: float, purity_pct: float | None, main_pct: float | None
) -> float:
    """Grams of the product's metal in a batch: measured main element, else theory x purity."""
    pct = main_pct
    if pct is None:
        pct = spec.metal_theory_pct * (purity_pct if purity_pct is not None else 100.0) / 100.0
    return mass_kg * 1000.0 * pct / 100.0


# ------------------------------------------------------------------------------------ SPC ----

D2_N2 = 1.128  # d2 for moving ranges of 2: sigma = MR-bar / d2
D4_N2 = 3.267  # D4 for moving ranges of 2: MR chart UCL = D4 x MR-bar


@dataclass(frozen=True)
class ChartLimits:
    """Individuals (X) and moving-range (MR) chart limits from a baseline window."""

    center: float
    sigma: float
    mr_bar: float

    @property
    def ucl(self) -> float:
        return self.center + 3 * self.sigma

    @property
    def lcl(self) -> float:
        return self.center - 3 * self.sigma

    @property
    def mr_ucl(self) -> float:
        return D4_N2 * self.mr_bar


@dataclass(frozen=True)
class RuleViolation:
    """One SPC rule firing at point `index` (the point that completes the pattern)."""

    rule: str
    index: int
    side: int  # +1 above centre (or rising), -1 below (or falling)
    description: str


def individuals_limits(baseline: Sequence[float], min_sigma: float = 0.0) -> ChartLimits:
    """X/MR limits: centre = mean, sigma = mean moving range / 1.128 (needs >= 2 points).

    `min_sigma` is the assay's repeatability: a short baseline that happens to be quiet must
    not set limits tighter than the lab can measure.
    """
    if len(baseline) < 2:
        raise ValueError("an individuals chart needs at least 2 baseline points")
    center = math.fsum(baseline) / len(baseline)
    mrs = [abs(b - a) for a, b in itertools.pairwise(baseline)]
    mr_bar = math.fsum(mrs) / len(mrs)
    # A perfectly flat baseline would give sigma 0 and flag every wobble: floor it.
    sigma = max(mr_bar / D2_N2, min_sigma, 1e-6 * max(1.0, abs(center)))
    return ChartLimits(center=center, sigma=sigma, mr_bar=mr_bar)


def _zone_rule(
    values: Sequence[float], lim: ChartLimits, k: float, of: int, need: int, rule: str
) -> list[RuleViolation]:
    out = []
    for i in range(len(values)):
        window = values[max(0, i - of + 1) : i + 1]
        if len(window) < of:
            continue
        for side in (1, -1):
            beyond = [v for v in window if side * (v - lim.center) > k * lim.sigma]
            cur_beyond = side * (values[i] - lim.center) > k * lim.sigma
            if len(beyond) >= need and cur_beyond:
                where = "above" if side > 0 else "below"
                out.append(
                    RuleViolation(rule, i, side, f"{need} of {of} points {where} {k:g} sigma")
                )
    return out


def western_electric(values: Sequence[float], lim: ChartLimits) -> list[RuleViolation]:
    """Western Electric rules 1-4 on an individuals chart."""
    out = []
    for i, v in enumerate(values):
        if abs(v - lim.center) > 3 * lim.sigma:
            side = 1 if v > lim.center else -1
            where = "above UCL" if side > 0 else "below LCL"
            out.append(RuleViolation("WE1", i, side, f"point {where} (3 sigma)"))
    out += _zone_rule(values, lim, 2.0, 3, 2, "WE2")
    out += _zone_rule(values, lim, 1.0, 5, 4, "WE3")
    for i in range(7, len(values)):
        window = values[i - 7 : i + 1]
        for side in (1, -1):
            if all(side * (v - lim.center) > 0 for v in window):
                where = "above" if side > 0 else "below"
                out.append(RuleViolation("WE4", i, side, f"8 points in a row {where} centre"))
    return sorted(out, key=lambda r: (r.index, r.rule))


def nelson_trend(values: Sequence[float], run: int = 6) -> list[RuleViolation]:
    """Nelson rule 3: `run` points in a row steadily rising or falling."""
    out = []
    for i in range(run - 1, len(values)):
        w = values[i - run + 1 : i + 1]
        steps = [b - a for a, b in itertools.pairwise(w)]
        for side in (1, -1):
            if all(side * s > 0 for s in steps):
                word = "rising" if side > 0 else "falling"
                out.append(RuleViolation("N3", i, side, f"{run} points in a row {word}"))
    return out


def moving_range_violations(values: Sequence[float], lim: ChartLimits) -> list[RuleViolation]:
    """MR chart: a jump between consecutive points larger than D4 x MR-bar."""
    out = []
    for i in range(1, len(values)):
        if abs(values[i] - values[i - 1]) > lim.mr_ucl:
            side = 1 if values[i] > values[i - 1] else -1
            out.append(RuleViolation("MR", i, side, "jump beyond moving-range UCL"))
    return out


def ewma_violations(
    values: Sequence[float], lim: ChartLimits, lam: float, width: float, start: int
) -> list[RuleViolation]:
    """EWMA chart from point `start` on: z_i = lam x_i + (1 - lam) z_(i-1), z = centre before
    `start`; limits centre +- width sigma sqrt(lam / (2 - lam) (1 - (1 - lam)^(2 n))) after n
    points (Montgomery, Introduction to Statistical Quality Control, 6th ed., section 9.2). It
    sees a slow drift of about one sigma that the Shewhart rules miss for many batches."""
    out = []
    z = lim.center
    for n, i in enumerate(range(start, len(values)), start=1):
        z = lam * values[i] + (1.0 - lam) * z
        half = width * lim.sigma * math.sqrt(lam / (2.0 - lam) * (1.0 - (1.0 - lam) ** (2 * n)))
        if abs(z - lim.center) > half:
            side = 1 if z > lim.center else -1
            where = "above" if side > 0 else "below"
            out.append(RuleViolation("EWMA", i, side, f"EWMA {z:.4g} {where} its limit"))
    return out


def capability(
    lim: ChartLimits, lower: float | None, upper: float | None
) -> dict[str, float | None]:
    """Cpk per spec limit from the baseline: (USL - mean) / 3 sigma, (mean - LSL) / 3 sigma;
    sigma is the within (moving-range) sigma, so this is Cpk, not Ppk."""
    return {
        "cpk_upper": None if upper is None else (upper - lim.center) / (3.0 * lim.sigma),
        "cpk_lower": None if lower is None else (lim.center - lower) / (3.0 * lim.sigma),
    }


@dataclass(frozen=True)
class SpcChart:
    """One variable's chart: limits from the first `baseline_n` points, rules on the rest."""

    variable: str
    values: list[float]
    limits: ChartLimits | None
    violations: list[RuleViolation] = field(default_factory=list)


def sigma_floor(variable: str, center: float, floor_ppm: float, floor_rel: float) -> float:
    """Smallest credible sigma: an absolute ppm floor or a share of the level, whichever is
    larger; for purity the share applies to what is not product (100 % - purity)."""
    if variable == "purity_pct":
        return max(floor_ppm / 1e4, floor_rel * max(0.0, 100.0 - center))
    if variable in PHYSICAL_UNITS:  # not in ppm: only the relative floor applies
        return floor_rel * abs(center)
    return max(floor_ppm, floor_rel * abs(center))


def spc_chart(
    variable: str,
    values: Sequence[float],
    baseline_n: int,
    *,
    trend_run: int = 6,
    floor_ppm: float = 0.0,
    floor_rel: float = 0.0,
    ewma_lambda: float = 0.2,
    ewma_l: float = 2.7,
) -> SpcChart:
    """Chart a series; rules fire only on points after the baseline window."""
    vals = [float(v) for v in values]
    if len(vals) < max(2, baseline_n):
        return SpcChart(variable, vals, None)
    base = vals[:baseline_n]
    floor = sigma_floor(variable, math.fsum(base) / len(base), floor_ppm, floor_rel)
    lim = individuals_limits(base, floor)
    found = (
        western_electric(vals, lim)
        + nelson_trend(vals, trend_run)
        + moving_range_violations(vals, lim)
        + ewma_violations(vals, lim, ewma_lambda, ewma_l, baseline_n)
    )
    return SpcChart(variable, vals, lim, [v for v in found if v.index >= baseline_n])


def spec_limit(spec: ProductSpec, variable: str) -> float | None:
    """The spec limit a charted variable is judged against (lower for purity, else upper)."""
    if variable == "purity_pct":
        return spec.min_purity_pct
    if variable == "magnetic_ppb":
        return spec.magnetic_max_ppb
    if variable == "insolubles_pct":
        return spec.insolubles_max_pct
    return spec.impurity_limits_ppm.get(variable)


def bad_side(variable: str) -> int:
    """Which way is trouble: purity falling (-1), impurities rising (+1)."""
    return -1 if variable == "purity_pct" else 1


# ------------------------------------------------------------------- mass balance, recovery --


@dataclass(frozen=True)
class MetalBalance:
    """One metal: in (lot estimates) against out (products, by-products, residues) and what the
    hold-up tanks gained meanwhile (negative: they gave back)."""

    metal: str
    in_g: float
    products_g: float
    byproducts_g: float
    residues_g: dict[str, float]
    holdup_g: float = 0.0

    @property
    def recovered_g(self) -> float:
        return self.products_g + self.byproducts_g

    @property
    def out_g(self) -> float:
        return self.recovered_g + math.fsum(self.residues_g.values()) + self.holdup_g

    @property
    def unaccounted_g(self) -> float:
        return self.in_g - self.out_g

    @property
    def recovery_pct(self) -> float | None:
        """Recovered / the metal that went through (in less what the tanks kept)."""
        through = self.in_g - self.holdup_g
        return 100.0 * self.recovered_g / through if through > 0 else None

    def as_json(self) -> dict[str, Any]:
        rec = self.recovery_pct
        return {
            "in_g": round(self.in_g, 1),
            "products_g": round(self.products_g, 1),
            "byproducts_g": round(self.byproducts_g, 1),
            "residues_g": {k: round(v, 1) for k, v in sorted(self.residues_g.items())},
            "holdup_g": round(self.holdup_g, 1),
            "out_g": round(self.out_g, 1),
            "unaccounted_g": round(self.unaccounted_g, 1),
            "recovery_pct": None if rec is None else round(rec, 2),
        }


def _sum_into(dst: dict[str, float], src: Mapping[str, float]) -> None:
    for el, g in src.items():
        dst[el] = dst.get(el, 0.0) + float(g)


def mass_balance(
    feeds: Iterable[Mapping[str, float]],
    products: Iterable[tuple[str, float]],
    residues: Iterable[Mapping[str, Mapping[str, float]]],
    saleable: Iterable[str],
    holdup: Iterable[str] = (),
) -> dict[str, MetalBalance]:
    """Per-metal balance: feeds (metal->g), products ((metal, g) from assays), residue streams
    (stream->metal->g); streams named in `saleable` count as recovered by-products, those in
    `holdup` as what the tanks gained."""
    fed: dict[str, float] = {}
    for f in feeds:
        _sum_into(fed, f)
    made: dict[str, float] = {}
    for metal, g in products:
        made[metal] = made.get(metal, 0.0) + g
    sold_streams, held_streams = set(saleable), set(holdup)
    by: dict[str, float] = {}
    held: dict[str, float] = {}
    rest: dict[str, dict[str, float]] = {}
    for r in residues:
        for stream, grams in r.items():
            if stream in sold_streams:
                _sum_into(by, grams)
            elif stream in held_streams:
                _sum_into(held, grams)
            else:
                _sum_into(rest.setdefault(stream, {}), grams)
    metals = sorted(
        set(fed) | set(made) | set(by) | set(held) | {m for v in rest.values() for m in v}
    )
    return {
        m: MetalBalance(
            metal=m,
            in_g=fed.get(m, 0.0),
            products_g=made.get(m, 0.0),
            byproducts_g=by.get(m, 0.0),
            residues_g={s: v[m] for s, v in rest.items() if m in v},
            holdup_g=held.get(m, 0.0),
        )
        for m in metals
    }


def recovery(
    balance: Mapping[str, MetalBalance], targets: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, Any]]:
    """Achieved recovery per target metal against each EU deadline (None when nothing fed)."""
    metals = sorted({m for t in targets.values() for m in t})
    out: dict[str, dict[str, Any]] = {}
    for m in metals:
        b = balance.get(m)
        achieved = b.recovery_pct if b is not None else None
        tgt = {label: t[m] for label, t in targets.items() if m in t}
        out[m] = {
            "achieved_pct": None if achieved is None else round(achieved, 2),
            "targets": tgt,
            "meets": {label: achieved is not None and achieved >= v for label, v in tgt.items()},
        }
    return out


# ------------------------------------------------------------------------ black-mass value --

LI2CO3_TO_LI = 5.323  # t Li2CO3 per t Li (reference §3: carbonate-to-metal factor)


class Penalty(Strict):
    """A deduction for an element over a free allowance (per % over it, per dry tonne)."""

    free_pct: float = Field(ge=0, le=100)
    per_pct_per_t: float = Field(ge=0)


class Valuation(Strict):
    """Metal prices, payables and deductions for black mass (reference §3)."""

    currency: str = "USD"
    price_per_t: dict[str, float] = Field(description="metal price per tonne of contained metal")
    li2co3_price_per_t: float = Field(ge=0, description="battery-grade Li2CO3 price per tonne")
    payable_pct: dict[str, float] = Field(description="metal -> % of price paid")
    lfp_price_per_li_pct_per_t: float = Field(
        0.0, ge=0, description="LFP black mass: price per 1 % Li per dry tonne (lithium units)"
    )
    treatment_charge_per_t: float = Field(0.0, ge=0, description="per dry tonne")
    moisture_pct: float = Field(0.0, ge=0, lt=100, description="paid on dry mass")
    penalties: dict[str, Penalty] = Field(default_factory=dict)


@dataclass(frozen=True)
class LotValue:
    """A black-mass lot's inferred value with its 1-sigma uncertainty from the assay."""

    currency: str
    total: float
    uncertainty: float
    per_metal: dict[str, float]
    basis: str = "payables"
    deductions: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "basis": self.basis,
            "total": round(self.total, 2),
            "uncertainty": round(self.uncertainty, 2),
            "per_metal": {k: round(v, 2) for k, v in self.per_metal.items()},
            "deductions": {k: round(v, 2) for k, v in self.deductions.items()},
        }


def is_lfp_black_mass(wt_pct: Mapping[str, float]) -> bool:
    """LFP black mass carries more Fe than Ni + Co (LiFePO4 cathode; reference §2.1, §3)."""
    return wt_pct.get("Fe", 0.0) > wt_pct.get("Ni", 0.0) + wt_pct.get("Co", 0.0)


def value_black_mass(
    black_mass_kg: float,
    wt_pct: Mapping[str, float],
    unc_pct: Mapping[str, float],
    valuation: Valuation,
) -> LotValue:
    """Value by chemistry on the dry mass: LFP on lithium units (price per % Li per tonne),
    NMC/NCA on payable x price x content per metal; minus the treatment charge and penalties
    for Cu, Al (F) over their free allowance. Uncertainty from the assay, in quadrature."""
    dry_t = black_mass_kg / 1000.0 * (1.0 - valuation.moisture_pct / 100.0)
    per: dict[str, float] = {}
    var = 0.0
    lfp = is_lfp_black_mass(wt_pct)
    for el, pct in wt_pct.items():
        if lfp:
            unit = valuation.lfp_price_per_li_pct_per_t * dry_t if el == "Li" else 0.0
        else:
            price = (
                valuation.li2co3_price_per_t * LI2CO3_TO_LI
                if el == "Li"
                else valuation.price_per_t.get(el, 0.0)
            )
            unit = valuation.payable_pct.get(el, 0.0) / 100.0 * price * dry_t / 100.0
        if unit == 0.0:
            continue
        per[el] = unit * pct
        var += (unit * unc_pct.get(el, 0.0)) ** 2
    deductions: dict[str, float] = {}
    if valuation.treatment_charge_per_t:
        deductions["treatment charge"] = -valuation.treatment_charge_per_t * dry_t
    for el, pen in valuation.penalties.items():
        over = wt_pct.get(el, 0.0) - pen.free_pct
        if over > 0:
            deductions[f"{el} penalty"] = -pen.per_pct_per_t * over * dry_t
    total = math.fsum(per.values()) + math.fsum(deductions.values())
    basis = "lithium units (LFP)" if lfp else "payables (NMC/NCA)"
    return LotValue(valuation.currency, total, math.sqrt(var), per, basis, deductions)
