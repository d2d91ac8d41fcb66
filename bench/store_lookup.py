"""Benchmark: cell lookup by passport id among N stored cells (budget: <= 10 ms).

Usage: python bench/store_lookup.py [--cells 100000] [--url sqlite:///var/bench.db]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from plant.store import Store, upgrade


def fill(store: Store, n: int, batch: int = 50_000) -> None:
    now = datetime.now(UTC)
    for start in range(0, n, batch):
        store.add_cells(
            {
                "line": "L1",
                "seq": i,
                "passport_id": f"urn:uuid:pp-{i:08d}",
                "mass_g": 46.0,
                "chemistry": "NMC",
                "route": "hydromet",
                "state": "confirmed",
                "created_at": now,
                "updated_at": now,
            }
            for i in range(start, min(n, start + batch))
        )


def measure(store: Store, n: int, lookups: int = 2000) -> dict[str, float]:
    rng = random.Random(7)
    times = []
    for _ in range(lookups):
        pid = f"urn:uuid:pp-{rng.randrange(n):08d}"
        t0 = time.perf_counter()
        found = store.cells_by_passport(pid)
        times.append((time.perf_counter() - t0) * 1000)
        assert len(found) == 1
    times.sort()
    return {
        "cells": n,
        "lookup_ms_p50": round(statistics.median(times), 3),
        "lookup_ms_p99": round(times[int(0.99 * len(times)) - 1], 3),
        "lookup_ms_max": round(times[-1], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--url", default=None, help="database URL (default: a temporary SQLite file)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        store = Store(url)
        if store.count_cells() < args.cells:
            fill(store, args.cells)
        result = measure(store, args.cells)
        result["backend"] = store.engine.dialect.name
        store.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
