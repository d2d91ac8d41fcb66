"""FastAPI application factory for the HMI: pages, JSON API, WebSocket and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from collections.abc import AsyncIterator
from html import escape
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from hmi import api, pages, ws
from hmi.context import HmiContext, SetpointWriter
from plant import __version__
from plant.config import load_plant
from plant.events import EventBus
from plant.metrics import exposition
from plant.store import Store
from plant.users import ensure_admin, load_users_config, use_hash_cost

STATIC_DIR = Path(__file__).parent / "static"
SHELVE_CHECK_S = 5.0


def announce_admin(store: Store) -> str | None:
    """First start on an empty user table: create `admin` and print its password once."""
    password = ensure_admin(store)
    if password is not None:
        print(
            "HMI first start: created user 'admin' with password "
            f"{password}\n  (shown only now; log in and create named users, or run "
            "`plant users passwd admin`)",
            file=sys.stderr,
            flush=True,
        )
    return password


def create_app(
    config_dir: Path,
    *,
    bus: EventBus | None = None,
    store: Store | None = None,
    setpoint_writer: SetpointWriter | None = None,
) -> FastAPI:
    """Build the HMI for the plant configured in `config_dir`.

    `bus`: the line engine's event bus when it runs in this process (live events); `store`: an
    open store to share (default: open the configured database); `setpoint_writer(name, value)`:
    called after a setpoint request is recorded, when the controller can apply it directly.
    """
    cfg = load_plant(config_dir)
    own_store = store is None
    st = store if store is not None else Store(cfg.database.url)
    users_cfg = load_users_config(config_dir)
    use_hash_cost(users_cfg.auth.argon2_time_cost, users_cfg.auth.argon2_memory_kib)
    c = HmiContext(st, cfg, users_cfg, config_dir, bus, setpoint_writer)
    announce_admin(st)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_expire_shelves(c))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if own_store:
                st.close()

    app = FastAPI(
        title="Plant HMI",
        version=__version__,
        description="Operator and engineer web view of the battery sorting and recycling plant. "
        "Log in with `POST /api/login` and send `Authorization: Bearer <token>`.",
        lifespan=lifespan,
    )
    app.state.hmi = c
    app.state.store = st
    app.include_router(api.router)
    app.include_router(pages.router)
    app.add_api_websocket_route("/ws", ws.endpoint)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus text format: cells per route, decision latency, quarantine rate, health."""
        return Response(exposition(st), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.exception_handler(RequestValidationError)
    async def invalid_input(request: Request, exc: RequestValidationError) -> Response:
        """422 naming the field, also when the input was NaN or infinite (no JSON for those)."""
        return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """JSON for the API, a plain page for a browser asking for a page."""
        from fastapi.exception_handlers import http_exception_handler

        if request.url.path.startswith("/api") or "text/html" not in request.headers.get(
            "accept", ""
        ):
            return await http_exception_handler(request, exc)
        return HTMLResponse(
            f"<!doctype html><title>{exc.status_code}</title>"
            f"<link rel=stylesheet href='/static/hmi.css'><main><h1>{exc.status_code}</h1>"
            f"<p>{escape(str(exc.detail))}</p><p><a href='/'>Overview</a></p></main>",
            status_code=exc.status_code,
        )

    return app


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite float written as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


async def _expire_shelves(c: HmiContext) -> None:
    """Shelved alarms come back on their own when the shelve time runs out."""
    while True:
        await asyncio.to_thread(c.alarms.expire_shelves)
        await asyncio.sleep(SHELVE_CHECK_S)
