"""SciAps X-series XRF analyser on its remote-control REST API (`http://HOST:8080/api/v2/...`),
as SciAps documents it publicly (github.com/SciAps/SciApsApi): lots are assayed on it.

Every request has a deadline; reads are retried after a connection failure; every failure is a
`SciapsError` whose message is one line naming the analyser, the request and what went wrong.
What the public documentation leaves open is assumed in one place, the constants below.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import xraylib

DEFAULT_PORT = 8080  # the documented port of the analyser's API
API = "/api/v2"
# -- Assumptions where the public documentation is silent (docs/xrf.md lists them) -----------
# `AnalysisResult.timestamp` is "unix timestamp": taken as milliseconds when larger than this
# (a Java `long`), else as seconds.
TIMESTAMP_MS_ABOVE = 1e11
# `ChemInfo.uncertainty` does not say which sigma: taken as the 1-sigma uncertainty in wt%.
UNCERTAINTY_SIGMA = 1.0
# `XTestResult.status` and `errorCode` are both ints without a stated relation: either non-zero
# is a failed test, named by the codes of `XResultCodes`.
# `XAcquisitionSettings.testType` is 0 for Empirical-like modes; the lot assay sends 0.
TEST_TYPE = 0
# The example status shows the silicon-drift detector at -25 C; above this it is not cooled
# and a test would measure with a degraded resolution.
DETECTOR_COOLED_MAX_C = -10.0
# A test takes its beam times plus overhead (tube ramp, filter wheel): the request deadline is
# the sum of the beam times plus `timeout_s`.
# ---------------------------------------------------------------------------------------------
# XResultCodes of the public API (the ones a lot assay can meet).
RESULT_CODES = {
    1: "aborted by the user",
    2: "aborted by the analyser",
    3: "aborted by the analyser (session ended)",
    101: "acquisition failed (unknown)",
    102: "detector temperature out of range",
    103: "X-ray tube power fault",
    104: "X-ray tube temperature out of range",
    105: "count rate too low (is there a sample in front of the window?)",
    106: "test stand interlock open",
    107: "shutter not open",
    108: "tube current not set",
    109: "filter wheel timeout",
    205: "invalid test type",
    206: "calibration model undefined",
    208: "calibration model not found",
    210: "invalid acquisition parameters",
    301: "energy calibration: peaks not found",
    311: "energy calibration timed out",
    401: "too many requests (a test is already running)",
    402: "remote service is off",
    403: "invalid remote configuration",
}
FLAG_ERROR = 1 << 0
FLAG_NOMINAL = 1 << 1
FLAG_LESS_LOD = 1 << 3
FLAG_LIGHT_ELEMENTS = 1 << 5


class SciapsError(RuntimeError):
    """The analyser failed or answered wrongly; the message is one line."""


@dataclass(frozen=True)
class InstrumentId:
    """Who the analyser is (`/api/v2/id`)."""

    family: str
    id: str
    model: str
    software: str
    apps: tuple[str, ...]


@dataclass(frozen=True)
class InstrumentStatus:
    """The analyser's health (`/api/v2/status` of an XRF analyser)."""

    detector_temp_c: float
    tube_temp_c: float
    energy_calibration_needed: bool
    battery_pct: float

    def not_ready(self) -> str | None:
        """Why no test should run now (detector not cooled), or None."""
        if self.detector_temp_c > DETECTOR_COOLED_MAX_C:
            return (
                f"detector at {self.detector_temp_c:.1f} °C, not cooled "
                f"(needs <= {DETECTOR_COOLED_MAX_C:g} °C)"
            )
        return None


@dataclass(frozen=True)
class EnergyCalibration:
    """Channel to energy: eV = offset + slope x channel (`/api/v2/energyCal`)."""

    offset_ev: float
    slope_ev: float


@dataclass(frozen=True)
class ElementResult:
    """One element of a test: wt% and its uncertainty; below the detection limit when flagged."""

    symbol: str
    pct: float
    unc_pct: float
    below_lod: bool


@dataclass(frozen=True)
class TestResult:
    """The chemistry of one test on the sample in front of the analyser."""

    mode: str
    model_name: str | None
    taken_at: datetime
    duration_s: float
    elements: tuple[ElementResult, ...]

    def wt_pct(self) -> dict[str, float]:
        """The measured elements (not those below the detection limit), wt%."""
        return {e.symbol: e.pct for e in self.elements if not e.below_lod}

    def unc_pct(self) -> dict[str, float]:
        return {e.symbol: e.unc_pct for e in self.elements if not e.below_lod}

    def below_lod(self) -> dict[str, float]:
        """Elements under their detection limit, with the limit the analyser gave (wt%)."""
        return {e.symbol: e.pct for e in self.elements if e.below_lod}


def _number(data: dict[str, Any], key: str, what: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SciapsError(f"{what}: field {key!r} is {value!r}, not a finite number")
    return float(value)


def _symbol(z: Any, what: str) -> str:
    if isinstance(z, bool) or not isinstance(z, int) or not 1 <= z <= 103:
        raise SciapsError(f"{what}: atomicNumber {z!r} is not an element")
    return str(xraylib.AtomicNumberToSymbol(z))


def _failed(data: dict[str, Any]) -> str | None:
    """Why a test or calibration reply reports failure, or None."""
    if data.get("abortedByUser") in (True, "true"):
        return RESULT_CODES[1]
    for key in ("errorCode", "status"):
        code = data.get(key)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            return f"code {code}: {RESULT_CODES.get(code, 'unknown result code')}"
        if isinstance(code, str) and code not in ("CODE_SUCCESS", "0"):
            return f"status {code}"
    return None


def parse_test_result(data: Any, what: str = "test") -> TestResult:
    """An XTestResult (JSON) as a TestResult; a failed or malformed one is a SciapsError."""
    if not isinstance(data, dict):
        raise SciapsError(f"{what}: reply is not a JSON object")
    problem = _failed(data)
    if problem is not None:
        raise SciapsError(f"{what} failed: {problem}")
    test = data.get("testData")
    if not isinstance(test, dict):
        raise SciapsError(f"{what}: reply has no testData")
    chemistry = test.get("chemistry")
    if not isinstance(chemistry, list):
        raise SciapsError(f"{what}: testData has no chemistry list")
    elements = []
    for item in chemistry:
        if not isinstance(item, dict):
            raise SciapsError(f"{what}: a chemistry entry is not an object")
        flags = item.get("flags", 0)
        if not isinstance(flags, int) or flags & (FLAG_ERROR | FLAG_LIGHT_ELEMENTS | FLAG_NOMINAL):
            continue  # not a measured element: error, light-element balance or grade nominal
        symbol = _symbol(item.get("atomicNumber"), what)
        pct, unc = _number(item, "percent", what), _number(item, "uncertainty", what)
        if pct < 0 or unc < 0:
            raise SciapsError(f"{what}: {symbol} {pct} ± {unc} % is negative")
        elements.append(
            ElementResult(symbol, pct, unc / UNCERTAINTY_SIGMA, bool(flags & FLAG_LESS_LOD))
        )
    stamp = _number(test, "timestamp", what)
    seconds = stamp / 1000.0 if stamp > TIMESTAMP_MS_ABOVE else stamp
    return TestResult(
        mode=str(test.get("mode", "")),
        model_name=test.get("modelName") or None,
        taken_at=datetime.fromtimestamp(seconds, UTC),
        duration_s=_number(test, "durationMs", what) / 1000.0,
        elements=tuple(elements),
    )


class SciapsClient:
    """One SciAps analyser; an `httpx.AsyncClient` keeps its connection."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.5,
    ) -> None:
        self.name = f"SciAps analyser {host}:{port}"
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.AsyncClient(base_url=f"http://{host}:{port}{API}", timeout=timeout_s)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> SciapsClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout_s: float | None = None,
        idempotent: bool = True,
    ) -> Any:
        """JSON of one request. A connection that was never made is retried (the request did
        not reach the analyser); a timeout or a broken reply only for reads."""
        what = f"{self.name}: {method} {API}{path}"
        attempt = 0
        while True:
            try:
                reply = await self._http.request(
                    method,
                    path,
                    json=body,
                    params=params,
                    timeout=timeout_s if timeout_s is not None else self.timeout_s,
                )
                break
            except httpx.ConnectError as exc:
                problem, retry = f"cannot connect ({exc or 'refused'})", True
            except httpx.TimeoutException:
                problem, retry = "no reply within the deadline", idempotent
            except httpx.HTTPError as exc:
                problem, retry = f"{type(exc).__name__}: {exc}", idempotent
            if not retry or attempt >= self.retries:
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise SciapsError(f"{what}: {problem}{tries}")
            attempt += 1
            await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        if reply.status_code != 200:
            text = " ".join(reply.text.split())[:200]
            raise SciapsError(f"{what}: HTTP {reply.status_code}" + (f": {text}" if text else ""))
        if not reply.content:
            return None
        try:
            return reply.json()
        except json.JSONDecodeError:
            raise SciapsError(f"{what}: reply is not JSON") from None

    async def identify(self) -> InstrumentId:
        """`GET /id`: family, serial, model, software and the licensed application modes."""
        data = await self._request("GET", "/id")
        if not isinstance(data, dict) or not isinstance(data.get("apps"), list):
            raise SciapsError(f"{self.name}: GET {API}/id: reply has no list of apps")
        return InstrumentId(
            family=str(data.get("family", "")),
            id=str(data.get("id", "")),
            model=str(data.get("model", "")),
            software=str(data.get("swVersion", "")),
            apps=tuple(str(a) for a in data["apps"]),
        )

    async def status(self) -> InstrumentStatus:
        """`GET /status` of an XRF analyser."""
        data = await self._request("GET", "/status")
        what = f"{self.name}: GET {API}/status"
        if not isinstance(data, dict):
            raise SciapsError(f"{what}: reply is not a JSON object")
        return InstrumentStatus(
            detector_temp_c=_number(data, "detectorTemp", what),
            tube_temp_c=_number(data, "tubeTemp", what),
            energy_calibration_needed=bool(data.get("isECalNeeded", False)),
            battery_pct=_number(data, "batteryLevel", what),
        )

    async def energy_calibration(self) -> EnergyCalibration:
        """`GET /energyCal`: the current coefficients."""
        data = await self._request("GET", "/energyCal")
        what = f"{self.name}: GET {API}/energyCal"
        if not isinstance(data, dict):
            raise SciapsError(f"{what}: reply is not a JSON object")
        return EnergyCalibration(_number(data, "offset", what), _number(data, "slope", what))

    async def calibrate_energy(self, timeout_s: float = 120.0) -> None:
        """`POST /energyCal`: run an energy calibration; a failed one is a SciapsError."""
        data = await self._request("POST", "/energyCal", timeout_s=timeout_s, idempotent=False)
        problem = _failed(data) if isinstance(data, dict) else "reply is not a JSON object"
        if problem is not None:
            raise SciapsError(f"{self.name}: energy calibration failed: {problem}")

    async def test(
        self, mode: str, beam_times_s: list[float], model_name: str | None = None
    ) -> TestResult:
        """`POST /test/final?mode=...`: one test of the sample in front of the analyser."""
        params = {"mode": mode}
        if model_name:
            params["modelName"] = model_name
        settings = {
            "testType": TEST_TYPE,
            "modelName": model_name or "",
            "beamEnabledFlags": [True] * len(beam_times_s),
            "beamTimes": [round(t * 1000) for t in beam_times_s],
        }
        data = await self._request(
            "POST",
            "/test/final",
            body=settings,
            params=params,
            timeout_s=sum(beam_times_s) + self.timeout_s,
            idempotent=False,
        )
        return parse_test_result(data, f"{self.name}: test in mode {mode}")

    async def abort(self) -> None:
        """`POST /abort`: stop the running test or calibration."""
        await self._request("POST", "/abort", idempotent=False)
