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
) -> None:
    """Measure the line's speed on this machine (simulated hardware) against the budgets."""
    from models.registry import RegistryError
    from plant.commands.bench_harness import BenchError, run_bench

    def say(message: str) -> None:
        err.print(message, markup=False, highlight=False)

    c = ctx_of(ctx)
    try:
        result = run_bench(
            c.config_dir, cells=cells, quick=quick, say=say, latency_rate=latency_rate
        )
    except (BenchError, RegistryError) as exc:
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


def register(root: typer.Typer) -> None:
    root.command()(bench)
