"""`plant passports`: import battery passport files into the store and show one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from plant.commands import ctx_of, err, out
from plant.passports import import_passports, lookup_passport

app = typer.Typer(help="Battery passports: import files, look one up.", no_args_is_help=True)


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        err.print(f"[bold red]error:[/] {root}: no such file or directory", highlight=False)
        raise typer.Exit(2)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".json")


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Folder searched recursively for *.json.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Load every passport JSON file under a folder into the plant's passport store."""
    files = _files(directory)
    if not files:
        err.print(f"[bold red]error:[/] {directory}: no *.json files found", highlight=False)
        raise typer.Exit(1)
    store = ctx_of(ctx).store()
    try:
        with Progress(
            TextColumn("importing passports"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=as_json,
        ) as bar:
            task = bar.add_task("import", total=len(files))
            report = import_passports(store, files, progress=lambda _p: bar.advance(task))
    finally:
        store.close()
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        for failure in report.failed:
            err.print(f"[red]failed:[/] {failure.error}", highlight=False, soft_wrap=True)
        for note in report.notes:
            err.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        err.print(
            f"{report.imported} imported, {report.updated} updated, {len(report.failed)} failed "
            f"({len(files)} files)",
            highlight=False,
        )
    if report.failed:
        raise typer.Exit(1)


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    passport_id: Annotated[str, typer.Argument(help="Passport id as printed on the label's QR.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the passport as JSON.")] = False,
) -> None:
    """Show what the store holds for one passport: chemistry and why, mass, health, damage."""
    store = ctx_of(ctx).store()
    try:
        row = lookup_passport(store, passport_id)
    finally:
        store.close()
    if row is None:
        err.print(f"[bold red]error:[/] no passport with id {passport_id!r}", highlight=False)
        raise typer.Exit(1)
    summary = {
        "passport_id": row.id,
        "model": row.model,
        "manufacturer": row.manufacturer,
        "chemistry": row.chemistry,
        "chemistry_reason": row.chemistry_reason,
        "chemistry_text": row.chemistry_text,
        "mass_g": row.mass_g,
        "soh_pct": row.soh_pct,
        "damaged": row.damaged,
        "status": row.status,
        "expires_on": row.expires_on.isoformat() if row.expires_on else None,
        "implausible": row.implausible,
        "source_file": row.source_file,
        "imported_at": row.imported_at.isoformat(),
        "fields_used": row.fields_used,
    }
    if as_json:
        out.print_json(json.dumps(summary))
        return
    for key, value in summary.items():
        if key != "fields_used":
            out.print(f"[bold]{key}[/]: {value}", highlight=False, soft_wrap=True)
    out.print("[bold]fields used[/]:")
    for path, value in row.fields_used.items():
        out.print(f"  {path} = {value}", highlight=False, soft_wrap=True, markup=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="passports")
