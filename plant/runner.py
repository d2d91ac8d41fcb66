"""`plant run`: the line engine, the HMI and (with --simulate) the simulated hardware together.

With `--simulate` the simulators run in a child `plant sim` process (a second core for them,
and the same servers a CI rig or `mbpoll` talks to). With `--cells N` the run stops the infeed
once N cells of this line are final, and prints a JSON summary as its last line. The parts that
are simulators or the HMI come built from the command line (`RunParts`, plant/commands/wiring.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import gc
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from threadpoolctl import threadpool_limits

from drivers.plc import PlcError
from models.registry import Registry
from plant import eventloop
from plant.alarms import Alarms
from plant.cell_records import ROUTES, count_routes
from plant.children import reap
from plant.classifier_process import ClassifierProcess
from plant.config import ConfigError, PlantConfig
from plant.decide import Decider
from plant.domain import CellState, Route
from plant.events import Event, EventBus
from plant.historian import PROCESS_TAGS, Historian
from plant.hydromet_process import HydrometProcess
from plant.limits import LiveLimits
from plant.line import LineEngine, percentiles
from plant.metrics import DECISION_LATENCY
from plant.mqtt import publishing as mqtt_publishing
from plant.passports import find_passport
from plant.process_spc import LiveProcessSpc
from plant.rig import Rig, detector_problems, head_health
from plant.routing import RoutingRules, load_rules
from plant.routing_live import LiveRouting
from plant.scheduling import Realtime, normal_priority, policy_of
from plant.setpoints import HYDROMET_LOOPS, mark_applied, pending_setpoints
from plant.spectrum_archive import keep_within_retention
from plant.status import LineStatus, write_status
from plant.store import AlarmRow, CellRow, Store, utcnow

log = logging.getLogger(__name__)
PASSPORT_CHUNK = 5000
STOP_TIMEOUT_S = 30.0  # after Ctrl-C or SIGTERM, the cleanup may take this long
HMI_STOP_TIMEOUT_S = 3  # the HMI's open requests and sockets get this long to finish


@dataclass
class RunOptions:
    simulate: bool = False
    cells: int | None = None
    rate: float = 20.0
    dwell_scale: float = 1.0
    line: str | None = None
    hmi: bool = True
    host: str | None = None
    port: int | None = None
    start_line: bool = True
    warm_sim: bool = False  # simulated XRF precomputes mixtures too (benchmarks)


# Figures of the run's (seq, stored route) cells the controller cannot know, e.g. misrouted
# against the simulator's truth; they join the summary after `plc_counters`.
Score = Callable[[Sequence[tuple[int, str | None]], RoutingRules], dict[str, int]]


@dataclass
class RunParts:
    """What the command line builds for a run; the runner imports none of it (no simulator, no
    HMI: docs/architecture.md, "Import rule")."""

    rig: Callable[[], Rig]  # the line's hardware clients, opened once the simulators listen
    # stores the passports of cells `seqs` before they arrive (simulated cells)
    passports: Callable[[Store, range], int] | None = None
    hydromet: Callable[[EventBus], HydrometProcess] | None = None  # the simulated hydromet line
    hmi: Callable[[EventBus, Store], Any] | None = None  # the HMI's ASGI app; None: no HMI
    score: Score | None = None
    sim_args: Sequence[str] = ()  # more arguments of `plant sim` (--simulate), e.g. --batch


def _set_pdeathsig() -> None:
    """Child dies with its parent (Linux), so a killed controller leaves no stray simulator."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


def spawn_sim(
    config_dir: Path, opts: RunOptions, args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start `plant sim` as a child process with this run's feeder settings and `args`."""
    cmd = [
        sys.executable,
        "-m",
        "plant.cli",
        "--config",
        str(config_dir),
        "sim",
        "--rate",
        str(opts.rate),
        "--dwell-scale",
        str(opts.dwell_scale),
    ]
    if opts.cells is not None:
        cmd += ["--cells", str(opts.cells)]
    if opts.warm_sim:
        cmd.append("--warm-mixtures")
    cmd += args
    proc = subprocess.Popen(cmd, preexec_fn=_set_pdeathsig)
    normal_priority(proc.pid)  # the simulated hardware stands for other machines
    return proc


def wait_ports(host: str, ports: list[int], proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until every simulator port accepts connections."""
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            raise ConfigError(f"simulated hardware exited with status {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, pending[0])) == 0:
                pending.pop(0)
                continue
        if time.monotonic() > deadline:
            raise ConfigError(f"simulated hardware did not open {host}:{pending[0]} in {timeout} s")
        time.sleep(0.1)


def final_count(store: Store, line: str, epochs: tuple[int, ...] | None = None) -> int:
    """Final cells of the line (in these PLC epochs, the run's, if given)."""
    where = [CellRow.line == line, CellRow.state.in_([CellState.confirmed, CellState.quarantined])]
    if epochs is not None:
        where.append(CellRow.epoch.in_(epochs))
    with store.session() as s:
        return int(s.scalar(select(func.count(CellRow.id)).where(*where)) or 0)


def run_epochs(engine: LineEngine) -> tuple[int, ...]:
    """The PLC epochs this run worked in: the one it found and any the PLC started since."""
    return tuple(range(engine.first_epoch, engine.epoch.number + 1))


def summary(
    store: Store,
    line: str,
    rules: RoutingRules,
    *,
    epochs: tuple[int, ...],
    started: datetime,
    plc_counters: dict[str, int],
    latencies_ms: list[float],
    score: Score | None,
) -> dict[str, Any]:
    """The run's figures (its PLC epochs): store counts vs PLC counters, and `score`'s figures
    (RunParts). `routes` counts the PLC's current epoch, as its counters do."""
    with store.session() as s:
        rows = s.execute(
            select(CellRow.seq, CellRow.route, CellRow.state).where(
                CellRow.line == line, CellRow.epoch.in_(epochs)
            )
        ).all()
        alarms = int(
            s.scalar(
                select(func.count(AlarmRow.id)).where(
                    AlarmRow.line == line, AlarmRow.raised_at >= started
                )
            )
            or 0
        )
    scores = score([(int(seq), route) for seq, route, _ in rows], rules) if score else {}
    routes = count_routes(store, line, epochs=epochs[-1:])
    return {
        "line": line,
        "epochs": list(epochs),
        "cells": len(rows),
        "final": sum(1 for *_, st in rows if st in (CellState.confirmed, CellState.quarantined)),
        "routes": routes,
        "plc_counters": plc_counters,
        **scores,
        "quarantined": sum(1 for _, route, _ in rows if route == Route.quarantine),
        "alarms": alarms,
        "decision_latency_ms": percentiles(latencies_ms),
    }


async def run_line(
    cfg: PlantConfig, config_dir: Path, opts: RunOptions, parts: RunParts
) -> dict[str, Any] | None:
    """Run until Ctrl-C, or until `opts.cells` cells are final; returns the summary then.

    With `line.realtime_priority`, the controller's threads and its classifier process run at
    that SCHED_RR priority for the run (docs/line.md, "Scheduling")."""
    # Ctrl-C and SIGTERM (a service manager, `kill`) end the run through every cleanup, so the
    # infeed and the children are stopped; a cleanup that hangs is cut short after
    # STOP_TIMEOUT_S (the PLC's watchdog then stops the infeed).
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        log.warning("%s: stopping the line", sig.name)
        main.cancel()
        loop.call_later(STOP_TIMEOUT_S, _stop_overdue, sig)

    async with contextlib.AsyncExitStack() as cleanup:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
            cleanup.callback(loop.remove_signal_handler, sig)
        realtime = Realtime(cfg.line.realtime_priority)
        realtime.start()
        cleanup.callback(realtime.close)
        cleanup.callback(sys.setswitchinterval, sys.getswitchinterval())
        return await _run_line(cfg, config_dir, opts, parts, cleanup)


async def _run_line(
    cfg: PlantConfig,
    config_dir: Path,
    opts: RunOptions,
    parts: RunParts,
    cleanup: contextlib.AsyncExitStack,
) -> dict[str, Any] | None:
    """The run itself; each part it starts is stopped by `cleanup`, newest first, however the
    run ends (a classifier that fails to start leaves no hydromet child or simulator behind)."""
    line = opts.line or cfg.plant.line
    # The engine hands work to a database thread and decoder threads many times per cell;
    # Python's default 5 ms GIL switch interval would add up to 5 ms to every hand-off.
    sys.setswitchinterval(0.0005)
    # One BLAS thread: the spectrum fits are small matrix products, and OpenBLAS' idle threads
    # spin on the second core, which the line needs (about a quarter more cells/s without them).
    threadpool_limits(1)
    store = Store(cfg.database.url)
    cleanup.callback(store.close)
    store.require_current_schema()
    rules = load_rules(config_dir)
    registry = Registry(cfg.plant.data_dir / "models")
    # The classifier process loads (and checks) the model; this process needs only its name.
    active = registry.get(registry.active_name())
    classifier = ClassifierProcess(registry, active.name, rules)
    cleanup.push_async_callback(classifier.close)
    bus = EventBus()
    if cfg.mqtt.enabled:  # the line's events on the plant's broker (docs/mqtt.md)
        await cleanup.enter_async_context(
            mqtt_publishing(bus, cfg.mqtt, site=cfg.plant.site, line=line)
        )
    hydromet = parts.hydromet(bus) if parts.hydromet is not None else None
    # The hydromet child imports and opens the store while the classifier loads its model and
    # the simulators start; a config it cannot load stops the run below, as before.
    hydromet_started = None
    if hydromet is not None:
        cleanup.push_async_callback(hydromet.close)
        hydromet_started = asyncio.create_task(hydromet.start())
        # Not cancelled: a child being spawned would be lost to close(). The start ends by itself
        # (ready, failed or timed out); the run is over, so its outcome no longer matters.
        cleanup.push_async_callback(_settled, hydromet_started)
    await classifier.start()
    decider = Decider(classifier, cfg.line.classify_batch_max, cfg.line.classify_window_s)
    proc: subprocess.Popen[bytes] | None = None
    if opts.simulate:
        proc = spawn_sim(config_dir, opts, parts.sim_args)
        cleanup.push_async_callback(_stop_sim, proc)
        ports = [cfg.sim.plc_port]  # `plant sim` opens it after its heads
        if cfg.xrf.kind == "scpi":
            ports += [cfg.sim.xrf_port + k for k in range(cfg.sim.xrf_heads)]
        await asyncio.to_thread(wait_ports, cfg.sim.host, ports, proc, 120.0)
    started = utcnow()
    rig = parts.rig()
    cleanup.push_async_callback(rig.close)
    passports_ready = 0
    local_db = store.engine.dialect.name == "sqlite"

    async def lookup(pid: str) -> Any:
        """The cell's passport. A primary-key read of a local SQLite file (WAL: readers do not
        wait for the writer) takes ~0.1 ms, so it runs on the loop: a worker thread's hand-off
        took 1.7-1.9 ms (median) at 130 cells/s and put the label read on the critical path.
        A server database is a network round trip, which stays off the loop."""
        if local_db:
            return find_passport(store, pid)
        return await asyncio.to_thread(find_passport, store, pid)

    async def extend_passports(upto: int) -> None:
        """Store the simulated passports of cells up to `upto` (never beyond the cells the
        feeder sends: parsing a passport holds the interpreter lock the line needs)."""
        nonlocal passports_ready
        if opts.cells is not None:
            upto = min(upto, opts.cells)
        if parts.passports is not None and upto > passports_ready:
            start = passports_ready + 1
            await asyncio.to_thread(parts.passports, store, range(start, upto + 1))
            passports_ready = upto

    async def tick(engine: LineEngine) -> None:
        await process_tick(engine)
        st = engine.status()
        status = LineStatus(
            line=line,
            running=st["running"],
            plc_health=st["plc_health"],
            xrf_health=st["xrf_health"],
            cells_per_min=st["cells_per_min"],
            quarantine_rate=st["quarantine_rate"],
            counts=st["counts"],
            extra={
                **{k: st[k] for k in ("plc_counters", "in_flight", "db_health", "buffers_full")},
                "xrf_heads": head_health(rig.heads),
                "process_spc": process_spc.limits,
            },
        )
        for head, code, text, priority in detector_problems(rig.heads):
            engine.detector_alarm(head, code, text, priority)
        await asyncio.to_thread(write_status, store, status)
        bus.publish(Event("counts", line, status.as_json()))
        await extend_passports(engine.last_seq + PASSPORT_CHUNK // 2)

    historian = Historian(store, line, writes=PROCESS_TAGS)
    limits = LiveLimits(store, line, bus)
    process_spc = LiveProcessSpc(store, line, bus, cfg.process_spc)
    routing = LiveRouting(config_dir, rules, classifier, Alarms(store, line, bus))
    if hydromet_started is not None:
        await hydromet_started

    async def process_tick(engine: LineEngine) -> None:
        """Once a second: historian samples and alarm limits, SPC on the process variables,
        pending setpoints, routing rules changed on the HMI, the simulated hydromet line."""
        now = utcnow()
        samples: dict[str, float] = {}
        try:
            values = await rig.plc.read(*PROCESS_TAGS)
            samples = {tag: float(v) for tag, v in values.items() if math.isfinite(float(v))}
            await asyncio.to_thread(historian.record, [(t, now, v) for t, v in samples.items()])
            await asyncio.to_thread(limits.check, samples, time.monotonic())
        except PlcError:
            pass  # the engine already alarms on the PLC; the historian just has a gap
        await asyncio.to_thread(process_spc.check, now)
        await routing.poll()
        for row in await asyncio.to_thread(pending_setpoints, store):
            await apply_setpoint(row.name, row.value)
        if hydromet is not None:
            await hydromet.step(now, samples)
        await reload_model_if_changed()

    async def reload_model_if_changed() -> None:
        """An engineer activated or rolled back a model: use it from the next cell on."""
        nonlocal active
        name = await asyncio.to_thread(registry.active_name)
        if name == active.name:
            return
        try:
            info = await asyncio.to_thread(registry.get, name)
            await classifier.use(name)
        except Exception as exc:  # the old model keeps deciding; the next tick tries again
            log.error("model %s not loaded, keeping %s: %s", name, active.version, exc)
            return
        active = info
        log.warning("chemistry model %s active from now on", active.version)

    async def apply_setpoint(name: str, value: float) -> None:
        if name == "leach.ph":
            try:
                await rig.plc.write("leach.ph_setpoint", value)
            except PlcError as exc:
                log.warning("setpoint %s=%s not applied yet: %s", name, value, exc)
                return
        elif name in HYDROMET_LOOPS and hydromet is not None:
            hydromet.set_setpoint(HYDROMET_LOOPS[name], value)
        else:
            return
        await asyncio.to_thread(mark_applied, store, name, value)

    engine = LineEngine(
        line=line,
        settings=cfg.line,
        store=store,
        plc=rig.plc,
        decider=decider,
        station=rig.station,
        labels=rig.labels,
        passports=lookup,
        bus=bus,
        on_tick=tick,
        latency=DECISION_LATENCY.labels(line),
    )
    await extend_passports(max(opts.cells or 0, PASSPORT_CHUNK))
    # Startup leaves a large heap (libraries, passports). Frozen, it is skipped by the
    # collector's full passes, which otherwise stall the line for ~0.1 s every few seconds.
    gc.collect()
    gc.freeze()
    server = None
    tasks: list[asyncio.Task[Any]] = []
    if parts.hmi is not None:
        import uvicorn

        app = parts.hmi(bus, store)
        host, port = opts.host or cfg.hmi.host, opts.port or cfg.hmi.port
        server = _quiet_server_class()(
            # X-Forwarded-For is read only from `[hmi] trusted_proxies` (hmi/auth.py:client_of)
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                proxy_headers=False,
                # An open browser socket must not hold up the stop of the line.
                timeout_graceful_shutdown=HMI_STOP_TIMEOUT_S,
            )
        )
        tasks.append(asyncio.create_task(server.serve()))
        print(f"HMI on http://{host}:{port}", file=sys.stderr, flush=True)
    retention = asyncio.create_task(keep_within_retention(store, line, cfg.spectra.retention_days))
    cleanup.push_async_callback(_settled, retention)
    cleanup.callback(retention.cancel)
    engine_task = asyncio.create_task(engine.run(start_line=opts.start_line))
    result = None
    try:
        if opts.cells is None:
            await engine_task
        else:
            while (
                not engine.epoch_ready.is_set()
                or await _final_or_zero(store, line, run_epochs(engine)) < opts.cells
            ):
                if engine_task.done():
                    await engine_task  # raises what stopped it
                    break
                await asyncio.sleep(0.25)
            await engine.stop_infeed()
            if hydromet is not None:  # lots closed in the last second still become batches
                await asyncio.sleep(0.3)
                await hydromet.step(utcnow(), wait=True)
            counters = await rig.plc.read(*[f"counters.{r}" for r in ROUTES])
            result = summary(
                store,
                line,
                routing.rules,
                epochs=run_epochs(engine),
                started=started,
                plc_counters={r: int(counters[f"counters.{r}"]) for r in ROUTES},
                latencies_ms=list(engine.stats.latencies_ms),
                score=parts.score,
            )
            result["classifier_cpu_s"] = round(classifier.cpu_seconds(), 2)
            if hydromet is not None:
                result["hydromet_cpu_s"] = round(hydromet.cpu_seconds(), 2)
            result["scheduling"] = {
                "controller": policy_of(os.getpid()),
                "classifier": policy_of(classifier.pid),
                "simulators": policy_of(proc.pid if proc is not None else None),
                "hydromet": policy_of(hydromet.pid if hydromet is not None else None),
            }
    finally:
        engine.stop()
        with contextlib.suppress(Exception):
            await engine_task
        if server is not None:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
    return result


def _quiet_server_class() -> type[Any]:
    """uvicorn's Server without its own Ctrl-C handling: `run_line` stops the HMI with the line."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


def _stop_overdue(sig: signal.Signals) -> None:
    """The cleanup after a stop signal did not end: say what it still waits on, and leave at
    once rather than hang."""
    print(
        f"error: plant run did not stop within {STOP_TIMEOUT_S:g} s of {sig.name}; exiting. "
        "Still waiting:",
        file=sys.stderr,
    )
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=sys.stderr)
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)  # a thread may be the hold-up
    os._exit(1)


async def _final_or_zero(store: Store, line: str, epochs: tuple[int, ...]) -> int:
    """`final_count`, or 0 while the database is away (the engine holds its writes meanwhile)."""
    try:
        return await asyncio.to_thread(final_count, store, line, epochs)
    except DBAPIError as exc:
        log.warning("final cells not counted (database away): %s", str(exc).splitlines()[0])
        return 0


async def _settled(task: asyncio.Task[Any]) -> None:
    """Wait for `task` to end, whatever its outcome."""
    await asyncio.gather(task, return_exceptions=True)


async def _stop_sim(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the simulators; kill them if they have not stopped within 10 s."""
    proc.terminate()
    await reap(proc, 10.0)


def run_command(cfg: PlantConfig, config_dir: Path, opts: RunOptions, parts: RunParts) -> None:
    """Blocking entry for the CLI; prints the summary JSON last when --cells is given."""
    logging.basicConfig(
        level=os.environ.get("PLANT_LOG", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = eventloop.run(run_line(cfg, config_dir, opts, parts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("plant run stopped", file=sys.stderr, flush=True)
        return
    if result is not None:
        print(json.dumps(result), flush=True)
