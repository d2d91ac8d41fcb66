"""The site reference set and the promotion gate: a model becomes the active one only if it is
not worse than the active model on spectra measured on the site's own heads (docs/classifier.md,
"Promotion gate").

The reference set lives in the registry: `plant models calibrate` copies its labelled spectra
to `<registry>/_reference/` (labels.csv + files) and describes them in `<registry>/reference.json`
(fingerprint, counts per class, where they came from). A name starting with '_' can never be a
model's, so the two never meet.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.features import extract_batch
from models.registry import ModelInfo, Registry, RegistryError, load_classifier
from plant.model_evaluation import (
    LABELS_FILE,
    Labelled,
    LabelsError,
    evaluate_results,
    load_labelled,
)
from plant.routing import RoutingRules

REFERENCE_DIR = "_reference"
REFERENCE_FILE = "reference.json"
# Where a model's cross-validated figures on the reference set are kept in its metadata.
REFERENCE_CV = "reference_cv"


@dataclass(frozen=True)
class ReferenceSet:
    """The site's labelled reference spectra as recorded in the registry."""

    directory: Path
    meta: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("fingerprint", ""))


def reference_set(root: Path) -> ReferenceSet | None:
    """The registry's reference set, or None when none was recorded."""
    path = root / REFERENCE_FILE
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8 or not JSON
        raise RegistryError(f"{path}: unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise RegistryError(f"{path}: expected a JSON object")
    return ReferenceSet(root / REFERENCE_DIR, meta)


def record_reference(root: Path, data: Labelled, source: Path) -> ReferenceSet:
    """Copy a labelled set into the registry as the site reference set (replacing an earlier
    one) so the gate keeps it however the original directory changes."""
    new = root / f"{REFERENCE_DIR}.new"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    with (new / LABELS_FILE).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("file", "chemistry", "cell_format"))
        for i, (path, chem, fmt) in enumerate(
            zip(data.files, data.chemistry, data.cell_format, strict=True)
        ):
            name = f"{i:05d}_{path.name}"
            shutil.copyfile(path, new / name)
            writer.writerow((name, chem, fmt))
    counts: dict[str, int] = {}
    for chem in data.chemistry:
        counts[chem] = counts.get(chem, 0) + 1
    meta = {
        "fingerprint": data.fingerprint,
        "n": len(data.chemistry),
        "label_counts": counts,
        "source": str(source.resolve()),
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "directory": REFERENCE_DIR,
    }
    target = root / REFERENCE_DIR
    shutil.rmtree(target, ignore_errors=True)
    os.replace(new, target)
    tmp = root / f"{REFERENCE_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, root / REFERENCE_FILE)
    return ReferenceSet(target, meta)


@dataclass(frozen=True)
class Figures:
    """A model's figures on the reference set, and how they were obtained."""

    accuracy: float | None  # on accepted cells, NMC family counted as right
    coverage: float | None
    misrouted: int
    how: str  # "cross-validated" (trained on the set) or "evaluated"

    def accuracy_or_zero(self) -> float:
        return 0.0 if self.accuracy is None else self.accuracy


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def stored_figures(info: ModelInfo, fingerprint: str) -> Figures | None:
    """The cross-validated figures `calibrate` stored for this reference set, if any: a model
    trained on the reference spectra is judged on the folds it did not see."""
    cv = info.meta.get("metrics", {}).get(REFERENCE_CV)
    if not isinstance(cv, dict) or cv.get("reference_fingerprint") != fingerprint:
        return None
    return Figures(
        cv.get("accuracy_on_accepted"),
        cv.get("coverage"),
        int(cv.get("misrouted", 0)),
        "cross-validated",
    )


def figures_on(
    info: ModelInfo, ref: ReferenceSet, data: Labelled, features: Any, rules: RoutingRules
) -> Figures:
    """A model's figures on the reference set: stored cross-validated ones, else evaluated."""
    stored = stored_figures(info, ref.fingerprint)
    if stored is not None:
        return stored
    classifier = load_classifier(info.path, info.meta)
    totals = np.asarray([s.total_counts() for s in data.spectra])
    report = evaluate_results(
        classifier.predict_features(features, totals), data.chemistry, data.cell_format, rules
    )
    return Figures(
        report["accuracy_on_accepted"], report["coverage"], report["misrouted"], "evaluated"
    )


@dataclass(frozen=True)
class Verdict:
    """The gate's answer: allowed or not, in one line with both models' figures."""

    allowed: bool
    line: str
    warning: bool = False


def _held_out_misroutes(info: ModelInfo) -> float:
    """Misroute rate on the model's own held-out spectra (validation split or CV), 0 if none."""
    metrics = info.meta.get("metrics", {})
    rates = [
        float(m.get("misroute_rate") or 0.0)
        for m in (metrics.get("validation_split"), metrics.get(REFERENCE_CV))
        if isinstance(m, dict)
    ]
    return max(rates, default=0.0)


def gate(registry: Registry, name: str, rules: RoutingRules) -> Verdict:
    """Whether `name` may replace the active model: not more misroutes and not lower accuracy
    on the site reference set. Without a reference set, a model that misroutes on its own
    held-out spectra is refused and any other passes with a warning."""
    candidate = registry.get(name)
    active_name = registry.active_name()
    if name == active_name:
        return Verdict(True, f"gate: {name} is the active model already")
    ref = reference_set(registry.root)
    if ref is None:
        rate = _held_out_misroutes(candidate)
        if rate > 0:
            return Verdict(
                False,
                f"refused: {name} misroutes {100 * rate:.2f} % of its own held-out spectra and "
                "there is no site reference set to compare it with the active model "
                "(plant models calibrate records one)",
            )
        return Verdict(
            True,
            f"warning: no site reference set (plant models calibrate records one): {name} "
            f"activated without comparison to {active_name}",
            warning=True,
        )
    try:
        data = load_labelled(ref.directory)
    except LabelsError as exc:
        return Verdict(False, f"refused: the site reference set cannot be read ({exc})")
    features = extract_batch(data.spectra)
    new = figures_on(candidate, ref, data, features, rules)
    try:
        old = figures_on(registry.get(active_name), ref, data, features, rules)
    except RegistryError as exc:
        return Verdict(
            True,
            f"warning: the active model {active_name} cannot be evaluated ({exc}); {name} "
            f"activated on its own figures (misroutes {new.misrouted}, accuracy on accepted "
            f"{_pct(new.accuracy)})",
            warning=True,
        )
    worse = new.misrouted > old.misrouted or new.accuracy_or_zero() < old.accuracy_or_zero()
    line = (
        f"{name} vs active {active_name} on the site reference set ({len(data.spectra)} "
        f"spectra): misroutes {new.misrouted} vs {old.misrouted}, accuracy on accepted "
        f"{_pct(new.accuracy)} vs {_pct(old.accuracy)}, coverage {_pct(new.coverage)} vs "
        f"{_pct(old.coverage)} ({new.how} vs {old.how})"
    )
    return Verdict(not worse, ("refused: " if worse else "gate passed: ") + line)
