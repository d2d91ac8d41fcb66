"""`plant bench`: the software's speed on this machine, beside the docs/architecture.md budgets."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from plant.commands import ctx_of, err, out

# (label, key in the result, unit) in the order an engineer reads them
ROWS = (
    ("Line throughput (XRF dwell 0)", "throughput_cells_per_s", "cells/s"),
    ("Decision latency p50", "decision_latency_ms.p50", "ms"),
    ("Decision latency p95", "decision_latency_ms.p95", "ms"),
    ("Decision latency p99", "decision_latency_ms.p99", "ms"),
    ("Decision latency max", "decision_latency_ms.max", "ms"),
    ("Bare Modbus write+read p50", "modbus_rtt_ms.p50", "ms"),
    ("Bare Modbus write+read p99", "modbus_rtt_ms.p99", "ms"),
    ("Decision p99 / bare Modbus p99", "latency_ratio", "x"),
    ("Spectrum classification, batch", "classify_spectra_per_s", "spectra/s"),
    ("Spectrum classification, one p99", "classify_single_ms", "ms"),
    ("QR label decode p99", "qr_decode_ms", "ms"),
    ("Passport lookup p99", "passport_lookup_ms", "ms"),
    ("Passport verification (vc+jwt) p99", "passport_verify_ms", "ms"),
    ("HMI event -> WebSocket p95", "hmi_event_latency_ms", "ms"),
    ("Lost records", "lost_records", ""),
)


def _steal(result: dict[str, Any]) -> str:
    """The line runs' steal, "not reported" where the kernel has no /proc/stat steal field."""
    runs = result.get("runs", {})
    values = [runs[n].get("cpu_steal_pct") for n in ("full_speed", "latency") if n in runs]
    shown = ["not reported" if v is None else f"{v} %" for v in values]
    return " / ".join(shown) + " (line runs)" if shown else "-"


def _table(result: dict[str, Any]) -> Table:
    from plant.commands.bench_harness import BUDGETS, figure

    budgets = {b.key: b for b in BUDGETS}
    machine = result["machine"]
    table = Table(
        title=f"plant bench: commit {str(result['commit'])[:10]}"
        + (" (+ local changes)" if result["dirty"] else ""),
        caption=f"{machine['cores']} cores, {machine['cpu']}, Python {machine['python']}; "
        f"load average {result['load_avg_1min_start']} -> {result['load_avg_1min_end']}; "
        f"CPU taken by the hypervisor (steal) {_steal(result)}; "
        f"passport lookup among {result['passport_lookup_cells']:,} cells"
        + (" (--quick)" if result["quick"] else ""),
    )
    for column in ("figure", "measured", "budget (docs/architecture.md)", ""):
        table.add_column(column, justify="right" if column == "measured" else "left")
    for label, key, unit in ROWS:
        value = figure(result, key)
        budget = budgets.get(key)
        met = budget.met(value) if budget else None
        table.add_row(
            label,
            "-" if value is None else f"{value:g} {unit}".strip(),
            f"{budget.words()} {unit}".strip() if budget else "",
            {True: "[green]ok[/]", False: "[red]missed[/]", None: ""}[met],
        )
    return table


def bench(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the figures as one JSON object on stdout.")
    ] = False,
    cells: Annotated[
        int, typer.Option(min=100, help="Cells through the simulated line in each line run.")
    ] = 2000,
    quick: Annotated[
        bool,
        typer.Option(help="Fewer samples, and passport lookups among 100,000 cells, not 1 M."),
    ] = False,
    latency_rate: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            help="Feeder cells/s of the decision-latency run, e.g. your line's rate "
            "(default: 200, or half the measured throughput if lower).",
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            help="URL of a database the line runs write their cells to, e.g. a store at plant "
            "scale (default: a fresh SQLite file per run). Never the plant's own database."
        ),
    ] = None,
) -> None:
    """Measure the line's speed on this machine (simulated hardware) against the budgets."""
    if ctx.invoked_subcommand is not None:
        return
    from models.registry import RegistryError
    from plant.commands.bench_harness import BenchError, run_bench
    from plant.store import StoreError

    def say(message: str) -> None:
        err.print(message, markup=False, highlight=False)

    c = ctx_of(ctx)
    try:
        result = run_bench(
            c.config_dir,
            cells=cells,
            quick=quick,
            say=say,
            latency_rate=latency_rate,
            database=database,
        )
    except (BenchError, RegistryError, StoreError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(result))
    else:
        out.print(_table(result))
    for problem in result["errors"]:
        err.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
    if result["lost_records"] or result["errors"]:
        raise typer.Exit(1)


STORE_ROWS = (
    ("Insert rate", "insert_cells_per_s", "cells/s"),
    ("Passport lookup p99 (find_passport)", "passport_lookup_ms.p99", "ms"),
    ("HMI cell search first page, worst filter p99", "search_first_page_ms.worst_p99", "ms"),
    ("Trace batch -> lots -> cells -> passports p99", "trace_batch_ms.p99", "ms"),
    ("Trace passport -> batches p99", "trace_passport_ms.p99", "ms"),
    ("Bytes per cell record (indexes included)", "bytes_per_cell", "B"),
    ("Bytes per kept spectrum", "bytes_per_spectrum", "B"),
    ("Line throughput, store loaded", "line_vs_empty.loaded.throughput_cells_per_s", "cells/s"),
    ("Line throughput, empty store", "line_vs_empty.empty.throughput_cells_per_s", "cells/s"),
    ("Line throughput, loaded / empty", "line_vs_empty.throughput_ratio", "x"),
    (
        "Decision latency p99, store loaded",
        "line_vs_empty.loaded.decision_latency_ms_p99",
        "ms",
    ),
    ("Decision latency p99, empty store", "line_vs_empty.empty.decision_latency_ms_p99", "ms"),
    ("Decision latency p99, loaded / empty", "line_vs_empty.decision_latency_p99_ratio", "x"),
)


def _store_table(result: dict[str, Any]) -> Table:
    from plant.commands.bench_harness import figure
    from plant.commands.bench_store import STORE_BUDGETS

    budgets = {b.key: b for b in STORE_BUDGETS}
    table = Table(
        title=f"plant bench store: {result['cells']:,} cells on {result['backend']}, "
        f"commit {str(result['commit'])[:10]}" + (" (+ local changes)" if result["dirty"] else ""),
        caption=f"{result['spectra']:,} spectra, {result['passports']:,} passports, "
        f"{result['lots']:,} lots, {result['batches']:,} batches; worst search filter: "
        f"{result['search_first_page_ms']['worst_filter']}",
    )
    for column in ("figure", "measured", "budget (issue #26)", ""):
        table.add_column(column, justify="right" if column == "measured" else "left")
    for label, key, unit in STORE_ROWS:
        value = figure(result, key)
        met = result["budgets_met"].get(key)
        table.add_row(
            label,
            "-" if value is None else f"{value:g} {unit}",
            f"{budgets[key].words()} {unit}" if key in budgets else "",
            {True: "[green]ok[/]", False: "[red]missed[/]", None: ""}[met],
        )
    return table


def bench_store(
    ctx: typer.Context,
    cells: Annotated[int, typer.Option(min=100, help="Synthetic cells to load.")] = 100_000,
    database: Annotated[
        str | None,
        typer.Option(
            help="URL of an EMPTY database to load (default: a temporary SQLite file, "
            "deleted afterwards). Never the plant's own database."
        ),
    ] = None,
    spectrum_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of cells whose spectrum is still kept."),
    ] = 0.1,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the figures as one JSON object on stdout.")
    ] = False,
    line: Annotated[
        bool,
        typer.Option(
            help="Also run the line (`plant bench`'s line runs) on the loaded store and on an "
            "empty database beside it, alternated, and compare."
        ),
    ] = True,
    line_cells: Annotated[
        int, typer.Option(min=100, help="Cells through the simulated line in each line run.")
    ] = 2000,
    line_pairs: Annotated[
        int, typer.Option(min=1, help="Line measurements on each store (loaded, empty).")
    ] = 2,
) -> None:
    """Load N synthetic cells into a fresh store and time the line's and the HMI's queries."""
    import tempfile

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from models.registry import RegistryError
    from plant.commands.bench_harness import BenchError, same_database
    from plant.commands.bench_store import run_store_bench
    from plant.config import load_plant
    from plant.store import StoreError, safe_url

    config_dir = ctx_of(ctx).config_dir
    cfg = load_plant(config_dir)
    if database is not None and same_database(database, cfg.database.url):
        err.print(
            f"[bold red]error:[/] --database {safe_url(database)} is the plant's own database: "
            "give an empty one",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    with tempfile.TemporaryDirectory(prefix="plant-bench-store-") as tmp:
        url = database or f"sqlite:///{tmp}/store-bench.db"
        columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
        try:
            with Progress(*columns, console=err, transient=True) as progress:
                result = run_store_bench(
                    url,
                    cells,
                    spectrum_share=spectrum_share,
                    seed=1,
                    progress=progress,
                    line=(config_dir, cfg.plant.data_dir.resolve()) if line else None,
                    line_cells=line_cells,
                    line_pairs=line_pairs,
                )
        except (BenchError, StoreError, RegistryError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(result))
    else:
        out.print(_store_table(result))
    line_figures = result["line_vs_empty"] or {}
    for problem in line_figures.get("errors", []):
        err.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
    if line_figures.get("lost_records") or line_figures.get("errors"):
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    app = typer.Typer(help="The software's speed on this machine.")
    app.callback(invoke_without_command=True)(bench)
    app.command("store")(bench_store)
    root.add_typer(app, name="bench")
