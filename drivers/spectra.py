"""The Spectrum type shared by drivers and models, and spectrum file formats.

Formats (details and quirks in docs/spectra.md):
- EMSA/MSA (ISO 22029), the standard spectral text format (`read_msa`, `write_msa`);
- Amptek `.mca` (PMCA spectrum), what many XRF detectors export (`read_mca`, `write_mca`);
- plain CSV `energy_keV,counts` (`read_csv`, `write_csv`);
- vendor formats (Bruker .spx, EDAX .spc) through rosettasciio (`read_vendor`).
`read_spectrum` / `write_spectrum` pick the format from the content or the file suffix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt


class SpectrumError(ValueError):
    """A spectrum (file or instrument reply) is unusable; the message names the source."""


@dataclass(eq=False)
class Spectrum:
    """Counts per channel with a linear energy calibration: E(ch) = offset + gain * ch (keV)."""

    counts: npt.NDArray[np.float64]
    offset_kev: float
    kev_per_channel: float
    live_time_s: float
    real_time_s: float | None = None
    tube_kv: float | None = None
    source: str = "spectrum"
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts, dtype=np.float64)
        if counts.ndim != 1 or counts.size < 16:
            raise SpectrumError(f"{self.source}: expected at least 16 channels, got {counts.shape}")
        low, high = counts.min(), counts.max()  # NaN propagates: two passes check every channel
        if not (np.isfinite(low) and np.isfinite(high)):
            bad = int(np.flatnonzero(~np.isfinite(counts))[0])
            raise SpectrumError(f"{self.source}: channel {bad} is not a finite number")
        if low < 0:
            bad = int(np.flatnonzero(counts < 0)[0])
            raise SpectrumError(f"{self.source}: channel {bad} has negative counts {counts[bad]}")
        if not (np.isfinite(self.kev_per_channel) and self.kev_per_channel > 0):
            raise SpectrumError(
                f"{self.source}: energy per channel must be > 0 keV, got {self.kev_per_channel}"
            )
        if not np.isfinite(self.offset_kev):
            raise SpectrumError(f"{self.source}: energy offset is not a number")
        if not (np.isfinite(self.live_time_s) and self.live_time_s > 0):
            raise SpectrumError(f"{self.source}: live time must be > 0 s, got {self.live_time_s}")
        self.counts = counts

    @property
    def n_channels(self) -> int:
        return int(self.counts.size)

    def energies(self) -> npt.NDArray[np.float64]:
        """Energy (keV) of each channel."""
        return self.offset_kev + self.kev_per_channel * np.arange(self.n_channels, dtype=np.float64)

    def channel_of(self, kev: float) -> float:
        """Fractional channel index of an energy."""
        return (kev - self.offset_kev) / self.kev_per_channel

    def total_counts(self) -> float:
        """All counts in the spectrum (what sets the statistical quality)."""
        return float(self.counts.sum())

    def counts_between(self, lo_kev: float, hi_kev: float) -> float:
        """Sum of counts in the channels whose energy lies in [lo_kev, hi_kev]."""
        e = self.energies()
        return float(self.counts[(e >= lo_kev) & (e <= hi_kev)].sum())


# --------------------------------------------------------------------------- text loading

_UNITS_TO_KEV = {"ev": 1e-3, "kev": 1.0}
_UNITS_TO_S = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}


# No single spectrum file comes near this (a 4096-channel EMSA file is ~50 KB); a bigger file
# is a map, a data cube or a wrong file, and reading it would cost gigabytes of memory.
MAX_FILE_BYTES = 20 * 1024 * 1024


def _check_size(path: Path) -> None:
    """Refuse a file over MAX_FILE_BYTES before reading a byte of it."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SpectrumError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if size > MAX_FILE_BYTES:
        raise SpectrumError(
            f"{path}: file is {size / 2**20:.1f} MB, over the {MAX_FILE_BYTES // 2**20} MB limit "
            "for one spectrum (a map or data cube?)"
        )


def _load_text(path: Path) -> str:
    """File content as text; binary garbage, empty, oversize and unreadable files are refused."""
    _check_size(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpectrumError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if not raw.strip():
        raise SpectrumError(f"{path}: file is empty")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raw_text = raw.decode("utf-16")
    else:
        if b"\x00" in raw:
            raise SpectrumError(f"{path}: binary content (NUL bytes), not a text spectrum file")
        try:
            raw_text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raw_text = raw.decode("latin-1")  # what rosettasciio and older EDS software write
    controls = sum(1 for ch in raw_text[:4096] if ord(ch) < 32 and ch not in "\r\n\t\f")
    if controls > 4:
        raise SpectrumError(f"{path}: binary content (control bytes), not a text spectrum file")
    return raw_text


def _float(text: str, path: Path, what: str) -> float:
    """Parse one number, naming the file and field on failure."""
    try:
        value = float(text.strip().rstrip(",").strip())
    except ValueError:
        raise SpectrumError(f"{path}: {what} is not a number: {text.strip()!r}") from None
    if not math.isfinite(value):
        raise SpectrumError(f"{path}: {what} is not a finite number: {text.strip()!r}")
    return value


def _kev_factor(unit: str, path: Path, what: str) -> float:
    try:
        return _UNITS_TO_KEV[unit.strip().lower()]
    except KeyError:
        raise SpectrumError(
            f"{path}: unknown energy unit {unit!r} for {what} (use eV or keV)"
        ) from None


def _seconds(value: str, unit: str | None, path: Path, what: str) -> float:
    number = _float(value, path, what)
    if unit is None:
        return number
    try:
        return number * _UNITS_TO_S[unit.strip().lower()]
    except KeyError:
        raise SpectrumError(
            f"{path}: unknown time unit {unit!r} for {what} (use s or ms)"
        ) from None


def _check_counts(values: list[float], path: Path, where: Callable[[int], str]) -> None:
    """Negative or NaN counts are refused with the channel and line they sit on."""
    arr = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        i = int(bad[0])
        kind = "negative" if np.isfinite(arr[i]) else "not a finite number"
        raise SpectrumError(f"{path}: channel {i} ({where(i)}) has counts {kind}: {values[i]}")


def _format_count(value: float) -> str:
    """Integral counts as integers, others with full float precision (exact round trip)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# --------------------------------------------------------------------------- EMSA / MSA

# '#KEY : v', '#KEY -unit: v', '#KEY-unit: v' (ISO 22029); '#KEY unit: v' (Oxford '#XPOSITION mm:')
_MSA_LINE = re.compile(
    r"^#\s*(#?[A-Za-z][A-Za-z0-9_]*)\s*(?:-?\s*([A-Za-z\u00b5][^:\s]*))?\s*:\s?(.*)$"
)
_MSA_REQUIRED = ("NPOINTS", "DATATYPE", "XPERCHAN", "OFFSET")
# Keywords that decide how the data are read may not be given twice; others (TITLE, XLABEL ...,
# which EDS software repeats) keep their first value.
_MSA_SINGLE = frozenset(
    {"FORMAT", "NPOINTS", "NCOLUMNS", "DATATYPE", "XPERCHAN", "OFFSET", "XUNITS", "LIVETIME"}
    | {"REALTIME", "BEAMKV"}
)
# ISO 22029 keywords (and the abbreviations common software writes); others are ignored and
# named in one warning.
_MSA_KNOWN = frozenset(
    (
        "FORMAT",
        "VERSION",
        "TITLE",
        "DATE",
        "TIME",
        "OWNER",
        "NPOINTS",
        "NCOLUMNS",
        "XUNITS",
        "YUNITS",
        "DATATYPE",
        "XPERCHAN",
        "OFFSET",
        "SIGNALTYPE",
        "XLABEL",
        "YLABEL",
        "CHOFFSET",
        "COMMENT",
        "BEAMKV",
        "EMISSION",
        "PROBECUR",
        "BEAMDIAM",
        "MAGCAM",
        "OPERMODE",
        "CONVANGLE",
        "COLLANGLE",
        "THICKNESS",
        "XTILTSTGE",
        "YTILTSTGE",
        "XPOSITION",
        "YPOSITION",
        "ZPOSITION",
        "DWELLTIME",
        "INTEGTIME",
        "ELSDET",
        "EDSDET",
        "ELEVANGLE",
        "AZIMANGLE",
        "SOLIDANGLE",
        "SOLIDANGL",
        "LIVETIME",
        "REALTIME",
        "FWHMMNKA",
        "TBEWIND",
        "TAUWIND",
        "TDEADLYR",
        "TACTLYR",
        "TALWIND",
        "TPYWIND",
        "TBNWIND",
        "TDIWIND",
        "THCWIND",
        "CHECKSUM",
    )
)
_MSA_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


@dataclass
class _MsaHeader:
    values: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    user: dict[str, str] = field(default_factory=dict)  # "##KEY" user-defined keywords


def _msa_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        yield number, line.strip()


def read_msa(path: str | Path) -> Spectrum:
    """Read an EMSA/MSA (ISO 22029) spectrum file, Y or XY data, eV or keV calibration."""
    p = Path(path)
    return _parse_msa(_load_text(p), p)


def _parse_msa(text: str, path: Path) -> Spectrum:
    header = _MsaHeader()
    unknown: list[str] = []
    data: list[tuple[int, str]] = []
    in_data = ended = False
    for number, line in _msa_lines(text):
        if not line:
            continue
        if line.startswith("#"):
            m = _MSA_LINE.match(line)
            if m is None:
                raise SpectrumError(f"{path}: line {number}: not a '#KEYWORD : value' line")
            key, unit, value = m.group(1), m.group(2), m.group(3).strip()
            upper = key.upper()
            if upper == "SPECTRUM":
                in_data = True
                continue
            if upper == "ENDOFDATA":
                ended = True
                break
            if in_data:
                raise SpectrumError(f"{path}: line {number}: keyword #{key} inside the data")
            if key.startswith("#"):
                header.user[key[1:]] = value
                continue
            if upper in header.values:
                if upper in _MSA_SINGLE:
                    raise SpectrumError(f"{path}: line {number}: keyword #{upper} given twice")
                continue
            if upper not in _MSA_KNOWN:
                unknown.append(f"#{key}")
            header.values[upper] = value
            header.lines[upper] = number
            if unit:
                header.units[upper] = unit
        elif in_data:
            data.append((number, line))
        else:
            raise SpectrumError(f"{path}: line {number}: data before '#SPECTRUM' line")
    fmt = header.values.get("FORMAT", "")
    if "EMSA" not in fmt.upper() and "MSA" not in fmt.upper():
        raise SpectrumError(f"{path}: not an EMSA/MSA file (#FORMAT is {fmt or 'missing'!r})")
    for key in _MSA_REQUIRED:
        if key not in header.values:
            raise SpectrumError(f"{path}: required keyword #{key} is missing")
    if not in_data:
        raise SpectrumError(f"{path}: no '#SPECTRUM' line: the file has no data section")
    npoints_f = _float(header.values["NPOINTS"], path, "#NPOINTS")
    if npoints_f != int(npoints_f) or npoints_f < 1:
        raise SpectrumError(f"{path}: #NPOINTS must be a positive whole number, got {npoints_f}")
    npoints = int(npoints_f)
    ncolumns = int(_float(header.values.get("NCOLUMNS", "1"), path, "#NCOLUMNS"))
    if ncolumns != 1:
        raise SpectrumError(f"{path}: #NCOLUMNS is {ncolumns}; only single spectra are supported")
    datatype = header.values["DATATYPE"].strip().upper()
    if datatype not in ("Y", "XY"):
        raise SpectrumError(f"{path}: #DATATYPE must be Y or XY, got {datatype!r}")
    xunit = header.values.get("XUNITS") or header.units.get("XPERCHAN")
    xperchan_raw = _float(header.values["XPERCHAN"], path, "#XPERCHAN")
    offset_raw = _float(header.values["OFFSET"], path, "#OFFSET")
    metadata: dict[str, str] = {"format": "msa"}
    if xunit is None:
        # No unit: EDS/XRF channels are 1-100 eV wide, so >= 1 means eV (stated in docs).
        xunit = "eV" if xperchan_raw >= 1.0 else "keV"
        metadata["xunits_inferred"] = xunit
    to_kev = _kev_factor(xunit, path, "#XUNITS")
    values: list[float] = []
    xs: list[float] = []
    origin: list[int] = []
    for number, line in data:
        tokens = [t for t in re.split(r"[,\s;]+", line) if t]
        for token in tokens:
            try:
                values.append(float(token))
            except ValueError:
                raise SpectrumError(
                    f"{path}: line {number}: {token!r} in the data is not a number"
                ) from None
            origin.append(number)
    if datatype == "XY":
        if len(values) % 2:
            raise SpectrumError(f"{path}: XY data has an odd number of values ({len(values)})")
        xs, values, origin = values[0::2], values[1::2], origin[1::2]
    if not ended:
        raise SpectrumError(
            f"{path}: truncated: no '#ENDOFDATA' line after {len(values)} of {npoints} points"
        )
    if len(values) != npoints:
        raise SpectrumError(f"{path}: #NPOINTS is {npoints} but the data has {len(values)} points")
    _check_counts(values, path, lambda i: f"line {origin[i]}")
    kev_per_channel = xperchan_raw * to_kev
    offset_kev = offset_raw * to_kev
    if xs:
        expected = offset_kev + kev_per_channel * np.arange(npoints)
        worst = float(np.max(np.abs(np.asarray(xs) * to_kev - expected)))
        if worst > 0.5 * kev_per_channel:
            raise SpectrumError(
                f"{path}: the X column disagrees with #OFFSET/#XPERCHAN by {worst:.4g} keV"
            )
    live = _msa_time(header, "LIVETIME", path)
    real = _msa_time(header, "REALTIME", path)
    if live is None:
        metadata["live_time"] = "missing: real time used" if real else "missing: 1 s assumed"
        live = real or 1.0
    tube_kv = None
    if "BEAMKV" in header.values:
        unit = header.units.get("BEAMKV", "kV")
        if unit.lower() != "kv":
            raise SpectrumError(f"{path}: unknown unit {unit!r} for #BEAMKV (use kV)")
        tube_kv = _float(header.values["BEAMKV"], path, "#BEAMKV")
    for key in ("TITLE", "DATE", "TIME", "OWNER", "SIGNALTYPE", "COMMENT"):
        if header.values.get(key):
            metadata[key.lower()] = header.values[key]
    metadata.update(header.user)
    if unknown:
        metadata["warning"] = f"{path}: unknown EMSA keywords ignored: {', '.join(unknown)}"
    return Spectrum(
        counts=np.asarray(values, dtype=np.float64),
        offset_kev=offset_kev,
        kev_per_channel=kev_per_channel,
        live_time_s=live,
        real_time_s=real,
        tube_kv=tube_kv,
        source=str(path),
        metadata=metadata,
    )


def _msa_time(header: _MsaHeader, key: str, path: Path) -> float | None:
    if key not in header.values:
        return None
    seconds = _seconds(header.values[key], header.units.get(key), path, f"#{key}")
    if seconds <= 0:
        raise SpectrumError(f"{path}: #{key} must be > 0 s, got {seconds}")
    return seconds


def write_msa(spectrum: Spectrum, path: str | Path, *, datatype: str = "Y") -> Path:
    """Write an EMSA/MSA 1.0 file (CRLF, keV calibration); metadata as '##key' keywords."""
    if datatype not in ("Y", "XY"):
        raise ValueError(f"datatype must be 'Y' or 'XY', got {datatype!r}")
    p = Path(path)
    now = datetime.now(UTC)
    rows = [
        ("FORMAT", "EMSA/MAS Spectral Data File"),
        ("VERSION", "1.0"),
        ("TITLE", spectrum.metadata.get("title", spectrum.source)[:64]),
        ("DATE", f"{now.day:02d}-{_MSA_MONTHS[now.month - 1]}-{now.year}"),
        ("TIME", now.strftime("%H:%M")),
        ("OWNER", spectrum.metadata.get("owner", "plant")),
        ("NPOINTS", str(spectrum.n_channels)),
        ("NCOLUMNS", "1"),
        ("XUNITS", "keV"),
        ("YUNITS", "counts"),
        ("DATATYPE", datatype),
        ("XPERCHAN", repr(float(spectrum.kev_per_channel))),
        ("OFFSET", repr(float(spectrum.offset_kev))),
        ("SIGNALTYPE", "XRF"),
        ("LIVETIME  -s", repr(float(spectrum.live_time_s))),
    ]
    if spectrum.real_time_s is not None:
        rows.append(("REALTIME  -s", repr(float(spectrum.real_time_s))))
    if spectrum.tube_kv is not None:
        rows.append(("BEAMKV   -kV", repr(float(spectrum.tube_kv))))
    skip = {"title", "owner", "format", "date", "time", "signaltype", "warning"}
    for key, value in spectrum.metadata.items():
        if key not in skip and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            rows.append((f"#{key}", str(value).replace("\n", " ")))
    lines = [f"#{key:<12}: {value}" for key, value in rows]
    lines.append(f"#{'SPECTRUM':<12}: Spectral Data Starts Here")
    if datatype == "Y":
        lines.extend(f"{_format_count(c)}," for c in spectrum.counts)
    else:
        energies = spectrum.energies()
        lines.extend(
            f"{e!r}, {_format_count(c)}"
            for e, c in zip(energies.tolist(), spectrum.counts, strict=True)
        )
    lines.append(f"#{'ENDOFDATA':<12}: End Of Data and File")
    p.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return p


# --------------------------------------------------------------------------- Amptek .mca

_MCA_SECTION = re.compile(r"^<<\s*(.+?)\s*>>$")


def read_mca(path: str | Path, *, calibration: tuple[float, float] | None = None) -> Spectrum:
    """Read an Amptek .mca file; `calibration` (offset keV, keV/channel) for uncalibrated files."""
    p = Path(path)
    return _parse_mca(_load_text(p), p, calibration)


def _mca_sections(text: str, path: Path) -> dict[str, list[tuple[int, str]]]:
    """Split an Amptek file into its <<SECTION>> blocks (line numbers kept for messages)."""
    sections: dict[str, list[tuple[int, str]]] = {}
    current: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        m = _MCA_SECTION.match(line)
        if m:
            name = m.group(1).upper()
            if name.endswith(" END"):
                current = None
                continue
            if name in sections and name != "END":
                raise SpectrumError(f"{path}: line {number}: section <<{name}>> given twice")
            current = name
            sections[name] = []
            continue
        if current is None:
            raise SpectrumError(f"{path}: line {number}: text outside any <<SECTION>>")
        sections[current].append((number, line))
    return sections


def _mca_keyvalues(lines: list[tuple[int, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for _, line in lines:
        key, sep, value = line.partition(" - ")
        if sep:
            out[key.strip().upper()] = value.strip()
    return out


def _parse_mca(text: str, path: Path, calibration: tuple[float, float] | None) -> Spectrum:
    if not text.lstrip().startswith("<<PMCA SPECTRUM>>"):
        raise SpectrumError(f"{path}: not an Amptek .mca file (no '<<PMCA SPECTRUM>>' first line)")
    sections = _mca_sections(text, path)
    head = _mca_keyvalues(sections["PMCA SPECTRUM"])
    if "DATA" not in sections:
        raise SpectrumError(f"{path}: no <<DATA>> section")
    if "END" not in sections:
        raise SpectrumError(
            f"{path}: truncated: no <<END>> after {len(sections['DATA'])} data lines"
        )
    values: list[float] = []
    origin: list[int] = []
    for number, line in sections["DATA"]:
        try:
            values.append(float(line))
        except ValueError:
            raise SpectrumError(
                f"{path}: line {number}: {line!r} in <<DATA>> is not a number"
            ) from None
        origin.append(number)
    _check_counts(values, path, lambda i: f"line {origin[i]}")
    metadata: dict[str, str] = {"format": "mca"}
    # DppMCA writes <<DP5 CONFIGURATION>> (DP5, PX5, DP5X, DP5G); older firmware <<DPP ...>>.
    config = next((n for n in ("DP5 CONFIGURATION", "DPP CONFIGURATION") if n in sections), None)
    dpp = _mca_dpp(sections[config]) if config else {}
    if "MCAC" in dpp:
        expected = int(_float(dpp["MCAC"], path, f"MCAC in <<{config}>>"))
        if expected != len(values):
            raise SpectrumError(
                f"{path}: <<{config}>> says MCAC={expected} channels but <<DATA>> has {len(values)}"
            )
    for key, value in dpp.items():
        metadata[f"dpp_{key}"] = value
    for number, line in sections.get("DPP STATUS", []):
        key, sep, value = line.partition(":")
        if sep:
            metadata["status_" + re.sub(r"\W+", "_", key.strip()).strip("_").lower()] = (
                value.strip()
            )
        else:
            raise SpectrumError(f"{path}: line {number}: <<DPP STATUS>> line has no ':'")
    extra = _mca_keyvalues(sections.get("PLANT METADATA", []))
    offset, gain, inferred = _mca_calibration(sections, path, calibration)
    if inferred:
        metadata["calibration_unit_inferred"] = inferred
    live = _seconds(head["LIVE_TIME"], None, path, "LIVE_TIME") if "LIVE_TIME" in head else None
    real = _seconds(head["REAL_TIME"], None, path, "REAL_TIME") if "REAL_TIME" in head else None
    if live is None or live <= 0:
        metadata["live_time"] = "missing: real time used" if real else "missing: 1 s assumed"
        live = real or 1.0
    for key in ("TAG", "DESCRIPTION", "GAIN", "START_TIME", "SERIAL_NUMBER"):
        if head.get(key):
            metadata[key.lower()] = head[key]
    tube = extra.pop("TUBE_KV", None)
    metadata.update({k.lower(): v for k, v in extra.items()})
    return Spectrum(
        counts=np.asarray(values, dtype=np.float64),
        offset_kev=offset,
        kev_per_channel=gain,
        live_time_s=live,
        real_time_s=real,
        tube_kv=_float(tube, path, "TUBE_KV") if tube else None,
        source=str(path),
        metadata=metadata,
    )


def _mca_dpp(lines: list[tuple[int, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for _, line in lines:
        for item in line.split(";"):
            key, sep, value = item.partition("=")
            if sep:
                out[key.strip().upper()] = value.strip()
    return out


# Amptek's default calibration LABEL names the axis ("Channel"), not the unit of the energies.
_MCA_UNNAMED_UNITS = frozenset({"", "CHANNEL", "CHANNELS", "ENERGY"})
# Plausible channel widths (EDS/XRF MCAs: 2-200 eV) to tell keV from eV when no unit is named.
_MCA_KEV_PER_CHANNEL = (0.002, 0.2)


def _mca_calibration(
    sections: dict[str, list[tuple[int, str]]], path: Path, given: tuple[float, float] | None
) -> tuple[float, float, str | None]:
    """Fit E = offset + gain * channel through the <<CALIBRATION>> points: (offset keV,
    keV/channel, the unit when it was inferred from the channel width rather than named)."""
    if "CALIBRATION" not in sections:
        if given is None:
            raise SpectrumError(
                f"{path}: no <<CALIBRATION>> section: channel-to-energy calibration missing "
                "(need LABEL - keV and at least two 'channel energy' points, or pass a calibration)"
            )
        return given[0], given[1], None
    lines = sections["CALIBRATION"]
    unit = ""
    channels: list[float] = []
    energies: list[float] = []
    for number, line in lines:
        if line.upper().startswith("LABEL"):
            unit = line.partition("-")[2].strip()
            continue
        parts = line.split()
        if len(parts) != 2:
            raise SpectrumError(
                f"{path}: line {number}: calibration point must be 'channel energy'"
            )
        channels.append(_float(parts[0], path, f"calibration channel on line {number}"))
        energies.append(_float(parts[1], path, f"calibration energy on line {number}"))
    named = unit.upper() not in _MCA_UNNAMED_UNITS
    factor = _kev_factor(unit, path, "<<CALIBRATION>> LABEL") if named else 1.0
    if len(set(channels)) < 2:
        raise SpectrumError(
            f"{path}: <<CALIBRATION>> has {len(set(channels))} distinct point(s); "
            "need at least two 'channel energy' points"
        )
    gain, offset = np.polyfit(np.asarray(channels), np.asarray(energies) * factor, 1)
    if gain <= 0:
        raise SpectrumError(f"{path}: <<CALIBRATION>> points give a non-positive keV/channel")
    if named:
        return float(offset), float(gain), None
    lo, hi = _MCA_KEV_PER_CHANNEL
    for inferred, scale in (("keV", 1.0), ("eV", 1e-3)):
        if lo <= gain * scale <= hi:
            return float(offset * scale), float(gain * scale), inferred
    raise SpectrumError(
        f"{path}: <<CALIBRATION>> LABEL - {unit or '(none)'} names no energy unit and the points "
        f"give {gain:.4g} per channel, neither 2-200 eV nor 0.002-0.2 keV: no energy calibration"
    )


def write_mca(spectrum: Spectrum, path: str | Path) -> Path:
    """Write an Amptek PMCA .mca file with a two-point <<CALIBRATION>> and our metadata."""
    p = Path(path)
    n = spectrum.n_channels
    real = spectrum.real_time_s if spectrum.real_time_s is not None else spectrum.live_time_s
    lo, hi = 0, n - 1
    lines = [
        "<<PMCA SPECTRUM>>",
        "TAG - live_data",
        f"DESCRIPTION - {spectrum.metadata.get('title', spectrum.source)}",
        f"GAIN - {max(0, min(6, round(math.log2(max(n, 256) / 256))))}",
        "THRESHOLD - 0",
        "LIVE_MODE - 0",
        f"PRESET_TIME - {spectrum.live_time_s!r}",
        f"LIVE_TIME - {float(spectrum.live_time_s)!r}",
        f"REAL_TIME - {float(real)!r}",
        f"START_TIME - {datetime.now(UTC).strftime('%m/%d/%Y %H:%M:%S')}",
        f"SERIAL_NUMBER - {spectrum.metadata.get('serial_number', '0')}",
        "<<CALIBRATION>>",
        "LABEL - keV",
        f"{lo} {spectrum.offset_kev + spectrum.kev_per_channel * lo!r}",
        f"{hi} {spectrum.offset_kev + spectrum.kev_per_channel * hi!r}",
        "<<DATA>>",
        *(_format_count(c) for c in spectrum.counts),
        "<<END>>",
        # DppMCA's sections: the DP5 text configuration and the status at the end
        "<<DP5 CONFIGURATION>>",
        f"MCAC={n};    MCA/MCS Channels",
        *(
            f"{k.removeprefix('dpp_')}={v};"
            for k, v in spectrum.metadata.items()
            if k.startswith("dpp_") and k != "dpp_MCAC"
        ),
        "<<DP5 CONFIGURATION END>>",
    ]
    status = {k: v for k, v in spectrum.metadata.items() if k.startswith("status_")}
    if status:
        lines.append("<<DPP STATUS>>")
        lines.extend(f"{_status_label(k)}: {v}" for k, v in status.items())
        lines.append("<<DPP STATUS END>>")
    extra = {k: v for k, v in spectrum.metadata.items() if not k.startswith(("dpp_", "status_"))}
    extra = {k: v for k, v in extra.items() if k not in {"format", "title", "serial_number"}}
    if spectrum.tube_kv is not None or extra:
        lines.append("<<PLANT METADATA>>")
        if spectrum.tube_kv is not None:
            lines.append(f"TUBE_KV - {float(spectrum.tube_kv)!r}")
        lines.extend(f"{k.upper()} - {str(v).replace(chr(10), ' ')}" for k, v in extra.items())
        lines.append("<<PLANT METADATA END>>")
    p.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return p


def _status_label(key: str) -> str:
    """status_fast_count -> 'Fast Count' (read_mca keys <<DPP STATUS>> lines the other way)."""
    return key.removeprefix("status_").replace("_", " ").title()


# --------------------------------------------------------------------------- CSV


def read_csv(path: str | Path) -> Spectrum:
    """Read `energy_keV,counts` (or energy_eV) CSV; '# key: value' comment lines are metadata."""
    p = Path(path)
    return _parse_csv(_load_text(p), p)


def _parse_csv(text: str, p: Path) -> Spectrum:
    metadata: dict[str, str] = {"format": "csv"}
    energies: list[float] = []
    values: list[float] = []
    origin: list[int] = []
    factor: float | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep and key.strip():
                metadata[key.strip()] = value.strip()
            continue
        cells = [c.strip() for c in line.split(",")]
        if factor is None:
            header = [c.lower() for c in cells]
            if len(header) != 2 or header[1] != "counts" or not header[0].startswith("energy_"):
                raise SpectrumError(
                    f"{p}: line {number}: expected the header 'energy_keV,counts', got {line!r}"
                )
            factor = _kev_factor(header[0].removeprefix("energy_"), p, "the energy column")
            continue
        if len(cells) != 2:
            raise SpectrumError(f"{p}: line {number}: expected 2 columns, got {len(cells)}")
        energies.append(_float(cells[0], p, f"energy on line {number}") * factor)
        try:
            values.append(float(cells[1]))
        except ValueError:
            raise SpectrumError(
                f"{p}: line {number}: counts {cells[1]!r} is not a number"
            ) from None
        origin.append(number)
    if factor is None or not values:
        raise SpectrumError(f"{p}: no data rows after the header")
    if len(values) < 2:
        raise SpectrumError(f"{p}: only {len(values)} data row(s)")
    _check_counts(values, p, lambda i: f"line {origin[i]}")
    x = np.asarray(energies)
    idx = np.arange(x.size)
    gain, offset = np.polyfit(idx, x, 1)
    worst = float(np.max(np.abs(offset + gain * idx - x)))
    if gain <= 0 or worst > 0.01 * abs(gain):
        raise SpectrumError(f"{p}: energies are not evenly spaced and rising (off by {worst:.3g})")
    live = (
        _float(metadata.pop("live_time_s"), p, "live_time_s") if "live_time_s" in metadata else None
    )
    real = (
        _float(metadata.pop("real_time_s"), p, "real_time_s") if "real_time_s" in metadata else None
    )
    tube = _float(metadata.pop("tube_kv"), p, "tube_kv") if "tube_kv" in metadata else None
    if live is None:
        metadata["live_time"] = "missing: real time used" if real else "missing: 1 s assumed"
        live = real or 1.0
    return Spectrum(
        counts=np.asarray(values, dtype=np.float64),
        offset_kev=float(offset),
        kev_per_channel=float(gain),
        live_time_s=live,
        real_time_s=real,
        tube_kv=tube,
        source=str(p),
        metadata=metadata,
    )


def write_csv(spectrum: Spectrum, path: str | Path) -> Path:
    """Write `energy_keV,counts` with live/real time, tube kV and metadata as '# key: value'."""
    p = Path(path)
    lines = [f"# live_time_s: {float(spectrum.live_time_s)!r}"]
    if spectrum.real_time_s is not None:
        lines.append(f"# real_time_s: {float(spectrum.real_time_s)!r}")
    if spectrum.tube_kv is not None:
        lines.append(f"# tube_kv: {float(spectrum.tube_kv)!r}")
    lines.extend(
        f"# {k}: {str(v).replace(chr(10), ' ')}"
        for k, v in spectrum.metadata.items()
        if k != "format" and ":" not in k
    )
    lines.append("energy_keV,counts")
    lines.extend(
        f"{e!r},{_format_count(c)}"
        for e, c in zip(spectrum.energies().tolist(), spectrum.counts, strict=True)
    )
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


# --------------------------------------------------------------------------- dispatch

# --------------------------------------------------------------------------- vendor formats

# Read through rosettasciio (the kept reader), never by our own parsers: suffix -> its plugin.
VENDOR_SUFFIXES = {".spx": "bruker", ".spc": "edax"}


def _nested(tree: dict[str, object], key: str) -> object | None:
    """First value of `key` anywhere in a nested metadata dict (depth first)."""
    for k, v in tree.items():
        if k == key:
            return v
        if isinstance(v, dict):
            found = _nested(v, key)
            if found is not None:
                return found
    return None


def read_vendor(path: str | Path) -> Spectrum:
    """Read a single-spectrum vendor file (Bruker .spx, EDAX .spc) through rosettasciio."""
    p = Path(path)
    _check_size(p)
    plugin = VENDOR_SUFFIXES.get(p.suffix.lower(), "bruker")
    import importlib

    try:
        reader = importlib.import_module(f"rsciio.{plugin}").file_reader
        signals = reader(str(p))
    except Exception as exc:  # any reader failure is one line about this file
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise SpectrumError(f"{p}: not a readable {plugin} spectrum file ({detail})") from None
    if len(signals) != 1 or np.asarray(signals[0]["data"]).ndim != 1:
        shapes = [np.asarray(sig["data"]).shape for sig in signals]
        raise SpectrumError(f"{p}: holds {shapes}, not one spectrum (a map or a series?)")
    signal = signals[0]
    axis = signal["axes"][-1]
    to_kev = _kev_factor(str(axis.get("units") or "keV"), p, "the energy axis")
    meta = signal.get("metadata", {})
    live = _nested(meta, "live_time")
    real = _nested(meta, "real_time")
    beam = _nested(meta, "beam_energy")
    metadata = {"format": plugin}
    if not isinstance(live, int | float) or live <= 0:
        metadata["live_time"] = "missing: real time used" if real else "missing: 1 s assumed"
        live = real if isinstance(real, int | float) and real > 0 else 1.0
    title = _nested(meta, "title")
    if title:
        metadata["title"] = str(title)
    return Spectrum(
        counts=np.asarray(signal["data"], dtype=np.float64),
        offset_kev=float(axis["offset"]) * to_kev,
        kev_per_channel=float(axis["scale"]) * to_kev,
        live_time_s=float(live),
        real_time_s=float(real) if isinstance(real, int | float) else None,
        tube_kv=float(beam) if isinstance(beam, int | float) else None,
        source=str(p),
        metadata=metadata,
    )


# --------------------------------------------------------------------------- dispatch

FORMATS = ("msa", "mca", "csv")
_SUFFIXES = {".msa": "msa", ".emsa": "msa", ".ems": "msa", ".mca": "mca", ".csv": "csv"}


def detect_format(path: str | Path, text: str | None = None) -> str:
    """Which format a file is in: by content first, then by suffix."""
    p = Path(path)
    head = (text if text is not None else _load_text(p)).lstrip()[:400].upper()
    if head.startswith("<<PMCA"):
        return "mca"
    if head.startswith("#FORMAT") or "EMSA/MAS" in head:
        return "msa"
    if "ENERGY_KEV" in head or "ENERGY_EV" in head:
        return "csv"
    if p.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[p.suffix.lower()]
    raise SpectrumError(
        f"{p}: not a recognised spectrum file (expected EMSA/MSA, Amptek .mca or "
        "CSV 'energy_keV,counts')"
    )


def read_spectrum(path: str | Path, *, calibration: tuple[float, float] | None = None) -> Spectrum:
    """Read any supported spectrum file; the format comes from its content or suffix."""
    p = Path(path)
    if p.suffix.lower() in VENDOR_SUFFIXES:
        return read_vendor(p)
    text = _load_text(p)
    if "<TRTSPECTRUM" in text[:2000].upper():  # a Bruker .spx under another name
        return read_vendor(p)
    fmt = detect_format(p, text)
    if fmt == "msa":
        return _parse_msa(text, p)
    if fmt == "mca":
        return _parse_mca(text, p, calibration)
    return _parse_csv(text, p)


def write_spectrum(spectrum: Spectrum, path: str | Path, fmt: str | None = None) -> Path:
    """Write a spectrum in `fmt` (msa, mca, csv), or the format its suffix names."""
    p = Path(path)
    chosen = fmt or _SUFFIXES.get(p.suffix.lower())
    writers = {"msa": write_msa, "mca": write_mca, "csv": write_csv}
    if chosen not in writers:
        raise ValueError(f"{p}: unknown spectrum format {chosen!r}; use one of {FORMATS}")
    return writers[chosen](spectrum, p)
