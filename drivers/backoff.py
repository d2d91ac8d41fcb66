"""The one retry backoff of the plant: exponential from a first wait, capped, with jitter.

Every link that retries (PLC, XRF heads, the database worker, the child processes) waits by
these rules, so a plant-wide outage is retried the same way everywhere and many clients
spread apart instead of reconnecting in lockstep.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

MIN_WAIT_S = 0.01  # a configured zero or negative wait is raised to this: no busy loop


def backoff_delay(
    failures: int, first_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """Wait before attempt `failures + 1`: `first_s` doubled per failure up to `cap_s`; with
    `rng`, equal jitter (half fixed, half random)."""
    lo = max(first_s, MIN_WAIT_S)
    base = min(max(cap_s, lo), lo * 2 ** min(max(failures, 1) - 1, 30))
    return base if rng is None else base / 2 + rng.uniform(0, base / 2)


@dataclass
class Backoff:
    """When to try again after failures; a success resets it."""

    first_s: float
    cap_s: float
    jitter: bool = False
    failures: int = 0
    retry_at: float = 0.0  # time.monotonic() before which no attempt is made
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def left(self) -> float:
        """Seconds until the next attempt may be made (<= 0: now)."""
        return self.retry_at - time.monotonic()

    def failed(self) -> float:
        """Count a failure; the wait before the next attempt."""
        self.failures += 1
        wait = backoff_delay(
            self.failures, self.first_s, self.cap_s, self._rng if self.jitter else None
        )
        self.retry_at = time.monotonic() + wait
        return wait

    def succeeded(self) -> None:
        self.failures, self.retry_at = 0, 0.0
