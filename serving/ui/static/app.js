// hybridgate dashboard: polls the JSON under /ui/api every second and draws with the DOM and SVG.
// Every value goes in as text (textContent, createTextNode, setAttribute): model names, tenant ids, user ids and
// reasons come from requests, so no value is ever parsed as HTML. No library, no build step.
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const ROUTES = ["local", "cloud", "collab", "refused", "errors"];
const state = { window: "hour", route: "", tenant: "", selected: null, timer: null, rows: [], since: null, filter: null, tenants: [] };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") { for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn); }
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function fmt(v, digits) {
  if (v === null || v === undefined || v === "") return "—";
  if (typeof v === "number") return digits === undefined ? String(v) : v.toFixed(digits);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function usd(v) { return v === null || v === undefined ? "—" : "$" + Number(v).toFixed(v !== 0 && Math.abs(v) < 0.01 ? 6 : 4); }
function joules(v) { return v === null || v === undefined ? "—" : (Math.abs(v) >= 1000 ? (v / 1000).toFixed(2) + " kJ" : Number(v).toFixed(1) + " J"); }
function pct(v) { return v === null || v === undefined ? "—" : (100 * v).toFixed(1) + " %"; }
function time(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString() : "—"; }

async function getJSON(path) {
  const resp = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (resp.status === 401) { window.location.assign("/ui/login"); throw new Error("signed out"); }
  if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
  return resp.json();
}

function card(id, label, value, sub) {
  return el("div", { class: "card", "data-testid": id },
    el("div", { class: "label" }, label), el("div", { class: "value", id: id }, value), sub ? el("div", { class: "sub" }, sub) : null);
}

function table(headers, rows, opts) {
  const head = headers ? el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))) : null;
  const body = el("tbody");
  for (const r of rows) {
    const tr = el("tr", r.attrs || {}, ...r.cells.map((c) => el("td", typeof c === "number" ? { class: "num" } : {}, c)));
    body.appendChild(tr);
  }
  return el("table", (opts && opts.id) ? { id: opts.id } : {}, head, body);
}

function kv(obj) {
  return table(null, Object.entries(obj || {}).map(([k, v]) => ({ cells: [k, fmt(v)] })));
}

function section(title, ...content) { return el("section", {}, el("h2", {}, title), ...content); }

// -- charts: small SVG drawn here, see docs/dashboard.md for why no library --------------------------------------
function stackedBars(series, bucketS) {
  const W = 900, H = 200, L = 36, B = 20, n = series.t.length;
  const totals = series.t.map((_, i) => ROUTES.reduce((s, r) => s + ((series[r] || [])[i] || 0), 0));
  const max = Math.max(1, ...totals);
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "requests by route over time" });
  const bw = (W - L) / Math.max(1, n);
  for (const frac of [0, 0.5, 1]) {
    const y = H - B - frac * (H - B - 10);
    g.appendChild(svg("line", { class: "grid", x1: L, x2: W, y1: y, y2: y }));
    g.appendChild(svg("text", { class: "tick", x: 2, y: y + 3 }, Math.round(frac * max)));
  }
  series.t.forEach((t, i) => {
    let y = H - B;
    for (const r of ROUTES) {
      const v = (series[r] || [])[i] || 0;
      if (!v) continue;
      const h = (v / max) * (H - B - 10);
      y -= h;
      const rect = svg("rect", { class: "route-" + r, x: L + i * bw, y: y, width: Math.max(1, bw - 0.5), height: h });
      rect.appendChild(svg("title", {}, `${time(t)} ${r}: ${v}`));
      g.appendChild(rect);
    }
  });
  const step = Math.max(1, Math.floor(n / 6));
  for (let i = 0; i < n; i += step) g.appendChild(svg("text", { class: "tick", x: L + i * bw, y: H - 5 }, time(series.t[i])));
  g.appendChild(svg("line", { class: "axis", x1: L, x2: W, y1: H - B, y2: H - B }));
  const legend = el("div", { class: "legend" }, ...ROUTES.map((r) => el("span", {}, el("i", { class: "route-" + r }), r)));
  return el("div", { class: "chart", id: "requests-chart" }, g, legend);
}

function lineChart(points, label) {
  const W = 420, H = 240, P = 30;
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  const x = (v) => P + v * (W - 2 * P), y = (v) => H - P - v * (H - 2 * P);
  g.appendChild(svg("line", { class: "axis", x1: P, y1: H - P, x2: W - P, y2: H - P }));
  g.appendChild(svg("line", { class: "axis", x1: P, y1: H - P, x2: P, y2: P }));
  g.appendChild(svg("line", { class: "diag", x1: x(0), y1: y(0), x2: x(1), y2: y(1) }));
  g.appendChild(svg("polyline", { class: "line", points: points.map((p) => `${x(p[0])},${y(p[1])}`).join(" ") }));
  for (const p of points) {
    const c = svg("circle", { class: "point", cx: x(p[0]), cy: y(p[1]), r: 3 });
    c.appendChild(svg("title", {}, `cloud calls ${pct(p[0])}: PGR ${p[1]}`));
    g.appendChild(c);
  }
  for (const v of [0, 0.5, 1]) {
    g.appendChild(svg("text", { class: "tick", x: x(v) - 6, y: H - P + 12 }, v));
    g.appendChild(svg("text", { class: "tick", x: P - 20, y: y(v) + 3 }, v));
  }
  g.appendChild(svg("text", { class: "tick", x: W / 2 - 50, y: H - 4 }, "share of calls to the cloud"));
  g.appendChild(svg("text", { class: "tick", x: 2, y: P - 10 }, "PGR"));
  return el("div", { class: "chart", id: "pgr-chart" }, g);
}

// -- pages ----------------------------------------------------------------------------------------------------
function windowButtons(main) {
  const mk = (w, label) => el("button", { type: "button", "aria-pressed": state.window === w ? "true" : "false",
    on: { click: () => { state.window = w; refresh(main); } } }, label);
  return el("div", { class: "toolbar" }, mk("hour", "Last hour"), mk("day", "Last day"));
}

function latencyRows(latency) {
  return Object.entries(latency).map(([route, l]) => ({ cells: [route, fmt(l.p50_ms), fmt(l.p95_ms), fmt(l.ttft_p50_ms), fmt(l.ttft_p95_ms)] }));
}

function counts(obj, name) {
  const rows = Object.entries(obj || {}).map(([k, v]) => ({ cells: [k, v] }));
  return rows.length ? table([name, "count"], rows) : el("p", { class: "muted" }, "none");
}

async function overview(main) {
  const o = await getJSON("/ui/api/overview?window=" + encodeURIComponent(state.window));
  const r = o.requests, share = o.cloud_share;
  main.replaceChildren(
    windowButtons(main),
    el("div", { class: "cards" },
      card("answered", "answered", r.answered),
      card("route-local", "local", r.by_route.local || 0),
      card("route-cloud", "cloud", r.by_route.cloud || 0),
      card("route-collab", "collaborative", r.by_route.collab || 0),
      card("refused", "refused", r.refused),
      card("errors", "errors", r.errors),
      card("cloud-share", "cloud share", pct(share.actual), "target " + pct(share.target)),
      card("spent", "cloud spend", usd(o.money.spent_usd), "all-cloud " + usd(o.money.all_cloud_usd)),
      card("saved", "saved vs all-cloud", usd(o.money.saved_usd)),
      card("energy-used", "energy used", joules(o.energy.used_j), "all-cloud " + joules(o.energy.all_cloud_j)),
      card("energy-saved", "energy saved", joules(o.energy.saved_j)),
      card("cache-hits", "cache hits", r.cache_hits)),
    section("Requests by route (" + o.bucket_s + " s buckets)", stackedBars(o.series, o.bucket_s)),
    el("div", { class: "cols" },
      section("Latency by route (ms)", table(["route", "p50", "p95", "first token p50", "first token p95"], latencyRows(o.latency), { id: "latency" })),
      section("Collaborative modes", counts(r.by_mode, "mode")),
      section("Rejections by reason", counts(o.rejections, "reason")),
      section("Errors", counts(o.errors, "backend (status)")),
      section("Fallbacks", counts(o.fallbacks, "from → to"))));
}

function signals(list) { return (list || []).map((s) => `${s.name} ${s.push >= 0 ? "+" : ""}${Number(s.push).toFixed(3)}`).join(", "); }

function score(d) {
  if (d.score === null || d.score === undefined) return "—";
  return `${Number(d.score).toFixed(3)} / ${d.t_local === null || d.t_local === undefined ? "" : Number(d.t_local).toFixed(3) + "…"}${d.threshold === null || d.threshold === undefined ? "—" : Number(d.threshold).toFixed(3)}`;
}

async function explain(main, id) {
  state.selected = id;
  const d = await getJSON("/ui/api/decisions/" + encodeURIComponent(id));
  const box = document.getElementById("explanation");
  if (!box) return;
  box.replaceChildren(
    el("h2", {}, "Decision " + d.id),
    el("div", { class: "cols" },
      section("Outcome", kv({ time: time(d.ts), tenant: d.tenant, user: d.user, status: d.status, route: d.route, mode: d.mode,
        backend: d.backend, "decision ms": d.decision_ms, "prompt tokens": d.prompt_tokens, "completion tokens": d.completion_tokens,
        "latency ms": d.latency_ms, "energy J": d.energy_j, "cost USD": d.cost_usd, feedback: d.feedback, cache: d.cache })),
      section("Why", kv({ score: d.decided.score, "t_cloud": d.decided.threshold, "t_local": d.decided.t_local,
        reasons: (d.decided.reasons || []).join("; "), signals: signals(d.decided.signals), "personal data": (d.decided.personal_data || []).join(", "),
        private: d.decided.private, router: d.decided.router, "router version": d.decided.router_version,
        fallbacks: (d.decided.fallbacks || []).join(", "), "fell back from": d.fallback ? d.fallback.from : null,
        "fallback reason": d.fallback ? d.fallback.reason : null }))),
    section("Full record", el("pre", { id: "explanation-json" }, JSON.stringify(d, null, 2))));
}

// A rating arrives after its row is on the page, and an update reads only newer rows: ask again for the ratings
// of the rows shown without one (one request for all of them).
async function refreshFeedback() {
  const open = state.rows.filter((d) => d.feedback === null || d.feedback === undefined).map((d) => d.id).filter(Boolean);
  if (!open.length) return;
  const q = new URLSearchParams();
  for (const id of open) q.append("id", id);
  const found = (await getJSON("/ui/api/feedback?" + q.toString())).data;
  for (const d of state.rows) if (found[d.id] !== null && found[d.id] !== undefined) d.feedback = found[d.id];
}

// The first read (and a new filter) asks for the newest 100; each update after asks only for what is newer.
async function decisions(main) {
  const q = new URLSearchParams({ limit: "100" });
  if (state.route) q.set("route", state.route);
  if (state.tenant) q.set("tenant", state.tenant);
  const filter = q.toString();
  const fresh = state.filter !== filter || state.since === null || state.since === undefined;
  if (!fresh) q.set("since", String(state.since));
  const data = await getJSON("/ui/api/decisions?" + q.toString());
  if (state.filter !== filter && !fresh) return;  // the filter changed while this was in flight
  state.rows = fresh ? data.data : [...data.data, ...state.rows].slice(0, 100);
  if (!fresh) await refreshFeedback();
  state.since = data.newest_ts;
  state.filter = filter;
  state.tenants = [...new Set([...(fresh ? [] : state.tenants), ...data.tenants])].sort();
  let box = document.getElementById("explanation");
  if (!box) {
    const routeSel = el("select", { id: "route-filter", on: { change: (e) => { state.route = e.target.value; refresh(main); } } },
      ...["", "local", "cloud", "collab"].map((r) => el("option", { value: r }, r || "every route")));
    const tenantSel = el("select", { id: "tenant-filter", on: { change: (e) => { state.tenant = e.target.value; refresh(main); } } });
    box = el("div", { id: "explanation" }, el("p", { class: "muted" }, "Click a row for the full explanation."));
    main.replaceChildren(el("div", { class: "toolbar" }, "Route ", routeSel, " Tenant ", tenantSel), el("div", { id: "table-box" }), box);
  }
  const tenantSel = document.getElementById("tenant-filter");
  const wanted = ["", ...state.tenants];
  if (tenantSel.options.length !== wanted.length) {
    tenantSel.replaceChildren(...wanted.map((t) => el("option", { value: t }, t || "every tenant")));
    tenantSel.value = state.tenant;
  }
  const rows = state.rows.map((d) => ({
    attrs: { class: "clickable", "data-id": d.id, on: { click: () => explain(main, d.id) } },
    cells: [time(d.ts), fmt(d.tenant), fmt(d.user), fmt(d.route), fmt(d.mode), fmt(d.backend), score(d), signals(d.signals),
      d.tokens, fmt(d.latency_ms), fmt(d.energy_j), fmt(d.cost_usd), fmt(d.feedback), fmt(d.status), d.fallback ? "from " + d.fallback.from + ": " + d.fallback.reason : ""],
  }));
  document.getElementById("table-box").replaceChildren(table(
    ["time", "tenant", "user", "route", "mode", "backend", "score / thresholds", "signals", "tokens", "latency ms", "energy J", "cost USD", "feedback", "status", "fallback"],
    rows, { id: "decisions" }));
}

async function router(main) {
  const r = await getJSON("/ui/api/router");
  const m = r.model || {};
  main.replaceChildren(
    el("div", { class: "cols" },
      section("Active router", kv({ name: r.active.name, version: r.active.version, previous: r.active.previous, created: m.created,
        embedder: m.embedder ? m.embedder.name : null })),
      section("Trained on", kv(m.training || {})),
      section("Quality report", kv(m.metrics || {}))),
    el("div", { class: "cols" },
      section("PGR curve", r.pgr_curve.length ? lineChart(r.pgr_curve, "PGR curve") : el("p", { class: "muted" }, "this router has no quality report")),
      section("Thresholds", kv({ t_cloud: r.thresholds.t_cloud, t_local: r.thresholds.t_local, "cloud share target": r.thresholds.cloud_share_target,
        "recalibrate every": r.thresholds.recalibrate_every }),
        table(["since", "t_cloud", "t_local"], r.thresholds.history.slice().reverse().map((h) => ({ cells: [time(h.ts), fmt(h.t_cloud), fmt(h.t_local)] }))))),
    el("div", { class: "cols" },
      section("Reloads and rollbacks", table(["event"], (r.reloads || []).map((e) => ({ cells: [fmt(e)] })))),
      section("Labels collected (" + r.labels.total + ")", counts(r.labels.by_kind, "source:label")),
      section("Local correction", kv({ adapted: r.correction.adapted, ...(r.correction.last || {}) }))));
}

async function nodes(main) {
  const n = await getJSON("/ui/api/nodes");
  const feats = (n.choice && n.choice.nodes) || {};
  const rows = Object.entries(n.backends).map(([name, b]) => ({
    cells: [name, fmt(b.route), fmt(b.model), b.healthy === false ? "unhealthy" : "healthy", fmt(feats[name] ? feats[name].load : b.queue_depth),
      fmt(feats[name] ? feats[name].ms_per_token : null), fmt(feats[name] ? feats[name].rtt_ms : null)],
  }));
  main.replaceChildren(
    section("Nodes", table(["name", "route", "model", "health", "load", "ms per token", "round trip ms"], rows, { id: "nodes" })),
    el("div", { class: "cols" },
      section("Learnt node weights (" + fmt(n.choice.choice) + ", " + fmt(n.choice.answers_learnt) + " answers)", kv(n.choice.weights || {})),
      section("Fleet (as the federation published it with the router)", kv({ router: n.fleet.router_name, version: n.fleet.router_version,
        "published node weights": n.fleet.published_node_weights, "trained on": n.fleet.training ? n.fleet.training.source : null }))));
}

const PAGES = { overview, decisions, router, nodes };

async function refresh(main) {
  const page = document.body.dataset.page;
  const status = document.getElementById("status");
  try {
    await PAGES[page](main);
    if (page === "decisions" && state.selected && !document.getElementById("explanation-json")) await explain(main, state.selected);
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.dataset.updates = String(Number(status.dataset.updates || 0) + 1);
  } catch (err) {
    status.textContent = "update failed: " + err.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const main = document.getElementById("main");
  refresh(main);
  state.timer = setInterval(() => refresh(main), POLL_MS);
});
