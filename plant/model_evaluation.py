"""Labelled spectrum sets and the figures a model is judged by (docs/classifier.md, "Metrics"):
shared by `plant train`, `plant evaluate`, `plant models calibrate` and the promotion gate."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivers.spectra import Spectrum, SpectrumError, read_spectrum
from models.classifier import CAN, CAN_OCCLUDED, CLASSES, SpectrumResult, training_label
from models.fusion import fuse
from models.registry import fingerprint
from plant.domain import Chemistry, Route
from plant.routing import RoutingRules, decide

LABELS_FILE = "labels.csv"
# Fewest spectra of one class that training accepts: the calibration's 3 folds and the
# validation split (or calibrate's cross-validation) each need several of every class.
MIN_PER_CLASS = 10
# The figures a model carries in its metadata and the gate compares.
SUMMARY_KEYS = (
    "n",
    "accuracy_on_accepted",
    "coverage",
    "coverage_xrf_visible",
    "misroute_rate",
    "misrouted",
)


class LabelsError(Exception):
    """A labelled directory cannot be used; the message names the file, line and problem."""


@dataclass(frozen=True)
class Labelled:
    """A labelled spectrum directory: labels.csv (file, chemistry, cell_format, ...) + files."""

    spectra: list[Spectrum]
    chemistry: list[str]
    cell_format: list[str]
    flags: list[str]
    fingerprint: str
    files: list[Path]


def load_labelled(
    directory: Path,
    advance: Callable[[int], None] | None = None,
    *,
    min_per_class: int = 0,
) -> Labelled:
    """Read DIR/labels.csv and every spectrum it names; `advance(total)` after each file.
    With `min_per_class`, a class (training label) with fewer spectra is refused before any
    spectrum is read."""
    labels = directory / LABELS_FILE
    if not labels.exists():
        raise LabelsError(f"{labels}: not found (expected file,chemistry,... rows)")
    try:
        with labels.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelsError(f"{labels}: unreadable ({exc})") from None
    missing = {"file", "chemistry"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise LabelsError(f"{labels}: needs columns file and chemistry, and rows")
    chems = [(row["chemistry"] or "").strip() for row in rows]
    formats = [(row.get("cell_format") or "").strip() for row in rows]
    for n, chem in enumerate(chems, start=2):
        if chem not in CLASSES:
            raise LabelsError(f"{labels}: line {n}: unknown chemistry {chem!r}")
    if min_per_class:
        problem = too_few(
            [training_label(c, f) for c, f in zip(chems, formats, strict=True)], min_per_class
        )
        if problem:
            raise LabelsError(f"{labels}: {problem}")
    spectra, prints, files = [], [], []
    for n, (row, chem) in enumerate(zip(rows, chems, strict=True), start=2):
        path = directory / (row["file"] or "")
        try:
            spectra.append(read_spectrum(path))
        except SpectrumError as exc:
            raise LabelsError(f"{labels}: line {n}: {exc}") from None
        prints.append((hashlib.sha256(path.read_bytes()).hexdigest(), chem))
        files.append(path)
        if advance is not None:
            advance(len(rows))
    flags = [(row.get("flags") or "").strip() for row in rows]
    return Labelled(spectra, chems, formats, flags, fingerprint(prints), files)


def too_few(labels: Sequence[str], minimum: int = MIN_PER_CLASS) -> str | None:
    """The first class (fewest spectra) with fewer than `minimum` spectra, as words; None when
    every class present has enough. `CAN` is the Li-ion/alkaline cells in steel cans."""
    counts = Counter(labels)
    if not counts:
        return "no spectra"
    cls, n = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if n >= minimum:
        return None
    what = f"{cls} (Li-ion/alkaline cells in steel cans)" if cls == CAN else cls
    return f"class {what} has {n} spectra, at least {minimum} per class are needed"


def xrf_visible(chemistry: str, cell_format: str) -> bool:
    """Whether an XRF can read this cell's chemistry at all (docs/architecture.md: no can)."""
    return not (cell_format == "steel_can" and chemistry not in ("NiCd", "NiMH"))


def _correct(predicted: str, truth: str) -> bool:
    return predicted == truth or (predicted == "NMC" and truth.startswith("NMC"))


def evaluate_results(
    results: Sequence[SpectrumResult],
    truth: Sequence[str],
    formats: Sequence[str],
    rules: RoutingRules,
    names: Sequence[str] = (),
) -> dict[str, Any]:
    """Accuracy on accepted cells, coverage, misroute rate, per-class precision/recall,
    confusion matrix; routes as the line would take them (spectrum only, no passport).
    `names` (file names) identify the misrouted cells in the report."""
    n = len(results)
    routes = [decide(fuse(None, r), rules) for r in results]
    accepted = [i for i, d in enumerate(routes) if d.route is not Route.quarantine]
    correct = [i for i in accepted if _correct(routes[i].chemistry.value, truth[i])]
    misrouted = [
        i
        for i, d in enumerate(routes)
        if d.route is not Route.quarantine and d.route is not rules.routes[Chemistry(truth[i])]
    ]
    visible = [i for i in range(n) if xrf_visible(truth[i], formats[i])]
    covered_visible = [i for i in visible if routes[i].route is not Route.quarantine]
    cans = [i for i in range(n) if not xrf_visible(truth[i], formats[i])]
    can_ok = [i for i in cans if results[i].reason == CAN_OCCLUDED]
    predicted_labels = [*CLASSES, "NMC", "UNKNOWN"]
    matrix = np.zeros((len(CLASSES), len(predicted_labels)), dtype=int)
    for i, d in enumerate(routes):
        shown = d.chemistry.value if d.route is not Route.quarantine else "UNKNOWN"
        matrix[CLASSES.index(truth[i]), predicted_labels.index(shown)] += 1
    per_class = {}
    for k, cls in enumerate(CLASSES):
        tp = int(
            matrix[k, k]
            + (matrix[k, predicted_labels.index("NMC")] if cls.startswith("NMC") else 0)
        )
        predicted_as = int(matrix[:, k].sum())
        support = int(matrix[k].sum())
        accepted_k = support - int(matrix[k, -1])
        per_class[cls] = {
            "support": support,
            "precision": round(matrix[k, k] / predicted_as, 4) if predicted_as else None,
            "recall_on_accepted": round(tp / accepted_k, 4) if accepted_k else None,
            "coverage": round(accepted_k / support, 4) if support else None,
        }
    reasons = Counter(d.reason.split(":", 1)[0] for d in routes if d.route is Route.quarantine)
    return {
        "n": n,
        "accepted": len(accepted),
        "accuracy_on_accepted": round(len(correct) / len(accepted), 5) if accepted else None,
        "coverage": round(len(accepted) / n, 5) if n else None,
        "coverage_xrf_visible": round(len(covered_visible) / len(visible), 5) if visible else None,
        "misroute_rate": round(len(misrouted) / n, 5) if n else None,
        "misrouted": len(misrouted),
        "misrouted_cells": [
            {
                "input": names[i] if names else str(i),
                "truth": truth[i],
                "cell_format": formats[i],
                "route": routes[i].route.value,
                "reason": routes[i].reason,
            }
            for i in misrouted[:50]
        ],
        "steel_can_cells": len(cans),
        "can_occluded_recall": round(len(can_ok) / len(cans), 5) if cans else None,
        "quarantine_reasons": dict(reasons.most_common()),
        "per_class": per_class,
        "confusion": {
            "rows_truth": list(CLASSES),
            "columns_predicted": predicted_labels,
            "matrix": matrix.tolist(),
        },
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an evaluation report, as stored in model metadata."""
    return {k: report[k] for k in SUMMARY_KEYS}


def latest_report(reports: Path, model: str | None) -> dict[str, Any] | None:
    """The newest `plant evaluate` report (evaluate-<model>-<UTC time>.json) of `model`, so the
    HMI shows the active model's last confusion matrix; None without one."""
    newest: dict[str, Any] | None = None
    for path in reports.glob("evaluate-*.json") if reports.is_dir() else ():
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a report being written or damaged: the previous one still stands
        if not isinstance(report, dict) or "confusion" not in report:
            continue
        if model is not None and report.get("model") != model:
            continue
        if newest is None or str(report.get("evaluated", "")) > str(newest.get("evaluated", "")):
            newest = report
    if newest is None:
        return None
    keys = ("model", "model_version", "data", "evaluated", "confusion", *SUMMARY_KEYS)
    return {k: newest.get(k) for k in keys}
