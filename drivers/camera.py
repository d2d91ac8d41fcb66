"""Label camera: capture label images, decode their QR or DataMatrix code to a passport id."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

import biip
import cv2
import numpy as np
import numpy.typing as npt
import zxingcpp
from biip.gs1_messages import GS1Message

# zxing-cpp (the default) decodes the simulated 300x300 labels in well under 1 ms and reads
# every readable one; OpenCV's detectors take 5-25 ms and miss a few blurred, rotated symbols.
# The ArUco-based one is about twice as fast as cv2.QRCodeDetector; "aruco+classic" runs the
# classic one only when ArUco located a symbol it could not decode. The OpenCV choices stay for
# comparison: bench/qr_decode.py --detector.
DETECTORS = ("zxing", "aruco+classic", "aruco", "classic")

# A bare passport id: what Catena-X and the EU battery passport use (urn:uuid:..., other URNs,
# GS1-like or manufacturer ids). No whitespace, no slashes, no URL syntax.
_BARE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{2,199}")
_URN_UUID = "urn:uuid:"
_MAX_PAYLOAD = 2000
_GS = "\x1d"  # GS1 FNC1 separator between variable-length element strings (DataMatrix)
# `CX:<manufacturerPartId>:<partInstanceId>`: the Tractus-X product passport QR payload.
_CX = re.compile(r"CX:([^:]+):(.+)", re.IGNORECASE)


class CameraError(RuntimeError):
    """The camera gave no usable image; the message names the camera and the cell."""


@dataclass(frozen=True)
class LabelRead:
    """What a label image gave: the QR payload, or why there is none (never both)."""

    payload: str | None
    error: str | None = None

    @property
    def readable(self) -> bool:
        return self.payload is not None


@runtime_checkable
class LabelCamera(Protocol):
    """What the line needs from a label camera: the label image of cell `seq`."""

    async def capture(self, seq: int) -> npt.NDArray[np.uint8]: ...


class QrDecoder:
    """One OpenCV QR detector, reused across images (detector construction is not free)."""

    def __init__(self, detector: str = DETECTORS[0]) -> None:
        if detector not in DETECTORS:
            raise ValueError(f"unknown QR detector {detector!r}; choose one of {DETECTORS}")
        self.detector = detector
        self._first: _Detector
        if detector == "zxing":
            self._first = _zxing
        elif detector == "classic":
            self._first = _opencv(cv2.QRCodeDetector())
        else:
            self._first = _opencv(cv2.QRCodeDetectorAruco())
        self._second = _opencv(cv2.QRCodeDetector()) if detector == "aruco+classic" else None

    def decode(self, image: npt.NDArray[np.generic]) -> LabelRead:
        """Decode one label; anything short of a clean, printable payload is unreadable."""
        grey, problem = _as_grey(image)
        if grey is None:
            return LabelRead(None, problem)
        raw, found = self._first(grey)
        if not raw and found and self._second is not None:
            raw, _ = self._second(grey)
        if isinstance(raw, str):  # several different codes: which one is the passport?
            return LabelRead(None, raw)
        if raw:
            return check_payload(raw)
        if not found:
            return LabelRead(None, "no QR code found on the label")
        return LabelRead(None, "QR code found but not decodable (damaged, blurred or occluded)")


# (payload bytes or b"", whether a symbol was located); a str instead of bytes says why the
# label cannot be trusted although symbols decoded.
_Detector = Callable[[npt.NDArray[np.uint8]], tuple[bytes | str, bool]]


def _zxing(grey: npt.NDArray[np.uint8]) -> tuple[bytes | str, bool]:
    """zxing-cpp: every QR and DataMatrix symbol on the label (cells often carry a DataMatrix,
    Catena-X 3.x `batteryIDDMCCode`); more than one distinct payload is refused."""
    # No module-level BarcodeFormats object: nanobind reports one alive at exit as a leak.
    formats = zxingcpp.BarcodeFormats(
        [zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.DataMatrix]
    )
    found = zxingcpp.read_barcodes(grey, formats=formats, return_errors=True)
    payloads = {bytes(b.bytes) for b in found if b.valid}
    if len(payloads) > 1:
        return f"{len(payloads)} different codes on the label: none is taken", True
    return (payloads.pop() if payloads else b""), bool(found)


def _opencv(detector: cv2.QRCodeDetectorAruco | cv2.QRCodeDetector) -> _Detector:
    def run(grey: npt.NDArray[np.uint8]) -> tuple[bytes | str, bool]:
        try:
            raw, points, _ = detector.detectAndDecodeBytes(grey)
        except cv2.error:  # degenerate geometry inside OpenCV: treat as not decodable
            return b"", True
        return bytes(raw or b""), points is not None

    return run


def _as_grey(image: object) -> tuple[npt.NDArray[np.uint8] | None, str]:
    """8-bit greyscale view of a camera image, or why it is not one."""
    if not isinstance(image, np.ndarray):
        return None, f"label image is {type(image).__name__}, not a numpy array"
    if image.dtype != np.uint8:
        return None, f"label image has dtype {image.dtype}, expected uint8"
    colour = image.ndim == 3 and image.shape[2] == 3
    if not (image.ndim == 2 or colour) or min(image.shape[:2]) < 21:
        return None, (
            f"label image has shape {image.shape}, expected a 2-D greyscale or BGR image "
            "of at least 21x21 pixels (a QR code's smallest size)"
        )
    if colour:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8), ""
    return np.asarray(image, dtype=np.uint8), ""


def check_payload(raw: bytes) -> LabelRead:
    """Reject payloads no passport label carries, so a damaged symbol is never taken as an id
    (a decoder here or a smart code reader's text alike)."""
    if len(raw) > _MAX_PAYLOAD:
        return LabelRead(None, f"QR payload is {len(raw)} bytes, longer than any passport label")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return LabelRead(None, "QR payload is not UTF-8 text (suspect decode)")
    if not text.replace(_GS, "").isprintable() or text != text.strip():
        return LabelRead(None, f"QR payload contains control or blank characters: {text[:60]!r}")
    return LabelRead(text)


_per_thread = threading.local()


def decode_label(image: npt.NDArray[np.generic]) -> LabelRead:
    """Decode the QR code on a label image (one decoder per thread: OpenCV's hold state)."""
    decoder: QrDecoder | None = getattr(_per_thread, "decoder", None)
    if decoder is None:
        decoder = _per_thread.decoder = QrDecoder()
    return decoder.decode(image)


def label_passport(read: LabelRead) -> tuple[str | None, str | None]:
    """(passport id, None) from a label read, or (None, why there is none): what the line's
    label readers return (plant/line.py `LabelReader`)."""
    if read.payload is None:
        return None, f"label unreadable: {read.error}"
    try:
        return passport_id_from_payload(read.payload), None
    except ValueError as exc:
        return None, f"label QR is not a passport reference: {exc}"


def passport_id_from_payload(payload: str) -> str:
    """Passport id from a label payload (docs/passport.md, "Labels"): a bare id, a passport URL
    (.../passport/<id> or ?id=), a GS1 Digital Link or element string, `CX:`, a product URI."""
    text = payload.strip()
    if not text:
        raise ValueError("QR payload is empty: expected a passport id or passport URL")
    if "://" in text:
        return _id_from_url(text)
    if text.startswith("(") or _GS in text or re.fullmatch(r"01\d{14}\S*", text):
        return _gs1_element_strings(text, payload)
    if m := _CX.fullmatch(text):
        part_id = m.group(2)
        # `CX:urn:uuid:...` names a passport id; otherwise the serial part instance id.
        return _check_bare_id(text[3:] if m.group(1).lower() == "urn" else part_id, payload)
    return _check_bare_id(text, payload)


def _gs1_element_strings(text: str, payload: str) -> str:
    """GS1 element strings, `(01)...(21)...` or raw with FNC1 -> canonical Digital Link URI."""
    parse = GS1Message.parse_hri if text.startswith("(") else GS1Message.parse  # FNC1 as GS
    try:
        message = parse(text)
    except biip.ParseError as exc:
        raise ValueError(f"label {payload[:80]!r}: not GS1 element strings: {exc}") from None
    return _gs1_uri(message.as_gs1_digital_link_uri().as_canonical_uri(), payload)


def _gs1_uri(uri: str, payload: str) -> str:
    """A GS1 Digital Link names a passport by its serial (AI 21): without one, no passport."""
    if "/21/" not in uri:
        raise ValueError(
            f"label payload {payload[:80]!r} names a GS1 product (GTIN) but no serial number "
            "(AI 21): a passport is per battery"
        )
    return uri


def _id_from_url(url: str) -> str:
    # urlsplit drops tabs and newlines inside a URL (WHATWG), which would join the pieces
    # around them into an id the label does not carry.
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"passport URL {url[:80]!r} contains whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"QR payload {url[:80]!r} is a URL but not an http(s) passport URL")
    ids = parse_qs(parts.query).get("id")
    if ids:
        if len(ids) > 1:
            raise ValueError(f"passport URL {url[:80]!r} has {len(ids)} id parameters")
        return _check_bare_id(ids[0], url)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    for i, seg in enumerate(segments[:-1]):
        if seg.lower() == "passport" and i == len(segments) - 2:
            return _check_bare_id(segments[-1], url)
    if re.search(r"/01/\d{8,14}(?:/|$)", parts.path):  # GS1 Digital Link, any domain
        link = biip.parse(url).gs1_digital_link_uri
        if link is None:
            raise ValueError(f"passport URL {url[:80]!r}: not a valid GS1 Digital Link")
        return _gs1_uri(link.as_canonical_uri(), url)
    if not segments and not parts.query:
        raise ValueError(f"passport URL {url[:80]!r} has no path: it names no passport or product")
    # A product URI (IDTA 02035-1 `URIOfTheProduct`, an AAS globalAssetId) is the id itself.
    return url


def _check_bare_id(candidate: str, payload: str) -> str:
    """Validate a bare id; urn:uuid ids must hold a real UUID and come back lower-case."""
    if candidate.lower().startswith(_URN_UUID):
        try:
            return _URN_UUID + str(uuid.UUID(candidate[len(_URN_UUID) :]))
        except ValueError:
            raise ValueError(
                f"QR payload {payload[:80]!r}: {candidate[:60]!r} is not a valid urn:uuid"
            ) from None
    if not _BARE_ID.fullmatch(candidate):
        raise ValueError(
            f"QR payload {payload[:80]!r} is not a passport id (3-200 characters of letters, "
            "digits and . _ : -) or a passport URL"
        )
    return candidate


class DirectoryCamera:
    """A camera whose images are files `<dir>/<seq>.png`, as a test rig or image grabber writes."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CameraError(f"label image directory {self.directory} does not exist")

    async def capture(self, seq: int) -> npt.NDArray[np.uint8]:
        """Read the label image of cell `seq` as 8-bit greyscale."""
        path = self.directory / f"{seq}.png"
        if not path.is_file():
            raise CameraError(f"{path}: no label image for cell {seq}")
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise CameraError(f"{path}: not a readable image file")
        return np.asarray(image, dtype=np.uint8)
