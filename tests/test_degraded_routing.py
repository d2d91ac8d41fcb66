"""Issue 6 on a running line: LFP routed to hydromet -> Fe/P rise -> SPC alarm before off-spec.

The simulated infeed carries no LFP at first (the SPC charts learn a clean baseline), then a
growing share of it; `routing.toml` is degraded to send LFP to `hydromet`. The line engine,
the simulated PLC and XRF heads and the hydromet runner all run for real; the test watches the
order in which the plant would notice.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from linerig import CONFIG, sim_line
from sqlalchemy import select

from drivers.sim.cells import CellFormat, CellStream, CellTruth, StreamMix
from plant.alarms import Alarms
from plant.commands.hydromet_child import simulated_plant
from plant.genealogy import trace_batch
from plant.hydromet import HydrometRunner, load_hydromet
from plant.purity import load_products
from plant.routing import load_rules
from plant.store import AssayRow, BatchRow, Store, upgrade, utcnow

CLEAN_CELLS = 700  # about 7 lots of 100 hydromet cells: the SPC baseline (6 batches)
MAX_CELLS = 2200
HYDROMET_FEED = ("NMC622", "NMC811", "NMC532", "NCA", "NMC111")  # as tests/hydromet_feed.py


@dataclass(frozen=True)
class CreepingLfp(CellStream):
    """NMC/NCA feed in pouches and opened cells; LFP creeps in after `CLEAN_CELLS`."""

    def truth(self, seq: int) -> CellTruth:
        lfp = min(0.2, max(0.0, (seq - CLEAN_CELLS) / 100 * 0.012))  # +1.2 % per lot
        each = (1.0 - lfp) / len(HYDROMET_FEED)
        mix = StreamMix(
            chemistry={**dict.fromkeys(HYDROMET_FEED, each), "LFP": lfp},
            formats={CellFormat.pouch: 0.5, CellFormat.opened: 0.5},
            passport_share=0.0,  # the spectrum alone decides: no passport to catch the LFP
            unreadable_label_share=0.0,
            damaged_share=0.0,
            mixture_share=0.0,
        )
        return CellStream(self.seed, mix).truth(seq)


def _degraded_config(tmp: Path) -> Path:
    """config/ with routing.toml sending LFP to hydromet, as a mistaken edit would."""
    out = tmp / "config"
    shutil.copytree(CONFIG, out)
    routing = out / "routing.toml"
    text = routing.read_text()
    assert 'LFP = "black_mass"' in text
    routing.write_text(text.replace('LFP = "black_mass"', 'LFP = "hydromet"'))
    # one lot per campaign, whenever the runner steps: each batch shows one lot's feed
    hydromet = out / "hydromet.toml"
    text = hydromet.read_text()
    assert "max_lots = 2" in text
    hydromet.write_text(text.replace("max_lots = 2", "max_lots = 1"))
    return out


def _ppm(store: Store, product: str, element: str) -> list[float]:
    """An impurity in every assayed batch of a product, oldest first."""
    with store.session() as s:
        rows = s.execute(
            select(AssayRow.composition)
            .join(BatchRow, BatchRow.id == AssayRow.batch_id)
            .where(BatchRow.product == product)
            .order_by(BatchRow.created_at, BatchRow.id)
        ).all()
    return [float(comp["impurities_ppm"].get(element, 0.0)) for (comp,) in rows]


@pytest.mark.slow
def test_lfp_to_hydromet_raises_spc_alarm_before_off_spec_and_traces_to_lfp_cells(
    sqlite_url: str, tmp_path: Path
) -> None:
    upgrade(sqlite_url)
    store = Store(sqlite_url)
    config = _degraded_config(tmp_path)
    rules = load_rules(config)
    hydromet = load_hydromet(config)
    runner = HydrometRunner(
        store,
        hydromet,
        load_products(config),
        Alarms(store, "L1"),
        plant=simulated_plant(hydromet, 1),
        line="L1",
    )
    stream = CreepingLfp(seed=5)
    order: list[tuple[str, str]] = []  # ("spc" | "off_spec", batch id), as the plant saw them
    why: dict[str, list[str]] = {}  # batch id -> off-spec reasons or SPC messages

    async def scenario() -> None:
        async with sim_line(
            store,
            cells=MAX_CELLS,
            rate=400.0,
            heads=4,
            seed=5,
            stream=stream,
            rules=rules,
            settings={"lot_close_kg": 6.0},
        ) as rig:
            while not any(kind == "off_spec" for kind, _ in order):
                if rig.engine.stats.finished >= MAX_CELLS:
                    break
                await asyncio.sleep(0.1)
                # stable pH: only the feed changes
                report = await asyncio.to_thread(runner.step, utcnow(), 4.0)
                for sig in report.spc:  # the charts of what LFP brings: Fe and P
                    why.setdefault(sig.batch_id, []).append(sig.message)
                    if sig.variable in ("Fe", "P"):
                        order.append(("spc", sig.batch_id))
                for b in report.batches:
                    if not b.in_spec:
                        order.append(("off_spec", b.id))
                        why.setdefault(b.id, []).extend(b.reasons)

    asyncio.run(scenario())

    kinds = [kind for kind, _ in order]
    assert "off_spec" in kinds, f"no off-spec batch in {MAX_CELLS} cells: {order}"
    assert "spc" in kinds[: kinds.index("off_spec")], f"no SPC alarm before off-spec: {order} {why}"

    # The off-spec batch fails on Fe or P, which rose well above the clean baseline.
    off_batch = next(b for kind, b in order if kind == "off_spec")
    assert any(r.startswith(("Fe ", "P ")) for r in why[off_batch]), why
    with store.session() as s:
        product = s.scalar(select(BatchRow.product).where(BatchRow.id == off_batch))
    assert product is not None
    rise = {el: _ppm(store, product, el) for el in ("Fe", "P")}
    assert any(v[-1] > 2 * max(v[:6]) for v in rise.values()), rise

    # The Fe/P alarm waits for the LFP: none on a batch of the clean feed.
    first_spc = next(b for kind, b in order if kind == "spc")
    fed = trace_batch(store, first_spc)
    assert any(stream.truth(c.seq).chemistry == "LFP" for c in fed.cells), why[first_spc]

    # The off-spec batch, traced back: its Fe/P suspects are the LFP cells that fed it.
    trace = trace_batch(store, off_batch)
    suspects = trace.suspects(["Fe", "P"])
    assert suspects, f"{off_batch}: no suspects among {len(trace.cells)} cells"
    assert {stream.truth(c.seq).chemistry for c in suspects} == {"LFP"}
    lfp_fed = [c for c in trace.cells if stream.truth(c.seq).chemistry == "LFP"]
    assert len(suspects) >= 0.9 * len(lfp_fed)  # the spectrum found nearly all of them
