"""Command groups of the `plant` CLI; each module exposes `register(app)`.

Shared here: the per-invocation context (which config directory) and the stderr console.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console

from plant.config import PlantConfig, load_plant
from plant.store import Store

err = Console(stderr=True)
out = Console()


@dataclass
class Ctx:
    """What every command gets: where its configuration lives."""

    config_dir: Path

    def plant(self) -> PlantConfig:
        return load_plant(self.config_dir)

    def store(self, *, check_schema: bool = True) -> Store:
        """Open the configured database; refuse an outdated schema unless told not to."""
        store = Store(self.plant().database.url)
        if check_schema:
            store.require_current_schema()
        return store


def ctx_of(ctx: typer.Context) -> Ctx:
    obj = ctx.find_root().obj
    assert isinstance(obj, Ctx), "plant.cli's callback sets the context"
    return obj


def time_option(text: str | None, option: str = "--since") -> datetime | None:
    """ISO time (2025-03-01 or 2025-03-01T06:00Z; UTC without a zone) or an age like 24h, 7d."""
    if text is None:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        err.print(
            f"error: {option} {text!r}: give an ISO time (2025-03-01T06:00Z) or an age (24h, 7d)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
