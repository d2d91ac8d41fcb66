"""FastAPI application factory for the HMI."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from plant import __version__
from plant.config import load_plant
from plant.store import Store


def create_app(config_dir: Path) -> FastAPI:
    """Build the HMI app against the plant configured in `config_dir`."""
    cfg = load_plant(config_dir)
    store = Store(cfg.database.url)
    app = FastAPI(title="Plant HMI", version=__version__)
    app.state.store = store
    app.state.config = cfg

    @app.get("/api/health")
    def health() -> dict[str, object]:
        """Liveness plus what this server serves."""
        return {"status": "ok", "version": __version__, "site": cfg.plant.site}

    @app.get("/", response_class=HTMLResponse)
    def overview() -> str:
        return (
            "<!doctype html><html><head><meta charset=utf-8><title>Plant HMI</title></head>"
            f"<body><h1>Plant {cfg.plant.site}</h1><p>Cells stored: {store.count_cells()}</p>"
            "</body></html>"
        )

    return app
