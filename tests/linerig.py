"""A whole simulated line in one test process: real servers on ephemeral loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from drivers.plc import PlcClient, TagMap, load_tag_map
from drivers.sim.camera import SimCamera
from drivers.sim.cells import CellStream
from drivers.sim.plc import SimPlc
from drivers.sim.xrf import SimXrfStation
from drivers.xrf import XrfClient, XrfStation
from models.registry import Registry
from plant.cell_records import ROUTES, count_routes
from plant.commands.bench_harness import line_config
from plant.commands.wiring import import_simulated_passports
from plant.config import LineSection
from plant.decide import Decider, InThread
from plant.domain import Chemistry, Route
from plant.events import EventBus
from plant.line import LineEngine
from plant.passports import find_passport
from plant.rig import CameraLabels
from plant.routing import RoutingRules, load_rules
from plant.runner import STOP_TIMEOUT_S
from plant.store import CellRow, Store

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config"


def tmp_registry() -> str:
    """An empty registry directory: the active model is then the committed default."""
    import tempfile

    return tempfile.mkdtemp(prefix="plant-models-")


@dataclass
class SimLine:
    engine: LineEngine
    plc_sim: SimPlc
    xrf_sim: SimXrfStation
    client: PlcClient
    store: Store
    task: asyncio.Task[None]
    seed: int

    async def wait_final(self, n: int, timeout: float = 120.0) -> None:
        """Until n cells have been confirmed or quarantined."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.engine.stats.finished < n:
            if self.task.done():
                await self.task
            if loop.time() > deadline:
                raise AssertionError(
                    f"only {self.engine.stats.finished} of {n} cells final after {timeout} s"
                )
            await asyncio.sleep(0.05)

    def plc_counters(self) -> dict[str, int]:
        return {r: int(self.plc_sim.value(f"counters.{r}")) for r in ROUTES}

    def misrouted(self, routes_by_seq: dict[int, str]) -> int:
        rules = load_rules(CONFIG)
        stream = CellStream(self.seed)
        return sum(
            1
            for seq, route in routes_by_seq.items()
            if route != Route.quarantine
            and route != rules.routes[Chemistry(stream.truth(seq).chemistry)]
        )


@contextlib.asynccontextmanager
async def sim_line(
    store: Store,
    *,
    cells: int,
    rate: float = 200.0,
    seed: int = 1,
    heads: int = 2,
    line: str = "L1",
    settings: dict[str, Any] | None = None,
    bus: EventBus | None = None,
    stream: CellStream | None = None,
    rules: RoutingRules | None = None,
    tag_map: TagMap | None = None,
    **plc_options: Any,
) -> AsyncIterator[SimLine]:
    """Start simulators and an engine; stop everything on exit.

    `stream` replaces the default cells of `seed` (every simulator sees the same), `rules` the
    routing rules of config/routing.toml, `tag_map` the PLC map of config/plc.toml."""
    tags = tag_map if tag_map is not None else load_tag_map(CONFIG / "plc.toml")
    stream = stream if stream is not None else CellStream(seed)
    plc_sim = SimPlc(
        tags, port=0, seed=seed, rate_cells_s=rate, max_cells=cells, cells=stream, **plc_options
    )
    await plc_sim.start()
    xrf_sim = SimXrfStation(heads, base_port=0, seed=seed, dwell_scale=0.0, stream=stream)
    await xrf_sim.start()
    await asyncio.to_thread(import_simulated_passports, store, stream, range(1, cells + 1))
    client = PlcClient("127.0.0.1", plc_sim.port, tags)
    xrf_heads = [
        XrfClient("127.0.0.1", p, timeout_s=2.0, name=f"xrf{i}")
        for i, p in enumerate(xrf_sim.ports)
    ]
    model = Registry(Path(tmp_registry())).active_model()  # the committed default
    decider = Decider(InThread(model.classifier, rules or load_rules(CONFIG), model.version))

    async def lookup(pid: str) -> Any:
        return await asyncio.to_thread(find_passport, store, pid)

    engine = LineEngine(
        line=line,
        settings=LineSection(
            **{"xrf_live_time_s": 0.2, "diverter_ack_timeout_s": 5.0, **(settings or {})}
        ),
        store=store,
        plc=client,
        decider=decider,
        station=XrfStation(xrf_heads),
        labels=CameraLabels(SimCamera(seed, stream)),
        passports=lookup,
        bus=bus,
    )
    task = asyncio.create_task(engine.run())
    rig = SimLine(engine, plc_sim, xrf_sim, client, store, task, seed)
    try:
        yield rig
    finally:
        engine.stop()
        with contextlib.suppress(Exception):
            await task
        for h in xrf_heads:
            await h.close()
        await client.close()
        await xrf_sim.stop()
        await plc_sim.stop()


def config_copy(tmp: Path, *, db_url: str, heads: int = 2, seed: int = 1, **line: Any) -> Path:
    """config/ copied with free ports for PLC, XRF heads and HMI, and the given database."""
    return line_config(
        CONFIG, tmp / "config", db_url=db_url, data_dir=tmp / "var", heads=heads, seed=seed, **line
    )


def plant_env() -> dict[str, str]:
    """The environment for a `plant` subprocess: config and database from its --config only."""
    import os

    drop = ("PLANT_DATABASE_URL", "PLANT_CONFIG_DIR")
    return {k: v for k, v in os.environ.items() if k not in drop}


def plant_cmd(cfg: Path, *args: str) -> list[str]:
    """argv of `plant --config CFG ARGS...` run with this interpreter."""
    import sys

    return [sys.executable, "-m", "plant.cli", "--config", str(cfg), *args]


def cells_of(store: Store, line: str = "L1") -> list[CellRow]:
    """The line's cell rows in sequence order."""
    with store.session() as s:
        return list(s.scalars(select(CellRow).where(CellRow.line == line).order_by(CellRow.seq)))


def each_cell_once(store: Store, n: int, plc: dict[str, int], line: str = "L1") -> list[CellRow]:
    """Assert cells 1..n are stored exactly once and the store's route counts equal the PLC's
    own counters (nothing lost, nothing twice); return the rows."""
    cells = cells_of(store, line)
    assert [c.seq for c in cells] == list(range(1, n + 1))
    assert count_routes(store, line) == plc
    return cells


# -- `plant` as a process, as a user runs it ---------------------------------------------------
def add_user(cfg: Path, cwd: Path, name: str, role: str, password: str) -> None:
    """`plant users add NAME --role ROLE`, the password typed twice."""
    done = subprocess.run(
        plant_cmd(cfg, "users", "add", name, "--role", role),
        input=f"{password}\n{password}\n",
        capture_output=True,
        text=True,
        env=plant_env(),
        cwd=cwd,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def run_cells(
    cfg: Path, cwd: Path, cells: int, rate: float, *args: str, timeout: float = 240.0
) -> dict[str, Any]:
    """`plant run --simulate --cells N --rate R ARGS` to its end: its JSON summary."""
    run = subprocess.run(
        plant_cmd(
            cfg,
            "run",
            "--simulate",
            "--cells",
            str(cells),
            "--rate",
            f"{rate:g}",
            "--no-hmi",
            *args,
        ),
        env=plant_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "NaN" not in run.stdout
    summary: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return summary


def start_run(cfg: Path, cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    """`plant run --simulate ARGS` in the background; its output goes to `cwd/run.log`."""
    with (cwd / "run.log").open("wb") as log:
        return subprocess.Popen(
            plant_cmd(cfg, "run", "--simulate", *args),
            cwd=cwd,
            env=plant_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_run(proc: subprocess.Popen[bytes], cwd: Path) -> None:
    """SIGTERM a `plant run` from `start_run`, as a service manager stops it; it must end
    cleanly within its own stop budget (a run that overran prints what it waited on, shown)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        code = proc.wait(STOP_TIMEOUT_S + 15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        code = None
    log = (cwd / "run.log").read_text(errors="replace")
    assert code == 0, f"plant run did not stop cleanly on SIGTERM (exit {code}):\n{log[-6000:]}"


def until(
    what: str,
    probe: Callable[[], Any],
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 90.0,
) -> Any:
    """Poll `probe` until it returns something true, and return that; fail naming `what`
    (and at once if the watched `plant run` exits meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            assert proc.poll() is None, f"plant run exited ({proc.returncode}) waiting for {what}"
        found = probe()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def answers(url: str) -> bool:
    """The HMI (or any HTTP server) at `url` answers 200 (not yet up: False)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status) == 200
    except OSError:
        return False
