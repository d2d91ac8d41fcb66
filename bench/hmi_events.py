"""Benchmark: plant event published on the bus -> received by a real WebSocket client (HMI /ws).

Uvicorn serves the real HMI on an ephemeral loopback port with a temporary SQLite store; a
`websockets` client logs in with a bearer token and receives the events (and the once-a-second
store snapshots, which share the socket as they do in a browser). Budget (docs/architecture.md):
p95 <= 250 ms.

Usage: python bench/hmi_events.py [--n 500] [--rate 100] [--json]
"""

from __future__ import annotations

import argparse
import json

from plant.commands.bench_harness import HMI_BUDGET_P95_MS as BUDGET_P95_MS
from plant.commands.bench_harness import hmi_event_latency as measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="events to publish")
    ap.add_argument("--rate", type=float, default=100.0, help="events per second")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    res = measure(args.n, args.rate)
    if args.json:
        print(json.dumps({"hmi_event_to_browser": res}))
    else:
        print(
            f"HMI event -> WebSocket client: p50 {res['p50_ms']} ms, p95 {res['p95_ms']} ms, "
            f"p99 {res['p99_ms']} ms (budget p95 <= {BUDGET_P95_MS:g} ms)"
        )


if __name__ == "__main__":
    main()
