"""An independent forward model of cell XRF spectra on fisx (ESRF's fundamental-parameter
library), to test the classifier on physics and instruments it was never trained on.

It shares no code and no constants with drivers/sim/xrfphysics.py (docs/classifier.md,
"Cross-model evaluation", names the sources):
- tube: Kramers continuum (Z·(E0/E - 1)) through the tube's Be window, plus the anode's
  characteristic lines (energies from fisx's tables), Rh, W or Ag anode;
- sample: fisx multilayer (can or pouch laminate, cathode coating with binder, carbon and
  electrolyte, Al current collector), primary + secondary + tertiary fluorescence
  (`getMultilayerFluorescence(secondary=2)`), self-absorption included;
- scatter: Rayleigh and Compton (90 degrees) of the tube spectrum in the top matrix, from fisx's
  coherent / incoherent cross-sections;
- detector: air path, Be window and Si thickness (fisx attenuation), Gaussian resolution
  FWHM² = noise² + (2.355)²·F·w·E with F = 0.12 and w = 3.62 eV, Hypermet-style low-energy
  tail and shelf, Si escape peaks (Reed & Ware's formula on fisx coefficients), random-sum
  pile-up (self-convolution scaled by rate x resolving time), Poisson counting;
- three instruments that differ in anode, kV, resolution, channel count, gain and offset,
  with per-spectrum gain/offset drift.
Only `drivers.spectra.Spectrum` (what the plant reads) is shared with the plant.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers.spectra import Spectrum

FloatArray = npt.NDArray[np.float64]

CHEMISTRIES: tuple[str, ...] = (
    "NMC111",
    "NMC532",
    "NMC622",
    "NMC811",
    "NCA",
    "LCO",
    "LMO",
    "LFP",
    "NiMH",
    "NiCd",
    "ZnMn",
)
# Cathode (positive electrode) by formula unit: element -> atoms, around nominal.
_NOMINAL: dict[str, dict[str, float]] = {
    "NMC111": {"Li": 1, "Ni": 1 / 3, "Mn": 1 / 3, "Co": 1 / 3, "O": 2},
    "NMC532": {"Li": 1, "Ni": 0.5, "Mn": 0.3, "Co": 0.2, "O": 2},
    "NMC622": {"Li": 1, "Ni": 0.6, "Mn": 0.2, "Co": 0.2, "O": 2},
    "NMC811": {"Li": 1, "Ni": 0.8, "Mn": 0.1, "Co": 0.1, "O": 2},
    "NCA": {"Li": 1, "Ni": 0.8, "Co": 0.15, "Al": 0.05, "O": 2},
    "LCO": {"Li": 1, "Co": 1, "O": 2},
    "LMO": {"Li": 1, "Mn": 2, "O": 4},
    "LFP": {"Li": 1, "Fe": 1, "P": 1, "O": 4},
    # NiMH: Ni(OH)2 positive + AB5 mischmetal negative (La/Ce/Pr/Nd)(Ni,Co,Mn,Al)5
    "NiMH": {
        "Ni": 4.6,
        "O": 2,
        "H": 2,
        "La": 0.6,
        "Ce": 0.3,
        "Pr": 0.05,
        "Nd": 0.05,
        "Co": 0.7,
        "Mn": 0.3,
        "Al": 0.3,
    },
    # NiCd: Ni(OH)2 positive + Cd/Cd(OH)2 negative
    "NiCd": {"Ni": 1, "Cd": 1.1, "O": 3, "H": 3},
    # alkaline: MnO2 cathode + Zn anode, KOH electrolyte
    "ZnMn": {"Mn": 1, "O": 2.6, "Zn": 0.9, "K": 0.15, "H": 0.4},
}
_TM = ("Ni", "Mn", "Co", "Fe", "Al", "Zn")
_LINE_GROUPS = {
    "Al": ["Al K"],
    "P": ["P K"],
    "S": ["S K"],
    "K": ["K K"],
    "Ti": ["Ti K"],
    "Mn": ["Mn K"],
    "Fe": ["Fe K"],
    "Co": ["Co K"],
    "Ni": ["Ni K"],
    "Cu": ["Cu K"],
    "Zn": ["Zn K"],
    "Cd": ["Cd K", "Cd L"],
    "La": ["La K", "La L"],
    "Ce": ["Ce K", "Ce L"],
    "Pr": ["Pr K"],
    "Nd": ["Nd K"],
}
FORMATS = ("pouch", "opened", "steel_can")


@dataclass(frozen=True)
class Instrument:
    """One XRF head of the fisx model: tube, detector, electronics."""

    name: str
    anode: str
    kv: float
    tube_be_um: float
    noise_ev: float  # electronic noise part of the FWHM
    si_mm: float
    det_be_um: float
    air_cm: float
    n_channels: int
    kev_per_channel: float
    offset_kev: float
    resolving_time_s: float  # pile-up pulse-pair resolving time
    tail: float  # Hypermet low-energy tail fraction at 5 keV
    shelf: float  # flat shelf fraction
    rate_cps: tuple[float, float]


INSTRUMENTS: dict[str, Instrument] = {
    i.name: i
    for i in (
        Instrument(
            name="fx_rh50_sdd",
            anode="Rh",
            kv=50.0,
            tube_be_um=75,
            noise_ev=60.0,
            si_mm=0.45,
            det_be_um=12.5,
            air_cm=0.8,
            n_channels=2048,
            kev_per_channel=0.0201,
            offset_kev=-0.032,
            resolving_time_s=0.3e-6,
            tail=0.010,
            shelf=0.0015,
            rate_cps=(40e3, 120e3),
        ),
        Instrument(
            name="fx_w45_sipin",
            anode="W",
            kv=45.0,
            tube_be_um=125,
            noise_ev=150.0,
            si_mm=0.5,
            det_be_um=25,
            air_cm=1.5,
            n_channels=1024,
            kev_per_channel=0.0405,
            offset_kev=0.055,
            resolving_time_s=2.0e-6,
            tail=0.030,
            shelf=0.004,
            rate_cps=(5e3, 25e3),
        ),
        Instrument(
            name="fx_ag40_sdd",
            anode="Ag",
            kv=40.0,
            tube_be_um=100,
            noise_ev=85.0,
            si_mm=0.5,
            det_be_um=8,
            air_cm=0.4,
            n_channels=4096,
            kev_per_channel=0.01025,
            offset_kev=-0.012,
            resolving_time_s=0.5e-6,
            tail=0.015,
            shelf=0.002,
            rate_cps=(20e3, 80e3),
        ),
    )
}


@cache
def _elements() -> Any:
    """fisx's element tables, loaded once (about 2 s)."""
    from fisx import Elements

    el = Elements()
    el.initializeAsPyMca()
    return el


def _mu(what: str | dict[str, float], energies: FloatArray, kind: str = "total") -> FloatArray:
    """Mass attenuation (cm²/g) of an element, formula or mass-fraction dict."""
    grid = [float(e) for e in energies]
    if isinstance(what, dict):  # a mixture: the mass-weighted sum (fisx wants bytes keys there)
        total = sum(what.values())
        return sum(
            (w / total * _mu(k, energies, kind) for k, w in what.items() if w > 0),
            np.zeros(len(grid)),
        )
    return np.asarray(_elements().getMassAttenuationCoefficients(what, grid)[kind])


def _mass_fractions(atoms: dict[str, float]) -> dict[str, float]:
    el = _elements()
    mass = {k: v * el.getAtomicMass(k) for k, v in atoms.items() if v > 0}
    total = sum(mass.values())
    return {k: v / total for k, v in mass.items()}


# ---------------------------------------------------------------------------------- tube
_ANODE_Z = {"Rh": 45, "W": 74, "Ag": 47}
# Characteristic lines: (fisx line group, intensity relative to the continuum integral)
_ANODE_LINES = {"Rh": ("K", 0.25), "W": ("L", 0.2), "Ag": ("K", 0.25)}  # shell, share


def tube_spectrum(inst: Instrument, n: int = 16) -> tuple[FloatArray, FloatArray]:
    """(energies keV, weights) of the tube's output: Kramers continuum through its Be window
    plus the anode's lines (energies from fisx), normalised to sum 1."""
    e = np.linspace(2.0, inst.kv - 0.5, n)
    cont = _ANODE_Z[inst.anode] * (inst.kv / e - 1.0)
    cont *= np.exp(-_mu("Be", e) * 1.848 * inst.tube_be_um * 1e-4)
    cont /= cont.sum()
    shell, share = _ANODE_LINES[inst.anode]
    el = _elements()
    # the anode's lines of one shell, relative intensities = fisx's radiative rates
    rates = el.getRadiativeTransitions(inst.anode, "K" if shell == "K" else "L3")
    energies_of = el.getEmittedXRayLines(inst.anode)
    ek, wk = [], []
    for name, rate in rates.items():
        if name != "TOTAL" and rate > 0.005 and name in energies_of:
            ek.append(energies_of[name])
            wk.append(rate)
    w_lines = np.asarray(wk) / sum(wk) * share
    ek_arr = np.asarray(ek)
    keep = ek_arr < inst.kv
    energies = np.concatenate([e, ek_arr[keep]])
    weights = np.concatenate([cont * (1 - share), w_lines[keep]])
    return energies, weights / weights.sum()


def scatter_beam(inst: Instrument) -> tuple[FloatArray, FloatArray]:
    """The tube spectrum for scatter, on points 50 eV apart: scattered, the continuum must stay
    a continuum (16 points, enough for the excitation integral, showed as a comb of narrow
    peaks, one on Cd Kα at 23.1 keV under the 50 kV Rh tube and one on Ce Lα under W)."""
    return tube_spectrum(inst, n=round((inst.kv - 2.5) / 0.05) + 1)


# --------------------------------------------------------------------------------- sample
@dataclass(frozen=True)
class Cell:
    """What the model renders: chemistry (the label), presentation and composition noise."""

    chemistry: str
    cell_format: str
    seed: int
    blend: str | None = None  # 30 % of another chemistry (hard case)
    casing_fraction: float = 0.0  # share of the beam on the casing (opened cells)
    live_time_s: float = 1.0
    hard: bool = False


def cathode_atoms(chemistry: str, rng: np.random.Generator) -> dict[str, float]:
    """Cathode composition around nominal: +-4 % on each metal, dopants and traces."""
    atoms = {
        k: v * (rng.uniform(0.96, 1.04) if k in _TM else 1.0)
        for k, v in _NOMINAL[chemistry].items()
    }
    if chemistry.startswith("NMC") or chemistry == "NCA":
        for dopant, top in (("Al", 0.01), ("Ti", 0.005), ("Zr", 0.0)):
            if top:
                atoms[dopant] = atoms.get(dopant, 0.0) + rng.uniform(0.0, top)
    return atoms


def electrode_mix(chemistry: str, rng: np.random.Generator) -> dict[str, float]:
    """Mass fractions of the coating: active material + PVDF binder + carbon + electrolyte."""
    active = _mass_fractions(cathode_atoms(chemistry, rng))
    li_ion = chemistry not in ("NiMH", "NiCd", "ZnMn")
    binder = rng.uniform(0.02, 0.05) if li_ion else 0.0
    carbon = rng.uniform(0.02, 0.05)
    salt = rng.uniform(0.005, 0.015) if li_ion else 0.0
    trace = {"Cu": rng.uniform(0, 3e-4), "Zn": rng.uniform(0, 2e-4), "Si": rng.uniform(0, 1e-3)}
    mix: dict[str, float] = {}
    parts = [
        (active, 1.0 - binder - carbon - salt - sum(trace.values())),
        ({"C": 0.375, "H": 0.031, "F": 0.594}, binder),  # PVDF (C2H2F2)n
        ({"C": 1.0}, carbon),
        ({"Li": 0.046, "P": 0.204, "F": 0.75}, salt),  # LiPF6
        (trace, 1.0),
    ]
    for fractions, weight in parts:
        for k, v in fractions.items():
            mix[k] = mix.get(k, 0.0) + v * weight
    return mix


def _layers(
    chemistry: str, fmt: str, rng: np.random.Generator
) -> tuple[list[tuple[dict[str, float], float, float]], dict[str, float]]:
    """(layers top-down as (mass fractions, density g/cm³, thickness cm), the electrode mix)."""
    mix = electrode_mix(chemistry, rng)
    coating = (mix, rng.uniform(2.4, 3.2), rng.uniform(40e-4, 90e-4))
    collector = ({"Al": 1.0}, 2.7, 15e-4)
    layers: list[tuple[dict[str, float], float, float]] = []
    if fmt == "pouch":
        layers += [
            ({"C": 0.625, "H": 0.042, "O": 0.333}, 1.38, rng.uniform(10e-4, 15e-4)),  # PET
            ({"Al": 1.0}, 2.7, rng.uniform(30e-4, 45e-4)),
            ({"C": 0.857, "H": 0.143}, 0.9, rng.uniform(30e-4, 80e-4)),  # PP
        ]
    elif fmt == "steel_can":
        layers += [
            ({"Ni": 1.0}, 8.9, rng.uniform(1.5e-4, 4e-4)),  # plating
            ({"Fe": 0.993, "Mn": 0.004, "C": 0.003}, 7.87, rng.uniform(200e-4, 300e-4)),
        ]
    return [*layers, coating, collector], mix


def _casing_layers() -> list[tuple[dict[str, float], float, float]]:
    """An opened cell's casing at the beam edge: Ni-plated steel."""
    return [({"Ni": 1.0}, 8.9, 3e-4), ({"Fe": 0.993, "Mn": 0.004, "C": 0.003}, 7.87, 0.025)]


_ANGLE_IN, _ANGLE_OUT = 45.0, 45.0


def _axis(inst: Instrument) -> FloatArray:
    """Channel energies of the instrument's nominal calibration (keV)."""
    return inst.offset_kev + inst.kev_per_channel * np.arange(inst.n_channels, dtype=np.float64)


def _fluorescence(
    layers: list[tuple[dict[str, float], float, float]], beam: tuple[FloatArray, FloatArray]
) -> list[tuple[float, float]]:
    """(energy keV, photons per incident photon) of every fluorescence line, from fisx."""
    from fisx import XRF, Material

    el = _elements()
    xrf = XRF()
    xrf.setBeam([float(e) for e in beam[0]], [float(w) for w in beam[1]])
    sample = []
    present: set[str] = set()
    for i, (fractions, density, thickness) in enumerate(layers):
        name = f"fxl{i}_{abs(hash(tuple(sorted(fractions.items())))) % 10**9}"
        mat = Material(name, density, thickness)
        mat.setComposition({k: float(v) for k, v in fractions.items() if v > 0})
        el.addMaterial(mat)
        sample.append([name, density, thickness])
        present |= {k for k, v in fractions.items() if v > 0}
    xrf.setSample(sample)
    xrf.setGeometry(_ANGLE_IN, _ANGLE_OUT)
    groups = [g for k in sorted(present) for g in _LINE_GROUPS.get(k, [])]
    kv = float(max(beam[0]))
    edges = el.getBindingEnergies
    groups = [g for g in groups if edges(g.split()[0])[g.split()[1].replace("L", "L3")] < kv]
    fluo = xrf.getMultilayerFluorescence(groups, el, secondary=2, useMassFractions=1)
    out = []
    for group in fluo.values():
        for layer in group.values():
            for v in layer.values():
                if isinstance(v, dict) and v.get("rate", 0.0) > 0:
                    out.append((float(v["energy"]), float(v["rate"])))
    el.removeMaterials()
    return out


def _scatter(
    top: dict[str, float], beam: tuple[FloatArray, FloatArray]
) -> list[tuple[float, float, float]]:
    """(energy, photons per incident photon, extra broadening keV) of Rayleigh and Compton
    (90 degrees) scatter of the beam in an infinitely thick top matrix."""
    e, w = beam
    mu = _mu(top, e)
    e_c = e / (1.0 + e / 511.0)  # Compton at 90 degrees
    mu_c = _mu(top, e_c)
    coh, inc = _mu(top, e, "coherent"), _mu(top, e, "compton")
    # Emission into 4 pi as fisx's fluorescence rates; at 90 degrees the Thomson/Klein-Nishina
    # angular factor is about half the mean and the atomic form factor damps Rayleigh further.
    out = [
        (float(x), float(0.3 * wi * c / (2 * m)), 0.0)
        for x, wi, c, m in zip(e, w, coh, mu, strict=True)
    ]
    out += [
        (float(x), float(0.5 * wi * c / (m + mc)), float(0.004 * x))  # Doppler broadening
        for x, wi, c, m, mc in zip(e_c, w, inc, mu, mu_c, strict=True)
    ]
    return out


# ------------------------------------------------------------------------------- detector
_FANO = 0.12
_PAIR_KEV = 3.62e-3
_SI_KA = 1.740
_SI_K_YIELD = 0.047
_SI_JUMP = 10.8  # K-edge jump ratio of Si


def _fwhm(inst: Instrument, e: FloatArray) -> FloatArray:
    return np.sqrt(
        (inst.noise_ev / 1000.0) ** 2 + 2.3548**2 * _FANO * _PAIR_KEV * np.maximum(e, 0.0)
    )


def _efficiency(inst: Instrument, e: FloatArray) -> FloatArray:
    air = {"N": 0.755, "O": 0.232, "Ar": 0.013}
    t_air = np.exp(-_mu(air, e) * 1.205e-3 * inst.air_cm)
    t_be = np.exp(-_mu("Be", e) * 1.848 * inst.det_be_um * 1e-4)
    absorbed = 1.0 - np.exp(-_mu("Si", e, "photoelectric") * 2.33 * inst.si_mm * 0.1)
    return t_air * t_be * absorbed


def _escape(e: FloatArray) -> FloatArray:
    """Si escape probability (Reed & Ware), normal incidence; 0 below the Si K edge."""
    mu_e = _mu("Si", e)
    mu_k = _mu("Si", np.asarray([_SI_KA]))[0]
    r = mu_k / mu_e
    p = 0.5 * _SI_K_YIELD * (1 - 1 / _SI_JUMP) * (1 - r * np.log1p(1 / r))
    return np.where(e > 1.839, p, 0.0)


def _response(
    inst: Instrument,
    lines: list[tuple[float, float, float]],
    axis: FloatArray,
    kev_per_channel: float,
) -> FloatArray:
    """Expected counts per channel (per incident photon) for lines (energy, rate, extra width):
    efficiency, Gaussian + tail + shelf, escape peaks."""
    e = np.asarray([x[0] for x in lines])
    rate = np.asarray([x[1] for x in lines]) * _efficiency(inst, e)
    extra = np.asarray([x[2] for x in lines])
    esc = _escape(e)
    spec = np.zeros_like(axis)
    sig = np.sqrt((_fwhm(inst, e) / 2.3548) ** 2 + extra**2)
    tail = inst.tail * np.clip(5.0 / np.maximum(e, 1.0), 0.3, 2.0)
    for ei, ri, si, ti, pe in zip(e, rate, sig, tail, esc, strict=True):
        if ri <= 0:
            continue
        g = np.exp(-0.5 * ((axis - ei) / si) ** 2) / (si * math.sqrt(2 * math.pi))
        slope = 2.5 * si
        x = axis - ei
        t = np.where(x < 0, np.exp(np.clip(x / slope, -50, 0)), 0.0) / slope
        shelf = np.where((axis > 0.2) & (axis < ei), 1.0 / max(ei - 0.2, 0.1), 0.0)
        main = (1 - ti - inst.shelf) * g + ti * t + inst.shelf * shelf
        spec += ri * (1 - pe) * main * kev_per_channel
        if pe > 0:
            es = ei - _SI_KA
            ge = np.exp(-0.5 * ((axis - es) / si) ** 2) / (si * math.sqrt(2 * math.pi))
            spec += ri * pe * ge * kev_per_channel
    return spec


@dataclass
class FisxModel:
    """Renders spectra of cells on one of INSTRUMENTS; fisx results cached per composition draw."""

    variants: int = 2  # composition draws per (chemistry, format, blend, instrument)
    _cache: dict[tuple[Any, ...], FloatArray] = field(default_factory=dict)

    _casings: dict[str, FloatArray] = field(default_factory=dict)

    def _casing(self, inst: Instrument, axis: FloatArray) -> FloatArray:
        """Expected counts of the casing alone on this instrument (cached)."""
        hit = self._casings.get(inst.name)
        if hit is None:
            beam = tube_spectrum(inst)
            casing = [(en, r, 0.0) for en, r in _fluorescence(_casing_layers(), beam)]
            casing += _scatter(_casing_layers()[1][0], scatter_beam(inst))
            hit = self._casings[inst.name] = _response(inst, casing, axis, inst.kev_per_channel)
        return hit

    def _part(self, chemistry: str, fmt: str, inst: Instrument, variant: int) -> FloatArray:
        """Expected counts per incident photon of one cell kind (cached: fisx is the cost)."""
        key = (chemistry, fmt, inst.name, variant)
        hit = self._cache.get(key)
        if hit is None:
            rng = np.random.default_rng([variant, CHEMISTRIES.index(chemistry), len(inst.name)])
            beam = tube_spectrum(inst)
            layers, mix = _layers(chemistry, fmt, rng)
            lines = [(en, r, 0.0) for en, r in _fluorescence(layers, beam)]
            lines += _scatter(layers[0][0] if fmt == "steel_can" else mix, scatter_beam(inst))
            hit = self._cache[key] = _response(inst, lines, _axis(inst), inst.kev_per_channel)
        return hit

    def _expected(
        self, cell: Cell, inst: Instrument, variant: int, drift: tuple[float, float]
    ) -> FloatArray:
        """Expected counts per channel (per incident photon) before pile-up and counting."""
        cell_part = self._part(cell.chemistry, cell.cell_format, inst, variant)
        if cell.blend:  # 70/30: two cells side by side in the beam spot
            other = self._part(cell.blend, cell.cell_format, inst, variant)
            cell_part = 0.7 * cell_part + 0.3 * other
        casing_part = self._casing(inst, _axis(inst))
        expected = (1 - cell.casing_fraction) * cell_part + cell.casing_fraction * casing_part
        # gain/offset drift: the detector's true calibration differs from the stated one
        offset, gain = drift
        ch = np.arange(inst.n_channels, dtype=np.float64)
        true_e = (inst.offset_kev + offset) + inst.kev_per_channel * (1 + gain) * ch
        nominal_ch = (true_e - inst.offset_kev) / inst.kev_per_channel
        return np.interp(nominal_ch, ch, expected, left=0.0, right=0.0)

    def render(self, cell: Cell, inst: Instrument) -> Spectrum:
        """One spectrum as the plant reads it (stated calibration: the instrument's nominal)."""
        rng = np.random.default_rng([cell.seed, 0xF15])
        variant = int(rng.integers(self.variants))
        drift = (float(rng.normal(0.0, 0.008)), float(rng.normal(0.0, 0.0015)))
        shape = self._expected(cell, inst, variant, drift)
        shape = np.maximum(shape, 0.0)
        shape /= shape.sum()
        rate = float(rng.uniform(*inst.rate_cps))
        n_events = rate * cell.live_time_s
        # random-sum pile-up: a fraction rate x resolving time of events sums with another
        p_pile = min(rate * inst.resolving_time_s, 0.3)
        size = 1 << math.ceil(math.log2(2 * shape.size))
        f = np.fft.rfft(shape, size)
        pile = np.fft.irfft(f * f, size)[: shape.size]
        pile = np.maximum(pile, 0.0)
        mean = n_events * ((1 - p_pile) * shape + p_pile / 2 * pile / max(pile.sum(), 1e-30))
        counts = rng.poisson(mean).astype(np.float64)
        return Spectrum(
            counts=counts,
            offset_kev=inst.offset_kev,
            kev_per_channel=inst.kev_per_channel,
            live_time_s=cell.live_time_s,
            tube_kv=inst.kv,
            source=f"fisx:{inst.name}:{cell.chemistry}:{cell.seed}",
            metadata={"instrument": inst.name, "anode": inst.anode},
        )


def cells(n: int, seed: int, hard_share: float = 0.15) -> Iterator[tuple[Cell, Instrument]]:
    """A labelled stream: classes balanced, formats pouch/opened (Li-ion steel cans 8 %, NiCd
    and NiMH in steel cans 30 %), instruments in turn, `hard_share` hard cases (0.05-0.2 s
    dwell, 25-40 % of the beam on the casing, 70/30 blends)."""
    names = list(INSTRUMENTS)
    for i in range(n):
        rng = np.random.default_rng([seed, i, 0xCE11])
        chem = CHEMISTRIES[i % len(CHEMISTRIES)]
        inst = INSTRUMENTS[names[(i // len(CHEMISTRIES)) % len(names)]]
        can_p = 0.3 if chem in ("NiMH", "NiCd") else 0.08
        u = rng.random()
        fmt = "steel_can" if u < can_p else ("pouch" if rng.random() < 0.5 else "opened")
        live = float(10 ** rng.uniform(np.log10(0.5), np.log10(3.0)))
        casing = float(rng.uniform(0.0, 0.1)) if fmt == "opened" else 0.0
        blend = None
        hard = bool(rng.random() < hard_share)
        if hard:
            kind = int(rng.integers(3))
            if kind == 0:
                live = float(rng.uniform(0.05, 0.2))
            elif kind == 1 and fmt == "opened":
                casing = float(rng.uniform(0.25, 0.4))
            elif fmt != "steel_can" and chem not in ("NiMH", "NiCd", "ZnMn"):
                others = [c for c in CHEMISTRIES[:8] if c != chem]
                blend = others[int(rng.integers(len(others)))]
        yield Cell(chem, fmt, seed * 1_000_003 + i, blend, casing, live, hard), inst
