// Plant HMI pages: live data over the WebSocket, JSON API calls with the session's CSRF token.
// Text from the server is only ever set with textContent (never innerHTML), so data cannot inject.
"use strict";

const RANK = { viewer: 0, operator: 1, engineer: 2, admin: 3 };
const ROLE = document.querySelector("meta[name=role]")?.content || "viewer";
const CSRF = document.querySelector("meta[name=csrf]")?.content || "";
const can = (role) => RANK[ROLE] >= RANK[role];
const $ = (sel, root = document) => root.querySelector(sel);
const POLL_MS = 2000; // fallback polling when the WebSocket is down (never faster than 1 s)

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

async function api(path, opts = {}) {
  const init = { method: opts.method || "GET", credentials: "same-origin", headers: {} };
  if (opts.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.body);
  }
  if (init.method !== "GET") init.headers["X-CSRF-Token"] = CSRF;
  const r = await fetch(path, init);
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) {
    const d = data && data.detail;
    const msg = Array.isArray(d) ? d.map((e) => `${e.loc.slice(-1)}: ${e.msg}`).join("; ") : d;
    throw new Error(msg || `${r.status} ${r.statusText}`);
  }
  return data;
}

const fmtTime = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "");
const fmtNum = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const query = (form) => {
  const p = new URLSearchParams();
  for (const [k, v] of new FormData(form)) {
    if (!v) continue;
    p.set(k, form.elements[k].type === "datetime-local" ? new Date(v).toISOString() : v);
  }
  return p;
};
const prio = (p) => el("span", { class: `prio prio-${p}` }, p);
function fillBody(table, rows) {
  const tb = $("tbody", table);
  tb.replaceChildren(...rows);
}
function say(target, text, bad = false) {
  target.textContent = text;
  target.className = bad ? "abnormal" : "muted";
}

// ---------------------------------------------------------------- live connection
const live = { handlers: {}, ws: null, pollTimer: null };
function on(topic, fn) {
  (live.handlers[topic] ||= []).push(fn);
}
function dispatch(msg) {
  for (const fn of live.handlers[msg.topic] || []) fn(msg.data, msg);
  for (const fn of live.handlers["*"] || []) fn(msg.data, msg);
}
function connect() {
  const conn = $("#conn");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  live.ws = ws;
  ws.onopen = () => {
    conn.textContent = "live";
    conn.className = "conn";
    clearInterval(live.pollTimer);
    live.pollTimer = null;
  };
  ws.onmessage = (ev) => dispatch(JSON.parse(ev.data));
  ws.onclose = () => {
    conn.textContent = "live link down – polling";
    conn.className = "conn down";
    if (!live.pollTimer) live.pollTimer = setInterval(poll, POLL_MS);
    setTimeout(connect, 3000);
  };
}
async function poll() {
  try {
    const [lines, alarms] = await Promise.all([api("/api/lines"), api("/api/alarms?limit=5")]);
    dispatch({
      topic: "snapshot",
      data: {
        lines,
        alarms: { standing: alarms.alarms.length, unacked: null, top: alarms.alarms.slice(0, 5) },
        flood: alarms.flood,
      },
    });
  } catch (e) {
    $("#conn").textContent = `no data: ${e.message}`;
  }
}

// ---------------------------------------------------------------- alarm banner (every page)
function renderBanner(alarms, flood) {
  const f = $("#flood");
  f.hidden = !flood.active;
  f.textContent = flood.active
    ? `ALARM FLOOD: ${flood.raised} alarms in the last ${flood.window_min} min – work the list by priority`
    : "";
  $("#alarm-banner").replaceChildren(
    ...alarms.top.map((a) =>
      el(
        "div",
        { class: "alarm", "data-alarm": a.id },
        prio(a.priority),
        el("span", { class: `state-${a.state}` }, a.state.replace("_", " ")),
        el("span", {}, fmtTime(a.raised_at)),
        el("span", {}, `${a.line || ""} ${a.source}`),
        el("a", { href: "/alarms" }, a.message),
      ),
    ),
  );
}
on("snapshot", (d) => renderBanner(d.alarms, d.flood));

// ---------------------------------------------------------------- overview
function renderLine(st) {
  let panel = document.querySelector(`.line-panel[data-line="${CSS.escape(st.line)}"]`);
  if (!panel) {
    panel = $("#line-template").content.firstElementChild.cloneNode(true);
    panel.dataset.line = st.line;
    $("#lines").append(panel);
    $("#no-lines").hidden = true;
  }
  const set = (f, v) => ($(`[data-f=${f}]`, panel).textContent = v);
  set("line", st.line);
  set("running", st.stale ? "NOT REPORTING" : st.running ? "running" : "stopped");
  $("[data-f=running]", panel).className = `state ${st.running && !st.stale ? "" : "stopped abnormal"}`;
  set("plc_health", st.plc_health);
  set("xrf_health", st.xrf_health);
  $("[data-health=plc]", panel).classList.toggle("fault", st.plc_health !== "ok");
  $("[data-health=xrf]", panel).classList.toggle("fault", st.xrf_health !== "ok");
  set("cells_per_min", fmtNum(st.cells_per_min, 0));
  set("quarantine_rate", fmtNum(st.quarantine_rate * 100, 1));
  // Bus events (`counts`/`health`) are fresh and may carry no timestamp; snapshots always do.
  const ts = st.updated_at ? Date.parse(st.updated_at) : Date.now();
  set("age", fmtNum(Math.max(0, Date.now() - ts) / 1000, 0));
  for (const box of panel.querySelectorAll(".route")) {
    const n = st.counts[box.dataset.route];
    $(".count", box).textContent = n === undefined ? "0" : String(n);
  }
}
function overview() {
  on("snapshot", (d) => d.lines.forEach(renderLine));
  on("counts", renderLine);
  on("health", renderLine);
  on("cell", (c, msg) => {
    const tb = $("#last-cells tbody");
    tb.prepend(
      el(
        "tr",
        {},
        el("td", {}, msg.line),
        el("td", { class: "num" }, String(c.seq)),
        el("td", {}, c.chemistry || ""),
        el("td", { class: "num" }, fmtNum(c.confidence, 2)),
        el("td", {}, c.route || ""),
        el("td", {}, c.reason || ""),
      ),
    );
    while (tb.rows.length > 10) tb.deleteRow(-1);
  });
}

// ---------------------------------------------------------------- cells
function cellRow(c) {
  return el(
    "tr",
    {},
    el("td", {}, el("a", { href: `/cells/${c.id}` }, String(c.id))),
    el("td", {}, c.line),
    el("td", { class: "num" }, String(c.seq)),
    el("td", {}, fmtTime(c.created_at)),
    el("td", {}, c.passport_id || ""),
    el("td", {}, c.chemistry || ""),
    el("td", { class: "num" }, fmtNum(c.confidence, 2)),
    el("td", { class: c.route === "quarantine" ? "abnormal" : "" }, c.route || ""),
    el("td", {}, c.state),
    el("td", {}, c.reason || ""),
  );
}
function cells() {
  const form = $("#cell-search");
  let next = null;
  const load = async (append) => {
    const p = query(form);
    if (append && next) p.set("before_id", next);
    const data = await api(`/api/cells?${p}`);
    next = data.next_before_id;
    const rows = data.cells.map(cellRow);
    if (append) $("#cell-table tbody").append(...rows);
    else fillBody($("#cell-table"), rows);
    $("#more").hidden = !next;
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load(false);
  });
  $("#more").addEventListener("click", () => load(true));
  load(false);
}

function fieldsTable(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v ?? "–"))));
}
async function cellDetail() {
  const id = $("#cell-detail").dataset.id;
  let c;
  try {
    c = await api(`/api/cells/${id}`);
  } catch (e) {
    say($("#spectrum-note"), e.message, true);
    return;
  }
  fieldsTable($("#cell-fields"), [
    ["Line / seq", `${c.line} / ${c.seq}`],
    ["Time (UTC)", fmtTime(c.created_at)],
    ["Passport id", c.passport_id],
    ["Mass", c.mass_g === null ? null : `${fmtNum(c.mass_g, 1)} g`],
    ["Chemistry", c.chemistry],
    ["Confidence", fmtNum(c.confidence, 3)],
    ["Decided by", c.decision_source],
    ["Route", c.route],
    ["State", c.state],
    ["Reason", c.reason],
    ["Model version", c.model_version],
    ["Lot", c.lot_id],
  ]);
  const p = c.passport;
  if (p) {
    fieldsTable($("#passport-fields"), [
      ["Passport id", p.id],
      ["Data model", p.model],
      ["Chemistry", p.chemistry],
      ["Chemistry from", p.chemistry_reason],
      ["Manufacturer", p.manufacturer],
      ["Mass", p.mass_g === null ? null : `${fmtNum(p.mass_g, 1)} g`],
      ["State of health", p.soh_pct === null ? null : `${fmtNum(p.soh_pct, 0)} %`],
      ["Authenticity", `${p.authenticity || "unsigned"}${p.authenticity_reason ? `: ${p.authenticity_reason}` : ""}`],
    ]);
  } else {
    fieldsTable($("#passport-fields"), [["Passport", "not found in the passport store"]]);
  }
  if (c.route === "quarantine" && can("operator")) {
    $("#release").hidden = false;
    $("#release-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = e.target;
      try {
        await api(`/api/cells/${id}/release`, {
          method: "POST",
          body: { route: f.route.value, reason: f.reason.value },
        });
        location.reload();
      } catch (err) {
        say($("#release-msg"), err.message, true);
      }
    });
  }
  if (!c.spectrum_ref) return say($("#spectrum-note"), "No XRF spectrum was measured for this cell.");
  try {
    const s = await api(`/api/cells/${id}/spectrum`);
    spectrumChart($("#spectrum"), s);
    say($("#spectrum-note"), `${s.source}: ${s.channels} channels, live time ${fmtNum(s.live_time_s, 2)} s`);
  } catch (e) {
    say($("#spectrum-note"), e.message, true);
  }
}
function spectrumChart(target, s) {
  const drawLines = (u) => {
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = "#555";
    ctx.fillStyle = "#222";
    ctx.font = `${11 * devicePixelRatio}px sans-serif`;
    for (const l of s.lines) {
      const x = u.valToPos(l.kev, "x", true);
      ctx.setLineDash([4, 4]);
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      if (l.line === "Ka") ctx.fillText(l.element, x + 3, u.bbox.top + 12 * devicePixelRatio);
    }
    ctx.restore();
  };
  new uPlot(
    {
      width: Math.min(1100, target.clientWidth || 900),
      height: 320,
      scales: { x: { time: false } },
      axes: [{ label: "energy (keV)" }, { label: "counts" }],
      series: [{ label: "keV" }, { label: "counts", stroke: "#333", width: 1 }],
      hooks: { draw: [drawLines] },
    },
    [s.energy_kev, s.counts],
    target,
  );
}

// ---------------------------------------------------------------- alarms
function alarmActions(a) {
  if (!can("operator")) return el("td", {});
  const note = el("input", { placeholder: "note (optional)", size: 14, name: "note" });
  const reason = el("input", { placeholder: "shelve reason", size: 14, name: "shelve-reason" });
  const minutes = el(
    "select",
    { name: "minutes" },
    ...[15, 60, 240, 480].map((m) => el("option", { value: m }, `${m} min`)),
  );
  const msg = el("span", {});
  const act = (path, body) => async () => {
    try {
      await api(`/api/alarms/${a.id}/${path}`, { method: "POST", body: body() });
      refreshAlarms();
    } catch (e) {
      say(msg, e.message, true);
    }
  };
  const ackable = a.state === "active_unacked" || a.state === "rtn_unacked";
  return el(
    "td",
    {},
    ackable ? note : "",
    ackable ? el("button", { onclick: act("ack", () => ({ note: note.value })) }, "Ack") : "",
    " ",
    reason,
    minutes,
    el(
      "button",
      { onclick: act("shelve", () => ({ reason: reason.value, minutes: Number(minutes.value) })) },
      "Shelve",
    ),
    msg,
  );
}
async function refreshAlarms() {
  const [standing, hidden] = await Promise.all([
    api("/api/alarms?view=standing"),
    api("/api/alarms?view=hidden"),
  ]);
  fillBody(
    $("#standing"),
    standing.alarms.map((a) =>
      el(
        "tr",
        { "data-alarm": a.id },
        el("td", {}, prio(a.priority)),
        el("td", { class: `state-${a.state}` }, a.state),
        el("td", {}, fmtTime(a.raised_at)),
        el("td", {}, a.line || ""),
        el("td", {}, a.source),
        el("td", {}, a.message),
        alarmActions(a),
      ),
    ),
  );
  fillBody(
    $("#hidden-alarms"),
    hidden.alarms.map((a) =>
      el(
        "tr",
        {},
        el("td", {}, prio(a.priority)),
        el("td", {}, a.state),
        el("td", {}, a.source),
        el("td", {}, a.message),
        el("td", {}, fmtTime(a.shelved_until)),
        el("td", {}, a.shelve_reason || ""),
        el(
          "td",
          {},
          can("operator")
            ? el(
                "button",
                {
                  onclick: async () => {
                    await api(`/api/alarms/${a.id}/unshelve`, { method: "POST" });
                    refreshAlarms();
                  },
                },
                "Return to service",
              )
            : "",
        ),
      ),
    ),
  );
}
async function alarmHistory() {
  const p = query($("#alarm-search"));
  p.set("view", "history");
  const data = await api(`/api/alarms?${p}`);
  fillBody(
    $("#history"),
    data.alarms.map((a) =>
      el(
        "tr",
        {},
        el("td", {}, fmtTime(a.raised_at)),
        el("td", {}, prio(a.priority)),
        el("td", {}, a.state),
        el("td", {}, `${a.line || ""} ${a.source}`),
        el("td", {}, a.message),
        el("td", {}, a.acked_by ? `${a.acked_by} ${fmtTime(a.acked_at)}` : ""),
        el("td", {}, a.ack_note || ""),
        el("td", {}, fmtTime(a.cleared_at)),
      ),
    ),
  );
}
async function refreshLimits() {
  const limits = await api("/api/alarm-limits");
  fillBody(
    $("#limits"),
    limits.map((l) =>
      el(
        "tr",
        {},
        el("td", {}, l.tag),
        el("td", {}, l.kind),
        el("td", { class: "num" }, `${l.limit} ${l.unit}`),
        el("td", { class: "num" }, `${l.deadband} ${l.unit}`),
        el("td", { class: "num" }, `${l.on_delay_s} s`),
        el("td", {}, prio(l.priority)),
        el("td", {}, `${l.updated_by || ""} ${fmtTime(l.updated_at)}`),
      ),
    ),
  );
}
function alarms() {
  let pending = null;
  const soon = () => {
    clearTimeout(pending);
    pending = setTimeout(refreshAlarms, 200);
  };
  on("alarm", soon);
  setInterval(refreshAlarms, 5000);
  refreshAlarms();
  $("#alarm-search").addEventListener("submit", (e) => {
    e.preventDefault();
    alarmHistory();
  });
  alarmHistory();
  refreshLimits();
  if (can("engineer")) {
    const form = $("#limit-form");
    form.hidden = false;
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = Object.fromEntries(new FormData(form));
      for (const k of ["limit", "deadband", "on_delay_s"]) f[k] = Number(f[k]);
      try {
        await api("/api/alarm-limits", { method: "PUT", body: f });
        say($("#limit-msg"), "saved");
        refreshLimits();
      } catch (err) {
        say($("#limit-msg"), err.message, true);
      }
    });
  }
}

// ---------------------------------------------------------------- purity
async function purity() {
  const sel = $("#product");
  const load = async () => {
    const p = new URLSearchParams({ limit: 2000 });
    if (sel.value) p.set("product", sel.value);
    const data = await api(`/api/purity/batches?${p}`);
    const batches = data.batches;
    fillBody(
      $("#batches"),
      batches.map((b) =>
        el(
          "tr",
          {},
          el("td", {}, b.id),
          el("td", {}, b.product),
          el("td", {}, fmtTime(b.created_at)),
          el("td", { class: "num" }, b.mass_kg === null ? "–" : `${fmtNum(b.mass_kg, 1)} kg`),
          el("td", { class: "num" }, b.purity_pct === null ? "–" : `${fmtNum(b.purity_pct, 3)} %`),
          el(
            "td",
            { class: b.in_spec === false ? "offspec" : "" },
            b.in_spec === null ? "no assay" : b.in_spec ? "in spec" : "OFF SPEC",
          ),
          el("td", {}, (b.reasons || []).join("; ")),
        ),
      ),
    );
    if (sel.options.length === 1) {
      for (const prod of [...new Set(batches.map((b) => b.product))].sort())
        sel.append(el("option", {}, prod));
    }
    const pts = batches.filter((b) => b.purity_pct !== null).reverse();
    const chart = $("#purity-chart");
    chart.replaceChildren();
    if (!pts.length) return chart.append(el("p", { class: "muted" }, "No assayed batches yet."));
    new uPlot(
      {
        width: Math.min(1100, chart.clientWidth || 900),
        height: 280,
        axes: [{}, { label: "purity (%)" }],
        series: [
          {},
          { label: "purity %", stroke: "#333", width: 1, points: { show: true } },
          { label: `battery grade ${data.target_pct} %`, stroke: "#0057b8", dash: [6, 4] },
        ],
      },
      [pts.map((b) => Date.parse(b.created_at) / 1000), pts.map((b) => b.purity_pct), pts.map(() => data.target_pct)],
      chart,
    );
  };
  sel.addEventListener("change", load);
  on("batch", load);
  load();
  const ov = await api("/api/purity/overview");
  $("#purity-overview").replaceChildren(
    ov.available === false ? el("p", { class: "muted" }, ov.reason) : el("pre", {}, JSON.stringify(ov, null, 2)),
  );
}

// ---------------------------------------------------------------- classifier
async function classifier() {
  const d = await api("/api/classifier");
  const m = d.models;
  $("#models").replaceChildren(
    m.available
      ? el("pre", {}, JSON.stringify(m, null, 2))
      : el("p", { class: "muted" }, m.reason),
  );
  say($("#clf-summary"), `${d.cells} most recent cells`);
  const tbl = (id, obj) =>
    fillBody($(id), Object.entries(obj).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, String(v)))));
  tbl("#per-class", d.per_class);
  tbl("#reasons", d.quarantine_reasons);
  const h = d.confidence_histogram;
  const chart = $("#conf-chart");
  new uPlot(
    {
      width: 600,
      height: 220,
      scales: { x: { time: false } },
      axes: [{ label: "confidence" }, { label: "cells" }],
      series: [{}, { label: "cells", stroke: "#333", fill: "#9a9a9a", paths: uPlot.paths.bars({ size: [0.9] }) }],
    },
    [h.edges.slice(0, -1).map((e) => e + 0.05), h.counts],
    chart,
  );
}

// ---------------------------------------------------------------- setpoints
async function setpoints() {
  const msg = $("#setpoint-msg");
  const change = (path, name, label, unit, input) => async () => {
    const v = Number(input.value);
    if (input.value === "" || Number.isNaN(v)) return say(msg, `${label}: enter a number`, true);
    if (!confirm(`Change ${label} to ${v} ${unit}?`)) return;
    try {
      const r = await api(path, { method: "POST", body: { name, value: v, confirm: true } });
      say(msg, `${label}: ${r.old} → ${r.new} ${unit} (recorded in the audit log${r.applies ? `; ${r.applies}` : ""})`);
      setpoints();
    } catch (e) {
      say(msg, `${label}: ${e.message}`, true);
    }
  };
  const d = await api("/api/setpoints");
  fillBody(
    $("#setpoints"),
    d.setpoints.map((s) => {
      const input = el("input", { type: "number", step: "any", min: s.lo, max: s.hi, size: 6, name: s.name });
      return el(
        "tr",
        {},
        el("td", {}, s.label),
        el("td", {}, `${s.lo}–${s.hi} ${s.unit}`),
        el("td", { class: "num" }, `${s.value} ${s.unit}${s.requested_by ? ` (${s.requested_by})` : ""}`),
        el("td", { class: "num" }, s.applied_value === null ? "not yet" : `${s.applied_value} ${s.unit}`),
        el("td", {}, input),
        el("td", {}, el("button", { onclick: change("/api/setpoints", s.name, s.label, s.unit, input) }, "Apply…")),
      );
    }),
  );
  const r = d.routing;
  say($("#routing-note"), r.available ? r.file : r.reason, !r.available);
  fillBody(
    $("#thresholds"),
    (r.thresholds || []).map((t) => {
      const input = el("input", { type: "number", step: "any", size: 6, name: t.name });
      return el(
        "tr",
        {},
        el("td", {}, t.name),
        el("td", {}, `${t.lo}–${t.hi ?? "∞"}`),
        el("td", { class: "num" }, String(t.value)),
        el("td", {}, input),
        el("td", {}, el("button", { onclick: change("/api/routing/thresholds", t.name, t.name, "", input) }, "Apply…")),
      );
    }),
  );
}

// ---------------------------------------------------------------- start
const PAGES = { overview, cells, alarms, purity, classifier, setpoints };
document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "cells" && $("#cell-detail")) cellDetail();
  else if (PAGES[page]) PAGES[page]();
  connect();
});
