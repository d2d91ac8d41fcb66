"""The JSON API under /api: reads for every logged-in role, writes by role, all writes audited."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from hmi.auth import (
    Principal,
    client_of,
    close_session,
    open_session,
    require,
    session_token,
)
from hmi.context import APPLIES_LIVE, HmiContext, ctx
from plant import __version__
from plant.alarms import (
    ALL_LINES,
    ANNUNCIATED_STATES,
    AlarmError,
    alarm_journal,
    alarm_json,
    alarm_limits,
    check_line,
    delete_alarm_limit,
    limit_json,
    search_alarms,
    set_alarm_limit,
)
from plant.cell_view import (
    CellError,
    CellQuery,
    cell_detail,
    cell_json,
    cell_spectrum,
    release_cell,
    search_cells,
)
from plant.domain import AlarmPriority, AlarmState, Chemistry, Role, Route
from plant.historian import RECORDED_TAGS, Historian, lines_recording
from plant.hydromet import load_hydromet
from plant.lot_assays import AnalyserFailed, LotAssayError, NotFound, assay_lot
from plant.model_catalog import GateRefused
from plant.model_evaluation import latest_report
from plant.setpoints import SetpointError, current_setpoints, request_setpoint
from plant.status import read_statuses
from plant.store import AuditRow, CellRow
from plant.users import (
    UserError,
    add_user,
    get_user,
    list_users,
    set_active,
    set_password,
    set_role,
    verify,
)

router = APIRouter(prefix="/api")
Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]
Engineer = Annotated[Principal, Depends(require(Role.engineer))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
Ctx = Annotated[HmiContext, Depends(ctx)]
# Row ids are 64-bit in every database: a larger number is a 422, not a driver overflow (500).
MAX_ID = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


class ApiIn(BaseModel):
    """A request body: NaN and infinities are refused (422 naming the field) like any bad value."""

    model_config = ConfigDict(allow_inf_nan=False)


class ErrorOut(BaseModel):
    """Every error answer: one line, or (422 from validation) the list of wrong fields."""

    detail: str | list[dict[str, Any]]


ERRORS = {
    400: "the body is not JSON",
    401: "not logged in (or the session ended: logout, password, role or login state changed)",
    403: "role too low, or the CSRF token of a cookie session missing or wrong",
    404: "no such item",
    409: (
        "not possible now: the item's state, or a part it needs (lot analyser, model registry,"
        " routing file) failed or is missing; `detail` says which"
    ),
    422: "invalid value; `detail` names the field",
    428: "change not confirmed: send confirm=true",
    429: "too many failed logins for this account or client; wait `Retry-After` seconds",
}
AUTH = (401, 403)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error answers an operation gives."""
    return {code: {"model": ErrorOut, "description": ERRORS[code]} for code in sorted(codes)}


def utc(ts: datetime | None) -> datetime | None:
    """Query times without a zone are UTC; others are converted (the store keeps UTC)."""
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


# -- health and login ---------------------------------------------------------------------------
@router.get("/health")
def health(c: Ctx) -> dict[str, Any]:
    """Liveness for monitoring: version, site, database reachable, lines reporting."""
    try:
        lines = [st.line for st in read_statuses(c.store)]
        db = "ok"
    except Exception as exc:  # any driver error means the database is not usable
        lines, db = [], f"error: {type(exc).__name__}"
    return {
        "status": "ok" if db == "ok" else "degraded",
        "version": __version__,
        "site": c.config.plant.site,
        "database": db,
        "lines": lines,
    }


class LoginIn(ApiIn):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_at: datetime
    user: str
    role: Role


def login_or_raise(c: HmiContext, request: Request, name: str, password: str) -> Any:
    """Check credentials with throttling; raises 429 or 401, returns the user on success."""
    client = client_of(request, c.config.hmi.trusted_proxies)
    keys = (f"client:{client}", f"user:{name}")
    wait = c.throttle.retry_after(*keys)
    if wait is not None:
        raise HTTPException(
            429, f"too many failed logins; try again in {wait} s", {"Retry-After": str(wait)}
        )
    user = verify(c.store, name, password)
    if user is None:
        c.throttle.failed(*keys)
        with c.store.begin() as s:
            c.store.audit(s, name[:64], "login.failed", f"client:{client}", None, None)
        raise HTTPException(401, "wrong user name or password")
    return user


@router.post("/login", response_model=LoginOut, responses=errors(400, 401, 422, 429))
def login(body: LoginIn, request: Request, c: Ctx) -> LoginOut:
    """Exchange name and password for a bearer token (`Authorization: Bearer <token>`)."""
    user = login_or_raise(c, request, body.name, body.password)
    token, _csrf, expires = open_session(c.store, user, c.users.auth.session_hours)
    return LoginOut(token=token, expires_at=expires, user=user.name, role=user.role)


@router.post("/logout", responses=errors(*AUTH))
def logout(request: Request, who: Viewer, c: Ctx) -> dict[str, str]:
    """End this session or token."""
    token = session_token(request)
    if token:
        close_session(c.store, token, who.user.name)
    return {"status": "logged out"}


@router.get("/me", responses=errors(*AUTH))
def me(who: Viewer) -> dict[str, Any]:
    """Who is logged in, with which role, and the CSRF token for cookie sessions."""
    return {"user": who.user.name, "role": who.user.role, "csrf": who.csrf, "via": who.via}


# -- lines ------------------------------------------------------------------------------------
@router.get("/lines", responses=errors(*AUTH))
def lines(_: Viewer, c: Ctx) -> list[dict[str, Any]]:
    """Live status of every line (from the store; any number of lines and HMI processes)."""
    return [st.as_json() for st in read_statuses(c.store)]


# -- cells ------------------------------------------------------------------------------------
@router.get("/cells", responses=errors(*AUTH, 422))
def cells(
    _: Viewer,
    c: Ctx,
    passport_id: str | None = None,
    chemistry: str | None = None,
    route: str | None = None,
    state: str | None = None,
    line: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """The cell log, newest first; page on with `before_id=next_before_id`."""
    rows = search_cells(
        c.store,
        CellQuery(
            passport_id or None,
            chemistry or None,
            route or None,
            state or None,
            line or None,
            utc(since),
            utc(until),
            before_id,
            limit,
        ),
    )
    return {
        "cells": [cell_json(r) for r in rows],
        "next_before_id": rows[-1].id if len(rows) == limit else None,
    }


@router.get("/cells/{cell_id}", responses=errors(*AUTH, 404, 422))
def cell(cell_id: RowId, _: Viewer, c: Ctx) -> dict[str, Any]:
    """One cell: decision, reason, model version and the passport fields it used."""
    found = cell_detail(c.store, cell_id)
    if found is None:
        raise HTTPException(404, f"no cell with id {cell_id}")
    return found


@router.get("/cells/{cell_id}/spectrum", responses=errors(*AUTH, 404, 422))
def cell_spectrum_plot(cell_id: RowId, _: Viewer, c: Ctx) -> dict[str, Any]:
    """The cell's XRF spectrum in keV with element lines: stored, archived, or its file."""
    try:
        found = cell_spectrum(
            c.store,
            cell_id,
            c.config.plant.data_dir,
            c.config.spectra.retention_days,
            c.config.spectra_archive_dir(),
        )
    except CellError as exc:
        raise HTTPException(404, str(exc)) from None
    if found is None:
        raise HTTPException(404, f"no cell with id {cell_id}")
    return found


class ReleaseIn(ApiIn):
    route: Route
    reason: str = Field(min_length=1, max_length=1000)


@router.post("/cells/{cell_id}/release", responses=errors(*AUTH, 400, 404, 409, 422))
def release(cell_id: RowId, body: ReleaseIn, who: Operator, c: Ctx) -> dict[str, Any]:
    """Release a quarantined cell to a route after inspection (operator; reason required)."""
    try:
        row = release_cell(c.store, cell_id, body.route.value, body.reason, who.user.name)
    except CellError as exc:
        raise HTTPException(404 if "no cell" in str(exc) else 409, str(exc)) from None
    data = cell_json(row)
    c.publish("cell", row.line, data)
    return data


class LotAssayIn(BaseModel):
    black_mass_kg: float | None = Field(
        None, gt=0, le=100_000, description="weighed black mass; default: from an earlier assay"
    )


@router.post("/lots/{lot_id}/assay", responses=errors(*AUTH, 400, 404, 409, 422))
def measure_lot(
    lot_id: Annotated[str, Path(min_length=1, max_length=64)],
    body: LotAssayIn,
    who: Engineer,
    c: Ctx,
) -> dict[str, Any]:
    """Assay a closed lot's pellet, placed in the lot analyser (engineer; stored and audited).
    Runs in a worker thread for the test time, off the controller's event loop."""
    try:
        assay = asyncio.run(
            assay_lot(
                c.store,
                c.config.assay_analyser,
                lambda: load_hydromet(c.config_dir),
                lot_id,
                who.user.name,
                black_mass_kg=body.black_mass_kg,
            )
        )
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except AnalyserFailed as exc:
        raise HTTPException(409, f"lot analyser: {exc}") from None
    except LotAssayError as exc:
        raise HTTPException(409, str(exc)) from None
    c.publish(
        "lot", assay["line"], {"id": lot_id, "wt_pct": assay["wt_pct"], "value": assay.get("value")}
    )
    return {**assay, "taken_at": assay["taken_at"].isoformat()}


# -- alarms -----------------------------------------------------------------------------------
@router.get("/alarms", responses=errors(*AUTH, 422))
def alarms(
    _: Viewer,
    c: Ctx,
    view: Annotated[str, Query(pattern="^(standing|hidden|history)$")] = "standing",
    since: datetime | None = None,
    until: datetime | None = None,
    priority: AlarmPriority | None = None,
    source: str | None = None,
    line: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Standing alarms (default), shelved/suppressed ones (`hidden`) or the history, plus flood."""
    states: tuple[str, ...] | None = {
        "standing": ANNUNCIATED_STATES,
        "hidden": (AlarmState.shelved, AlarmState.suppressed),
        "history": None,
    }[view]
    rows = search_alarms(
        c.store,
        states=states,
        since=utc(since),
        until=utc(until),
        priority=priority.value if priority else None,
        source=source or None,
        line=line or None,
        limit=limit,
    )
    return {"alarms": [alarm_json(r) for r in rows], "flood": c.flood().as_json()}


@router.get("/alarms/journal", responses=errors(*AUTH, 422))
def journal(
    _: Viewer,
    c: Ctx,
    alarm_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """The alarm journal, newest first: every raise, acknowledgement, return to normal, clear,
    shelve, unshelve and suppression, with who and the note or reason."""
    return alarm_journal(
        c.store, alarm_id=alarm_id, since=utc(since), until=utc(until), limit=limit
    )


class AckIn(ApiIn):
    note: str | None = Field(None, max_length=1000)


class ShelveIn(ApiIn):
    reason: str = Field(min_length=1, max_length=1000)
    minutes: float = Field(gt=0, le=527_040)  # a year at most; users.toml caps it lower


class SuppressIn(ApiIn):
    reason: str = Field(min_length=1, max_length=1000)


def _alarm_action(fn: Any, *args: Any) -> dict[str, object]:
    try:
        return alarm_json(fn(*args))
    except AlarmError as exc:
        raise HTTPException(404 if "no alarm" in str(exc) else 409, str(exc)) from None


@router.post("/alarms/{alarm_id}/ack", responses=errors(*AUTH, 400, 404, 409, 422))
def ack(alarm_id: RowId, who: Operator, c: Ctx, body: AckIn | None = None) -> dict[str, object]:
    """Acknowledge an alarm, with an optional note (operator)."""
    return _alarm_action(c.alarms.ack, alarm_id, who.user.name, body.note if body else None)


@router.post("/alarms/{alarm_id}/shelve", responses=errors(*AUTH, 400, 404, 409, 422))
def shelve(alarm_id: RowId, body: ShelveIn, who: Operator, c: Ctx) -> dict[str, object]:
    """Shelve a standing alarm for `minutes` (capped by config/users.toml), reason required."""
    return _alarm_action(
        lambda: c.alarms.shelve(
            alarm_id,
            who.user.name,
            body.reason,
            timedelta(minutes=body.minutes),
            max_duration=timedelta(hours=c.users.alarms.max_shelve_hours),
        )
    )


@router.post("/alarms/{alarm_id}/unshelve", responses=errors(*AUTH, 404, 409, 422))
def unshelve(alarm_id: RowId, who: Operator, c: Ctx) -> dict[str, object]:
    """Return a shelved or suppressed alarm to service (operator)."""
    return _alarm_action(c.alarms.unshelve, alarm_id, who.user.name)


@router.post("/alarms/{alarm_id}/suppress", responses=errors(*AUTH, 400, 404, 409, 422))
def suppress(alarm_id: RowId, body: SuppressIn, who: Engineer, c: Ctx) -> dict[str, object]:
    """Take an alarm out of service (engineer), reason required."""
    return _alarm_action(c.alarms.suppress, alarm_id, who.user.name, body.reason)


@router.get("/alarm-limits", responses=errors(*AUTH, 422))
def get_limits(
    _: Viewer,
    c: Ctx,
    line: Annotated[
        str | None,
        Query(max_length=32, description="only the limits acting on this line"),
    ] = None,
) -> list[dict[str, object]]:
    """Analog alarm limits with deadband and on-delay, each with its line ("*": every line
    without a limit of its own); with `line`, those acting on that line."""
    if line is not None:
        try:
            check_line(line)
        except AlarmError as exc:
            raise HTTPException(422, str(exc)) from None
    return [limit_json(r) for r in alarm_limits(c.store, line)]


class LimitIn(ApiIn):
    line: str = Field(ALL_LINES, min_length=1, max_length=32, description='"*": every line')
    tag: str = Field(min_length=1, max_length=64)
    kind: str = Field(pattern="^(high|low)$")
    limit: float
    deadband: float = Field(0.0, ge=0)
    on_delay_s: float = Field(0.0, ge=0)
    priority: AlarmPriority = AlarmPriority.medium
    unit: str = Field("", max_length=16)
    enabled: bool = True


@router.put("/alarm-limits", responses=errors(*AUTH, 400, 422))
def put_limit(body: LimitIn, who: Engineer, c: Ctx) -> dict[str, object]:
    """Create or change an alarm limit at runtime (engineer; audited old -> new)."""
    try:
        row = set_alarm_limit(
            c.store, who.user.name, **body.model_dump() | {"priority": body.priority.value}
        )
    except AlarmError as exc:
        raise HTTPException(422, str(exc)) from None
    return limit_json(row)


@router.delete("/alarm-limits/{tag}/{kind}", responses=errors(*AUTH, 404, 422))
def delete_limit(
    tag: Annotated[str, Path(max_length=64)],
    kind: Annotated[str, Path(pattern="^(high|low)$")],
    who: Engineer,
    c: Ctx,
    line: Annotated[str, Query(min_length=1, max_length=32)] = ALL_LINES,
) -> dict[str, str]:
    """Remove an alarm limit of `line` (engineer; audited); its standing alarm clears within
    seconds."""
    try:
        check_line(line)
    except AlarmError as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        delete_alarm_limit(c.store, who.user.name, tag=tag, kind=kind, line=line)
    except AlarmError as exc:
        raise HTTPException(404, str(exc)) from None
    return {"deleted": f"{tag}.{kind}", "line": line}


# -- trends -----------------------------------------------------------------------------------
# A process value and the setpoint it is controlled to, where it has one.
SETPOINT_PEN = {"leach.ph": "leach.ph_setpoint"}


@router.get("/trends", responses=errors(*AUTH, 422))
def trends(
    _: Viewer,
    c: Ctx,
    tag: Annotated[str, Query(description="one of " + ", ".join(RECORDED_TAGS))],
    line: Annotated[
        str | None, Query(max_length=32, description="default: the one line recording the tag")
    ] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    points: Annotated[int, Query(ge=10, le=5000)] = 600,
) -> dict[str, Any]:
    """A historian pen of one line over [since, until) (default: the last hour), downsampled to
    about `points` buckets (min/max/mean), with its alarm limits and its setpoint's pen."""
    if tag not in RECORDED_TAGS:
        raise HTTPException(422, f"tag: {tag!r} is not recorded; one of {', '.join(RECORDED_TAGS)}")
    end = utc(until) or datetime.now(UTC)
    start = utc(since) or end - timedelta(hours=1)
    if start >= end:
        raise HTTPException(422, "since: must be before until")
    if line is None:
        recording = lines_recording(c.store, tag)
        if len(recording) > 1:
            raise HTTPException(
                422, f"line: lines {', '.join(recording)} record {tag}; give one of them"
            )
        line = recording[0] if recording else None
    buckets = Historian(c.store, line).trend(tag, start, end, points) if line else []
    return {
        "tag": tag,
        "line": line,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "buckets": [b.as_json() for b in buckets],
        "limits": [limit_json(r) for r in alarm_limits(c.store, line or ALL_LINES) if r.tag == tag],
        "setpoint_tag": SETPOINT_PEN.get(tag),
        "spc": _process_spc_limits(c, line, tag),
    }


def _process_spc_limits(c: HmiContext, line: str | None, tag: str) -> dict[str, Any] | None:
    """The line's SPC chart limits of `tag` (plant/process_spc.py), as its controller last
    reported them in its status; None while the tag is not charted or has no baseline yet."""
    status = next((s for s in read_statuses(c.store) if s.line == line), None)
    limits = (status.extra.get("process_spc") or {}).get(tag) if status else None
    return dict(limits) if limits else None


# -- purity -----------------------------------------------------------------------------------
@router.get("/purity/batches", responses=errors(*AUTH, 422))
def purity_batches(
    _: Viewer,
    c: Ctx,
    product: str | None = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> dict[str, Any]:
    """Product batches, newest first, each with its latest assay and spec verdict, and each
    product's spec (limits as in config/products.toml; empty without that file)."""
    return {
        "batches": c.purity.batches(product, limit),
        "target_pct": c.purity.target_pct,
        "specs": c.purity.specs(),
    }


@router.get("/purity/overview", responses=errors(*AUTH))
def purity_overview(_: Viewer, c: Ctx) -> dict[str, Any]:
    """Mass balance, recovery vs EU targets, SPC alarms and black-mass lots, where available."""
    return c.purity.overview()


# -- classifier -------------------------------------------------------------------------------
@router.get("/classifier", responses=errors(*AUTH, 422))
def classifier(
    _: Viewer, c: Ctx, recent: Annotated[int, Query(ge=10, le=20000)] = 2000
) -> dict[str, Any]:
    """Active model, and of the most recent cells: confidence histogram, classes, reasons."""
    with c.store.session() as s:
        rows = s.execute(
            select(CellRow.chemistry, CellRow.confidence, CellRow.route, CellRow.reason)
            .order_by(CellRow.id.desc())
            .limit(recent)
        ).all()
    bins = [0] * 10
    for r in rows:
        if r.confidence is not None:
            bins[min(9, max(0, int(r.confidence * 10)))] += 1
    reasons = Counter(r.reason or "(none)" for r in rows if r.route == Route.quarantine)
    # by code (the text before ':'): the rest names each cell's numbers
    codes: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for reason, n in reasons.items():
        code = reason.partition(":")[0]
        codes[code] += n
        examples.setdefault(code, reason)
    models = c.models.describe()
    return {
        "cells": len(rows),
        "confidence_histogram": {"edges": [i / 10 for i in range(11)], "counts": bins},
        "per_class": dict(Counter(r.chemistry or "(none)" for r in rows).most_common()),
        "per_route": dict(Counter(r.route or "(none)" for r in rows).most_common()),
        "quarantine_reasons": dict(reasons.most_common(20)),
        "quarantine_codes": [
            {"code": code, "cells": n, "example": examples[code]} for code, n in codes.most_common()
        ],
        "models": models,
        "evaluation": latest_report(
            c.config.plant.data_dir / "reports", models.get("active") if models else None
        ),
    }


class ActivateIn(ApiIn):
    version: str = Field(min_length=1, max_length=100)
    force: bool = Field(
        False, description="activate even if the promotion gate refuses (needs a reason)"
    )
    reason: str | None = Field(None, max_length=500, description="why the gate is overridden")

    @model_validator(mode="after")
    def _reason_with_force(self) -> ActivateIn:
        if self.force and not (self.reason or "").strip():
            raise ValueError("reason: a forced activation needs a reason (it is audited)")
        return self


@router.post("/classifier/activate", responses=errors(*AUTH, 400, 404, 409, 422))
def activate(body: ActivateIn, who: Engineer, c: Ctx) -> dict[str, Any]:
    """Activate (or roll back to) a registered model version through the promotion gate, or
    forced with a reason (engineer; audited)."""
    try:
        _, verdict = c.models.activate(
            body.version,
            force=body.force,
            reason=body.reason or "",
            store=c.store,
            user=who.user.name,
        )
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    except GateRefused as exc:
        raise HTTPException(409, f"{exc}; send force=true with a reason to override") from None
    except RuntimeError as exc:
        raise HTTPException(409, str(exc)) from None
    return {**c.models.describe(), "gate": verdict.line}


# -- setpoints --------------------------------------------------------------------------------
@router.get("/setpoints", responses=errors(*AUTH))
def setpoints(_: Engineer, c: Ctx) -> dict[str, Any]:
    """Process setpoints and routing thresholds, with their allowed ranges."""
    return {"setpoints": current_setpoints(c.store), "routing": c.routing.thresholds()}


class SetpointIn(ApiIn):
    name: str = Field(min_length=1, max_length=64)
    value: float
    confirm: bool = Field(
        False, description="must be true: the HMI asks the engineer to confirm first"
    )


def _need_confirm(confirm: bool) -> None:
    if not confirm:
        raise HTTPException(428, "confirm the change: send confirm=true")


@router.post("/setpoints", responses=errors(*AUTH, 400, 422, 428))
def put_setpoint(body: SetpointIn, who: Engineer, c: Ctx) -> dict[str, Any]:
    """Request a process setpoint (engineer; range-checked, confirmed, audited old -> new)."""
    _need_confirm(body.confirm)
    try:
        old, new = request_setpoint(c.store, body.name, body.value, who.user.name)
    except SetpointError as exc:
        raise HTTPException(422, str(exc)) from None
    if c.setpoint_writer is not None:
        c.setpoint_writer(body.name, new)
    return {"name": body.name, "old": old, "new": new}


def _routing_change(fn: Any, *args: Any) -> tuple[Any, Any]:
    try:
        result: tuple[Any, Any] = fn(*args)
    except (KeyError, ValueError) as exc:
        raise HTTPException(422, str(exc).strip("'\"")) from None
    except FileNotFoundError as exc:
        raise HTTPException(409, str(exc)) from None
    return result


@router.post("/routing/thresholds", responses=errors(*AUTH, 400, 409, 422, 428))
def put_threshold(body: SetpointIn, who: Engineer, c: Ctx) -> dict[str, Any]:
    """Change a routing threshold in config/routing.toml (engineer; confirmed, audited); the
    running line applies it within about a second."""
    _need_confirm(body.confirm)
    old, new = _routing_change(c.routing.set_threshold, body.name, body.value, who.user.name)
    return {"name": body.name, "old": old, "new": new, "applies": APPLIES_LIVE}


class RouteIn(ApiIn):
    chemistry: Chemistry
    route: Route
    confirm: bool = Field(
        False, description="must be true: the HMI asks the engineer to confirm first"
    )


@router.post("/routing/routes", responses=errors(*AUTH, 400, 409, 422, 428))
def put_route(body: RouteIn, who: Engineer, c: Ctx) -> dict[str, Any]:
    """Change where a chemistry goes in config/routing.toml (engineer; confirmed, audited);
    the running line applies it within about a second."""
    _need_confirm(body.confirm)
    old, new = _routing_change(
        c.routing.set_route, body.chemistry.value, body.route.value, who.user.name
    )
    return {"name": body.chemistry.value, "old": old, "new": new, "applies": APPLIES_LIVE}


# -- audit and users --------------------------------------------------------------------------
@router.get("/audit", responses=errors(*AUTH, 422))
def audit(
    _: Engineer,
    c: Ctx,
    since: datetime | None = None,
    user: str | None = None,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> list[dict[str, Any]]:
    """The audit log, newest first (engineer)."""
    q = select(AuditRow)
    if since:
        q = q.where(AuditRow.ts >= utc(since))
    if user:
        q = q.where(AuditRow.user == user)
    if action:
        q = q.where(AuditRow.action.startswith(action))
    with c.store.session() as s:
        rows = s.scalars(q.order_by(AuditRow.id.desc()).limit(limit)).all()
    return [
        {
            "id": r.id,
            "ts": r.ts.isoformat(),
            "user": r.user,
            "action": r.action,
            "target": r.target,
            "old": r.old,
            "new": r.new,
        }
        for r in rows
    ]


class UserIn(ApiIn):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    password: str = Field(min_length=1, max_length=1024)


@router.post("/users", status_code=201, responses=errors(*AUTH, 400, 422))
def create_user(body: UserIn, who: Admin, c: Ctx) -> dict[str, str]:
    """Create an HMI user (admin; audited)."""
    try:
        u = add_user(c.store, body.name, body.role.value, body.password, by=who.user.name)
    except UserError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"name": u.name, "role": u.role.value}


@router.get("/users", responses=errors(*AUTH))
def users(_: Admin, c: Ctx) -> list[dict[str, Any]]:
    """Every HMI user with role and whether the login is enabled (admin)."""
    return [{"name": u.name, "role": u.role.value, "active": u.active} for u in list_users(c.store)]


class UserChangeIn(ApiIn):
    password: str | None = Field(None, min_length=1, max_length=1024)
    role: Role | None = None
    active: bool | None = None


@router.patch("/users/{name}", responses=errors(*AUTH, 400, 404, 422))
def change_user(
    name: Annotated[str, Path(max_length=64)], body: UserChangeIn, who: Admin, c: Ctx
) -> dict[str, Any]:
    """Set a user's password, role or login state (admin; audited); any change ends all of the
    user's sessions and open WebSockets, in every HMI process, within a second."""
    if get_user(c.store, name) is None:
        raise HTTPException(404, f"no user {name!r}")
    try:
        if body.password is not None:
            set_password(c.store, name, body.password, by=who.user.name)
        if body.role is not None:
            set_role(c.store, name, body.role.value, by=who.user.name)
        if body.active is not None:
            set_active(c.store, name, body.active, by=who.user.name)
    except UserError as exc:
        raise HTTPException(422, str(exc)) from None
    u = get_user(c.store, name)
    if u is None:
        raise HTTPException(404, f"no user {name!r}")
    return {"name": u.name, "role": u.role.value, "active": u.active}
