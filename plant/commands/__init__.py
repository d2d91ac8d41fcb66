"""Command groups of the `plant` CLI; each module exposes `register(app)`.

Shared here: the per-invocation context (which config directory) and the stderr console.
"""

from __future__ import annotations

from dataclasses import dataclass
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
