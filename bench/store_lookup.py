"""Benchmark: cell lookup by passport id among N stored cells (budget: <= 10 ms).

Usage: python bench/store_lookup.py [--cells 100000] [--url sqlite:///var/bench.db]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from plant.commands.bench_harness import fill_cells, passport_lookups
from plant.store import Store, upgrade


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
            fill_cells(store, args.cells)
        result: dict[str, object] = {**passport_lookups(store, args.cells)}
        result["backend"] = store.engine.dialect.name
        store.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
