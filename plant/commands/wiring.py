"""What `plant run` is built from: the simulators, the simulated cells' truth and the HMI, which
only the command line knows (docs/architecture.md, "Import rule"); plant/runner.py gets the
built parts (`RunParts`) and imports none of them."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from drivers.sim.camera import SimCamera
from drivers.sim.cells import CellStream
from drivers.sim.passports import SimIssuer, passport_document
from models.credentials import Issuer, TrustList, public_key
from models.passport import Passport
from plant.commands.sim_cells import cell_stream
from plant.config import PlantConfig
from plant.domain import Chemistry, Route
from plant.events import EventBus
from plant.hardware import LabelReader
from plant.hydromet_process import HydrometProcess
from plant.passports import Signature, upsert_passports
from plant.rig import CameraLabels, Rig, open_rig
from plant.routing import RoutingRules
from plant.runner import RunOptions, RunParts
from plant.runner import run_line as run_with
from plant.store import Store, utcnow
from plant.trust import read_passport

HYDROMET_CHILD = "plant.commands.hydromet_child"  # `python -m` module of the hydromet child


def run_parts(cfg: PlantConfig, config_dir: Path, opts: RunOptions) -> RunParts:
    """The parts of one `plant run`: with `opts.simulate` the simulated cells' passports and
    hydromet plant; simulated label readers when `[camera] kind` asks for them; the HMI."""
    # A simulated run labels its cells with passports of their own (another delivery), so a
    # second run on the same database meets no passport twice.
    batch = f"{time.time_ns():x}" if opts.simulate else ""
    stream = cell_stream(cfg, batch)
    line = opts.line or cfg.plant.line

    def rig() -> Rig:
        return open_rig(cfg, config_dir, simulated_labels(cfg, stream))

    issuer = SimIssuer(forged_share=cfg.sim.forged_passport_share)

    def passports(store: Store, seqs: range) -> int:
        return import_simulated_passports(store, stream, seqs, issuer)

    def hydromet(bus: EventBus) -> HydrometProcess:
        return HydrometProcess(
            cfg.database.url, config_dir, bus, line=line, seed=cfg.sim.seed, child=HYDROMET_CHILD
        )

    def hmi(bus: EventBus, store: Store) -> Any:
        from hmi.app import create_app  # heavy: FastAPI and the pages

        return create_app(config_dir, bus=bus, store=store)

    def score(cells: Sequence[tuple[int, str | None]], rules: RoutingRules) -> dict[str, int]:
        return {"misrouted": misrouted(CellStream(cfg.sim.seed), cells, rules)}

    return RunParts(
        rig=rig,
        passports=passports if opts.simulate else None,
        hydromet=hydromet if opts.simulate else None,
        hmi=hmi if opts.hmi else None,
        score=score,
        sim_args=("--batch", batch) if batch else (),
    )


def simulated_labels(cfg: PlantConfig, stream: CellStream) -> LabelReader | None:
    """The simulated label images of `[camera] kind` `sim`, decoded here, else None (the TCP
    code reader, `tcp_reader`, is a simulator of `plant sim`).

    `stream` is shared with the passport import: the labels carry the passports it stored."""
    if cfg.camera.kind == "sim":
        return CameraLabels(SimCamera(cfg.sim.seed, stream))
    return None


def misrouted(
    truth: CellStream, cells: Sequence[tuple[int, str | None]], rules: RoutingRules
) -> int:
    """Cells (seq, stored route) sent elsewhere than the rules route their true chemistry;
    quarantined and undecided cells are not counted."""
    wrong = 0
    for seq, route in cells:
        if route in (None, Route.quarantine):
            continue
        if route != rules.routes[Chemistry(truth.truth(int(seq)).chemistry)]:
            wrong += 1
    return wrong


def sim_trust(issuer: SimIssuer) -> TrustList:
    """The trust list the simulated passports are verified against: the simulated issuer."""
    kid, key = public_key(issuer.public_jwk(), "simulated issuer")
    return TrustList({issuer.id: Issuer(issuer.id, {kid: key}, "simulation")})


def import_simulated_passports(
    store: Store, stream: CellStream, seqs: Iterable[int], issuer: SimIssuer | None = None
) -> int:
    """Store the passports of simulated cells without writing files (fast path for big runs):
    each signed by the simulated issuer and verified as an imported signed passport is."""
    issuer = issuer or SimIssuer()
    trust = sim_trust(issuer)
    now = utcnow()

    def items() -> Iterator[tuple[Passport, dict[str, Any], None, Signature]]:
        for seq in seqs:
            truth = stream.truth(seq)
            if truth.passport_id is not None:
                token = issuer.sign(passport_document(truth), truth.passport_id)
                read = read_passport(
                    token.encode(), source=f"simulated cell {seq}", trust=trust, now=now
                )
                yield read.passport, read.document, None, Signature(token, read.authenticity)

    new, replaced = upsert_passports(store, items())
    return new + replaced


async def run_line(cfg: PlantConfig, config_dir: Path, opts: RunOptions) -> dict[str, Any] | None:
    """`plant.runner.run_line` with this command line's parts (the bench and tests run it so)."""
    return await run_with(cfg, config_dir, opts, run_parts(cfg, config_dir, opts))
