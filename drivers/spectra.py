"""The Spectrum type shared by drivers and models, and spectrum file formats."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


class SpectrumError(ValueError):
    """A spectrum (file or instrument reply) is unusable; the message names the source."""


@dataclass(eq=False)
class Spectrum:
    """Counts per channel with a linear energy calibration: E(ch) = offset + gain * ch (keV)."""

    counts: npt.NDArray[np.float64]
    offset_kev: float
    kev_per_channel: float
    live_time_s: float
    real_time_s: float | None = None
    tube_kv: float | None = None
    source: str = "spectrum"
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts, dtype=np.float64)
        if counts.ndim != 1 or counts.size < 16:
            raise SpectrumError(f"{self.source}: expected at least 16 channels, got {counts.shape}")
        if not np.all(np.isfinite(counts)):
            bad = int(np.flatnonzero(~np.isfinite(counts))[0])
            raise SpectrumError(f"{self.source}: channel {bad} is not a finite number")
        if np.any(counts < 0):
            bad = int(np.flatnonzero(counts < 0)[0])
            raise SpectrumError(f"{self.source}: channel {bad} has negative counts {counts[bad]}")
        if not (np.isfinite(self.kev_per_channel) and self.kev_per_channel > 0):
            raise SpectrumError(
                f"{self.source}: energy per channel must be > 0 keV, got {self.kev_per_channel}"
            )
        if not np.isfinite(self.offset_kev):
            raise SpectrumError(f"{self.source}: energy offset is not a number")
        if not (np.isfinite(self.live_time_s) and self.live_time_s > 0):
            raise SpectrumError(f"{self.source}: live time must be > 0 s, got {self.live_time_s}")
        self.counts = counts

    @property
    def n_channels(self) -> int:
        return int(self.counts.size)

    def energies(self) -> npt.NDArray[np.float64]:
        """Energy (keV) of each channel."""
        return self.offset_kev + self.kev_per_channel * np.arange(self.n_channels, dtype=np.float64)

    def channel_of(self, kev: float) -> float:
        """Fractional channel index of an energy."""
        return (kev - self.offset_kev) / self.kev_per_channel
