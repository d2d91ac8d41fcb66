"""`plant models calibrate`: a model for the site's own XRF heads from a few labelled reference
spectra plus the simulated training set (docs/classifier.md, "Site calibration")."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from drivers.sim.profiles import PROFILES, TRAIN_PROFILES
from models.classifier import Rules, training_label
from models.features import FEATURE_VERSION
from models.registry import RegistryError, check_name, fingerprint, save_model
from plant.calibration import SITE_SHARE, cross_validate, fit_with_site, site_weight
from plant.commands import ctx_of, err, out
from plant.commands.classify import (
    activate_gated,
    features_of,
    models_app,
    progress_bar,
    read_labelled,
    registry_of,
)
from plant.commands.spectra import simulate_cells
from plant.model_evaluation import MIN_PER_CLASS, evaluate_results, summary
from plant.promotion import REFERENCE_CV, record_reference
from plant.routing import load_rules

# The simulated part: the training instruments' stream of `plant spectra generate`.
SIM_SEED = 11
SIM_HARD_SHARE = 0.15


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def calibrate(
    ctx: typer.Context,
    data: Annotated[
        Path,
        typer.Option("--data", help="Directory with labels.csv (file,chemistry) + site spectra."),
    ],
    name: Annotated[
        str | None, typer.Option("--out", help="Name of the new model (default: a timestamp).")
    ] = None,
    activate: Annotated[
        bool,
        typer.Option("--activate", help="Make it the active model if the promotion gate agrees."),
    ] = False,
    simulated: Annotated[
        int, typer.Option("--simulated", min=0, help="Simulated spectra beside the site's.")
    ] = 6000,
    site_share: Annotated[
        float,
        typer.Option(
            min=0.05, max=0.95, help="Share of the training weight the site spectra carry."
        ),
    ] = SITE_SHARE,
    seed: Annotated[int, typer.Option(help="Random seed of the training and the folds.")] = 0,
) -> None:
    """Train a model for this site's heads: labelled reference spectra (as few as 10 per class)
    plus simulated ones; cross-validated figures on the reference set go in its metadata, and
    the reference set becomes the one the promotion gate judges by."""
    started = time.monotonic()
    c = ctx_of(ctx)
    reg = registry_of(c)
    try:
        model_name = check_name(name or f"site-{datetime.now(UTC):%Y%m%d-%H%M%S}")
        reg.model_dir(model_name)
    except RegistryError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    rules = load_rules(c.config_dir)
    site = read_labelled(data, MIN_PER_CLASS)
    site_y = [training_label(ch, f) for ch, f in zip(site.chemistry, site.cell_format, strict=True)]
    site_x = features_of(site.spectra, "site spectra: features")
    site_totals = np.asarray([s.total_counts() for s in site.spectra])

    profiles = [PROFILES[p] for p in TRAIN_PROFILES]
    sim_truth, sim_spectra = [], []
    with progress_bar() as progress:
        task = progress.add_task("simulating training spectra", total=simulated)
        for cell in simulate_cells(simulated, SIM_SEED, profiles, SIM_HARD_SHARE, "balanced"):
            sim_truth.append(training_label(cell.truth.chemistry, cell.truth.format.value))
            sim_spectra.append(cell.spectrum)
            progress.advance(task)
    sim_x = (
        features_of(sim_spectra, "simulated spectra: features")
        if sim_spectra
        else np.zeros((0, site_x.shape[1]))
    )

    with progress_bar() as progress:
        task = progress.add_task("cross-validating on the site spectra", total=None)
        results, folds = cross_validate(
            sim_x,
            sim_truth,
            site_x,
            site_totals,
            site_y,
            share=site_share,
            seed=seed,
            done=lambda: progress.advance(task),
        )
    names = [p.name for p in site.files]
    report = evaluate_results(results, site.chemistry, site.cell_format, rules, names)
    figures = {
        **summary(report),
        "folds": folds,
        "reference_fingerprint": site.fingerprint,
        "quarantine_reasons": report["quarantine_reasons"],
        "misrouted_cells": report["misrouted_cells"],
    }
    with err.status("fitting the calibrated model on all spectra"):
        estimator = fit_with_site(sim_x, sim_truth, site_x, site_y, share=site_share, seed=seed)
    target = reg.model_dir(model_name)
    data_print = fingerprint(
        [
            (site.fingerprint, "site"),
            (f"simulated n={simulated} seed={SIM_SEED} features={FEATURE_VERSION}", "sim"),
        ]
    )
    seconds = round(time.monotonic() - started, 1)
    meta = save_model(
        estimator,
        target / "model.skops",
        target / "model.json",
        name=model_name,
        rules=Rules(),
        data_fingerprint=data_print,
        metrics={REFERENCE_CV: figures},
        extra={
            "training_data": str(data),
            "calibration": {
                "reference_data": str(data.resolve()),
                "n_reference": len(site_y),
                "n_simulated": simulated,
                "simulated_seed": SIM_SEED,
                "site_share": site_share,
                "site_weight": round(site_weight(simulated, len(site_y), site_share), 3),
                "seconds": seconds,
            },
            "n_train": simulated + len(site_y),
            "label_counts": {k: site_y.count(k) for k in sorted(set(site_y))},
        },
    )
    ref = record_reference(reg.root, site, data)
    out.print(
        f"saved {meta['version']}: cross-validated on {len(site_y)} site spectra ({folds} folds): "
        f"accuracy on accepted {_pct(figures['accuracy_on_accepted'])}, coverage "
        f"{_pct(figures['coverage'])}, misroutes {figures['misrouted']} in {seconds:.0f} s",
        highlight=False,
        soft_wrap=True,
    )
    err.print(f"site reference set: {ref.meta['n']} spectra recorded in {ref.directory}")
    if activate:
        activate_gated(c, model_name)


def register(root: typer.Typer) -> None:
    models_app.command("calibrate")(calibrate)
