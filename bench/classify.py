"""Spectrum classification speed: batch spectra/s (features + model) and single p99 latency.

Usage: `python bench/classify.py [--n 5000] [--profile bench_sdd_2048]`; prints one JSON object.
Budget (docs/architecture.md): batch >= 5,000 spectra/s on the 2-core machine, features included.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from drivers.sim import xrfphysics as X
from drivers.sim.cells import CellStream
from models.registry import Registry

BUDGET_SPECTRA_PER_S = 5000.0


def main() -> None:
    """Simulate a batch of spectra once, then time the classifier on it."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--n", type=int, default=5000, help="spectra in the batch")
    parser.add_argument("--profile", default="bench_sdd_2048", choices=sorted(X.PROFILES))
    parser.add_argument("--single", type=int, default=300, help="single-spectrum calls to time")
    args = parser.parse_args()
    profile = X.PROFILES[args.profile]
    stream = CellStream(seed=5)
    rng = np.random.default_rng(5)
    # A pool of distinct spectra, repeated to the batch size (simulation is not what we time).
    pool = [X.simulate_cell(stream.truth(i), profile, 0.5, rng) for i in range(min(args.n, 500))]
    spectra = [pool[i % len(pool)] for i in range(args.n)]
    model = Registry(Path("var/models")).active_model()
    clf = model.classifier
    clf.predict_batch(spectra[:50])  # build the per-calibration fit operators once
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        clf.predict_batch(spectra)
        runs.append(time.perf_counter() - t0)
    singles = []
    for s in pool[: args.single]:
        t0 = time.perf_counter()
        clf.predict(s)
        singles.append((time.perf_counter() - t0) * 1000.0)
    rate = args.n / min(runs)
    print(
        json.dumps(
            {
                "bench": "classify",
                "model": model.version,
                "profile": profile.name,
                "channels": profile.n_channels,
                "batch_size": args.n,
                "batch_spectra_per_s": round(rate, 1),
                "budget_spectra_per_s": BUDGET_SPECTRA_PER_S,
                "within_budget": rate >= BUDGET_SPECTRA_PER_S,
                "single_p50_ms": round(float(np.percentile(singles, 50)), 3),
                "single_p99_ms": round(float(np.percentile(singles, 99)), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
