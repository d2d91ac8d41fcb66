"""Simulated DP5 heads: a client written here from Amptek's Programmer's Guide (not our driver)
reads status and spectra from them; the conveyor, not the protocol, decides what they see."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.dp5 import Calibration, Dp5AckError, Dp5Client, Dp5Status
from drivers.sim.cells import CellStream
from drivers.sim.dp5 import ConveyorLanes, SimDp5Head, SimDp5Station
from drivers.sim.plc import SimPlc
from drivers.xrf import XrfConnectionError, XrfStation, XrfTimeoutError, XrfUnavailableError
from plant.rig import tag_map

CONFIG = Path(__file__).resolve().parents[1] / "config"


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


# ----------------------------------------------------------------- a client from the guide


def packet(pid1: int, pid2: int, data: bytes = b"") -> bytes:
    """Guide: F5 FA PID1 PID2 LEN_MSB LEN_LSB DATA CHK_MSB CHK_LSB, CHK = -(sum of bytes)."""
    head = bytes([0xF5, 0xFA, pid1, pid2, len(data) >> 8, len(data) & 0xFF]) + data
    chk = (0x10000 - sum(head) % 0x10000) % 0x10000
    return head + bytes([chk >> 8, chk & 0xFF])


class GuideClient(asyncio.DatagramProtocol):
    """Send one packet, collect datagrams until the reply's announced length has come."""

    def __init__(self) -> None:
        self.buf = b""
        self.done: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.buf += data
        whole = len(self.buf) >= 6 and len(self.buf) >= 8 + (self.buf[4] << 8 | self.buf[5])
        if whole and self.done is not None and not self.done.done():
            self.done.set_result(self.buf)

    async def ask(self, transport: asyncio.DatagramTransport, raw: bytes) -> tuple[int, int, bytes]:
        self.buf = b""
        self.done = asyncio.get_running_loop().create_future()
        transport.sendto(raw)
        reply = await asyncio.wait_for(self.done, 5)
        assert reply[:2] == b"\xf5\xfa"
        assert (sum(reply[:-2]) + (reply[-2] << 8 | reply[-1])) % 0x10000 == 0, "bad checksum"
        n = reply[4] << 8 | reply[5]
        assert len(reply) == n + 8
        return reply[2], reply[3], reply[6 : 6 + n]


def test_a_client_written_from_the_guide_reads_status_and_spectrum_and_gets_its_acks() -> None:
    async def body() -> None:
        async with SimDp5Head(port=0, dwell_scale=1.0) as head:
            loop = asyncio.get_running_loop()
            transport, client = await loop.create_datagram_endpoint(
                GuideClient, remote_addr=("127.0.0.1", head.port)
            )
            try:
                pid1, pid2, status = await client.ask(transport, packet(1, 1))
                assert (pid1, pid2, len(status)) == (0x80, 0x01, 64)
                hv = int.from_bytes(status[30:32], "big", signed=True) * 0.5
                temp_k = ((status[32] & 0x0F) << 8 | status[33]) * 0.1
                assert hv < -20 and 200 <= temp_k <= 260  # a biased, cooled SDD
                assert await client.ask(transport, packet(0x20, 2, b"PRET=0.2;MCAC=1024;")) == (
                    0xFF,
                    0,
                    b"",
                )
                assert (await client.ask(transport, packet(0xF0, 1)))[:2] == (0xFF, 0)
                t0 = time.monotonic()
                assert (await client.ask(transport, packet(0xF0, 2)))[:2] == (0xFF, 0)
                while (await client.ask(transport, packet(1, 1)))[2][35] & 0x20:  # MCA enabled
                    await asyncio.sleep(0.01)
                assert time.monotonic() - t0 >= 0.19  # the preset time
                pid1, pid2, data = await client.ask(transport, packet(2, 3))
                assert (pid1, pid2) == (0x81, 0x06)  # 1024 channels + status
                assert len(data) == 3 * 1024 + 64
                counts = [int.from_bytes(data[3 * i : 3 * i + 3], "little") for i in range(1024)]
                st = data[3 * 1024 :]
                slow = int.from_bytes(st[4:8], "little")
                fast = int.from_bytes(st[0:4], "little")
                acc_s = st[12] * 0.001 + int.from_bytes(st[13:16], "little") * 0.1
                assert sum(counts) == slow > 1000 and fast >= slow
                assert acc_s == pytest.approx(0.2) and st[35] & 0x80  # preset time reached
                assert await client.ask(transport, packet(2, 4)) == (pid1, pid2, data)
                _, _, cleared = await client.ask(transport, packet(2, 3))  # read, clear: zero
                assert not any(cleared[: 3 * 1024]) and not any(cleared[3 * 1024 : 3 * 1024 + 16])
                bad = bytearray(packet(1, 1))
                bad[-1] ^= 0x01
                assert await client.ask(transport, bytes(bad)) == (0xFF, 4, b"")  # checksum
                assert (await client.ask(transport, packet(0x05, 0x09)))[:2] == (0xFF, 2)  # PID
                assert (await client.ask(transport, packet(1, 1, b"x")))[:2] == (0xFF, 3)  # len
                long = packet(1, 1)[:4] + b"\x00\x05" + packet(1, 1)[6:]
                assert (await client.ask(transport, long))[:2] == (0xFF, 3)
                reply = await client.ask(transport, packet(0x20, 2, b"FOOO=1;"))
                assert reply == (0xFF, 7, b"FOOO=1;")  # unknown command
                reply = await client.ask(transport, packet(0x20, 2, b"MCAC=3000;"))
                assert reply[:2] == (0xFF, 5)  # bad parameter
            finally:
                transport.close()

    run(body)


# ----------------------------------------------------------------- geometry


async def _plc_with_cells(n: int) -> SimPlc:
    plc = SimPlc(tag_map(CONFIG), port=0, rate_cells_s=2000.0, max_cells=n, cells=CellStream(1))
    await plc.start()
    plc.start_feeder()
    while plc.arrived < n:
        await asyncio.sleep(0.01)
    return plc


def test_the_conveyor_decides_what_each_head_sees() -> None:
    """Head k sees lane k (seq = k+1, k+1+N, ...) in order, a cell that left the line unmeasured
    is skipped, and an empty lane shows the reference pellet (None)."""

    async def body() -> None:
        plc = await _plc_with_cells(6)
        try:
            lanes = ConveyorLanes(plc, 2)
            assert [lanes.take(0) for _ in range(4)] == [1, 3, 5, None]
            plc.diverted[4] = 4  # cell 4 went to quarantine without a spectrum
            assert [lanes.take(1), lanes.take(1)] == [2, 6]
        finally:
            await plc.stop()

    run(body)


def test_a_lane_station_measures_each_cell_on_the_head_in_front_of_it() -> None:
    """The driver asks head (seq-1) mod N for CELL:seq; the simulated head, told nothing, sees
    that cell: its spectrum is the cell's (LFP: iron, no nickel; NMC: nickel)."""

    async def body() -> None:
        plc = await _plc_with_cells(8)
        sim = SimDp5Station(2, lanes=ConveyorLanes(plc, 2), stream=plc.cells, seed=1)
        await sim.start()
        heads = [
            Dp5Client("127.0.0.1", p, name=f"xrf{k + 1}", calibration=Calibration(0, 0.01, 4096))
            for k, p in enumerate(sim.ports)
        ]
        station = XrfStation(heads, lanes=True)
        try:
            await station.connect()
            spectra = await asyncio.gather(
                *(station.measure(f"CELL:{seq}", 0.2) for seq in range(1, 9))
            )
            assert list(sim.heads[0].measured) == [1, 3, 5, 7]
            assert list(sim.heads[1].measured) == [2, 4, 6, 8]
            for seq, s in enumerate(spectra, start=1):
                assert s.metadata["head"] == f"xrf{(seq - 1) % 2 + 1}"
                chem = plc.cells.truth(seq).chemistry
                ni, fe = s.counts_between(7.3, 7.6), s.counts_between(6.3, 6.5)
                if chem == "LFP" and plc.cells.truth(seq).second_chemistry is None:
                    assert fe > ni, f"cell {seq} (LFP) shows no iron"
                if chem.startswith("NMC") and plc.cells.truth(seq).format.value == "opened":
                    assert ni > fe, f"cell {seq} ({chem}) shows no nickel"
        finally:
            await station.close()
            await sim.stop()
            await plc.stop()

    run(body)


def test_the_driver_clears_each_head_after_reading_it_so_the_next_cell_starts_clean() -> None:
    """Per cell: enable, status until the preset is reached, spectrum + status (2,3), then a
    clear off the cell's path; each spectrum holds only its own counts and time."""

    async def body() -> None:
        async with SimDp5Head(port=0, dwell_scale=1.0) as head:
            client = Dp5Client("127.0.0.1", head.port, calibration=Calibration(n_channels=1024))
            await client.connect()
            first = await client.measure("a", 0.05)
            second = await client.measure("b", 0.05)
            third = await client.measure("c", 0.05)
            await client.status()  # the next request makes sure the last clear was answered
            await client.close()
            assert head.requests[0xF0, 0x02] == 3  # one enable per cell
            assert head.requests[0xF0, 0x01] == 4  # a clear before "a", and after each cell
            # the first cell read at once, found the head counting and waited for it;
            # from then on the driver polls the status first and reads once
            assert head.requests[0x02, 0x03] == 4 and head.requests[0x02, 0x04] == 0
            for spectrum in (second, third):  # timers and counts were cleared in between
                assert spectrum.real_time_s == pytest.approx(0.05, abs=0.002)
                assert spectrum.counts.sum() == pytest.approx(first.counts.sum(), rel=0.2)

    run(body)


def test_a_head_done_at_once_is_read_without_a_status_poll() -> None:
    """At dwell 0 the acquisition is over when the enable is acknowledged: a cell then costs
    enable and read on its path, and the clear after it."""

    async def body() -> None:
        async with SimDp5Head(port=0, dwell_scale=0.0) as head:
            client = Dp5Client("127.0.0.1", head.port, calibration=Calibration(n_channels=1024))
            await client.connect()
            statuses = head.requests[0x01, 0x01]  # the connect's
            spectra = [await client.measure(f"CELL:{i}", 0.05) for i in range(1, 6)]
            assert head.requests[0x01, 0x01] == statuses
            await client.status()  # the next request makes sure the last clear was answered
            await client.close()
            assert head.requests[0xF0, 0x02] == head.requests[0x02, 0x03] == 5
            assert head.requests[0xF0, 0x01] == 6  # before the first, then after each
            assert all(s.real_time_s == pytest.approx(0.05, abs=0.002) for s in spectra)

    run(body)


def test_detector_health_follows_the_heads_status() -> None:
    """High voltage and cooling switched off on the head (HVSE=OFF, TECS=OFF) show as HV off and
    detector temperature problems after the next measurement; an unknown command is refused."""

    async def body() -> None:
        async with SimDp5Head(port=0, dwell_scale=0.0) as head:
            client = Dp5Client("127.0.0.1", head.port, name="xrf1")
            await client.connect()
            await client.measure("CELL:1", 0.05)
            assert not any(client.detector.problems.values())
            await client.configure({"HVSE": "OFF", "TECS": "OFF"})
            spectrum = await client.measure("CELL:1", 0.05)
            problems = client.detector.problems
            assert problems["hv_off"] == "detector high voltage off (0 V)"
            assert "295.0 K" in (problems["detector_temp"] or "")
            assert spectrum.total_counts() == 0  # no bias: nothing counted
            assert client.detector.as_json()["problems"] == {k: v for k, v in problems.items() if v}
            with pytest.raises(Dp5AckError, match="ACK 7 unrecognized command"):
                await client.configure({"XXXX": 1})
            assert client.health.connected  # a refusal is an answer: the link is up
            await client.close()

    run(body)


class LossyHead(asyncio.DatagramProtocol):
    """Answers status requests, but only every second one arrives (a lossy link)."""

    def __init__(self) -> None:
        self.seen = 0
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen += 1
        if self.seen % 2 == 0 and self.transport is not None:
            self.transport.sendto(packet(0x80, 0x01, Dp5Status(hv_v=-130.0).encode()), addr)


def test_a_request_without_answer_is_sent_again_then_the_head_is_down() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        transport, head = await loop.create_datagram_endpoint(
            LossyHead, local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        try:
            client = Dp5Client("127.0.0.1", port, timeout_s=0.1, retries=1, name="xrf1")
            status = await client.status()  # connect + status: each first try lost, retried
            assert status.hv_v == -130.0 and head.seen == 4
            assert client.health.connected
            once = Dp5Client("127.0.0.1", port, timeout_s=0.1, retries=0, name="xrf2")
            with pytest.raises(XrfTimeoutError, match=r"xrf2 .* no answer to request 01,01"):
                await once.status()
            assert not once.health.connected and once.health.failures == 1
        finally:
            transport.close()

    run(body)


class DropFirstSpectrum(asyncio.DatagramProtocol):
    """A link to `head` that loses the first spectrum reply (PID1 0x81), every datagram of it."""

    def __init__(self, head: tuple[str, int]) -> None:
        self.head = head
        self.client: Any = None
        self.transport: Any = None
        self.spectra = 0
        self.dropping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr != self.head:
            self.client = addr
            self.transport.sendto(data, self.head)
            return
        if data[:2] == b"\xf5\xfa":  # a packet starts: its continuation datagrams follow it
            self.spectra += data[2] == 0x81
            self.dropping = data[2] == 0x81 and self.spectra == 1
        if not self.dropping:
            self.transport.sendto(data, self.client)


def test_a_lost_spectrum_reply_is_asked_again_and_the_cell_is_measured() -> None:
    """The spectrum read (2,3) does not clear the head, so a lost reply is asked again: the cell
    gets its whole spectrum and the head stays up."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        async with SimDp5Head(port=0, dwell_scale=1.0) as head:
            link, _ = await loop.create_datagram_endpoint(
                lambda: DropFirstSpectrum(("127.0.0.1", head.port)), local_addr=("127.0.0.1", 0)
            )
            port = link.get_extra_info("sockname")[1]
            client = Dp5Client("127.0.0.1", port, timeout_s=0.2, retries=2, name="xrf1")
            client.calibration = Calibration(n_channels=1024)
            try:
                await client.connect()
                spectrum = await client.measure("a", 0.05)
                assert head.requests[0x02, 0x03] == 2  # the first reply was lost, then asked again
                assert spectrum.real_time_s == pytest.approx(0.05, abs=0.002)
                assert client.health.connected and client.health.failures == 0
            finally:
                await client.close()
                link.close()

    run(body)


class DropRequest(asyncio.DatagramProtocol):
    """A link to `head` that loses the `nth` request with PID `pid` on its way to the head."""

    def __init__(self, head: tuple[str, int], pid: tuple[int, int], nth: int) -> None:
        self.head, self.pid, self.nth = head, pid, nth
        self.seen = 0
        self.client: Any = None
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr == self.head:
            self.transport.sendto(data, self.client)
            return
        self.client = addr
        if (data[2], data[3]) == self.pid:
            self.seen += 1
            if self.seen == self.nth:
                return
        self.transport.sendto(data, self.head)


def test_a_clear_lost_after_a_cell_is_sent_again_before_the_next_cell() -> None:
    """The clear after a read is not waited for; when its ACK never comes, the driver clears
    again before enabling the head, so the next spectrum holds only its own counts."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        async with SimDp5Head(port=0, dwell_scale=1.0) as head:
            link, proxy = await loop.create_datagram_endpoint(
                lambda: DropRequest(("127.0.0.1", head.port), (0xF0, 0x01), nth=2),
                local_addr=("127.0.0.1", 0),
            )
            port = link.get_extra_info("sockname")[1]
            client = Dp5Client("127.0.0.1", port, timeout_s=0.2, retries=2, name="xrf1")
            client.calibration = Calibration(n_channels=1024)
            try:
                await client.connect()
                first = await client.measure("a", 0.05)  # the clear after it is lost
                second = await client.measure("b", 0.05)
                assert proxy.seen == 3 and head.requests[0xF0, 0x01] == 2
                assert len(head.measured) == 2  # a head not cleared would give "a" again
                assert second.real_time_s == pytest.approx(0.05, abs=0.002)
                assert second.counts.sum() == pytest.approx(first.counts.sum(), rel=0.2)
                assert (second.counts != first.counts).any()
            finally:
                await client.close()
                link.close()

    run(body)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ('kind = "sciaps"', r"xrf\.kind: .*SciAps analyser assays lots.*use dp5 or scpi"),
        ('kind = "xr100"', r"xrf\.kind: .*unknown XRF kind 'xr100'"),
        ("channels = 3000", r"xrf\.channels: .*3000 channels"),
        ('hosts = ["10.0.5.11"]', r"xrf: .*hosts names 1 heads, heads = 8"),
    ],
)
def test_xrf_settings_are_checked_at_load(tmp_path: Path, edit: str, says: str) -> None:
    import shutil

    from plant.config import ConfigError, load_plant

    shutil.copytree(CONFIG, tmp_path / "config")
    toml = tmp_path / "config" / "plant.toml"
    text = toml.read_text()
    key = edit.split(" = ")[0]
    section = text.index("[xrf]")
    start = text.index(f"\n{key} = ", section) + 1 if f"\n{key} = " in text[section:] else None
    if start is None:
        text = text.replace("[xrf]\n", f"[xrf]\n{edit}\n", 1)
    else:
        end = text.index("\n", start)
        text = text[:start] + edit + text[end:]
    toml.write_text(text)
    with pytest.raises(ConfigError, match=says):
        load_plant(tmp_path / "config")


def test_cells_waiting_for_a_head_that_goes_down_fail_instead_of_waiting_forever() -> None:
    """With lanes, cells queue for the head in front of them; when that head stops answering
    the first gets the error and every cell queued behind it is told the head is down."""

    async def body() -> None:
        head = SimDp5Head(port=0, dwell_scale=0.0)
        await head.start()
        client = Dp5Client("127.0.0.1", head.port, name="xrf1", timeout_s=0.1, retries=0)
        station = XrfStation([client], lanes=True)
        await station.connect()
        await head.stop()
        results = await asyncio.gather(
            *(station.measure(f"CELL:{seq}", 0.05) for seq in (1, 2, 3)), return_exceptions=True
        )
        await station.close()
        assert isinstance(results[0], XrfConnectionError)  # ICMP: port unreachable
        assert all(isinstance(r, XrfUnavailableError) for r in results[1:]), results

    run(body)
