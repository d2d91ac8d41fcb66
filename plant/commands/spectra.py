"""`plant spectra generate` (labelled simulated XRF spectra) and `plant spectra export` (the
plant's measured spectra with its decisions), both for training and tests."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from drivers.sim.cells import CellFormat, CellStream, CellTruth, StreamMix
from drivers.sim.profiles import HELDOUT_PROFILES, PROFILES, TRAIN_PROFILES, InstrumentProfile
from drivers.sim.xrfphysics import CHEMISTRIES, Presentation, draw_presentation, render_cell
from drivers.spectra import FORMATS, Spectrum, write_msa, write_spectrum
from plant.commands import ctx_of, err, time_option
from plant.spectrum_archive import decided_with_spectra
from plant.store import DECISION_COLUMNS

spectra_app = typer.Typer(help="Simulated and recorded XRF spectrum files.", no_args_is_help=True)

LABEL_COLUMNS = (
    "file",
    "chemistry",
    "second_chemistry",
    "cell_format",
    "file_format",
    "profile",
    "seed",
    "seq",
    "live_time_s",
    "casing_fraction",
    "hard",
    "flags",
)

EXPORT_COLUMNS = ("cell_id", "line", "seq", *DECISION_COLUMNS, "file")

# Hard cases: more steel cans and 70/30 mixtures than the infeed default (issue 4).
HARD_MIX = StreamMix(formats={"pouch": 0.2, "opened": 0.5, "steel_can": 0.3}, mixture_share=0.4)
# Every chemistry equally often (training: the rare NiCd, NiMH and alkaline cells of the
# infeed mix would otherwise be a few dozen spread over all training instruments).
BALANCED = {chem: 1.0 for chem in CHEMISTRIES}
MIXES = {
    "plant": (StreamMix(), HARD_MIX),
    "balanced": (StreamMix(chemistry=BALANCED), replace(HARD_MIX, chemistry=BALANCED)),
}


def _profiles(spec: str) -> list[InstrumentProfile]:
    """Profile names, or the groups 'train', 'heldout', 'all'."""
    groups = {"train": TRAIN_PROFILES, "heldout": HELDOUT_PROFILES, "all": tuple(PROFILES)}
    names: list[str] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        names.extend(groups.get(item, (item,)))
    unknown = [n for n in names if n not in PROFILES]
    if unknown or not names:
        err.print(
            f"[bold red]error:[/] unknown profile {', '.join(unknown) or '(none)'}; known: "
            f"{', '.join(PROFILES)} or train, heldout, all",
            highlight=False,
        )
        raise typer.Exit(2)
    return [PROFILES[n] for n in dict.fromkeys(names)]


def _flags(truth: CellTruth, pres: Presentation, live_time_s: float) -> list[str]:
    """Why a cell is hard to classify, as the classifier's evaluation wants to know."""
    flags = []
    if truth.second_chemistry:
        flags.append("mixture")
    if truth.format is CellFormat.steel_can:
        flags.append("steel_can")
    if pres.casing_fraction >= 0.25:
        flags.append("high_casing")
    if live_time_s < 0.25:
        flags.append("short_measurement")
    if truth.cu_foil + truth.al_foil >= 0.3:
        flags.append("foil")
    if pres.traces:
        flags.append("trace_contamination")
    return flags


@dataclass(frozen=True)
class SimulatedCell:
    """One simulated measurement: the cell's truth, how it lay under the head, its spectrum."""

    seq: int
    truth: CellTruth
    presentation: Presentation
    profile: InstrumentProfile
    live_time_s: float
    hard: bool
    spectrum: Spectrum


def simulate_cells(
    n: int,
    seed: int,
    profiles: Sequence[InstrumentProfile],
    hard_share: float,
    mix: str = "plant",
    seqs: Sequence[int] | None = None,
) -> Iterator[SimulatedCell]:
    """The labelled simulated stream of `plant spectra generate` (and of `plant models
    calibrate`'s simulated part): deterministic in (seed, seq); `mix` names the chemistry mix
    (MIXES: the infeed's, or balanced); `seqs` picks cells of the stream (default 0..n-1)."""
    normal_mix, hard_mix = MIXES[mix]
    normal, hard = CellStream(seed, normal_mix), CellStream(seed, hard_mix)
    for seq in range(n) if seqs is None else seqs:
        rng = np.random.default_rng([seed, seq, 0x5BEC])
        is_hard = bool(rng.random() < hard_share)
        truth = (hard if is_hard else normal).truth(seq)
        profile = profiles[int(rng.integers(len(profiles)))]
        pres = draw_presentation(truth, profile, rng)
        live = float(10 ** rng.uniform(np.log10(0.5), np.log10(5.0)))
        if is_hard:
            if truth.format is CellFormat.opened and rng.random() < 0.5:
                pres = replace(pres, casing_fraction=float(rng.uniform(0.25, 0.4)))
            if rng.random() < 0.35:
                live = float(rng.uniform(0.05, 0.2))
        spectrum = render_cell(truth, pres, profile, live, rng)
        yield SimulatedCell(seq, truth, pres, profile, live, is_hard, spectrum)


def generate(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of spectra to write.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the files and labels.csv.")],
    seed: Annotated[int, typer.Option(help="Seed of the simulated cell stream.")] = 1,
    profiles: Annotated[
        str,
        typer.Option(help="Instrument profiles, comma-separated names or train/heldout/all."),
    ] = "train",
    fmt: Annotated[str, typer.Option("--format", help="File format: msa, mca or csv.")] = "msa",
    hard_share: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of hard cases (steel cans, mixtures, casing, short)."
        ),
    ] = 0.15,
    force: Annotated[bool, typer.Option(help="Overwrite an existing labels.csv in OUT.")] = False,
    mix: Annotated[
        str, typer.Option(help="Chemistry mix: plant (the infeed's) or balanced (training).")
    ] = "plant",
) -> None:
    """Write simulated XRF spectra of battery cells with their true chemistry in labels.csv."""
    if mix not in MIXES:
        err.print(f"[bold red]error:[/] --mix must be one of {', '.join(MIXES)}, got {mix!r}")
        raise typer.Exit(2)
    if fmt not in FORMATS:
        err.print(f"[bold red]error:[/] --format must be one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    chosen = _profiles(profiles)
    labels_path = out / "labels.csv"
    if labels_path.exists() and not force:
        err.print(f"[bold red]error:[/] {labels_path} exists; use --force to overwrite")
        raise typer.Exit(2)
    out.mkdir(parents=True, exist_ok=True)
    with (
        labels_path.open("w", newline="", encoding="utf-8") as fh,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
        ) as progress,
    ):
        writer = csv.writer(fh)
        writer.writerow(LABEL_COLUMNS)
        task = progress.add_task("simulating spectra", total=n)
        for cell in simulate_cells(n, seed, chosen, hard_share, mix):
            truth, pres = cell.truth, cell.presentation
            name = f"cell_{cell.seq:06d}.{fmt}"
            write_spectrum(cell.spectrum, out / name, fmt)
            flags = _flags(truth, pres, cell.live_time_s)
            writer.writerow(
                (
                    name,
                    truth.chemistry,
                    truth.second_chemistry or "",
                    truth.format.value,
                    fmt,
                    cell.profile.name,
                    seed,
                    cell.seq,
                    f"{cell.live_time_s:.4g}",
                    f"{pres.casing_fraction:.3f}",
                    int(cell.hard),
                    ";".join(flags),
                )
            )
            progress.advance(task)
    err.print(f"wrote {n} spectra and {labels_path}")


def export(
    ctx: typer.Context,
    since: Annotated[
        str, typer.Option("--since", help="First cell time: ISO 8601 (UTC if no zone) or 24h, 7d.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the .msa files and labels.csv.")
    ],
    until: Annotated[
        str | None, typer.Option("--until", help="Last cell time, ISO 8601 (default: now).")
    ] = None,
    line: Annotated[str | None, typer.Option("--line", help="Only this line's cells.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing labels.csv in OUT.")] = False,
) -> None:
    """Write each decided cell's stored spectrum as EMSA/MSA, its decision in labels.csv."""
    start = time_option(since, "--since")
    end = time_option(until, "--until")
    assert start is not None
    if end is not None and end < start:
        err.print(f"[bold red]error:[/] --until {until} is before --since {since}", highlight=False)
        raise typer.Exit(2)
    labels_path = out / "labels.csv"
    if labels_path.exists() and not force:
        err.print(f"[bold red]error:[/] {labels_path} exists; use --force to overwrite")
        raise typer.Exit(2)
    store = ctx_of(ctx).store()
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    try:
        with labels_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(EXPORT_COLUMNS)
            for kept in decided_with_spectra(store, start, end, line):
                cell, spectrum = kept.cell, kept.spectrum
                name = f"cell_{cell.id:09d}.msa"
                spectrum.metadata.update(line=cell.line, seq=str(cell.seq))
                write_msa(spectrum, out / name)
                writer.writerow(
                    (
                        cell.id,
                        cell.line,
                        cell.seq,
                        cell.passport_id or "",
                        cell.chemistry,
                        "" if cell.confidence is None else f"{cell.confidence:.6g}",
                        cell.decision_source or "",
                        cell.route or "",
                        cell.reason or "",
                        cell.model_version or "",
                        name,
                    )
                )
                n += 1
    finally:
        store.close()
    err.print(f"wrote {n} spectra of decided cells and {labels_path}")


def register(root: typer.Typer) -> None:
    spectra_app.command()(generate)
    spectra_app.command()(export)
    root.add_typer(spectra_app, name="spectra")
