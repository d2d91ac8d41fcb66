"""Assemble a line's hardware clients from config.

`plant run` opens a `Rig` of clients to whatever listens at the configured addresses (a plant
floor, or the simulators `plant sim` serves), so the same controller code drives both.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from drivers.camera import DirectoryCamera, LabelCamera, decode_label, label_passport
from drivers.codereader import TcpCodeReader
from drivers.dp5 import Calibration, DetectorLimits, Dp5Client
from drivers.plc import PlcClient, TagMap, TagMapError, load_tag_map
from drivers.xrf import Head, XrfClient, XrfStation
from plant.config import ConfigError, PlantConfig
from plant.domain import AlarmPriority
from plant.hardware import LabelReader


def tag_map(config_dir: Path) -> TagMap:
    """config/plc.toml, validated; errors as one-line ConfigErrors."""
    try:
        return load_tag_map(config_dir / "plc.toml")
    except TagMapError as exc:
        raise ConfigError(str(exc)) from None


class CameraLabels:
    """Camera + QR decoder: the passport id on a cell's label, or why there is none."""

    def __init__(self, camera: LabelCamera) -> None:
        self.camera = camera

    async def read_label(self, seq: int) -> tuple[str | None, str | None]:
        image = await self.camera.capture(seq)
        return label_passport(await asyncio.to_thread(decode_label, image))


@dataclass
class Rig:
    """Clients to one line's PLC, XRF heads and label camera."""

    plc: PlcClient
    station: XrfStation | None
    labels: LabelReader | None
    heads: list[Head] = field(default_factory=list)

    async def close(self) -> None:
        for head in self.heads:
            with contextlib.suppress(Exception):
                await head.close()
        if isinstance(self.labels, TcpCodeReader):
            await self.labels.close()
        with contextlib.suppress(Exception):
            await self.plc.close()


def open_rig(cfg: PlantConfig, config_dir: Path, simulated: LabelReader | None = None) -> Rig:
    """Clients for the configured addresses (connections open lazily, with backoff).

    `simulated`: the label reader for `[camera] kind` `sim`, which the command line builds
    (plant/commands/wiring.py)."""
    plc = PlcClient(cfg.plc.host, cfg.plc.port, tag_map(config_dir), timeout_s=cfg.plc.timeout_s)
    heads = [xrf_head(cfg, k) for k in range(cfg.xrf.heads)]
    labels: LabelReader | None = None
    if cfg.camera.kind == "sim":
        labels = simulated
    elif cfg.camera.kind == "tcp_reader":
        c = cfg.camera
        labels = TcpCodeReader(c.host, c.port, timeout_s=c.timeout_s)
    elif cfg.camera.kind == "directory":
        if cfg.camera.directory is None:
            raise ConfigError(
                "plant.toml: camera.directory: required when camera.kind is 'directory'"
            )
        labels = CameraLabels(DirectoryCamera(cfg.camera.directory))
    lanes = cfg.xrf.kind == "dp5"  # a DP5 measures what the conveyor puts in front of it
    return Rig(plc, XrfStation(heads, lanes=lanes) if heads else None, labels, heads)


def xrf_head(cfg: PlantConfig, k: int) -> Head:
    """The client of XRF head k (0-based) of `[xrf] kind`."""
    x = cfg.xrf
    host, port = x.address(k)
    if x.kind == "scpi":
        return XrfClient(host, port, timeout_s=x.timeout_s, name=f"xrf{k + 1}")
    return Dp5Client(
        host,
        port,
        calibration=Calibration(x.offset_kev, x.kev_per_channel, x.channels),
        limits=DetectorLimits(
            x.max_dead_time, x.min_detector_temp_k, x.max_detector_temp_k, x.min_hv_v
        ),
        tube_kv=x.tube_kv,
        timeout_s=x.udp_timeout_s,
        retries=x.retries,
        name=f"xrf{k + 1}",
    )


# Detector problems of a DP5 head (drivers/dp5.py `Dp5Status.problems`) and their priority.
DETECTOR_ALARMS = {
    "hv_off": AlarmPriority.high,
    "detector_temp": AlarmPriority.high,
    "dead_time": AlarmPriority.medium,
}


def head_health(heads: list[Head]) -> dict[str, dict[str, object]]:
    """Per head, for the status API: its link and (a DP5) its detector's last status."""
    out: dict[str, dict[str, object]] = {}
    for head in heads:
        h = head.health
        entry: dict[str, object] = {"link": h.state, "last_error": h.last_error}
        if isinstance(head, Dp5Client):
            entry.update(head.detector.as_json())
        out[head.name] = entry
    return out


def detector_problems(heads: list[Head]) -> list[tuple[str, str, str | None, AlarmPriority]]:
    """(head, code, text or None, priority) of every detector check of every DP5 head that has
    reported a status: the alarms to raise (text) or clear (None)."""
    return [
        (head.name, code, text, DETECTOR_ALARMS[code])
        for head in heads
        if isinstance(head, Dp5Client)
        for code, text in head.detector.problems.items()
    ]
