"""HTML pages: a thin server-rendered shell per page; /static/hmi.js fills in live data.

Style after ISA-101 (high-performance HMI): grey, no decoration, colour only for abnormal states.
A page asks for login (303 to /login) without a session and shows a 403 page below its role.
"""

from __future__ import annotations

import secrets
from html import escape
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hmi.api import login_or_raise
from hmi.auth import COOKIE, Principal, close_session, open_session, principal_of
from hmi.context import HmiContext, ctx
from plant.domain import Role, Route

router = APIRouter(include_in_schema=False)
Ctx = Annotated[HmiContext, Depends(ctx)]

NAV = (
    ("/", "Overview", Role.viewer),
    ("/cells", "Cells", Role.viewer),
    ("/alarms", "Alarms", Role.viewer),
    ("/purity", "Purity", Role.viewer),
    ("/classifier", "Classifier", Role.viewer),
    ("/setpoints", "Setpoints", Role.engineer),
)


def _head(title: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)} · Plant HMI</title>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        "<link rel=stylesheet href='/static/vendor/uPlot.min.css'>"
        "<link rel=stylesheet href='/static/hmi.css'>"
    )


def layout(page: str, title: str, who: Principal, body: str, status: int = 200) -> HTMLResponse:
    """The common frame: navigation, user, alarm banner, then the page body."""
    links = "".join(
        f"<a href='{href}'{' class=current' if label.lower() == page else ''}>{label}</a>"
        for href, label, role in NAV
        if who.user.can(role)
    )
    html = (
        _head(title)
        + f"<meta name=csrf content='{escape(who.csrf)}'>"
        + f"<meta name=role content='{who.user.role.value}'>"
        + "<script src='/static/vendor/uPlot.iife.min.js' defer></script>"
        + "<script src='/static/hmi.js' defer></script></head>"
        + f"<body data-page='{page}'><header><span class=brand>Plant HMI</span>"
        + f"<nav>{links}</nav><span id=conn class=conn title='live connection'>connecting…</span>"
        + f"<span class=who>{escape(who.user.name)} ({who.user.role.value})</span>"
        + "<form method=post action='/logout' class=inline>"
        + f"<input type=hidden name=csrf value='{escape(who.csrf)}'>"
        + "<button type=submit>Log out</button></form></header>"
        + "<div id=flood class='banner flood' hidden></div>"
        + "<div id=alarm-banner class=banner-line></div>"
        + f"<main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status)


def guard(request: Request, role: Role) -> Principal | Response:
    """The logged-in principal, or a redirect to login, or a 403 page."""
    who = principal_of(request)
    if who is None:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    if not who.user.can(role):
        return layout(
            "forbidden",
            "Not permitted",
            who,
            f"<p class=abnormal id=forbidden>This page needs the role <b>{role.value}</b> or "
            f"higher; you are logged in as <b>{who.user.role.value}</b>.</p>",
            status=403,
        )
    return who


ROUTE_BOXES = "".join(
    f"<div class=route data-route='{r.value}'><div class=label>{r.value.replace('_', ' ')}</div>"
    f"<div class=count id='count-{r.value}'>–</div><div class=unit>cells</div></div>"
    for r in Route
)
OVERVIEW = f"""
<section class=lines id=lines></section>
<template id=line-template>
<div class=line-panel>
  <h2>Line <span data-f=line></span> <span class=state data-f=running></span></h2>
  <div class=mimic>
    <div class=station>Infeed</div><div class=arrow>→</div>
    <div class=station>Label camera</div><div class=arrow>→</div>
    <div class=station data-health=xrf>XRF <span data-f=xrf_health></span></div>
    <div class=arrow>→</div>
    <div class=station data-health=plc>Diverter (PLC <span data-f=plc_health></span>)</div>
    <div class=arrow>→</div>
    <div class=routes>{ROUTE_BOXES}</div>
  </div>
  <table class=kpi><tr>
    <th>Throughput</th><td><span data-f=cells_per_min></span> cells/min</td>
    <th>Quarantine rate</th><td><span data-f=quarantine_rate></span> %</td>
    <th>Status age</th><td><span data-f=age></span> s</td>
  </tr></table>
</div>
</template>
<p id=no-lines class=muted>No line has reported yet.</p>
<section><h2>Last cells</h2><table class=grid id=last-cells><thead><tr><th>line</th><th>seq</th>
<th>chemistry</th><th>confidence</th><th>route</th><th>reason</th></tr></thead><tbody></tbody>
</table></section>
"""

CELLS = """
<form id=cell-search class=filters>
 <label>Passport id <input name=passport_id size=28></label>
 <label>Chemistry <input name=chemistry size=8></label>
 <label>Route <select name=route><option value=''>any</option>
  <option>hydromet</option><option>black_mass</option><option>reject</option>
  <option>quarantine</option></select></label>
 <label>State <input name=state size=10></label>
 <label>From <input name=since type=datetime-local></label>
 <label>To <input name=until type=datetime-local></label>
 <button type=submit>Search</button>
</form>
<table class=grid id=cell-table><thead><tr><th>id</th><th>line</th><th>seq</th><th>time (UTC)</th>
<th>passport</th><th>chemistry</th><th>confidence</th><th>route</th><th>state</th><th>reason</th>
</tr></thead><tbody></tbody></table>
<button id=more hidden>Older cells</button>
"""

CELL_DETAIL = """
<div id=cell-detail data-id='{cell_id}'>
<table class=fields id=cell-fields></table>
<h2>Spectrum</h2><div id=spectrum class=chart></div><p id=spectrum-note class=muted></p>
<h2>Passport</h2><table class=fields id=passport-fields></table>
<section id=release hidden><h2>Release from quarantine</h2>
<form id=release-form class=filters>
 <label>Route <select name=route><option>hydromet</option><option>black_mass</option>
 <option>reject</option></select></label>
 <label>Reason <input name=reason required size=50></label>
 <button type=submit>Release</button></form><p id=release-msg></p></section>
</div>
"""

ALARMS = """
<section><h2>Standing alarms</h2>
<table class=grid id=standing><thead><tr><th>priority</th><th>state</th><th>raised (UTC)</th>
<th>line</th><th>source</th><th>message</th><th>actions</th></tr></thead><tbody></tbody></table>
</section>
<section><h2>Shelved and suppressed</h2>
<table class=grid id=hidden-alarms><thead><tr><th>priority</th><th>state</th><th>source</th>
<th>message</th><th>until</th><th>reason</th><th></th></tr></thead><tbody></tbody></table></section>
<section><h2>History</h2>
<form id=alarm-search class=filters>
 <label>From <input name=since type=datetime-local></label>
 <label>To <input name=until type=datetime-local></label>
 <label>Priority <select name=priority><option value=''>any</option><option>critical</option>
 <option>high</option><option>medium</option><option>low</option><option>diagnostic</option>
 </select></label>
 <label>Source <input name=source size=12></label><button type=submit>Search</button></form>
<table class=grid id=history><thead><tr><th>raised (UTC)</th><th>priority</th><th>state</th>
<th>source</th><th>message</th><th>acked by</th><th>note</th><th>cleared</th></tr></thead>
<tbody></tbody></table></section>
<section><h2>Alarm limits</h2>
<table class=grid id=limits><thead><tr><th>tag</th><th>kind</th><th>limit</th><th>deadband</th>
<th>on-delay</th><th>priority</th><th>changed by</th></tr></thead><tbody></tbody></table>
<form id=limit-form class='filters engineer-only' hidden>
 <label>Tag <input name=tag required size=14></label>
 <label>Kind <select name=kind><option>high</option><option>low</option></select></label>
 <label>Limit <input name=limit type=number step=any required size=6></label>
 <label>Unit <input name=unit size=4></label>
 <label>Deadband <input name=deadband type=number step=any min=0 value=0 size=5></label>
 <label>On-delay s <input name=on_delay_s type=number step=any min=0 value=0 size=4></label>
 <label>Priority <select name=priority><option>medium</option><option>high</option>
 <option>critical</option><option>low</option><option>diagnostic</option></select></label>
 <button type=submit>Save limit</button><span id=limit-msg></span></form></section>
"""

PURITY = """
<section><h2>Purity trend</h2>
<label>Product <select id=product><option value=''>all</option></select></label>
<div id=purity-chart class=chart></div></section>
<section id=purity-overview></section>
<section><h2>Batches</h2><table class=grid id=batches><thead><tr><th>batch</th><th>product</th>
<th>created (UTC)</th><th>mass</th><th>purity</th><th>verdict</th><th>reasons</th></tr></thead>
<tbody></tbody></table></section>
"""

CLASSIFIER = """
<section><h2>Active model</h2><div id=models></div></section>
<section><h2>Recent cells</h2><p id=clf-summary></p>
<div id=conf-chart class=chart></div>
<div class=cols><table class=grid id=per-class><thead><tr><th>class</th><th>cells</th></tr>
</thead><tbody></tbody></table>
<table class=grid id=reasons><thead><tr><th>quarantine reason</th><th>cells</th></tr></thead>
<tbody></tbody></table></div></section>
"""

SETPOINTS = """
<section><h2>Process setpoints</h2><table class=grid id=setpoints><thead><tr><th>setpoint</th>
<th>range</th><th>requested</th><th>applied</th><th>new value</th><th></th></tr></thead>
<tbody></tbody></table></section>
<section><h2>Routing thresholds (config/routing.toml)</h2><p id=routing-note class=muted></p>
<table class=grid id=thresholds><thead><tr><th>threshold</th><th>range</th><th>value</th>
<th>new value</th><th></th></tr></thead><tbody></tbody></table></section>
<p id=setpoint-msg></p>
"""


def _page(path: str, page: str, title: str, body: str, role: Role = Role.viewer) -> None:
    def handler(request: Request) -> Response:
        who = guard(request, role)
        return who if isinstance(who, Response) else layout(page, title, who, body)

    handler.__name__ = f"page_{page}"
    router.add_api_route(path, handler, methods=["GET"], response_class=HTMLResponse)


_page("/", "overview", "Overview", OVERVIEW)
_page("/cells", "cells", "Cells", CELLS)
_page("/alarms", "alarms", "Alarms", ALARMS)
_page("/purity", "purity", "Purity", PURITY)
_page("/classifier", "classifier", "Classifier", CLASSIFIER)
_page("/setpoints", "setpoints", "Setpoints", SETPOINTS, Role.engineer)


@router.get("/cells/{cell_id}", response_class=HTMLResponse)
def cell_page(cell_id: int, request: Request) -> Response:
    who = guard(request, Role.viewer)
    if isinstance(who, Response):
        return who
    return layout("cells", f"Cell {cell_id}", who, CELL_DETAIL.format(cell_id=cell_id))


LOGIN_CSRF_COOKIE = "plant_login_csrf"


def _login_page(
    request: Request, error: str = "", next_: str = "/", status: int = 200
) -> HTMLResponse:
    """The login form with a fresh CSRF token, also set as a cookie the form post must match
    (double submit), so another site cannot log a browser in under its own account."""
    token = secrets.token_urlsafe(24)
    msg = f"<p class=abnormal id=login-error>{escape(error)}</p>" if error else ""
    resp = HTMLResponse(
        _head("Log in")
        + "</head><body class=login><main><h1>Plant HMI</h1>"
        + msg
        + "<form method=post action='/login' class=login-form>"
        + f"<input type=hidden name=next value='{escape(next_)}'>"
        + f"<input type=hidden name=csrf value='{token}'>"
        + "<label>User <input name=name autocomplete=username required autofocus></label>"
        + "<label>Password <input name=password type=password "
        + "autocomplete=current-password required></label>"
        + "<button type=submit>Log in</button></form></main></body></html>",
        status_code=status,
    )
    resp.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/login",
    )
    return resp


def _safe_next(next_: str) -> str:
    """Only same-site paths: never redirect a login to another host."""
    return next_ if next_.startswith("/") and not next_.startswith("//") else "/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _login_page(request, next_=_safe_next(next))


@router.post("/login")
def login_form(
    request: Request,
    c: Ctx,
    name: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Browser login: checks the form's CSRF token, sets the HttpOnly, SameSite=Strict session
    cookie."""
    sent = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not (csrf and sent and secrets.compare_digest(csrf, sent)):
        return _login_page(
            request,
            "The login form expired or came from another site; log in again.",
            _safe_next(next),
            403,
        )
    try:
        user = login_or_raise(c, request, name, password)
    except HTTPException as exc:
        page = _login_page(request, str(exc.detail), _safe_next(next), exc.status_code)
        page.headers.update(exc.headers or {})
        return page
    token, _csrf, _exp = open_session(c.store, user, c.users.auth.session_hours)
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    resp.set_cookie(
        COOKIE,
        token,
        max_age=int(c.users.auth.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return resp


@router.post("/logout")
def logout_form(request: Request, c: Ctx, csrf: Annotated[str, Form()] = "") -> Response:
    """Browser logout (CSRF-checked form post)."""
    who = principal_of(request)
    token = request.cookies.get(COOKIE)
    if who is not None and token and secrets.compare_digest(csrf, who.csrf):
        close_session(c.store, token, who.user.name)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp
