"""Group commit: one thread runs the line's store writes, many per transaction.

The line engine awaits each write (records are committed before the actions that depend on
them), but under load the writes of many cells share one transaction, so a burst of cells costs
one commit, not one each. If the database is unreachable the worker keeps the writes and retries
with backoff: the line waits (and alarms), nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from drivers.backoff import Backoff
from plant.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[Session], Any]
_STOP = object()
DB_RETRY_FIRST_S = 0.05  # first wait while the database is unreachable; doubles up to max_backoff_s


class DbWorker:
    """Runs `fn(session)` callables in batched transactions on a dedicated thread."""

    def __init__(self, store: Store, *, max_batch: int = 256, max_backoff_s: float = 5.0) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_backoff_s = max_backoff_s
        self.healthy = True
        self.last_error: str | None = None
        self.on_health: Callable[[bool, str | None], None] | None = None
        self._q: queue.Queue[Any] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="plant-db", daemon=True)
        self._started = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        self._started = True

    async def run(self, fn: Callable[[Session], T]) -> T:
        """Run one write and wait until its transaction has committed."""
        assert self._loop is not None, "start() first"
        fut: asyncio.Future[T] = self._loop.create_future()
        self._q.put((fn, fut))
        return await fut

    async def close(self) -> None:
        """Finish the queued writes, then stop the thread."""
        if self._started:
            self._q.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._started = False

    # -- worker thread ------------------------------------------------------------------------
    def _main(self) -> None:
        stopping = False
        while not stopping:
            first = self._q.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        try:
            results = self._with_retry(lambda s: [fn(s) for fn, _ in batch])
        except Exception:
            # One bad write must not sink the others: run them one by one.
            for fn, fut in batch:
                try:
                    self._resolve(fut, self._with_retry(fn), None)
                except Exception as exc:
                    self._resolve(fut, None, exc)
            return
        for (_, fut), res in zip(batch, results, strict=True):
            self._resolve(fut, res, None)

    def _with_retry(self, fn: Op) -> Any:
        """Run in a transaction; retry while the database is unreachable."""
        backoff = Backoff(DB_RETRY_FIRST_S, self.max_backoff_s)
        while True:
            try:
                with self.store.begin() as s:
                    result = fn(s)
                self._set_health(True, None)
                return result
            except (OperationalError, DBAPIError) as exc:
                if not _is_connection_error(exc):
                    raise
                self._set_health(False, str(exc.orig or exc).splitlines()[0])
                time.sleep(backoff.failed())

    def _set_health(self, ok: bool, error: str | None) -> None:
        if ok == self.healthy:
            return
        self.healthy, self.last_error = ok, error
        if ok:
            log.warning("database reachable again")
        else:
            log.error("database unreachable: %s (writes held and retried)", error)
        cb = self.on_health
        if cb is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(cb, ok, error)

    def _resolve(self, fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        assert self._loop is not None

        def done() -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(done)


def _is_connection_error(exc: DBAPIError) -> bool:
    """True for 'server gone / cannot connect' (retry), false for bad statements (raise)."""
    if exc.connection_invalidated:
        return True
    text = str(exc.orig or exc).lower()
    return any(
        s in text
        for s in (
            "connection",
            "server closed",
            "terminating",
            "could not connect",
            "database is locked",
            "shutting down",
            "starting up",
        )
    )
