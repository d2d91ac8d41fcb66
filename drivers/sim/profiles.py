"""XRF instrument profiles: the spectrometers the simulator can imitate.

They differ the way real instruments do (channel count, keV per channel, offset, resolution,
tube voltage, gain drift, count rate, detector type), so that a classifier trained on some of
them can be tested on instruments it has never seen (`HELDOUT_PROFILES`).
"""

from __future__ import annotations

from dataclasses import dataclass


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

TRAIN_PROFILES: tuple[str, ...] = (
    "bench_sdd_2048",
    "inline_sdd_4096",
    "handheld_sdd_40kv",
    "sipin_1024",
)
HELDOUT_PROFILES: tuple[str, ...] = ("fast_sdd_4096", "sipin_2048_45kv")
