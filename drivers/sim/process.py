"""Leach tank process model behind the simulated PLC: first-order dynamics plus noise.

Plausible, not rigorous: a PI loop in the "PLC" doses acid or caustic so the tank pH
settles at its setpoint; temperature follows its setpoint; ORP follows pH with a Nernst-like
slope; the feed tank level wanders around 60 %. Leach conditions (70 °C, sulfuric acid) from
docs/reference/xrf-and-process.md §4.2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NERNST_MV_PER_PH = 59.2  # 2.303 RT/F at 25 °C
ORP_AT_PH0_MV = 650.0  # acidic leach liquor with peroxide; sets ORP ~560 mV at pH 1.5
PH_NO_DOSING = 4.0  # black mass (Li, Ni, Co hydroxides, carbonates) consumes acid
PH_PER_LPM_ACID = 0.35  # equilibrium pH drop per L/min of sulfuric acid
PH_PER_LPM_CAUSTIC = 0.30  # equilibrium pH rise per L/min of caustic soda
MAX_DOSING_LPM = 12.0


@dataclass
class LeachTank:
    """Leach tank state; `step(dt)` advances it, `values()` gives what the PLC reports."""

    ph_setpoint: float = 1.5
    temp_setpoint_c: float = 70.0  # reference §4.2: leach at 70 °C
    ph: float = 1.5
    temp_c: float = 70.0
    feed_level_pct: float = 60.0
    h2so4_lpm: float = 0.0
    naoh_lpm: float = 0.0
    tau_ph_s: float = 20.0
    tau_temp_s: float = 120.0
    kp_lpm_per_ph: float = 4.0
    ki_lpm_per_ph_s: float = 0.4
    noise: bool = True
    seed: int = 1
    _integral: float = 0.0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng([self.seed, 0x1EAC])
        self.h2so4_lpm = (PH_NO_DOSING - self.ph_setpoint) / PH_PER_LPM_ACID
        self._integral = self.h2so4_lpm / self.ki_lpm_per_ph_s

    def step(self, dt: float) -> None:
        """Advance the tank by dt seconds (PI dosing, first-order pH and temperature)."""
        if dt <= 0:
            return
        error = self.ph - self.ph_setpoint  # positive: too alkaline, needs acid
        self._integral += error * dt
        u = self.kp_lpm_per_ph * error + self.ki_lpm_per_ph_s * self._integral
        u_max = MAX_DOSING_LPM
        if abs(u) > u_max:  # anti-windup: stop integrating at the actuator limit
            self._integral -= error * dt
            u = max(-u_max, min(u_max, u))
        self.h2so4_lpm = max(u, 0.0)
        self.naoh_lpm = max(-u, 0.0)
        ph_eq = PH_NO_DOSING - PH_PER_LPM_ACID * self.h2so4_lpm + PH_PER_LPM_CAUSTIC * self.naoh_lpm
        self.ph += (ph_eq - self.ph) * min(1.0, dt / self.tau_ph_s)
        self.temp_c += (self.temp_setpoint_c - self.temp_c) * min(1.0, dt / self.tau_temp_s)
        wander = self._rng.normal(0.0, 0.5 * np.sqrt(dt)) if self.noise else 0.0
        self.feed_level_pct += (60.0 - self.feed_level_pct) * min(1.0, dt / 300.0) + wander
        self.feed_level_pct = min(100.0, max(0.0, self.feed_level_pct))

    def values(self) -> dict[str, float]:
        """Measured values (with sensor noise) keyed by PLC tag name."""
        n = self._rng.normal if self.noise else (lambda _m, _s: 0.0)
        ph = self.ph + n(0.0, 0.01)
        return {
            "leach.ph": ph,
            "leach.temp_c": self.temp_c + n(0.0, 0.05),
            "leach.orp_mv": ORP_AT_PH0_MV - NERNST_MV_PER_PH * ph + n(0.0, 2.0),
            "tank.feed_level_pct": self.feed_level_pct,
            "dosing.h2so4_lpm": self.h2so4_lpm,
            "dosing.naoh_lpm": self.naoh_lpm,
        }
