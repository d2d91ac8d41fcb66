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
    // Every time on these pages is UTC, typed ones too (the header says so).
    p.set(k, form.elements[k].type === "datetime-local" ? new Date(`${v}Z`).toISOString() : v);
  }
  return p;
};
const prio = (p) => el("span", { class: `prio prio-${p}` }, p);
// uPlot draws time axes in UTC, like every other time on these pages.
const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
const PRIORITIES = ["critical", "high", "medium", "low", "diagnostic"];
const byPriority = (a, b) =>
  PRIORITIES.indexOf(a.priority) - PRIORITIES.indexOf(b.priority) || (b.raised_at > a.raised_at ? 1 : -1);
function countBy(items, key) {
  const out = {};
  for (const i of items) out[key(i)] = (out[key(i)] || 0) + 1;
  return out;
}
// CSV download made in the page (no server round trip, no inline script).
function downloadCsv(name, header, rows) {
  const cell = (v) => {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  const text = [header, ...rows].map((r) => r.map(cell).join(",")).join("\n") + "\n";
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}
// An analog indicator (ISA-101): grey scale, a dark pointer, the limits as ticks; blue only when
// the value is outside its limits. lo/hi may be null (one-sided).
function gauge(value, { min, max, lo = null, hi = null, unit = "", digits = 1, label = "" }) {
  const pos = (v) => `${Math.max(0, Math.min(100, ((v - min) / (max - min || 1)) * 100))}%`;
  const bad = value !== null && value !== undefined && ((lo !== null && value < lo) || (hi !== null && value > hi));
  const track = el("div", { class: "gauge-track" });
  if (lo !== null || hi !== null) {
    const band = el("div", { class: "gauge-band" });
    band.style.left = pos(lo ?? min);
    band.style.right = `calc(100% - ${pos(hi ?? max)})`;
    track.append(band);
  }
  for (const [v, name] of [[lo, "low"], [hi, "high"]]) {
    if (v === null) continue;
    const t = el("div", { class: "gauge-limit", title: `${name} limit ${v} ${unit}` });
    t.style.left = pos(v);
    track.append(t);
  }
  if (value !== null && value !== undefined) {
    const p = el("div", { class: "gauge-pointer" });
    p.style.left = pos(value);
    track.append(p);
  }
  const limits = [lo !== null ? `≥ ${lo}` : "", hi !== null ? `≤ ${hi}` : ""].filter(Boolean).join(", ");
  return el(
    "div",
    { class: `gauge${bad ? " out" : ""}`, "data-gauge": label },
    label ? el("span", { class: "gauge-label" }, label) : "",
    track,
    el("span", { class: "gauge-value" }, value === null || value === undefined ? "–" : `${fmtNum(value, digits)} ${unit}`),
    el("span", { class: "gauge-spec muted" }, limits ? `spec ${limits} ${unit}` : ""),
  );
}
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
    const [lines, alarms] = await Promise.all([api("/api/lines"), api("/api/alarms?limit=500")]);
    dispatch({
      topic: "snapshot",
      data: {
        lines,
        alarms: {
          standing: alarms.alarms.length,
          unacked: null,
          by_priority: countBy(alarms.alarms, (a) => a.priority),
          top: alarms.alarms.slice(0, 5),
        },
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
  const more = alarms.standing - alarms.top.length;
  const counts = PRIORITIES.filter((p) => (alarms.by_priority || {})[p])
    .map((p) => `${p} ${alarms.by_priority[p]}`)
    .join(" · ");
  $("#alarm-more").hidden = more <= 0;
  $("#alarm-more a").textContent = `+${more} more standing alarm${more === 1 ? "" : "s"} (all standing: ${counts})`;
  for (const box of document.querySelectorAll("#alarm-counts .count-box")) {
    const n = (alarms.by_priority || {})[box.dataset.prio] || 0;
    $(".n", box).textContent = String(n);
    box.classList.toggle(`prio-${box.dataset.prio}`, n > 0);
  }
}
on("snapshot", (d) => renderBanner(d.alarms, d.flood));

// ---------------------------------------------------------------- audible annunciation
// Optional, per browser (remembered in localStorage): a tone for each alarm that newly stands
// unacknowledged, higher and longer for higher priorities. The button's click is the user
// gesture browsers need before a page may play sound.
const TONE = { critical: [880, 0.6], high: [740, 0.45], medium: [620, 0.3], low: [520, 0.2], diagnostic: [440, 0.1] };
const sound = { ctx: null, seen: null, rang: 0 };
function tone(priority) {
  const [hz, s] = TONE[priority] || TONE.low;
  const osc = sound.ctx.createOscillator();
  const gain = sound.ctx.createGain();
  gain.gain.value = 0.2;
  osc.frequency.value = hz;
  osc.connect(gain).connect(sound.ctx.destination);
  osc.start();
  osc.stop(sound.ctx.currentTime + s);
  sound.rang += 1;
  $("#sound").dataset.rang = String(sound.rang);
}
function setSound(onOff) {
  const b = $("#sound");
  if (onOff && !sound.ctx) sound.ctx = new AudioContext();
  b.setAttribute("aria-pressed", String(onOff));
  b.textContent = onOff ? "Sound on" : "Sound off";
  localStorage.setItem("plant.sound", onOff ? "on" : "off");
}
on("snapshot", (d) => {
  const unacked = d.alarms.top.filter((a) => a.state === "active_unacked");
  const on_ = $("#sound").getAttribute("aria-pressed") === "true";
  if (sound.seen && on_) for (const a of unacked) if (!sound.seen.has(a.id)) tone(a.priority);
  sound.seen = new Set(unacked.map((a) => a.id));
});

// ---------------------------------------------------------------- overview
const lineLimits = { quarantine_rate_alarm: null, capacity_cells_per_min: null };
let standingAlarms = [];
// A station's health from the line status (PLC, XRF) and its standing alarms (by source).
function stationHealth(line, source, status) {
  const hits = standingAlarms.filter((a) => a.source === source && (!a.line || a.line === line));
  if (hits.length) return hits[0].code ? `${hits[0].code}` : "alarm";
  return status ?? "ok";
}
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
  const health = {
    plc: st.plc_health,
    xrf: stationHealth(st.line, "xrf", st.xrf_health),
    label: stationHealth(st.line, "camera", "ok"),
  };
  for (const [k, v] of Object.entries(health)) {
    set(`${k}_health`, v);
    $(`[data-health=${k}]`, panel).classList.toggle("fault", v !== "ok");
  }
  // Each XRF head: its link and (a DP5) its detector problems, from the line status.
  // (`health` events carry no `extra`: the last status stays shown)
  if (st.extra && st.extra.xrf_heads)
    $("[data-f=heads]", panel).replaceChildren(
      ...Object.entries(st.extra.xrf_heads).map(([name, h]) => {
        const problems = Object.keys(h.problems || {});
        const ok = h.link !== "down" && !problems.length;
        return el(
          "span",
          { class: `head${ok ? "" : " fault"}`, "data-head": name, title: h.last_error || problems.join(", ") },
          `${name} ${ok ? "ok" : problems.join(" ") || h.link}`,
        );
      }),
    );
  const cap = lineLimits.capacity_cells_per_min;
  $("[data-g=throughput]", panel).replaceChildren(
    gauge(st.cells_per_min, { min: 0, max: cap || Math.max(60, st.cells_per_min * 1.5), unit: "cells/min", digits: 0 }),
  );
  const qlim = lineLimits.quarantine_rate_alarm;
  $("[data-g=quarantine]", panel).replaceChildren(
    gauge(st.quarantine_rate * 100, { min: 0, max: qlim ? qlim * 200 : 30, hi: qlim === null ? null : qlim * 100, unit: "%" }),
  );
  // Bus events (`counts`/`health`) are fresh and may carry no timestamp; snapshots always do.
  const ts = st.updated_at ? Date.parse(st.updated_at) : Date.now();
  set("age", fmtNum(Math.max(0, Date.now() - ts) / 1000, 0));
  const total = Object.values(st.counts).reduce((x, y) => x + y, 0);
  const full = st.extra && st.extra.buffers_full;
  for (const box of panel.querySelectorAll(".route")) {
    const n = st.counts[box.dataset.route];
    $(".count", box).textContent = n === undefined ? "0" : String(n);
    if (!full) continue;
    box.classList.toggle("fault", Boolean(full[box.dataset.route]));
    $(".unit", box).textContent = full[box.dataset.route] ? "cells · BUFFER FULL" : "cells · buffer ok";
  }
  $("[data-f=route_rates]", panel).replaceChildren(
    ...Object.entries(st.counts).map(([r, n]) =>
      el("span", { class: "rate" }, `${r.replace("_", " ")} ${fmtNum(total ? (n / total) * 100 : 0, 1)} %`),
    ),
  );
}
// Product cards: the last batch's purity, main element and impurities against the spec the API
// gives (config/products.toml), and the batch's verdict.
function specGauges(spec, b) {
  const out = [];
  const purity = b ? b.purity_pct : null;
  if (spec.min_purity_pct !== undefined && spec.min_purity_pct !== null)
    out.push(gauge(purity, { min: spec.min_purity_pct - 1, max: 100, lo: spec.min_purity_pct, unit: "%", digits: 2, label: "purity" }));
  const lo = spec.main_min_pct ?? null;
  const hi = spec.main_max_pct ?? null;
  if (lo !== null || hi !== null) {
    const v = b && b.main_pct ? b.main_pct[spec.metal] ?? null : null;
    const mid = lo ?? hi;
    out.push(gauge(v, { min: mid * 0.97, max: (hi ?? lo) * 1.03, lo, hi, unit: "%", digits: 2, label: spec.metal }));
  }
  for (const [el_, cap] of Object.entries(spec.impurity_limits_ppm || {})) {
    const v = b && b.impurities_ppm ? b.impurities_ppm[el_] ?? null : null;
    out.push(gauge(v, { min: 0, max: cap * 2, hi: cap, unit: "ppm", digits: 1, label: el_ }));
  }
  // physical limits, where the standard sets them
  for (const [key, measured, unit, label] of [
    ["magnetic_max_ppb", "magnetic_ppb", "ppb", "magnetic"],
    ["insolubles_max_pct", "insolubles_pct", "%", "insolubles"],
  ]) {
    const cap = spec[key] ?? null;
    if (cap === null) continue;
    const v = b && b.physical ? b.physical[measured] ?? null : null;
    out.push(gauge(v, { min: 0, max: cap * 2, hi: cap, unit, digits: unit === "%" ? 3 : 0, label }));
  }
  return out;
}
async function renderProducts() {
  const d = await api("/api/purity/batches?limit=500");
  const specs = d.specs || {};
  const names = Object.keys(specs);
  if (!names.length) return;
  $("#products").replaceChildren(
    ...names.map((name) => {
      const b = d.batches.find((x) => x.product === name) || null;
      const verdict = !b ? "no batch yet" : b.in_spec ? "in spec" : "OFF SPEC";
      return el(
        "div",
        { class: "product-card", "data-product": name },
        el("h3", {}, name, " ", el("span", { class: `verdict ${b && !b.in_spec ? "offspec" : "muted"}` }, verdict)),
        el("div", { class: "muted" }, b ? `batch ${b.id}, ${fmtTime(b.created_at)} UTC` : "—"),
        ...specGauges(specs[name], b),
        b && !b.in_spec ? el("div", { class: "offspec" }, (b.reasons || []).join("; ")) : "",
      );
    }),
  );
}
// The lines the historian keeps pens for: every line the plant reports, sorted.
async function historianLines() {
  return (await api("/api/lines")).map((s) => s.line).sort();
}
// Sparklines: the last 15 minutes of each key process value of the first line, with its limits.
const SPARK_S = 900;
async function renderSparks() {
  const [line] = await historianLines();
  const lineArg = line ? `&line=${encodeURIComponent(line)}` : "";
  for (const box of document.querySelectorAll(".spark")) {
    const since = new Date(Date.now() - SPARK_S * 1000).toISOString();
    const t = await api(`/api/trends?tag=${encodeURIComponent(box.dataset.tag)}&since=${since}&points=90${lineArg}`);
    const pts = t.buckets;
    const last = pts.length ? pts[pts.length - 1].mean : null;
    const bad = t.limits.some((l) => l.enabled && last !== null && (l.kind === "high" ? last > l.limit : last < l.limit));
    $("[data-f=value]", box).textContent = last === null ? "–" : fmtNum(last, 2);
    box.classList.toggle("out", bad);
    const chart = $(".spark-chart", box);
    chart.replaceChildren();
    if (!pts.length) continue;
    const xs = pts.map((p) => Date.parse(p.t) / 1000);
    new uPlot(
      {
        width: 190,
        height: 44,
        legend: { show: false },
        cursor: { show: false },
        axes: [{ show: false }, { show: false }],
        series: [{}, { stroke: "#333", width: 1 }, ...t.limits.map(() => ({ stroke: "#777", dash: [3, 3], width: 1 }))],
      },
      [xs, pts.map((p) => p.mean), ...t.limits.map((l) => xs.map(() => l.limit))],
      chart,
    );
  }
}
function overview() {
  on("snapshot", (d) => {
    Object.assign(lineLimits, d.line_limits || {});
    d.lines.forEach(renderLine);
  });
  on("counts", renderLine);
  on("health", renderLine);
  const loadAlarms = async () => (standingAlarms = (await api("/api/alarms")).alarms);
  loadAlarms();
  setInterval(loadAlarms, 5000);
  renderProducts();
  on("batch", renderProducts);
  setInterval(renderProducts, 30000);
  renderSparks();
  setInterval(renderSparks, 10000);
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
    el("td", { title: c.reason || "" }, c.reason || ""),
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
const ACKABLE = ["active_unacked", "rtn_unacked"];
let standingShown = [];
function alarmActions(a) {
  const msg = el("span", {});
  const act = (path, body) => async () => {
    try {
      await api(`/api/alarms/${a.id}/${path}`, { method: "POST", body: body() });
      refreshAlarms();
    } catch (e) {
      say(msg, e.message, true);
    }
  };
  const cells = [];
  if (can("operator") && ACKABLE.includes(a.state))
    cells.push(el("button", { onclick: act("ack", () => ({ note: $("#ack-note").value || null })) }, "Ack"));
  if (can("engineer"))
    cells.push(
      el(
        "button",
        {
          onclick: () => {
            const reason = prompt(`Suppress (take out of service) ${a.source} ${a.code}: reason`);
            if (reason) act("suppress", () => ({ reason }))();
          },
        },
        "Suppress…",
      ),
    );
  return el("td", {}, ...cells, msg);
}
function selectedAlarms() {
  return [...document.querySelectorAll("#standing tbody input[type=checkbox]:checked")].map((c) => Number(c.value));
}
async function alarmBulk(ids, path, body) {
  const msg = $("#ops-msg");
  if (!ids.length) return say(msg, "select alarms first", true);
  const failed = [];
  for (const id of ids) {
    try {
      await api(`/api/alarms/${id}/${path}`, { method: "POST", body });
    } catch (e) {
      failed.push(`${id}: ${e.message}`);
    }
  }
  say(msg, failed.length ? failed.join("; ") : `${path === "ack" ? "acknowledged" : "shelved"} ${ids.length}`, failed.length > 0);
  refreshAlarms();
}
async function refreshAlarms() {
  const [standing, hidden] = await Promise.all([
    api("/api/alarms?view=standing&limit=1000"),
    api("/api/alarms?view=hidden&limit=1000"),
  ]);
  const f = $("#standing-filter");
  const keep = new Set(selectedAlarms());
  standingShown = standing.alarms
    .filter((a) => !f.priority.value || a.priority === f.priority.value)
    .filter((a) => !f.source.value || a.source.includes(f.source.value))
    .sort(byPriority);
  const tb = $("#standing tbody");
  tb.replaceChildren(
    ...(standingShown.length
      ? standingShown.map((a) =>
          el(
            "tr",
            { "data-alarm": a.id },
            el("td", {}, el("input", { type: "checkbox", value: a.id, checked: keep.has(a.id) })),
            el("td", {}, prio(a.priority)),
            el("td", { class: `state-${a.state}` }, a.state),
            el("td", {}, fmtTime(a.raised_at)),
            el("td", {}, a.line || ""),
            el("td", {}, a.source),
            el("td", {}, a.message),
            alarmActions(a),
          ),
        )
      : [el("tr", { class: "empty" }, el("td", { colspan: 8, class: "muted" }, "No standing alarms."))]),
  );
  fillBody(
    $("#hidden-alarms"),
    hidden.alarms.length
      ? hidden.alarms.sort(byPriority).map((a) =>
          el(
            "tr",
            { "data-alarm": a.id },
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
        )
      : [el("tr", { class: "empty" }, el("td", { colspan: 7, class: "muted" }, "None shelved or suppressed."))],
  );
}
let historyRows = [];
async function alarmHistory() {
  const p = query($("#alarm-search"));
  p.set("view", "history");
  p.set("limit", "1000");
  historyRows = (await api(`/api/alarms?${p}`)).alarms;
  fillBody(
    $("#history"),
    historyRows.length
      ? historyRows.map((a) =>
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
        )
      : [el("tr", { class: "empty" }, el("td", { colspan: 8, class: "muted" }, "No alarms in this range."))],
  );
}
let journalRows = [];
async function alarmJournal() {
  const p = query($("#journal-search"));
  p.set("limit", "1000");
  journalRows = await api(`/api/alarms/journal?${p}`);
  fillBody(
    $("#journal"),
    journalRows.length
      ? journalRows.map((j) =>
          el(
            "tr",
            { "data-alarm": j.alarm_id },
            td(fmtTime(j.ts)),
            td(String(j.alarm_id)),
            el("td", {}, prio(j.priority)),
            td(`${j.line || ""} ${j.source} ${j.code}`),
            td(j.kind),
            td(j.user),
            td(j.note),
          ),
        )
      : [el("tr", { class: "empty" }, el("td", { colspan: 7, class: "muted" }, "No journal entries in this range."))],
  );
}
async function refreshLimits() {
  const limits = await api("/api/alarm-limits");
  fillBody(
    $("#limits"),
    limits.length
      ? limits.map((l) =>
          el(
            "tr",
            {},
            el("td", {}, l.line === "*" ? "every line" : l.line),
            el("td", {}, l.tag),
            el("td", {}, l.kind),
            el("td", { class: "num" }, `${l.limit} ${l.unit}`),
            el("td", { class: "num" }, `${l.deadband} ${l.unit}`),
            el("td", { class: "num" }, `${l.on_delay_s} s`),
            el("td", {}, prio(l.priority)),
            el("td", {}, `${l.updated_by || ""} ${fmtTime(l.updated_at)}`),
          ),
        )
      : [el("tr", { class: "empty" }, el("td", { colspan: 8, class: "muted" }, "No alarm limits set."))],
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
  $("#standing-filter").addEventListener("input", refreshAlarms);
  $("#standing-filter").addEventListener("submit", (e) => e.preventDefault());
  $("#select-all").addEventListener("change", (e) => {
    for (const c of document.querySelectorAll("#standing tbody input[type=checkbox]")) c.checked = e.target.checked;
  });
  if (can("operator")) {
    $("#alarm-ops").hidden = false;
    const note = () => ({ note: $("#ack-note").value || null });
    $("#ack-selected").addEventListener("click", () => alarmBulk(selectedAlarms(), "ack", note()));
    $("#ack-all").addEventListener("click", () =>
      alarmBulk(standingShown.filter((a) => ACKABLE.includes(a.state)).map((a) => a.id), "ack", note()),
    );
    $("#shelve-selected").addEventListener("click", () => {
      const reason = $("#shelve-reason").value.trim();
      if (!reason) return say($("#ops-msg"), "shelve: a reason is required", true);
      alarmBulk(selectedAlarms(), "shelve", { reason, minutes: Number($("#shelve-preset").value) });
    });
  }
  $("#alarm-search").addEventListener("submit", (e) => {
    e.preventDefault();
    alarmHistory();
  });
  $("#alarm-csv").addEventListener("click", () =>
    downloadCsv(
      "alarms.csv",
      ["id", "raised_at_utc", "priority", "state", "line", "source", "code", "message", "acked_by", "acked_at_utc", "ack_note", "cleared_at_utc"],
      historyRows.map((a) => [a.id, a.raised_at, a.priority, a.state, a.line, a.source, a.code, a.message, a.acked_by, a.acked_at, a.ack_note, a.cleared_at]),
    ),
  );
  alarmHistory();
  $("#journal-search").addEventListener("submit", (e) => {
    e.preventDefault();
    alarmJournal();
  });
  $("#journal-csv").addEventListener("click", () =>
    downloadCsv(
      "alarm-journal.csv",
      ["time_utc", "alarm_id", "priority", "line", "source", "code", "event", "by", "note"],
      journalRows.map((j) => [j.ts, j.alarm_id, j.priority, j.line, j.source, j.code, j.kind, j.user, j.note]),
    ),
  );
  alarmJournal();
  const journalSoon = () => setTimeout(alarmJournal, 300);
  on("alarm", journalSoon);
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

// ---------------------------------------------------------------- trends
const trendState = { plots: [], data: {}, zoomed: false };
async function loadPen(tag, line, since, until) {
  const lineArg = line ? `&line=${encodeURIComponent(line)}` : "";
  const t = await api(`/api/trends?tag=${encodeURIComponent(tag)}&since=${since}&until=${until}&points=600${lineArg}`);
  let sp = null;
  if (t.setpoint_tag)
    sp = await api(`/api/trends?tag=${encodeURIComponent(t.setpoint_tag)}&since=${since}&until=${until}&points=600${lineArg}`);
  return { t, sp };
}
async function drawTrends() {
  const form = $("#trend-form");
  const pens = [...form.querySelectorAll("input[name=pen]:checked")].map((i) => i.value);
  const end = Date.now();
  const since = new Date(end - Number(form.range.value) * 1000).toISOString();
  const until = new Date(end).toISOString();
  const results = await Promise.all(pens.map((p) => loadPen(p, form.line.value, since, until)));
  const box = $("#trend-charts");
  trendState.plots.forEach((u) => u.destroy());
  trendState.plots = [];
  trendState.data = {};
  box.replaceChildren();
  const sync = uPlot.sync("trends");
  results.forEach(({ t, sp }) => {
    const xs = t.buckets.map((b) => Date.parse(b.t) / 1000);
    const series = [{}, { label: t.tag, stroke: "#222", width: 1.5 }];
    const data = [xs, t.buckets.map((b) => b.mean)];
    series.push({ label: `${t.tag} min`, stroke: "#999", width: 1 }, { label: `${t.tag} max`, stroke: "#999", width: 1 });
    data.push(t.buckets.map((b) => b.min), t.buckets.map((b) => b.max));
    if (sp) {
      // the setpoint on the pen's time base: the last setpoint sample at or before each bucket
      const spx = sp.buckets.map((b) => [Date.parse(b.t) / 1000, b.mean]);
      let j = 0;
      let cur = null;
      series.push({ label: `setpoint (${sp.tag})`, stroke: "#0057b8", width: 1, dash: [8, 4] });
      data.push(xs.map((x) => {
        while (j < spx.length && spx[j][0] <= x) cur = spx[j++][1];
        return cur;
      }));
    }
    for (const l of t.limits.filter((l) => l.enabled)) {
      series.push({ label: `${l.kind} limit ${l.limit} ${l.unit}`.trim(), stroke: "#555", width: 1, dash: [4, 4] });
      data.push(xs.map(() => l.limit));
    }
    if (t.spc) {
      // the control chart's centre and 3-sigma limits (SPC alarms, source spc, code process/<tag>)
      for (const [name, v] of [["SPC centre", t.spc.center], ["SPC UCL", t.spc.ucl], ["SPC LCL", t.spc.lcl]]) {
        series.push({ label: `${name} ${Number(v.toPrecision(4))}`, stroke: "#8a5a00", width: 1, dash: [1, 3] });
        data.push(xs.map(() => v));
      }
    }
    trendState.data[t.tag] = { series, data };
    const wrap = el("div", { class: "chart trend", "data-tag": t.tag });
    box.append(wrap);
    if (!xs.length) {
      wrap.append(el("p", { class: "muted" }, `${t.tag}: no samples in this range.`));
      return;
    }
    trendState.plots.push(
      new uPlot(
        {
          width: Math.min(1800, box.clientWidth || 1200),
          height: 240,
          title: t.tag,
          tzDate,
          cursor: { sync: { key: sync.key }, drag: { x: true, y: false } },
          axes: [{}, { label: t.tag }],
          series,
          hooks: {
            setSelect: [(u) => {
              if (u.select.width > 0) {
                trendState.zoomed = true;
                form.follow.checked = false;
              }
            }],
          },
        },
        data,
        wrap,
      ),
    );
  });
}
async function trends() {
  const form = $("#trend-form");
  form.line.replaceChildren(...(await historianLines()).map((l) => el("option", { value: l }, l)));
  form.addEventListener("change", () => {
    trendState.zoomed = false;
    drawTrends();
  });
  form.addEventListener("submit", (e) => e.preventDefault());
  setInterval(() => {
    if (form.follow.checked && !trendState.zoomed) drawTrends();
  }, 5000);
  $("#trend-csv").addEventListener("click", () => {
    const rows = [];
    for (const [tag, { series, data }] of Object.entries(trendState.data))
      data[0].forEach((x, i) =>
        series.slice(1).forEach((s, k) => rows.push([tag, new Date(x * 1000).toISOString(), s.label, data[k + 1][i]])),
      );
    downloadCsv("trends.csv", ["pen", "time_utc", "series", "value"], rows);
  });
  drawTrends();
}

// ---------------------------------------------------------------- purity
function table(t, header, rows, empty) {
  $("thead", t).replaceChildren(el("tr", {}, ...header.map((h) => el("th", {}, h))));
  fillBody(t, rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: header.length, class: "muted" }, empty))]);
}
// A table cell of any JSON value: numbers to 2 places, objects as "key value; …", never raw JSON.
const plain = (v) =>
  v === null || v === undefined
    ? "–"
    : typeof v === "number"
      ? fmtNum(v, 2)
      : typeof v === "object"
        ? Object.entries(v).map(([k, x]) => `${k} ${plain(x)}`).join("; ") || "–"
        : String(v);
const td = (v, cls = "") => el("td", { class: cls }, plain(v));
// One chart of a product's batches: the value per batch, its spec limits, optional rule marks.
function batchChart(target, title, pts, value, { lo = null, hi = null, center = null, marks = [], unit = "" }) {
  const xs = pts.map((b) => Date.parse(b.created_at) / 1000);
  const series = [{}, { label: `${title} (${unit})`, stroke: "#222", width: 1, points: { show: true, size: 5 } }];
  const data = [xs, pts.map(value)];
  for (const [v, name] of [[lo, "low limit"], [hi, "high limit"], [center, "centre"]]) {
    if (v === null) continue;
    series.push({ label: `${name} ${fmtNum(v, 3)}`, stroke: name === "centre" ? "#888" : "#555", dash: [5, 4], width: 1 });
    data.push(xs.map(() => v));
  }
  if (marks.length) {
    series.push({ label: "SPC rule", stroke: "transparent", points: { show: true, size: 11, stroke: "#0057b8", fill: "#0057b8" } });
    data.push(pts.map((b, i) => (marks.includes(b.id) ? data[1][i] : null)));
  }
  const wrap = el("div", { class: "chart small" });
  target.append(wrap);
  new uPlot({ width: 560, height: 200, title, tzDate, series, axes: [{}, { label: unit }] }, data, wrap);
}
async function purity() {
  const sel = $("#product");
  const [all, ov] = await Promise.all([api("/api/purity/batches?limit=2000"), api("/api/purity/overview")]);
  const specs = all.specs || {};
  const byProduct = (name) => all.batches.filter((b) => b.product === name && b.purity_pct !== null).reverse();
  const charts = $("#product-charts");
  charts.replaceChildren();
  // Products without a spec (no config/products.toml) are judged by the battery-grade line alone.
  const products = [...new Set([...Object.keys(specs), ...all.batches.map((b) => b.product)])].sort();
  for (const name of products) {
    const spec = specs[name] || { min_purity_pct: all.target_pct };
    const pts = byProduct(name);
    if (!pts.length) {
      charts.append(el("p", { class: "muted" }, `${name}: no assayed batch yet.`));
      continue;
    }
    batchChart(charts, `${name} purity`, pts, (b) => b.purity_pct, { lo: spec.min_purity_pct ?? null, unit: "%" });
    if (spec.main_min_pct != null || spec.main_max_pct != null)
      batchChart(charts, `${name} ${spec.metal}`, pts, (b) => (b.main_pct || {})[spec.metal] ?? null, {
        lo: spec.main_min_pct ?? null,
        hi: spec.main_max_pct ?? null,
        unit: "%",
      });
  }
  if (!products.length) charts.replaceChildren(el("p", { class: "muted" }, "No batches yet."));
  const spcBox = $("#spc-charts");
  spcBox.replaceChildren();
  if (ov.available === false) say($("#spc-note"), ov.reason);
  else {
    say($("#spc-note"), "Individuals charts per product and variable; marked points broke a run rule in the bad direction.");
    for (const [name, vars] of Object.entries(ov.spc || {}))
      for (const [v, c] of Object.entries(vars)) {
        const pts = byProduct(name).slice(-c.points);
        const val = (b) => (v === "purity_pct" ? b.purity_pct : (b.impurities_ppm || {})[v] ?? null);
        batchChart(spcBox, `${name} ${v} (SPC)`, pts, val, {
          lo: c.lcl,
          hi: c.ucl,
          center: c.center,
          marks: c.violations.map((x) => x.batch_id),
          unit: v === "purity_pct" ? "%" : "ppm",
        });
      }
    if (!spcBox.children.length) spcBox.append(el("p", { class: "muted" }, "Not enough assayed batches for SPC yet."));
    const bal = Object.entries(ov.mass_balance || {});
    const keys = bal.length ? Object.keys(bal[0][1]) : [];
    table($("#balance"), ["metal", ...keys], bal.map(([m, b]) => el("tr", {}, td(m), ...keys.map((k) => td(b[k], "num")))), "No mass balance yet.");
    const rec = Object.entries(ov.recovery || {});
    const targets = rec.length ? Object.keys(rec[0][1].targets) : [];
    table(
      $("#recovery"),
      ["metal", "achieved %", ...targets.map((t) => `target ${t} %`)],
      rec.map(([m, r]) =>
        el("tr", {}, td(m), td(r.achieved_pct === null ? null : fmtNum(r.achieved_pct, 1), "num"),
          ...targets.map((t) => td(`${r.targets[t]} ${r.achieved_pct === null ? "" : r.meets[t] ? "met" : "NOT MET"}`, r.achieved_pct !== null && !r.meets[t] ? "num offspec" : "num"))),
      ),
      "No recovery figures.",
    );
    const lots = ov.lots || [];
    const lkeys = lots.length ? Object.keys(lots[0]) : [];
    table($("#lots"), lkeys, lots.slice(-50).reverse().map((l) => el("tr", {}, ...lkeys.map((k) => td(l[k])))), "No closed lots yet.");
  }
  const load = async () => {
    const p = new URLSearchParams({ limit: 500 });
    if (sel.value) p.set("product", sel.value);
    const data = await api(`/api/purity/batches?${p}`);
    fillBody(
      $("#batches"),
      data.batches.map((b) =>
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
  };
  for (const prod of products) sel.append(el("option", {}, prod));
  sel.addEventListener("change", load);
  on("batch", load);
  load();
}

// ---------------------------------------------------------------- classifier
async function classifier() {
  const d = await api("/api/classifier");
  const m = d.models;
  const card = (x) =>
    el(
      "div",
      { class: `model-card${x.active ? " active" : ""}` },
      el("h3", {}, x.name, " ", el("span", { class: "muted" }, x.active ? "active" : "")),
      el("table", { class: "fields" },
        ...[["version", x.version], ["created (UTC)", fmtTime(x.created)], ["features", x.feature_version], ["built in", x.builtin ? "yes" : "no"]]
          .concat(Object.entries((x.metrics || {}).validation_split || {}).map(([k, v]) => [k.replaceAll("_", " "), typeof v === "number" ? fmtNum(v, 3) : v]))
          .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v ?? "–")))),
    );
  $("#models").replaceChildren(
    ...(m.available ? (m.models || []).filter((x) => x.active).map(card) : [el("p", { class: "muted" }, m.reason)]),
  );
  say($("#clf-summary"), `${d.cells} most recent cells`);
  fillBody($("#per-class"), Object.entries(d.per_class).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, String(v)))));
  // Quarantine reasons by code (the text before ':'), counted by the server over every reason.
  fillBody(
    $("#reasons"),
    d.quarantine_codes.map((c) =>
      el("tr", { "data-code": c.code }, td(c.code), el("td", { class: "num" }, String(c.cells)), el("td", { class: "muted" }, c.example)),
    ),
  );
  const ev = d.evaluation;
  if (!ev) say($("#eval-note"), "No `plant evaluate` report of the active model in <data_dir>/reports yet.");
  else {
    say($("#eval-note"), `${ev.model_version} on ${ev.data}, ${fmtTime(ev.evaluated)} UTC: accuracy on accepted ${fmtNum(ev.accuracy_on_accepted * 100, 1)} %, coverage ${fmtNum(ev.coverage * 100, 1)} %, ${ev.n} spectra. Rows: truth; columns: predicted.`);
    const cm = ev.confusion;
    table(
      $("#confusion"),
      ["truth \\ predicted", ...cm.columns_predicted],
      cm.rows_truth
        .map((truth, i) => [truth, cm.matrix[i]])
        .filter(([, row]) => row.some((n) => n > 0))
        .map(([truth, row]) =>
          el("tr", {}, el("th", {}, truth), ...row.map((n, j) => {
            const right = cm.columns_predicted[j] === truth;
            return el("td", { class: `num${n && right ? " diag" : n ? " off" : ""}` }, n ? String(n) : "");
          })),
        ),
      "Empty report.",
    );
  }
  const h = d.confidence_histogram;
  new uPlot(
    {
      width: 700,
      height: 240,
      scales: { x: { time: false }, y: { distr: 3 } },
      axes: [{ label: "confidence" }, { label: "cells (log scale)" }],
      series: [{}, { label: "cells", stroke: "#333", fill: "#9a9a9a", paths: uPlot.paths.bars({ size: [0.9] }) }],
    },
    [h.edges.slice(0, -1).map((e, i) => (e + h.edges[i + 1]) / 2), h.counts.map((c) => (c > 0 ? c : null))],
    $("#conf-chart"),
  );
}

// ---------------------------------------------------------------- audit and users
async function audit() {
  const form = $("#audit-search");
  const load = async () => {
    const rows = await api(`/api/audit?${query(form)}&limit=500`);
    table(
      $("#audit"),
      ["time (UTC)", "user", "action", "target", "old", "new"],
      rows.map((r) => el("tr", {}, td(fmtTime(r.ts)), td(r.user), td(r.action), td(r.target), td(r.old), td(r.new))),
      "No audit entries match.",
    );
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load();
  });
  load();
}
async function users() {
  const form = $("#user-filter");
  const msg = $("#user-msg");
  const change = (name, body, what) => async () => {
    if (!confirm(`${what} for ${name}? (ends the user's sessions)`)) return;
    try {
      await api(`/api/users/${encodeURIComponent(name)}`, { method: "PATCH", body });
      say(msg, `${name}: ${what} (recorded in the audit log)`);
      load();
    } catch (e) {
      say(msg, `${name}: ${e.message}`, true);
    }
  };
  const load = async () => {
    const all = await api("/api/users");
    const rows = all
      .filter((u) => !form.role.value || u.role === form.role.value)
      .filter((u) => !form.active.value || String(u.active) === form.active.value)
      .map((u) => {
        const role = el("select", {}, ...Object.keys(RANK).map((r) => el("option", { selected: r === u.role }, r)));
        const pw = el("input", { type: "password", size: 14, autocomplete: "new-password", placeholder: "new password" });
        return el(
          "tr",
          { "data-user": u.name },
          td(u.name),
          td(u.role),
          td(u.active ? "enabled" : "DISABLED", u.active ? "" : "abnormal"),
          el("td", {}, role, el("button", { onclick: () => change(u.name, { role: role.value }, `role ${role.value}`)() }, "Set")),
          el("td", {}, pw, el("button", { onclick: () => change(u.name, { password: pw.value }, "new password")() }, "Set")),
          el("td", {}, el("button", { onclick: change(u.name, { active: !u.active }, u.active ? "disable login" : "enable login") }, u.active ? "Disable" : "Enable")),
        );
      });
    fillBody($("#users"), rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: 6, class: "muted" }, "No users match."))]);
  };
  form.addEventListener("change", load);
  load();
}

// ---------------------------------------------------------------- setpoints
// Beside a setpoint: the last minute's value the PLC holds and the measured value, from the
// historian ("not recorded" for a setpoint whose value the plant does not record).
async function setpointLive(s) {
  const since = new Date(Date.now() - 60_000).toISOString();
  const last = async (tag) => {
    const t = await api(`/api/trends?tag=${encodeURIComponent(tag)}&since=${since}&points=10`);
    return { t, v: t.buckets.length ? t.buckets[t.buckets.length - 1].mean : null };
  };
  const row = [...document.querySelectorAll("#setpoints tbody tr")].find((tr) => tr.querySelector(`input[name="${s.name}"]`));
  let measured;
  try {
    measured = await last(s.name);
  } catch (e) {
    $("[data-f=measured]", row).textContent = "not recorded";
    $("[data-f=measured]", row).title = e.message;
    return;
  }
  $("[data-f=measured]", row).textContent = measured.v === null ? "–" : `${fmtNum(measured.v, 2)} ${s.unit}`;
  if (measured.t.setpoint_tag) {
    const held = await last(measured.t.setpoint_tag);
    $("[data-f=held]", row).textContent = held.v === null ? "–" : `${fmtNum(held.v, 2)} ${s.unit}`;
  }
}
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
        el("td", { class: "num", "data-f": "held" }, "–"),
        el("td", { class: "num", "data-f": "measured" }, "–"),
        el("td", {}, input),
        el("td", {}, el("button", { onclick: change("/api/setpoints", s.name, s.label, s.unit, input) }, "Apply…")),
      );
    }),
  );
  for (const s of d.setpoints) setpointLive(s);
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
const PAGES = { overview, cells, alarms, trends, purity, classifier, setpoints, audit, users };
document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "cells" && $("#cell-detail")) cellDetail();
  else if (PAGES[page]) PAGES[page]();
  $("#sound").addEventListener("click", () => setSound($("#sound").getAttribute("aria-pressed") !== "true"));
  if (localStorage.getItem("plant.sound") === "on") setSound(true);
  connect();
});
