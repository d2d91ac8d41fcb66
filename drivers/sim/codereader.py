"""Simulated smart code reader: a real asyncio TCP server speaking the Keyence SR/BL command
protocol of drivers/codereader.py (`LON<CR>` -> decoded text or `ERROR<CR>`; `LOFF<CR>`).

On each trigger it reads the label of the cell in front of it (`view`, e.g. the simulated
conveyor: plant/commands/sim_hardware.py), from the cell's truth: damaged labels and labels
without a QR code give `ERROR`, as the simulated label images of drivers/sim/camera.py do.
Faults for tests: `delay_s` (answer this late: a reader that takes too long), and
`drop_connections()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from drivers.sim.camera import label_payload
from drivers.sim.cells import CellStream

log = logging.getLogger(__name__)

END = b"\r"
NO_READ = b"ERROR"
MAX_COMMAND = 256


class SimCodeReader:
    """A simulated code reader on TCP host:port (0: a free port, see `.port`)."""

    def __init__(
        self,
        stream: CellStream,
        view: Callable[[], int | None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.stream, self.view, self.host, self._port = stream, view, host, port
        self.delay_s = 0.0  # fault: answer this late
        self.triggers = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self._port, limit=MAX_COMMAND
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.drop_connections()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    def drop_connections(self) -> None:
        """Close every client connection (a reader power cycle or a pulled cable)."""
        for writer in list(self._writers):
            writer.close()

    def answer(self, command: bytes) -> bytes | None:
        """The reader's answer to one command (without <CR>); None: no answer."""
        if command == b"LON":
            self.triggers += 1
            seq = self.view()
            if seq is None:  # nothing in front of the reader
                return NO_READ
            truth = self.stream.truth(seq)
            payload = label_payload(truth)
            if payload is None or not truth.label_readable:
                return NO_READ
            return payload.encode()
        if command == b"LOFF":
            return None  # a one-shot read has already ended: nothing to stop
        return b"ER," + command[:32] + b",00"  # 00: undefined command

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readuntil(END)
                command = line[: -len(END)].strip(b"\n")  # a host may send CR LF
                out = self.answer(command)
                if self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                if out is not None:
                    writer.write(out + END)
                    await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("simulated code reader: connection failed")
        finally:
            self._writers.discard(writer)
            writer.close()
