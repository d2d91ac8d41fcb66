"""Spectra from real instruments (public files, none of a battery: tests/data/PUBLIC_DATA.md) and
the files real instrument software writes: read with the right energy scale, and never read as a
chemistry."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from publicdata import public_file

from drivers.sim import xrfphysics as X
from drivers.sim.cells import CellFormat, CellTruth
from drivers.spectra import MAX_FILE_BYTES, SpectrumError, read_spectrum
from models.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
# Public, not in the repository: read from $PLANT_PUBLIC_DATA/real_spectra (PUBLIC_DATA.md).
REAL_NAMES = sorted(
    [
        "amptek_px5_minix_25kV.mca",
        "amptek_px5_minix_au_20kV.mca",
        "bruker_m6_jetstream_file_example.spx",
        "bruker_nano.spx",
        "extracted_from_bcf.spx",
    ]
)


def real(name: str) -> Path:
    return public_file(f"real_spectra/{name}")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    (d / "plant.toml").write_text(f'[plant]\ndata_dir = "{tmp_path / "var"}"\n')
    (d / "routing.toml").write_text((ROOT / "config" / "routing.toml").read_text())
    return d


def test_every_public_real_spectrum_is_read_and_refused_as_out_of_domain(config: Path) -> None:
    """Ca/P/Sr micro-XRF, stainless steel SEM-EDS, Au-anode tube spectra ...: all UNKNOWN."""
    files = [real(name) for name in REAL_NAMES]
    assert len(files) >= 5
    proc = subprocess.run(
        [sys.executable, "-m", "plant.cli", "--config", str(config), "classify", "--json"]
        + [str(p) for p in files],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["input"] for r in rows] == [str(p) for p in files]
    for row in rows:
        assert set(row) == {"input", "kind", "chemistry", "confidence", "route", "reason"}
        assert (row["chemistry"], row["route"], row["confidence"]) == ("UNKNOWN", "quarantine", 0)
        assert row["reason"].startswith("out_of_domain: "), row
    by_name = {Path(r["input"]).name: r["reason"] for r in rows}
    assert "Ca K" in by_name["bruker_m6_jetstream_file_example.spx"]
    assert "Au L" in by_name["amptek_px5_minix_au_20kV.mca"]


def test_amptek_dppmca_file_calibrated_from_its_channel_energy_points() -> None:
    s = read_spectrum(real("amptek_px5_minix_au_20kV.mca"))
    assert s.n_channels == 2048
    for channel, kev in ((552.31, 5.9), (607.2, 6.49), (1299.82, 13.95), (1651.47, 17.75)):
        assert abs(s.offset_kev + s.kev_per_channel * channel - kev) < 0.05
    assert s.metadata["calibration_unit_inferred"] == "keV"
    assert s.metadata["dpp_MCAC"] == "2048"
    assert s.metadata["status_device_type"] == "PX5"
    assert s.live_time_s == pytest.approx(8994.994673)


# Our own DppMCA file, laid out as the PX5 one above (`LABEL - Channel` points in keV,
# <<ROI>>, <<DP5 CONFIGURATION>>, <<DPP STATUS>>, CRLF line ends); the counts are made up.
DPPMCA = (
    "<<PMCA SPECTRUM>>\r\nTAG - live_data\r\nDESCRIPTION - \r\nGAIN - 3\r\nTHRESHOLD - 0\r\n"
    "LIVE_MODE - 0\r\nPRESET_TIME - 0\r\nLIVE_TIME - 120.5\r\nREAL_TIME - 123.25\r\n"
    "START_TIME - 01/02/2025 10:00:00\r\nSERIAL_NUMBER - 0\r\n"
    "<<CALIBRATION>>\r\nLABEL - Channel\r\n552.31 5.9\r\n607.2 6.49\r\n1299.82 13.95\r\n"
    "1651.47 17.75\r\n<<ROI>>\r\n150 250\r\n<<DATA>>\r\n{data}<<END>>\r\n"
    "<<DP5 CONFIGURATION>>\r\nRESC=Y;    Reset Configuration\r\n"
    "MCAC=2048;    MCA/MCS Channels\r\n<<DP5 CONFIGURATION END>>\r\n"
    "<<DPP STATUS>>\r\nDevice Type: PX5\r\nSerial Number: 1\r\nFirmware: 6.08  Build:  6\r\n"
    "Dead Time: 2.78%\r\n<<DPP STATUS END>>\r\n"
)


def test_amptek_dppmca_file_calibrated_from_its_channel_energy_points_in_our_own_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "own_px5.mca"
    path.write_bytes(DPPMCA.format(data="".join(f"{i % 97}\r\n" for i in range(2048))).encode())
    s = read_spectrum(path)
    assert s.n_channels == 2048
    for channel, kev in ((552.31, 5.9), (607.2, 6.49), (1299.82, 13.95), (1651.47, 17.75)):
        assert abs(s.offset_kev + s.kev_per_channel * channel - kev) < 0.05
    assert s.metadata["calibration_unit_inferred"] == "keV"
    assert s.metadata["dpp_MCAC"] == "2048"
    assert s.metadata["status_device_type"] == "PX5"
    assert s.live_time_s == pytest.approx(120.5)


AMPTEK = (
    "<<PMCA SPECTRUM>>\nTAG - live_data\nLIVE_TIME - 10.0\nREAL_TIME - 10.5\n"
    "<<CALIBRATION>>\nLABEL - Channel\n{cal}<<DATA>>\n{data}<<END>>\n"
    "<<DP5 CONFIGURATION>>\nMCAC=64;    MCA/MCS Channels\n<<DP5 CONFIGURATION END>>\n"
)


def test_amptek_points_in_ev_are_recognised_and_channel_numbers_never_taken_as_energy(
    tmp_path: Path,
) -> None:
    data = "".join(f"{i}\n" for i in range(64))
    ev = tmp_path / "ev.mca"
    ev.write_text(AMPTEK.format(cal="10 200\n60 1200\n", data=data))
    s = read_spectrum(ev)
    assert (s.kev_per_channel, s.offset_kev) == pytest.approx((0.02, 0.0), abs=1e-9)
    identity = tmp_path / "identity.mca"
    identity.write_text(AMPTEK.format(cal="0 0\n63 63\n", data=data))
    with pytest.raises(SpectrumError, match="no energy calibration") as info:
        read_spectrum(identity)
    assert str(identity) in str(info.value) and "\n" not in str(info.value)
    missing = tmp_path / "missing.mca"
    missing.write_text(AMPTEK.format(cal="", data=data).replace("<<CALIBRATION>>\n", ""))
    missing.write_text(missing.read_text().replace("LABEL - Channel\n", ""))
    with pytest.raises(SpectrumError, match="calibration missing"):
        read_spectrum(missing)


def _emsa(header: str, data: str) -> str:
    return (
        "#FORMAT      : EMSA/MAS Spectral Data File\r\n#VERSION     : 1.0\r\n"
        f"#TITLE       : steel\r\n#NPOINTS     : 64.\r\n#NCOLUMNS    : 1.\r\n{header}"
        f"#SPECTRUM    : Spectral Data Starts Here\r\n{data}#ENDOFDATA   : \r\n"
    )


def test_emsa_as_oxford_bruker_and_jeol_software_write_it(tmp_path: Path) -> None:
    counts = list(range(64))
    oxford = tmp_path / "oxford.msa"
    oxford.write_text(
        _emsa(
            "#XUNITS      : keV\r\n#DATATYPE    : Y\r\n"
            "#XPERCHAN    : 0.01\r\n#OFFSET      : -0.2\r\n"
            "#XPOSITION mm: 12.5\r\n#YPOSITION mm: -3.0\r\n#OXINSTLABEL : 1, 2\r\n"
            "#OXINSTELEMS : 26,28\r\n#LIVETIME  -s: 30.0\r\n",
            "".join(f"{c},\r\n" for c in counts),
        )
    )
    s = read_spectrum(oxford)
    assert (s.offset_kev, s.kev_per_channel, s.live_time_s) == (-0.2, 0.01, 30.0)
    # Unknown keywords: tolerated, all named in one warning line.
    assert s.metadata["warning"].count("\n") == 0
    assert "#OXINSTLABEL" in s.metadata["warning"] and "#OXINSTELEMS" in s.metadata["warning"]
    bruker = tmp_path / "bruker.msa"
    bruker.write_text(
        _emsa(
            "#XUNITS      : eV\r\n#DATATYPE    : XY\r\n"
            "#XPERCHAN    : 20.0\r\n#OFFSET      : -476.6\r\n"
            "#XLABEL      : Energy\r\n#XLABEL      : keV\r\n",
            "".join(f"{-476.6 + 20.0 * i:.1f}, {c}\r\n" for i, c in enumerate(counts)),
        )
    )
    s = read_spectrum(bruker)
    assert (s.offset_kev, s.kev_per_channel) == pytest.approx((-0.4766, 0.02))
    assert "warning" not in s.metadata
    assert s.counts.tolist() == counts


def test_bruker_spx_through_rosettasciio() -> None:
    s = read_spectrum(real("bruker_m6_jetstream_file_example.spx"))
    assert s.n_channels == 4096
    assert (s.offset_kev, s.kev_per_channel) == pytest.approx((-0.95550444, 0.009999))
    assert (s.live_time_s, s.tube_kv) == pytest.approx((28.046, 50.0))


def test_oversize_file_is_refused_in_one_line_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "cube.msa"
    with big.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: no memory, no disk
    with pytest.raises(SpectrumError, match=r"over the 20 MB limit") as info:
        read_spectrum(big)
    assert str(big) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("chemistry", ["NiCd", "NiMH"])
def test_nicd_nimh_in_steel_cans_named_by_their_heavy_k_lines(chemistry: str) -> None:
    """A 50 kV inline head, 6 s: the Cd K / La-Ce K lines pass the can and name the cell.
    (5 s until the simulator computed secondary fluorescence: a profile's count rate is that of
    an opened NMC622 cell, whose Mn K lines it raised, so every other cell got fewer counts and
    3 of 20 canned NiCd cells saw Cd K at 2.6-2.9 sigma, under the 3 sigma that names them.)"""
    clf = Registry(Path("/nonexistent-registry")).active_model().classifier
    profile = X.PROFILES["inline_sdd_4096"]
    spectra = [
        X.simulate_cell(
            CellTruth.bare(chemistry, CellFormat.steel_can, i),
            profile,
            6.0,
            np.random.default_rng(i),
        )
        for i in range(20)
    ]
    answers = Counter(r.chemistry for r in clf.predict_batch(spectra))
    assert answers[chemistry] >= 18, answers
    assert set(answers) <= {chemistry, "UNKNOWN"}, answers
