"""XRF client, station and simulated heads over real loopback sockets (docs/xrf-protocol.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from drivers.sim import xrfphysics
from drivers.sim.profiles import PROFILES
from drivers.sim.xrf import SimXrfHead, SimXrfStation, XrfFault
from drivers.xrf import (
    MIN_BACKOFF_S,
    Spectrometer,
    XrfClient,
    XrfConnectionError,
    XrfError,
    XrfInstrumentError,
    XrfStation,
    XrfTimeoutError,
    XrfUnavailableError,
)

PROFILE = "sipin_1024"  # the smallest instrument: fastest templates for tests
SEED = 3  # cells 0-11 of this seed are single-chemistry: all covered by warm()


@pytest.fixture(autouse=True, scope="module")
def _warm_physics() -> None:
    """Build the physics templates once, so short request deadlines never race a cold cache."""
    xrfphysics.warm((PROFILE,))


def run(test: Callable[[SimXrfHead], Awaitable[None]], **head_options: object) -> None:
    """Run an async test against one started simulated head, always stopping it."""

    async def main() -> None:
        options: dict[str, object] = {
            "profile": PROFILE,
            "seed": SEED,
            "dwell_scale": 0.0,
            "warm": False,
        }
        options.update(head_options)
        head = SimXrfHead(**options)  # type: ignore[arg-type]
        await head.start()
        try:
            await test(head)
        finally:
            await head.stop()

    asyncio.run(main())


def client(head: SimXrfHead, **options: object) -> XrfClient:
    return XrfClient("127.0.0.1", head.port, name="head-A", **options)  # type: ignore[arg-type]


async def scpi(head: SimXrfHead, *lines: str) -> list[bytes]:
    """Send raw SCPI lines on a fresh connection; collect the reply to each query line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", head.port)
    replies = []
    try:
        for line in lines:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            if "?" in line:
                replies.append(await asyncio.wait_for(read_reply(reader), 10))
    finally:
        writer.close()
        await writer.wait_closed()
    return replies


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One reply: a block (#<n><len><bytes>) plus the rest of its line, or one line."""
    first = await reader.readexactly(1)
    if first != b"#":
        return first + await reader.readline()
    n = await reader.readexactly(1)
    size = await reader.readexactly(int(n))
    payload = await reader.readexactly(int(size))
    return first + n + size + payload + await reader.readline()


@pytest.mark.parametrize("profile", ["sipin_1024", "bench_sdd_2048"])
def test_measure_returns_spectrum_calibrated_as_the_heads_profile(profile: str) -> None:
    async def body(head: SimXrfHead) -> None:
        async with client(head) as c:
            assert isinstance(c, Spectrometer)
            assert f"XRF-{profile}" in await c.identify()
            s = await c.measure("CELL:3", 0.5)
            assert c.health.connected and c.health.last_error is None
        p = PROFILES[profile]
        assert s.n_channels == p.n_channels
        assert s.offset_kev == pytest.approx(p.offset_kev)
        assert s.kev_per_channel == pytest.approx(p.kev_per_channel)
        assert s.live_time_s == pytest.approx(0.5)
        assert s.real_time_s is not None and s.real_time_s >= s.live_time_s
        assert s.tube_kv == pytest.approx(p.tube_kv)
        assert s.counts.sum() > 1000
        assert s.metadata["head"] == "head-A" and s.metadata["sample_id"] == "CELL:3"

    run(body, profile=profile)


def test_pellet_composition_reaches_the_spectrum() -> None:
    """SAMP:COMP (simulator only): a Ni-rich pellet shows more Ni Kα than a Co-rich one."""

    async def body(head: SimXrfHead) -> None:
        async with client(head) as c:
            ni = await c.measure("PELLET:LOT-1", 2.0, composition={"Ni": 30.0, "Co": 2.0})
            co = await c.measure("PELLET:LOT-2", 2.0, composition={"Ni": 2.0, "Co": 30.0})

        def window(s: object, kev: float) -> float:
            e = s.energies()  # type: ignore[attr-defined]
            return float(s.counts[(e > kev - 0.1) & (e < kev + 0.1)].sum())  # type: ignore[attr-defined]

        assert window(ni, 7.478) > 3 * window(co, 7.478)  # Ni Kα
        assert window(co, 6.930) > 3 * window(ni, 6.930)  # Co Kα

    run(body)


def test_tube_voltage_is_set_and_reported() -> None:
    async def body(head: SimXrfHead) -> None:
        async with client(head) as c:
            assert await c.set_tube_kv(45) == pytest.approx(45.0)
            with pytest.raises(XrfInstrumentError, match="-222"):
                await c.set_tube_kv(80)  # above this tube's 50 kV
            assert c.health.connected

    run(body)


def test_stalled_head_times_out_is_reported_and_fails_fast_until_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(head: SimXrfHead) -> None:
        c = client(head, timeout_s=0.3, backoff_initial_s=30.0)
        try:
            await c.measure("CELL:1", 0.1)
            head.fault = XrfFault.stall
            with pytest.raises(XrfTimeoutError, match=r"head-A .*no answer to MEAS:SPEC\?"):
                await c.measure("CELL:2", 0.1)
            assert not c.health.connected
            assert "no answer" in (c.health.last_error or "")
            with pytest.raises(XrfUnavailableError, match=r"head-A .* is down"):
                await c.measure("CELL:3", 0.1)  # in backoff: no second 0.3 s wait
            assert not c.ready
            head.fault = None
            await c.connect()  # an explicit connect ignores the backoff
            assert (await c.measure("CELL:4", 0.1)).metadata["sample_id"] == "CELL:4"
            assert c.health.connected and c.health.failures == 0
        finally:
            await c.close()

    with caplog.at_level(logging.INFO, logger="drivers.xrf"):
        run(body)
    downs = [r for r in caplog.records if "down" in r.getMessage()]
    ups = [r for r in caplog.records if "back up" in r.getMessage()]
    assert len(downs) == 1 and len(ups) == 1  # one line per change of state, no flood


def test_connection_closed_while_idle_is_reopened_quietly(caplog: pytest.LogCaptureFixture) -> None:
    async def body(head: SimXrfHead) -> None:
        async with client(head) as c:
            await c.measure("CELL:1", 0.1)
            head.drop_connections()
            s = await c.measure("CELL:2", 0.1)
            assert s.metadata["sample_id"] == "CELL:2"
            assert c.health.connected and c.health.failures == 0
            assert head.accepted == 2

    with caplog.at_level(logging.WARNING, logger="drivers.xrf"):
        run(body)
    assert not caplog.records


def test_head_that_drops_every_request_is_reported_then_reconnected() -> None:
    async def body(head: SimXrfHead) -> None:
        async with client(head, backoff_initial_s=0) as c:
            assert c.backoff_initial_s == MIN_BACKOFF_S  # zero backoff must not busy-loop
            head.fault = XrfFault.drop
            with pytest.raises(XrfConnectionError, match=r"head-A .*closed the connection"):
                await c.measure("CELL:1", 0.1)
            assert not c.health.connected and c.health.failures == 1
            head.fault = None
            await c.connect()
            assert (await c.measure("CELL:1", 0.1)).counts.sum() > 0
            assert c.health.connected

    run(body)


def test_garbage_reply_is_a_clear_error_naming_the_head() -> None:
    async def body(head: SimXrfHead) -> None:
        async with client(head) as c:
            head.fault = XrfFault.garbage
            with pytest.raises(XrfError, match=r"head-A .*MEAS:SPEC\?.*not ASCII") as info:
                await c.measure("CELL:1", 0.1)
            assert not isinstance(info.value, XrfTimeoutError | XrfConnectionError)
            assert not c.health.connected

    run(body)


def test_reply_for_another_sample_is_rejected() -> None:
    """A well-formed reply that belongs to a different sample is never accepted."""

    async def fake_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            if line.startswith(b"*IDN?"):
                writer.write(b"Fake,XRF,1,0\n")
            else:  # answer every measurement with a 16-channel spectrum of CELL:9
                counts = np.arange(16, dtype="<u4").tobytes()
                writer.write(b"#264" + counts + b',"CELL:9",0,0.01,0.1,0.11,50\n')
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(fake_head, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with XrfClient("127.0.0.1", port, name="head-B") as c:
                with pytest.raises(XrfError, match=r"head-B .*reply is for sample 'CELL:9'"):
                    await c.measure("CELL:2", 0.1)
                assert not c.health.connected
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_refused_request_is_an_instrument_error_and_keeps_the_link() -> None:
    async def body(head: SimXrfHead) -> None:
        async with client(head) as c:
            with pytest.raises(XrfInstrumentError, match=r"-224.*CELL:<seq>"):
                await c.measure("FOO:1", 0.1)
            assert c.health.connected
            assert (await c.measure("CELL:1", 0.1)).counts.sum() > 0
        with pytest.raises(ValueError, match="sample id"):
            await c.measure("CELL 1; *RST", 0.1)
        with pytest.raises(ValueError, match="live time"):
            await c.measure("CELL:1", float("nan"))

    run(body)


def test_cancelled_request_never_leaves_a_stale_reply_for_the_next() -> None:
    """The line wraps measure() in wait_for; a late reply must not answer the next cell."""

    async def body(head: SimXrfHead) -> None:
        async with client(head) as c:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.measure("CELL:1", 0.5), 0.1)
            s = await c.measure("CELL:2", 0.05)
            assert s.metadata["sample_id"] == "CELL:2"

    run(body, dwell_scale=1.0)


def test_scpi_conventions_on_the_wire() -> None:
    """Long/short headers, compound messages, error queue, MEAS:STAR polling, FETCh queries."""

    async def body(head: SimXrfHead) -> None:
        r = await scpi(
            head,
            "SAMP:ID NOT-A-SAMPLE",
            "SYST:ERR?",
            "SYSTEM:ERROR?",
            "measure:time 0.2;:MEAS:TIME?",
            "FOO:BAR?",
            'SAMPle:ID "CELL:7";:MEASure:STARt',
            "*OPC?;:MEAS:STAT?;:FETC:CAL?;:FETCH:LIVE?;:SOUR:VOLT?;:SAMP:ID?",
            "FETC:SPEC?",
            "*RST;:MEAS:STAT?",
            "FETC:ALL?",
            "*IDN? extra",
        )
        assert r[0].startswith(b'-224,"Illegal parameter value')
        assert r[1] == b'0,"No error"\n'
        assert r[2] == b"0.2\n"
        assert r[3] == b'ERROR -113,"Undefined header; FOO:BAR?"\n'
        p = PROFILES[PROFILE]
        assert r[4] == f'1;DONE;{p.offset_kev:g},{p.kev_per_channel:g};0.2;50;"CELL:7"\n'.encode()
        size = 4 * p.n_channels  # little-endian uint32 per channel
        assert r[5].startswith(f"#{len(str(size))}{size}".encode()) and r[5].endswith(b"\n")
        counts = np.frombuffer(r[5][2 + len(str(size)) : -1], dtype="<u4")
        assert counts.size == p.n_channels and counts.sum() > 0
        assert r[6] == b"IDLE\n"
        assert r[7].startswith(b"ERROR -230")
        assert r[8].startswith(b"ERROR -108")

    run(body)


def test_station_spreads_measurements_over_heads_concurrently() -> None:
    async def main() -> None:
        sim = SimXrfStation(4, profiles=(PROFILE,), seed=SEED, dwell_scale=1.0, warm=False)
        await sim.start()
        heads = [XrfClient("127.0.0.1", p, name=f"xrf{k + 1}") for k, p in enumerate(sim.ports)]
        station = XrfStation(heads)
        try:
            await station.connect()
            busy_seen: set[int] = set()
            done = asyncio.Event()

            async def watch() -> None:
                while not done.is_set():
                    busy_seen.add(sum(h.busy for h in sim.heads))
                    await asyncio.sleep(0.005)

            watcher = asyncio.create_task(watch())
            spectra = await asyncio.gather(*(station.measure(f"CELL:{i}", 0.3) for i in range(8)))
            done.set()
            await watcher
            assert [s.metadata["sample_id"] for s in spectra] == [f"CELL:{i}" for i in range(8)]
            assert {s.metadata["head"] for s in spectra} == {"xrf1", "xrf2", "xrf3", "xrf4"}
            assert max(busy_seen) == 4  # four heads measured at the same time
            assert sum(h.measurements for h in sim.heads) == 8
            assert station.busy == 0 and station.health.connected
        finally:
            await station.close()
            await sim.stop()

    asyncio.run(main())


def test_station_routes_around_a_stalled_head_and_fails_fast_when_all_are_down() -> None:
    async def main() -> None:
        sim = SimXrfStation(2, profiles=(PROFILE,), seed=SEED, dwell_scale=0.0, warm=False)
        await sim.start()
        heads = [
            XrfClient("127.0.0.1", p, name=f"xrf{k + 1}", timeout_s=0.3, backoff_initial_s=30)
            for k, p in enumerate(sim.ports)
        ]
        station = XrfStation(heads)
        try:
            await station.connect()
            sim.heads[1].fault = XrfFault.stall
            results = await asyncio.gather(
                *(station.measure(f"CELL:{i}", 0.1) for i in range(2)), return_exceptions=True
            )
            assert sum(isinstance(r, XrfTimeoutError) for r in results) == 1
            for i in range(4):  # the stalled head is in backoff: every cell goes to xrf1
                assert (await station.measure(f"CELL:{i}", 0.1)).metadata["head"] == "xrf1"
            assert station.health.connected and "xrf2" in (station.health.last_error or "")
            sim.heads[0].fault = XrfFault.drop
            with pytest.raises(XrfConnectionError):
                await station.measure("CELL:9", 0.1)
            with pytest.raises(XrfUnavailableError, match="all heads are down"):
                await station.measure("CELL:10", 0.1)
            assert not station.health.connected
        finally:
            await station.close()
            await sim.stop()

    asyncio.run(main())


def test_unreachable_head_is_a_connection_error_with_backoff() -> None:
    async def main() -> None:
        head = SimXrfHead(profile=PROFILE, warm=False)
        await head.start()
        port = head.port
        await head.stop()  # nothing listens there now
        c = XrfClient("127.0.0.1", port, name="gone", timeout_s=1.0)
        with pytest.raises(XrfConnectionError, match=r"gone .*cannot connect"):
            await c.measure("CELL:1", 0.1)
        assert c.health.state == "down" and c.health.retry_at > 0
        with pytest.raises(XrfUnavailableError):
            await c.measure("CELL:1", 0.1)
        await c.close()

    asyncio.run(main())


def test_sim_station_rejects_profile_count_mismatch() -> None:
    with pytest.raises(ValueError, match="give 1 or 3 XRF profiles"):
        SimXrfStation(3, profiles=("sipin_1024", "bench_sdd_2048"))
    with pytest.raises(ValueError, match="unknown XRF profile"):
        SimXrfHead(profile="no-such-instrument")


def test_spectra_are_noisy_per_call_but_reproducible_per_seed() -> None:
    async def measure_twice(seed: int) -> list[np.ndarray]:
        head = SimXrfHead(profile=PROFILE, seed=seed, dwell_scale=0.0, warm=False)
        await head.start()
        try:
            async with client(head) as c:
                return [(await c.measure("CELL:5", 0.2)).counts for _ in range(2)]
        finally:
            await head.stop()

    a = asyncio.run(measure_twice(4))
    b = asyncio.run(measure_twice(4))
    assert not np.array_equal(a[0], a[1])  # Poisson noise per measurement
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
