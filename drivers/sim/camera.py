"""Simulated label camera: renders each cell's label with a QR code and real-world defects."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import numpy.typing as npt
import segno

from drivers.sim.cells import CellStream, CellTruth

LABEL_PX = 300  # square greyscale frame, as the line's label camera crops it
QR_SPAN_PX = 225  # the printed symbol with its quiet zone spans at most this many pixels
URL_SHARE = 0.3  # labels whose QR carries a passport URL instead of the bare id
_SALT = 0x4C4142  # "LAB": label defects are drawn independently of the cell truth


def label_payload(truth: CellTruth) -> str | None:
    """What the label's QR code carries: the passport id, a passport URL, or nothing."""
    if truth.passport_id is None:
        return None
    pick = (zlib.crc32(truth.passport_id.encode()) % 1000) / 1000  # stable, cheap
    if pick < URL_SHARE / 2:
        return f"https://dpp.example/passport/{truth.passport_id}"
    if pick < URL_SHARE:
        return f"https://dpp.example/p?id={quote(truth.passport_id, safe=':')}"
    return truth.passport_id


@lru_cache(maxsize=4096)
def _qr_modules(payload: str) -> npt.NDArray[np.bool_]:
    """Dark-module matrix with a 4-module quiet zone (cached; a fixed mask pattern saves
    segno's 8-way mask scoring, ~4x faster, and any mask is valid for readers)."""
    qr = segno.make(payload, error="m", micro=False, boost_error=False, mask=2)
    m = np.asarray(qr.matrix, dtype=bool)
    m.flags.writeable = False
    return np.pad(m, 4)


class SimCamera:
    """A `LabelCamera` rendering the label of cell `seq` from the shared simulated truth."""

    def __init__(self, seed: int, stream: CellStream | None = None) -> None:
        self.seed = seed
        self.stream = stream if stream is not None else CellStream(seed)

    async def capture(self, seq: int) -> npt.NDArray[np.uint8]:
        """The label image of cell `seq` (rendered off the event loop, like a camera's frame)."""
        return await asyncio.to_thread(self.render, seq)

    def render(self, seq: int) -> npt.NDArray[np.uint8]:
        """Render the label: grey card, text, QR, then pose, lighting and damage defects."""
        truth = self.stream.truth(seq)
        rng = np.random.default_rng([self.seed, seq, _SALT])
        paper = float(rng.uniform(150, 215))
        ink = float(rng.uniform(10, 70))
        img = np.full((LABEL_PX, LABEL_PX), paper, dtype=np.float32)
        _draw_text(img, truth, ink)
        payload = label_payload(truth)
        if payload is not None:
            box = _draw_qr(img, payload, rng, ink, paper)
            if truth.label_readable:
                _small_occlusion(img, box, rng, paper)
            else:
                _destroy(img, box, rng, ink, paper)
        img = _pose(img, rng)
        img = _lighting(img, rng)
        return np.clip(img, 0, 255).astype(np.uint8)

    def write_labels(self, directory: str | Path, seqs: Iterable[int]) -> list[Path]:
        """Write `<dir>/<seq>.png` label images for a `DirectoryCamera` test rig."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for seq in seqs:
            path = out / f"{seq}.png"
            if not cv2.imwrite(str(path), self.render(seq)):
                raise OSError(f"{path}: could not write label image")
            paths.append(path)
        return paths


def _draw_text(img: npt.NDArray[np.float32], truth: CellTruth, ink: float) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, f"CELL {truth.seq:08d}", (14, 26), font, 0.6, ink, 1, cv2.LINE_AA)
    kind = "Li-ion" if truth.passport_id else "BATTERY"
    cv2.putText(img, f"{kind}  RECYCLE", (14, 288), font, 0.55, ink, 1, cv2.LINE_AA)


def _draw_qr(
    img: npt.NDArray[np.float32],
    payload: str,
    rng: np.random.Generator,
    ink: float,
    paper: float,
) -> tuple[int, int, int]:
    """Paste the symbol (white quiet zone) near the centre; returns (x, y, size) in pixels."""
    modules = _qr_modules(payload)
    px = max(3, QR_SPAN_PX // modules.shape[0])
    symbol = np.kron(modules, np.ones((px, px), dtype=bool))
    size = symbol.shape[0]
    white = min(255.0, paper + float(rng.uniform(15, 40)))
    x = (LABEL_PX - size) // 2 + int(rng.integers(-8, 9))
    y = (LABEL_PX - size) // 2 + int(rng.integers(-4, 5))
    img[y : y + size, x : x + size] = np.where(symbol, ink, white)
    return x, y, size


def _small_occlusion(
    img: npt.NDArray[np.float32], box: tuple[int, int, int], rng: np.random.Generator, paper: float
) -> None:
    """Dirt or a tape edge over a few % of the data area: within the code's error correction."""
    if rng.random() > 0.3:
        return
    x, y, size = box
    w = int(size * rng.uniform(0.08, 0.16))
    h = int(size * rng.uniform(0.08, 0.16))
    # Lower-right quadrant: no finder pattern there, so detection still works.
    ox = x + int(size * rng.uniform(0.55, 0.80))
    oy = y + int(size * rng.uniform(0.55, 0.80))
    img[oy : oy + h, ox : ox + w] = float(rng.choice([paper * 0.5, paper]))


def _destroy(
    img: npt.NDArray[np.float32],
    box: tuple[int, int, int],
    rng: np.random.Generator,
    ink: float,
    paper: float,
) -> None:
    """Damage far beyond error correction: a torn, smeared half of the symbol."""
    x, y, size = box
    half = size // 2
    tone = float(rng.choice([ink, paper]))
    if rng.random() < 0.5:  # left half torn off, finder patterns with it
        img[y : y + size, x : x + half + int(rng.integers(0, size // 8))] = tone
    else:  # top half smeared over
        img[y : y + half + int(rng.integers(0, size // 8)), x : x + size] = tone
    scratches = rng.integers(2, 5)
    for _ in range(int(scratches)):
        p0 = (int(x + rng.integers(0, size)), int(y + rng.integers(0, size)))
        p1 = (int(x + rng.integers(0, size)), int(y + rng.integers(0, size)))
        cv2.line(img, p0, p1, float(rng.choice([ink, paper])), int(rng.integers(4, 10)))


def _pose(img: npt.NDArray[np.float32], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Any rotation on the conveyor, a little scale change; the belt shows at the corners."""
    angle = float(rng.uniform(0, 360))
    scale = float(rng.uniform(0.9, 1.0))
    centre = (LABEL_PX / 2 + rng.uniform(-4, 4), LABEL_PX / 2 + rng.uniform(-4, 4))
    m = cv2.getRotationMatrix2D(centre, angle, scale)
    belt = float(rng.uniform(30, 90))
    return cv2.warpAffine(
        img, m, (LABEL_PX, LABEL_PX), flags=cv2.INTER_LINEAR, borderValue=belt
    ).astype(np.float32)


@lru_cache(maxsize=1)
def _noise_field() -> npt.NDArray[np.float32]:
    """A fixed field of unit Gaussian noise; each frame takes a random window of it (cheap)."""
    return np.random.default_rng(_SALT).standard_normal((2 * LABEL_PX, 2 * LABEL_PX), np.float32)


def _lighting(img: npt.NDArray[np.float32], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Low contrast, glare, defocus blur and sensor noise."""
    contrast = float(rng.uniform(0.45, 1.0))
    img = (img - 128.0) * contrast + (128.0 + float(rng.uniform(-25, 25)))
    if rng.random() < 0.4:  # a glare spot: separable Gaussian, so two 300-vectors
        cx, cy = rng.uniform(40, LABEL_PX - 40, size=2)
        sigma = float(rng.uniform(25, 60))
        amp = float(rng.uniform(30, 90))
        axis = np.arange(LABEL_PX, dtype=np.float32)
        gx = np.exp(-((axis - cx) ** 2) / (2 * sigma**2))
        gy = np.exp(-((axis - cy) ** 2) / (2 * sigma**2))
        img += amp * np.outer(gy, gx).astype(np.float32)
    sigma_blur = float(rng.uniform(0.0, 1.0))
    if sigma_blur > 0.3:
        img = np.asarray(cv2.GaussianBlur(img, (0, 0), sigma_blur), dtype=np.float32)
    x, y = rng.integers(0, LABEL_PX, size=2)
    noise = _noise_field()[y : y + LABEL_PX, x : x + LABEL_PX]
    return img + float(rng.uniform(1.0, 6.0)) * noise
