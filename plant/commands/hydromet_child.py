"""The hydromet child of `plant run --simulate` (`python -m plant.commands.hydromet_child FD`):
plant/hydromet_process.py's loop around a runner of the simulated hydromet plant."""

from __future__ import annotations

import sys
from pathlib import Path

from drivers.sim.hydromet import SimHydrometPlant
from plant.alarms import Alarms
from plant.events import EventBus
from plant.hydromet import HydrometConfig, HydrometRunner, load_hydromet
from plant.hydromet_process import serve
from plant.purity import load_products
from plant.store import Store


def simulated_runner(
    store: Store, config_dir: Path, alarms: Alarms, bus: EventBus, line: str, seed: int
) -> HydrometRunner:
    """The runner of config/hydromet.toml and config/products.toml on the simulated plant."""
    config = load_hydromet(config_dir)
    plant = simulated_plant(config, seed)
    return HydrometRunner(
        store, config, load_products(config_dir), alarms, bus, plant=plant, line=line
    )


def simulated_plant(config: HydrometConfig, seed: int) -> SimHydrometPlant:
    """The simulated plant with the pH loop of config/hydromet.toml `[process]`."""
    p = config.process
    return SimHydrometPlant(seed, p.ph_setpoint, p.ph_noise, p.ph_drift_per_h)


if __name__ == "__main__":
    serve(sys.argv[1:], simulated_runner)
