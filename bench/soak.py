"""Soak: many simulated cells through the line; the controller's memory must not keep growing.

The controller (`plant.runner.run_line`, in this process) drives `plant sim` (a child process)
with XRF dwell 0 on a temporary SQLite database. RSS (VmRSS of this process plus its classifier
and hydromet processes) is sampled at start, every 10,000 final cells and at the last cell.
Pass: growth from the first 10,000-cell sample (after warm-up: model loaded, caches and the
latency window filled) to the last stays below --bound-mb, and no record is lost. Not part of
the test suite (it takes minutes).

Usage: python bench/soak.py [--cells 100000] [--rate 300] [--bound-mb 50] [--config config]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from plant import eventloop
from plant.commands.bench_harness import (
    children_rss_mb,
    git_commit,
    line_run,
    load_avg,
    machine_info,
    private_line,
    rss_mb,
)
from plant.config import load_plant

SAMPLE_EVERY = 10_000


def soak(config_dir: Path, cells: int, rate: float, bound_mb: float) -> dict[str, Any]:
    """Run the line for `cells` cells and report RSS samples, growth and the verdict."""
    data_dir = load_plant(config_dir).plant.data_dir.resolve()

    def sample(final: int) -> dict[str, float]:
        own, child = rss_mb(), children_rss_mb()
        total = round(own + child, 1)
        return {"cells": final, "rss_mb": own, "children_rss_mb": child, "total_mb": total}

    samples = [sample(0)]
    started = time.monotonic()

    def progress(final: int) -> None:
        if final >= samples[-1]["cells"] + SAMPLE_EVERY or (final >= cells > samples[-1]["cells"]):
            samples.append(sample(final))
            print(
                f"{final} cells final, RSS {samples[-1]['rss_mb']} MB "
                f"+ classifier and hydromet {samples[-1]['children_rss_mb']} MB, "
                f"{time.monotonic() - started:.0f} s, load {load_avg()}",
                file=sys.stderr,
                flush=True,
            )

    with tempfile.TemporaryDirectory(prefix="plant-soak-") as tmp:
        cfg_dir, cfg = private_line(config_dir, Path(tmp), "soak", data_dir)
        run = eventloop.run(line_run(cfg, cfg_dir, cells=cells, rate=rate, on_progress=progress))
    # The last sample is taken while the line still runs (the classifier process exits with it).
    last = samples[-1]
    warm = next((s for s in samples if s["cells"] >= SAMPLE_EVERY), samples[0])
    growth = round(last["total_mb"] - warm["total_mb"], 1)
    lost = run.sent - run.stored
    return {
        **git_commit(),
        "machine": machine_info(),
        "cells": cells,
        "feeder_cells_per_s": rate,
        "final": run.final,
        "lost_records": lost,
        "unfinished_records": run.stored - run.final,
        "counters_match": run.counters_match,
        "throughput_cells_per_s": run.throughput,
        "seconds": round(time.monotonic() - started, 1),
        "decision_latency_ms": run.summary["decision_latency_ms"] if run.summary else None,
        "cpu_s": run.cpu_s,
        "cpu_steal_pct": run.steal_pct,
        "rss_mb": samples,
        "rss_growth_mb_total": round(last["total_mb"] - samples[0]["total_mb"], 1),
        "rss_growth_mb_after_warmup": growth,
        "warmup_sample_cells": warm["cells"],
        "bound_mb": bound_mb,
        "load_avg_1min_end": load_avg(),
        "error": run.error,
        "pass": growth < bound_mb and lost == 0 and run.error is None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000, help="cells through the line")
    ap.add_argument("--rate", type=float, default=300.0, help="feeder cells per second")
    ap.add_argument("--bound-mb", type=float, default=50.0, help="allowed RSS growth after warm-up")
    ap.add_argument("--config", type=Path, default=Path("config"), help="configuration directory")
    args = ap.parse_args()
    result = soak(args.config, args.cells, args.rate, args.bound_mb)
    print(json.dumps(result))
    raise SystemExit(0 if result["pass"] else 1)


if __name__ == "__main__":
    main()
