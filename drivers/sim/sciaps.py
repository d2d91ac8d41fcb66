"""A simulated SciAps X-series analyser: the public remote API over real HTTP on loopback.

It measures the sample in its cup. What is in the cup is the simulator's state: the lab
technician's hands (door `PUT /sim/sample`) press a pellet of a lot's black mass or take a
sample of one cell's electrodes, whose composition comes from the simulated cells' truth, never
from the plant's estimate and never through the API. A test takes its beam times and has
counting noise that shrinks with the square root of the test time, plus a fixed calibration
bias per element.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import xraylib as xrl

from drivers.sim.cells import LI_ION, CellFormat, CellTruth
from drivers.sim.xrfphysics import CATHODE_FORMULA, OTHER_ELECTRODES

APPS = ("Mining", "Soil", "Alloy", "Empirical")
# Elements the Mining application reports (Li, C, O, F have no usable XRF line).
REPORTED = ("Al", "P", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Cd", "La", "Ce")
REFERENCE_TIME_S = 20.0  # precision below is for a 20 s test ([U], handheld XRF on pellets)
REL_SD = 0.02  # counting precision, relative, at the reference time
FLOOR_SD_PCT = 0.004  # absolute floor, wt%, at the reference time; LOD = 3 x floor
BIAS_SD = 0.015  # the calibration's bias per element on this matrix, relative
OVERHEAD_S = 0.3  # tube ramp and filter wheel per test
SAMPLES = ("lot_id", "cell_id")  # what the technician can put in the cup (`PUT /sim/sample`)

# Shredded cell -> black mass ([U], docs/reference/xrf-and-process.md §2.2 mid-range shares).
CATHODE_COATING = 0.35  # of a Li-ion cell's mass: active material, binder, carbon black
ANODE = 0.18  # graphite (no XRF line)
CU_FOIL, AL_FOIL = 0.10, 0.05
FOIL_LEFT = 0.15  # foils not sieved off
CAN_STEEL = 0.20  # of a steel-can cell's mass
STEEL_LEFT = 0.02  # steel not taken out by the magnet
OTHER_ELECTRODE = 0.60  # electrode mass of NiMH/NiCd/ZnMn cells


@dataclass(frozen=True)
class Pellet:
    """A pressed pellet in the sample cup: its name and true element contents (wt%)."""

    name: str
    wt_pct: dict[str, float]


def _fractions(formula: str) -> dict[str, float]:
    parsed = xrl.CompoundParser(formula)
    return {
        xrl.AtomicNumberToSymbol(z): f
        for z, f in zip(parsed["Elements"], parsed["massFractions"], strict=True)
    }


def _add(total: dict[str, float], parts: dict[str, float], grams: float) -> None:
    for el, f in parts.items():
        total[el] = total.get(el, 0.0) + f * grams


def black_mass_pellet(name: str, cells: Iterable[CellTruth]) -> Pellet | None:
    """The black mass of these cells after shredding, sieving and magnetic separation."""
    grams: dict[str, float] = {}
    for cell in cells:
        m = cell.mass_g
        if cell.chemistry in LI_ION:
            active = _fractions(CATHODE_FORMULA[cell.chemistry])
            if cell.second_chemistry in CATHODE_FORMULA:
                active = {k: 0.7 * v for k, v in active.items()}
                for el, f in _fractions(CATHODE_FORMULA[str(cell.second_chemistry)]).items():
                    active[el] = active.get(el, 0.0) + 0.3 * f
            _add(grams, active, m * CATHODE_COATING * 0.94)
            _add(grams, {"C": 1.0}, m * (ANODE + CATHODE_COATING * 0.06))
            _add(grams, {"Cu": 1.0}, m * CU_FOIL * FOIL_LEFT)
            _add(grams, {"Al": 1.0}, m * AL_FOIL * FOIL_LEFT)
        else:
            parts = {
                xrl.AtomicNumberToSymbol(z): f for z, f in OTHER_ELECTRODES[cell.chemistry].items()
            }
            _add(grams, parts, m * OTHER_ELECTRODE)
        if cell.format is CellFormat.steel_can:
            _add(grams, {"Fe": 0.993, "Mn": 0.004, "Ni": 0.0005}, m * CAN_STEEL * STEEL_LEFT)
    total = sum(grams.values())
    if total <= 0:
        return None
    return Pellet(name, {el: 100.0 * g / total for el, g in grams.items()})


class SimSciaps:
    """The analyser: SciAps API on `host:port` (0: a free port), a sample cup, one test at a
    time. `press(kind, id)` makes the sample of a lot (`lot_id`) or a cell (`cell_id`); None:
    there is no such lot or cell."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int = 1,
        press: Callable[[str, str], Pellet | None] | None = None,
        serial: str = "X550-SIM01",
    ) -> None:
        self.host, self._port, self.seed, self.serial = host, port, seed, serial
        self.press = press
        self.sample: Pellet | None = None
        self.ecal = {"offset": -17.46, "slope": 20.04}
        self.ecal_needed = True  # after power-on, as the analyser asks for one
        self.ecal_runs = 0
        self.detector_temp_c = -25.0
        self.tests = 0
        self._busy = threading.Lock()
        self._abort = threading.Event()
        bias_rng = np.random.default_rng([seed, 0x5C1A])
        self._bias = {el: float(bias_rng.normal(0.0, BIAS_SD)) for el in REPORTED}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self._port

    async def start(self) -> None:
        self._server = ThreadingHTTPServer((self.host, self._port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sim-sciaps", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        if self._server is None:
            return
        self.abort()
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
        self._server = None

    def abort(self) -> None:
        """End the running test (`POST /api/v2/abort`)."""
        self._abort.set()

    def place(self, pellet: Pellet | None) -> None:
        """Put a pellet in the cup (None: empty it)."""
        self.sample = pellet

    # -- the instrument ------------------------------------------------------------------
    def test(self, mode: str, beam_ms: list[int], model_name: str) -> tuple[int, dict[str, Any]]:
        """Run one test: (HTTP status, XTestResult)."""
        if mode not in APPS:
            return 400, {"message": f"unknown mode {mode!r}; licensed: {', '.join(APPS)}"}
        if not beam_ms or any(not isinstance(t, int) or t <= 0 for t in beam_ms):
            return 400, {"message": "beamTimes must be positive milliseconds"}
        if not self._busy.acquire(blocking=False):
            return 200, _result(401)
        try:
            self._abort.clear()
            seconds = sum(beam_ms) / 1000.0
            if self._abort.wait(seconds + OVERHEAD_S):
                return 200, {**_result(1), "abortedByUser": True}
            sample = self.sample
            if sample is None:
                return 200, _result(105)  # nothing in the cup: a low count rate
            self.tests += 1
            rng = np.random.default_rng([self.seed, self.tests, *sample.name.encode()])
            scale = math.sqrt(REFERENCE_TIME_S / seconds)
            chemistry = []
            for el in REPORTED:
                true = sample.wt_pct.get(el, 0.0) * (1.0 + self._bias[el])
                sd = math.hypot(REL_SD * true, FLOOR_SD_PCT) * scale
                lod = 3.0 * FLOOR_SD_PCT * scale
                value = true + float(rng.normal(0.0, sd))
                below = value < lod
                chemistry.append(
                    {
                        "atomicNumber": int(xrl.SymbolToAtomicNumber(el)),
                        "percent": round(lod if below else value, 4),
                        "uncertainty": round(sd, 4),
                        "flags": 8 if below else 0,
                    }
                )
            return 200, {
                **_result(0),
                "spectra": [],
                "testData": {
                    "mode": mode,
                    "timestamp": int(time.time() * 1000),
                    "durationMs": round(seconds * 1000 + OVERHEAD_S * 1000),
                    "latitude": 0.0,
                    "longitude": 0.0,
                    "base": "",
                    "modelName": model_name,
                    "chemistry": chemistry,
                },
            }
        finally:
            self._busy.release()

    def identity(self) -> dict[str, Any]:
        return {
            "family": "XRF",
            "id": self.serial,
            "model": "X-550 (simulated)",
            "partNumber": "",
            "swVersion": "sim-1",
            "homeVersion": "sim-1",
            "serviceVersion": "sim-1",
            "picVersion": "sim-1",
            "osVersion": "sim-1",
            "apps": list(APPS),
            "models": [{"mode": "Mining", "modelName": "Mining"}],
        }

    def status(self) -> dict[str, Any]:
        return {
            "batteryLevel": 100.0,
            "isCharging": True,
            "user": "",
            "wifiSSID": "",
            "wifiLevel": 0,
            "latitude": 0.0,
            "longitude": 0.0,
            "isECalNeeded": self.ecal_needed,
            "detectorTemp": self.detector_temp_c,
            "tubeTemp": 38.0,
        }


def _result(code: int) -> dict[str, Any]:
    return {"status": code, "abortedByUser": False, "errorCode": code}


def _handler(sim: SimSciaps) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: `plant sim` logs nothing per request

        def _send(self, status: int, data: Any = None) -> None:
            body = b"" if data is None else json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> Any:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            return json.loads(raw) if raw.strip() else {}

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            replies = {
                "/api/v2/id": sim.identity,
                "/api/v2/status": sim.status,
                "/api/v2/config": lambda: {"detectorType": "SDD", "tubeType": "Rh"},
                "/api/v2/energyCal": lambda: dict(sim.ecal),
                "/sim/sample": lambda: {"sample": None if sim.sample is None else sim.sample.name},
            }
            if path in replies:
                self._send(200, replies[path]())
            else:
                self._send(404, {"message": f"no endpoint {path}"})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                body = self._body()
            except (json.JSONDecodeError, UnicodeDecodeError):
                self._send(400, {"message": "body is not JSON"})
                return
            if url.path in ("/api/v2/test", "/api/v2/test/final", "/api/v2/test/all"):
                beams = body.get("beamTimes") or [int(REFERENCE_TIME_S * 1000)]
                self._send(*sim.test(query.get("mode", ""), beams, query.get("modelName", "")))
            elif url.path == "/api/v2/abort":
                sim.abort()
                self._send(200)
            elif url.path == "/api/v2/energyCal":
                time.sleep(1.0)
                sim.ecal_needed, sim.ecal_runs = False, sim.ecal_runs + 1
                self._send(
                    200, {"status": "CODE_SUCCESS", "abortedByUser": "false", "errorCode": 0}
                )
            else:
                self._send(404, {"message": f"no endpoint {url.path}"})

        def do_PUT(self) -> None:
            """The simulator's own door: a lot's pellet or a cell's sample into the cup."""
            if urlsplit(self.path).path != "/sim/sample":
                self._send(404, {"message": "no such endpoint"})
                return
            try:
                body = self._body()
            except (json.JSONDecodeError, UnicodeDecodeError):
                self._send(400, {"message": "body is not JSON"})
                return
            given = [k for k in SAMPLES if isinstance(body, dict) and body.get(k) is not None]
            if not given:
                sim.place(None)
                self._send(200, {"sample": None})
                return
            kind, ident = given[0], str(body[given[0]])
            pellet = sim.press(kind, ident) if sim.press is not None else None
            if pellet is None:
                self._send(404, {"message": f"no {kind} {ident!r} in the simulation"})
                return
            sim.place(pellet)
            self._send(200, {"sample": pellet.name})

    return Handler
