"""`plant purity` (report, certificate) and `plant assays import`: product quality for engineers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from plant.assays import AssayFileError, parse, store_samples
from plant.certificates import CertificateRefused, certificate, public_jwk, render_html
from plant.commands import Ctx, ctx_of, err, out, time_option
from plant.genealogy import TraceError
from plant.hydromet import load_hydromet
from plant.lot_assays import LotAssayError, assay_lot
from plant.purity import load_products
from plant.purity_report import annual_documentation, build_report, render_documentation
from plant.spot_checks import spot_check
from plant.weighings import FRACTIONS

purity_app = typer.Typer(
    help="Product purity, SPC, mass balance and recovery.", no_args_is_help=True
)
assays_app = typer.Typer(
    help="Lab assays from a LIMS; lot assays on the XRF analyser.", no_args_is_help=True
)
certificates_app = typer.Typer(help="Signed recycled-content certificates.", no_args_is_help=True)
report_app = typer.Typer(help="Regulatory documentation.", no_args_is_help=True)


def _bar(pct: float | None, target: float, width: int = 30) -> str:
    if pct is None:
        return "-"
    filled = max(0, min(width, round(pct / 100 * width)))
    mark = round(target / 100 * width)
    cells = ["█" if i < filled else "·" for i in range(width)]
    if 0 <= mark < width:
        cells[mark] = "|"
    return "".join(cells)


def _print_report(rep: dict[str, Any]) -> None:
    t = Table(title="Product batches", show_lines=False)
    for col in ("batch", "product", "kg", "purity %", "verdict"):
        t.add_column(col)
    for b in rep["batches"]:
        verdict = "[green]in spec[/]" if b["in_spec"] else "[red]" + "; ".join(b["reasons"]) + "[/]"
        purity = "-" if b["purity_pct"] is None else f"{b['purity_pct']:.3f}"
        t.add_row(b["id"], b["product"], f"{b['mass_kg'] or 0:.2f}", purity, verdict)
    out.print(t)
    if rep["spc_alarms"]:
        out.print("[bold]SPC alarms[/]")
        for a in rep["spc_alarms"]:
            out.print(f"  [{a['state']}] {a['message']}", highlight=False, soft_wrap=True)
    else:
        out.print("SPC alarms: none")
    m = Table(title="Mass balance (g)")
    cols = ("metal", "in", "products", "by-products", "residues", "tank gain", "unaccounted")
    for col in (*cols, "recovery %"):
        m.add_column(col, justify="right")
    for metal, b in rep["mass_balance"].items():
        m.add_row(
            metal,
            f"{b['in_g']:.0f}",
            f"{b['products_g']:.0f}",
            f"{b['byproducts_g']:.0f}",
            f"{sum(b['residues_g'].values()):.0f}",
            f"{b['holdup_g']:.0f}",
            f"{b['unaccounted_g']:.0f}",
            "-" if b["recovery_pct"] is None else f"{b['recovery_pct']:.1f}",
        )
    out.print(m)
    out.print("[bold]Recovery vs EU Battery Regulation targets[/] (| marks the latest target)")
    for metal, r in rep["recovery"].items():
        targets = ", ".join(
            f"{label} {v:g} % {'met' if r['meets'][label] else 'NOT met'}"
            for label, v in r["targets"].items()
        )
        pct = r["achieved_pct"]
        top = max(r["targets"].values(), default=0.0)
        shown = "-" if pct is None else f"{pct:5.1f} %"
        out.print(
            f"  {metal:3} {_bar(pct, top)} {shown}  ({targets})", highlight=False, soft_wrap=True
        )
    re_ = rep["recycling_efficiency"]
    met = ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in re_["meets"].items())
    out.print(
        f"[bold]Recycling efficiency[/] (EU 2025/606): {re_['rate_pct']} % "
        f"({re_['output_kg']} of {re_['input_kg']} kg; {met})",
        highlight=False,
        soft_wrap=True,
    )
    fr = rep["fractions"]
    weighed_points = {k.calculation_point for k in FRACTIONS.values()}
    weighed = [(k, x) for k in ("output", "not_counted") for x in fr[k]]
    weighed = [(k, x) for k, x in weighed if x["calculation_point"] in weighed_points]
    if weighed:
        f = Table(title="Weighed fractions of the mechanical stage (EU 2025/606)")
        for col in ("fraction", "kg", "counted", "calculation point"):
            f.add_column(col)
        for kind, x in weighed:
            counted = "yes" if kind == "output" else "no"
            f.add_row(x["name"], f"{x['counted_kg']:.1f}", counted, x["calculation_point"])
        out.print(f)
    rec = rep["reconciliation"]
    for node, v in rec["nodes"].items():
        out.print(f"Reconciled balance, {node}: unaccounted {v['unaccounted']} {v['unit']}",
                  highlight=False)  # fmt: skip
    for w in rec["warnings"]:
        out.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    lots = [lot for lot in rep["lots"] if lot["value"]]
    if lots:
        v = Table(title="Valued black-mass lots")
        for col in ("lot", "black mass kg", "Ni %", "Co %", "Mn %", "Fe %", "value"):
            v.add_column(col, justify="right")
        for lot in lots:
            wt, val = lot["assay"]["wt_pct"], lot["value"]
            v.add_row(
                lot["id"],
                f"{lot['assay']['black_mass_kg']:.1f}",
                *(f"{wt.get(el, 0):.2f}" for el in ("Ni", "Co", "Mn", "Fe")),
                f"{val['total']:,.0f} ± {val['uncertainty']:,.0f} {val['currency']}",
            )
        out.print(v)


@purity_app.command("report")
def report(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    since: Annotated[
        str | None,
        typer.Option(help="Only batches, lots and campaigns since an ISO time or an age (24h)."),
    ] = None,
) -> None:
    """Show batches with spec verdicts, SPC alarms, mass balance, recovery and lot values."""
    c: Ctx = ctx_of(ctx)
    products, cfg = load_products(c.config_dir), load_hydromet(c.config_dir)
    store = c.store()
    try:
        rep = build_report(store, products, cfg, time_option(since), now=datetime.now(UTC))
    finally:
        store.close()
    if as_json:
        print(json.dumps(rep, ensure_ascii=False))
    else:
        _print_report(rep)


@purity_app.command("certificate")
def certificate_cmd(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Product batch id, e.g. L1-HC00003-Ni.")],
    html: Annotated[bool, typer.Option("--html", help="Write HTML (the default).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Write JSON instead of HTML.")] = False,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Write the recycled-content certificate of a batch (assay, verdict, traced passports)."""
    if html and as_json:
        err.print("error: choose one of --html and --json")
        raise typer.Exit(2)
    c = ctx_of(ctx)
    products, cfg = load_products(c.config_dir), load_hydromet(c.config_dir)
    store = c.store()
    try:
        cert = certificate(
            store,
            products,
            cfg,
            batch,
            site=c.plant().plant.site,
            now=datetime.now(UTC),
            key_dir=c.config_dir,
        )
    except (TraceError, CertificateRefused) as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    text = json.dumps(cert, ensure_ascii=False, indent=2) if as_json else render_html(cert)
    if out_file is None:
        print(text)
    else:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"certificate of {batch} written to {out_file}")


@assays_app.command("import")
def import_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV exported by the LIMS (docs/assays-csv.md).")],
) -> None:
    """Import lab assays from a LIMS CSV; bad rows are listed by line and the good ones kept."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"error: {file}: cannot read: {exc}")
        raise typer.Exit(2) from None
    try:
        result = parse(text)
    except AssayFileError as exc:
        err.print(f"error: {file}: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    c = ctx_of(ctx)
    store = c.store()
    try:
        n = store_samples(store, load_products(c.config_dir), result)
    finally:
        store.close()
    for bad in result.bad:
        err.print(f"{file}:{bad.line}: {bad.reason}", highlight=False, soft_wrap=True)
    err.print(
        f"{file}: imported {result.good_rows} rows as {n} assays; {len(result.bad)} bad rows",
        highlight=False,
        soft_wrap=True,
    )
    if result.bad:
        raise typer.Exit(1)


@assays_app.command("measure")
def measure_cmd(
    ctx: typer.Context,
    lot: Annotated[str, typer.Argument(help="Closed black-mass or hydromet lot id.")],
    black_mass_kg: Annotated[
        float | None,
        typer.Option(help="Weighed black mass of the lot (default: from its earlier assay)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the assay as JSON.")] = False,
) -> None:
    """Assay a lot's pellet placed in the analyser of plant.toml; stored and audited."""
    c = ctx_of(ctx)
    cfg = c.plant()
    store = c.store()
    try:
        assay = asyncio.run(
            assay_lot(
                store,
                cfg.assay_analyser,
                lambda: load_hydromet(c.config_dir),
                lot,
                "cli",
                black_mass_kg=black_mass_kg,
                now=datetime.now(UTC),
            )
        )
    except LotAssayError as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    if as_json:
        print(json.dumps({**assay, "taken_at": assay["taken_at"].isoformat()}, ensure_ascii=False))
        return
    shown = ", ".join(
        f"{el} {v:.2f} ± {assay['unc_pct'].get(el, 0.0):.2f}"
        for el, v in sorted(assay["wt_pct"].items())
    )
    err.print(
        f"lot {lot}: {shown} wt% ({assay['instrument']}, {assay['test_s']} s); assay {assay['id']}",
        highlight=False,
        soft_wrap=True,
    )


@assays_app.command("spot-check")
def spot_check_cmd(
    ctx: typer.Context,
    cell: Annotated[int, typer.Argument(help="Id of a quarantined cell (its page, /api/cells).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Measure a quarantined cell's sample, placed in the analyser; name its chemistry (audited)."""
    c = ctx_of(ctx)
    cfg = c.plant()
    store = c.store()
    try:
        got = asyncio.run(spot_check(store, cfg.assay_analyser, cell, "cli"))
    except LotAssayError as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    if as_json:
        print(json.dumps(got, ensure_ascii=False))
    else:
        shown = f"cell {cell}: {got['chemistry']} ({got['why']})"
        err.print(shown, highlight=False, soft_wrap=True)


@certificates_app.command("public-key")
def public_key_cmd(ctx: typer.Context) -> None:
    """Print the public JWK that verifies the plant's signed certificates (give it to buyers)."""
    print(json.dumps(public_jwk(ctx_of(ctx).config_dir)))


@report_app.command("recycling")
def recycling_cmd(
    ctx: typer.Context,
    year: Annotated[int, typer.Option(help="Calendar year of the documentation, e.g. 2026.")],
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Where recycling-YYYY.json and .html go.")
    ] = Path("."),
) -> None:
    """Write the annual recycling efficiency and material recovery documentation (EU 2025/606)."""
    if not 2000 <= year <= 2100:
        err.print(f"error: --year {year}: give a calendar year such as 2026")
        raise typer.Exit(2)
    c = ctx_of(ctx)
    products, cfg = load_products(c.config_dir), load_hydromet(c.config_dir)
    store = c.store()
    try:
        doc = annual_documentation(store, products, cfg, year, site=c.plant().plant.site)
    finally:
        store.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"recycling-{year}.json").write_text(
        json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    (out_dir / f"recycling-{year}.html").write_text(render_documentation(doc), encoding="utf-8")
    re_ = doc["recycling_efficiency"]["rate_pct"]
    err.print(f"recycling documentation {year} written to {out_dir} (recycling efficiency {re_} %)")


def register(root: typer.Typer) -> None:
    root.add_typer(purity_app, name="purity")
    root.add_typer(assays_app, name="assays")
    root.add_typer(certificates_app, name="certificates")
    root.add_typer(report_app, name="report")
