"""Load and validate config/*.toml with pydantic: a typo must never be silently ignored."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from plant.domain import Route
from plant.historian import RECORDED_TAGS

DEFAULT_CONFIG_DIR = Path("config")
CONFIG_DIR_ENV = "PLANT_CONFIG_DIR"
DATABASE_URL_ENV = "PLANT_DATABASE_URL"


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid; the message is one line."""


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PlantSection(Strict):
    site: str = "demo"
    line: str = "L1"
    data_dir: Path = Path("var")


def database_url_problem(url: str) -> str | None:
    """Why `url` is no SQLAlchemy database URL this installation can use, or None."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return (
            "not a database URL (e.g. sqlite:///var/plant.db, "
            "postgresql+psycopg://user:password@host:5432/plant)"
        )
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        return f"unknown database driver {parsed.drivername!r}"
    return None


class DatabaseSection(Strict):
    url: str = "sqlite:///var/plant.db"

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        problem = database_url_problem(url)
        if problem:
            raise ValueError(problem)
        return url


class HmiSection(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Reverse proxies whose X-Forwarded-For names the client (login throttling); none by default.
    trusted_proxies: list[IPvAnyNetwork] = []


class SimBuffer(Strict):
    """The simulated conveyor downstream of one route (`[sim.buffers.<route>]`)."""

    capacity: int = Field(ge=1, description="cells it holds")
    drain_cells_s: float = Field(ge=0, description="cells a second carried away")


class SimSection(Strict):
    host: str = "127.0.0.1"
    plc_port: int = Field(5020, ge=1, le=65535)
    xrf_port: int = Field(5030, ge=1, le=65535, description="port of XRF head 1; head k on +k-1")
    xrf_heads: int = Field(8, ge=1, le=32)
    assay_analyser_port: int = Field(
        5040, ge=0, le=65535, description="simulated SciAps analyser (HTTP); 0: none"
    )
    code_reader_port: int = Field(
        5050, ge=0, le=65535, description="simulated code reader (TCP, [camera]); 0: none"
    )
    seed: int = 1
    copied_label_share: float = Field(
        0.0, ge=0, le=1, description="cells whose label copies an earlier cell's passport"
    )
    forged_passport_share: float = Field(
        0.0, ge=0.0, le=1.0, description="simulated signed passports altered after signing"
    )
    buffers: dict[Route, SimBuffer] = Field(
        default_factory=dict, description="downstream buffers by route (default: unlimited)"
    )


class LineSection(Strict):
    """Line engine timing and lot policy."""

    xrf_live_time_s: float = Field(0.05, gt=0, le=60, description="XRF acquisition per cell")
    xrf_timeout_s: float = Field(3.0, gt=0, le=120)
    diverter_ack_timeout_s: float = Field(2.0, gt=0, le=60)
    plc_grace_s: float = Field(
        1.0, ge=0, le=60, description="PLC requests may fail this long before it counts as down"
    )
    idle_poll_s: float = Field(0.002, gt=0, le=1, description="infeed poll period when idle")
    realtime_priority: int = Field(
        0,
        ge=0,
        le=99,
        description="SCHED_RR priority of the controller and its classifier process (0: normal)",
    )
    max_in_flight: int = Field(
        32, ge=1, le=4096, description="cells taken from the infeed and not yet diverted"
    )
    classify_batch_max: int = Field(64, ge=1, le=4096)
    classify_window_s: float = Field(
        0.004,
        ge=0,
        le=0.1,
        description="under load, wait this long for more spectra to classify in one batch",
    )
    lot_close_kg: float = Field(20.0, gt=0, description="a lot closes at this mass of cells")
    lot_max_age_h: float = Field(8.0, gt=0)
    quarantine_rate_alarm: float = Field(
        0.15, gt=0, le=1, description="alarm when the recent quarantine share exceeds this"
    )
    quarantine_rate_window: int = Field(200, ge=10, description="cells in the recent window")


class PlcSection(Strict):
    """Where the line PLC listens (Modbus TCP); the tag map is config/plc.toml."""

    host: str = "127.0.0.1"
    port: int = Field(5020, ge=1, le=65535)
    timeout_s: float | None = Field(
        None, gt=0, le=60, description="per-request timeout; default: plc.toml [modbus]"
    )


class XrfSection(Strict):
    """The XRF station (docs/xrf.md): `heads` Amptek DP5-family detectors over UDP (`dp5`) or
    instruments speaking our SCPI gateway protocol over TCP (`scpi`, docs/xrf-protocol.md), on
    `hosts` (one per head, each on `port`) or on consecutive ports from `port` of `host`."""

    kind: str = "dp5"
    host: str = "127.0.0.1"
    hosts: list[str] = Field(default_factory=list, description="dp5/scpi: one address per head")
    port: int = Field(5030, ge=1, le=65535)
    heads: int = Field(8, ge=0, le=32, description="0: no XRF station (passport only)")
    timeout_s: float = Field(5.0, gt=0, le=120)
    # dp5 only
    udp_timeout_s: float = Field(0.25, gt=0, le=10, description="resend a request after this")
    retries: int = Field(2, ge=0, le=10)
    channels: int = Field(4096, description="MCA channels (MCAC): 256, 512, ... 8192")
    offset_kev: float = Field(0.0, ge=-5, le=5, allow_inf_nan=False)
    kev_per_channel: float = Field(0.01, gt=0, le=1, allow_inf_nan=False)
    tube_kv: float | None = Field(50.0, gt=0, le=100, description="the X-ray tube's setting")
    max_dead_time: float = Field(0.5, gt=0, le=1, description="alarm above this dead time")
    min_detector_temp_k: float = Field(200.0, ge=0, le=400)
    max_detector_temp_k: float = Field(260.0, ge=0, le=400)
    min_hv_v: float = Field(20.0, ge=0, le=2000, description="|HV| below this: HV off alarm")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind == "sciaps":
            raise ValueError(
                "a SciAps analyser assays lots, it is not a line XRF head: use dp5 or scpi"
            )
        if kind not in ("dp5", "scpi"):
            raise ValueError(f"unknown XRF kind {kind!r}: use dp5 or scpi")
        return kind

    @field_validator("channels")
    @classmethod
    def _channels(cls, n: int) -> int:
        if n not in (256, 512, 1024, 2048, 4096, 8192):
            raise ValueError(f"{n} channels: a DP5 has 256, 512, 1024, 2048, 4096 or 8192")
        return n

    @model_validator(mode="after")
    def _consistent(self) -> XrfSection:
        if self.hosts and len(self.hosts) != self.heads:
            raise ValueError(f"hosts names {len(self.hosts)} heads, heads = {self.heads}")
        if self.min_detector_temp_k >= self.max_detector_temp_k:
            raise ValueError("min_detector_temp_k must be below max_detector_temp_k")
        return self

    def address(self, k: int) -> tuple[str, int]:
        """Host and port of head k (0-based)."""
        if self.hosts:
            return self.hosts[k], self.port
        return self.host, self.port + k


class AssayAnalyserSection(Strict):
    """The XRF analyser that assays lots (`plant assays measure LOT`, docs/xrf.md): `sciaps` is a
    SciAps X-series analyser on its remote API (`http://host:port/api/v2/...`); `none`: no
    analyser."""

    kind: Literal["sciaps", "none"] = "sciaps"
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(5040, ge=1, le=65535, description="8080 on a real SciAps analyser")
    mode: str = Field("Mining", min_length=1, description="the analyser's application (its apps)")
    model_name: str | None = Field(None, min_length=1, description="optional analytical model")
    beam_times_s: list[float] = Field(
        default_factory=lambda: [30.0, 30.0],
        min_length=1,
        max_length=4,
        description="test time of each beam",
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="per request, on top of the test")
    retries: int = Field(2, ge=0, le=10, description="reads retried after a connection error")

    @field_validator("beam_times_s")
    @classmethod
    def _positive_times(cls, v: list[float]) -> list[float]:
        if any(not 0 < t <= 600 for t in v):
            raise ValueError("each beam time must be > 0 and <= 600 s")
        return v


class CameraSection(Strict):
    """Label reading: `tcp_reader` is a smart code reader on TCP `host:port` that decodes on the
    device and sends the text (drivers/codereader.py); `sim` renders simulated label images and
    decodes them here; `directory` reads label images <dir>/<seq>.png; `none` runs without
    labels."""

    kind: Literal["tcp_reader", "sim", "directory", "none"] = "sim"
    directory: Path | None = None
    host: str = Field("127.0.0.1", min_length=1, description="tcp_reader: the reader's address")
    port: int = Field(5050, ge=1, le=65535, description="tcp_reader: its command port")
    timeout_s: float = Field(
        1.0, gt=0, le=60, description="tcp_reader: one read's deadline, then no label"
    )


class MqttSection(Strict):
    """The plant's MQTT broker (docs/mqtt.md); `plant run` publishes there when enabled."""

    enabled: bool = False
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = Field(None, min_length=1)
    password: str | None = None
    queue_max: int = Field(
        10_000, ge=1, le=1_000_000, description="events held during a broker outage, then dropped"
    )

    @model_validator(mode="after")
    def _password_needs_username(self) -> MqttSection:
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        return self


class SpectraSection(Strict):
    """Measured spectra kept with their cells in the database (docs/spectra.md)."""

    retention_days: float = Field(
        365.0,
        ge=0,
        allow_inf_nan=False,
        description="the running plant deletes spectra older than this (0: keep forever)",
    )
    archive_dir: Path = Field(
        Path("spectra-archive"),
        description="`plant db maintain` moves old months of spectra here as Parquet files, "
        "which the cell page reads (relative: under [plant] data_dir)",
    )


SPC_RULES = ("WE1", "WE2", "WE3", "WE4", "N3", "MR", "EWMA")  # plant/purity.py's rules


def _known_spc_rules(v: list[str]) -> list[str]:
    """Refuse a rule we do not have: a misspelt one would chart nothing and say nothing."""
    unknown = sorted(set(v) - set(SPC_RULES))
    if unknown:
        raise ValueError(f"unknown SPC rule(s) {unknown}; known: {list(SPC_RULES)}")
    return v


# The rules an SPC chart applies (product grades, process variables), checked at load.
SpcRules = Annotated[list[str], AfterValidator(_known_spc_rules)]


def default_spc_rules() -> list[str]:
    """Western Electric 1-4, Nelson 3 and EWMA: the moving range only when asked for."""
    return ["WE1", "WE2", "WE3", "WE4", "N3", "EWMA"]


class ProcessSpcSection(Strict):
    """`[process_spc]` in config/plant.toml: which process variables are charted and how."""

    tags: list[str] = Field(
        default_factory=lambda: [
            "leach.ph",
            "leach.temp_c",
            "leach.orp_mv",
            "purification.ph",
            "sx_mn.ph",
            "sx_co.ph",
            "carbonation.temp_c",
        ]
    )
    subgroup_s: int = Field(60, ge=1, le=86400, description="seconds of samples per point")
    baseline_points: int = Field(20, ge=2, le=1000, description="first N points set the limits")
    recent_points: int = Field(30, ge=8, le=1000, description="points the rules look at")
    trend_run: int = Field(6, ge=3)
    rules: SpcRules = Field(default_factory=default_spc_rules)
    ewma_lambda: float = Field(0.2, gt=0, le=1)
    ewma_l: float = Field(2.7, gt=0)
    # The smallest credible sigma of a point, in the tag's unit (a probe's repeatability): a
    # quiet baseline must not set limits tighter than the instrument can tell apart.
    sigma_floor: dict[str, float] = Field(
        default_factory=lambda: {"ph": 0.01, "temp_c": 0.2, "orp_mv": 2.0, "pct": 0.1}
    )

    @field_validator("subgroup_s")
    @classmethod
    def _whole_rollups(cls, v: int) -> int:
        if v >= 60 and v % 60:
            raise ValueError(f"{v} s: give under 60 s or whole minutes (the historian's roll-ups)")
        return v

    @field_validator("tags")
    @classmethod
    def _recorded(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in RECORDED_TAGS]
        if unknown:
            raise ValueError(f"not recorded by the historian: {unknown}; known: {RECORDED_TAGS}")
        return v

    def floor_of(self, tag: str) -> float:
        """The sigma floor of `tag`: the entry its name ends with (`ph` for `leach.ph`)."""
        return next(
            (f for suffix, f in self.sigma_floor.items() if tag.endswith(suffix)),
            0.0,
        )


class PlantConfig(Strict):
    """config/plant.toml."""

    plant: PlantSection = PlantSection()
    database: DatabaseSection = DatabaseSection()
    hmi: HmiSection = HmiSection()
    sim: SimSection = SimSection()
    plc: PlcSection = PlcSection()
    xrf: XrfSection = XrfSection()
    assay_analyser: AssayAnalyserSection = AssayAnalyserSection()
    camera: CameraSection = CameraSection()
    line: LineSection = LineSection()
    mqtt: MqttSection = MqttSection()
    spectra: SpectraSection = SpectraSection()
    process_spc: ProcessSpcSection = ProcessSpcSection()

    def spectra_archive_dir(self) -> Path:
        """Where archived spectra are: [spectra] archive_dir, under [plant] data_dir if relative."""
        return self.plant.data_dir / self.spectra.archive_dir


M = TypeVar("M", bound=BaseModel)


def config_dir(explicit: Path | None = None) -> Path:
    """The config directory: explicit option, then $PLANT_CONFIG_DIR, then ./config."""
    if explicit is not None:
        return explicit
    env = os.environ.get(CONFIG_DIR_ENV)
    return Path(env) if env else DEFAULT_CONFIG_DIR


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    if err["type"] == "missing":
        return f"{loc}: required key is missing"
    value = err.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
    return f"{loc}: {err['msg']}{shown}"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file, turning every failure into a one-line ConfigError."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def validate(path: Path, data: dict[str, Any], model: type[M]) -> M:
    """Validate parsed TOML against a model; errors name the file and the key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(dict(errors[0]))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{path}: {first}{more}") from None


def load_file(path: Path, model: type[M], *, required: bool = True) -> M:
    """Load one TOML file into a model; an optional missing file gives the model's defaults."""
    if not path.exists() and not required:
        return model()
    return validate(path, read_toml(path), model)


def load_plant(directory: Path | None = None) -> PlantConfig:
    """Load config/plant.toml; $PLANT_DATABASE_URL overrides database.url."""
    cfg = load_file(config_dir(directory) / "plant.toml", PlantConfig)
    env_url = os.environ.get(DATABASE_URL_ENV)
    if env_url:
        problem = database_url_problem(env_url)
        if problem:
            raise ConfigError(f"${DATABASE_URL_ENV}: {problem}")
        cfg = cfg.model_copy(update={"database": cfg.database.model_copy(update={"url": env_url})})
    return cfg
