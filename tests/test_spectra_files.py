"""Spectrum files: round trips, a file written by another program, real-world variants and
every malformed case rejected with a message naming the file and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivers.spectra import (
    Spectrum,
    SpectrumError,
    read_mca,
    read_msa,
    read_spectrum,
    write_msa,
    write_spectrum,
)


def _spectrum() -> Spectrum:
    rng = np.random.default_rng(5)
    counts = rng.poisson(50 + 2000 * np.exp(-0.5 * ((np.arange(1024) - 370) / 4) ** 2))
    return Spectrum(
        counts=counts.astype(float),
        offset_kev=-0.05,
        kev_per_channel=0.02,
        live_time_s=2.5,
        real_time_s=2.75,
        tube_kv=50.0,
        source="sim",
        metadata={"instrument": "bench_sdd_2048"},
    )


@pytest.mark.parametrize("fmt", ["msa", "mca", "csv"])
def test_round_trip_keeps_counts_calibration_times_and_metadata(tmp_path: Path, fmt: str) -> None:
    original = _spectrum()
    path = write_spectrum(original, tmp_path / f"s.{fmt}")
    back = read_spectrum(path)
    assert np.array_equal(back.counts, original.counts)
    assert back.offset_kev == pytest.approx(original.offset_kev, abs=1e-9)
    assert back.kev_per_channel == pytest.approx(original.kev_per_channel, rel=1e-12)
    assert back.live_time_s == original.live_time_s
    assert back.real_time_s == original.real_time_s
    assert back.tube_kv == original.tube_kv
    assert back.metadata["instrument"] == "bench_sdd_2048"
    assert back.metadata["format"] == fmt


def test_msa_xy_round_trip_and_fractional_counts(tmp_path: Path) -> None:
    original = _spectrum()
    original.counts = original.counts / 3.0
    back = read_msa(write_msa(original, tmp_path / "xy.msa", datatype="XY"))
    assert np.array_equal(back.counts, original.counts)


def test_reads_msa_written_by_rosettasciio(tmp_path: Path) -> None:
    from rsciio.msa import file_writer

    counts = np.arange(512, dtype=float) % 97
    signal = {
        "data": counts,
        "axes": [
            {
                "size": 512,
                "scale": 20.0,
                "offset": -100.0,
                "units": "eV",
                "name": "Energy",
                "navigate": False,
            }
        ],
        "metadata": {
            "General": {"title": "foreign"},
            "Signal": {"signal_type": "EDS_SEM"},
            "Acquisition_instrument": {
                "SEM": {"beam_energy": 40.0, "Detector": {"EDS": {"live_time": 12.5}}}
            },
        },
        "original_metadata": {},
    }
    path = tmp_path / "foreign.msa"
    file_writer(str(path), signal)
    s = read_spectrum(path)
    assert np.array_equal(s.counts, counts)
    assert s.offset_kev == pytest.approx(-0.1)
    assert s.kev_per_channel == pytest.approx(0.02)
    assert s.live_time_s == pytest.approx(12.5)
    assert s.tube_kv == pytest.approx(40.0)


def test_rosettasciio_reads_our_msa(tmp_path: Path) -> None:
    from rsciio.msa import file_reader

    original = _spectrum()
    (loaded,) = file_reader(str(write_msa(original, tmp_path / "ours.msa")))
    axis = loaded["axes"][0]
    assert np.array_equal(loaded["data"], original.counts)
    assert axis["scale"] == pytest.approx(0.02)
    assert axis["offset"] == pytest.approx(-0.05)


def test_msa_real_world_variants(tmp_path: Path) -> None:
    """CRLF, text after #SPECTRUM/#ENDOFDATA, unit-suffixed keywords, eV, 5 values a line."""
    values = list(range(20))
    rows = [", ".join(str(v) for v in values[i : i + 5]) + "," for i in range(0, 20, 5)]
    text = "\r\n".join(
        [
            "#FORMAT      : EMSA/MAS Spectral Data File",
            "#VERSION     : 1.0",
            "#TITLE       : Vendor export",
            "#NPOINTS     : 20.",
            "#NCOLUMNS    : 1.",
            "#XUNITS      : eV",
            "#DATATYPE    : Y",
            "#XPERCHAN    : 10.0",
            "#OFFSET      : -20.0",
            "#SIGNALTYPE  : XRF",
            "#LIVETIME  -s: 500.5",
            "#REALTIME  -ms: 600000",
            "#BEAMKV   -kV: 45.0",
            "#SPECTRUM    : Spectral Data Starts Here",
            *rows,
            "#ENDOFDATA   : End Of Data and File",
            "",
        ]
    )
    path = tmp_path / "vendor.txt"
    path.write_bytes(text.encode("latin-1"))
    s = read_spectrum(path)
    assert s.counts.tolist() == values
    assert s.kev_per_channel == pytest.approx(0.010)
    assert s.offset_kev == pytest.approx(-0.020)
    assert s.live_time_s == pytest.approx(500.5)
    assert s.real_time_s == pytest.approx(600.0)
    assert s.tube_kv == 45.0


AMPTEK = """<<PMCA SPECTRUM>>\r
TAG - live_data\r
DESCRIPTION - X-123SDD\r
GAIN - 2\r
LIVE_TIME - 9.5\r
REAL_TIME - 10.0\r
SERIAL_NUMBER - 12345\r
<<CALIBRATION>>\r
LABEL - keV\r
{cal}<<ROI>>\r
100 120\r
<<DATA>>\r
{data}<<END>>\r
<<DPP CONFIGURATION>>\r
RESC=Y;    Reset Configuration\r
MCAC={mcac};    MCA/MCS Channels\r
<<DPP CONFIGURATION END>>\r
<<DPP STATUS>>\r
Device Type: DP5\r
Fast Count: 12345\r
<<DPP STATUS END>>\r
"""


def _amptek(
    cal: str = "10 0.5\r\n100 5.0\r\n1000 50.0\r\n", n: int = 1024, mcac: int = 1024
) -> str:
    return AMPTEK.format(cal=cal, data="".join(f"{i % 7}\r\n" for i in range(n)), mcac=mcac)


def test_amptek_with_dpp_sections_fits_calibration_points(tmp_path: Path) -> None:
    path = tmp_path / "x123.mca"
    path.write_text(_amptek(), encoding="utf-8", newline="")
    s = read_spectrum(path)
    assert s.n_channels == 1024
    assert s.kev_per_channel == pytest.approx(0.05)
    assert s.offset_kev == pytest.approx(0.0, abs=1e-9)
    assert s.live_time_s == 9.5
    assert s.metadata["status_device_type"] == "DP5"


def test_amptek_without_calibration_needs_one_given(tmp_path: Path) -> None:
    path = tmp_path / "uncal.mca"
    path.write_text(
        _amptek().replace(
            "<<CALIBRATION>>\r\nLABEL - keV\r\n10 0.5\r\n100 5.0\r\n1000 50.0\r\n", ""
        ),
        encoding="utf-8",
    )
    with pytest.raises(SpectrumError, match=r"uncal\.mca: no <<CALIBRATION>> section"):
        read_mca(path)
    s = read_mca(path, calibration=(0.01, 0.02))
    assert (s.offset_kev, s.kev_per_channel) == (0.01, 0.02)


MSA_OK = [
    "#FORMAT      : EMSA/MAS Spectral Data File",
    "#VERSION     : 1.0",
    "#NPOINTS     : 20",
    "#NCOLUMNS    : 1",
    "#XUNITS      : keV",
    "#DATATYPE    : Y",
    "#XPERCHAN    : 0.01",
    "#OFFSET      : 0.0",
    "#SPECTRUM    : Spectral Data Starts Here",
    *[f"{i}," for i in range(20)],
    "#ENDOFDATA   : End Of Data and File",
]


def _msa(**changes: str | None) -> str:
    lines = []
    for line in MSA_OK:
        key = line[1:].split(":")[0].strip() if line.startswith("#") else None
        if key in changes:
            if changes[key] is not None:
                lines.append(f"#{key:<12}: {changes[key]}")
            continue
        lines.append(line)
    return "\r\n".join(lines)


MALFORMED = {
    "missing_npoints": ("a.msa", _msa(NPOINTS=None), r"#NPOINTS is missing"),
    "inconsistent_npoints": ("a.msa", _msa(NPOINTS="25"), r"#NPOINTS is 25 but the data has 20"),
    "negative_counts": ("a.msa", _msa().replace("\r\n7,", "\r\n-7,"), r"channel 7 .* negative"),
    "nan_counts": ("a.msa", _msa().replace("\r\n7,", "\r\nnan,"), r"channel 7 .* not a finite"),
    "unknown_units": ("a.msa", _msa(XUNITS="nm"), r"unknown energy unit 'nm'"),
    "truncated_msa": ("a.msa", _msa(ENDOFDATA=None), r"truncated: no '#ENDOFDATA'"),
    "bad_datatype": ("a.msa", _msa(DATATYPE="XYZ"), r"#DATATYPE must be Y or XY"),
    "text_in_data": ("a.msa", _msa().replace("\r\n7,", "\r\nseven,"), r"'seven' .* not a number"),
    "mca_truncated": ("a.mca", _amptek().split("<<END>>")[0], r"truncated: no <<END>>"),
    "mca_one_calibration_point": ("a.mca", _amptek(cal="10 0.5\r\n"), r"need at least two"),
    "mca_channel_count": ("a.mca", _amptek(mcac=2048), r"MCAC=2048 .* <<DATA>> has 1024"),
    "mca_unknown_cal_unit": (
        "a.mca",
        _amptek().replace("LABEL - keV", "LABEL - nm"),
        r"unknown energy unit 'nm'",
    ),
    "csv_bad_header": ("a.csv", "energy,cts\n1,2\n", r"expected the header 'energy_keV,counts'"),
    "csv_uneven": (
        "a.csv",
        "energy_keV,counts\n"
        + "".join(f"{e},{i}\n" for i, e in enumerate([0.0, 0.01, 0.02, 0.05] * 5)),
        r"not evenly spaced",
    ),
    "empty": ("a.msa", "", r"file is empty"),
    "unknown_format": ("a.dat", "hello\nworld\n", r"not a recognised spectrum file"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_is_rejected_naming_file_and_problem(tmp_path: Path, case: str) -> None:
    name, text, message = MALFORMED[case]
    path = tmp_path / f"{case}_{name}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpectrumError, match=message) as info:
        read_spectrum(path)
    assert str(path) in str(info.value)


def test_binary_garbage_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbage.msa"
    path.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)))
    with pytest.raises(SpectrumError, match=r"garbage\.msa: binary content"):
        read_spectrum(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SpectrumError, match=r"nothere\.msa: cannot read file"):
        read_spectrum(tmp_path / "nothere.msa")
