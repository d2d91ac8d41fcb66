"""Benchmark: trend query over one simulated year of a value sampled every second (budget 200 ms).

Usage: python bench/trend_query.py [--url postgresql+psycopg://...] [--repeats 20]

What is inserted, and why: a year at 1 Hz is 31.5 M samples. Inserting that many raw rows would
take longer than the bench should, and a year-long trend never reads raw rows anyway. So the
bench makes the 1 Hz signal with numpy one day at a time (a pH loop: setpoint, slow drift,
daily cycle, noise). It folds each day into exactly the roll-up rows that `Historian.record`
would keep (1-minute, 1-hour and 1-day count/min/max/sum/sum of squares) and bulk-inserts only
those: 525,600 + 8,760 + 365 rows. The last day also goes in as raw rows through
`Historian.record`, the real write path, so the short-range queries read real raw data.
The figures printed are the query times; JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from plant.historian import HYDROMET_TAGS, RESOLUTIONS_S, Historian
from plant.store import ProcessValueRow, RollupRow, Store, upgrade

TAG = "purification.ph"
LINE = "L1"
START = datetime(2025, 1, 1, tzinfo=UTC)
DAY = 86_400


def day_signal(day: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(DAY, dtype=float)
    drift = 0.05 * np.sin(2 * np.pi * (day * DAY + t) / (90 * DAY))
    cycle = 0.02 * np.sin(2 * np.pi * t / DAY)
    return 4.0 + drift + cycle + rng.normal(0.0, 0.03, DAY)


def fill(store: Store, days: int) -> dict[str, int]:
    rng = np.random.default_rng(1)
    t0 = int(START.timestamp())
    counts = dict.fromkeys(RESOLUTIONS_S, 0)
    table = RollupRow.__table__
    for day in range(days):
        x = day_signal(day, rng)
        rows = []
        for res in RESOLUTIONS_S:
            b = x.reshape(-1, res)
            base = t0 + day * DAY
            rows += [
                {"line": LINE, "tag": TAG, "res_s": res, "bucket": base + i * res, "n": res,
                 "vmin": float(lo), "vmax": float(hi), "vsum": float(sm), "vsumsq": float(sq)}
                for i, (lo, hi, sm, sq) in enumerate(
                    zip(b.min(1), b.max(1), b.sum(1), (b * b).sum(1), strict=True)
                )
            ]  # fmt: skip
            counts[res] += len(b)
        if day == days - 1:
            last = START + timedelta(days=day)
            Historian(store, LINE, writes=HYDROMET_TAGS).record(
                (TAG, last + timedelta(seconds=i), float(v)) for i, v in enumerate(x)
            )
        else:
            with store.begin() as s:
                s.execute(table.insert(), rows)
    return counts


def measure(store: Store, repeats: int) -> dict[str, dict[str, float]]:
    h = Historian(store, LINE)
    end = START + timedelta(days=365)
    ranges = {
        "year": (START, end),
        "month": (end - timedelta(days=30), end),
        "day": (end - timedelta(days=1), end),
        "hour_raw": (end - timedelta(hours=1), end),
    }
    out = {}
    for name, (a, b) in ranges.items():
        times, points = [], 0
        for _ in range(repeats):
            t = time.perf_counter()
            points = len(h.trend(TAG, a, b, max_points=1000))
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out[name] = {
            "points": points,
            "ms_p50": round(statistics.median(times), 2),
            "ms_max": round(times[-1], 2),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default=None, help="database URL (default: a temporary SQLite file)")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        store = Store(url)
        with store.begin() as s:  # a re-run on the same database starts clean
            s.execute(RollupRow.__table__.delete().where(RollupRow.tag == TAG))
            s.execute(ProcessValueRow.__table__.delete().where(ProcessValueRow.tag == TAG))
        t = time.perf_counter()
        counts = fill(store, args.days)
        fill_s = time.perf_counter() - t
        result = {
            "bench": "trend_query",
            "backend": store.engine.dialect.name,
            "samples_represented": args.days * DAY,
            "rollup_rows": {f"{k}s": v for k, v in counts.items()},
            "raw_rows": DAY,
            "fill_s": round(fill_s, 1),
            "queries": measure(store, args.repeats),
            "budget_ms": 200,
        }
        result["within_budget"] = result["queries"]["year"]["ms_max"] < 200
        store.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
