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
- Hold-up: the leach liquor goes through a mixed tank (the pregnant-leach-solution tank) before
  the purification, so a campaign's liquor blends with what the tank held: a bad lot shows up
  diluted in the next batches too.
- Process: a low or unsteady impurity-removal pH leaves Fe/Al/P in solution. Impurities then
  carry over into the products; P co-precipitates as Li3PO4 with Li2CO3 and lowers its content.
  A high pH co-precipitates Ni/Co/Li with the hydroxide cake and lowers recovery. The losses
  grow with the amount of cake (reference §4.2, item 2).
- Solvent extraction: two counter-current circuits, D2EHPA (Mn with the residual Fe, Al, Cu) and
  Cyanex 272 (Co from Ni), each with extraction stages at the pH its loop holds, a scrub whose
  liquor returns to the feed, and a strip. Each metal's distribution ratio follows its
  extraction isotherm, log D = n (pH - pH50); the stages follow the Kremser equation. The strip
  liquors crystallise MnSO4 and CoSO4, the Cyanex raffinate NiSO4, its mother liquor Li2CO3;
  each crystal takes up the impurities of its liquor in proportion (homogeneous distribution).
- Carbonation: the Li liquor, concentrated by evaporation, meets Na2CO3 solution; Li2CO3 comes
  down to its solubility at the carbonation temperature (inverse solubility: ~13 g/L at 25 °C,
  ~7 g/L at 100 °C), lowered by the carbonate excess (common ion, ideal Ksp). The mother liquor
  is partly bled, the rest returns to the evaporator with its Li.
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


def _default_crystal_carry() -> dict[str, dict[str, float]]:
    # Homogeneous distribution coefficient k of each impurity between a product's crystals and
    # its liquor: (impurity/main) in the crystals = k x (impurity/main) in the liquor, so the
    # crystals take k x crystallised share of the liquor's impurity [U]. Co and Ni substitute for
    # each other in the sulfate lattice (k ~0.5), Fe(II) in CoSO4·7H2O too (FeSO4·7H2O is
    # isomorphous with it: k ~1); Fe/Al/Cu otherwise mostly by occluded mother liquor.
    # P in Li2CO3: the Li3PO4 that comes down with the carbonate.
    return {
        "NiSO4·6H2O": {"Fe": 0.02, "Al": 0.004, "Cu": 0.0001, "P": 0.005, "Co": 0.5, "Mn": 0.2},
        "CoSO4·7H2O": {"Fe": 1.0, "Al": 0.004, "Cu": 0.01, "P": 0.005, "Ni": 0.5, "Mn": 0.5},
        "MnSO4·H2O": {"Fe": 0.12, "Al": 0.01, "Cu": 3e-5, "P": 0.01, "Ni": 0.3, "Co": 0.3},
        "Li2CO3": {"Fe": 0.002, "Al": 0.002, "Cu": 5e-5, "P": 0.12},
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
M_LI = 6.941  # g/mol
M_LI2CO3 = 73.89
M_NA2CO3 = 105.99
# Solubility of Li2CO3 in water, g per 100 g water, by temperature (°C): A. Seidell,
# Solubilities of Inorganic and Metal Organic Compounds, 3rd ed., vol. 1, Van Nostrand 1940,
# pp. 909-911. It falls as the temperature rises (inverse solubility).
LI2CO3_SOLUBILITY = ((0.0, 1.53), (25.0, 1.27), (50.0, 1.01), (75.0, 0.85), (100.0, 0.72))


def li2co3_solubility_g_per_l(temp_c: float) -> float:
    """Li2CO3 soluble in pure water at `temp_c`, g per litre (1 L of liquor taken as 1 kg of
    water), interpolated linearly in Seidell's table and held flat beyond its ends."""
    temps = [t for t, _ in LI2CO3_SOLUBILITY]
    values = [v for _, v in LI2CO3_SOLUBILITY]
    return float(np.interp(temp_c, temps, values)) * 10.0


def li_in_mother_liquor_g_per_l(temp_c: float, excess_carbonate_mol_l: float) -> float:
    """Li left dissolved beside Li2CO3 crystals with `excess_carbonate_mol_l` of carbonate beyond
    the Li2CO3: the common-ion effect on an ideal solubility product, (2s)^2 (s + c) = Ksp with
    Ksp = 4 s0^3 from the pure-water solubility s0 (activities taken as 1). Returns 2 s M_Li."""
    s0 = li2co3_solubility_g_per_l(temp_c) / M_LI2CO3
    ksp = 4.0 * s0**3
    c = max(0.0, excess_carbonate_mol_l)
    lo, hi = 0.0, s0
    for _ in range(60):  # 4 s^2 (s + c) rises with s: bisect on [0, s0]
        mid = 0.5 * (lo + hi)
        if 4.0 * mid * mid * (mid + c) > ksp:
            hi = mid
        else:
            lo = mid
    return 2.0 * 0.5 * (lo + hi) * M_LI


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
class Carbonation:
    """The Li2CO3 precipitation as it is run: the carbonation temperature its loop holds, the
    share of the mother liquor bled (the rest returns to the evaporator), the Na2CO3 dosed beyond
    the stoichiometric and how far the evaporator concentrates the Li liquor."""

    temp_c: float = 90.0
    bleed_pct: float = 30.0
    na2co3_excess_pct: float = 10.0
    evaporation_factor: float = 4.0  # Li liquor volume / carbonation feed volume


@dataclass(frozen=True)
class Precipitation:
    """Li through one carbonation: precipitated as Li2CO3, bled with the mother liquor, and
    returned with it to the evaporator (the next campaign's carbonation feed)."""

    precipitated_g: float
    bled_g: float
    recycled_g: float
    li_feed_g_per_l: float
    li_mother_liquor_g_per_l: float


def precipitate_li2co3(
    li_g: float, liquor_l: float, cond: Carbonation, model: HydrometModel
) -> Precipitation:
    """Carbonate `li_g` of Li (this campaign's and the recycled mother liquor's) from a Li liquor
    of `liquor_l` litres: concentrated `evaporation_factor` times, Na2CO3 added as solution at
    `model.na2co3_solution_g_per_l` with `na2co3_excess_pct` over 2 Li + CO3 -> Li2CO3. The
    mother liquor holds Li at Li2CO3's solubility with the excess carbonate; `bleed_pct` of it
    leaves, the rest is recycled."""
    feed_l = max(1e-9, liquor_l / max(1.0, cond.evaporation_factor))
    li_mol = max(0.0, li_g) / M_LI
    soda_mol = li_mol / 2.0 * (1.0 + cond.na2co3_excess_pct / 100.0)
    ml_l = feed_l + soda_mol * M_NA2CO3 / model.na2co3_solution_g_per_l
    excess_mol_l = (soda_mol - li_mol / 2.0) / ml_l
    dissolved_g = min(li_g, li_in_mother_liquor_g_per_l(cond.temp_c, excess_mol_l) * ml_l)
    bleed = min(1.0, max(0.0, cond.bleed_pct / 100.0))
    return Precipitation(
        precipitated_g=li_g - dissolved_g,
        bled_g=dissolved_g * bleed,
        recycled_g=dissolved_g * (1.0 - bleed),
        li_feed_g_per_l=li_g / feed_l,
        li_mother_liquor_g_per_l=dissolved_g / ml_l,
    )


@dataclass(frozen=True)
class SxCircuit:
    """A counter-current solvent-extraction circuit: `stages` extraction stages at the pH its loop
    holds, `scrub_stages` scrub stages at `scrub_ph` whose liquor returns to the feed, a strip.
    Metals without a `ph50` (P) stay in the aqueous; `entrainment` is the share of every
    element of the feed that reaches the strip as entrained aqueous the scrub does not wash out.
    Constants and their sources: docs/purity.md, "Solvent extraction"."""

    extractant: str
    ph_tag: str
    ph: float  # the pH the circuit is run at when no loop reports one
    ph50: Mapping[str, float]  # pH of D = 1 (50 % extracted in one contact at O/A 1)
    slope: Mapping[str, float]  # n in log D = n (pH - pH50): the ion's charge, ideally
    scrub_ph: float
    stages: int = 4
    oa: float = 1.0  # organic/aqueous flow ratio in extraction
    scrub_stages: int = 2
    scrub_ao: float = 0.2  # scrub aqueous/organic flow ratio
    entrainment: float = 1e-6


def _d2ehpa() -> SxCircuit:
    # 20-40 % v/v D2EHPA in kerosene at pH 2.5 takes Mn, Fe, Al and Cu (reference §4.2 item 3).
    return SxCircuit(
        extractant="D2EHPA",
        ph_tag="sx_mn.ph",
        ph=2.5,
        ph50={"Fe": 2.4, "Al": 1.6, "Mn": 1.9, "Cu": 2.2, "Co": 3.1, "Ni": 3.5, "Li": 4.5},
        slope={"Fe": 2.0, "Al": 3.0, "Mn": 2.0, "Cu": 2.0, "Co": 2.0, "Ni": 2.0, "Li": 1.0},
        scrub_ph=2.0,
    )


def _cyanex272() -> SxCircuit:
    # Cyanex 272 separates Co from Ni at pH 5-5.5: its Co and Ni isotherms lie ~2 pH units apart.
    return SxCircuit(
        extractant="Cyanex 272",
        ph_tag="sx_co.ph",
        ph=5.0,
        ph50={"Fe": 3.0, "Al": 2.5, "Mn": 3.5, "Cu": 3.6, "Co": 4.1, "Ni": 6.1, "Li": 7.0},
        slope={"Fe": 2.0, "Al": 3.0, "Mn": 2.0, "Cu": 2.0, "Co": 2.0, "Ni": 2.0, "Li": 1.0},
        scrub_ph=4.0,
    )


def kremser(factor: float, stages: int) -> float:
    """Share of a solute NOT transferred in `stages` ideal counter-current stages with transfer
    factor `factor` (D x O/A for extraction): (f - 1) / (f^(N+1) - 1), 1/(N+1) at f = 1."""
    if abs(factor - 1.0) < 1e-9:
        return 1.0 / (stages + 1)
    if factor > 1.0:  # the same formula divided through by f^(N+1): no overflow at large f
        inv = 1.0 / factor
        return (inv**stages - inv ** (stages + 1)) / (1.0 - inv ** (stages + 1))
    return (1.0 - factor) / (1.0 - factor ** (stages + 1))


def distribution_ratio(c: SxCircuit, element: str, ph: float) -> float:
    """D = [M]org / [M]aq on the element's extraction isotherm, log D = n (pH - pH50)."""
    log_d = c.slope[element] * (ph - c.ph50[element])
    return 10.0 ** max(-15.0, min(15.0, log_d))


def sx_to_strip(c: SxCircuit, element: str, ph: float) -> float:
    """Share of the circuit's feed of `element` that reaches its strip liquor at this pH."""
    if element not in c.ph50:
        return c.entrainment
    extracted = 1.0 - kremser(distribution_ratio(c, element, ph) * c.oa, c.stages)
    # The scrub strips back what the loaded organic holds at the scrub pH; its liquor goes back
    # to the feed, so at steady state loaded = extracted x (feed + scrubbed).
    kept = kremser(c.scrub_ao / distribution_ratio(c, element, c.scrub_ph), c.scrub_stages)
    stripped = extracted * kept / (1.0 - extracted * (1.0 - kept))
    return min(1.0, stripped + c.entrainment * (1.0 - stripped))


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
    # Crystallisation yield of the sulfates per pass [U]; Li's follows from Li2CO3's solubility
    # (precipitate_li2co3).
    product_yield: Mapping[str, float] = field(
        default_factory=lambda: {"Ni": 0.985, "Co": 0.98, "Mn": 0.97}
    )
    na2co3_solution_g_per_l: float = 300.0  # soda ash dosed as a ~25 % solution [U]
    cu_cementation: float = 0.6  # share of the Cu in solution won back as Cu cement
    crystal_carry: Mapping[str, Mapping[str, float]] = field(default_factory=_default_crystal_carry)
    sx_mn: SxCircuit = field(default_factory=_d2ehpa)  # first: Mn and the residual Fe/Al/Cu
    sx_co: SxCircuit = field(default_factory=_cyanex272)  # then Co from Ni
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
    # The hold-ups after it: the PLS tank by element, and the recycled mother liquor's Li.
    tank_g: dict[str, float] = field(default_factory=dict)
    carbonation: Precipitation | None = None


@dataclass(frozen=True)
class Tank:
    """The pregnant-leach-solution tank between the leach filter and the purification: a mixed
    volume of `holdup_l` litres holding `held_g` (element -> g; "insolubles": filter fines)."""

    holdup_l: float
    held_g: Mapping[str, float] = field(default_factory=dict)


INSOLUBLES = "insolubles"  # the tank's filter fines, g
RECYCLED_LI = "Li recycled"  # g of Li in the mother liquor returned to the evaporator


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
    *,
    sx_ph: Mapping[str, float] | None = None,
    tank: Tank | None = None,
    carbonation: Carbonation | None = None,
) -> CampaignResult:
    """Process one campaign's feed (grams per metal) into assayed products and residues.
    `sx_ph`: the mean pH of each SX circuit's loop (by tag; default the circuits' own); `tank`:
    the hold-ups as the previous campaign left them (None: no tank, no recycled Li);
    `carbonation`: the Li2CO3 precipitation's conditions."""
    m = model or HydrometModel()
    cond = leach or LeachConditions()
    carb = carbonation or Carbonation()
    recycled_in = float(tank.held_g.get(RECYCLED_LI, 0.0)) if tank else 0.0
    feed = {el: max(0.0, float(feed_g.get(el, 0.0))) for el in TRACKED}
    tramp_fe = m.tramp_fe_g_per_kg * feed_mass_g / 1000.0
    feed["Fe"] += tramp_fe
    foils: dict[str, float] = {}
    leach_residue: dict[str, float] = {}
    cake: dict[str, float] = {}
    cement: dict[str, float] = {}
    raffinate: dict[str, float] = {}
    in_products: dict[str, float] = {}
    for el in ("Cu", "Al"):
        _add(foils, el, feed[el] * m.foil_separation)
        feed[el] -= feed[el] * m.foil_separation
    liquor: dict[str, float] = {}
    for el in TRACKED:
        liquor[el] = feed[el] * leach_extraction(el, cond, m)
        _add(leach_residue, el, feed[el] - liquor[el])
    liquor[INSOLUBLES] = sum(leach_residue.values()) * m.fines_to_product
    solution, held, holdup = liquor, dict(tank.held_g) if tank else {}, {}
    held.pop(RECYCLED_LI, None)
    volume_l = feed_mass_g * m.black_mass_yield / cond.solid_liquid_g_per_l
    if tank is not None and tank.holdup_l > 0:
        # A mixed tank: this campaign's liquor joins what it holds, and as much leaves.
        draw = volume_l / (volume_l + tank.holdup_l)
        mixed = {
            el: liquor.get(el, 0.0) + float(held.get(el, 0.0)) for el in (*TRACKED, INSOLUBLES)
        }
        solution = {el: g * draw for el, g in mixed.items()}
        held = {el: g - solution[el] for el, g in mixed.items()}
        holdup = {el: liquor[el] - solution[el] for el in TRACKED}
    fines_g = solution.pop(INSOLUBLES)
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
    liquors = solvent_extraction(solution, sx_ph or {}, m)
    made = {
        metal: liquors[product].get(metal, 0.0) * m.product_yield[metal]
        for product, (metal, _) in PRODUCTS.items()
        if product in liquors
    }
    # The Ni mother liquor carries the Li to the carbonation, where the recycled liquor joins it.
    precip = precipitate_li2co3(
        liquors["NiSO4·6H2O"].get("Li", 0.0) + recycled_in, volume_l, carb, m
    )
    made["Li"] = precip.precipitated_g
    li_share = precip.precipitated_g / max(1e-12, precip.precipitated_g + precip.bled_g
                                           + precip.recycled_g)  # fmt: skip
    yields = {**m.product_yield, "Li": li_share}
    salt_total = sum(made[metal] / (pct / 100.0) for metal, pct in PRODUCTS.values()) or 1.0
    products: list[ProductAssay] = []
    bleed: dict[str, float] = {}
    for product, (metal, theory_pct) in PRODUCTS.items():
        left = dict(liquors[product])
        if metal == "Li":
            left["Li"] = left.get("Li", 0.0) + recycled_in
        metal_g = made[metal] if metal == "Li" else left.get(metal, 0.0) * yields[metal]
        left[metal] = left.get(metal, 0.0) - metal_g
        if metal == "Li":  # what the bleed does not take goes back to the evaporator
            left["Li"] -= precip.recycled_g
        foreign = {
            el: left.get(el, 0.0) * k * yields[metal]
            for el, k in m.crystal_carry[product].items()
            if metal_g > 0
        }
        for el, g in foreign.items():
            left[el] -= g
            _add(in_products, el, g)
        if product == "NiSO4·6H2O":
            liquors["Li2CO3"] = left  # the Ni mother liquor carries the Li on
        else:
            for el, g in left.items():
                _add(bleed, el, g)
        if metal_g <= 0:
            continue
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
    for el, g in bleed.items():  # the mother liquors: Cu is cemented out, the rest bled
        won = g * m.cu_cementation if el == "Cu" else 0.0
        _add(cement, el, won)
        _add(raffinate, el, g - won)
    residues = {
        "foil concentrate": foils,
        "Cu cement": cement,
        "leach residue": leach_residue,
        "Fe/Al/P cake": cake,
        "raffinate": raffinate,
        "impurities in products": in_products,
    }
    if tank is not None:
        # What the hold-ups gained: the PLS tank, and the Li the recycled mother liquor holds.
        holdup["Li"] = holdup.get("Li", 0.0) + precip.recycled_g - recycled_in
        held[RECYCLED_LI] = precip.recycled_g
        residues["tank hold-up"] = {el: g for el, g in holdup.items() if abs(g) > 0}
    else:  # nowhere to keep a recycle: the whole mother liquor is bled
        _add(raffinate, "Li", precip.recycled_g)
    return CampaignResult(
        products=products,
        residues_g={k: {el: round(g, 3) for el, g in v.items()} for k, v in residues.items()},
        tank_g={el: round(g, 4) for el, g in held.items()},
        carbonation=precip,
    )


def solvent_extraction(
    solution: Mapping[str, float], sx_ph: Mapping[str, float], model: HydrometModel
) -> dict[str, dict[str, float]]:
    """The purified liquor through the D2EHPA then the Cyanex 272 circuit: each product's
    crystalliser feed (MnSO4 and CoSO4: the strip liquors; NiSO4: the Cyanex raffinate)."""
    out: dict[str, dict[str, float]] = {p: {} for p in ("MnSO4·H2O", "CoSO4·7H2O", "NiSO4·6H2O")}
    ph_mn = sx_ph.get(model.sx_mn.ph_tag, model.sx_mn.ph)
    ph_co = sx_ph.get(model.sx_co.ph_tag, model.sx_co.ph)
    for el, g in solution.items():
        to_mn = g * sx_to_strip(model.sx_mn, el, ph_mn)
        to_co = (g - to_mn) * sx_to_strip(model.sx_co, el, ph_co)
        out["MnSO4·H2O"][el] = to_mn
        out["CoSO4·7H2O"][el] = to_co
        out["NiSO4·6H2O"][el] = g - to_mn - to_co
    return out


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
class ControlLoop:
    """A control loop (a pH, the carbonation temperature, the bleed share) held at its setpoint
    with noise, a first-order pull-back with time constant `tau_s` and a drift."""

    setpoint: float
    noise: float
    drift_per_h: float = 0.0
    tau_s: float = 30.0
    value: float = field(init=False)
    _offset: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.value = self.setpoint

    def step(self, dt_s: float, rng: np.random.Generator) -> float:
        self._offset += self.drift_per_h * dt_s / 3600.0
        theta = min(1.0, dt_s / self.tau_s)
        self.value += theta * (self.setpoint + self._offset - self.value) + self.noise * math.sqrt(
            theta
        ) * float(rng.normal())
        return round(self.value, 3)


class ProcessSim:
    """The hydromet line's own loops (impurity removal and SX pH, carbonation), by historian tag.
    The leach's pH, temperature and ORP are the PLC's (drivers/sim/process.py): one writer per
    tag in the historian."""

    def __init__(self, loops: Mapping[str, ControlLoop], rng: np.random.Generator) -> None:
        self.loops = dict(loops)
        self.rng = rng

    def step(self, dt_s: float) -> dict[str, float]:
        """Advance dt_s seconds; return the tag values a PLC would show now."""
        return {tag: loop.step(dt_s, self.rng) for tag, loop in self.loops.items()}


class SimHydrometPlant:
    """The simulated hydromet plant as plant/hydromet.py's runner drives it: the control loops,
    campaigns through the hold-up tank and pellet assays, each seeded from `seed` (and the
    campaign or lot) so a run repeats exactly."""

    def __init__(
        self,
        seed: int,
        loops: Mapping[str, ControlLoop],
        model: HydrometModel | None = None,
        holdup_l: float = 0.0,
    ) -> None:
        """`loops`: control loops by tag (`purification.ph`, the SX circuits', the carbonation's);
        `holdup_l`: the pregnant-leach-solution tank's mixed volume (0: no tank)."""
        self.seed = seed
        self.model = model or HydrometModel()
        self.holdup_l = holdup_l
        self.process = ProcessSim(loops, np.random.default_rng([seed, 7]))

    def set_setpoint(self, tag: str, value: float) -> None:
        """The setpoint of the loop recorded as `tag` (KeyError for a loop it has not)."""
        self.process.loops[tag].setpoint = value

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
        *,
        sx_ph: Mapping[str, float],
        tank_g: Mapping[str, float] | None,
        carbonation: Mapping[str, float],
    ) -> CampaignResult:
        rng = np.random.default_rng([self.seed, number])
        c = Carbonation()
        carb = Carbonation(
            temp_c=carbonation.get("carbonation.temp_c", c.temp_c),
            bleed_pct=carbonation.get("carbonation.bleed_pct", c.bleed_pct),
            na2co3_excess_pct=carbonation.get("na2co3_excess_pct", c.na2co3_excess_pct),
            evaporation_factor=carbonation.get("evaporation_factor", c.evaporation_factor),
        )
        ref = LeachConditions()
        cond = LeachConditions(
            ph=leach.get("leach.ph", ref.ph),
            temp_c=leach.get("leach.temp_c", ref.temp_c),
            orp_mv=leach.get("leach.orp_mv", ref.orp_mv),
            solid_liquid_g_per_l=leach.get("solid_liquid_g_per_l", ref.solid_liquid_g_per_l),
            residence_min=leach.get("residence_min", ref.residence_min),
        )
        tank = Tank(self.holdup_l, tank_g or {})
        return run_campaign(
            feed_g, feed_mass_g, ph_mean, ph_sd, rng, self.model, cond, sx_ph=sx_ph, tank=tank,
            carbonation=carb,
        )  # fmt: skip

    def pellet_assay(
        self,
        lot_id: str,
        metals_g: Mapping[str, float],
        cell_mass_g: float,
        rel_unc: Mapping[str, float],
    ) -> PelletAssay:
        rng = np.random.default_rng([self.seed, 11, *lot_id.encode()])
        return pellet_assay(metals_g, cell_mass_g, rng, self.model, rel_unc)
