"""`plant bench`: the software's speed beside the budgets (docs/architecture.md) and bare protocols.

Every figure comes from the real parts: the line engine against `plant sim` in a child process
over loopback, the active chemistry model, the label decoder, the store and the HMI's WebSocket.
docs/bench.md says exactly how each figure is measured. The bench scripts in bench/ are thin
wrappers over the measuring functions here, so a figure means the same wherever it is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from drivers.camera import DETECTORS, QrDecoder, passport_id_from_payload
from drivers.plc import TagMap
from drivers.sim.camera import SimCamera
from drivers.sim.cells import CellStream
from drivers.sim.passports import SimIssuer, passport_document
from drivers.sim.profiles import PROFILES
from drivers.sim.xrf import DEFAULT_PROFILE
from drivers.sim.xrfphysics import simulate_cell
from models.credentials import Verdict, verify_credential
from models.registry import Registry
from plant import eventloop
from plant.children import running_children
from plant.commands.wiring import HYDROMET_CHILD, run_line, sim_trust
from plant.config import PlantConfig, SimSection, load_plant
from plant.domain import CellState
from plant.line import PollView, percentiles
from plant.rig import tag_map
from plant.runner import RunOptions, final_count, spawn_sim, wait_ports
from plant.store import CellRow, Store, safe_url, upgrade

REPO = Path(__file__).resolve().parents[2]
FULL_SPEED_RATE = 1000.0  # feeder cells/s for the throughput run: the controller is the bottleneck
LATENCY_RATE = 200.0  # feeder cells/s for the latency run: the budget rate ...
LATENCY_LOAD = 0.5  # ... or this share of the measured throughput if lower: no queueing
LATENCY_RUN_S = 30.0  # the latency run feeds at most this long (and at least 500 cells)
LOOKUP_CELLS = 1_000_000
QUICK_LOOKUP_CELLS = 100_000
CLASSIFY_BATCH = 256
HMI_BUDGET_P95_MS = 250.0
QR_BUDGET_MS = 10.0
QR_SUCCESS_REQUIRED = 0.98
HMI_PASSWORD = "bench password 1"
Say = Callable[[str], None]


class BenchError(Exception):
    """A benchmark could not produce its figure (the message says which and why)."""


@dataclass(frozen=True)
class Budget:
    """One row of the docs/architecture.md budget table, tied to a figure of the bench result."""

    key: str  # the figure's key in the result; "a.b" reaches into a nested object
    limit: float
    at_most: bool  # True: the figure must be <= limit; False: >= limit

    def met(self, value: float | None) -> bool | None:
        if value is None or value != value:  # NaN: no figure
            return None
        return value <= self.limit if self.at_most else value >= self.limit

    def words(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.limit:g}"


# docs/architecture.md "Budgets" (this 2-core machine, simulated hardware over loopback).
BUDGETS = (
    Budget("throughput_cells_per_s", 200.0, at_most=False),
    Budget("decision_latency_ms.p99", 20.0, at_most=True),
    Budget("classify_spectra_per_s", 5000.0, at_most=False),
    Budget("qr_decode_ms", QR_BUDGET_MS, at_most=True),
    Budget("hmi_event_latency_ms", HMI_BUDGET_P95_MS, at_most=True),
    Budget("passport_lookup_ms", 10.0, at_most=True),
    Budget("passport_verify_ms", 1.0, at_most=True),
    Budget("lost_records", 0.0, at_most=True),
)


def figure(result: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of a bench result, or None."""
    value: Any = result
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def budgets_met(result: dict[str, Any]) -> dict[str, bool | None]:
    """Each docs/architecture.md budget: met, missed, or None when the figure is missing."""
    return {b.key: b.met(figure(result, b.key)) for b in BUDGETS}


# -- machine ---------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """Cores, CPU model and Python version: figures mean little without the machine."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def git_commit(repo: Path = REPO) -> dict[str, Any]:
    """The commit measured, and whether tracked files differed from it."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    dirty = git("diff", "--quiet", "HEAD", "--").returncode != 0
    return {"commit": head.stdout.strip(), "dirty": dirty}


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_ticks() -> tuple[int, int] | None:
    """All CPU time of the machine and the part of it the hypervisor gave to other guests
    ("steal", /proc/stat), in clock ticks; None where the kernel does not report it."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks), ticks[7]


def steal_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of the machine's CPU time the hypervisor took between two `cpu_ticks()`: on a
    shared VM the latency tail follows it (docs/bench.md)."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return round(100.0 * (after[1] - before[1]) / (after[0] - before[0]), 1)


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (VmRSS) in MB; this process by default."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    raise BenchError(f"no VmRSS in /proc/{pid}/status (memory is measured on Linux only)")


def children_rss_mb() -> float:
    """Resident memory (MB) of this process' classifier and hydromet processes
    (plant/classifier_process.py, plant/commands/hydromet_child.py), 0.0 when none runs: the
    controller's memory is its own plus theirs."""
    total = 0.0
    for module in ("plant.classifier_process", HYDROMET_CHILD):
        for pid in running_children(os.getpid(), module):
            with contextlib.suppress(OSError, BenchError):  # gone meanwhile
                total += rss_mb(pid)
    return round(total, 1)


# -- temporary line configuration -------------------------------------------------------------
_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """Lowest port the kernel hands to outgoing connections (Linux default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_block(n: int) -> int:
    """A base port with n consecutive free loopback ports (the simulators need consecutive ones).

    Picked below the kernel's ephemeral range: a port in that range can be taken by any
    outgoing connection between this check and the simulator's bind (CI saw exactly that
    with two lines started side by side). Blocks already handed out are not given twice."""
    rng = random.Random()
    high = max(_ephemeral_low(), 12000) - n
    for _ in range(500):
        base = rng.randrange(10000, high)
        if any(base + k in _HANDED_OUT for k in range(n)):
            continue
        socks: list[socket.socket] = []
        try:
            for k in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + k))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        _HANDED_OUT.update(range(base, base + n))
        return base
    raise BenchError(f"no block of {n} free loopback ports found below the ephemeral range")


def line_config(
    source: Path,
    out: Path,
    *,
    db_url: str,
    data_dir: Path,
    heads: int | None = None,
    seed: int | None = None,
    line_id: str | None = None,
    **line: Any,
) -> Path:
    """A copy of config directory `source` at `out` with free ports, the given database and
    data directory, and optional line id and [line] overrides: a private line for a bench or a
    test."""
    shutil.copytree(source, out)
    data = tomllib.loads((out / "plant.toml").read_text())
    sections = ("plant", "database", "sim", "plc", "xrf", "hmi", "camera", "line")
    for name in sections:
        data.setdefault(name, {})
    heads = (
        heads if heads is not None else int(data["sim"].get("xrf_heads", SimSection().xrf_heads))
    )
    base = free_port_block(heads + 4)
    data["database"]["url"] = db_url
    analyser, reader = base + heads + 2, base + heads + 3
    data["sim"].update(
        plc_port=base,
        xrf_port=base + 2,
        xrf_heads=heads,
        assay_analyser_port=analyser,
        code_reader_port=reader,
    )
    data["camera"]["port"] = reader
    data.setdefault("assay_analyser", {})["port"] = analyser
    if seed is not None:
        data["sim"]["seed"] = seed
    data["plc"].update(port=base)
    data["xrf"].update(port=base + 2, heads=heads)
    data["hmi"].update(port=base + 1)
    data["plant"]["data_dir"] = str(data_dir)
    if line_id is not None:
        data["plant"]["line"] = line_id
    data["line"].update(line)
    (out / "plant.toml").write_text(toml_text(data))
    return out


def toml_text(data: dict[str, dict[str, Any]]) -> str:
    """TOML for plant.toml's flat sections (JSON scalars and arrays are valid TOML values)."""
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, dict):
                raise BenchError(f"plant.toml [{section}] {key}: nested tables are not copied")
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


def same_database(a: str, b: str) -> bool:
    """Whether two database URLs name the same database (one SQLite file, or one server's
    database; localhost and 127.0.0.1 alike)."""
    ua, ub = make_url(a), make_url(b)
    if ua.get_backend_name() != ub.get_backend_name():
        return False
    if ua.get_backend_name() == "sqlite":
        return Path(ua.database or "").resolve() == Path(ub.database or "").resolve()

    def where(u: Any) -> tuple[str, int | None, str | None]:
        host = u.host or "localhost"
        port = u.port or (5432 if u.get_backend_name() == "postgresql" else None)
        return ("127.0.0.1" if host == "localhost" else host, port, u.database)

    return where(ua) == where(ub)


def private_line(
    source: Path, work: Path, name: str, data_dir: Path, database: str | None = None
) -> tuple[Path, PlantConfig]:
    """A config copy under `work/name`, loaded, on a fresh SQLite database there, or on
    `database` under a line id of its own (that database may hold other runs' cells)."""
    root = work / name
    root.mkdir(parents=True)
    url = database or f"sqlite:///{root / 'plant.db'}"
    upgrade(url)
    line_id = None if database is None else f"bench-{uuid.uuid4().hex[:8]}"
    cfg_dir = line_config(source, root / "config", db_url=url, data_dir=data_dir, line_id=line_id)
    cfg = load_plant(cfg_dir)
    # $PLANT_DATABASE_URL must not send a bench run into the plant's own database
    cfg = cfg.model_copy(update={"database": cfg.database.model_copy(update={"url": url})})
    return cfg_dir, cfg


# -- the line ------------------------------------------------------------------------------
@dataclass
class LineRun:
    """What one simulated run of the line did, from the store and the run summary."""

    sent: int  # cells the simulated PLC's feeder delivered
    rate: float
    stored: int  # cell rows in the store
    final: int  # confirmed or quarantined
    seconds: float  # first detection -> last final state, store timestamps
    summary: dict[str, Any] | None  # plant.runner's summary; None if the run was stopped
    cpu_s: dict[str, float]  # CPU seconds of the controller (with its classifier) and simulators
    steal_pct: float | None = None  # CPU time the hypervisor took during the run, % of all
    error: str | None = None

    @property
    def throughput(self) -> float | None:
        return round(self.final / self.seconds, 1) if self.seconds > 0 else None

    @property
    def counters_match(self) -> bool:
        """The store's per-route counts equal the PLC's counters."""
        return self.summary is not None and self.summary["routes"] == self.summary["plc_counters"]


def _span(store: Store, line: str) -> tuple[int, int, float]:
    """Rows, final rows, and seconds from the first detection to the last final state."""
    final = CellRow.state.in_([CellState.confirmed, CellState.quarantined])
    with store.session() as s:
        stored = int(s.scalar(select(func.count(CellRow.id)).where(CellRow.line == line)) or 0)
        n, first, last = s.execute(
            select(
                func.count(CellRow.id), func.min(CellRow.created_at), func.max(CellRow.updated_at)
            ).where(CellRow.line == line, final)
        ).one()
    seconds = (last - first).total_seconds() if first is not None and last is not None else 0.0
    return stored, int(n), seconds


async def line_run(
    cfg: PlantConfig,
    config_dir: Path,
    *,
    cells: int,
    rate: float,
    stall_s: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
) -> LineRun:
    """Run `plant run --simulate --cells N --rate R` in-process with XRF dwell 0.

    Stops the run if no cell reaches a final state for `stall_s` seconds (a stuck cell would
    otherwise keep the run waiting forever) and says so in `LineRun.error`.
    """
    opts = RunOptions(
        simulate=True, cells=cells, rate=rate, dwell_scale=0.0, hmi=False, warm_sim=True
    )
    line = cfg.plant.line
    store = Store(cfg.database.url)
    cpu0 = _cpu_seconds()
    ticks0 = cpu_ticks()
    task = asyncio.create_task(run_line(cfg, config_dir, opts))
    error = None
    done, changed = 0, time.monotonic()
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=1.0)
            n = await asyncio.to_thread(final_count, store, line)
            if on_progress is not None:
                on_progress(n)
            if n != done:
                done, changed = n, time.monotonic()
            elif n > 0 and time.monotonic() - changed > stall_s and not task.done():
                error = f"line stalled: {n} of {cells} cells final, none for {stall_s:g} s"
                task.cancel()
                break
        summary = None
        with contextlib.suppress(asyncio.CancelledError):
            summary = await task
        stored, final, seconds = await asyncio.to_thread(_span, store, line)
    finally:
        store.close()
    stolen = steal_pct(ticks0, cpu_ticks())
    used = {k: v - cpu0[k] for k, v in _cpu_seconds().items()}
    # The classifier and hydromet processes are the controller's (children, so counted with
    # the simulators by getrusage).
    own = sum(float((summary or {}).get(k, 0.0)) for k in ("classifier_cpu_s", "hydromet_cpu_s"))
    cpu = {
        "controller": round(used["controller"] + own, 2),
        "simulators": round(used["simulators"] - own, 2),
    }
    return LineRun(cells, rate, stored, final, seconds, summary, cpu, stolen, error)


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process and by its finished children (`plant sim` and
    the classifier process)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"controller": own.ru_utime + own.ru_stime, "simulators": kids.ru_utime + kids.ru_stime}


# -- bare Modbus round trip --------------------------------------------------------------------
async def time_pairs(n: int, pair: Callable[[], Awaitable[None]]) -> list[float]:
    """Seconds per call of `pair`, after a warm-up of min(200, n) calls."""
    for _ in range(min(200, n)):
        await pair()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await pair()
        samples.append(time.perf_counter() - t0)
    return samples


async def bare_modbus_rtt(host: str, port: int, tags: TagMap, n: int = 2000) -> list[float]:
    """Seconds per bare pymodbus write+read pair of the line's shape: the protocol's floor."""
    taken = tags.tag("infeed.taken_seq")
    (block,) = tags.plan_reads(PollView.of(tags).tags)  # the engine's poll
    raw = AsyncModbusTcpClient(host, port=port, retries=0, reconnect_delay=0)
    if not await raw.connect():
        raise BenchError(f"no Modbus TCP answer at {host}:{port}")

    async def pair() -> None:
        await raw.write_registers(taken.address, [0, 0])  # taken_seq 0: a no-op for the PLC
        await raw.read_input_registers(block.address, count=block.count)

    try:
        return await time_pairs(n, pair)
    finally:
        raw.close()


def modbus_rtt_against_sim(cfg: PlantConfig, config_dir: Path, n: int) -> list[float]:
    """Bare round trips against `plant sim` in a child process, as the controller sees it."""
    proc = spawn_sim(config_dir, RunOptions(simulate=True, rate=LATENCY_RATE, dwell_scale=0.0))
    try:
        wait_ports(cfg.sim.host, [cfg.sim.plc_port], proc, 120.0)
        return asyncio.run(bare_modbus_rtt(cfg.sim.host, cfg.sim.plc_port, tag_map(config_dir), n))
    finally:
        proc.terminate()
        proc.wait()


# -- classification ----------------------------------------------------------------------------
def classify_figures(
    classifier: Any, *, spectra: int, passes: int, live_time_s: float, seed: int = 1
) -> dict[str, Any]:
    """Spectra/s in batches of CLASSIFY_BATCH (median of the passes: on a shared machine a
    pass runs 20-40 % slow at times) and p99 of one spectrum, features included."""
    stream = CellStream(seed)
    rng = np.random.default_rng(seed)
    profile = PROFILES[DEFAULT_PROFILE]
    data = [simulate_cell(stream.truth(seq), profile, live_time_s, rng) for seq in range(spectra)]
    classifier.predict_batch(data[:CLASSIFY_BATCH])  # warm-up
    rates = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for i in range(0, spectra, CLASSIFY_BATCH):
            classifier.predict_batch(data[i : i + CLASSIFY_BATCH])
        rates.append(spectra / (time.perf_counter() - t0))
    single = []
    for s in data:
        t0 = time.perf_counter()
        classifier.predict(s)
        single.append((time.perf_counter() - t0) * 1000.0)
    return {
        "spectra_per_s": round(statistics.median(rates), 1),
        "spectra_per_s_passes": [round(r, 1) for r in rates],
        "single_p50_ms": round(float(np.percentile(single, 50)), 2),
        "single_p99_ms": round(float(np.percentile(single, 99)), 2),
    }


# -- passport authenticity ---------------------------------------------------------------------
def passport_verify_figures(n: int, seed: int = 1) -> dict[str, float]:
    """Verify n signed simulated passports (half ES256, half Ed25519; signing is not timed) as
    `plant passports import` does: CPU ms per passport of `verify_credential` (p99, mean; the
    cost, whatever else the machine runs) and the wall-clock p99."""
    stream = CellStream(seed)
    tokens = []
    for alg in ("ES256", "Ed25519"):
        issuer = SimIssuer(alg=alg)
        trust = sim_trust(issuer)
        truths = (t for t in map(stream.truth, range(1, 100 * n)) if t.passport_id)
        for truth, _ in zip(truths, range(n // 2), strict=False):
            tokens.append((issuer.sign(passport_document(truth), str(truth.passport_id)), trust))
    now = datetime.now(UTC)
    for token, trust in (tokens[0], tokens[-1]):  # the first call of each algorithm sets up
        verify_credential(token, trust, now)
    cpu, wall = [], []
    for token, trust in tokens:
        c0, t0 = time.thread_time(), time.perf_counter()
        auth, _ = verify_credential(token, trust, now)
        cpu.append((time.thread_time() - c0) * 1000.0)
        wall.append((time.perf_counter() - t0) * 1000.0)
        if auth.verdict is not Verdict.verified:
            raise BenchError(f"a simulated passport did not verify: {auth.reason}")
    return {
        "cpu_p99_ms": round(float(np.percentile(cpu, 99)), 3),
        "cpu_mean_ms": round(statistics.fmean(cpu), 3),
        "wall_p99_ms": round(float(np.percentile(wall, 99)), 3),
    }


# -- QR labels ---------------------------------------------------------------------------------
def qr_decode_figures(n: int, seed: int = 1, detector: str = DETECTORS[0]) -> dict[str, Any]:
    """Decode the simulated labels of cells 0..n-1: success rate, wrong ids (must be 0), ms."""
    import cv2

    stream = CellStream(seed)
    camera = SimCamera(seed, stream)
    decoder = QrDecoder(detector)
    ms: list[float] = []
    cpu_ms: list[float] = []
    readable = decoded_ok = wrong = unreadable = unreadable_reported = no_qr_reported = 0
    failures: list[str] = []
    for seq in range(n):
        truth = stream.truth(seq)
        image = camera.render(seq)
        t0, c0 = time.perf_counter(), time.thread_time()
        read = decoder.decode(image)
        ms.append((time.perf_counter() - t0) * 1e3)
        cpu_ms.append((time.thread_time() - c0) * 1e3)
        got: str | None = None
        if read.payload is not None:
            try:
                got = passport_id_from_payload(read.payload)
            except ValueError:
                got = None
        if got is not None and got != truth.passport_id:
            wrong += 1
            failures.append(f"cell {seq}: WRONG id {got!r} for {truth.passport_id!r}")
        if truth.passport_id is None:
            no_qr_reported += got is None
        elif truth.label_readable:
            readable += 1
            if got == truth.passport_id:
                decoded_ok += 1
            else:
                failures.append(f"cell {seq}: readable label not decoded: {read.error}")
        else:
            unreadable += 1
            unreadable_reported += got is None
    times = np.asarray(ms)
    cpu = np.asarray(cpu_ms)
    rate = decoded_ok / readable if readable else 0.0
    return {
        "detector": detector,
        "images": n,
        "readable_labels": readable,
        "decoded_correctly": decoded_ok,
        "success_rate": round(rate, 4),
        "wrong_ids": wrong,
        "unreadable_labels": unreadable,
        "unreadable_reported_unreadable": unreadable_reported,
        "labels_without_qr": n - readable - unreadable,
        "without_qr_reported_unreadable": no_qr_reported,
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
        "max_ms": round(float(times.max()), 2),
        "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 2),
        "cpu_p99_ms": round(float(np.percentile(cpu, 99)), 2),
        "opencv_threads": cv2.getNumThreads(),
        "load_avg_1min": load_avg(),
        "ok": rate >= QR_SUCCESS_REQUIRED
        and wrong == 0
        and float(np.percentile(times, 99)) <= QR_BUDGET_MS,
        "first_failures": failures[:5],
    }


# -- passport lookup ---------------------------------------------------------------------------
def fill_cells(store: Store, n: int, batch: int = 50_000) -> None:
    """Store n confirmed cells of line L1 with passport ids urn:uuid:pp-00000000 onwards."""
    now = datetime.now(UTC)
    for start in range(0, n, batch):
        store.add_cells(
            {
                "line": "L1",
                "seq": i,
                "passport_id": f"urn:uuid:pp-{i:08d}",
                "mass_g": 46.0,
                "chemistry": "NMC",
                "route": "hydromet",
                "state": "confirmed",
                "created_at": now,
                "updated_at": now,
            }
            for i in range(start, min(n, start + batch))
        )


def passport_lookups(store: Store, n: int, lookups: int = 2000) -> dict[str, float]:
    """Timed `Store.cells_by_passport` of random ids among the n filled cells."""
    rng = random.Random(7)
    times = []
    for _ in range(lookups):
        pid = f"urn:uuid:pp-{rng.randrange(n):08d}"
        t0 = time.perf_counter()
        found = store.cells_by_passport(pid)
        times.append((time.perf_counter() - t0) * 1000)
        if len(found) != 1:
            raise BenchError(f"passport lookup of {pid} found {len(found)} cells, expected 1")
    times.sort()
    return {
        "cells": n,
        "lookup_ms_p50": round(statistics.median(times), 3),
        "lookup_ms_p99": round(times[int(0.99 * len(times)) - 1], 3),
        "lookup_ms_max": round(times[-1], 3),
    }


def lookup_database(cache_dir: Path, n: int, say: Say) -> str:
    """SQLite database with n cells, built once under `cache_dir` and reused afterwards (brought
    to this code's schema first: one built by an older release has other column codes)."""
    path = cache_dir / f"passport-lookup-{n}.db"
    if path.exists():
        upgrade(f"sqlite:///{path}")
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".partial-{os.getpid()}")
        say(f"building the lookup database: {n:,} cells in {path} (once; reused afterwards)")
        url = f"sqlite:///{partial}"
        try:
            upgrade(url)
            store = Store(url)
            try:
                fill_cells(store, n)
            finally:
                store.close()
            partial.rename(path)  # only a complete database is ever reused
        finally:
            for leftover in cache_dir.glob(partial.name + "*"):
                leftover.unlink()
    return f"sqlite:///{path}"


# -- HMI ---------------------------------------------------------------------------------------
async def _hmi_client(base: str, bus: Any, n: int, rate: float) -> list[float]:
    """Publish n cell events at `rate`/s; seconds until each reaches the WebSocket client."""
    import httpx
    import websockets

    from plant.events import Event

    login = {"name": "bench", "password": HMI_PASSWORD}
    token = httpx.post(f"{base}/api/login", json=login).json()["token"]
    sent: dict[int, float] = {}
    latencies: list[float] = []
    ws_url = base.replace("http", "ws") + "/ws"
    async with websockets.connect(
        ws_url, additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        json.loads(await ws.recv())  # first snapshot: the server has subscribed to the bus

        async def publish() -> None:
            for seq in range(n):
                sent[seq] = time.perf_counter()
                data = {"id": seq, "seq": seq, "route": "hydromet", "state": "confirmed"}
                bus.publish_threadsafe(Event("cell", "L1", data))
                await asyncio.sleep(1.0 / rate)

        pub = asyncio.create_task(publish())
        while len(latencies) < n:
            msg = json.loads(await ws.recv())
            if msg["topic"] == "cell":
                latencies.append(time.perf_counter() - sent[msg["data"]["seq"]])
        await pub
    return latencies


def hmi_event_latency(n: int = 500, rate: float = 100.0) -> dict[str, Any]:
    """Bus event -> real WebSocket client of the HMI served by uvicorn on a loopback port."""
    import uvicorn

    from hmi.app import create_app  # the bench drives the whole system, as `plant run` does
    from plant.events import EventBus
    from plant.users import add_user, use_hash_cost

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/plant.db"
        upgrade(url)
        cfg = Path(tmp) / "config"
        cfg.mkdir()
        (cfg / "plant.toml").write_text(f'[database]\nurl = "{url}"\n')
        (cfg / "users.toml").write_text("[auth]\nargon2_time_cost = 1\nargon2_memory_kib = 64\n")
        use_hash_cost(1, 64)
        store = Store(url)
        add_user(store, "bench", "viewer", HMI_PASSWORD)
        bus = EventBus()
        app = create_app(cfg, bus=bus, store=store)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
        )
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
            lat = asyncio.run(_hmi_client(base, bus, n, rate))
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
            store.close()
    q = statistics.quantiles([x * 1000 for x in lat], n=100)
    return {
        "events": n,
        "rate_per_s": rate,
        "p50_ms": round(q[49], 2),
        "p95_ms": round(q[94], 2),
        "p99_ms": round(q[98], 2),
        "max_ms": round(max(lat) * 1000, 2),
        "budget_p95_ms": HMI_BUDGET_P95_MS,
        "within_budget": q[94] <= HMI_BUDGET_P95_MS,
    }


def run_figures(r: LineRun) -> dict[str, Any]:
    """One line run's figures as `plant bench` reports them under "runs"."""
    return {
        "feeder_cells_per_s": r.rate,
        "sent": r.sent,
        "stored": r.stored,
        "final": r.final,
        "seconds": round(r.seconds, 3),
        "decision_latency_ms": r.summary["decision_latency_ms"] if r.summary else None,
        "routes": r.summary["routes"] if r.summary else None,
        "plc_counters": r.summary["plc_counters"] if r.summary else None,
        "cpu_s": r.cpu_s,
        "controller_cpu_ms_per_cell": round(1000 * r.cpu_s["controller"] / r.final, 1)
        if r.final
        else None,
        "cpu_steal_pct": r.steal_pct,
        "scheduling": r.summary.get("scheduling") if r.summary else None,
    }


# -- everything --------------------------------------------------------------------------------
def latency_run_size(
    throughput: float | None, cells: int, rate: float | None = None
) -> tuple[float, int]:
    """Feeder rate and cells of the latency run, for up to 30 s: the `rate` asked for (a
    line's own rate), else one the controller sustains on this machine (200 cells/s, or half
    its measured throughput if lower)."""
    if rate is None:
        rate = LATENCY_RATE
        if throughput:
            rate = min(LATENCY_RATE, max(1.0, float(round(throughput * LATENCY_LOAD))))
    return rate, min(cells, max(500, int(rate * LATENCY_RUN_S)))


def line_runs(
    config_dir: Path,
    work: Path,
    data_dir: Path,
    *,
    cells: int,
    say: Say,
    latency_rate: float | None = None,
    database: str | None = None,
    steps: tuple[str, str] = ("", ""),
) -> tuple[LineRun, LineRun, Path, PlantConfig]:
    """The line at full speed, then at the latency run's rate (`latency_run_size`), each on a
    private line (`private_line`) under `work`; the latency run's config directory and config."""
    say(f"{steps[0]}line at full speed: {cells} cells, feeder {FULL_SPEED_RATE:g} cells/s")
    t_dir, t_cfg = private_line(config_dir, work, "throughput", data_dir, database)
    full = eventloop.run(line_run(t_cfg, t_dir, cells=cells, rate=FULL_SPEED_RATE))
    rate, n = latency_run_size(full.throughput, cells, latency_rate)
    say(f"{steps[1]}line at {rate:g} cells/s for decision latency: {n} cells")
    if full.throughput and rate > full.throughput:
        say(
            f"warning: {rate:g} cells/s is above the throughput just measured "
            f"({full.throughput:g} cells/s): the latency will be mostly queueing"
        )
    l_dir, l_cfg = private_line(config_dir, work, "latency", data_dir, database)
    paced = eventloop.run(line_run(l_cfg, l_dir, cells=n, rate=rate))
    return full, paced, l_dir, l_cfg


def run_bench(
    config_dir: Path,
    *,
    cells: int,
    quick: bool,
    say: Say,
    latency_rate: float | None = None,
    database: str | None = None,
) -> dict[str, Any]:
    """All figures of `plant bench` as one JSON-ready object (see docs/bench.md); the line
    runs on `database` if given, else on fresh SQLite files."""
    cfg = load_plant(config_dir)
    if database is not None and same_database(database, cfg.database.url):
        raise BenchError(
            f"--database {safe_url(database)} is the plant's own database: give another one"
        )
    data_dir = cfg.plant.data_dir.resolve()
    model = Registry(data_dir / "models").active_model()
    steps = 7
    result: dict[str, Any] = {
        **git_commit(),
        "machine": machine_info(),
        "load_avg_1min_start": load_avg(),
        "quick": quick,
        "line_database": None if database is None else safe_url(database),
        "errors": [],
    }
    with tempfile.TemporaryDirectory(prefix="plant-bench-") as tmp:
        full, paced, l_dir, l_cfg = line_runs(
            config_dir,
            Path(tmp),
            data_dir,
            cells=cells,
            say=say,
            latency_rate=latency_rate,
            database=database,
            steps=(f"[1/{steps}] ", f"[2/{steps}] "),
        )
        say(f"[3/{steps}] bare pymodbus write+read round trip against `plant sim`")
        rtt = percentiles(
            [s * 1000.0 for s in modbus_rtt_against_sim(l_cfg, l_dir, 500 if quick else 2000)],
            (50, 99),
        )
    runs = (full, paced)
    result["errors"] += [r.error for r in runs if r.error]
    decision = paced.summary["decision_latency_ms"] if paced.summary else None
    result.update(
        cells=cells,
        throughput_cells_per_s=full.throughput,
        decision_latency_ms=decision,
        modbus_rtt_ms={"p50": rtt["p50"], "p99": rtt["p99"]},
        latency_ratio=round(decision["p99"] / rtt["p99"], 1) if decision else None,
        lost_records=sum(r.sent - r.stored for r in runs),
        unfinished_records=sum(r.stored - r.final for r in runs),
        counters_match=all(r.counters_match for r in runs),
        runs={name: run_figures(r) for name, r in (("full_speed", full), ("latency", paced))},
    )
    n_spectra, passes = (128, 3) if quick else (512, 8)
    say(f"[4/{steps}] classifying {n_spectra * passes} spectra with model {model.version}")
    cls = classify_figures(
        model.classifier, spectra=n_spectra, passes=passes, live_time_s=cfg.line.xrf_live_time_s
    )
    result.update(
        classify_spectra_per_s=cls["spectra_per_s"],
        classify_spectra_per_s_passes=cls["spectra_per_s_passes"],
        classify_single_ms=cls["single_p99_ms"],
        classify_model=model.version,
        classify_batch=CLASSIFY_BATCH,
    )
    n_labels = 200 if quick else 1000
    say(f"[5/{steps}] decoding {n_labels} simulated label images")
    qr = qr_decode_figures(n_labels)
    result.update(qr_decode_ms=qr["p99_ms"], qr_decode_success_rate=qr["success_rate"])
    lookup_n = QUICK_LOOKUP_CELLS if quick else LOOKUP_CELLS
    say(f"[6/{steps}] passport lookups among {lookup_n:,} stored cells")
    store = Store(lookup_database(data_dir / "bench", lookup_n, say))
    try:
        lookups = passport_lookups(store, lookup_n)
    finally:
        store.close()
    result.update(passport_lookup_ms=lookups["lookup_ms_p99"], passport_lookup_cells=lookup_n)
    n_signed = 200 if quick else 1000
    say(f"      verifying {n_signed} signed passports (ES256, Ed25519)")
    verify = passport_verify_figures(n_signed)
    result.update(
        passport_verify_ms=verify["cpu_p99_ms"],
        passport_verify_mean_ms=verify["cpu_mean_ms"],
        passport_verify_wall_ms_p99=verify["wall_p99_ms"],
    )
    n_events = 200 if quick else 500
    say(f"[7/{steps}] {n_events} HMI events to a WebSocket client")
    result["hmi_event_latency_ms"] = hmi_event_latency(n_events)["p95_ms"]
    result["load_avg_1min_end"] = load_avg()
    result["budgets_met"] = budgets_met(result)
    return result
