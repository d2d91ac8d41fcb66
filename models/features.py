"""XRF spectrum -> chemistry features, computed in energy space from each spectrum's calibration.

Physics, not channel patterns: every spectrum is fitted, on its own keV axis, with a linear
model of Gaussian line groups (Kα1, Kα2, Kβ with xraylib's radiative rates, so that the Kβ of
one element is not read as the Kα of the next: Mn Kβ/Fe Kα, Fe Kβ/Co Kα, Co Kβ/Ni Kα,
Ni Kβ/Cu Kα, docs/reference/xrf-and-process.md §1.2) over a smooth background of linear
hat functions. The detector resolution follows the Fano law from the FWHM at Mn Kα, which is
estimated per spectrum (the best of a ladder of candidates) unless the file states it. The
fit is a precomputed pseudo-inverse per (calibration, FWHM), so a batch costs a few matrix
products. Features are ratios and fractions of the fitted line areas (count level and live time
drop out), peak-to-background ratios of the heavy K lines (Cd, La, Ce: NiCd/NiMH through a
steel can) and a few quality figures (total counts, resolution, fit residual).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
import xraylib

from drivers.spectra import Spectrum

FEATURE_VERSION = "2"

FloatArray = npt.NDArray[np.float64]

# Fano-limited silicon detector: FWHM(E)^2 = noise^2 + (2.355)^2 * F * eps * E.
_FANO = 0.115
_EPS_KEV = 3.64e-3  # energy per electron-hole pair in Si
_FANO_TERM = 2.3548**2 * _FANO * _EPS_KEV  # keV^2 per keV
MN_KA_KEV = 5.899  # docs/reference/xrf-and-process.md §1.1
# FWHM candidates at Mn Kα (keV): SDD ~123-145 eV, Si-PIN 145-200 eV (reference §1.3), margin.
FWHM_LADDER_KEV: tuple[float, ...] = tuple(
    float(x) for x in np.round(np.geomspace(0.118, 0.270, 12), 4)
)

# Atomic numbers of the elements fitted.
_Z = {
    "Al": 13, "P": 15, "Ar": 18, "K": 19, "Ca": 20, "Ti": 22, "Cr": 24, "Mn": 25,
    "Fe": 26, "Co": 27, "Ni": 28, "Cu": 29, "Zn": 30, "Rh": 45, "Ag": 47, "Cd": 48,
    "Sn": 50, "La": 57, "Ce": 58, "Pr": 59, "Nd": 60,
    "Br": 35, "Rb": 37, "Sr": 38, "Zr": 40, "Mo": 42, "W": 74, "Pt": 78, "Au": 79, "Pb": 82,
}  # fmt: skip

# Transition metals read as cathode / casing / alkaline signal (K lines, 4.5-9.6 keV).
TM = ("Ti", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn")
LIGHT = ("Al", "P", "K")


@dataclass(frozen=True)
class _Region:
    """One fit window: energy span, K-line groups, L-line groups and background knots."""

    name: str
    lo_kev: float
    hi_kev: float
    k_lines: tuple[str, ...]
    l_lines: tuple[str, ...]
    knots_kev: tuple[float, ...]


# Low region: Al..Zn K lines, plus the L lines that fall there (tube Rh, Cd of NiCd, La/Ce of
# NiMH) so they are not mistaken for K/Ti/Cr. Knots closer at low energy, where the detector
# window and the air path bend the continuum.
LOW = _Region(
    "low",
    1.25,
    10.2,
    ("Al", "P", "Ar", "K", "Ca", "Ti", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn"),
    ("Rh", "Cd", "La", "Ce"),
    (1.25, 1.75, 2.25, 2.75, 3.25, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.2),
)
# Cd K (23.2 keV) beside the tube's Rh Kβ / Ag Kα scatter.
CD = _Region(
    "cd",
    21.3,
    27.3,
    ("Ag", "Cd", "Sn"),
    (),
    (21.3, 22.3, 23.3, 24.3, 25.3, 26.3, 27.3),
)
# La/Ce K (33.4/34.7 keV), with the other mischmetal rare earths of NiMH (reference §2.1).
REE = _Region(
    "ree",
    31.0,
    41.0,
    ("La", "Ce", "Pr", "Nd"),
    (),
    (31.0, 33.0, 35.0, 37.0, 39.0, 41.0),
)
# Lines no battery chemistry explains (reference §2.1), where a cell spectrum shows only the
# metals' sum peaks and the tube's continuum: K lines of Br..Mo, L lines of W..Pb. Fitted only to
# refuse such spectra (models/classifier.py: out_of_domain); no feature reads them.
FOREIGN = _Region(
    "foreign",
    10.2,
    18.5,
    ("Br", "Rb", "Sr", "Zr", "Mo"),
    ("W", "Pt", "Au", "Pb"),
    (10.2, 11.5, 13.0, 14.5, 16.0, 17.5, 18.5),
)
# Pile-up sum peaks (2 x Kα) of the cathode and can metals fall in that window.
SUM_PEAKS = ("Fe", "Co", "Ni", "Cu")
REGIONS = (LOW, CD, REE, FOREIGN)

# The tube's own lines reach the detector scattered by the sample: Rayleigh at the line energy
# and Compton shifted to E' = E / (1 + E/511 keV) at 90°, Doppler-broadened by the electrons'
# momenta (reference §1.2). Fitted as columns of their own, so scatter is never read as an
# element (Rh Kβ2 at 23.17 keV sits on Cd Kα; W Lα at 8.40 keV beside Ni Kβ / Zn Kα). The
# K lines keep xraylib's Kβ2/Kβ1 ratio (atomic physics; a free Kβ2 column would be collinear
# with Cd Kα and blind NiCd through a can).
DEFAULT_ANODE = "Rh"  # when the file does not state its tube anode
ANODE_KEYS = ("anode", "tube_anode", "tubeanode", "target", "tube_target", "xtube_anode")
_TUBE_GROUPS = {
    "Ka": (xraylib.KL3_LINE, xraylib.KL2_LINE),
    "Kb": (xraylib.KM3_LINE, xraylib.KM2_LINE, xraylib.KN3_LINE, xraylib.KN2_LINE),
    # L3 lines (Lα1, Lα2, Ll, Lβ2, Lβ6, Lβ15: W Ll at 7.39 keV sits on Ni Kα) and L2 lines
    # (Lβ1, Lγ1, Lη): the tube's L2/L3 ratio depends on its voltage, so two columns.
    "L3": (
        xraylib.L3M5_LINE,
        xraylib.L3M4_LINE,
        xraylib.L3M1_LINE,
        xraylib.L3N5_LINE,
        xraylib.L3N1_LINE,
        xraylib.L3N4_LINE,
    ),
    "L2": (xraylib.L2M4_LINE, xraylib.L2N4_LINE, xraylib.L2M1_LINE),
}
# Doppler broadening of the Compton peak, sigma / E': it depends on the matrix (about 0.5 % for
# metals, 1-1.5 % for plastics and light oxides); two widths side by side fit any in between.
COMPTON_SIGMAS = (0.005, 0.012)


def _z_of(element: str) -> int:
    return _Z.get(element) or int(xraylib.SymbolToAtomicNumber(element))


@cache
def _k_group(element: str) -> tuple[tuple[float, float], ...]:
    """K lines of an element as (keV, relative intensity), from xraylib radiative rates."""
    z = _z_of(element)
    lines = []
    for line in (
        xraylib.KL3_LINE,
        xraylib.KL2_LINE,
        xraylib.KM3_LINE,
        xraylib.KM2_LINE,
        xraylib.KN3_LINE,
    ):
        try:
            lines.append((xraylib.LineEnergy(z, line), xraylib.RadRate(z, line)))
        except ValueError:
            continue
    return tuple(lines)


@cache
def _l_group(element: str) -> tuple[tuple[float, float], ...]:
    """Main L lines (Lα1, Lβ1, Lβ2, Lγ1) with typical relative intensities."""
    z = _z_of(element)
    spec = (
        (xraylib.L3M5_LINE, 1.0),
        (xraylib.L2M4_LINE, 0.55),
        (xraylib.L3N5_LINE, 0.2),
        (xraylib.L2N4_LINE, 0.08),
    )
    return tuple((xraylib.LineEnergy(z, line), w) for line, w in spec)


def compton_kev(energy_kev: float) -> float:
    """Energy of a photon Compton-scattered through 90°."""
    return energy_kev / (1.0 + energy_kev / 511.0)


@cache
def _tube_lines(anode: str, group: str) -> tuple[tuple[float, float], ...]:
    """(keV, rate) of one group of the anode's lines (_TUBE_GROUPS)."""
    z = _z_of(anode)
    out = []
    for line in _TUBE_GROUPS[group]:
        try:
            out.append((xraylib.LineEnergy(z, line), xraylib.RadRate(z, line)))
        except ValueError:
            continue
    return tuple(out)


@cache
def tube_columns(
    region: _Region, anode: str
) -> tuple[tuple[str, tuple[tuple[float, float], ...], float], ...]:
    """The anode's scattered lines that fall in a region: (column name, lines, Doppler sigma
    per keV; 0 for Rayleigh). A Rayleigh group that is already an element column of the
    region (Ag K in the Cd window, Rh L in the low window) is not repeated; a Compton group
    is fitted only where its shift exceeds the detector's half width."""
    cols = []
    for group in _TUBE_GROUPS:
        lines = _tube_lines(anode, group)
        own = anode in (region.l_lines if group.startswith("L") else region.k_lines)
        if lines and not own and region.lo_kev <= _main(lines) <= region.hi_kev:
            cols.append((f"tube_{group}_rayleigh", lines, 0.0))
    for group, extra in (("Ka", ""), ("Kb", ""), ("L3", "L2")):
        lines = _tube_lines(anode, group)
        if extra and lines and _tube_lines(anode, extra):
            # rates are per shell: the L2 lines get about 0.4 of the L3 lines' intensity
            more = _tube_lines(anode, extra)
            scale = 0.4 * sum(w for _, w in lines) / sum(w for _, w in more)
            lines = lines + tuple((e, w * scale) for e, w in more)
        if not lines:
            continue
        main = _main(lines)
        main_c = compton_kev(main)
        if main - main_c > 0.5 * float(fwhm_at(main, 0.14)) and (
            region.lo_kev - COMPTON_SIGMAS[-1] * main_c <= main_c <= region.hi_kev
        ):
            shifted = tuple((compton_kev(e), w) for e, w in lines)
            for k, sigma in enumerate(COMPTON_SIGMAS):
                cols.append((f"tube_{group}_compton{k}", shifted, sigma))
    return tuple(cols)


def _main(lines: Sequence[tuple[float, float]]) -> float:
    """Energy of the strongest line of a group."""
    return max(lines, key=lambda lw: lw[1])[0]


def fwhm_at(energy_kev: FloatArray | float, fwhm_mn_kev: float) -> FloatArray:
    """Detector FWHM (keV) at an energy, given the FWHM at Mn Kα (Fano law)."""
    noise2 = max(fwhm_mn_kev**2 - _FANO_TERM * MN_KA_KEV, 1e-6)
    return np.sqrt(noise2 + _FANO_TERM * np.asarray(energy_kev, dtype=np.float64))


def _group_shape(
    e: FloatArray, lines: Sequence[tuple[float, float]], fwhm_mn: float, doppler: float = 0.0
) -> FloatArray:
    """Sum of unit-area Gaussians (per keV) of a line group, normalised to the group's total;
    `doppler` (sigma per keV) broadens Compton-scattered lines beyond the detector's width."""
    total = sum(w for _, w in lines)
    out = np.zeros_like(e)
    for energy, w in lines:
        sigma = np.sqrt((fwhm_at(energy, fwhm_mn) / 2.3548) ** 2 + (doppler * energy) ** 2)
        out += (
            (w / total) * np.exp(-0.5 * ((e - energy) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        )
    return out


def _hats(e: FloatArray, knots: Sequence[float]) -> FloatArray:
    """Linear B-spline (hat) basis on the knots: a smooth, flexible background."""
    cols = []
    k = np.asarray(knots)
    for i in range(len(k)):
        col = np.zeros_like(e)
        if i > 0:
            m = (e >= k[i - 1]) & (e <= k[i])
            col[m] = (e[m] - k[i - 1]) / (k[i] - k[i - 1])
        if i < len(k) - 1:
            m = (e >= k[i]) & (e <= k[i + 1])
            col[m] = (k[i + 1] - e[m]) / (k[i + 1] - k[i])
        cols.append(col)
    return np.stack(cols, axis=1)


@dataclass(frozen=True)
class _Fit:
    """Precomputed least-squares operators for one region, calibration and FWHM.

    The residual and the energy-scale correction are computed from small Gram matrices
    (columns x columns) instead of channel-sized residual arrays: a batch then costs two
    matrix products with the counts per ladder entry (docs/classifier.md, "Speed")."""

    pinv: FloatArray  # (n_cols, n_ch): amplitudes = pinv @ counts
    pinv_sq: FloatArray  # pinv**2, for Poisson variances of the amplitudes
    n_peaks: int
    background_under: FloatArray  # (n_hats, n_peaks): hat weight under each peak's +-1 FWHM
    # [pinv; design.T; s_perp; t_perp] (n_ch wide): what a batch is multiplied with. s_perp and
    # t_perp (n_peaks, n_ch) are d(peak column)/d(offset) and /d(gain), minus their projection
    # on the design (the energy-scale correction's directions).
    ops: FloatArray
    gram: FloatArray  # design.T @ design
    cross_next: FloatArray  # design.T @ (the next ladder entry's design)
    s_proj: FloatArray  # (n_peaks, n_cols): amplitudes of the offset direction before projection
    t_proj: FloatArray  # the same for the gain direction
    st_gram: FloatArray  # (3, n_peaks, n_peaks): s_perp.s_perp, s_perp.t_perp, t_perp.t_perp
    st_next: FloatArray  # (2, n_peaks, n_cols): s_perp and t_perp times the next entry's design


@dataclass(frozen=True)
class _RegionDesign:
    """All FWHM candidates for one region under one calibration."""

    region: _Region
    channels: slice
    energies: FloatArray  # keV of the region's channels
    fits: tuple[_Fit, ...]  # one per FWHM_LADDER_KEV entry; empty when the region is off-scale
    q_all: FloatArray  # (n_ch, sum of ranks): orthonormal bases of every candidate, side by side
    peak_names: tuple[str, ...]


def _region_design(
    region: _Region, energies: FloatArray, width_kev: float, anode: str
) -> _RegionDesign:
    """Build the fit operators of one region for a channel energy axis and tube anode."""
    tube = tube_columns(region, anode)
    peaks = (
        list(region.k_lines)
        + [f"{el}_L" for el in region.l_lines]
        + [name for name, _, _ in tube]
        + ([f"{el}_sum" for el in SUM_PEAKS] if region is FOREIGN else [])
    )
    lo = int(np.searchsorted(energies, region.lo_kev))
    hi = int(np.searchsorted(energies, region.hi_kev, side="right"))
    e = energies[lo:hi]
    # Off-scale (the instrument does not reach it) or too few channels to fit: no design.
    if hi - lo < 3 * (len(peaks) + len(region.knots_kev)) or energies[-1] < region.hi_kev - 1.0:
        return _RegionDesign(region, slice(lo, lo), e, (), np.zeros((0, 0)), tuple(peaks))
    hats = _hats(e, region.knots_kev)
    step = 1e-3  # keV, for the numerical slope of each peak column
    fits = []
    bases = []
    for fwhm_mn in FWHM_LADDER_KEV:

        def peak_columns(x: FloatArray, fwhm: float = fwhm_mn) -> FloatArray:
            cols = [_group_shape(x, _k_group(el), fwhm) for el in region.k_lines]
            cols += [_group_shape(x, _l_group(el), fwhm) for el in region.l_lines]
            cols += [_group_shape(x, lines, fwhm, dop) for _, lines, dop in tube]
            if region is FOREIGN:
                cols += [
                    _group_shape(x, ((2 * _k_group(el)[0][0], 1.0),), fwhm) for el in SUM_PEAKS
                ]
            return np.stack(cols, axis=1) * width_kev  # counts per channel for unit area

        peak_cols = peak_columns(e)
        slope = (peak_columns(e + step) - peak_columns(e - step)) / (2 * step)
        design = np.concatenate([peak_cols, hats], axis=1)
        q, _ = np.linalg.qr(design)
        bases.append(q)
        # Background counts under each peak within +-1 FWHM of its main line, per hat amplitude.
        under = np.zeros((hats.shape[1], peak_cols.shape[1]))
        for j in range(peak_cols.shape[1]):
            centre = e[int(np.argmax(peak_cols[:, j]))]
            m = np.abs(e - centre) <= float(fwhm_at(centre, fwhm_mn))
            under[:, j] = hats[m].sum(axis=0)
        fits.append((design, np.linalg.pinv(design), slope.T, under))
    return _RegionDesign(
        region,
        slice(lo, hi),
        e,
        tuple(_fit_operators(fits, k, e) for k in range(len(fits))),
        np.ascontiguousarray(np.concatenate(bases, axis=1)),
        tuple(peaks),
    )


def _fit_operators(
    raw: Sequence[tuple[FloatArray, FloatArray, FloatArray, FloatArray]], k: int, e: FloatArray
) -> _Fit:
    """The operators of ladder entry k from (design, pinv, slope, background under peaks)."""
    design, pinv, slope, under = raw[k]
    next_design = raw[min(k + 1, len(raw) - 1)][0]
    n_peaks = slope.shape[0]
    s_dir = -slope  # d(model)/d(offset) per unit peak amplitude
    t_dir = s_dir * e  # d(model)/d(gain)
    s_proj, t_proj = s_dir @ pinv.T, t_dir @ pinv.T
    s_perp = s_dir - s_proj @ design.T
    t_perp = t_dir - t_proj @ design.T
    return _Fit(
        pinv=np.ascontiguousarray(pinv),
        pinv_sq=np.ascontiguousarray(pinv[:n_peaks] ** 2),
        n_peaks=n_peaks,
        background_under=under,
        ops=np.ascontiguousarray(np.concatenate([pinv, design.T, s_perp, t_perp])),
        gram=design.T @ design,
        cross_next=design.T @ next_design,
        s_proj=s_proj,
        t_proj=t_proj,
        st_gram=np.stack([s_perp @ s_perp.T, s_perp @ t_perp.T, t_perp @ t_perp.T]),
        st_next=np.stack([s_perp @ next_design, t_perp @ next_design]),
    )


_CACHE: OrderedDict[tuple[int, float, float, str], tuple[_RegionDesign, ...]] = OrderedDict()
_CACHE_SIZE = 64


def _designs(
    n_channels: int, offset_kev: float, kev_per_channel: float, anode: str = DEFAULT_ANODE
) -> tuple[_RegionDesign, ...]:
    """Fit operators for a calibration and tube anode, cached: spectra of one instrument
    share them."""
    key = (n_channels, round(offset_kev, 9), round(kev_per_channel, 12), anode)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    energies = offset_kev + kev_per_channel * np.arange(n_channels, dtype=np.float64)
    built = tuple(_region_design(r, energies, kev_per_channel, anode) for r in REGIONS)
    _CACHE[key] = built
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return built


_LOG_LADDER = np.log(np.asarray(FWHM_LADDER_KEV))


def ladder_position(fwhm_mn_kev: float) -> float:
    """Fractional FWHM-ladder index of a resolution (clipped to the ladder)."""
    pos = np.interp(np.log(fwhm_mn_kev), _LOG_LADDER, np.arange(_LOG_LADDER.size))
    return float(pos)


def fwhm_of_position(position: FloatArray) -> FloatArray:
    """FWHM at Mn Kα (keV) of fractional ladder indices."""
    return np.exp(np.interp(position, np.arange(_LOG_LADDER.size), _LOG_LADDER))


def _stated_fwhm(spectrum: Spectrum) -> float | None:
    """Ladder position of a FWHM at Mn Kα the file states (eV), if it states one."""
    for key in ("fwhmmnka", "fwhm_mn_ka_ev", "fwhm_ev"):
        raw = spectrum.metadata.get(key)
        if raw is None:
            continue
        try:
            kev = float(str(raw).split()[0]) / 1000.0
        except ValueError:
            continue
        if 0.1 <= kev <= 0.4:
            return ladder_position(kev)
    return None


# ----------------------------------------------------------------------------- feature vector

FEATURE_NAMES: tuple[str, ...] = (
    *(f"frac_{el}" for el in TM),
    "lr_Ni_Co",
    "lr_Ni_Mn",
    "lr_Co_Mn",
    "lr_Fe_NiCoMn",
    *(f"light_{el}" for el in LIGHT),
    *(f"snr_{el}" for el in (*TM, *LIGHT)),
    *(f"pb_{el}" for el in ("Cd", "La", "Ce", "REE")),
    *(f"snr_{el}" for el in ("Cd", "La", "Ce", "REE")),
    # La + Ce L lines (4.6-5.3 keV): NiMH where the tube is too soft for their K lines
    "ree_l_share",
    "snr_REE_L",
    "tm_to_scatter",
    "compton_to_rayleigh",
    "log_total_counts",
    "log_tm_counts",
    "fwhm_mn_kev",
    "low_fit_residual",
    "cd_region_seen",
    "ree_region_seen",
)
N_FEATURES = len(FEATURE_NAMES)
INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _slog(x: FloatArray) -> FloatArray:
    """Signed log compression of a significance: keeps sign, tames huge values."""
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)
class LineFit:
    """Fitted line areas (counts), their 1-sigma and local background, for a batch."""

    area: dict[str, FloatArray]
    sigma: dict[str, FloatArray]
    background: dict[str, FloatArray]
    fwhm_mn_kev: FloatArray
    residual: FloatArray  # low region: residual sum of squares / Poisson expectation
    shift: FloatArray  # (n, 2): fitted energy-scale error, offset (keV) and relative gain
    seen: dict[str, FloatArray]  # 1.0 where the region is on scale
    # The tube's lines scattered by the sample, Compton and Rayleigh (counts): their ratio
    # tells a light matrix (plastics, oxides: much Compton) from steel, whatever the tube.
    tube_compton: FloatArray
    tube_rayleigh: FloatArray


# Largest energy-scale error the linearised correction is trusted with (gain drift of real
# MCAs is a few per mille; reference §1.3 resolution ~125-200 eV).
MAX_OFFSET_SHIFT_KEV = 0.04
MAX_GAIN_SHIFT = 0.006
PRIOR_OFFSET_KEV = 0.015  # typical size of the errors (1 sigma), for the ridge prior
PRIOR_GAIN = 0.002


@dataclass
class _RegionResult:
    area: dict[str, FloatArray]
    sigma: dict[str, FloatArray]
    background: dict[str, FloatArray]
    position: FloatArray  # fractional FWHM-ladder index
    residual: FloatArray
    shift: FloatArray


def _solve(
    design: _RegionDesign,
    y: FloatArray,
    position: FloatArray,
    shift: FloatArray | None,
    correct: bool,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Amplitudes, variances, background under peaks, residual and energy-scale error.

    Amplitudes at a fractional ladder position blend the fits of the two entries around it
    (they vary smoothly with the assumed width). With `correct`, the energy-scale error (offset
    + gain) is fitted by one Gauss-Newton step on the linearised model
    (or the given `shift` is applied) and the amplitudes are corrected for it.
    """
    b = y.shape[0]
    n_peaks = design.fits[0].n_peaks
    last = len(design.fits) - 1
    lo = np.floor(position).astype(np.int64)
    w = (position - lo)[:, None]
    n_cols = design.fits[0].pinv.shape[0]
    amps = np.empty((b, n_cols))
    var = np.empty((b, n_peaks))
    bg = np.empty((b, n_peaks))
    resid = np.empty(b)
    out_shift = np.zeros((b, 2)) if shift is None else shift
    ladder = np.unique(lo)
    yy_all = np.einsum("rn,rn->r", y, y)
    yvar_all = np.maximum(y, 1.0)
    for k in ladder:
        # one ladder entry for the whole batch (the usual case): no row gathering
        rows: slice | npt.NDArray[np.intp] = (
            slice(None) if len(ladder) == 1 else np.flatnonzero(lo == k)
        )
        f0, f1 = design.fits[int(k)], design.fits[min(int(k) + 1, last)]
        yk, yvar, wk = y[rows], yvar_all[rows], w[rows]
        w1 = wk[:, 0]
        o0 = yk @ (f0.ops if correct else f0.ops[: 2 * n_cols]).T
        o1 = yk @ f1.ops[: 2 * n_cols].T
        a = (1 - wk) * o0[:, :n_cols] + wk * o1[:, :n_cols]
        var[rows] = (1 - wk) * (yvar @ f0.pinv_sq.T) + wk * (yvar @ f1.pinv_sq.T)
        # |y - blended model|^2 from Grams: the blend of shapes is the blend of amplitudes.
        rr = (
            yy_all[rows]
            - 2 * (1 - w1) * _rowdot(o0[:, n_cols : 2 * n_cols], a)
            - 2 * w1 * _rowdot(o1[:, n_cols : 2 * n_cols], a)
            + (1 - w1) ** 2 * _quad(f0.gram, a)
            + 2 * w1 * (1 - w1) * _quad(f0.cross_next, a)
            + w1**2 * _quad(f1.gram, a)
        )
        if correct:
            # d(model)/d(offset) and d(model)/d(gain): the fitted peaks, shifted (shapes of
            # the lower entry: a width step changes the correction only to second order),
            # minus their projection on the design.
            ap = a[:, :n_peaks]
            p0, p1 = ap @ f0.s_proj, ap @ f0.t_proj
            n00, n01, n11 = (_quad(g, ap) for g in f0.st_gram)
            ys, yt = o0[:, 2 * n_cols : 2 * n_cols + n_peaks], o0[:, 2 * n_cols + n_peaks :]
            g0 = _rowdot(ap, ys) - w1 * _rowdot(ap, a @ f0.st_next[0].T)
            g1 = _rowdot(ap, yt) - w1 * _rowdot(ap, a @ f0.st_next[1].T)
            # Ridge prior on the scale error: with one line group, offset and gain trade off.
            noise = yvar.mean(axis=1)
            m00 = n00 + noise / PRIOR_OFFSET_KEV**2
            m11 = n11 + noise / PRIOR_GAIN**2
            if shift is None:
                det = m00 * m11 - n01 * n01
                c0 = np.clip(
                    (m11 * g0 - n01 * g1) / det, -MAX_OFFSET_SHIFT_KEV, MAX_OFFSET_SHIFT_KEV
                )
                c1 = np.clip((m00 * g1 - n01 * g0) / det, -MAX_GAIN_SHIFT, MAX_GAIN_SHIFT)
                out_shift[rows, 0], out_shift[rows, 1] = c0, c1
            else:
                c0, c1 = shift[rows, 0], shift[rows, 1]
            a = a - p0 * c0[:, None] - p1 * c1[:, None]
            rr = rr - 2 * c0 * g0 - 2 * c1 * g1 + c0**2 * n00 + 2 * c0 * c1 * n01 + c1**2 * n11
        amps[rows] = a
        resid[rows] = np.maximum(rr, 0.0)
        bg[rows] = np.maximum(a[:, n_peaks:], 0.0) @ f0.background_under
    return amps, var, bg, resid, out_shift


def _rowdot(u: FloatArray, v: FloatArray) -> FloatArray:
    """Row-wise dot products."""
    return np.einsum("rn,rn->r", u, v)


def _quad(gram: FloatArray, a: FloatArray) -> FloatArray:
    """Row-wise quadratic forms a_r . gram . a_r."""
    return _rowdot(a @ gram, a)


def _ladder_position(resid: FloatArray) -> FloatArray:
    """Fractional ladder index of least residual: parabola through the best and its
    neighbours (the ladder is geometric, so this interpolates in log FWHM)."""
    b, m = resid.shape
    k = np.clip(np.argmin(resid, axis=1), 1, m - 2)
    rows = np.arange(b)
    r0, r1, r2 = resid[rows, k - 1], resid[rows, k], resid[rows, k + 1]
    curv = r0 - 2 * r1 + r2
    t = np.where(curv > 0, 0.5 * (r0 - r2) / np.where(curv > 0, curv, 1.0), 0.0)
    return np.clip(k + np.clip(t, -1.0, 1.0), 0.0, m - 1.0)


def _fit_region(
    design: _RegionDesign,
    counts: FloatArray,
    position: FloatArray | None,
    shift: FloatArray | None,
) -> _RegionResult:
    """Fit one region for a batch (rows = spectra).

    `position` is the fractional FWHM-ladder index; when None it is chosen by least residual.
    The fit at a fractional position blends the fits of the two ladder entries around it
    (amplitudes vary smoothly with the assumed width).
    """
    b = counts.shape[0]
    names = design.peak_names
    if not design.fits:
        zero = np.zeros(b)
        return _RegionResult(
            {n: zero for n in names},
            {n: zero + 1.0 for n in names},
            {n: zero for n in names},
            np.zeros(b),
            zero,
            np.zeros((b, 2)),
        )
    y = counts[:, design.channels]
    n_cols = design.fits[0].pinv.shape[0]
    if position is None:
        yy = np.einsum("ij,ij->i", y, y)
        proj = (y @ design.q_all).reshape(b, len(design.fits), n_cols)
        position = _ladder_position(yy[:, None] - np.einsum("ijk,ijk->ij", proj, proj))
    amps, var, bg, resid, s0 = _solve(design, y, position, shift, design.region is LOW)
    dof = max(y.shape[1] - n_cols, 1)
    resid_norm = resid / np.maximum(np.maximum(y, 1.0).sum(axis=1), 1.0) * (y.shape[1] / dof)
    sigma = np.sqrt(np.maximum(var, 1.0))
    return _RegionResult(
        {n: amps[:, j] for j, n in enumerate(names)},
        {n: sigma[:, j] for j, n in enumerate(names)},
        {n: bg[:, j] for j, n in enumerate(names)},
        position,
        resid_norm,
        s0,
    )


SCATTER_BAND_KEV = (12.0, 19.0)  # continuum + Compton, below the Rh/Ag tube lines


@dataclass(frozen=True)
class _Batch:
    """What the features need beyond the line fit: count totals."""

    fit: LineFit
    totals: FloatArray
    scatter: FloatArray


def tube_anode(spectrum: Spectrum) -> str:
    """The tube anode a spectrum's file states (element symbol), else DEFAULT_ANODE."""
    for key, value in spectrum.metadata.items():
        if key.lower() in ANODE_KEYS:
            symbol = str(value).strip().capitalize()
            try:
                z = xraylib.SymbolToAtomicNumber(symbol)
            except ValueError:
                continue
            if 22 <= z <= 92:
                return symbol
    return DEFAULT_ANODE


def _channel_at(kev: float, offset: float, gain: float, n_ch: int) -> int:
    """First channel at or above `kev`, clipped to 0..n_ch (an absurd calibration puts it at
    +-inf: clipped, not an OverflowError)."""
    c = (kev - offset) / gain
    return 0 if c <= 0 else n_ch if c >= n_ch else math.ceil(c)


def _fit_batch(spectra: Sequence[Spectrum]) -> _Batch:
    """Fit all regions of a batch of spectra, grouped by calibration."""
    n = len(spectra)
    groups: dict[tuple[int, float, float, str], list[int]] = {}
    for i, s in enumerate(spectra):
        key = (s.n_channels, s.offset_kev, s.kev_per_channel, tube_anode(s))
        groups.setdefault(key, []).append(i)
    area: dict[str, FloatArray] = {}
    sigma: dict[str, FloatArray] = {}
    back: dict[str, FloatArray] = {}
    seen = {r.name: np.zeros(n) for r in REGIONS}
    fwhm = np.zeros(n)
    residual = np.zeros(n)
    shift = np.zeros((n, 2))
    totals = np.zeros(n)
    scatter = np.zeros(n)
    compton = np.zeros(n)
    rayleigh = np.zeros(n)

    def put(target: dict[str, FloatArray], values: dict[str, FloatArray], rows: list[int]) -> None:
        if len(groups) == 1:  # one calibration (the line's usual batch): rows are all, in order
            target.update(values)
            return
        for name, v in values.items():
            column = target.get(name)
            if column is None:
                column = target[name] = np.zeros(n)
            column[rows] = v

    for (n_ch, offset, gain, anode), rows in groups.items():
        designs = _designs(n_ch, offset, gain, anode)
        own = {anode, f"{anode}_L"}  # the tube's own lines, scattered: not in the sample
        counts = np.stack([spectra[i].counts for i in rows])
        totals[rows] = counts.sum(axis=1)
        lo, hi = (_channel_at(x, offset, gain, n_ch) for x in SCATTER_BAND_KEV)
        scatter[rows] = counts[:, lo:hi].sum(axis=1)
        stated = [_stated_fwhm(spectra[i]) for i in rows]
        idx = None if None in stated else np.asarray(stated, dtype=np.float64)
        scale: FloatArray | None = None
        for d in designs:
            res = _fit_region(d, counts, idx, scale)
            if d.region is LOW and d.fits:
                idx = res.position
                scale = res.shift
                fwhm[rows] = fwhm_of_position(idx)
                residual[rows] = res.residual
                shift[rows] = res.shift
            seen[d.region.name][rows] = 1.0 if d.fits else 0.0
            for name, value in res.area.items():
                if "_compton" in name:
                    compton[rows] += np.maximum(value, 0.0)
                elif "_rayleigh" in name or name in own:
                    rayleigh[rows] += np.maximum(value, 0.0)
            for name in own & set(res.area):
                res.area[name] = np.zeros(len(rows))
            put(area, res.area, rows)
            put(sigma, res.sigma, rows)
            put(back, res.background, rows)
    fit = LineFit(area, sigma, back, fwhm, residual, shift, seen, compton, rayleigh)
    return _Batch(fit, totals, scatter)


def fit_lines(spectra: Sequence[Spectrum]) -> LineFit:
    """Fitted line areas of a batch of spectra (for inspection and tests)."""
    return _fit_batch(spectra).fit


# Lines fitted that no battery chemistry explains as a major signal (reference §2.1): Ca, Ti, Cr
# (a cell shows them as traces, from the can steel or contamination) and the FOREIGN region.
FOREIGN_LINES: tuple[str, ...] = (
    "Ca",
    "Ti",
    "Cr",
    *FOREIGN.k_lines,
    *(f"{el}_L" for el in FOREIGN.l_lines),
)


def foreign_shares(fit: LineFit) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
    """Per foreign line: its share of the metal + foreign line signal, and its significance."""
    area = {el: np.maximum(fit.area[el], 0.0) for el in (*TM, *FOREIGN_LINES) if el in fit.area}
    if not area:
        return {}, {}
    denom = np.maximum(sum(area.values()), 1.0)
    share = {el: area[el] / denom for el in FOREIGN_LINES if el in area}
    snr = {el: fit.area[el] / fit.sigma[el] for el in share}
    return share, snr


def _features_from_fit(fit: LineFit, totals: FloatArray, scatter: FloatArray) -> FloatArray:
    """Ratios, fractions and significances from fitted line areas."""
    lines = (*TM, *LIGHT)
    a = {el: np.maximum(fit.area[el], 0.0) for el in lines}
    tm_total = sum(a[el] for el in TM)
    denom = np.maximum(tm_total, 1.0)
    k = 0.005 * denom + 1.0  # keeps log ratios finite; relative, so count level drops out

    def lr(x: FloatArray, y: FloatArray) -> FloatArray:
        return np.log((x + k) / (y + k))

    def side_by_side(*columns: FloatArray) -> FloatArray:
        return np.stack(columns, axis=1)

    def of(table: dict[str, FloatArray], elements: Sequence[str]) -> list[FloatArray]:
        return [table[el] for el in elements]

    ree_l = fit.area["La_L"] + fit.area["Ce_L"]
    ree_area = fit.area["La"] + fit.area["Ce"] + fit.area["Pr"] + fit.area["Nd"]
    ree_bg = fit.background["La"] + fit.background["Ce"]
    ree_sigma = np.sqrt(sum(fit.sigma[el] ** 2 for el in ("La", "Ce", "Pr", "Nd")))
    cd_la_ce = ("Cd", "La", "Ce")
    heavy = side_by_side(*of(fit.area, cd_la_ce), ree_area)
    heavy_bg = side_by_side(*of(fit.background, cd_la_ce), ree_bg)
    heavy_sigma = side_by_side(*of(fit.sigma, cd_la_ce), ree_sigma)
    # Blocks of columns in FEATURE_NAMES order.
    blocks = [
        side_by_side(*of(a, TM)) / denom[:, None],
        side_by_side(
            lr(a["Ni"], a["Co"]),
            lr(a["Ni"], a["Mn"]),
            lr(a["Co"], a["Mn"]),
            lr(a["Fe"], a["Ni"] + a["Co"] + a["Mn"]),
        ),
        np.log((side_by_side(*of(a, LIGHT)) + k[:, None]) / denom[:, None]),
        _slog(side_by_side(*of(fit.area, lines)) / side_by_side(*of(fit.sigma, lines))),
        _slog(heavy / np.maximum(heavy_bg, 10.0)),
        _slog(heavy / heavy_sigma),
        side_by_side(
            np.log((np.maximum(ree_l, 0.0) + k) / denom),
            _slog(ree_l / np.sqrt(fit.sigma["La_L"] ** 2 + fit.sigma["Ce_L"] ** 2)),
        ),
        side_by_side(
            np.log((tm_total + 1.0) / (scatter + 1.0)),
            np.log((fit.tube_compton + 10.0) / (fit.tube_rayleigh + 10.0)),
            np.log10(np.maximum(totals, 1.0)),
            np.log10(tm_total + 1.0),
            fit.fwhm_mn_kev,
            np.log10(np.maximum(fit.residual, 1e-3)),
            fit.seen["cd"],
            fit.seen["ree"],
        ),
    ]
    out = np.concatenate(blocks, axis=1)
    out[~np.isfinite(out)] = 0.0
    return out


def extract_batch(spectra: Sequence[Spectrum]) -> FloatArray:
    """Feature matrix (n_spectra, N_FEATURES) for a batch of spectra of any calibrations."""
    return extract_with_fit(spectra)[0]


def extract_with_fit(spectra: Sequence[Spectrum]) -> tuple[FloatArray, LineFit]:
    """Feature matrix and the line fit it came from (the classifier reads foreign lines there)."""
    if not spectra:
        return np.zeros((0, N_FEATURES)), fit_lines(spectra)
    batch = _fit_batch(spectra)
    return _features_from_fit(batch.fit, batch.totals, batch.scatter), batch.fit


def extract(spectrum: Spectrum) -> FloatArray:
    """Feature vector (N_FEATURES,) of one spectrum."""
    return extract_batch([spectrum])[0]
