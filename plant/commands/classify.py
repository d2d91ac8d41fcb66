"""`plant classify`, `plant train`, `plant evaluate`, `plant models ...`: the chemistry classifier
for process engineers (docs/classifier.md)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from drivers.spectra import VENDOR_SUFFIXES, Spectrum, SpectrumError, read_spectrum
from models.classifier import (
    Classifier,
    Rules,
    training_label,
)
from models.classifier import train as train_estimator
from models.credentials import Authenticity, TrustList
from models.features import extract_batch
from models.fusion import fuse
from models.passport import PassportError
from models.registry import (
    DEFAULT_DIR,
    DEFAULT_NAME,
    LoadedModel,
    Registry,
    RegistryError,
    check_name,
    save_model,
)
from plant.commands import Ctx, ctx_of, err, out
from plant.domain import Chemistry, Decision, Route
from plant.model_catalog import GateRefused, ModelCatalog
from plant.model_evaluation import (
    MIN_PER_CLASS,
    Labelled,
    LabelsError,
    evaluate_results,
    load_labelled,
    summary,
)
from plant.promotion import REFERENCE_CV, reference_set
from plant.routing import RoutingRules, decide, load_rules
from plant.trust import UnreadableCredential, load_trust, read_passport

SPECTRUM_SUFFIXES = frozenset({".msa", ".emsa", ".mca", ".csv", ".txt", *VENDOR_SUFFIXES})
models_app = typer.Typer(help="Chemistry models: list, activate, roll back.", no_args_is_help=True)


def registry_of(c: Ctx) -> Registry:
    """The model registry under the plant's data directory (var/models by default)."""
    return Registry(c.plant().plant.data_dir / "models")


def _load_model(c: Ctx, name: str | None) -> LoadedModel:
    reg = registry_of(c)
    try:
        return reg.load(name) if name else reg.active_model()
    except RegistryError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def progress_bar() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
    )


# ----------------------------------------------------------------------------- plant classify


def input_kind(path: Path) -> str:
    """'spectrum' or 'passport': a signed passport (compact JWS, 'eyJ...') by content whatever
    its suffix, else by suffix, else by content (JSON starts with '{')."""
    suffix = path.suffix.lower()
    try:
        head: bytes | None = path.read_bytes()[:64].lstrip(b"\xef\xbb\xbf\xff\xfe\x00 \t\r\n")
    except OSError:
        head = None
    if head is not None and head.startswith(b"eyJ"):
        return "passport"
    if suffix in SPECTRUM_SUFFIXES:
        return "spectrum"
    if suffix in (".json", ".jwt", ".jws"):
        return "passport"
    if head is None:
        return "passport" if suffix == ".schema" else "spectrum"
    return "passport" if head.startswith(b"{") else "spectrum"


def _row(
    path: Path, kind: str, d: Decision, authenticity: Authenticity | None = None
) -> dict[str, Any]:
    row = {
        "input": str(path),
        "kind": kind,
        "chemistry": d.chemistry.value,
        "confidence": round(d.confidence, 4),
        "route": d.route.value,
        "reason": d.reason,
    }
    return row | {"authenticity": authenticity.as_dict()} if authenticity else row


def _error_row(
    path: Path, kind: str, message: str, authenticity: Authenticity | None = None
) -> dict[str, Any]:
    row = {
        "input": str(path),
        "kind": kind,
        "chemistry": Chemistry.UNKNOWN.value,
        "confidence": 0.0,
        "route": Route.quarantine.value,
        "reason": f"unreadable_input: {message}",
        "error": message,
    }
    return row | {"authenticity": authenticity.as_dict()} if authenticity else row


def classify_paths(
    paths: Sequence[Path],
    rules: RoutingRules,
    model: LoadedModel | None,
    trust: TrustList | None = None,
) -> list[dict[str, Any]]:
    """One result row per input, in order; bad inputs give an error row, never an exception.
    Passport rows carry the passport's `authenticity` (verified against `trust`)."""
    trust = trust or TrustList()
    rows: list[dict[str, Any] | None] = [None] * len(paths)
    spectra: list[tuple[int, Spectrum]] = []
    for i, path in enumerate(paths):
        kind = input_kind(path)
        if kind == "spectrum":
            try:
                spectrum = read_spectrum(path)
            except SpectrumError as exc:
                rows[i] = _error_row(path, kind, str(exc))
                continue
            if "warning" in spectrum.metadata:
                err.print(f"warning: {spectrum.metadata['warning']}", markup=False, highlight=False)
            spectra.append((i, spectrum))
            continue
        try:
            read = read_passport(path.read_bytes(), source=str(path), trust=trust)
        except OSError as exc:
            rows[i] = _error_row(path, kind, f"{path}: cannot read file ({exc.strerror})")
            continue
        except UnreadableCredential as exc:
            rows[i] = _error_row(path, kind, str(exc), exc.authenticity)
            continue
        except PassportError as exc:
            rows[i] = _error_row(path, kind, str(exc))
            continue
        passport, auth = read.passport, read.authenticity
        d = decide(
            fuse(passport, None),
            rules,
            damaged=passport.damaged,
            soh_pct=passport.soh_pct,
            authenticity=(auth.verdict.value, auth.reason),
        )
        rows[i] = _row(path, kind, d, auth)
    if spectra:
        if model is None:
            raise RegistryError("spectra given but no model loaded")
        results = model.classifier.predict_batch([s for _, s in spectra])
        for (i, _), res in zip(spectra, results, strict=True):
            d = decide(fuse(None, res), rules, model_version=model.version)
            rows[i] = _row(paths[i], "spectrum", d)
    return [r for r in rows if r is not None]


def classify(
    ctx: typer.Context,
    paths: Annotated[
        list[Path], typer.Argument(help="Spectrum files (.msa, .mca, .csv) or passport JSON.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per input per line.")
    ] = False,
    model_name: Annotated[
        str | None, typer.Option("--model", help="Model to use (default: the active one).")
    ] = None,
) -> None:
    """Classify spectrum and passport files and show the route each cell would take."""
    c = ctx_of(ctx)
    rules = load_rules(c.config_dir)
    needs_model = any(input_kind(p) == "spectrum" for p in paths)
    model = _load_model(c, model_name) if needs_model else None
    trust = load_trust(c.config_dir) if any(input_kind(p) == "passport" for p in paths) else None
    rows = classify_paths(paths, rules, model, trust)
    if as_json:
        for row in rows:
            # File names and errors quote file content: print it as is, never as rich markup.
            out.print(
                json.dumps(row, ensure_ascii=False),
                markup=False,
                emoji=False,
                highlight=False,
                soft_wrap=True,
            )
    else:
        table = Table("input", "kind", "chemistry", "conf.", "route", "reason")
        for row in rows:
            table.add_row(
                Text(row["input"]),
                row["kind"],
                row["chemistry"],
                f"{row['confidence']:.2f}",
                row["route"],
                Text(row["reason"]),
            )
        out.print(table)
    bad = [r for r in rows if "error" in r]
    for r in bad:
        err.print(f"[bold red]error:[/] {escape(r['error'])}", highlight=False, soft_wrap=True)
    if bad:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- labelled data


def read_labelled(directory: Path, min_per_class: int = 0) -> Labelled:
    """Read DIR/labels.csv and every spectrum it names, with a progress bar once spectra are
    read; one error line and exit status 2 when the directory cannot be used (or a class has
    too few spectra)."""
    progress = progress_bar()
    task = progress.add_task(f"reading {directory}", total=None)

    def advance(total: int) -> None:
        progress.start()  # only once spectra are read: a refusal before is one line alone
        progress.update(task, total=total, advance=1)

    try:
        return load_labelled(directory, advance, min_per_class=min_per_class)
    except LabelsError as exc:
        progress.stop()
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        progress.stop()


def features_of(spectra: Sequence[Spectrum], what: str) -> np.ndarray:
    chunk = 2000
    parts = []
    with progress_bar() as progress:
        task = progress.add_task(what, total=len(spectra))
        for i in range(0, len(spectra), chunk):
            parts.append(extract_batch(spectra[i : i + chunk]))
            progress.advance(task, len(spectra[i : i + chunk]))
    return np.concatenate(parts)


# ----------------------------------------------------------------------------- evaluation


def plot_confusion(report: dict[str, Any], path: Path, title: str) -> Path:
    """Confusion matrix PNG (truth rows, predicted columns; UNKNOWN = quarantined)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = report["confusion"]
    m = np.asarray(conf["matrix"], dtype=float)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 7), dpi=110)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(conf["columns_predicted"])), conf["columns_predicted"], rotation=45)
    ax.set_yticks(range(len(conf["rows_truth"])), conf["rows_truth"])
    for (r, k), v in np.ndenumerate(m):
        if v:
            ax.text(
                k,
                r,
                str(int(v)),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if share[r, k] > 0.5 else "black",
            )
    ax.set_xlabel("predicted (UNKNOWN = quarantined)")
    ax.set_ylabel("true chemistry")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _print_report(report: dict[str, Any]) -> None:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f} %"

    out.print(
        f"cells {report['n']}  accepted {report['accepted']}\n"
        f"accuracy on accepted  {pct(report['accuracy_on_accepted'])}\n"
        f"coverage              {pct(report['coverage'])} of all cells, "
        f"{pct(report['coverage_xrf_visible'])} of cells the XRF can read "
        f"(not Li-ion in a steel can)\n"
        f"misroute rate         {pct(report['misroute_rate'])} ({report['misrouted']} cells)\n"
        f"steel-can cells answered can_occluded  {pct(report['can_occluded_recall'])}\n"
        f"quarantine reasons    {report['quarantine_reasons']}",
        highlight=False,
    )
    table = Table("class", "support", "precision", "recall (accepted)", "coverage")
    for cls, v in report["per_class"].items():
        table.add_row(
            cls,
            str(v["support"]),
            pct(v["precision"]),
            pct(v["recall_on_accepted"]),
            pct(v["coverage"]),
        )
    out.print(table)
    conf = report["confusion"]
    cm = Table("truth \\ predicted", *conf["columns_predicted"])
    for name, row in zip(conf["rows_truth"], conf["matrix"], strict=True):
        cm.add_row(name, *(str(v) if v else "." for v in row))
    Console(width=max(out.width, 160), highlight=False).print(cm)  # 14 columns need room
    for m in report["misrouted_cells"]:
        out.print(
            f"misrouted: {m['input']} ({m['truth']}, {m['cell_format']}) -> {m['route']}: "
            f"{m['reason']}",
            highlight=False,
            soft_wrap=True,
        )


def evaluate(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Directory with labels.csv + spectra.")],
    model_name: Annotated[
        str | None, typer.Option("--model", help="Model to evaluate (default: the active one).")
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option("--report", help="Where to write the PNG + JSON (default var/reports)."),
    ] = None,
) -> None:
    """Measure a model on labelled spectra: accuracy, coverage, misroutes, confusion matrix."""
    c = ctx_of(ctx)
    rules = load_rules(c.config_dir)
    model = _load_model(c, model_name)
    data_set = read_labelled(data)
    features = features_of(data_set.spectra, "extracting features")
    totals = np.asarray([s.total_counts() for s in data_set.spectra])
    results = model.classifier.predict_features(features, totals)
    names = [Path(s.source).name for s in data_set.spectra]
    report = evaluate_results(results, data_set.chemistry, data_set.cell_format, rules, names)
    report.update(
        model=model.info.name,
        model_version=model.version,
        data=str(data),
        data_fingerprint=data_set.fingerprint,
        evaluated=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    target = report_dir or c.plant().plant.data_dir / "reports"
    stem = f"evaluate-{model.info.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    target.mkdir(parents=True, exist_ok=True)
    json_path = target / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    png = plot_confusion(report, target / f"{stem}.png", f"{model.version} on {data.name}")
    _print_report(report)
    err.print(f"wrote {json_path} and {png}")


# ----------------------------------------------------------------------------- plant train


def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Directory with labels.csv + spectra.")],
    name: Annotated[
        str | None, typer.Option("--out", help="Name of the new model (default: a timestamp).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the training.")] = 0,
    activate: Annotated[
        bool, typer.Option("--activate", help="Make the new model the active one.")
    ] = False,
    builtin: Annotated[
        bool,
        typer.Option("--builtin", help="Write the committed default model (models/data/) instead."),
    ] = False,
) -> None:
    """Train a chemistry model on labelled spectra and save it in the model registry."""
    c = ctx_of(ctx)
    reg = registry_of(c)
    model_name = (
        DEFAULT_NAME if builtin else check_name(name or f"model-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    )
    try:
        target = DEFAULT_DIR if builtin else reg.model_dir(model_name)
    except RegistryError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    data_set = read_labelled(data, MIN_PER_CLASS)
    features = features_of(data_set.spectra, "extracting features")
    labels = [
        training_label(ch, f)
        for ch, f in zip(data_set.chemistry, data_set.cell_format, strict=True)
    ]
    counts = Counter(labels)
    err.print(f"training on {len(labels)} spectra: {dict(counts.most_common())}")
    # One seventh of every class aside for validation, the rest for training.
    order = np.random.default_rng(seed).permutation(len(labels))
    held: Counter[str] = Counter()
    aside = np.zeros(len(labels), dtype=bool)
    for i in order:
        if held[labels[i]] < counts[labels[i]] // 7:
            aside[i] = True
            held[labels[i]] += 1
    val, fit = order[aside[order]], order[~aside[order]]
    with err.status("fitting the calibrated model (about a minute per 10,000 spectra)"):
        estimator = train_estimator(features[fit], [labels[i] for i in fit], seed=seed)
    rules = Rules()
    totals = np.asarray([s.total_counts() for s in data_set.spectra])
    val_results = Classifier(estimator, rules).predict_features(features[val], totals[val])
    metrics = evaluate_results(
        val_results,
        [data_set.chemistry[i] for i in val],
        [data_set.cell_format[i] for i in val],
        load_rules(c.config_dir),
    )
    figures = summary(metrics)
    skops_path = target / (f"{DEFAULT_NAME}.skops" if builtin else "model.skops")
    meta_path = target / (f"{DEFAULT_NAME}.json" if builtin else "model.json")
    meta = save_model(
        estimator,
        skops_path,
        meta_path,
        name=model_name,
        rules=rules,
        data_fingerprint=data_set.fingerprint,
        metrics={"validation_split": figures},
        extra={"training_data": str(data), "n_train": len(fit), "label_counts": dict(counts)},
    )
    err.print(f"saved {meta['version']} to {skops_path} (validation: {figures})")
    if activate and not builtin:
        activate_gated(c, model_name)


def activate_gated(c: Ctx, name: str, *, force: bool = False, reason: str = "") -> None:
    """Activate through the promotion gate, printing its line; refused -> exit 2. A forced
    activation is audited in the plant database with its reason."""
    if force and not reason.strip():
        err.print(
            "[bold red]error:[/] --force needs --reason TEXT (a forced activation is audited)"
        )
        raise typer.Exit(2)
    catalog = ModelCatalog(c.plant().plant.data_dir, c.config_dir)
    store = c.store() if force else None
    try:
        _, verdict = catalog.activate(name, force=force, reason=reason, store=store)
    except GateRefused as exc:
        err.print(
            f"[bold red]{escape(str(exc))}[/]; use --force --reason TEXT to activate anyway",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    except (LookupError, ValueError, RuntimeError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        if store is not None:
            store.close()
    err.print(escape(verdict.line), highlight=False, soft_wrap=True)
    info = catalog.registry.get(name)
    out.print(f"active model: {info.name} ({info.version})", highlight=False)


# ----------------------------------------------------------------------------- plant models


def _describe(info_iter: Iterator[Any], active: str) -> Table:
    table = Table("", "name", "version", "created", "features", "validation")
    for m in info_iter:
        metrics = m.meta.get("metrics", {})
        val = metrics.get(REFERENCE_CV) or metrics.get("validation_split", {})
        shown = (
            f"acc {val.get('accuracy_on_accepted')}, cov {val.get('coverage_xrf_visible')}"
            + (", site CV" if REFERENCE_CV in metrics else "")
            if val
            else ""
        )
        table.add_row(
            "*" if m.name == active else "",
            m.name + (" (built-in)" if m.builtin else ""),
            m.version,
            str(m.meta.get("created", "")),
            str(m.meta.get("feature_version", "")),
            shown,
        )
    return table


@models_app.command("list")
def models_list(ctx: typer.Context) -> None:
    """List the models; * marks the active one."""
    reg = registry_of(ctx_of(ctx))
    try:
        out.print(_describe(iter(reg.list_models()), reg.active_name()))
        ref = reference_set(reg.root)
    except RegistryError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    out.print(
        f"site reference set: {ref.meta.get('n')} spectra from {ref.meta.get('source')}, "
        f"recorded {ref.meta.get('recorded')}"
        if ref
        else "site reference set: none (plant models calibrate records one)",
        highlight=False,
        soft_wrap=True,
    )


@models_app.command("activate")
def models_activate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Activate even if the promotion gate refuses (audited)."),
    ] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="Why the gate is overridden (needed with --force).")
    ] = "",
) -> None:
    """Make a model the one the line uses: it must load, be trusted and pass the promotion gate
    (not worse than the active model on the site reference set)."""
    activate_gated(ctx_of(ctx), name, force=force, reason=reason)


@models_app.command("rollback")
def models_rollback(ctx: typer.Context) -> None:
    """Go back to the model that was active before the last activation."""
    reg = registry_of(ctx_of(ctx))
    try:
        info = reg.rollback()
    except RegistryError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    out.print(f"active model: {info.name} ({info.version})")


def register(root: typer.Typer) -> None:
    root.command()(classify)
    root.command()(train)
    root.command()(evaluate)
    root.add_typer(models_app, name="models")
