"""The hydromet child of `plant run --simulate` (`python -m plant.commands.hydromet_child FD`):
plant/hydromet_process.py's loop around a runner of the simulated hydromet plant, behind the
simulated mechanical stage that weighs each closed hydromet lot's fractions."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from drivers.sim.hydromet import ControlLoop, SimHydrometPlant
from drivers.sim.mechanical import SimMechanicalStage
from plant.alarms import Alarms
from plant.events import EventBus
from plant.hydromet import HydrometConfig, HydrometRunner, StepReport, load_hydromet
from plant.hydromet_process import serve
from plant.purity import ProductsConfig, load_products
from plant.store import CellRow, LotRow, Store, WeighingRow
from plant.weighings import record_weighings

MECHANICAL_USER = "sim-mechanical"
WEIGH_PER_STEP = 20  # a backlog (a database from before weighings) drains over several steps


def weigh_closed_lots(
    store: Store, stage: SimMechanicalStage, line: str, now: datetime
) -> list[str]:
    """Write the weighed fractions of the closed hydromet lots of `line` not weighed yet, oldest
    first; the split follows the lot's cells' decided chemistries. Returns the lots weighed."""
    with store.session() as s:
        weighed = select(WeighingRow.lot_id).where(WeighingRow.lot_id.is_not(None))
        lots = list(
            s.scalars(
                select(LotRow)
                .where(
                    LotRow.line == line,
                    LotRow.route == "hydromet",
                    LotRow.state != "open",
                    LotRow.id.not_in(weighed),
                )
                .order_by(LotRow.closed_at, LotRow.id)
                .limit(WEIGH_PER_STEP)
            )
        )
        cells = {
            lot.id: {
                chem: float(g or 0.0)
                for chem, g in s.execute(
                    select(CellRow.chemistry, func.sum(CellRow.mass_g))
                    .where(CellRow.lot_id == lot.id)
                    .group_by(CellRow.chemistry)
                ).all()
            }
            for lot in lots
        }
    for lot in lots:
        weighed_kg = stage.fractions_kg(_scaled(cells[lot.id], lot.mass_g))
        record_weighings(
            store, weighed_kg, user=MECHANICAL_USER, source="simulated", lot=lot.id, at=now
        )
    return [lot.id for lot in lots]


def _scaled(cells_g: Mapping[str | None, float], lot_g: float) -> dict[str | None, float]:
    """The lot's weighed mass in kg, shared out by its cells' chemistries."""
    total = sum(cells_g.values())
    if total <= 0:
        return {None: lot_g / 1000.0}
    return {chem: lot_g / 1000.0 * g / total for chem, g in cells_g.items()}


class MechanicalThenHydromet(HydrometRunner):
    """Each step weighs the newly closed lots' fractions first, then runs the hydromet step."""

    def __init__(
        self,
        store: Store,
        config: HydrometConfig,
        products: ProductsConfig,
        alarms: Alarms | None = None,
        bus: EventBus | None = None,
        *,
        plant: SimHydrometPlant,
        line: str,
        mechanical: SimMechanicalStage,
    ) -> None:
        super().__init__(store, config, products, alarms, bus, plant=plant, line=line)
        self.mechanical = mechanical

    def step(
        self,
        now: datetime,
        ph: float | None = None,
        process: Mapping[str, float] | None = None,
    ) -> StepReport:
        weigh_closed_lots(self.store, self.mechanical, self.line, now)
        return super().step(now, ph, process)


def simulated_runner(
    store: Store, config_dir: Path, alarms: Alarms, bus: EventBus, line: str, seed: int
) -> HydrometRunner:
    """The runner of config/hydromet.toml and config/products.toml on the simulated plant."""
    config = load_hydromet(config_dir)
    plant = simulated_plant(config, seed)
    return MechanicalThenHydromet(
        store, config, load_products(config_dir), alarms, bus, plant=plant, line=line,
        mechanical=SimMechanicalStage(seed),
    )  # fmt: skip


def simulated_plant(config: HydrometConfig, seed: int) -> SimHydrometPlant:
    """The simulated plant with the loops of config/hydromet.toml (`[process]`, the
    `[solvent_extraction]` circuits, `[carbonation]`) and its `[tanks]` hold-up."""
    p = config.process
    loops = {p.ph_tag: ControlLoop(p.ph_setpoint, p.ph_noise, p.ph_drift_per_h)}
    for tag, sx in config.solvent_extraction.loops().items():
        loops[tag] = ControlLoop(sx.ph_setpoint, sx.ph_noise)
    for tag, (setpoint, noise, tau_s) in config.carbonation.loops().items():
        loops[tag] = ControlLoop(setpoint, noise, tau_s=tau_s)
    return SimHydrometPlant(seed, loops, holdup_l=config.tanks.pls_holdup_l)


if __name__ == "__main__":
    serve(sys.argv[1:], simulated_runner)
