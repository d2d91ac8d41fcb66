"""The DP5 packet codec against the byte sequences of Amptek's Programmer's Guide, and a DP5
spectrum written to an .mca that reads back as DppMCA's own files do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from publicdata import public_file

from drivers.dp5 import (
    ACK_TEXT,
    CHANNELS,
    REQ_ENABLE,
    REQ_SPECTRUM_STATUS,
    REQ_SPECTRUM_STATUS_CLEAR,
    REQ_STATUS,
    Calibration,
    Dp5AckError,
    Dp5Client,
    Dp5Status,
    Packet,
    PacketError,
    ack,
    checksum,
    config_text,
    decode,
    encode,
    parse_config,
    parse_spectrum,
    spectrum_packet,
)
from drivers.spectra import Spectrum, read_mca, write_mca

# The guide's example: a status request.
STATUS_REQUEST = bytes.fromhex("F5 FA 01 01 00 00 FE 0F")


def test_status_request_is_the_guides_byte_sequence() -> None:
    assert encode(REQ_STATUS) == STATUS_REQUEST
    assert decode(STATUS_REQUEST) == Packet(1, 1, b"")
    # sum of F5 FA 02 03 = 0x1F4 -> FE0C; of F5 FA F0 02 = 0x2E1 -> FD1F; ACK OK 0x2EE -> FD12
    assert encode(REQ_SPECTRUM_STATUS) == bytes.fromhex("F5 FA 02 03 00 00 FE 0C")
    assert encode(REQ_SPECTRUM_STATUS_CLEAR) == bytes.fromhex("F5 FA 02 04 00 00 FE 0B")
    assert encode(REQ_ENABLE) == bytes.fromhex("F5 FA F0 02 00 00 FD 1F")
    assert ack(0) == bytes.fromhex("F5 FA FF 00 00 00 FD 12")


def test_checksum_is_the_twos_complement_of_the_byte_sum() -> None:
    packet = encode((0x20, 0x02), b"PRET=0.05;MCAC=2048;")
    assert (sum(packet[:-2]) + int.from_bytes(packet[-2:], "big")) & 0xFFFF == 0
    assert checksum(b"\xf5\xfa\x01\x01\x00\x00") == 0xFE0F
    spectrum = bytes(range(256)) * 48  # numpy sums long packets: the same two's complement
    assert checksum(spectrum) == -sum(spectrum) & 0xFFFF


def test_status_reply_fields_where_the_guide_puts_them() -> None:
    raw = bytearray(64)
    raw[0:4] = (100_000).to_bytes(4, "little")  # fast count
    raw[4:8] = (90_000).to_bytes(4, "little")  # slow count
    raw[12] = 50  # accumulation time: 50 ms ...
    raw[13:16] = (12).to_bytes(3, "little")  # ... + 12 x 100 ms
    raw[20:24] = (1_260).to_bytes(4, "little")  # real time, ms
    raw[24] = 0x68  # firmware 6.08
    raw[26:30] = (2524).to_bytes(4, "little")  # serial number
    raw[30:32] = (-260).to_bytes(2, "big", signed=True)  # HV, 0.5 V per count: -130 V
    raw[32:34] = (2250).to_bytes(2, "big")  # detector, 0.1 K per count: 225.0 K
    raw[34] = 29  # board, deg C
    raw[35] = 0x80 | 0x02  # preset time reached, configured; MCA disabled
    raw[39] = 1  # PX5
    reply = encode((0x80, 0x01), bytes(raw))
    status = Dp5Status.decode(decode(reply).data)
    assert (status.fast_count, status.slow_count) == (100_000, 90_000)
    assert status.acc_time_s == pytest.approx(1.25)
    assert status.real_time_s == pytest.approx(1.26)
    assert status.dead_time == pytest.approx(0.10)
    assert status.live_time_s == pytest.approx(1.125)
    assert status.hv_v == -130.0 and status.detector_temp_k == pytest.approx(225.0)
    assert status.serial == 2524 and status.board_temp_c == 29 and status.device == "PX5"
    assert status.preset_time_reached and not status.mca_enabled
    assert Dp5Status.decode(status.encode()) == status


@pytest.mark.parametrize("n", CHANNELS)
@pytest.mark.parametrize("with_status", [False, True])
def test_spectrum_reply_of_every_channel_count(n: int, with_status: bool) -> None:
    counts = (np.arange(n, dtype=np.float64) * 4099) % 2**24  # > 2^16: the third byte counts
    status = Dp5Status(fast_count=5, slow_count=4, acc_time_s=0.05) if with_status else None
    raw = spectrum_packet(counts, status)
    pid2 = 2 * CHANNELS.index(n) + 1 + int(with_status)  # 1,2 for 256 ... 11,12 for 8192
    assert raw[:4] == bytes([0xF5, 0xFA, 0x81, pid2])
    assert int.from_bytes(raw[4:6], "big") == 3 * n + (64 if with_status else 0)
    assert raw[6:9] == b"\x00\x00\x00" and raw[9:12] == (4099).to_bytes(3, "little")
    got, got_status = parse_spectrum(decode(raw))
    assert np.array_equal(got, counts)
    assert got_status == status


@pytest.mark.parametrize("code", sorted(c for c in ACK_TEXT if c not in (0, 12, 15)))
def test_every_ack_error_is_an_error_naming_its_code(code: int) -> None:
    raw = ack(code, b"MCAC=3000;" if code in (5, 7) else b"")
    assert raw[:6] == bytes([0xF5, 0xFA, 0xFF, code, 0, 10 if code in (5, 7) else 0])
    with pytest.raises(Dp5AckError) as err:
        Dp5Client._match(raw, "status", "request 01,01")
    assert err.value.code == code
    assert f"ACK {code} {ACK_TEXT[code]}" in str(err.value)


def test_malformed_packets_get_the_ack_a_dp5_answers_them_with() -> None:
    good = encode((0x20, 0x02), b"PRET=1;")
    with pytest.raises(PacketError) as sync:
        decode(b"\xf5\xfb" + good[2:])
    with pytest.raises(PacketError) as length:
        decode(good[:-3] + good[-2:])
    with pytest.raises(PacketError) as check:
        decode(good[:-1] + bytes([good[-1] ^ 1]))
    assert (sync.value.ack, length.value.ack, check.value.ack) == (1, 3, 4)


def test_text_configuration() -> None:
    assert config_text({"PRET": 0.05, "MCAC": 2048}) == b"PRET=0.05;MCAC=2048;"
    assert parse_config(b"PRET=0.05; mcac=2048;\r\n") == {"PRET": "0.05", "MCAC": "2048"}
    with pytest.raises(ValueError, match="4-letter"):
        config_text({"PRESET": 1})


def _dp5_mca(tmp_path: Path) -> tuple[Dp5Status, np.ndarray, Spectrum]:
    """A DP5 spectrum as the driver builds it, written to an .mca and read back."""
    status = Dp5Status(
        fast_count=66_888, slow_count=65_028, acc_time_s=9.252, real_time_s=9.263, hv_v=-130.0
    )
    client = Dp5Client("127.0.0.1", 1, name="xrf1", calibration=Calibration(0.0, 0.01, 2048))
    client._settings = {"MCAC": "2048", "PRET": "9.252"}
    counts = np.random.default_rng(1).poisson(20.0, 2048).astype(np.float64)
    spectrum = client._to_spectrum("CELL:7", counts, status)
    return status, counts, read_mca(write_mca(spectrum, tmp_path / "cell7.mca"))


def test_dp5_spectrum_in_an_mca_keeps_counts_times_configuration_and_status(
    tmp_path: Path,
) -> None:
    status, counts, ours = _dp5_mca(tmp_path)
    assert np.array_equal(ours.counts, counts)
    assert ours.kev_per_channel == pytest.approx(0.01)
    assert ours.live_time_s == pytest.approx(status.live_time_s)
    assert ours.real_time_s == pytest.approx(9.252)  # DppMCA's REAL_TIME: the accumulation time
    assert ours.metadata["dpp_MCAC"] == "2048" and ours.metadata["dpp_PRET"] == "9.252"
    assert ours.metadata["status_fast_count"] == "66888"
    assert ours.metadata["status_dead_time"] == "2.78%"


def test_dp5_spectrum_in_an_mca_reads_back_with_the_fields_of_a_dppmca_file(
    tmp_path: Path,
) -> None:
    """Read back, our .mca gives every status field and the channel count that a file
    Amptek's DppMCA wrote (a PX5) gives."""
    real = read_mca(public_file("real_spectra/amptek_px5_minix_au_20kV.mca"))
    _, _, ours = _dp5_mca(tmp_path)
    theirs = {k for k in real.metadata if k.startswith("status_") or k == "dpp_MCAC"}
    assert len(theirs) > 10
    assert theirs <= set(ours.metadata)
