"""TCP smart code reader: the driver against the simulated reader over loopback TCP, and the
simulator against a client written here from the Keyence SR/BL command framing."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from test_camera import STREAM, cells

from drivers.codereader import TcpCodeReader
from drivers.sim.codereader import SimCodeReader
from plant.config import ConfigError, load_plant

REPO = Path(__file__).resolve().parent.parent


def first(*, passport: bool, readable: bool = True, url: bool | None = None, after: int = 0) -> int:
    """The first cell after `after` whose label has these properties."""
    return cells(readable=readable, passport=passport, url=url, n=1, after=after)[0]


def passport(seq: int) -> str:
    pid = STREAM.truth(seq).passport_id
    assert pid is not None
    return pid


class Conveyor:
    """What is in front of the reader: the cells a test puts there, one per trigger."""

    def __init__(self, *seqs: int) -> None:
        self.seqs = list(seqs)

    def __call__(self) -> int | None:
        return self.seqs.pop(0) if self.seqs else None


@asynccontextmanager
async def reader_sim(conveyor: Conveyor, port: int = 0) -> AsyncIterator[SimCodeReader]:
    sim = SimCodeReader(STREAM, conveyor, port=port)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


async def until_backoff_over(client: TcpCodeReader) -> None:
    await asyncio.sleep(max(client.backoff.left(), 0) + 0.01)


def test_read_gives_the_passport_id_of_the_cell_in_front() -> None:
    bare, url = first(passport=True, url=False), first(passport=True, url=True)

    async def main() -> None:
        async with reader_sim(Conveyor(bare, url)) as sim:
            client = TcpCodeReader("127.0.0.1", sim.port, timeout_s=2.0)
            try:
                assert await client.read_label(bare) == (passport(bare), None)
                # a URL on the label: the reader sends the URL, the driver takes the id from it
                assert await client.read_label(url) == (passport(url), None)
            finally:
                await client.close()
            assert sim.triggers == 2

    run(main)


def test_no_read_is_a_clear_error() -> None:
    no_qr = first(passport=False)
    torn = first(passport=True, readable=False)

    async def main() -> None:
        async with reader_sim(Conveyor(no_qr, torn)) as sim:
            client = TcpCodeReader("127.0.0.1", sim.port, timeout_s=2.0)
            try:
                for seq in (no_qr, torn, torn + 1):  # the last: nothing in front of it
                    pid, error = await client.read_label(seq)
                    assert pid is None
                    assert error == "label unreadable: code reader reports no read"
                # a no-read is an answer, not a link fault: the connection stays up
                assert client.backoff.failures == 0
            finally:
                await client.close()

    run(main)


def test_timeout_drops_the_late_answer_and_the_next_read_gets_its_own_cell() -> None:
    slow, nxt = first(passport=True), first(passport=True, after=first(passport=True))

    async def main() -> None:
        async with reader_sim(Conveyor(slow, nxt)) as sim:
            client = TcpCodeReader("127.0.0.1", sim.port, timeout_s=0.2)
            try:
                sim.delay_s = 0.6
                pid, error = await client.read_label(slow)
                assert pid is None
                assert error is not None and "no answer within 0.2 s" in error, error
                sim.delay_s = 0.0
                await asyncio.sleep(0.6)  # the late answer went to the closed connection
                await until_backoff_over(client)
                assert await client.read_label(nxt) == (passport(nxt), None)
            finally:
                await client.close()

    run(main)


def test_a_cancelled_read_leaves_its_late_answer_behind() -> None:
    """The line cancels a cell's measurement when its take was in doubt (plant/line.py)."""
    a = first(passport=True)
    b = first(passport=True, after=a)

    async def main() -> None:
        async with reader_sim(Conveyor(a, b)) as sim:
            client = TcpCodeReader("127.0.0.1", sim.port, timeout_s=2.0)
            try:
                sim.delay_s = 0.3
                task = asyncio.create_task(client.read_label(a))
                await asyncio.sleep(0.1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                sim.delay_s = 0.0
                await asyncio.sleep(0.3)
                assert await client.read_label(b) == (passport(b), None)
            finally:
                await client.close()

    run(main)


def test_dropped_connection_then_reconnect() -> None:
    a = first(passport=True)
    b = first(passport=True, after=a)
    c = first(passport=True, after=b)

    async def main() -> None:
        conveyor = Conveyor(a, b)
        async with reader_sim(conveyor) as sim:
            port = sim.port
            client = TcpCodeReader("127.0.0.1", port, timeout_s=2.0)
            try:
                assert (await client.read_label(a))[0] == passport(a)
                sim.drop_connections()
                await asyncio.sleep(0.05)
                pid, error = await client.read_label(b)
                assert pid is None
                assert error is not None and "connection lost" in error, error
                # within the backoff no attempt is made, and the error says when the next is
                pid, error = await client.read_label(b)
                assert pid is None and error is not None and "next attempt in" in error, error
                await until_backoff_over(client)
                assert (await client.read_label(b))[0] == passport(b)
            finally:
                await client.close()
        # the reader is switched off: refused; switched on again on its port: reads again
        await until_backoff_over(client)
        pid, error = await client.read_label(c)
        assert pid is None and error is not None and "cannot connect" in error, error
        async with reader_sim(Conveyor(c), port=port):
            await until_backoff_over(client)
            try:
                assert (await client.read_label(c))[0] == passport(c)
            finally:
                await client.close()

    run(main)


def test_simulator_speaks_the_vendor_framing() -> None:
    """A client written from the framing (LON/LOFF, CR-terminated), not the driver."""
    bare = first(passport=True, url=False)
    no_qr = first(passport=False)

    async def main() -> None:
        async with reader_sim(Conveyor(bare, no_qr)) as sim:
            r, w = await asyncio.open_connection("127.0.0.1", sim.port)
            try:

                async def command(text: bytes) -> bytes:
                    w.write(text + b"\r")
                    await w.drain()
                    return await asyncio.wait_for(r.readuntil(b"\r"), 2.0)

                assert await command(b"LON") == passport(bare).encode() + b"\r"
                w.write(b"LOFF\r")  # trigger off: no answer of its own ...
                assert await command(b"LON") == b"ERROR\r"  # ... the next line is LON's
                assert await command(b"BOGUS") == b"ER,BOGUS,00\r"  # undefined command
                w.write(b"LON\r\n")  # a host that ends its lines with CR LF
                await w.drain()
                assert await asyncio.wait_for(r.readuntil(b"\r"), 2.0) == b"ERROR\r"  # empty
            finally:
                w.close()
        assert sim.triggers == 3

    run(main)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("port = 70000", r"camera\.port: .*65535"),
        ("timeout_s = 0", r"camera\.timeout_s: .*greater than 0"),
        ('kind = "sim_reader"', r"camera\.kind: .*'tcp_reader'"),
    ],
)
def test_bad_reader_settings_are_refused_naming_the_key(
    tmp_path: Path, setting: str, named: str
) -> None:
    cfg = tmp_path / "config"
    shutil.copytree(REPO / "config", cfg)
    toml = cfg / "plant.toml"
    key = setting.split(" = ")[0]
    text, n = re.subn(
        rf"(\[camera\][^\[]*?)^{key} = .*$", rf"\g<1>{setting}", toml.read_text(), flags=re.M
    )
    assert n == 1
    toml.write_text(text)
    with pytest.raises(ConfigError, match=named) as exc:
        load_plant(cfg)
    assert "\n" not in str(exc.value)
