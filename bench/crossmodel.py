"""Cross-model evaluation: our simulator against the independent fisx model, both ways, before
and after site calibration with 10 reference spectra per class (docs/classifier.md,
"Cross-model evaluation").

Usage: `python -m bench.crossmodel [--n-test 440] [--n-train 660] [--n-sim 1000] [--json]`
(needs the `dev` extra: fisx). Prints a Markdown table (or JSON with --json).
1. sim -> fisx: the active model (trained on our simulator) on fisx spectra;
2. fisx -> sim: a model trained on fisx spectra on our simulator's held-out instruments;
3. and 4. the same after `plant models calibrate`'s fit (plant.calibration.fit_with_site, site
   share 0.2) with 10 spectra per class of the other model (seeds disjoint from the test sets).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.fisxmodel import CHEMISTRIES, FisxModel, cells
from drivers.sim.cells import CellFormat, CellTruth
from drivers.sim.profiles import HELDOUT_PROFILES, PROFILES, TRAIN_PROFILES
from drivers.sim.xrfphysics import draw_presentation, render_cell
from drivers.spectra import Spectrum
from models.classifier import Classifier, Rules, train, training_label
from models.features import INDEX, extract_batch
from models.registry import Registry
from plant.calibration import fit_with_site
from plant.commands.spectra import simulate_cells
from plant.model_evaluation import evaluate_results
from plant.routing import load_rules

REPO = Path(__file__).resolve().parent.parent
REFS_PER_CLASS = 10


class Labelled:
    """Spectra with their truth, cell format and instrument name."""

    def __init__(self) -> None:
        self.spectra: list[Spectrum] = []
        self.truth: list[str] = []
        self.formats: list[str] = []
        self.instruments: list[str] = []

    def add(self, spectrum: Spectrum, truth: str, fmt: str, instrument: str) -> None:
        self.spectra.append(spectrum)
        self.truth.append(truth)
        self.formats.append(fmt)
        self.instruments.append(instrument)

    def labels(self) -> list[str]:
        return [training_label(t, f) for t, f in zip(self.truth, self.formats, strict=True)]

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        x = extract_batch(self.spectra)
        return x, np.asarray([s.total_counts() for s in self.spectra])


def fisx_set(model: FisxModel, n: int, seed: int, hard_share: float = 0.15) -> Labelled:
    out = Labelled()
    for cell, inst in cells(n, seed, hard_share):
        out.add(model.render(cell, inst), cell.chemistry, cell.cell_format, inst.name)
    return out


def sim_set(
    n: int, seed: int, profiles: Sequence[str], hard_share: float = 0.15, mix: str = "plant"
) -> Labelled:
    """The stream of `plant spectra generate` (`mix`: the plant's own class mix or balanced)."""
    out = Labelled()
    for c in simulate_cells(n, seed, [PROFILES[p] for p in profiles], hard_share, mix):
        out.add(c.spectrum, c.truth.chemistry, c.truth.format.value, c.profile.name)
    return out


def sim_balanced(per_class: int, seed: int, profiles: Sequence[str]) -> Labelled:
    """`per_class` simulated cells of every class (pouch / opened, every tenth in a steel can),
    instruments in turn, 0.5-3 s."""
    out = Labelled()
    formats = [CellFormat.pouch, CellFormat.opened]
    for k, chem in enumerate(CHEMISTRIES):
        for i in range(per_class):
            rng = np.random.default_rng([seed, k, i])
            fmt = CellFormat.steel_can if i % 10 == 9 else formats[i % 2]
            profile = PROFILES[profiles[i % len(profiles)]]
            truth = CellTruth.bare(chem, fmt, seq=k * per_class + i)
            pres = draw_presentation(truth, profile, rng)
            live = float(10 ** rng.uniform(np.log10(0.5), np.log10(3.0)))
            out.add(render_cell(truth, pres, profile, live, rng), chem, fmt.value, profile.name)
    return out


def references(data: Labelled, per_class: int = REFS_PER_CLASS) -> Labelled:
    """The first `per_class` spectra of every training label (as a site would measure)."""
    out = Labelled()
    seen: dict[str, int] = {}
    for i, label in enumerate(data.labels()):
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            out.add(data.spectra[i], data.truth[i], data.formats[i], data.instruments[i])
    return out


def figures(clf: Classifier, data: Labelled) -> dict[str, Any]:
    """Overall, per class and per instrument: accuracy on accepted, coverage, misroutes."""
    rules = load_rules(REPO / "config")
    results = clf.predict_batch(data.spectra)

    def part(rows: list[int]) -> dict[str, Any]:
        rep = evaluate_results(
            [results[i] for i in rows],
            [data.truth[i] for i in rows],
            [data.formats[i] for i in rows],
            rules,
            names=[f"{data.instruments[i]}#{i}" for i in rows],
        )
        return {
            "n": rep["n"],
            "accuracy_on_accepted": rep["accuracy_on_accepted"],
            "coverage_xrf_visible": rep["coverage_xrf_visible"],
            "misroute_rate": rep["misroute_rate"],
            "misrouted": rep["misrouted"],
            "quarantine_reasons": rep["quarantine_reasons"],
            "misrouted_cells": rep["misrouted_cells"],
        }

    n = len(data.truth)
    # Canned NiCd / NiMH: readable only where their own K lines (Cd; La/Ce) pass the can at
    # `heavy_min_snr`; the split shows how much of the coverage the physics leaves to win.
    canned = [
        i for i in range(n) if data.formats[i] == "steel_can" and data.truth[i] in ("NiCd", "NiMH")
    ]
    feats = extract_batch([data.spectra[i] for i in canned]) if canned else np.zeros((0, 1))
    seen_at = np.log1p(clf.rules.heavy_min_snr)
    own = [INDEX["snr_Cd"] if data.truth[i] == "NiCd" else INDEX["snr_REE"] for i in canned]
    shows = {i for i, row, k in zip(canned, feats, own, strict=True) if row[k] >= seen_at}
    return {
        "canned_nicd_nimh": {
            "own_k_lines_seen": part(sorted(shows)),
            "own_k_lines_not_seen": part([i for i in canned if i not in shows]),
        },
        "all": part(list(range(n))),
        "per_class": {
            c: part([i for i in range(n) if data.truth[i] == c]) for c in sorted(set(data.truth))
        },
        "per_instrument": {
            k: part([i for i in range(n) if data.instruments[i] == k])
            for k in sorted(set(data.instruments))
        },
        # NiCd/NiMH in steel cans apart: readable only when Cd or La/Ce K lines pass the can
        "per_format": {
            f: part([i for i in range(n) if data.formats[i] == f])
            for f in sorted(set(data.formats))
        },
    }


def run(n_test: int, n_train: int, n_sim: int, say: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    model = FisxModel()
    say(f"fisx: rendering {n_train} training + {n_test} test spectra")
    fisx_train = fisx_set(model, n_train, seed=101)
    fisx_test = fisx_set(model, n_test, seed=202)
    say(f"simulator: {n_sim} training (train instruments) + {n_test} held-out spectra")
    sim_train = sim_set(n_sim, 11, TRAIN_PROFILES, mix="balanced")  # as `calibrate` does
    sim_test = sim_balanced(max(n_test // len(CHEMISTRIES), 1), 99, HELDOUT_PROFILES)
    fx_x, _ = fisx_train.features()
    sim_x, _ = sim_train.features()
    active = Registry(REPO / "var" / "models").active_model()
    say("training on fisx; calibrating both ways")
    on_fisx = Classifier(train(fx_x, fisx_train.labels()), Rules())
    # references: 10 per class, seeds disjoint from the test sets
    fx_refs = references(fisx_set(model, 40 * len(CHEMISTRIES), seed=303, hard_share=0.0))
    sim_refs = references(sim_balanced(REFS_PER_CLASS + 3, 404, HELDOUT_PROFILES))
    fx_ref_x, _ = fx_refs.features()
    sim_ref_x, _ = sim_refs.features()
    sim_cal = Classifier(fit_with_site(sim_x, sim_train.labels(), fx_ref_x, fx_refs.labels()))
    fx_cal = Classifier(fit_with_site(fx_x, fisx_train.labels(), sim_ref_x, sim_refs.labels()))
    say("evaluating")
    return {
        "active_model": active.version,
        "n_test": n_test,
        "n_train_fisx": n_train,
        "n_train_sim": n_sim,
        "refs_per_class": REFS_PER_CLASS,
        "sim_to_fisx": figures(active.classifier, fisx_test),
        "fisx_to_sim": figures(on_fisx, sim_test),
        "sim_to_fisx_calibrated": figures(sim_cal, fisx_test),
        "fisx_to_sim_calibrated": figures(fx_cal, sim_test),
        "seconds": round(time.monotonic() - t0, 1),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


DIRECTIONS = (
    ("sim_to_fisx", "sim -> fisx"),
    ("fisx_to_sim", "fisx -> sim"),
    ("sim_to_fisx_calibrated", "sim + 10/class fisx -> fisx"),
    ("fisx_to_sim_calibrated", "fisx + 10/class sim -> sim"),
)


def _cell(v: dict[str, Any]) -> str:
    return (
        f"{_pct(v['accuracy_on_accepted'])} / {_pct(v['coverage_xrf_visible'])} / {v['misrouted']}"
    )


def markdown(result: dict[str, Any]) -> str:
    """Per class: one column per direction, 'accuracy on accepted % / coverage % / misrouted
    cells'; then the same per instrument of the evaluated model."""
    head = "| class | " + " | ".join(t for _, t in DIRECTIONS) + " |"
    lines = [head, "|---" * (len(DIRECTIONS) + 1) + "|"]
    for row in ["all", *result["sim_to_fisx"]["per_class"]]:
        cells = [
            _cell(result[k]["all"] if row == "all" else result[k]["per_class"][row])
            for k, _ in DIRECTIONS
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "| instrument | direction | accuracy / coverage / misrouted |", "|---|---|---|"]
    for k, title in DIRECTIONS:
        for name, v in result[k]["per_instrument"].items():
            lines.append(f"| {name} | {title} | {_cell(v)} |")
    lines += ["", "| cell format | " + " | ".join(t for _, t in DIRECTIONS) + " |"]
    lines.append("|---" * (len(DIRECTIONS) + 1) + "|")
    for fmt in result["sim_to_fisx"]["per_format"]:
        cells = [_cell(result[k]["per_format"][fmt]) for k, _ in DIRECTIONS]
        lines.append(f"| {fmt} | " + " | ".join(cells) + " |")
    for part, title in (("own_k_lines_seen", ">="), ("own_k_lines_not_seen", "<")):
        subsets = [result[k]["canned_nicd_nimh"][part] for k, _ in DIRECTIONS]
        cells = [f"{_cell(v)} (n {v['n']})" for v in subsets]
        label = f"canned NiCd/NiMH, own K lines {title} 3 sigma"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=440)
    parser.add_argument("--n-train", type=int, default=660)
    parser.add_argument("--n-sim", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args()

    def say(text: str) -> None:
        print(f"# {text}", flush=True)

    result = run(args.n_test, args.n_train, args.n_sim, say)
    print(json.dumps(result, indent=1) if args.json else markdown(result))


if __name__ == "__main__":
    main()
