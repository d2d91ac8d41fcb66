"""HTML pages: a thin server-rendered shell per page; /static/hmi.js fills in live data.

Style after ISA-101 (high-performance HMI): grey, no decoration, colour only for abnormal states.
A page asks for login (303 to /login) without a session and shows a 403 page below its role.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from html import escape
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hmi.api import login_or_raise
from hmi.auth import COOKIE, Principal, close_session, open_session, principal_of
from hmi.context import HmiContext, ctx
from plant.domain import AlarmPriority, CellState, Chemistry, Role, Route
from plant.historian import PROCESS_TAGS, RECORDED_TAGS

router = APIRouter(include_in_schema=False)
Ctx = Annotated[HmiContext, Depends(ctx)]

NAV = (
    ("/", "Overview", Role.viewer),
    ("/cells", "Cells", Role.viewer),
    ("/alarms", "Alarms", Role.viewer),
    ("/trends", "Trends", Role.viewer),
    ("/purity", "Purity", Role.viewer),
    ("/classifier", "Classifier", Role.viewer),
    ("/setpoints", "Setpoints", Role.engineer),
    ("/audit", "Audit", Role.engineer),
    ("/users", "Users", Role.admin),
)
# Shelve presets of the Alarms page (minutes, label); the server caps them at max_shelve_hours.
SHELVE_PRESETS = ((15, "15 min"), (60, "1 h"), (240, "4 h"), (480, "8 h (shift)"))
# Every time on every page is UTC (the store keeps UTC; time inputs are read as UTC too).
TZ_NOTE = "<span class='tz muted' title='every time on these pages'>times in UTC</span>"


def _options(values: Iterable[object], any_label: str = "any") -> str:
    """<option>s of a filter: `any` first, then each value."""
    opts = "".join(f"<option>{escape(str(v))}</option>" for v in values)
    return f"<option value=''>{any_label}</option>{opts}"


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
        + TZ_NOTE
        + "<button type=button id=sound class=sound aria-pressed=false "
        + "title='sound a tone for each new unacknowledged alarm (this browser only)'>"
        + "Sound off</button>"
        + f"<span class=who>{escape(who.user.name)} ({who.user.role.value})</span>"
        + "<form method=post action='/logout' class=inline>"
        + f"<input type=hidden name=csrf value='{escape(who.csrf)}'>"
        + "<button type=submit>Log out</button></form></header>"
        + "<div id=flood class='banner flood' hidden></div>"
        + "<div id=alarm-banner class=banner-line></div>"
        + "<div id=alarm-more class=banner-more hidden><a href='/alarms'></a></div>"
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
<section class=strip>
 <div id=alarm-counts class=counts title='standing alarms by priority'>{
    "".join(
        f"<a href='/alarms' class=count-box data-prio={p.value}><span class=n>0</span>"
        f"<span class=label>{p.value}</span></a>"
        for p in AlarmPriority
    )
}</div>
 <div id=sparks class=sparks>{
    "".join(
        f"<div class=spark data-tag='{t}'><div class=spark-head><span>{t}</span>"
        "<b data-f=value>–</b></div><div class=spark-chart></div></div>"
        for t in PROCESS_TAGS
        if t != "leach.ph_setpoint"
    )
}</div>
</section>
<section class=lines id=lines></section>
<template id=line-template>
<div class=line-panel>
  <h2>Line <span data-f=line></span> <span class=state data-f=running></span>
  <span class=muted>status age <span data-f=age></span> s</span></h2>
  <div class=mimic>
    <div class=station>Infeed</div><div class=arrow>→</div>
    <div class=station data-health=label>Label reader <span data-f=label_health></span></div>
    <div class=arrow>→</div>
    <div class=station data-health=xrf>XRF <span data-f=xrf_health></span>
     <div class=heads data-f=heads></div></div>
    <div class=arrow>→</div>
    <div class=station data-health=plc>Diverter (PLC <span data-f=plc_health></span>)</div>
    <div class=arrow>→</div>
    <div class=routes>{ROUTE_BOXES}</div>
  </div>
  <div class=kpis>
   <div class=kpi-item><span class=muted>Throughput (cells/min, against XRF capacity)</span>
    <div data-g=throughput></div></div>
   <div class=kpi-item><span class=muted>Quarantine rate (%, against its alarm limit)</span>
    <div data-g=quarantine></div></div>
   <div class=kpi-item><span class=muted>Route rates (% of cells)</span>
    <div data-f=route_rates class=rates></div></div>
  </div>
</div>
</template>
<p id=no-lines class=muted>No line has reported yet.</p>
<section><h2>Products: last batch against its spec</h2>
<div id=products class=products><p class=muted>No product specs (config/products.toml).</p></div>
</section>
<section><h2>Last cells</h2><table class=grid id=last-cells><thead><tr><th>line</th><th>seq</th>
<th>chemistry</th><th>confidence</th><th>route</th><th>reason</th></tr></thead><tbody></tbody>
</table></section>
"""

CELLS = f"""
<form id=cell-search class=filters>
 <label>Passport id <input name=passport_id size=28></label>
 <label>Chemistry <select name=chemistry>{_options(Chemistry)}</select></label>
 <label>Route <select name=route>{_options(Route)}</select></label>
 <label>State <select name=state>{_options(CellState)}</select></label>
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
<section><h2>Standing alarms <span class=muted>(priority, then newest first)</span></h2>
<form id=standing-filter class=filters>
 <label>Priority <select name=priority>{prio}</select></label>
 <label>Source <input name=source size=12></label>
</form>
<div id=alarm-ops class='filters operator-only' hidden>
 <label>Note <input name=note id=ack-note size=24></label>
 <button type=button id=ack-selected>Acknowledge selected</button>
 <button type=button id=ack-all>Acknowledge all</button>
 <label>Shelve for <select id=shelve-preset>{presets}</select></label>
 <label>Reason <input id=shelve-reason size=24></label>
 <button type=button id=shelve-selected>Shelve selected</button>
 <span id=ops-msg></span>
</div>
<table class=grid id=standing><thead><tr><th><input type=checkbox id=select-all
 title='select all shown'></th><th>priority</th><th>state</th><th>raised (UTC)</th>
<th>line</th><th>source</th><th>message</th><th>actions</th></tr></thead><tbody></tbody></table>
</section>
<section><h2>Shelved and suppressed</h2>
<table class=grid id=hidden-alarms><thead><tr><th>priority</th><th>state</th><th>source</th>
<th>message</th><th>until (UTC)</th><th>reason</th><th></th></tr></thead><tbody></tbody></table>
</section>
<section><h2>History</h2>
<form id=alarm-search class=filters>
 <label>From (UTC) <input name=since type=datetime-local></label>
 <label>To (UTC) <input name=until type=datetime-local></label>
 <label>Priority <select name=priority>{prio}</select></label>
 <label>Source <input name=source size=12></label><button type=submit>Search</button>
 <button type=button id=alarm-csv>Export CSV</button></form>
<table class=grid id=history><thead><tr><th>raised (UTC)</th><th>priority</th><th>state</th>
<th>source</th><th>message</th><th>acked by</th><th>note</th><th>cleared (UTC)</th></tr></thead>
<tbody></tbody></table></section>
<section><h2>Journal <span class=muted>(every occurrence and action, newest first)</span></h2>
<form id=journal-search class=filters>
 <label>From (UTC) <input name=since type=datetime-local></label>
 <label>To (UTC) <input name=until type=datetime-local></label>
 <label>Alarm id <input name=alarm_id type=number min=1 size=6></label>
 <button type=submit>Search</button> <button type=button id=journal-csv>Export CSV</button></form>
<table class=grid id=journal><thead><tr><th>time (UTC)</th><th>alarm</th><th>priority</th>
<th>source</th><th>event</th><th>by</th><th>note</th></tr></thead><tbody></tbody></table>
</section>
<section><h2>Alarm limits</h2>
<table class=grid id=limits><thead><tr><th>line</th><th>tag</th><th>kind</th><th>limit</th>
<th>deadband</th>
<th>on-delay</th><th>priority</th><th>changed by</th></tr></thead><tbody></tbody></table>
<form id=limit-form class='filters engineer-only' hidden>
 <label>Line <input name=line value='*' size=4 title='a line id, or * for every line'></label>
 <label>Tag <select name=tag required>{tags}</select></label>
 <label>Kind <select name=kind><option>high</option><option>low</option></select></label>
 <label>Limit <input name=limit type=number step=any required size=6></label>
 <label>Unit <input name=unit size=4></label>
 <label>Deadband <input name=deadband type=number step=any min=0 value=0 size=5></label>
 <label>On-delay s <input name=on_delay_s type=number step=any min=0 value=0 size=4></label>
 <label>Priority <select name=priority><option>medium</option><option>high</option>
 <option>critical</option><option>low</option><option>diagnostic</option></select></label>
 <button type=submit>Save limit</button><span id=limit-msg></span></form></section>
""".format(
    prio=_options(AlarmPriority),
    presets="".join(f"<option value={m}>{label}</option>" for m, label in SHELVE_PRESETS),
    tags="".join(f"<option>{t}</option>" for t in PROCESS_TAGS),
)

TRENDS = """
<form id=trend-form class=filters>
 <label>Line <select name=line></select></label>
 <fieldset class=pens><legend>Pens</legend>{pens}</fieldset>
 <label>Range <select name=range>
  <option value=900>15 min</option><option value=3600 selected>1 h</option>
  <option value=28800>8 h</option><option value=86400>24 h</option>
  <option value=604800>7 days</option></select></label>
 <label class=check><input type=checkbox name=follow checked> live follow</label>
 <button type=button id=trend-csv>Export CSV</button>
 <span class=muted>drag across a chart to zoom, double-click to zoom out</span>
</form>
<div id=trend-charts></div>
""".format(
    pens="".join(
        f"<label class=check><input type=checkbox name=pen value='{t}'"
        f"{' checked' if t in ('leach.ph', 'leach.temp_c') else ''}> {t}</label>"
        for t in RECORDED_TAGS
    )
)

PURITY = """
<section><h2>Grade per product (last batches against the spec)</h2>
<div id=product-charts class=product-grid><p class=muted>loading…</p></div></section>
<section><h2>SPC</h2><p id=spc-note class=muted></p><div id=spc-charts class=product-grid></div>
</section>
<section class=cols>
 <div><h2>Mass balance</h2><table class=grid id=balance><thead></thead><tbody></tbody></table></div>
 <div><h2>Recovery against EU targets</h2><table class=grid id=recovery><thead></thead>
 <tbody></tbody></table></div>
</section>
<section><h2>Black-mass lots</h2><table class=grid id=lots><thead></thead><tbody></tbody></table>
</section>
<section><h2>Batches</h2>
<label>Product <select id=product><option value=''>all</option></select></label>
<table class=grid id=batches><thead><tr><th>batch</th><th>product</th>
<th>created (UTC)</th><th>mass</th><th>purity</th><th>verdict</th><th>reasons</th></tr></thead>
<tbody></tbody></table></section>
"""

CLASSIFIER = """
<section><h2>Active model</h2><div id=models class=cards></div></section>
<section><h2>Last evaluation of the active model</h2><p id=eval-note class=muted></p>
<table class='grid confusion' id=confusion><thead></thead><tbody></tbody></table></section>
<section><h2>Recent cells</h2><p id=clf-summary></p>
<div id=conf-chart class=chart></div>
<div class=cols><table class=grid id=per-class><thead><tr><th>class</th><th>cells</th></tr>
</thead><tbody></tbody></table>
<table class=grid id=reasons><thead><tr><th>quarantine reason (code)</th><th>cells</th>
<th>example</th></tr></thead><tbody></tbody></table></div></section>
"""

AUDIT = """
<form id=audit-search class=filters>
 <label>User <input name=user size=12></label>
 <label>Action starts with <input name=action size=16></label>
 <label>From (UTC) <input name=since type=datetime-local></label>
 <button type=submit>Search</button></form>
<table class=grid id=audit><thead><tr><th>time (UTC)</th><th>user</th><th>action</th>
<th>target</th><th>old</th><th>new</th></tr></thead><tbody></tbody></table>
"""

USERS = f"""
<form id=user-filter class=filters>
 <label>Role <select name=role>{_options(Role)}</select></label>
 <label>Login <select name=active><option value=''>any</option><option value=true>enabled
 </option><option value=false>disabled</option></select></label></form>
<table class=grid id=users><thead><tr><th>user</th><th>role</th><th>login</th><th>new role</th>
<th>password</th><th></th></tr></thead><tbody></tbody></table>
<p id=user-msg></p>
"""

SETPOINTS = """
<section><h2>Process setpoints</h2><table class=grid id=setpoints><thead><tr><th>setpoint</th>
<th>range</th><th>requested</th><th>applied</th><th>PLC holds</th><th>measured</th>
<th>new value</th><th></th></tr></thead>
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
_page("/trends", "trends", "Trends", TRENDS)
_page("/purity", "purity", "Purity", PURITY)
_page("/classifier", "classifier", "Classifier", CLASSIFIER)
_page("/setpoints", "setpoints", "Setpoints", SETPOINTS, Role.engineer)
_page("/audit", "audit", "Audit", AUDIT, Role.engineer)
_page("/users", "users", "Users", USERS, Role.admin)


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
