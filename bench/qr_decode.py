"""QR label decoding on simulated labels: success rate, wrong ids (must be 0), ms per image."""

from __future__ import annotations

import argparse
import json
import os
import time

import cv2
import numpy as np

from drivers.camera import DETECTORS, QrDecoder, passport_id_from_payload
from drivers.sim.camera import SimCamera
from drivers.sim.cells import CellStream

SUCCESS_REQUIRED = 0.98
BUDGET_MS = 10.0


def run(n: int, seed: int, detector: str) -> dict[str, object]:
    """Decode the labels of cells 0..n-1 and compare with the simulated truth."""
    stream = CellStream(seed)
    camera = SimCamera(seed, stream)
    decoder = QrDecoder(detector)
    ms: list[float] = []
    cpu_ms: list[float] = []
    readable = decoded_ok = wrong = unreadable = unreadable_reported = no_qr_reported = 0
    failures: list[str] = []
    for seq in range(n):
        truth = stream.truth(seq)
        image = camera.render(seq)
        t0, c0 = time.perf_counter(), time.thread_time()
        read = decoder.decode(image)
        ms.append((time.perf_counter() - t0) * 1e3)
        cpu_ms.append((time.thread_time() - c0) * 1e3)
        got: str | None = None
        if read.payload is not None:
            try:
                got = passport_id_from_payload(read.payload)
            except ValueError:
                got = None
        if got is not None and got != truth.passport_id:
            wrong += 1
            failures.append(f"cell {seq}: WRONG id {got!r} for {truth.passport_id!r}")
        if truth.passport_id is None:
            no_qr_reported += got is None
        elif truth.label_readable:
            readable += 1
            if got == truth.passport_id:
                decoded_ok += 1
            else:
                failures.append(f"cell {seq}: readable label not decoded: {read.error}")
        else:
            unreadable += 1
            unreadable_reported += got is None
    times = np.asarray(ms)
    cpu = np.asarray(cpu_ms)
    rate = decoded_ok / readable if readable else 0.0
    return {
        "detector": detector,
        "images": n,
        "readable_labels": readable,
        "decoded_correctly": decoded_ok,
        "success_rate": round(rate, 4),
        "wrong_ids": wrong,
        "unreadable_labels": unreadable,
        "unreadable_reported_unreadable": unreadable_reported,
        "labels_without_qr": n - readable - unreadable,
        "without_qr_reported_unreadable": no_qr_reported,
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
        "max_ms": round(float(times.max()), 2),
        "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 2),
        "cpu_p99_ms": round(float(np.percentile(cpu, 99)), 2),
        "opencv_threads": cv2.getNumThreads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "ok": rate >= SUCCESS_REQUIRED
        and wrong == 0
        and float(np.percentile(times, 99)) <= BUDGET_MS,
        "first_failures": failures[:5],
    }


def main() -> None:
    """Print the figures as one JSON object (exit status 1 when a requirement is missed)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="number of simulated cells")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0])
    args = ap.parse_args()
    result = run(args.n, args.seed, args.detector)
    print(json.dumps(result))
    raise SystemExit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
