"""Client of a smart code reader on TCP (Keyence SR/BL command protocol): the reader decodes the
label on the device and sends the text, so the controller spends no CPU on images.

Framing (docs/camera.md, "TCP code reader"): the host sends `LON<CR>` (trigger on); the reader
answers the decoded text terminated by `<CR>`, or `ERROR<CR>` when it read nothing; `LOFF<CR>`
(trigger off) ends a read and has no answer of its own. One connection per reader; one read at a
time on it.
"""

from __future__ import annotations

import asyncio
import contextlib

from drivers.backoff import Backoff
from drivers.camera import LabelRead, check_payload, label_passport

TRIGGER_ON = b"LON\r"
TRIGGER_OFF = b"LOFF\r"
NO_READ = b"ERROR"  # the reader's read-error text (Keyence default)
END = b"\r"
MAX_ANSWER = 4096  # bytes: longer than any label the reader could send
RECONNECT_FIRST_S = 0.1
RECONNECT_CAP_S = 5.0


class TcpCodeReader:
    """One smart code reader at host:port; `read_label` triggers one read.

    A read that times out or loses the connection closes it, so a late answer is never taken
    for the next cell's; the next read reconnects once the backoff allows."""

    def __init__(
        self, host: str, port: int, *, timeout_s: float = 1.0, name: str = "code reader"
    ) -> None:
        self.host, self.port, self.timeout_s, self.name = host, port, timeout_s, name
        self.backoff = Backoff(RECONNECT_FIRST_S, RECONNECT_CAP_S, jitter=True)
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def where(self) -> str:
        return f"{self.name} {self.host}:{self.port}"

    async def read_label(self, seq: int) -> tuple[str | None, str | None]:
        """(passport id, None) of the label in front of the reader now (cell `seq`), or (None,
        why there is none): no read, timeout, connection lost."""
        read = await self.read()
        return label_passport(read)

    async def read(self) -> LabelRead:
        """One triggered read: the reader's text, or why there is none."""
        async with self._lock:
            try:
                read = await self._exchange()
            except asyncio.CancelledError:
                self._drop()  # the answer may still come: never give it to another cell
                raise
            except TimeoutError:
                if self._writer is not None:  # a read under way: stop it (best effort)
                    self._writer.write(TRIGGER_OFF)
                read = self._failed(f"no answer within {self.timeout_s} s")
            except _CannotConnect as exc:
                read = self._failed(str(exc))
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                read = self._failed(_describe(exc))
            except _Offline as exc:
                read = LabelRead(None, str(exc))
            else:
                self.backoff.succeeded()
                self.last_error = None
            return read

    async def _exchange(self) -> LabelRead:
        if self._writer is None:
            wait = self.backoff.left()
            if wait > 0:
                raise _Offline(
                    f"{self.where} unreachable ({self.last_error}); next attempt in {wait:.1f} s"
                )
            try:
                async with asyncio.timeout(self.timeout_s):
                    self._reader, self._writer = await asyncio.open_connection(
                        self.host, self.port, limit=MAX_ANSWER
                    )
            except (OSError, TimeoutError) as exc:
                raise _CannotConnect(f"cannot connect ({_why(exc)})") from None
        assert self._reader is not None and self._writer is not None
        async with asyncio.timeout(self.timeout_s):
            self._writer.write(TRIGGER_ON)
            await self._writer.drain()
            answer = (await self._reader.readuntil(END))[: -len(END)]
        if answer == NO_READ:
            return LabelRead(None, f"{self.name} reports no read")
        return check_payload(answer)

    def _failed(self, why: str) -> LabelRead:
        """Drop the connection and wait before the next attempt."""
        self.last_error = why
        self._drop()
        wait = self.backoff.failed()
        return LabelRead(None, f"{self.where}: {why}; reconnecting in {wait:.1f} s")

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def close(self) -> None:
        writer = self._writer
        self._drop()
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Offline(Exception):
    """The reader is in its reconnect backoff: no attempt now."""


class _CannotConnect(Exception):
    """The reader did not accept a connection."""


def _describe(exc: Exception) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection lost (the reader closed it)"
    if isinstance(exc, asyncio.LimitOverrunError):
        return f"answer longer than {MAX_ANSWER} bytes without <CR>"
    return f"connection lost ({_why(exc)})"


def _why(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer"
    return str(getattr(exc, "strerror", None) or exc or type(exc).__name__)
