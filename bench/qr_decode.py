"""QR label decoding on simulated labels: success rate, wrong ids (must be 0), ms per image."""

from __future__ import annotations

import argparse
import json

from drivers.camera import DETECTORS
from plant.commands.bench_harness import qr_decode_figures


def main() -> None:
    """Print the figures as one JSON object (exit status 1 when a requirement is missed)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="number of simulated cells")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0])
    args = ap.parse_args()
    result = qr_decode_figures(args.n, args.seed, args.detector)
    print(json.dumps(result))
    raise SystemExit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
