"""FastAPI application factory for the HMI: pages, JSON API, WebSocket and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import sys
from collections.abc import AsyncIterator
from html import escape
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hmi import api, pages, weighings, ws
from hmi.context import HmiContext, SetpointWriter
from plant import __version__
from plant.config import load_plant
from plant.events import EventBus
from plant.metrics import exposition
from plant.store import Store
from plant.users import ensure_admin, load_users_config, use_hash_cost, write_secret

STATIC_DIR = Path(__file__).parent / "static"
VENDOR = "/static/vendor"
SHELVE_CHECK_S = 5.0
ADMIN_PASSWORD_FILE = "admin-password.txt"
# Scripts and styles only from this server (no inline code), no framing, no plugins.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# /docs and /redoc: their one inline script by nonce; Redoc styles itself with inline <style>.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def announce_admin(store: Store, data_dir: Path) -> Path | None:
    """First start on an empty user table: create `admin`, write its password to a file only
    the owner can read, and print the file's path (never the password: stderr ends in logs)."""
    password = ensure_admin(store)
    if password is None:
        return None
    path = (data_dir / ADMIN_PASSWORD_FILE).resolve()
    write_secret(path, password + "\n")
    print(
        f"HMI first start: created user 'admin'; its password is in {path} (readable only by "
        "this user). Log in, create named users or run `plant users passwd admin`, then delete "
        "the file.",
        file=sys.stderr,
        flush=True,
    )
    return path


class SecurityHeaders:
    """ASGI middleware: CSP, no framing, nosniff and no referrer on every HTTP response (a
    response that sets its own CSP keeps it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _with_nonce(page: HTMLResponse) -> HTMLResponse:
    """A docs page with its inline script allowed by a fresh nonce."""
    nonce = secrets.token_urlsafe(16)
    html = bytes(page.body).decode().replace("<script>", f'<script nonce="{nonce}">')
    return HTMLResponse(html, headers={"Content-Security-Policy": DOCS_CSP.format(nonce=nonce)})


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
    announce_admin(st, cfg.plant.data_dir)

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
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(SecurityHeaders)
    app.state.hmi = c
    app.state.store = st
    app.include_router(api.router)
    app.include_router(weighings.router)
    app.include_router(pages.router)
    app.add_api_websocket_route("/ws", ws.endpoint)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus text format: cells per route, decision latency, quarantine rate, health."""
        return Response(exposition(st), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI from the vendored copy: the plant network has no internet."""
        return _with_nonce(
            get_swagger_ui_html(
                openapi_url="/openapi.json",
                title=f"{app.title} - API",
                swagger_js_url=f"{VENDOR}/swagger-ui-bundle.js",
                swagger_css_url=f"{VENDOR}/swagger-ui.css",
                swagger_favicon_url=f"{VENDOR}/swagger-ui-favicon-32x32.png",
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        """ReDoc from the vendored copy, without web fonts."""
        return _with_nonce(
            get_redoc_html(
                openapi_url="/openapi.json",
                title=f"{app.title} - API",
                redoc_js_url=f"{VENDOR}/redoc.standalone.js",
                redoc_favicon_url=f"{VENDOR}/swagger-ui-favicon-32x32.png",
                with_google_fonts=False,
            )
        )

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
