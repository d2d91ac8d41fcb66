"""From measured evidence to a routing decision: classify, fuse with the passport, apply rules.

`decide_batch` is pure (plain data in, Decisions out). `Decider` wraps it for the line engine:
spectra of cells that arrive together are classified together, so a burst of cells costs one
scikit-learn call, not one each. The batches run in a thread (`InThread`) or, on the line, in
a process of their own (plant/classifier_process.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from drivers.spectra import Spectrum
from models.fusion import fuse
from models.passport import routing_problem
from plant.domain import Decision
from plant.routing import RoutingRules, decide


@dataclass(frozen=True)
class Evidence:
    """What the line measured about one cell."""

    spectrum: Spectrum | None = None
    spectrum_error: str | None = None
    passport_id: str | None = None
    passport: Any = None  # models.passport.Passport
    passport_error: str | None = None
    buffers_full: frozenset[str] = frozenset()
    duplicate_of: str | None = None  # the cell that carried this passport before
    cell_mass_g: float | None = None  # the load cell's reading (infeed.cell_mass_g)
    seen_on: date = field(default_factory=date.today)  # passport expiry is checked against it


def decide_batch(
    items: Sequence[Evidence], classifier: Any, rules: RoutingRules, model_version: str | None
) -> list[Decision]:
    """Classify the spectra present, fuse each with its passport, route by the rules."""
    with_spectrum = [i for i, ev in enumerate(items) if ev.spectrum is not None]
    results: dict[int, Any] = {}
    if with_spectrum:
        preds = classifier.predict_batch([items[i].spectrum for i in with_spectrum])
        results = dict(zip(with_spectrum, preds, strict=True))
    out = []
    for i, ev in enumerate(items):
        passport, passport_error = ev.passport, ev.passport_error
        # A draft, expired or implausible passport is no evidence: the spectrum decides alone.
        problem = routing_problem(passport, ev.seen_on) if passport is not None else None
        if problem:
            passport = None
            passport_error = f"{problem}: not routing evidence, the spectrum decides"
        fused = fuse(
            passport,
            results.get(i),
            passport_error=passport_error,
            spectrum_error=ev.spectrum_error,
        )
        out.append(
            decide(
                fused,
                rules,
                damaged=bool(getattr(passport, "damaged", False)),
                soh_pct=getattr(passport, "soh_pct", None),
                buffers_full=ev.buffers_full,
                duplicate_of=ev.duplicate_of,
                model_version=model_version if i in results else None,
                passport_mass_g=getattr(passport, "mass_g", None),
                cell_mass_g=ev.cell_mass_g,
                authenticity=(ev.passport.authenticity, ev.passport.authenticity_reason)
                if ev.passport is not None
                else None,
            )
        )
    return out


class BatchDecider(Protocol):
    """Where `decide_batch` runs: a thread of this process or a classifier process."""

    async def decide_batch(self, items: Sequence[Evidence]) -> list[Decision]: ...


@dataclass
class InThread:
    """`decide_batch` in a worker thread of this process (tests, tools)."""

    classifier: Any
    rules: RoutingRules
    model_version: str | None

    async def decide_batch(self, items: Sequence[Evidence]) -> list[Decision]:
        return await asyncio.to_thread(
            decide_batch, items, self.classifier, self.rules, self.model_version
        )


BACKLOG = 2  # cells still being measured that make a batch worth waiting for


class Decider:
    """Micro-batching front of `decide_batch` for concurrent cells."""

    def __init__(self, backend: BatchDecider, max_batch: int = 64, window_s: float = 0.0) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.window_s = window_s
        # Cells still being measured, whose evidence will follow soon (the line engine sets
        # this): a batch waits up to `window_s` for them.
        self.coming: Callable[[], int] = lambda: 0
        self._pending: list[tuple[Evidence, asyncio.Future[Decision]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def decide(self, evidence: Evidence) -> Decision:
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending.append((evidence, fut))
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await fut

    async def warm_up(self, spectra: Sequence[Spectrum]) -> None:
        """Decide these spectra once and discard the result: the first call for a calibration
        builds the fit's design matrices (~0.1 s), which the first cells must not wait for."""
        await self.backend.decide_batch([Evidence(spectrum=s) for s in spectra])

    async def _gather(self) -> None:
        """Wait (at most `window_s`) for the cells still being measured to join this batch.

        A batch of one costs about as much as a batch of eight (fixed numpy work per call),
        so under load a few ms of waiting saves CPU. Only under load: with fewer than
        `BACKLOG` cells behind it, a cell does not wait (its latency matters more).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_s
        while self.coming() >= BACKLOG and len(self._pending) < self.max_batch:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._arrived.wait()

    async def _drain(self) -> None:
        while self._pending:
            await self._gather()
            batch, self._pending = (
                self._pending[: self.max_batch],
                self._pending[self.max_batch :],
            )
            try:
                decisions = await self.backend.decide_batch([ev for ev, _ in batch])
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), d in zip(batch, decisions, strict=True):
                if not fut.done():
                    fut.set_result(d)
