"""Ground truth of simulated cells: one deterministic truth per sequence number.

Every simulator (PLC, XRF heads, camera, passport writer) derives the same truth from
(seed, seq) alone, so they agree without sharing state. The truth is for simulators,
tests and run summaries, never for the controller's decisions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from models.chemistry import LI_ION

FloatArray = npt.NDArray[np.float64]

# EV cathode shares 2023: NCM 66 %, LFP 24 %, NCA 10 % (docs/reference/xrf-and-process.md
# §2.1); NCM split over ratios, plus LCO/LMO and a few stray non-Li-ion cells.
DEFAULT_CHEMISTRY_MIX: dict[str, float] = {
    "NMC111": 0.08,
    "NMC532": 0.14,
    "NMC622": 0.18,
    "NMC811": 0.20,
    "NCA": 0.09,
    "LFP": 0.22,
    "LCO": 0.03,
    "LMO": 0.03,
    "NiMH": 0.01,
    "NiCd": 0.01,
    "ZnMn": 0.01,
}

COPY_LOOKBACK = 20  # a copied label carries the passport of the nearest of this many before
_COPY_SALT = 0xC0


class CellFormat(StrEnum):
    """How the cell is presented to the XRF head (docs/architecture.md, 'What the XRF can see')."""

    pouch = "pouch"  # through the laminate
    opened = "opened"  # measurement window cut, casing at the edge of the beam spot
    steel_can = "steel_can"  # intact nickel-plated steel can: only the can is visible


DEFAULT_FORMAT_MIX: dict[str, float] = {"pouch": 0.45, "opened": 0.45, "steel_can": 0.10}


@dataclass(frozen=True)
class StreamMix:
    """What the simulated infeed carries; all shares are probabilities per cell."""

    chemistry: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CHEMISTRY_MIX))
    formats: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FORMAT_MIX))
    passport_share: float = 0.7  # cells whose label carries a passport QR code
    mislabel_share: float = 0.01  # of those, passport states a wrong chemistry
    unreadable_label_share: float = 0.03
    damaged_share: float = 0.01
    mixture_share: float = 0.02  # 70/30 mixture of two chemistries (shredded / mixed feed)
    copied_label_share: float = 0.0  # label copies the passport of a cell shortly before


@dataclass(frozen=True)
class CellTruth:
    """Everything the simulators know about one cell."""

    seq: int
    chemistry: str
    format: CellFormat
    mass_g: float
    passport_id: str | None  # None: no passport on the label
    passport_chemistry: str | None  # what the passport states (wrong when mislabelled)
    label_readable: bool
    damaged: bool
    second_chemistry: str | None = None  # for mixtures: the 30 % component
    cu_foil: float = 0.0  # relative Cu foil signal (0..1)
    al_foil: float = 0.0

    @classmethod
    def bare(cls, chemistry: str, fmt: CellFormat, seq: int = 0) -> CellTruth:
        """A plain 46 g cell (no passport, label readable, undamaged), for plots and tests."""
        return cls(
            seq=seq,
            chemistry=chemistry,
            format=fmt,
            mass_g=46.0,
            passport_id=None,
            passport_chemistry=None,
            label_readable=True,
            damaged=False,
        )

    @property
    def mislabelled(self) -> bool:
        return self.passport_chemistry is not None and self.passport_chemistry != self.chemistry


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """One key drawn by weight: what `rng.choice(len(keys), p=...)` draws (one uniform
    against the cumulative weights), at a tenth of its cost (it runs for every cell)."""
    keys, cdf = _cumulative(tuple(weights.items()))
    return keys[int(cdf.searchsorted(rng.random(), side="right"))]


@lru_cache(maxsize=64)
def _cumulative(items: tuple[tuple[str, float], ...]) -> tuple[tuple[str, ...], FloatArray]:
    cdf = np.cumsum(np.asarray([w for _, w in items], dtype=float))
    return tuple(k for k, _ in items), cdf / cdf[-1]


def passport_uuid(seed: int, seq: int, batch: str = "") -> str:
    """Stable passport id of a simulated cell, as Catena-X writes them (urn:uuid:...)."""
    name = f"plant-sim/{seed}/{batch}/{seq}" if batch else f"plant-sim/{seed}/{seq}"
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, name))


@dataclass(frozen=True)
class CellStream:
    """Deterministic truth for any sequence number."""

    seed: int = 1
    mix: StreamMix = field(default_factory=StreamMix)
    batch: str = ""  # the cells of another delivery: other passports, the same physics

    def __post_init__(self) -> None:
        # PLC, XRF heads and camera each ask for a cell's truth; drawing it costs ~0.1 ms.
        # 8192 truths (~4 MB) outlast the passport import's look-ahead (5,000 cells).
        object.__setattr__(self, "_cached", lru_cache(maxsize=8192)(self._draw))

    def truth(self, seq: int) -> CellTruth:
        """The truth of cell `seq`."""
        return self._cached(seq)  # type: ignore[attr-defined,no-any-return]

    def _copied_label(self, seq: int) -> CellTruth | None:
        """The earlier cell whose passport this cell's label copies, if it copies one (a
        counterfeit or re-used label); drawn apart so the rest of the truth stays the same."""
        if self.mix.copied_label_share <= 0 or seq <= 1:
            return None
        rng = np.random.default_rng([self.seed, seq, _COPY_SALT])
        if rng.random() >= self.mix.copied_label_share:
            return None
        for back in range(1, min(seq, COPY_LOOKBACK + 1)):
            earlier = self.truth(seq - back)
            if earlier.passport_id is not None:
                return earlier
        return None

    def _draw(self, seq: int) -> CellTruth:
        rng = np.random.default_rng([self.seed, seq])
        mix = self.mix
        chem = _pick(rng, mix.chemistry)
        li_ion = chem in LI_ION
        fmt = CellFormat(_pick(rng, mix.formats))
        mass = float(rng.normal(46.0, 4.0) if fmt is CellFormat.steel_can else rng.normal(60, 15))
        mass = max(5.0, mass)
        has_passport = li_ion and rng.random() < mix.passport_share
        passport_chem: str | None = None
        pid: str | None = None
        if has_passport:
            pid = passport_uuid(self.seed, seq, self.batch)
            passport_chem = chem
            if rng.random() < mix.mislabel_share:
                others = [
                    c for c in sorted(LI_ION) if c != chem
                ]  # sorted: a set's order varies by process
                passport_chem = others[int(rng.integers(len(others)))]
        copied = self._copied_label(seq)
        if copied is not None:
            pid, passport_chem = copied.passport_id, copied.passport_chemistry
        second = None
        if li_ion and fmt is not CellFormat.steel_can and rng.random() < mix.mixture_share:
            others = [c for c in sorted(LI_ION) if c != chem]
            second = others[int(rng.integers(len(others)))]
        return CellTruth(
            seq=seq,
            chemistry=chem,
            format=fmt,
            mass_g=round(mass, 1),
            passport_id=pid,
            passport_chemistry=passport_chem,
            label_readable=bool(rng.random() >= mix.unreadable_label_share),
            damaged=bool(rng.random() < mix.damaged_share),
            second_chemistry=second,
            cu_foil=float(rng.uniform(0.0, 0.3)) if fmt is CellFormat.opened else 0.0,
            al_foil=float(rng.uniform(0.0, 0.3)) if fmt is CellFormat.opened else 0.0,
        )
