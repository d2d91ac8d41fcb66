"""XRF instrument profiles: the spectrometers the simulator can imitate.

They differ the way real instruments do (channel count, keV per channel, offset, resolution,
tube voltage, gain drift, count rate, detector type), so that a classifier trained on some of
them can be tested on instruments it has never seen (`HELDOUT_PROFILES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InstrumentProfile:
    """One spectrometer: MCA calibration, detector resolution, tube and count rate."""

    name: str
    n_channels: int
    kev_per_channel: float
    offset_kev: float
    fwhm_mn_ka_ev: float  # detector FWHM at Mn Kα (5.899 keV)
    tube_kv: float
    anode: str  # tube anode element symbol
    gain_drift: float  # relative; each spectrum's true gain is off by up to ± this
    count_rate_cps: float  # input count rate on an opened NMC622 cell
    detector: str  # "SDD" or "SiPIN"
    air_path_cm: float = 1.0  # air between tube window, sample and detector window
    # Make-up beyond the detector type's typical one (0 = the type's): detector Be window (µm),
    # pile-up resolving time (s), incomplete-charge shelf fraction.
    window_um: float = 0.0
    pileup_s: float = 0.0
    shelf: float = 0.0
    compton_doppler: float = 0.011  # Doppler width of Compton peaks, sigma / E (matrix, geometry)
    # Tube make-up: anode self-absorption depth (g/cm², 0 = typical), strength of the anode's
    # lines against the continuum, primary-beam filter (element, µm; 0 = none).
    anode_depth: float = 0.0
    # Scatter against fluorescence: the scatter angle and the beam's polarisation set it
    # (a factor on the scattered tube spectrum).
    scatter_scale: float = 1.0
    # Relative line sensitivities of the transition metals (Ti..Zn) spread by this much (1 sigma,
    # log) per instrument: what detector efficiency and geometry change and the model does not
    # capture (secondary fluorescence it computes, xrfphysics._secondary).
    sensitivity_spread: float = 0.0
    tube_line_scale: float = 1.0
    tube_filter: str = "Al"
    tube_filter_um: float = 0.0
    # Wide training physics: each cell drawn from one of `variants` sample make-ups (laminate,
    # can and plating, binder and electrolyte, dopants, composition spread; xrfphysics).
    variants: int = 1

    def __post_init__(self) -> None:
        if self.detector not in ("SDD", "SiPIN"):
            raise ValueError(f"profile {self.name}: detector must be SDD or SiPIN")
        # Fano-limited Si resolution at Mn Kα is ~117 eV; nothing real is better.
        if not 118.0 <= self.fwhm_mn_ka_ev <= 250.0:
            raise ValueError(f"profile {self.name}: FWHM at Mn Kα must be 118-250 eV")
        if self.n_channels < 256 or self.kev_per_channel <= 0 or self.tube_kv <= 0:
            raise ValueError(f"profile {self.name}: channels, keV/channel and kV must be > 0")

    @property
    def max_kev(self) -> float:
        """Energy of the last channel."""
        return self.offset_kev + self.kev_per_channel * (self.n_channels - 1)


# SDD ~125 eV at Mn Kα, Si-PIN 145-200 eV (docs/reference/xrf-and-process.md §1.3).
PROFILES: dict[str, InstrumentProfile] = {
    p.name: p
    for p in (
        InstrumentProfile(
            "bench_sdd_2048", 2048, 0.0200, -0.0200, 128.0, 50.0, "Rh", 0.0010, 100_000, "SDD"
        ),
        InstrumentProfile(
            "inline_sdd_4096", 4096, 0.0100, 0.0000, 135.0, 50.0, "Rh", 0.0015, 400_000, "SDD"
        ),
        InstrumentProfile(
            "handheld_sdd_40kv", 2048, 0.0200, 0.0150, 145.0, 40.0, "Rh", 0.0020, 60_000, "SDD"
        ),
        InstrumentProfile(
            "sipin_1024", 1024, 0.0400, -0.0500, 175.0, 50.0, "Rh", 0.0030, 20_000, "SiPIN"
        ),
        # Held out: never used for training, only for testing generalisation.
        InstrumentProfile(
            "fast_sdd_4096",
            4096,
            0.0125,
            -0.1000,
            140.0,
            50.0,
            "Rh",
            0.0020,
            250_000,
            "SDD",
            air_path_cm=1.5,
        ),
        InstrumentProfile(
            "sipin_2048_45kv",
            2048,
            0.0220,
            0.0300,
            160.0,
            45.0,
            "Rh",
            0.0025,
            30_000,
            "SiPIN",
            air_path_cm=0.8,
        ),
    )
}

ANODES = ("Rh", "W", "Ag", "Au")


TUBE_KV = (35.0, 40.0, 45.0, 50.0, 55.0, 60.0)


def wide_profiles(n: int = 24, seed: int = 2026) -> tuple[InstrumentProfile, ...]:
    """Randomised training instruments, so that the world's heads fall inside the training
    physics: tube anode (Rh, W, Ag, Au) and 35-60 kV (every anode at every voltage of
    `TUBE_KV` when n >= 24: which lines a tube excites depends on both), detector kind,
    resolution, window, pile-up and shelf, air path, channel count, gain and offset, gain
    drift, count rate."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sdd = bool(rng.random() < 0.65)
        n_ch = int(rng.choice([1024, 2048, 4096]))
        kv = TUBE_KV[(i // len(ANODES) + i) % len(TUBE_KV)]
        top = float(rng.uniform(max(kv, 41.5) + 0.5, 62.0))  # last channel's energy
        offset = float(rng.uniform(-0.12, 0.12))
        top = min(top, offset + 0.042 * (n_ch - 1))  # at most 42 eV per channel
        out.append(
            InstrumentProfile(
                f"wide_{i:02d}",
                n_ch,
                round((top - offset) / (n_ch - 1), 6),
                round(offset, 4),
                float(rng.uniform(122.0, 150.0) if sdd else rng.uniform(145.0, 240.0)),
                kv,
                ANODES[i % len(ANODES)],
                float(rng.uniform(0.0005, 0.004)),
                float(10 ** rng.uniform(4.0, 5.7)),
                "SDD" if sdd else "SiPIN",
                air_path_cm=float(rng.uniform(0.2, 2.5)),
                window_um=float(rng.uniform(8.0, 30.0)),
                pileup_s=float(10 ** rng.uniform(-7.3, -5.7)),
                shelf=float(rng.uniform(0.001, 0.012)),
                compton_doppler=float(rng.uniform(0.004, 0.014)),
                anode_depth=float(10 ** rng.uniform(-3.5, -2.5)),
                scatter_scale=float(10 ** rng.uniform(-0.8, 0.2)),
                sensitivity_spread=0.12,
                tube_line_scale=float(10 ** rng.uniform(-0.5, 0.5)),
                tube_filter=(filt := _filter(rng))[0],
                tube_filter_um=filt[1],
                variants=4,
            )
        )
    return tuple(out)


def _filter(rng: np.random.Generator) -> tuple[str, float]:
    """A primary-beam filter (element, µm): none, Al 25-200 µm or Ti 10-50 µm."""
    u = rng.random()
    if u < 0.4:
        return "Al", 0.0
    if u < 0.8:
        return "Al", float(rng.uniform(25.0, 200.0))
    return "Ti", float(rng.uniform(10.0, 50.0))


WIDE_PROFILES: tuple[InstrumentProfile, ...] = wide_profiles()
PROFILES.update({p.name: p for p in WIDE_PROFILES})

TRAIN_PROFILES: tuple[str, ...] = (
    "bench_sdd_2048",
    "inline_sdd_4096",
    "handheld_sdd_40kv",
    "sipin_1024",
    *(p.name for p in WIDE_PROFILES),
)
HELDOUT_PROFILES: tuple[str, ...] = ("fast_sdd_4096", "sipin_2048_45kv")
