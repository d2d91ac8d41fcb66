"""How late this machine wakes a sleeping thread: the floor under every hand-off of a cell.

A cell's path crosses about ten wake-ups (PLC poll, XRF head, classifier process, database
thread, diverter write). This sleeps 1 ms in a loop and measures the overshoot, once on an
idle machine and once while `plant run` works, to tell scheduling delay from our own work.

Usage: python bench/wakeup_jitter.py [--seconds 20] [--sleep-ms 1]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def overshoot_ms(seconds: float, sleep_s: float) -> list[float]:
    """Milliseconds each `time.sleep(sleep_s)` lasted beyond `sleep_s`, for `seconds`."""
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        time.sleep(sleep_s)
        out.append((time.perf_counter() - t0 - sleep_s) * 1000.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to measure")
    ap.add_argument("--sleep-ms", type=float, default=1.0, help="each sleep")
    args = ap.parse_args()
    a = np.asarray(overshoot_ms(args.seconds, args.sleep_ms / 1000.0))
    q = {f"p{p}": round(float(np.percentile(a, p)), 3) for p in (50, 99, 99.9)}
    print(
        json.dumps(
            {
                "bench": "wakeup_jitter",
                "sleep_ms": args.sleep_ms,
                "samples": int(a.size),
                "overshoot_ms": {**q, "max": round(float(a.max()), 2)},
                "over_5_ms": int((a > 5).sum()),
            }
        )
    )


if __name__ == "__main__":
    main()
