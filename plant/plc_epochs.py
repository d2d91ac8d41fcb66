"""PLC epochs: each numbering of a line's cells, from one PLC start (or sequence reset) to the next.

A PLC restart or program download starts its sequence numbers again at 1, so a cell is
identified by (line, epoch, seq), never by the number alone (docs/plc.md, "PLC restarts").
The checks are pure; the store functions are run by the line engine's database worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from plant.domain import CellState
from plant.store import CellRow, PlcEpochRow, utcnow

EPOCH_TAG = "plc.epoch"
HEARTBEAT_TAG = "plc.heartbeat"
WATCHDOG_TAG = "controller.watchdog"


@dataclass(frozen=True)
class Epoch:
    """The numbering the line engine works in."""

    number: int
    plc_epoch: int | None  # the PLC's start-up counter when it began, if the map has one


def restart_at_start(
    epoch: Epoch, poll: Mapping[str, Any], taken_seq: int, max_final_seq: int
) -> str | None:
    """Why the PLC found at start-up is not the one that numbered the stored epoch, or None.

    `poll` is a read of the line block, `taken_seq` the PLC's `infeed.taken_seq` register and
    `max_final_seq` the highest seq of the epoch whose diverter command the PLC executed."""
    counter = poll.get(EPOCH_TAG)
    if counter is not None and epoch.plc_epoch is not None and int(counter) != epoch.plc_epoch:
        return f"PLC start-up counter {EPOCH_TAG} is {int(counter)}, was {epoch.plc_epoch}"
    if max_final_seq > taken_seq:
        return (
            f"the PLC reports infeed.taken_seq {taken_seq}, but cells up to seq {max_final_seq} "
            "were sorted in this numbering"
        )
    head = int(poll["infeed.cell_seq"])
    if head and head <= max_final_seq:
        return f"the PLC shows seq {head} at the infeed, already sorted in this numbering"
    return None


def restart_in_run(epoch: Epoch, poll: Mapping[str, Any], last_taken: int) -> str | None:
    """Why this poll shows a PLC whose numbering started again while the line ran, or None."""
    counter = poll.get(EPOCH_TAG)
    if counter is not None and epoch.plc_epoch is not None and int(counter) != epoch.plc_epoch:
        return f"PLC start-up counter {EPOCH_TAG} changed from {epoch.plc_epoch} to {int(counter)}"
    head = int(poll["infeed.cell_seq"])
    if head and head <= last_taken:
        return f"the PLC shows seq {head} at the infeed after seq {last_taken} was taken"
    return None


def restart_on_reconnect(taken_seq: int, last_taken: int) -> str | None:
    """A PLC back after an outage whose take register went back lost its memory: restarted."""
    if taken_seq < last_taken:
        return f"after the outage the PLC reports infeed.taken_seq {taken_seq}, not {last_taken}"
    return None


# -- store (run on the line's database worker) ---------------------------------------------------
def current_epoch(s: Session, line: str) -> Epoch | None:
    """The line's newest epoch, or None before its first cell."""
    row = s.scalars(
        select(PlcEpochRow).where(PlcEpochRow.line == line).order_by(PlcEpochRow.epoch.desc())
    ).first()
    return None if row is None else Epoch(row.epoch, row.plc_epoch)


def open_epoch(s: Session, line: str, number: int, plc_epoch: int | None, reason: str) -> Epoch:
    """Record the start of a new numbering."""
    s.add(
        PlcEpochRow(
            line=line, epoch=number, plc_epoch=plc_epoch, reason=reason, started_at=utcnow()
        )
    )
    return Epoch(number, plc_epoch)


def note_plc_epoch(s: Session, line: str, epoch: Epoch, plc_epoch: int) -> Epoch:
    """An epoch begun without the PLC's counter (an older tag map) learns it."""
    row = s.scalars(
        select(PlcEpochRow).where(PlcEpochRow.line == line, PlcEpochRow.epoch == epoch.number)
    ).one()
    row.plc_epoch = plc_epoch
    return Epoch(epoch.number, plc_epoch)


def max_final_seq(s: Session, line: str, epoch: int) -> int:
    """The highest seq of the epoch the diverter executed (its cell is final)."""
    return int(
        s.scalar(
            select(func.max(CellRow.seq)).where(
                CellRow.line == line,
                CellRow.epoch == epoch,
                CellRow.state.in_([CellState.confirmed, CellState.quarantined]),
            )
        )
        or 0
    )
