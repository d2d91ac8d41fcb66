"""Simulated XRF spectra of battery cells, computed from physics with xraylib.

The model, in the order a photon meets it (details and limits in docs/spectra.md):
1. Tube: Kramers bremsstrahlung of the anode plus its K and L lines, filtered by anode
   self-absorption and a 125 µm Be window.
2. Sample: a stack of layers (air, pouch laminate or steel can, electrode coating, foils ...).
   Primary fluorescence of every K and L line in a simple fundamental-parameters way
   (Beer-Lambert in and out at 45°/45°, xraylib cross sections with cascade), plus Rayleigh and
   Compton scatter of the whole tube spectrum at 90°; secondary fluorescence inside each layer
   (Ni K exciting Mn/Fe K, Co K exciting Mn K ...; Sherman / Shiraiwa-Fujino, depth-resolved).
3. Detector: Be window and Si absorption efficiency, Si escape peaks (Reed & Ware), an
   incomplete-charge shelf, Gaussian resolution with FWHM² = a + b·E (Fano), pile-up sum peaks
   growing with the count rate, gain drift and Poisson noise.
Everything that does not change per spectrum is computed once per (profile, sample) and cached,
so one spectrum costs a weighted sum of cached rows, a pile-up FFT and a Poisson draw.
"""

from __future__ import annotations

import argparse
import math
import zlib
from dataclasses import dataclass, replace
from functools import cache, cached_property, lru_cache
from itertools import permutations
from pathlib import Path

import numpy as np
import numpy.typing as npt
import xraylib as xrl
from scipy import sparse
from scipy.special import erf

from drivers.sim.cells import LI_ION, CellFormat, CellTruth
from drivers.sim.profiles import HELDOUT_PROFILES, PROFILES, TRAIN_PROFILES, InstrumentProfile
from drivers.spectra import Spectrum

__all__ = [
    "HELDOUT_PROFILES",
    "PROFILES",
    "TRAIN_PROFILES",
    "InstrumentProfile",
    "Presentation",
    "draw_presentation",
    "line_energy",
    "render_cell",
    "simulate_cell",
    "simulate_material",
    "warm",
]

Floats = npt.NDArray[np.float64]
Composition = tuple[tuple[int, float], ...]  # (Z, mass fraction), sorted by Z

# ----------------------------------------------------------------------------- geometry, grids
_SIN_IN = _SIN_OUT = math.sin(math.radians(45.0))  # incidence and take-off angles
_THETA = math.radians(90.0)  # scatter angle tube -> sample -> detector
_EXC_STEP = 0.1  # keV, excitation grid for the tube continuum
_EXC = np.arange(1.0, 60.0 + 1e-9, _EXC_STEP)
_FINE = 0.010  # keV, fine energy grid on which the detector response acts
_FANO_B = 2.3548**2 * 0.115 * 3.66e-3  # FWHM² slope in keV²/keV: Fano 0.115, 3.66 eV per pair
_MN_KA = 5.8988

# Detector make-up by type: Be window (g/cm²), Si thickness (g/cm²), pile-up resolving time and
# dead time per event (s), incomplete-charge shelf fraction (peak-to-background ~15000 / ~6000).
_DETECTORS = {
    "SDD": {
        "be": 12.5e-4 * 1.848,
        "si": 0.045 * 2.33,
        "pileup": 0.1e-6,
        "dead": 0.4e-6,
        "shelf": 0.003,
    },
    "SiPIN": {
        "be": 25e-4 * 1.848,
        "si": 0.05 * 2.33,
        "pileup": 0.8e-6,
        "dead": 3e-6,
        "shelf": 0.007,
    },
}
_TUBE_BE = 125e-4 * 1.848  # tube window, g/cm²
_DENSITY = {"Al": 2.70, "Ti": 4.51, "Cu": 8.96, "Ni": 8.90}  # primary filters, g/cm³
_ANODE_DEPTH = 1.0e-3  # effective anode self-absorption, g/cm² (shapes the low-energy continuum)
_K_LINES = (xrl.KL3_LINE, xrl.KL2_LINE, xrl.KM3_LINE, xrl.KM2_LINE, xrl.KN3_LINE)
_L_LINES = (
    xrl.L3M5_LINE,
    xrl.L3M4_LINE,
    xrl.L2M4_LINE,
    xrl.L3N5_LINE,
    xrl.L1M3_LINE,
    xrl.L1M2_LINE,
    xrl.L2N4_LINE,
    xrl.L3M1_LINE,
)
_MIN_LINE_KEV = 0.8  # lower lines do not survive air and windows


def line_energy(symbol: str, line: str = "KA1") -> float:
    """Line energy (keV) from xraylib, e.g. line_energy('Ni', 'KA1') -> 7.478."""
    codes = {
        "KA1": xrl.KL3_LINE,
        "KA2": xrl.KL2_LINE,
        "KB1": xrl.KM3_LINE,
        "LA1": xrl.L3M5_LINE,
        "LB1": xrl.L2M4_LINE,
    }
    return float(xrl.LineEnergy(xrl.SymbolToAtomicNumber(symbol), codes[line]))


# ----------------------------------------------------------------------------- compositions


def _compound(formula: str) -> dict[int, float]:
    """Mass fractions of a chemical formula (xraylib CompoundParser)."""
    parsed = xrl.CompoundParser(formula)
    return dict(zip(parsed["Elements"], parsed["massFractions"], strict=True))


def _mix(*parts: tuple[str | dict[int, float], float]) -> dict[int, float]:
    """Weighted mixture of formulas or compositions, normalised to 1."""
    total: dict[int, float] = {}
    weight_sum = sum(w for _, w in parts)
    for part, weight in parts:
        comp = _compound(part) if isinstance(part, str) else part
        for z, frac in comp.items():
            total[z] = total.get(z, 0.0) + frac * weight / weight_sum
    return total


def _freeze(comp: dict[int, float]) -> Composition:
    return tuple(sorted((z, round(f, 9)) for z, f in comp.items() if f > 0))


@dataclass(frozen=True)
class Layer:
    """One layer of the sample stack, top (towards tube and detector) first."""

    name: str
    composition: Composition
    areal_density: float  # g/cm²; math.inf = infinitely thick for every line


# Cathode active materials (docs/reference/xrf-and-process.md §2.1).
CATHODE_FORMULA: dict[str, str] = {
    "NMC111": "LiNi0.3333Mn0.3333Co0.3333O2",
    "NMC532": "LiNi0.5Mn0.3Co0.2O2",
    "NMC622": "LiNi0.6Mn0.2Co0.2O2",
    "NMC811": "LiNi0.8Mn0.1Co0.1O2",
    "NCA": "LiNi0.8Co0.15Al0.05O2",
    "LCO": "LiCoO2",
    "LMO": "LiMn2O4",
    "LFP": "LiFePO4",
}
# Electrode masses of the other cell types: NiMH AB5 alloy (A = La, Ce, Pr, Nd; B = Ni, Co, Mn,
# Al, reference §2.1) with the Ni(OH)2 cathode; NiCd; alkaline Zn/MnO2 with KOH electrolyte.
OTHER_ELECTRODES: dict[str, dict[int, float]] = {
    "NiMH": _mix(
        ("Ni(OH)2", 0.45),
        ("Co(OH)2", 0.03),
        ("La0.6Ce0.3Pr0.05Nd0.05Ni3.55Co0.75Mn0.4Al0.3", 0.42),
        ("KOH", 0.05),
        ("H2O", 0.05),
    ),
    "NiCd": _mix(("Ni(OH)2", 0.42), ("Cd(OH)2", 0.45), ("KOH", 0.05), ("H2O", 0.08)),
    "ZnMn": _mix(("MnO2", 0.42), ("Zn", 0.25), ("KOH", 0.06), ("C", 0.05), ("H2O", 0.22)),
}
CHEMISTRIES: tuple[str, ...] = (*CATHODE_FORMULA, *OTHER_ELECTRODES)

_AIR = {7: 0.7553, 8: 0.2318, 18: 0.0128}
_STEEL = _mix(("Fe", 99.3), ("Mn", 0.40), ("Cr", 0.08), ("C", 0.05), ("Cu", 0.05), ("Ni", 0.05))
_ANODE = _mix(("C", 0.96), ("C2H4", 0.04))  # graphite + binder


def _layer(name: str, comp: dict[int, float] | str, areal_density: float) -> Layer:
    return Layer(name, _freeze(_compound(comp) if isinstance(comp, str) else comp), areal_density)


@dataclass(frozen=True)
class MakeUp:
    """How one cell is built beyond its chemistry (wide training physics; `NOMINAL` is the
    plain cell): laminate, can and plating, binder, carbon, electrolyte, additives, dopants,
    and the spread of the electrode's metals around the nominal formula."""

    pet_um: float = 12.0
    laminate_al_um: float = 40.0
    pp_um: float = 80.0
    plating_um: float = 3.0  # Ni on the steel can
    steel_mm: float = 0.25
    steel_mn: float = 0.40  # wt% Mn of the can steel
    binder: float = 0.03  # PVDF share of the coating
    carbon: float = 0.025
    lipf6: float = 0.005  # electrolyte salt left in the coating (P, F)
    sulfur: float = 0.0  # electrolyte additives / sulfates (S)
    dopant_al: float = 0.0  # Al2O3 share of the active material
    dopant_ti: float = 0.0  # TiO2 share
    metal_spread: tuple[tuple[int, float], ...] = ()  # (Z, factor) on the electrode's metals
    coating_gcm2: float = 0.022  # cathode loading per side
    double_sided: bool = False  # a second cathode coating behind the Al collector


NOMINAL = MakeUp()


def make_up(profile: InstrumentProfile, chemistry: str, fmt: CellFormat, variant: int) -> MakeUp:
    """Make-up `variant` of a cell kind on a wide profile (0: nominal); deterministic."""
    if variant == 0:
        return NOMINAL
    kinds = sorted(CHEMISTRIES)
    rng = np.random.default_rng(
        [
            zlib.crc32(profile.name.encode()),
            kinds.index(chemistry),
            list(CellFormat).index(fmt),
            variant,
        ]
    )
    body = (
        _compound(CATHODE_FORMULA[chemistry])
        if chemistry in CATHODE_FORMULA
        else OTHER_ELECTRODES[chemistry]
    )
    # non-stoichiometric and off-grade cathodes (+-7 %), looser alloy / electrode recipes (+-12 %)
    sigma = 0.07 if chemistry in CATHODE_FORMULA else 0.12
    spread = tuple((z, float(rng.lognormal(0.0, sigma))) for z in sorted(body) if z >= 20)
    return MakeUp(
        pet_um=float(rng.uniform(8.0, 20.0)),
        laminate_al_um=float(rng.uniform(20.0, 50.0)),
        pp_um=float(rng.uniform(30.0, 100.0)),
        plating_um=float(rng.uniform(0.8, 5.0)),
        steel_mm=float(rng.uniform(0.18, 0.35)),
        steel_mn=float(rng.uniform(0.2, 0.9)),
        binder=float(rng.uniform(0.015, 0.05)),
        carbon=float(rng.uniform(0.01, 0.045)),
        lipf6=float(rng.uniform(0.001, 0.02)),
        sulfur=float(rng.uniform(0.0, 0.003)),
        dopant_al=float(rng.uniform(0.0, 0.02)) if chemistry in CATHODE_FORMULA else 0.0,
        dopant_ti=float(rng.uniform(0.0, 0.004)) if chemistry in CATHODE_FORMULA else 0.0,
        metal_spread=spread,
        coating_gcm2=float(rng.uniform(0.010, 0.045)),
        double_sided=bool(rng.random() < 0.5),
    )


def _spread(comp: dict[int, float], spread: tuple[tuple[int, float], ...]) -> dict[int, float]:
    """Metals scaled by the make-up's factors, renormalised."""
    if not spread:
        return comp
    factors = dict(spread)
    out = {z: f * factors.get(z, 1.0) for z, f in comp.items()}
    total = sum(out.values())
    return {z: f / total for z, f in out.items()}


def _coating(chemistry: str, second: str | None, mk: MakeUp = NOMINAL) -> dict[int, float]:
    """Cathode coating: 94 % active material, PVDF, carbon black, a little LiPF6 electrolyte."""
    active: dict[int, float] = _spread(_compound(CATHODE_FORMULA[chemistry]), mk.metal_spread)
    if second is not None:  # 70/30 mixture of two cathodes
        active = _mix((active, 0.7), (_compound(CATHODE_FORMULA[second]), 0.3))
    if mk.dopant_al or mk.dopant_ti:
        active = _mix(
            (active, 1.0 - mk.dopant_al - mk.dopant_ti),
            ("Al2O3", mk.dopant_al),
            ("TiO2", mk.dopant_ti),
        )
    if mk is NOMINAL:
        return _mix((active, 0.94), ("C2H2F2", 0.03), ("C", 0.025), ("LiPF6", 0.005))
    rest = mk.binder + mk.carbon + mk.lipf6 + mk.sulfur
    return _mix(
        (active, 1.0 - rest),
        ("C2H2F2", mk.binder),
        ("C", mk.carbon),
        ("LiPF6", mk.lipf6),
        ("Li2SO4", mk.sulfur),
    )


def _air(profile: InstrumentProfile) -> Layer:
    return _layer("air", _AIR, 1.2e-3 * profile.air_path_cm * _SIN_IN)


def _cell_stack(
    profile: InstrumentProfile,
    chemistry: str,
    second: str | None,
    fmt: CellFormat,
    mk: MakeUp = NOMINAL,
) -> tuple[tuple[Layer, ...], int]:
    """Layers the beam meets for a cell and how it is presented; also the index of the layer
    that carries surface/trace contamination."""
    if chemistry in OTHER_ELECTRODES:
        electrode = _spread(OTHER_ELECTRODES[chemistry], mk.metal_spread)
        interior: tuple[Layer, ...] = (_layer(chemistry, electrode, math.inf),)
    else:
        interior = (
            _layer("cathode coating", _coating(chemistry, second, mk), mk.coating_gcm2),
            _layer("Al current collector", "Al", 15e-4 * 2.70),
            *(
                (_layer("cathode coating", _coating(chemistry, second, mk), mk.coating_gcm2),)
                if mk.double_sided
                else ()
            ),
            _layer("separator", "C2H4", 20e-4 * 0.95),
            _layer("anode coating", _ANODE, 0.011),
            _layer("Cu current collector", "Cu", 10e-4 * 8.96),
            _layer("anode coating", _ANODE, math.inf),
        )
    if fmt is CellFormat.pouch:
        cover: tuple[Layer, ...] = (
            _layer("PET", "C10H8O4", mk.pet_um * 1e-4 * 1.39),
            _layer("laminate Al", "Al", mk.laminate_al_um * 1e-4 * 2.70),
            _layer("PP", "C3H6", mk.pp_um * 1e-4 * 0.90),
        )
    elif fmt is CellFormat.steel_can:
        # Ni-plated steel can, wall ~0.25 mm (reference §2.2).
        steel = _STEEL if mk is NOMINAL else _mix((_STEEL, 1.0), ("Mn", mk.steel_mn / 100))
        cover = (
            _layer("Ni plating", "Ni", mk.plating_um * 1e-4 * 8.9),
            _layer("steel can", steel, mk.steel_mm / 10 * 7.87),
        )
    else:
        cover = ()
    stack = (_air(profile), *cover, *interior)
    trace_at = len(cover) if fmt is CellFormat.steel_can else 1 + len(cover)
    return stack, trace_at


def _casing_stack(profile: InstrumentProfile) -> tuple[Layer, ...]:
    return (
        _air(profile),
        _layer("Ni plating", "Ni", 3e-4 * 8.9),
        _layer("steel", _STEEL, math.inf),
    )


def _foil_stack(profile: InstrumentProfile, metal: str) -> tuple[Layer, ...]:
    if metal == "Cu":
        return (_air(profile), _layer("Cu foil", "Cu", 10e-4 * 8.96), _layer("anode", _ANODE, 1.0))
    return (_air(profile), _layer("Al foil", "Al", 15e-4 * 2.70), _layer("separator", "C2H4", 1.0))


# ----------------------------------------------------------------------------- atomic data cache


@cache
def _mu_grid(z: int) -> Floats:
    return np.array([xrl.CS_Total(z, e) for e in _EXC])


@cache
def _mu_at(z: int, energy: float) -> float:
    return float(xrl.CS_Total(z, energy))


def _mu_comp(comp: Composition, energies: Floats) -> Floats:
    """Mass attenuation coefficient (cm²/g) of a composition at arbitrary energies.

    The two fixed grids come from per-element cached vectors: point by point, a stack's
    attenuation on them cost ~0.1 s per new composition and dominated the simulator's CPU."""
    if energies is _EXC:
        return _mu_comp_grid(comp)
    if energies is _COMPTON_EXC:
        return _mu_comp_grid_at(comp)
    return np.array([sum(f * _mu_at(z, float(e)) for z, f in comp) for e in energies])


def _mu_comp_grid(comp: Composition) -> Floats:
    return sum((f * _mu_grid(z) for z, f in comp), start=np.zeros_like(_EXC))


@cache
def _lines(z: int) -> tuple[tuple[int, float], ...]:
    """(xraylib line code, energy keV) of the K and L lines of an element that reach a detector."""
    out = []
    for line in (*_K_LINES, *_L_LINES):
        try:
            energy = xrl.LineEnergy(z, line)
            if energy >= _MIN_LINE_KEV and xrl.RadRate(z, line) > 0:
                out.append((line, float(energy)))
        except ValueError:
            continue
    return tuple(out)


def _safe(fn: object, *args: float) -> float:
    try:
        return float(fn(*args))  # type: ignore[operator]
    except ValueError:  # below the edge, or no data: no emission
        return 0.0


@cache
def _tau_grid(z: int, line: int) -> Floats:
    """Fluorescence production cross section of a line (cm²/g, with cascade) on the grid."""
    return np.array([_safe(xrl.CS_FluorLine_Kissel_Cascade, z, line, e) for e in _EXC])


@cache
def _tau_at(z: int, line: int, energy: float) -> float:
    return _safe(xrl.CS_FluorLine_Kissel_Cascade, z, line, energy)


@cache
def _scatter_grid(z: int) -> tuple[Floats, Floats]:
    """Rayleigh and Compton differential cross sections (cm²/g/sr) at 90° on the grid."""
    ray = np.array([xrl.DCS_Rayl(z, e, _THETA) for e in _EXC])
    com = np.array([xrl.DCS_Compt(z, e, _THETA) for e in _EXC])
    return ray, com


_COMPTON_EXC = np.array([xrl.ComptonEnergy(e, _THETA) for e in _EXC])


# ----------------------------------------------------------------------------- tube


@dataclass(frozen=True)
class TubeMakeUp:
    """What shapes a tube's output beyond anode and voltage: anode self-absorption depth
    (g/cm²), the lines' strength against the continuum, a primary-beam filter (element, g/cm²)."""

    anode_depth: float = _ANODE_DEPTH
    line_scale: float = 1.0
    filter: str = "Al"
    filter_gcm2: float = 0.0


@dataclass(frozen=True)
class _Tube:
    continuum: Floats  # photons per grid bin (arbitrary units), on _EXC
    lines: tuple[tuple[float, float], ...]  # (energy keV, photons)


@cache
def _tube(kv: float, anode: str, make: TubeMakeUp | None = None) -> _Tube:
    """Tube output: Kramers continuum Z(E0-E)/E and the anode's K/L lines (Green-Cosslett
    (U0-1)^1.67), both through anode self-absorption, the Be window and a primary filter."""
    make = make or TubeMakeUp()
    z = xrl.SymbolToAtomicNumber(anode)
    mu_anode = _mu_grid(z)
    mu_be = _mu_grid(4)
    cont = np.clip(z * (kv - _EXC) / _EXC, 0.0, None) * _EXC_STEP
    cont *= np.exp(-mu_anode * make.anode_depth - mu_be * _TUBE_BE)
    mu_filter = _mu_grid(xrl.SymbolToAtomicNumber(make.filter)) if make.filter_gcm2 else None
    if mu_filter is not None:
        cont *= np.exp(-mu_filter * make.filter_gcm2)
    lines: list[tuple[float, float]] = []
    for shell, lines_of_shell, scale in (
        (xrl.K_SHELL, _K_LINES, 800.0),
        (xrl.L3_SHELL, (xrl.L3M5_LINE, xrl.L3M4_LINE, xrl.L3N5_LINE, xrl.L3M1_LINE), 200.0),
    ):
        u0 = kv / xrl.EdgeEnergy(z, shell)
        if u0 <= 1.0:
            continue
        ionisations = scale * make.line_scale * (u0 - 1.0) ** 1.67
        for line in lines_of_shell:
            energy = float(xrl.LineEnergy(z, line))
            photons = ionisations * xrl.FluorYield(z, shell) * xrl.RadRate(z, line)
            filt = math.exp(-_mu_at(z, energy) * make.anode_depth - _mu_at(4, energy) * _TUBE_BE)
            if mu_filter is not None:
                filt *= math.exp(
                    -_mu_at(xrl.SymbolToAtomicNumber(make.filter), energy) * make.filter_gcm2
                )
            lines.append((energy, photons * filt))
    return _Tube(cont, tuple(lines))


# ----------------------------------------------------------------------------- sample emission


@dataclass
class _Emission:
    """What leaves the sample towards the detector, per row (element / scatter / trace)."""

    lines: dict[str, list[tuple[float, float, float]]]  # row -> (keV, photons, extra sigma keV)
    continuum: dict[str, list[tuple[Floats, Floats]]]  # row -> (keV points, photons per keV)


def _emission(
    stack: tuple[Layer, ...],
    trace_at: int | None,
    traces: tuple[int, ...],
    kv: float,
    anode: str,
    doppler: float = 0.011,
    tube_make: TubeMakeUp | None = None,
) -> _Emission:
    """Primary fluorescence and scatter of a layer stack, Beer-Lambert in and out."""
    tube = _tube(kv, anode, tube_make)
    line_e = np.array([e for e, _ in tube.lines])
    line_w = np.array([w for _, w in tube.lines])
    out = _Emission({}, {})
    # attenuation (as exponent) accumulated above the current layer, incoming side
    above_cont = np.zeros_like(_EXC)
    above_line = np.zeros_like(line_e)
    above_out: list[tuple[Composition, float]] = []

    def exit_exponent(energies: Floats) -> Floats:
        total = np.zeros_like(energies)
        for comp, t in above_out:
            total += _mu_comp(comp, energies) * t / _SIN_OUT
        return total

    for index, layer in enumerate(stack):
        comp = layer.composition
        t = layer.areal_density
        mu_c = _mu_comp_grid(comp)
        mu_l = _mu_comp(comp, line_e)
        inc_c = tube.continuum * np.exp(-above_cont)
        inc_l = line_w * np.exp(-above_line)
        emitters = [(z, f, z) for z, f in comp]
        if index == trace_at:
            emitters += [(z, 0.01, -z) for z in traces]  # virtual 1 wt%, matrix unchanged
        for z, frac, row_z in emitters:
            for line, energy in _lines(z):
                mu_out = float(_mu_comp(comp, np.array([energy]))[0])
                chi_c = mu_c / _SIN_IN + mu_out / _SIN_OUT
                chi_l = mu_l / _SIN_IN + mu_out / _SIN_OUT
                slab_c = _slab(chi_c, t)
                slab_l = _slab(chi_l, t)
                tau_l = np.array([_tau_at(z, line, float(e)) for e in line_e])
                photons = (
                    float(
                        np.sum(inc_c * _tau_grid(z, line) * slab_c) + np.sum(inc_l * tau_l * slab_l)
                    )
                    * frac
                    / (4 * math.pi * _SIN_IN)
                )
                if photons <= 0:
                    continue
                photons *= math.exp(-float(exit_exponent(np.array([energy]))[0]))
                name = (
                    xrl.AtomicNumberToSymbol(z)
                    if row_z > 0
                    else f"trace:{xrl.AtomicNumberToSymbol(z)}"
                )
                out.lines.setdefault(name, []).append((energy, photons, 0.0))
        _secondary(out, comp, t, inc_c, inc_l, line_e, mu_c, mu_l, emitters, exit_exponent)
        _scatter(out, comp, t, inc_c, inc_l, line_e, mu_c, mu_l, exit_exponent, doppler)
        if math.isinf(t):
            break
        above_cont = above_cont + mu_c * t / _SIN_IN
        above_line = above_line + mu_l * t / _SIN_IN
        above_out.append((comp, t))
    return out


# Gauss-Legendre nodes on (0, 1) for the direction cosine of secondary-fluorescence paths.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_GL_U = 0.5 * (_GL_X + 1.0)
_GL_UW = 0.5 * _GL_W / _GL_U  # weight/u: the 1/u of the path length


def _sf_kernel(mu0: Floats, mu2: Floats, mu_i: Floats, t: float) -> Floats:
    """Depth-and-direction integral of secondary fluorescence in one layer (g/cm², per unit
    production), shape (pairs, len(mu0)), for incident attenuations mu0 (= mu(E0)/sin in), and
    per (exciting line, receiver line) pair the receiver line's exit attenuation mu2
    (= mu(Ej)/sin out) and the exciting line's attenuation mu_i = mu(Ei):

        G = 1/2 ∫0^t∫0^t exp(-mu0 z) E1(mu_i |z - z'|) exp(-mu2 z') dz dz'

    written as E1(x) = ∫0^1 exp(-x/u) du/u and integrated in closed form over both depths for
    each direction cosine u (Gauss-Legendre in u). For an infinitely thick layer it is
    Sherman's / Shiraiwa & Fujino's [ln(1 + mu0/mu_i)/mu0 + ln(1 + mu2/mu_i)/mu2] / (2(mu0 + mu2)).
    """
    m0 = mu0[None, :, None]
    m2 = mu2[:, None, None]
    b = mu_i[:, None, None] / _GL_U[None, None, :]  # attenuation per depth along direction u
    if math.isinf(t):
        total = (1.0 / (m0 + m2)) * (1.0 / (b + m2) + 1.0 / (b + m0))
    else:
        tiny = 1e-7 * (b + m0 + m2)
        # downward (z' > z): [slab(m0 + mu2) - (e^-(m0+mu2)t - e^-(b+mu2)t) / (b - m0)] / (b + mu2)
        d0 = b - m0
        d0 = np.where(np.abs(d0) < tiny, tiny, d0)
        s02 = _slab(m0 + m2, t)
        down = (s02 - (np.exp(-(m0 + m2) * t) - np.exp(-(m0 + d0 + m2) * t)) / d0) / (b + m2)
        # upward (z' < z): [slab(m0 + mu2) - slab(m0 + b)] / (b - mu2)
        d2 = b - m2
        d2 = np.where(np.abs(d2) < tiny, tiny, d2)
        up = (s02 - _slab(m0 + m2 + d2, t)) / d2
        total = down + up
    return np.asarray(0.5 * (total * _GL_UW).sum(axis=2), dtype=np.float64)


_SF_NODES = 32  # log-spaced incident attenuations on which the kernel is evaluated per layer
_SF_PRUNE = 1e-5  # pairs estimated below this share of the strongest are left out


def _secondary(
    out: _Emission,
    comp: Composition,
    t: float,
    inc_c: Floats,
    inc_l: Floats,
    line_e: Floats,
    mu_c: Floats,
    mu_l: Floats,
    emitters: list[tuple[int, float, int]],
    exit_exponent: object,
) -> None:
    """Secondary fluorescence inside one layer: every line of the layer's elements (Ni K, Co K,
    Fe K ...) that a receiver element of the same layer absorbs above one of its edges excites
    that receiver's lines (Ni K -> Mn/Fe K, Ni Kβ and Co K -> Mn K, Mn K -> Cr/Ti K ...).
    Sherman (1955), Shiraiwa & Fujino (1966) in the depth-resolved form of de Boer (1990);
    tertiary fluorescence and secondary across layers are left out (docs/spectra.md).
    The kernel is smooth in the incident attenuation, so it is computed on _SF_NODES log-spaced
    values and interpolated (in log-log) to the excitation grid: all pairs in one array."""
    mu0 = np.concatenate([mu_c, mu_l]) / _SIN_IN
    incoming = np.concatenate([inc_c, inc_l])
    exc_e: list[float] = []
    exc_w: list[Floats] = []  # photons produced per unit depth, per incident energy
    for z, frac in comp:
        for line, energy in _lines(z):
            prod = np.concatenate(
                [_tau_grid(z, line), [_tau_at(z, line, float(e)) for e in line_e]]
            )
            weighted = incoming * prod * frac
            if weighted.sum() > 0:
                exc_e.append(energy)
                exc_w.append(weighted)
    if not exc_e:
        return
    mu_exc = _mu_comp(comp, np.array(exc_e))
    pairs: list[tuple[str, float, int, float]] = []  # (row, Ej, exciter index, frac_j·tau_j(Ei))
    for z, frac, row_z in emitters:
        symbol = xrl.AtomicNumberToSymbol(z)
        name = symbol if row_z > 0 else f"trace:{symbol}"
        for line, energy in _lines(z):
            for k, e_i in enumerate(exc_e):
                tau_j = _tau_at(z, line, e_i)
                if tau_j > 0:
                    pairs.append((name, energy, k, frac * tau_j))
    if not pairs:
        return
    k_i = np.array([p[2] for p in pairs])
    coef = np.array([p[3] for p in pairs])
    # Pairs whose thick-layer estimate is under 1e-5 of the strongest are dropped (Cu K -> Cu L,
    # weak L lines -> traces ...): they cost most of the time and change no spectrum.
    estimate = coef * np.array([float((w / mu0).sum()) for w in exc_w])[k_i] / mu_exc[k_i]
    keep = np.flatnonzero(estimate >= _SF_PRUNE * estimate.max())
    pairs = [pairs[i] for i in keep]
    k_i, coef = k_i[keep], coef[keep]
    e_unique, at = np.unique(np.array([p[1] for p in pairs]), return_inverse=True)
    mu2 = (_mu_comp(comp, e_unique) / _SIN_OUT)[at]
    live = np.flatnonzero(np.max(exc_w, axis=0) > 0)  # incident energies that excite anything
    mu0 = mu0[live]
    lo, hi = float(mu0.min()), float(mu0.max())
    nodes = np.geomspace(lo, hi * 1.0001, _SF_NODES)
    log_g = np.log(_sf_kernel(nodes, mu2, mu_exc[k_i], t))
    pos = np.interp(np.log(mu0), np.log(nodes), np.arange(_SF_NODES))
    idx = np.minimum(pos.astype(int), _SF_NODES - 2)
    w = pos - idx
    kernel = np.exp(log_g[:, idx] * (1 - w) + log_g[:, idx + 1] * w)  # (pairs, incident energies)
    weights = np.array(exc_w)[:, live][k_i]
    photons = coef * np.einsum("pe,pe->p", kernel, weights) / (4 * math.pi * _SIN_IN)
    photons *= np.exp(-exit_exponent(e_unique))[at]  # type: ignore[operator]
    totals: dict[tuple[str, float], float] = {}
    for (name, energy, _k, _c), value in zip(pairs, photons, strict=True):
        totals[(name, energy)] = totals.get((name, energy), 0.0) + float(value)
    for (name, energy), value in totals.items():
        if value > 0:
            out.lines.setdefault(name, []).append((energy, value, 0.0))


def _slab(chi: Floats, t: float) -> Floats:
    """Depth integral of exp(-chi m) dm over a layer of mass thickness t (g/cm²)."""
    if math.isinf(t):
        return 1.0 / chi
    return -np.expm1(-chi * t) / chi


def _scatter(
    out: _Emission,
    comp: Composition,
    t: float,
    inc_c: Floats,
    inc_l: Floats,
    line_e: Floats,
    mu_c: Floats,
    mu_l: Floats,
    exit_exponent: object,
    doppler: float,
) -> None:
    """Rayleigh and Compton scatter of the tube continuum and lines by one layer."""
    ray = sum((f * _scatter_grid(z)[0] for z, f in comp), start=np.zeros_like(_EXC))
    com = sum((f * _scatter_grid(z)[1] for z, f in comp), start=np.zeros_like(_EXC))
    mu_compton = _mu_comp_grid_at(comp)
    exit_fn = exit_exponent  # accumulated attenuation above this layer
    ray_photons = inc_c * ray * _slab(mu_c / _SIN_IN + mu_c / _SIN_OUT, t) / _SIN_IN
    ray_photons *= np.exp(-exit_fn(_EXC))  # type: ignore[operator]
    com_photons = inc_c * com * _slab(mu_c / _SIN_IN + mu_compton / _SIN_OUT, t) / _SIN_IN
    com_photons *= np.exp(-exit_fn(_COMPTON_EXC))  # type: ignore[operator]
    jac = np.gradient(_COMPTON_EXC) / _EXC_STEP
    cont = out.continuum.setdefault("scatter", [])
    cont.append((_EXC, ray_photons / _EXC_STEP))
    cont.append((_COMPTON_EXC, com_photons / _EXC_STEP / jac))
    lines = out.lines.setdefault("scatter", [])
    for energy, incoming, mu_in in zip(line_e, inc_l, mu_l, strict=True):
        e = float(energy)
        e_c = float(xrl.ComptonEnergy(e, _THETA))
        mu_ec = float(_mu_comp(comp, np.array([e_c]))[0])
        ray_l = sum(f * xrl.DCS_Rayl(z, e, _THETA) for z, f in comp)
        com_l = sum(f * xrl.DCS_Compt(z, e, _THETA) for z, f in comp)
        slab_r = float(_slab(np.array([mu_in / _SIN_IN + mu_in / _SIN_OUT]), t)[0])
        slab_c = float(_slab(np.array([mu_in / _SIN_IN + mu_ec / _SIN_OUT]), t)[0])
        exit_r = math.exp(-float(exit_fn(np.array([e]))[0]))  # type: ignore[operator]
        exit_c = math.exp(-float(exit_fn(np.array([e_c]))[0]))  # type: ignore[operator]
        lines.append((e, incoming * ray_l * slab_r / _SIN_IN * exit_r, 0.0))
        # Compton peaks are Doppler-broadened by the electrons' momenta (~2.5 % FWHM).
        lines.append((e_c, incoming * com_l * slab_c / _SIN_IN * exit_c, doppler * e_c))


@cache
def _mu_compton_grid(z: int) -> Floats:
    return np.array([xrl.CS_Total(z, e) for e in _COMPTON_EXC])


@lru_cache(maxsize=64)
def _mu_comp_grid_at(comp: Composition) -> Floats:
    """Attenuation of a composition at the Compton-shifted grid energies."""
    return sum((f * _mu_compton_grid(z) for z, f in comp), start=np.zeros_like(_EXC))


# ----------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class _Detector:
    fine: Floats  # fine-grid bin centres, keV
    efficiency: Floats
    escape: Floats  # Si escape probability per fine bin
    escape_shift: int  # Si Kα in fine bins
    shelf: float
    response: sparse.csr_matrix  # fine bins -> channels (Gaussian, channel-integrated)


def _sigma_kev(profile: InstrumentProfile, energy: Floats) -> Floats:
    """Gaussian sigma from FWHM² = a + b·E, with a fixed by the profile's FWHM at Mn Kα."""
    a = (profile.fwhm_mn_ka_ev / 1000.0) ** 2 - _FANO_B * _MN_KA
    return np.sqrt(a + _FANO_B * np.clip(energy, 0.0, None)) / 2.3548


def _detector_make_up(profile: InstrumentProfile) -> dict[str, float]:
    """The detector type's make-up with the profile's own window, pile-up and shelf."""
    det = dict(_DETECTORS[profile.detector])
    if profile.window_um:
        det["be"] = profile.window_um * 1e-4 * 1.848
    if profile.pileup_s:
        det["pileup"] = profile.pileup_s
    if profile.shelf:
        det["shelf"] = profile.shelf
    return det


@cache
def _detector(profile: InstrumentProfile) -> _Detector:
    det = _detector_make_up(profile)
    top = max(profile.tube_kv, profile.max_kev) + 1.0
    fine = np.asarray((np.arange(int(top / _FINE)) + 0.5) * _FINE, dtype=np.float64)
    safe = np.maximum(fine, 0.2)  # xraylib has no data below ~0.1 keV; nothing gets there
    mu_be = np.array([xrl.CS_Total(4, e) for e in safe])
    mu_si_photo = np.array([xrl.CS_Photo(14, e) for e in safe])
    mu_si = np.array([xrl.CS_Total(14, e) for e in safe])
    efficiency = np.asarray(
        np.exp(-mu_be * det["be"]) * -np.expm1(-mu_si_photo * det["si"]), dtype=np.float64
    )
    # Si escape probability, Reed & Ware (1972), normal incidence.
    si_ka = float(xrl.LineEnergy(14, xrl.KL3_LINE))
    mu_k = float(xrl.CS_Total(14, si_ka))
    omega = xrl.FluorYield(14, xrl.K_SHELL)
    jump = xrl.JumpFactor(14, xrl.K_SHELL)
    ratio = mu_si / mu_k
    escape = 0.5 * omega * (1 - 1 / jump) * (1 - np.log1p(ratio) / ratio)
    escape[fine < xrl.EdgeEnergy(14, xrl.K_SHELL)] = 0.0
    sigma = _sigma_kev(profile, fine)
    width = math.ceil(5 * float(sigma.max()) / profile.kev_per_channel) + 1
    centre = np.rint((fine - profile.offset_kev) / profile.kev_per_channel).astype(int)
    ch = centre[:, None] + np.arange(-width, width + 1)[None, :]
    lo = profile.offset_kev + profile.kev_per_channel * (ch - 0.5)
    hi = lo + profile.kev_per_channel
    s = np.sqrt(2.0) * sigma[:, None]
    weight = 0.5 * (erf((hi - fine[:, None]) / s) - erf((lo - fine[:, None]) / s))
    rows = np.broadcast_to(np.arange(fine.size)[:, None], ch.shape)
    keep = (ch >= 0) & (ch < profile.n_channels) & (weight > 1e-12)
    response = sparse.csr_matrix(
        (weight[keep], (ch[keep], rows[keep])), shape=(profile.n_channels, fine.size)
    )
    return _Detector(fine, efficiency, escape, round(si_ka / _FINE), det["shelf"], response)


def _detect(profile: InstrumentProfile, emission: _Emission, row: str) -> Floats:
    """Counts per channel (arbitrary units) that one emission row produces in the detector."""
    det = _detector(profile)
    fine = det.fine
    hist = np.zeros_like(fine)
    for energy, photons, extra_sigma in emission.lines.get(row, []):
        if extra_sigma > 0:  # Doppler-broadened (Compton) line
            g = np.exp(-0.5 * ((fine - energy) / extra_sigma) ** 2)
            hist += photons * g / g.sum()
            continue
        pos = energy / _FINE - 0.5
        i = math.floor(pos)
        if 0 <= i < fine.size - 1:
            frac = pos - i
            hist[i] += photons * (1 - frac)
            hist[i + 1] += photons * frac
    for energies, density in emission.continuum.get(row, []):
        order = np.argsort(energies)
        hist += np.interp(fine, energies[order], density[order], left=0.0, right=0.0) * _FINE
    hist *= det.efficiency
    escaped = hist * det.escape
    hist -= escaped
    hist[: -det.escape_shift] += escaped[det.escape_shift :]
    # Incomplete charge collection: a flat shelf from each peak down to zero energy.
    shelf = det.shelf * hist
    hist -= shelf
    hist += np.cumsum((shelf / fine)[::-1])[::-1] * _FINE
    return np.asarray(det.response @ hist)


# ----------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class _Template:
    """Cached expected count rates per channel (counts/s) for one sample on one profile."""

    names: tuple[str, ...]
    rows: Floats  # (n_rows, n_channels)

    @cached_property
    def total(self) -> Floats:
        return self.rows[[not n.startswith("trace:") for n in self.names]].sum(axis=0)


TRACE_ELEMENTS: tuple[str, ...] = ("Ti", "Cr", "Fe", "Cu", "Zn", "Br", "Sn", "Pb", "Ca")
_TRACE_Z = tuple(xrl.SymbolToAtomicNumber(s) for s in TRACE_ELEMENTS)


def _build(
    profile: InstrumentProfile, stack: tuple[Layer, ...], trace_at: int | None, scale: float
) -> _Template:
    emission = _emission(
        stack,
        trace_at,
        _TRACE_Z if trace_at else (),
        profile.tube_kv,
        profile.anode,
        profile.compton_doppler,
        TubeMakeUp(
            profile.anode_depth or _ANODE_DEPTH,
            profile.tube_line_scale,
            profile.tube_filter,
            profile.tube_filter_um * 1e-4 * _DENSITY.get(profile.tube_filter, 2.7),
        ),
    )
    names = tuple(sorted(set(emission.lines) | set(emission.continuum)))
    rows = np.array([_detect(profile, emission, n) for n in names]) * scale
    return _Template(names, rows)


@cache
def _rate_scale(profile: InstrumentProfile) -> float:
    """Counts/s per arbitrary unit: an opened NMC622 cell gives the profile's count rate."""
    stack, _trace_at = _cell_stack(profile, "NMC622", None, CellFormat.opened)
    raw = _build(profile, stack, None, 1.0)
    return profile.count_rate_cps / float(raw.total.sum())


@lru_cache(maxsize=8192)
def _cell_template(
    profile: InstrumentProfile,
    chemistry: str,
    second: str | None,
    fmt: CellFormat,
    variant: int,
) -> _Template:
    """A cell's cached template; every caller passes all five arguments positionally (the
    cache keys `f(a, b)` and `f(a, b, 0)` apart, so a default would make `warm` miss)."""
    mk = make_up(profile, chemistry, fmt, variant)
    stack, trace_at = _cell_stack(profile, chemistry, second, fmt, mk)
    return _build(profile, stack, trace_at, _rate_scale(profile))


@cache
def _part_template(profile: InstrumentProfile, part: str) -> _Template:
    stacks = {
        "casing": _casing_stack(profile),
        "cu_foil": _foil_stack(profile, "Cu"),
        "al_foil": _foil_stack(profile, "Al"),
    }
    return _build(profile, stacks[part], None, _rate_scale(profile))


@lru_cache(maxsize=256)
def _material_template(profile: InstrumentProfile, comp: Composition) -> _Template:
    stack = (_air(profile), Layer("pellet", comp, math.inf))
    return _build(profile, stack, None, _rate_scale(profile))


def warm(profiles: tuple[str, ...] | None = None, *, mixtures: bool = False) -> None:
    """Precompute the cached templates of all single-chemistry cells (about 2 s per profile)
    and, with `mixtures`, of every 70/30 Li-ion mixture too (about 5 s more): a cold template
    costs its first cell ~0.05 s, a hiccup no real head has."""
    for name in profiles or tuple(PROFILES):
        profile = PROFILES[name]
        for chem in CHEMISTRIES:
            for fmt in CellFormat:
                _cell_template(profile, chem, None, fmt, 0)
        for part in ("casing", "cu_foil", "al_foil"):
            _part_template(profile, part)
        if mixtures:
            for chem, second in permutations(sorted(LI_ION), 2):
                for fmt in (CellFormat.pouch, CellFormat.opened):
                    _cell_template(profile, chem, second, fmt, 0)


# ----------------------------------------------------------------------------- per spectrum


@dataclass(frozen=True)
class Presentation:
    """How one cell sits under the head this time (random per measurement, not in the truth)."""

    casing_fraction: float  # share of the beam spot on the casing (opened cells)
    intensity: float  # distance / geometry factor on all counts
    traces: tuple[tuple[str, float], ...]  # contamination: (element, wt%)
    gain_error: float  # relative error of the true gain against the file's calibration
    stoichiometry_sigma: float = 0.03  # element-to-element spread of the body's line intensities
    variant: int = 0  # the cell's make-up on a wide profile (make_up; 0 = nominal)
    foil_scale: float = 1.0  # how much of the cell's bare Cu / Al foil the spot takes


def draw_presentation(
    truth: CellTruth, profile: InstrumentProfile, rng: np.random.Generator
) -> Presentation:
    """Draw the random presentation of a cell: casing share, distance, contamination, drift."""
    casing = float(rng.uniform(0.0, 0.4)) if truth.format is CellFormat.opened else 0.0
    intensity = float(rng.lognormal(0.0, 0.1))
    traces: list[tuple[str, float]] = []
    if rng.random() < 0.3:
        for i in rng.choice(len(TRACE_ELEMENTS), size=int(rng.integers(1, 3)), replace=False):
            traces.append((TRACE_ELEMENTS[int(i)], float(10 ** rng.uniform(-2.3, -0.5))))
    gain = float(rng.uniform(-profile.gain_drift, profile.gain_drift))
    if profile.variants > 1:  # wide training physics: make-up and composition spread
        variant = int(rng.integers(profile.variants))
        sigma = float(rng.uniform(0.02, 0.08))
        foils = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.0, 1.0))
        return Presentation(casing, intensity, tuple(traces), gain, sigma, variant, foils)
    return Presentation(casing, intensity, tuple(traces), gain)


@lru_cache(maxsize=4096)
def _sensitivity(profile: InstrumentProfile, element: str) -> float:
    """The profile's systematic factor on a transition metal's lines (sensitivity_spread)."""
    z = xrl.SymbolToAtomicNumber(element)
    if not profile.sensitivity_spread or not 22 <= z <= 30:
        return 1.0
    rng = np.random.default_rng([zlib.crc32(profile.name.encode()), z])
    return float(rng.lognormal(0.0, profile.sensitivity_spread))


def render_cell(
    truth: CellTruth,
    presentation: Presentation,
    profile: InstrumentProfile,
    live_time_s: float,
    rng: np.random.Generator,
) -> Spectrum:
    """The spectrum of a cell in a given presentation (use simulate_cell to draw one)."""
    body = _cell_template(
        profile, truth.chemistry, truth.second_chemistry, truth.format, presentation.variant
    )
    weights = np.zeros(len(body.names))
    traces = dict(presentation.traces)
    for i, name in enumerate(body.names):
        if name.startswith("trace:"):
            weights[i] = traces.get(name.removeprefix("trace:"), 0.0)
        elif name == "scatter":
            weights[i] = profile.scatter_scale
        else:
            weights[i] = rng.lognormal(0.0, presentation.stoichiometry_sigma)
            weights[i] *= _sensitivity(profile, name)
    f_case = presentation.casing_fraction
    f_cu, f_al = truth.cu_foil * presentation.foil_scale, truth.al_foil * presentation.foil_scale
    f_body = max(0.0, 1.0 - f_case - f_cu - f_al)
    rate = f_body * (weights @ body.rows)
    for part, frac in (("casing", f_case), ("cu_foil", f_cu), ("al_foil", f_al)):
        if frac > 0:
            rate += frac * _part_template(profile, part).total
    source = f"sim:{profile.name}:seq{truth.seq}"
    return _acquire(
        profile, rate * presentation.intensity, live_time_s, presentation.gain_error, rng, source
    )


def simulate_cell(
    truth: CellTruth, profile: InstrumentProfile, live_time_s: float, rng: np.random.Generator
) -> Spectrum:
    """One measured XRF spectrum of a simulated cell on an instrument profile."""
    return render_cell(truth, draw_presentation(truth, profile, rng), profile, live_time_s, rng)


def simulate_material(
    wt_pct: dict[str, float],
    profile: InstrumentProfile,
    live_time_s: float,
    rng: np.random.Generator,
    *,
    source: str,
) -> Spectrum:
    """Spectrum of a homogeneous thick sample (e.g. a pressed black-mass pellet) given in wt%;
    what is missing to 100 % is taken as light matrix (half C, half O)."""
    comp: dict[int, float] = {}
    for symbol, pct in wt_pct.items():
        try:
            z = xrl.SymbolToAtomicNumber(symbol)
        except ValueError:
            z = 0
        if z <= 0 or not math.isfinite(pct) or pct < 0:
            raise ValueError(f"{source}: bad element or wt% {symbol!r}: {pct}")
        comp[z] = comp.get(z, 0.0) + pct / 100.0
    total = sum(comp.values())
    if total > 1.005:
        raise ValueError(f"{source}: element wt% add up to {100 * total:.1f} % (> 100 %)")
    balance = max(0.0, 1.0 - total)
    comp[6] = comp.get(6, 0.0) + balance / 2
    comp[8] = comp.get(8, 0.0) + balance / 2
    template = _material_template(profile, _freeze(comp))
    gain = float(rng.uniform(-profile.gain_drift, profile.gain_drift))
    return _acquire(profile, template.total, live_time_s, gain, rng, source)


def _acquire(
    profile: InstrumentProfile,
    rate: Floats,
    live_time_s: float,
    gain_error: float,
    rng: np.random.Generator,
    source: str,
) -> Spectrum:
    """Pile-up, gain drift and Poisson noise on an expected count rate per channel."""
    if not (math.isfinite(live_time_s) and live_time_s > 0):
        raise ValueError(f"{source}: live time must be > 0 s, got {live_time_s}")
    det = _detector_make_up(profile)
    input_rate = float(rate.sum())
    expected = rate * live_time_s
    n = expected.size
    p_pile = min(0.5, input_rate * det["pileup"])
    if p_pile > 0:
        size = 1 << (2 * n - 1).bit_length()
        spec = np.fft.rfft(rate / input_rate, size)
        pair = np.fft.irfft(spec * spec, size)[: 2 * n]
        # sum energy 2·offset + gain·k lands in channel k + offset/gain
        shift = profile.offset_kev / profile.kev_per_channel
        summed = np.interp(np.arange(n) - shift, np.arange(2 * n), pair, left=0.0, right=0.0)
        total = float(expected.sum())
        expected = expected * (1 - p_pile) + 0.5 * p_pile * total * np.clip(summed, 0.0, None)
    if gain_error:
        # A true gain (1+g)·nominal puts energy E at channel (E-offset)/(gain·(1+g)).
        ch = np.arange(n) * (1.0 + gain_error)
        expected = np.interp(ch, np.arange(n), expected, right=0.0) * (1.0 + gain_error)
    counts = rng.poisson(expected).astype(np.float64)
    return Spectrum(
        counts=counts,
        offset_kev=profile.offset_kev,
        kev_per_channel=profile.kev_per_channel,
        live_time_s=float(live_time_s),
        real_time_s=float(live_time_s * (1.0 + input_rate * det["dead"])),
        tube_kv=profile.tube_kv,
        source=source,
        metadata={"instrument": profile.name, "detector": profile.detector, "anode": profile.anode},
    )


# ----------------------------------------------------------------------------- plots


def _label_lines(
    template: _Template, threshold: float, always: frozenset[str] = frozenset()
) -> list[tuple[float, str]]:
    """Main lines worth labelling: Kα/Kβ (and Lα) of elements with visible signal."""
    labels: list[tuple[float, str]] = []
    totals = template.rows.sum(axis=1)
    peak = float(totals.max())
    for name, tot in zip(template.names, totals, strict=True):
        if name == "scatter" or name.startswith("trace:"):
            continue
        weak = tot < threshold * peak  # only K lines of a weak signature element get through
        if weak and name not in always:
            continue
        z = xrl.SymbolToAtomicNumber(name)
        codes = _lines(z)
        k = [e for code, e in codes if code == xrl.KL3_LINE]
        if k and k[0] < 45.0:
            labels.append((k[0], f"{name} Kα"))
            kb = [e for code, e in codes if code == xrl.KM3_LINE]
            if kb:
                labels.append((kb[0], f"{name} Kβ"))
        la = [e for code, e in codes if code == xrl.L3M5_LINE]
        if la and z > 40 and not weak:
            labels.append((la[0], f"{name} Lα"))
    return labels


# Elements whose lines identify a chemistry through a steel can; always labelled in plots.
_SIGNATURE = {"NiCd": frozenset({"Cd"}), "NiMH": frozenset({"La", "Ce"})}


def plot_gallery(out_dir: Path, profile_name: str = "bench_sdd_2048", seed: int = 7) -> list[Path]:
    """One PNG per chemistry (opened cell) plus steel-can and casing cases; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profile = replace(PROFILES[profile_name], gain_drift=0.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, str, CellFormat, float, str]] = [
        (chem, chem, CellFormat.opened, 0.0, "opened cell, electrode in the beam")
        for chem in CHEMISTRIES
    ]
    cases += [
        (
            "steel_can_NMC811",
            "NMC811",
            CellFormat.steel_can,
            0.0,
            "intact Ni-plated steel can: only the can is seen",
        ),
        (
            "steel_can_NiCd",
            "NiCd",
            CellFormat.steel_can,
            0.0,
            "intact steel can: Cd K lines pass the can at 50 kV",
        ),
        (
            "steel_can_NiMH",
            "NiMH",
            CellFormat.steel_can,
            0.0,
            "intact steel can: La/Ce K lines pass the can at 50 kV",
        ),
        (
            "opened_casing_NMC622",
            "NMC622",
            CellFormat.opened,
            0.35,
            "opened cell with 35 % of the beam spot on the casing",
        ),
        ("pouch_LFP", "LFP", CellFormat.pouch, 0.0, "pouch cell, through the Al laminate"),
    ]
    paths = []
    rng = np.random.default_rng(seed)
    for stem, chem, fmt, casing, note in cases:
        truth = CellTruth.bare(chem, fmt)
        pres = Presentation(casing, 1.0, (), 0.0, stoichiometry_sigma=0.0)
        live = 30.0 if fmt is CellFormat.steel_can else 10.0
        spectrum = render_cell(truth, pres, profile, live, rng)
        template = _cell_template(profile, chem, None, fmt, 0)
        labels = _label_lines(template, 0.002, _SIGNATURE.get(chem, frozenset()))
        if casing > 0 or fmt is CellFormat.steel_can:
            labels += _label_lines(_part_template(profile, "casing"), 0.002)
        fig, ax = plt.subplots(figsize=(11, 4.8), dpi=110)
        e = spectrum.energies()
        ax.semilogy(e, np.clip(spectrum.counts, 0.5, None), lw=0.7, color="k")
        ax.set_xlim(0.5, profile.tube_kv if profile.tube_kv < profile.max_kev else profile.max_kev)
        top = float(spectrum.counts.max())
        ax.set_ylim(0.5, top * 8)
        seen: set[str] = set()
        for energy, text in sorted(labels):
            if text in seen or energy > profile.max_kev:
                continue
            seen.add(text)
            ch = round(spectrum.channel_of(energy))
            y = float(spectrum.counts[max(0, ch - 2) : ch + 3].max()) if 0 <= ch < e.size else 1
            ax.annotate(
                text,
                (energy, max(y, 1.0)),
                xytext=(0, 12),
                textcoords="offset points",
                rotation=90,
                fontsize=7,
                ha="center",
                va="bottom",
                color="tab:blue",
            )
        for energy, text in _scatter_labels(profile):
            ax.axvline(energy, color="tab:red", lw=0.5, alpha=0.4)
            ax.text(energy, top * 3, text, rotation=90, fontsize=7, color="tab:red", ha="right")
        ax.set_xlabel("energy (keV)")
        ax.set_ylabel("counts per channel")
        ax.set_title(
            f"{chem} — {note}  [{profile.name}, {profile.tube_kv:.0f} kV Rh, {live:.0f} s live, "
            f"{spectrum.total_counts():.2g} counts]",
            fontsize=9,
        )
        fig.tight_layout()
        path = out_dir / f"{stem}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _scatter_labels(profile: InstrumentProfile) -> list[tuple[float, str]]:
    z = xrl.SymbolToAtomicNumber(profile.anode)
    ka = float(xrl.LineEnergy(z, xrl.KL3_LINE))
    out = [(float(xrl.LineEnergy(18, xrl.KL3_LINE)), "Ar Kα (air)")]
    if profile.tube_kv > xrl.EdgeEnergy(z, xrl.K_SHELL):
        out += [
            (ka, f"{profile.anode} Kα Rayleigh"),
            (float(xrl.ComptonEnergy(ka, _THETA)), f"{profile.anode} Kα Compton"),
        ]
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m drivers.sim.xrfphysics --plots docs/spectra` regenerates the gallery."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--plots", type=Path, required=True, help="output directory for PNGs")
    parser.add_argument("--profile", default="bench_sdd_2048", choices=sorted(PROFILES))
    args = parser.parse_args(argv)
    for path in plot_gallery(args.plots, args.profile):
        print(path)


if __name__ == "__main__":
    main()
