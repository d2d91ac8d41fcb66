"""Simulated hydrometallurgy line: feed metals + impurity-removal pH -> product batches and assays.

Not a chemical simulator: a mass-flow model of the flowsheet in
docs/reference/xrf-and-process.md §4.2 that responds in the right direction and magnitude.
Stages: sieving off Cu/Al foils, leach (H2SO4 + H2O2), Fe/Al/P removal by neutralisation at
pH ~4, solvent extraction, crystallisation of the sulfates and Li2CO3 precipitation.

- Feed: misrouted LFP brings Fe and P; foils bring Cu and Al.
- Leach: extraction follows the shrinking-core model under chemical-reaction control,
  1 - (1 - X)^(1/3) = k t (Levenspiel, Chemical Reaction Engineering, 3rd ed., ch. 25), with an
  Arrhenius temperature term, a power law in the free acid (H+ activity from the leach pH the
  PLC reports), a reductant term on ORP for Ni/Co/Mn and a pulp-density term; constants in
  docs/purity.md. A starved leach leaves unleached solids whose fines pass the filter into the
  products as water-insoluble matter.
- Process: a low or unsteady impurity-removal pH leaves Fe/Al/P in solution. Impurities then
  carry over into the products; P co-precipitates as Li3PO4 with Li2CO3 and lowers its content.
  A high pH co-precipitates Ni/Co/Li with the hydroxide cake and lowers recovery. The losses
  grow with the amount of cake (reference §4.2, item 2).
Every gram of metal fed ends in a product, a by-product or a named residue, so the mass balance
closes up to the assays' measurement noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# Product -> (main metal, theoretical wt% of that metal). The sulfates' figures are [C] in the
# reference, §4.1. Li2CO3 is 1/5.323 (§3).
PRODUCTS: dict[str, tuple[str, float]] = {
    "NiSO4·6H2O": ("Ni", 22.33),
    "CoSO4·7H2O": ("Co", 20.96),
    "MnSO4·H2O": ("Mn", 32.5),
    "Li2CO3": ("Li", 18.78),
}
TRACKED = ("Ni", "Co", "Mn", "Li", "Fe", "Al", "Cu", "P")
PAYABLE_METALS = ("Ni", "Co", "Mn", "Li")
IMPURITIES = ("Fe", "Al", "Cu", "P")
LI3PO4_PER_P = 115.79 / 30.974  # g Li3PO4 per g P
LI_IN_LI3PO4 = 3 * 6.941 / 115.79  # g Li per g Li3PO4
XRF_ELEMENTS = ("Ni", "Co", "Mn", "Cu", "Al", "Fe")  # what a pellet XRF reports (reference §3)


def _default_partition() -> dict[str, dict[str, float]]:
    # Share of each element left in solution after Fe/Al removal that ends up in each product.
    # The rest goes to the SX strip or the raffinate. Co in NiSO4 and Ni in CoSO4 come from an
    # incomplete Co/Ni separation.
    return {
        "NiSO4·6H2O": {"Fe": 0.02, "Al": 0.004, "Cu": 0.0001, "P": 0.005, "Co": 3e-4},
        "CoSO4·7H2O": {"Fe": 0.05, "Al": 0.004, "Cu": 0.00004, "P": 0.005, "Ni": 4e-6},
        "MnSO4·H2O": {"Fe": 0.12, "Al": 0.01, "Cu": 0.00003, "P": 0.01, "Ni": 3e-5, "Co": 5e-5},
        "Li2CO3": {"Fe": 0.002, "Al": 0.002, "Cu": 0.00005, "P": 0.12},
    }


def _default_background() -> dict[str, dict[str, float]]:
    # ppm from reagents and equipment, independent of the feed: Na from NaOH/Na2CO3 and so on.
    return {
        "NiSO4·6H2O": {"Na": 25.0, "Zn": 2.0, "Fe": 1.0},
        "CoSO4·7H2O": {
            "Zn": 2.0,
            "Fe": 1.0,
            "Mn": 3.0,
            "Ca": 3.0,
            "Mg": 3.0,
            "Na": 4.0,
            "Pb": 0.5,
        },
        "MnSO4·H2O": {
            "Zn": 2.0,
            "Pb": 1.0,
            "Cd": 0.5,
            "Fe": 1.5,
            "Na": 30.0,
            "K": 20.0,
            "Ca": 25.0,
            "Mg": 20.0,
        },
        "Li2CO3": {"Na": 120.0, "Ca": 18.0, "Mg": 25.0, "Fe": 1.0},
    }


R_J_PER_MOL_K = 8.314


@dataclass(frozen=True)
class LeachConditions:
    """The leach as the PLC runs it; the defaults are the reference conditions at which the
    model's `leach` extractions hold."""

    ph: float = 1.5
    temp_c: float = 70.0  # reference §4.2
    orp_mv: float = 561.2  # the PLC's ORP at pH 1.5 (drivers/sim/process.py)
    solid_liquid_g_per_l: float = 100.0
    residence_min: float = 120.0


@dataclass(frozen=True)
class HydrometModel:
    """Tunable constants of the flowsheet; the defaults are plausible, not measured ([U])."""

    foil_separation: float = 0.85  # share of Cu/Al foil sieved off before the leach
    # Extraction at the reference LeachConditions; other conditions scale the rate constant.
    leach: Mapping[str, float] = field(
        default_factory=lambda: {
            "Ni": 0.985,
            "Co": 0.985,
            "Mn": 0.98,
            "Li": 0.97,
            "Fe": 0.9,
            "Al": 0.9,
            "Cu": 0.95,
            "P": 0.95,
        }
    )
    # Apparent activation energy, kJ/mol ([U]: tens of kJ/mol, the range reported for reductive
    # H2SO4 leaching of LiCoO2/NMC; Li's is the lowest).
    activation_kj_mol: Mapping[str, float] = field(
        default_factory=lambda: {
            "Ni": 45.0,
            "Co": 55.0,
            "Mn": 30.0,
            "Li": 30.0,
            "Fe": 40.0,
            "Al": 40.0,
            "Cu": 40.0,
            "P": 40.0,
        }
    )
    acid_order: float = 1.0  # k ~ [H+]^n [U]
    # Reductive dissolution of Co(III)/Ni(III)/Mn(IV) needs H2O2: above this ORP the reductant
    # runs short and k falls as a logistic in ORP [U].
    orp_half_mv: float = 650.0
    orp_width_mv: float = 25.0
    reduced_metals: tuple[str, ...] = ("Ni", "Co", "Mn")
    pulp_exponent: float = 0.5  # k ~ (S/L_ref / S/L)^0.5: denser pulp, slower leach [U]
    fines_to_product: float = 2e-3  # share of unleached solids passing the filter [U]
    insolubles_base_pct: float = 0.003  # water-insoluble matter of a good batch [U]
    magnetic_carry: float = 2e-6  # share of tramp can steel reaching the products [U]
    magnetic_base_ppb: float = 40.0
    # Residual share after neutralisation: 1 / (1 + 10**(slope * (pH - pH50))). Fe and Al drop
    # out at about pH 4 and Fe alone at pH 3.5 (reference §4.2); Cu stays, the SX removes it.
    ph50: Mapping[str, float] = field(
        default_factory=lambda: {"Fe": 2.8, "Al": 3.3, "P": 2.9, "Cu": 5.5}
    )
    ph_slope: float = 2.5
    # Co-precipitation loss = coef * (cake g / valuable g) * 10**(0.5 * (pH - 4)). At pH 4, 2-4
    # g/L of Al costs Ni 2-10 %, Co 1-2 % and Li 2-10 % (reference §4.2).
    coprecipitation: Mapping[str, float] = field(
        default_factory=lambda: {"Ni": 1.0, "Co": 0.6, "Mn": 0.8, "Li": 1.0}
    )
    product_yield: Mapping[str, float] = field(
        default_factory=lambda: {"Ni": 0.985, "Co": 0.98, "Mn": 0.97, "Li": 0.88}
    )
    cu_cementation: float = 0.6  # share of the Cu in solution won back as Cu cement
    partition: Mapping[str, Mapping[str, float]] = field(default_factory=_default_partition)
    background_ppm: Mapping[str, Mapping[str, float]] = field(default_factory=_default_background)
    moisture_pct: float = 0.12  # free water and insolubles, counted against purity
    # Excess water of crystallisation lowers the main-element content, not the purity: NiSO4·6H2O
    # sells at Ni 22.0-22.3 % against 22.33 % theoretical (reference §4.1).
    hydrate_excess_pct: Mapping[str, float] = field(
        default_factory=lambda: {"NiSO4·6H2O": 0.7, "CoSO4·7H2O": 0.3, "MnSO4·H2O": 0.2}
    )
    assay_rel_sd: float = 0.08  # relative noise of a ppm determination
    main_abs_sd: float = 0.03  # wt% noise of the main-element determination
    tramp_fe_g_per_kg: float = 0.5  # steel from cans that the magnet missed (not in lot estimate)
    black_mass_yield: float = 0.55  # black mass per cell mass: cathode + graphite ([U], §2.2)


@dataclass(frozen=True)
class ProductAssay:
    """One product batch as the inline analyser reports it."""

    product: str
    mass_kg: float
    purity_pct: float
    main_element: str
    main_pct: float
    impurities_ppm: dict[str, float]
    physical: dict[str, float]  # magnetic_ppb, insolubles_pct


@dataclass(frozen=True)
class CampaignResult:
    """What one campaign made: assayed products and where the rest of each metal went."""

    products: list[ProductAssay]
    residues_g: dict[str, dict[str, float]]


def residual_fraction(element: str, ph_mean: float, ph_sd: float, model: HydrometModel) -> float:
    """Share of an element left in solution at a pH that wanders with standard deviation ph_sd."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(21)
    ph = ph_mean + ph_sd * nodes
    r = 1.0 / (1.0 + 10.0 ** (model.ph_slope * (ph - model.ph50[element])))
    return float(np.dot(weights, r) / weights.sum())


def leach_extraction(element: str, cond: LeachConditions, model: HydrometModel) -> float:
    """Extracted share of an element: shrinking core, 1 - (1 - X)^(1/3) = k t, with k scaled
    from the reference conditions by temperature, acid, ORP (reductive metals) and pulp density."""
    ref = LeachConditions()
    x_ref = min(model.leach[element], 0.999999)
    kt = 1.0 - (1.0 - x_ref) ** (1.0 / 3.0)
    ea = model.activation_kj_mol[element] * 1000.0
    t, t_ref = cond.temp_c + 273.15, ref.temp_c + 273.15
    kt *= math.exp(-ea / R_J_PER_MOL_K * (1.0 / t - 1.0 / t_ref))
    kt *= 10.0 ** (-model.acid_order * (cond.ph - ref.ph))
    if element in model.reduced_metals:

        def reductant(orp: float) -> float:
            return 1.0 / (1.0 + math.exp((orp - model.orp_half_mv) / model.orp_width_mv))

        kt *= reductant(cond.orp_mv) / reductant(ref.orp_mv)
    kt *= (ref.solid_liquid_g_per_l / cond.solid_liquid_g_per_l) ** model.pulp_exponent
    kt *= cond.residence_min / ref.residence_min
    return 1.0 - (1.0 - min(1.0, kt)) ** 3


def _add(dst: dict[str, float], el: str, g: float) -> None:
    if g > 0:
        dst[el] = dst.get(el, 0.0) + g


def run_campaign(
    feed_g: Mapping[str, float],
    feed_mass_g: float,
    ph_mean: float,
    ph_sd: float,
    rng: np.random.Generator,
    model: HydrometModel | None = None,
    leach: LeachConditions | None = None,
) -> CampaignResult:
    """Process one campaign's feed (grams per metal) into assayed products and residues."""
    m = model or HydrometModel()
    cond = leach or LeachConditions()
    feed = {el: max(0.0, float(feed_g.get(el, 0.0))) for el in TRACKED}
    tramp_fe = m.tramp_fe_g_per_kg * feed_mass_g / 1000.0
    feed["Fe"] += tramp_fe
    foils: dict[str, float] = {}
    leach_residue: dict[str, float] = {}
    cake: dict[str, float] = {}
    raffinate: dict[str, float] = {}
    cement: dict[str, float] = {}
    for el in ("Cu", "Al"):
        _add(foils, el, feed[el] * m.foil_separation)
        feed[el] -= feed[el] * m.foil_separation
    solution: dict[str, float] = {}
    for el in TRACKED:
        solution[el] = feed[el] * leach_extraction(el, cond, m)
        _add(leach_residue, el, feed[el] - solution[el])
    for el in IMPURITIES:
        kept = solution[el] * residual_fraction(el, ph_mean, ph_sd, m)
        _add(cake, el, solution[el] - kept)
        solution[el] = kept
    valuable = sum(solution[el] for el in PAYABLE_METALS) or 1.0
    severity = sum(cake.values()) / valuable * 10.0 ** (0.5 * (ph_mean - 4.0))
    for el in PAYABLE_METALS:
        lost = solution[el] * min(0.5, m.coprecipitation[el] * severity)
        _add(cake, el, lost)
        solution[el] -= lost
    made = {metal: solution[metal] * m.product_yield[metal] for metal, _ in PRODUCTS.values()}
    salt_total = sum(made[metal] / (pct / 100.0) for metal, pct in PRODUCTS.values()) or 1.0
    fines_g = sum(leach_residue.values()) * m.fines_to_product
    products: list[ProductAssay] = []
    carried: dict[str, float] = {}
    for product, (metal, theory_pct) in PRODUCTS.items():
        metal_g = made[metal]
        _add(raffinate, metal, solution[metal] - metal_g)
        if metal_g <= 0:
            continue
        foreign = {el: solution[el] * share for el, share in m.partition[product].items()}
        for el, g in foreign.items():
            carried[el] = carried.get(el, 0.0) + g
        # P in the Li liquor precipitates as Li3PO4 with the carbonate and takes Li with it.
        li3po4_g = foreign.get("P", 0.0) * LI3PO4_PER_P if metal == "Li" else 0.0
        salt_g = (metal_g - li3po4_g * LI_IN_LI3PO4) / (theory_pct / 100.0)
        share = salt_g / salt_total
        insol_g = fines_g * share + salt_g * m.insolubles_base_pct / 100.0
        moisture = max(0.0, m.moisture_pct + float(rng.normal(0.0, 0.02)))
        excess = m.hydrate_excess_pct.get(product, 0.0) + moisture
        mass_g = salt_g * (1.0 + excess / 100.0) + li3po4_g + insol_g + sum(foreign.values())
        ppm = {el: g / mass_g * 1e6 for el, g in foreign.items()}
        for el, bg in m.background_ppm[product].items():
            ppm[el] = ppm.get(el, 0.0) + bg
        measured = {
            el: round(v * float(rng.lognormal(0.0, m.assay_rel_sd)), 2) for el, v in ppm.items()
        }
        # The content assay (titration) and the main-element assay, each with its noise.
        purity = 100.0 * salt_g / mass_g + float(rng.normal(0.0, m.main_abs_sd / 5.0))
        main = 100.0 * metal_g / mass_g + float(rng.normal(0.0, m.main_abs_sd))
        magnetic = m.magnetic_base_ppb + tramp_fe * m.magnetic_carry * share / mass_g * 1e9
        products.append(
            ProductAssay(
                product=product,
                mass_kg=round(mass_g / 1000.0, 3),
                purity_pct=round(min(100.0, purity), 3),
                main_element=metal,
                main_pct=round(main, 3),
                impurities_ppm=dict(sorted(measured.items())),
                physical={
                    "magnetic_ppb": round(magnetic * float(rng.lognormal(0.0, 0.1)), 1),
                    "insolubles_pct": round(
                        100.0 * insol_g / mass_g * float(rng.lognormal(0.0, 0.1)), 4
                    ),
                },
            )
        )
    for el in IMPURITIES:
        left = max(0.0, solution[el] - carried.get(el, 0.0))
        won = left * m.cu_cementation if el == "Cu" else 0.0
        _add(cement, el, won)
        _add(raffinate, el, left - won)
    residues = {
        "foil concentrate": foils,
        "Cu cement": cement,
        "leach residue": leach_residue,
        "Fe/Al/P cake": cake,
        "raffinate": raffinate,
    }
    return CampaignResult(
        products=products,
        residues_g={k: {el: round(g, 3) for el, g in v.items()} for k, v in residues.items()},
    )


@dataclass(frozen=True)
class PelletAssay:
    """XRF assay of a pressed black-mass pellet: wt% with 1-sigma uncertainty."""

    wt_pct: dict[str, float]
    unc_pct: dict[str, float]
    black_mass_kg: float


def pellet_assay(
    metals_g: Mapping[str, float],
    cell_mass_g: float,
    rng: np.random.Generator,
    model: HydrometModel | None = None,
    rel_unc: Mapping[str, float] | None = None,
) -> PelletAssay:
    """XRF pellet assay of the black mass made from a lot (long dwell: percent-level precision)."""
    m = model or HydrometModel()
    rel = rel_unc or {"Ni": 0.02, "Co": 0.03, "Mn": 0.03, "Cu": 0.05, "Al": 0.15, "Fe": 0.03}
    bm_g = max(1e-9, cell_mass_g * m.black_mass_yield)
    wt: dict[str, float] = {}
    unc: dict[str, float] = {}
    for el in XRF_ELEMENTS:
        g = float(metals_g.get(el, 0.0))
        if el in ("Cu", "Al"):
            g *= 1.0 - m.foil_separation
        true = g / bm_g * 100.0
        sd = math.hypot(rel[el] * true, 0.02)
        wt[el] = round(max(0.0, true + float(rng.normal(0.0, sd))), 3)
        unc[el] = round(sd, 3)
    return PelletAssay(wt_pct=wt, unc_pct=unc, black_mass_kg=round(bm_g / 1000.0, 3))


@dataclass
class ProcessSim:
    """The line's live process values: a pH loop held at its setpoint with noise and drift."""

    ph_setpoint: float
    ph_noise: float
    rng: np.random.Generator
    ph_drift_per_h: float = 0.0
    ph: float = field(init=False)
    _offset: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.ph = self.ph_setpoint

    def step(self, dt_s: float) -> dict[str, float]:
        """Advance dt_s seconds; return the tag values a PLC would show now."""
        self._offset += self.ph_drift_per_h * dt_s / 3600.0
        target = self.ph_setpoint + self._offset
        theta = min(1.0, dt_s / 30.0)  # the loop pulls back with a 30 s time constant
        self.ph += theta * (target - self.ph) + self.ph_noise * math.sqrt(theta) * float(
            self.rng.normal()
        )
        # The leach's pH, temperature and ORP are the PLC's (drivers/sim/process.py): one
        # writer per tag in the historian.
        return {"purification.ph": round(self.ph, 3)}


class SimHydrometPlant:
    """The simulated hydromet plant as plant/hydromet.py's runner drives it: the pH loop,
    campaigns and pellet assays, each seeded from `seed` (and the campaign or lot) so a run
    repeats exactly."""

    def __init__(
        self,
        seed: int,
        ph_setpoint: float,
        ph_noise: float,
        ph_drift_per_h: float = 0.0,
        model: HydrometModel | None = None,
    ) -> None:
        self.seed = seed
        self.model = model or HydrometModel()
        self.process = ProcessSim(
            ph_setpoint, ph_noise, np.random.default_rng([seed, 7]), ph_drift_per_h
        )

    @property
    def ph_setpoint(self) -> float:
        return self.process.ph_setpoint

    @ph_setpoint.setter
    def ph_setpoint(self, value: float) -> None:
        self.process.ph_setpoint = value

    def sample(self, dt_s: float) -> dict[str, float]:
        return self.process.step(dt_s)

    def campaign(
        self,
        number: int,
        feed_g: Mapping[str, float],
        feed_mass_g: float,
        ph_mean: float,
        ph_sd: float,
        leach: Mapping[str, float],
    ) -> CampaignResult:
        rng = np.random.default_rng([self.seed, number])
        ref = LeachConditions()
        cond = LeachConditions(
            ph=leach.get("leach.ph", ref.ph),
            temp_c=leach.get("leach.temp_c", ref.temp_c),
            orp_mv=leach.get("leach.orp_mv", ref.orp_mv),
            solid_liquid_g_per_l=leach.get("solid_liquid_g_per_l", ref.solid_liquid_g_per_l),
            residence_min=leach.get("residence_min", ref.residence_min),
        )
        return run_campaign(feed_g, feed_mass_g, ph_mean, ph_sd, rng, self.model, cond)

    def pellet_assay(
        self,
        lot_id: str,
        metals_g: Mapping[str, float],
        cell_mass_g: float,
        rel_unc: Mapping[str, float],
    ) -> PelletAssay:
        rng = np.random.default_rng([self.seed, 11, *lot_id.encode()])
        return pellet_assay(metals_g, cell_mass_g, rng, self.model, rel_unc)
