"""`plant passports`: import battery passport files into the store and show one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from models.credentials import CredentialError
from models.passport import PassportError
from plant.commands import ctx_of, err, out
from plant.passports import import_passports, lookup_passport, reverify_stored
from plant.trust import UnreadableCredential, keep_status_list, load_trust, read_passport

app = typer.Typer(help="Battery passports: import files, look one up.", no_args_is_help=True)
status_app = typer.Typer(
    help="Status lists (revocation) of passport issuers, held for offline checks.",
    no_args_is_help=True,
)
app.add_typer(status_app, name="status-lists")
SUFFIXES = (".json", ".jwt", ".jws")  # signed passports are told by content, any extension


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        err.print(f"[bold red]error:[/] {root}: no such file or directory", highlight=False)
        raise typer.Exit(2)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Argument(help="A file, or a folder searched for *.json, *.jwt, *.jws.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Load every passport file under a folder into the plant's passport store; signed
    passports (vc+jwt) are verified against the trust list and stored with their verdict."""
    files = _files(directory)
    if not files:
        err.print(
            f"[bold red]error:[/] {directory}: no *.json, *.jwt or *.jws files found",
            highlight=False,
        )
        raise typer.Exit(1)
    trust = load_trust(ctx_of(ctx).config_dir)
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
            report = import_passports(
                store, files, progress=lambda _p: bar.advance(task), trust=trust
            )
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
        "authenticity": row.authenticity or "unsigned",
        "authenticity_reason": row.authenticity_reason,
        "signed": row.credential is not None,
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


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Passport files (JSON or vc+jwt).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per file.")] = False,
) -> None:
    """Explain each passport file's authenticity: verdict, issuer, key id, status list entry."""
    c = ctx_of(ctx)
    trust = load_trust(c.config_dir)
    bad = False
    for path in files:
        try:
            read = read_passport(path.read_bytes(), source=str(path), trust=trust)
            found = read.authenticity.as_dict() | {"passport_id": read.passport.passport_id}
        except OSError as exc:
            found, bad = {"result": "unreadable", "reason": f"{path}: {exc.strerror}"}, True
        except UnreadableCredential as exc:
            found = exc.authenticity.as_dict() | {"reason": str(exc)}
        except PassportError as exc:
            found, bad = {"result": "unreadable", "reason": str(exc)}, True
        bad = bad or found["result"] not in ("verified", "unsigned")
        if as_json:
            out.print_json(json.dumps({"file": str(path), **found}))
        else:
            more = ", ".join(
                f"{k} {found[k]}" for k in ("issuer", "kid", "status_entry") if found.get(k)
            )
            out.print(
                f"{path}: {found['result']}: {found['reason']}" + (f" ({more})" if more else ""),
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    if bad:
        raise typer.Exit(1)


@status_app.command("import")
def status_import_cmd(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Bitstring Status List credentials.")],
) -> None:
    """Verify status list credentials against the trust list, keep them under
    config/trust/status/ and verify every stored signed passport again with them."""
    c = ctx_of(ctx)
    trust = load_trust(c.config_dir)
    failed = 0
    for path in files:
        try:
            held = keep_status_list(c.config_dir, path.read_text("ascii", "replace"), trust)
        except OSError as exc:
            err.print(f"[red]failed:[/] {path}: {exc.strerror}", highlight=False, soft_wrap=True)
            failed += 1
            continue
        except CredentialError as exc:
            err.print(
                f"[red]failed:[/] {escape(f'{path}: {exc}')}", highlight=False, soft_wrap=True
            )
            failed += 1
            continue
        err.print(
            f"{path}: status list {held.url} of {held.issuer} ({held.size} entries) kept",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    store = c.store()
    try:
        changed = reverify_stored(store, trust)
    finally:
        store.close()
    for pid, (old, new) in changed.items():
        out.print(f"passport {pid}: {old} -> {new}", highlight=False, markup=False)
    err.print(f"{len(changed)} stored passports changed verdict", highlight=False)
    if failed:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="passports")
